//! Static files on the proxy's own port (`--web DIR [--file-only]`).
//!
//! websockify serves DIR with Python's `SimpleHTTPRequestHandler` next to the WebSocket upgrade,
//! so noVNC's page and the proxy share one origin. This module keeps that behaviour and closes
//! the holes that came with it:
//!
//! - **Path handling happens before the file system is touched.** The request path is
//!   percent-decoded by hand (a bad escape is a 400), NUL and backslash are refused (400), and the
//!   path is split on `/` *after* decoding, so `%2F` separates segments exactly like `/` does and
//!   `%2e%2e` is a `..`. Empty and `.` segments are dropped; any `..` is a 404, the answer
//!   websockify's normalisation gives, without trying to resolve it.
//! - **Symlink policy:** links inside DIR are followed, but the final path is canonicalised and
//!   must still lie under the canonical DIR. A link that leads out of DIR (to a file or to a
//!   directory) is a 404, as if it did not exist, and listings leave it out. The same check
//!   applies to `index.html` (one that escapes makes its directory a 404). What is left is a
//!   race with someone who can write inside DIR while we check; DIR is the operator's own
//!   content, so that is out of scope.
//! - **No open redirect (CVE-2021-3654).** websockify answered `GET //evil.example` (a directory)
//!   with `Location: //evil.example/`, which browsers read as another host. The "add a slash"
//!   redirect here is always *relative*: the last raw segment of the request path plus `/`, so it
//!   can never start with `/` and always resolves on this server. A `:` in that segment is
//!   re-encoded so the value cannot be read as a URI scheme (`javascript:`).
//! - Only regular files are served: FIFOs, sockets and devices are a 404 (opening a FIFO would
//!   block the connection).
//!
//! Regular files go through `tower_http::services::ServeFile`, which provides Content-Type,
//! HEAD, single Range requests (206/416) and Last-Modified/If-Modified-Since (304). Every file
//! and listing response carries `Cache-Control: no-cache`: consoles get updated in place and
//! revalidation costs one 304.
//!
//! Paths must be valid UTF-8 after decoding (else 400); file names that are not UTF-8 are shown
//! lossily in listings and cannot be fetched.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// Response body used by the whole HTTP side: files stream from disk, small answers are in memory.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// `--web DIR`: the directory to serve and whether directories without `index.html` are listed.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    /// DIR canonicalised once at start-up: every served path must canonicalise to a path below it.
    root: PathBuf,
    /// false with `--file-only`: websockify answers 404 instead of listing a directory.
    listing: bool,
}

/// Why a request path was refused before any file-system access.
#[derive(Debug, PartialEq, Eq)]
enum Reject {
    /// Malformed path (bad escape, NUL, backslash, not UTF-8, not starting with `/`).
    BadRequest(&'static str),
    /// A `..` segment: answered like a missing file.
    NotFound,
}

/// A request path that passed the syntactic checks.
#[derive(Debug, PartialEq, Eq)]
struct CleanPath {
    /// Decoded segments, none empty, `.` or `..`.
    segments: Vec<String>,
    /// Whether the raw path (as the browser sees it) ends in `/`: decides the directory redirect.
    trailing_slash: bool,
    /// The last raw segment, still percent-encoded, used for the relative redirect.
    raw_last: String,
}

impl StaticFiles {
    /// Fails with a one-line message if DIR does not exist or is not a directory.
    pub fn new(dir: &Path, listing: bool) -> Result<Self, String> {
        let root =
            std::fs::canonicalize(dir).map_err(|e| format!("cannot use --web {}: {}", dir.display(), io_reason(&e)))?;
        let meta =
            std::fs::metadata(&root).map_err(|e| format!("cannot use --web {}: {}", dir.display(), io_reason(&e)))?;
        if !meta.is_dir() {
            return Err(format!(
                "cannot use --web {}: not a directory (give the folder to serve)",
                dir.display()
            ));
        }
        Ok(Self { root, listing })
    }

