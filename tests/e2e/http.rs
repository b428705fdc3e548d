//! The HTTP side of the port: handshake rules, static files, and what must never be served.

use crate::util::*;

#[tokio::test]
async fn subprotocol_rules() {
    let echo = echo_target().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    for (offer, expect) in [
        ("", Some(None)),
        ("Sec-WebSocket-Protocol: binary\r\n", Some(Some("binary"))),
        ("Sec-WebSocket-Protocol: binary, base64\r\n", Some(Some("binary"))),
        // websockify answers 400 here because it splits without trimming.
        ("Sec-WebSocket-Protocol: base64, binary\r\n", Some(Some("binary"))),
        // Old clients' base64, which websockify dropped, when binary is not offered.
        ("Sec-WebSocket-Protocol: base64\r\n", Some(Some("base64"))),
        ("Sec-WebSocket-Protocol: chat, superchat\r\n", None),
    ] {
        let (_raw, head) = Raw::upgrade(proxy.addr, offer).await;
        match expect {
            Some(protocol) => {
                assert!(head.starts_with("HTTP/1.1 101"), "{offer:?}: {head}");
                assert_eq!(header(&head, "sec-websocket-protocol"), protocol, "{offer:?}");
                assert_eq!(
                    header(&head, "sec-websocket-accept"),
                    Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                );
            }
            None => assert!(head.starts_with("HTTP/1.1 400"), "{offer:?}: {head}"),
        }
    }
}

