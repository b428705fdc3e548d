//! `--serve-recordings`: the `--record` files at `/recordings/`, for `web/replay.html`.
//!
//! `GET /recordings/` answers a JSON list, newest first:
//! `{"recordings": [{"name": "rec.7.cast", "format": "asciicast", "size": 1234, "modified": 1767225600}]}`;
//! `GET /recordings/NAME` the file itself (Range, HEAD and If-Modified-Since as for `--web` files).
//! Only names that recordings have (`FILE.<digits>` or `FILE.<digits>.cast` beside `--record FILE`,
//! [`Format::is_recording`]) that are regular files (not links) are listed or served; anything
//! else is a 404, so no request reaches another file. The gate in front (`--web-auth`) is the pages'.

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use std::path::{Path, PathBuf};

use crate::http::web::{Body, not_found, percent_decode, serve_file, sized_response, text_response};
use crate::relay::recording::{Format, prefix_of};

/// Where the listing lives; a `--web` directory of that name is hidden behind it.
pub const PREFIX: &str = "/recordings/";

#[derive(Debug, Clone)]
pub struct Recordings {
    /// The directory of `--record FILE`.
    dir: PathBuf,
    /// FILE's name: every recording's name starts with it and a dot.
    prefix: String,
}

impl Recordings {
    /// Fails when FILE's name is not UTF-8 (its recordings could not be named in URLs).
    pub fn new(base: &Path) -> Result<Recordings, String> {
        let prefix = prefix_of(base).ok_or_else(|| {
            format!(
                "--serve-recordings: the name of --record {} must be UTF-8",
                base.display()
            )
        })?;
        let dir = base.parent().unwrap_or(Path::new("/")).to_path_buf();
        Ok(Recordings {
            dir,
            prefix: prefix.to_owned(),
        })
    }

    /// Answers a GET or HEAD under [`PREFIX`].
    pub async fn respond(&self, parts: &http::request::Parts) -> Response {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let mut resp = text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let raw = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default();
        if raw.is_empty() {
            return self.listing().await;
        }
        // Decoded (FILE's name may hold characters a URL escapes), then it must be FILE, a dot and
        // digits: never a `/` or `..`, so the path stays in FILE's directory.
        let Some(name) = percent_decode(raw).and_then(|bytes| String::from_utf8(bytes).ok()) else {
            return not_found();
        };
        if Format::is_recording(&self.prefix, &name).is_none() || name.contains('/') {
            return not_found();
        }
        let path = self.dir.join(&name);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.is_file() => serve_file(&path, parts).await,
            _ => not_found(),
        }
    }

    async fn listing(&self) -> Response {
        let mut found = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("cannot list the recordings in {}: {e}", self.dir.display());
                return text_response(StatusCode::INTERNAL_SERVER_ERROR, "cannot list the recordings");
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(format) = Format::is_recording(&self.prefix, &name) else {
                continue;
            };
            let Ok(meta) = entry.metadata().await else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            found.push((modified, name, format, meta.len()));
        }
        found.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let list: Vec<serde_json::Value> = found
            .into_iter()
            .map(|(modified, name, format, size)| {
                serde_json::json!({"name": name, "format": format, "size": size, "modified": modified})
            })
            .collect();
        let body = serde_json::json!({ "recordings": list }).to_string();
        let mut resp = sized_response(StatusCode::OK, body.into());
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

type Response = http::Response<Body>;