    /// Answers one GET/HEAD (or any other method → 405 with `Allow: GET, HEAD`).
    pub async fn respond(&self, req: &http::request::Parts) -> Response<Body> {
        let head = req.method == Method::HEAD;
        if req.method != Method::GET && !head {
            let mut resp = text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let resp = self.route(req).await;
        if head {
            // ServeFile already answers HEAD without a body; our own answers (listing, errors)
            // drop theirs here while keeping Content-Length, as HTTP requires.
            return resp.map(|_| empty_body());
        }
        resp
    }

    async fn route(&self, req: &http::request::Parts) -> Response<Body> {
        let clean = match clean_path(req.uri.path()) {
            Ok(clean) => clean,
            Err(Reject::BadRequest(why)) => return text_response(StatusCode::BAD_REQUEST, why),
            Err(Reject::NotFound) => return not_found(),
        };
        let mut joined = self.root.clone();
        joined.extend(&clean.segments);
        let Some(path) = self.confine(&joined).await else {
            tracing::debug!(path = req.uri.path(), "web: not found or outside --web DIR");
            return not_found();
        };
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta,
            Err(_) => return not_found(),
        };
        if meta.is_dir() {
            if !clean.trailing_slash {
                return redirect_to_dir(&clean.raw_last, req.uri.query());
            }
            self.directory(&path, &clean.segments, req).await
        } else if meta.is_file() && !clean.trailing_slash {
            serve_file(&path, req).await
        } else {
            // `file.txt/` is a 404 in Python too (bpo-17324), and so are FIFOs, sockets, devices.
            not_found()
        }
    }

    /// Canonicalises `path` and returns it only if it still lies under the root (symlink policy).
    async fn confine(&self, path: &Path) -> Option<PathBuf> {
        let canonical = tokio::fs::canonicalize(path).await.ok()?;
        canonical.starts_with(&self.root).then_some(canonical)
    }

    async fn directory(&self, dir: &Path, segments: &[String], req: &http::request::Parts) -> Response<Body> {
        let index = dir.join("index.html");
        if tokio::fs::symlink_metadata(&index).await.is_ok() {
            // An index.html that escapes DIR must not fall back to a listing: the operator meant
            // this directory to show a page, so refuse the whole directory instead.
            let Some(index) = self.confine(&index).await else {
                return not_found();
            };
            if tokio::fs::metadata(&index).await.is_ok_and(|m| m.is_file()) {
                return serve_file(&index, req).await;
            }
        }
        if !self.listing {
            return not_found();
        }
        match self.listing_html(dir, segments).await {
            Ok(html) => {
                let mut resp = sized_response(StatusCode::OK, Bytes::from(html));
                let headers = resp.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                resp
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "web: cannot list directory");
                text_response(StatusCode::INTERNAL_SERVER_ERROR, "cannot list directory")
            }
        }
    }

    /// The listing page, shaped like Python's `SimpleHTTPRequestHandler.list_directory`.
    /// Symlinks that lead out of DIR (or nowhere) are left out: they would only answer 404.
    async fn listing_html(&self, dir: &Path, segments: &[String]) -> std::io::Result<String> {
        let mut entries = Vec::new();
        let mut read_dir = tokio::fs::read_dir(dir).await?;
        while let Some(entry) = read_dir.next_entry().await? {
            let path = entry.path();
            let is_link = entry.file_type().await.is_ok_and(|t| t.is_symlink());
            if is_link && self.confine(&path).await.is_none() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // Follows symlinks, so a link to a directory gets its slash.
            let is_dir = tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir());
            entries.push((name, is_dir));
        }
        entries.sort_by(|a, b| a.0.to_lowercase().cmp(&b.0.to_lowercase()).then(a.0.cmp(&b.0)));
        Ok(render_listing(segments, &entries))
    }
}