#[tokio::test]
async fn any_path_upgrades_and_bad_versions_are_refused() {
    let echo = echo_target().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    let mut raw = Raw::connect(proxy.addr).await;
    use tokio::io::AsyncWriteExt;
    raw.stream
        .write_all(
            b"GET /some/deep/path?token=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    assert!(raw.read_head().await.starts_with("HTTP/1.1 101"));

    let (status, head, _) = http_get(
        proxy.addr,
        "GET",
        "/",
        "Upgrade: websocket\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 99\r\n",
    )
    .await;
    assert_eq!(status, 400, "{head}");
    let (status, _, _) = http_get(
        proxy.addr,
        "GET",
        "/",
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn without_web_plain_requests_get_405() {
    let echo = echo_target().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
        let (status, head, _) = http_get(proxy.addr, method, "/vnc.html", "Content-Length: 0\r\n").await;
        assert_eq!(status, 405, "{method}: {head}");
    }
}

fn web_root(dir: &TempDir) -> std::path::PathBuf {
    let root = dir.path("web");
    std::fs::create_dir_all(root.join("sub/evil.example")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(root.join("style.css"), "body{}").unwrap();
    std::fs::write(root.join("sub/page.html"), "<p>sub</p>").unwrap();
    std::fs::write(dir.path("secret.txt"), "top secret").unwrap();
    std::fs::create_dir_all(dir.path("outside")).unwrap();
    std::fs::write(dir.path("outside/x.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(dir.path("secret.txt"), root.join("link-out.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path("outside"), root.join("dir-out")).unwrap();
    std::os::unix::fs::symlink(root.join("app.js"), root.join("link-in.js")).unwrap();
    root
}

#[tokio::test]
async fn static_files_types_index_head_range_and_caching() {
    let dir = TempDir::new("web");
    let root = web_root(&dir);
    let echo = echo_target().await;
    let proxy = Proxy::start(&["--web", root.to_str().unwrap(), "127.0.0.1:0", &echo.to_string()]);
    let addr = proxy.addr;

    let (status, head, body) = http_get(addr, "GET", "/", "").await;
    assert_eq!((status, body.as_slice()), (200, &b"<h1>home</h1>"[..]), "{head}");
    assert!(header(&head, "content-type").unwrap().starts_with("text/html"));
    let (_, head, _) = http_get(addr, "GET", "/app.js", "").await;
    assert!(header(&head, "content-type").unwrap().contains("javascript"), "{head}");
    let (_, head, _) = http_get(addr, "GET", "/style.css", "").await;
    assert!(header(&head, "content-type").unwrap().starts_with("text/css"));

    let (status, head, body) = http_get(addr, "HEAD", "/app.js", "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-length"), Some("14"));
    assert!(body.is_empty());

    let (status, _, body) = http_get(addr, "GET", "/app.js", "Range: bytes=0-6\r\n").await;
    assert_eq!((status, body.as_slice()), (206, &b"console"[..]));

    let (_, head, _) = http_get(addr, "GET", "/app.js", "").await;
    let modified = header(&head, "last-modified").expect("Last-Modified").to_string();
    assert!(header(&head, "cache-control").is_some(), "{head}");
    let (status, _, _) = http_get(addr, "GET", "/app.js", &format!("If-Modified-Since: {modified}\r\n")).await;
    assert_eq!(status, 304);

    let (status, _, body) = http_get(addr, "GET", "/link-in.js", "").await;
    assert_eq!((status, body.as_slice()), (200, &b"console.log(1)"[..]));
    let (status, _, _) = http_get(addr, "GET", "/missing.html", "").await;
    assert_eq!(status, 404);
    let (status, _, _) = http_get(addr, "POST", "/index.html", "Content-Length: 0\r\n").await;
    assert_eq!(status, 405);

    // Listing is on by default (websockify), off with --file-only.
    let (status, _, body) = http_get(addr, "GET", "/sub/", "").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("page.html"));
    drop(proxy);
    let proxy = Proxy::start(&[
        "--web",
        root.to_str().unwrap(),
        "--file-only",
        "127.0.0.1:0",
        &echo.to_string(),
    ]);
    let (status, _, _) = http_get(proxy.addr, "GET", "/sub/", "").await;
    assert_eq!(status, 404);
    let (status, _, _) = http_get(proxy.addr, "GET", "/sub/page.html", "").await;
    assert_eq!(status, 200);

    // The same port still upgrades.
    let (_raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"));
}

#[tokio::test]
async fn no_escape_from_the_web_directory() {
    let dir = TempDir::new("escape");
    let root = web_root(&dir);
    let echo = echo_target().await;
    let proxy = Proxy::start(&["--web", root.to_str().unwrap(), "127.0.0.1:0", &echo.to_string()]);
    for path in [
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/link-out.txt",
        "/dir-out/x.txt",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        "/..\\secret.txt",
        "/%00",
    ] {
        let (status, head, body) = http_get(proxy.addr, "GET", path, "").await;
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("top secret") && !body.contains("outside") && !body.contains("root:"),
            "{path}: {body}"
        );
        assert!((400..500).contains(&status), "{path}: {head}");
    }
}

/// CVE-2021-3654: a directory redirect must never point to another host.
#[tokio::test]
async fn no_open_redirect() {
    let dir = TempDir::new("redirect");
    let root = web_root(&dir);
    let echo = echo_target().await;
    let proxy = Proxy::start(&["--web", root.to_str().unwrap(), "127.0.0.1:0", &echo.to_string()]);
    let (status, head, _) = http_get(proxy.addr, "GET", "/sub", "").await;
    assert_eq!(status, 301, "{head}");
    assert_eq!(header(&head, "location"), Some("sub/"));
    for path in [
        "//sub/evil.example",
        "/%2Fsub/evil.example",
        "///sub/evil.example",
        "/sub//evil.example",
    ] {
        let (status, head, _) = http_get(proxy.addr, "GET", path, "").await;
        if let Some(location) = header(&head, "location") {
            assert!(!location.starts_with('/') && !location.contains("//"), "{path}: {head}");
        }
        assert!(status == 301 || (400..500).contains(&status), "{path}: {head}");
    }
}

/// `--cert auto`: the first start makes a self-signed certificate and prints its fingerprint; a
/// wss:// client trusting exactly that certificate connects; the next start reuses it (same
/// fingerprint), so a browser's exception survives restarts.
#[tokio::test]
async fn cert_auto_is_made_once_and_reused() {
    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use tokio_tungstenite::tungstenite::Message;
    let dir = TempDir::new("certauto");
    let target = echo_target().await.to_string();
    let store = dir.path("certs");
    let args = [
        "--cert",
        "auto",
        "--cert-dir",
        store.to_str().unwrap(),
        "--cert-name",
        "localhost",
        "--cert-name",
        "127.0.0.1",
        "127.0.0.1:0",
        &target,
    ];
    let mut first = Proxy::start(&args);
    let made = first.wait_line("self-signed certificate", WAIT);
    assert!(made.contains("certificate made"), "{made}");
    let fingerprint = made.rsplit("SHA-256 ").next().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 95, "{made}");
    let pages = first.wait_line("pages and wss://", WAIT);
    assert!(
        pages.contains(&format!("https://localhost:{}/", first.addr.port())),
        "{pages}"
    );
    let pem = std::fs::read(store.join("wsproxy-auto.pem")).unwrap();
    let der = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
    let mut ws = wss_connect(first.addr, der.as_ref()).await;
    ws.send(Message::binary(b"over the made certificate".to_vec()))
        .await
        .unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo.into_data().as_ref(), b"over the made certificate");
    drop(first);

    let mut second = Proxy::start(&args);
    let reused = second.wait_line("self-signed certificate", WAIT);
    assert!(reused.contains("certificate reused"), "{reused}");
    assert!(reused.ends_with(&fingerprint), "{reused} vs {fingerprint}");
    let mut proxy = Proxy::spawn(&["--cert-name", "x", "127.0.0.1:0", &target]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(64));
    assert!(proxy.lines()[0].contains("--cert auto"), "{:?}", proxy.lines());
}