fn render_listing(segments: &[String], entries: &[(String, bool)]) -> String {
    let mut display = String::from("/");
    for seg in segments {
        display.push_str(seg);
        display.push('/');
    }
    let title = html_escape(&format!("Directory listing for {display}"));
    let mut html = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n<hr>\n<ul>\n"
    );
    for (name, is_dir) in entries {
        let slash = if *is_dir { "/" } else { "" };
        let _ = writeln!(
            html,
            "<li><a href=\"{}{slash}\">{}{slash}</a></li>",
            encode_segment(name),
            html_escape(name)
        );
    }
    html.push_str("</ul>\n<hr>\n</body>\n</html>\n");
    html
}

/// Plain small response used by the rest of the server too (405 without --web, 400 handshake errors...).
pub fn text_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut body = String::with_capacity(text.len() + 1);
    body.push_str(text);
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut resp = sized_response(status, Bytes::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(crate) fn not_found() -> Response<Body> {
    text_response(StatusCode::NOT_FOUND, "Not Found")
}

/// A response with an in-memory body and an explicit Content-Length (kept for HEAD).
pub(crate) fn sized_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let len = body.len() as u64;
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

pub fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// 301 to `<last raw segment>/`, relative so it cannot leave this host (CVE-2021-3654).
fn redirect_to_dir(raw_last: &str, query: Option<&str>) -> Response<Body> {
    let mut location = String::with_capacity(raw_last.len() + 2);
    for &b in raw_last.as_bytes() {
        // `:` would make the first segment read as a scheme; anything not visible ASCII would
        // not fit in a header. The raw segment is already percent-encoded otherwise.
        if b == b':' || !(0x21..=0x7e).contains(&b) {
            let _ = write!(location, "%{b:02X}");
        } else {
            location.push(char::from(b));
        }
    }
    location.push('/');
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut resp = text_response(StatusCode::MOVED_PERMANENTLY, "Moved Permanently");
            resp.headers_mut().insert(header::LOCATION, value);
            resp
        }
        Err(_) => text_response(StatusCode::BAD_REQUEST, "Bad Request: invalid path"),
    }
}

pub(crate) async fn serve_file(path: &Path, parts: &http::request::Parts) -> Response<Body> {
    // ServeFile wants a whole request; it only reads method, URI and headers.
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    let resp = match ServeFile::new(path).oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let mut resp = resp.map(|body| body.boxed_unsync());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Syntactic checks and decoding of the request path; no file-system access.
fn clean_path(raw: &str) -> Result<CleanPath, Reject> {
    if !raw.starts_with('/') {
        return Err(Reject::BadRequest("Bad Request: path must start with /"));
    }
    let bytes = percent_decode(raw).ok_or(Reject::BadRequest("Bad Request: invalid percent-encoding in path"))?;
    let decoded = String::from_utf8(bytes).map_err(|_| Reject::BadRequest("Bad Request: path is not valid UTF-8"))?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(Reject::BadRequest("Bad Request: NUL or backslash in path"));
    }
    let mut segments = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(Reject::NotFound),
            _ => segments.push(seg.to_owned()),
        }
    }
    let raw_last = raw.rsplit('/').next().unwrap_or_default().to_owned();
    Ok(CleanPath {
        segments,
        trailing_slash: raw_last.is_empty(),
        raw_last,
    })
}

/// `%XX` → byte; `None` for a `%` not followed by two hex digits.
pub(crate) fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a file name for use as a relative href (unreserved characters stay).
fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// An io::Error as text without the trailing " (os error N)" noise.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error ").next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique temporary directory removed on drop (no tempfile crate).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("wsproxy-web-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    /// tmp/root is served; tmp/outside holds what must never be reachable.
    fn fixture(tag: &str) -> (TempDir, PathBuf) {
        let tmp = TempDir::new(tag);
        let root = tmp.0.join("root");
        let outside = tmp.0.join("outside");
        for d in [
            root.join("sub"),
            root.join("withindex"),
            root.join("evil.example"),
            root.join("Zeta"),
            outside.clone(),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(root.join("page.html"), "<p>hi</p>").unwrap();
        std::fs::write(root.join("app.js"), "let x = 1;").unwrap();
        std::fs::write(root.join("style.css"), "p {}").unwrap();
        std::fs::write(root.join("img.png"), PNG).unwrap();
        std::fs::write(root.join("data.txt"), "0123456789").unwrap();
        std::fs::write(root.join("<b>&\"x'.txt"), "escaped").unwrap();
        std::fs::write(root.join("sub/a.txt"), "in sub").unwrap();
        std::fs::write(root.join("withindex/index.html"), "<h1>index</h1>").unwrap();
        std::fs::write(outside.join("secret.txt"), "SECRET").unwrap();
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("dir/inner.txt"), "SECRET2").unwrap();
        std::os::unix::fs::symlink(root.join("data.txt"), root.join("link-in")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link-out-file")).unwrap();
        std::os::unix::fs::symlink(outside.join("dir"), root.join("link-out-dir")).unwrap();
        (tmp, root)
    }

    struct Got {
        status: StatusCode,
        headers: http::HeaderMap,
        body: Bytes,
    }

    impl Got {
        fn header(&self, name: header::HeaderName) -> &str {
            self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
        }
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    async fn send(sf: &StaticFiles, method: Method, uri: &str, headers: &[(&str, &str)]) -> Got {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        let resp = sf.respond(&parts).await;
        let (head, body) = resp.into_parts();
        Got {
            status: head.status,
            headers: head.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn get(sf: &StaticFiles, uri: &str) -> Got {
        send(sf, Method::GET, uri, &[]).await
    }

    #[test]
    fn new_rejects_missing_and_non_directory() {
        let (_tmp, root) = fixture("new");
        let err = StaticFiles::new(&root.join("nope"), true).unwrap_err();
        assert!(err.contains("nope") && err.contains("No such file"), "{err}");
        assert!(!err.contains('\n'));
        let err = StaticFiles::new(&root.join("data.txt"), true).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert!(StaticFiles::new(&root, false).is_ok());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b").unwrap(), b"/a b");
        assert_eq!(percent_decode("%2e%2E%2f").unwrap(), b"../");
        assert_eq!(percent_decode("%e2%82%ac").unwrap(), "€".as_bytes());
        assert!(percent_decode("%").is_none());
        assert!(percent_decode("%2").is_none());
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%2g").is_none());
    }

    #[test]
    fn clean_path_rules() {
        let c = clean_path("//a/./b/").unwrap();
        assert_eq!(c.segments, ["a", "b"]);
        assert!(c.trailing_slash);
        let c = clean_path("/a%2Fb").unwrap();
        assert_eq!(c.segments, ["a", "b"]);
        assert!(!c.trailing_slash);
        assert_eq!(c.raw_last, "a%2Fb");
        assert_eq!(clean_path("/a/../b"), Err(Reject::NotFound));
        assert_eq!(clean_path("/%2e%2e"), Err(Reject::NotFound));
        assert!(matches!(clean_path("/a%00"), Err(Reject::BadRequest(_))));
        assert!(matches!(clean_path("/a\\b"), Err(Reject::BadRequest(_))));
        assert!(matches!(clean_path("/a%5cb"), Err(Reject::BadRequest(_))));
        assert!(matches!(clean_path("/%ff"), Err(Reject::BadRequest(_))));
        assert!(matches!(clean_path("*"), Err(Reject::BadRequest(_))));
    }

    #[tokio::test]
    async fn content_types() {
        let (_tmp, root) = fixture("ctype");
        let sf = StaticFiles::new(&root, true).unwrap();
        for (uri, want) in [
            ("/page.html", "text/html"),
            ("/app.js", "javascript"),
            ("/style.css", "text/css"),
            ("/img.png", "image/png"),
        ] {
            let got = get(&sf, uri).await;
            assert_eq!(got.status, StatusCode::OK, "{uri}");
            assert!(
                got.header(header::CONTENT_TYPE).contains(want),
                "{uri}: {:?}",
                got.headers
            );
            assert_eq!(got.header(header::CACHE_CONTROL), "no-cache");
        }
        assert_eq!(get(&sf, "/img.png").await.body.as_ref(), PNG);
    }

    #[tokio::test]
    async fn head_has_no_body_but_same_length() {
        let (_tmp, root) = fixture("head");
        let sf = StaticFiles::new(&root, true).unwrap();
        for uri in ["/data.txt", "/sub/", "/missing"] {
            let full = get(&sf, uri).await;
            let head = send(&sf, Method::HEAD, uri, &[]).await;
            assert_eq!(head.status, full.status, "{uri}");
            assert!(head.body.is_empty(), "{uri}");
            assert_eq!(
                head.header(header::CONTENT_LENGTH),
                full.body.len().to_string(),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn ranges() {
        let (_tmp, root) = fixture("range");
        let sf = StaticFiles::new(&root, true).unwrap();
        let got = send(&sf, Method::GET, "/data.txt", &[("range", "bytes=0-3")]).await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(got.body.as_ref(), b"0123");
        assert_eq!(got.header(header::CONTENT_RANGE), "bytes 0-3/10");
        let got = send(&sf, Method::GET, "/data.txt", &[("range", "bytes=20-30")]).await;
        assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE);
    }

    #[tokio::test]
    async fn if_modified_since_gives_304() {
        let (_tmp, root) = fixture("ims");
        let sf = StaticFiles::new(&root, true).unwrap();
        let first = get(&sf, "/data.txt").await;
        let stamp = first.header(header::LAST_MODIFIED).to_owned();
        assert!(!stamp.is_empty());
        let again = send(&sf, Method::GET, "/data.txt", &[("if-modified-since", &stamp)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert!(again.body.is_empty());
        let old = "Mon, 01 Jan 2001 00:00:00 GMT";
        let stale = send(&sf, Method::GET, "/data.txt", &[("if-modified-since", old)]).await;
        assert_eq!(stale.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn index_html_and_listing() {
        let (_tmp, root) = fixture("index");
        let sf = StaticFiles::new(&root, true).unwrap();
        let got = get(&sf, "/withindex/").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "<h1>index</h1>");

        let got = get(&sf, "/sub/").await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.header(header::CONTENT_TYPE).starts_with("text/html"));
        let html = got.text();
        assert!(html.contains("<title>Directory listing for /sub/</title>"), "{html}");
        assert!(html.contains("<a href=\"a.txt\">a.txt</a>"), "{html}");

        let html = get(&sf, "/").await.text();
        assert!(html.contains("<title>Directory listing for /</title>"), "{html}");
        assert!(html.contains("<a href=\"sub/\">sub/</a>"), "{html}");
        assert!(
            html.contains("<a href=\"%3Cb%3E%26%22x%27.txt\">&lt;b&gt;&amp;&quot;x&#x27;.txt</a>"),
            "{html}"
        );
        assert!(!html.contains("<b>"), "{html}");
        // Links inside DIR are listed; links leading out are not (they would only 404).
        assert!(html.contains("<a href=\"link-in\">link-in</a>"), "{html}");
        assert!(!html.contains("link-out"), "{html}");
        // Sorted case-insensitively, like Python.
        let pos = |s: &str| html.find(s).unwrap();
        assert!(pos("app.js") < pos("data.txt"));
        assert!(pos("data.txt") < pos("sub/"));
        assert!(pos("sub/") < pos("Zeta/"));

        let sf = StaticFiles::new(&root, false).unwrap();
        assert_eq!(get(&sf, "/sub/").await.status, StatusCode::NOT_FOUND);
        assert_eq!(get(&sf, "/").await.status, StatusCode::NOT_FOUND);
        assert_eq!(get(&sf, "/withindex/").await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn missing_file_and_file_with_slash() {
        let (_tmp, root) = fixture("missing");
        let sf = StaticFiles::new(&root, true).unwrap();
        let got = get(&sf, "/nope.html").await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
        assert_eq!(got.text(), "Not Found\n");
        assert_eq!(get(&sf, "/data.txt/").await.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn fifo_is_not_opened() {
        let (_tmp, root) = fixture("fifo");
        let fifo = root.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            println!("skipping fifo_is_not_opened: mkfifo is not available");
            return;
        }
        let sf = StaticFiles::new(&root, true).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), get(&sf, "/pipe"))
            .await
            .expect("opening a FIFO blocked the request");
        assert_eq!(got.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn other_methods_are_405() {
        let (_tmp, root) = fixture("methods");
        let sf = StaticFiles::new(&root, true).unwrap();
        for m in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            let got = send(&sf, m.clone(), "/data.txt", &[]).await;
            assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
            assert_eq!(got.header(header::ALLOW), "GET, HEAD");
        }
    }

    #[tokio::test]
    async fn traversal_is_refused() {
        let (_tmp, root) = fixture("traversal");
        let sf = StaticFiles::new(&root, true).unwrap();
        for uri in [
            "/../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/../../x",
            "/..%2f..%2fetc/passwd",
            "//etc/passwd",
            "/../outside/secret.txt",
            "/%2e%2e/outside/secret.txt",
            "/sub/..%2F..%2Foutside%2Fsecret.txt",
            "/link-out-file",
            "/link-out-dir",
            "/link-out-dir/",
            "/link-out-dir/inner.txt",
        ] {
            let got = get(&sf, uri).await;
            assert_eq!(got.status, StatusCode::NOT_FOUND, "{uri}");
            assert!(!got.text().contains("SECRET"), "{uri}");
            assert!(!got.text().contains("root:"), "{uri}");
        }
        for uri in ["/%zz", "/a%00b", "/a%5Cb"] {
            assert_eq!(get(&sf, uri).await.status, StatusCode::BAD_REQUEST, "{uri}");
        }
        let got = get(&sf, "/link-in").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "0123456789");
    }

    #[tokio::test]
    async fn index_html_pointing_outside_is_refused() {
        let (tmp, root) = fixture("index-out");
        std::fs::create_dir_all(root.join("trap")).unwrap();
        std::os::unix::fs::symlink(tmp.0.join("outside/secret.txt"), root.join("trap/index.html")).unwrap();
        let sf = StaticFiles::new(&root, true).unwrap();
        let got = get(&sf, "/trap/").await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
        assert!(!got.text().contains("SECRET"));
    }

    #[tokio::test]
    async fn directory_redirects_are_relative() {
        let (_tmp, root) = fixture("redirect");
        let sf = StaticFiles::new(&root, true).unwrap();
        for (uri, want) in [
            ("/sub", "sub/"),
            ("/sub?a=1&b=2", "sub/?a=1&b=2"),
            ("//evil.example", "evil.example/"),
            ("/%2Fevil.example", "%2Fevil.example/"),
            ("//evil.example?x", "evil.example/?x"),
            ("/sub/.", "./"),
        ] {
            let got = get(&sf, uri).await;
            assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY, "{uri}");
            let location = got.header(header::LOCATION);
            assert_eq!(location, want, "{uri}");
            assert!(!location.starts_with('/'), "{uri}");
        }
        // Following the redirect lands on the listing, still on this host.
        let got = get(&sf, "//evil.example/").await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.text().contains("Directory listing for /evil.example/"));
    }

    #[test]
    fn redirect_encodes_colon() {
        let resp = redirect_to_dir("javascript:alert(1)", None);
        let location = resp.headers()[header::LOCATION].to_str().unwrap();
        assert_eq!(location, "javascript%3Aalert(1)/");
    }

    #[tokio::test]
    async fn text_response_shape() {
        let resp = text_response(StatusCode::BAD_REQUEST, "Invalid protocol selected");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "26");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), b"Invalid protocol selected\n");
    }
}
