//! `BaseTokenAPI` and `JSONTokenApi`: ask an HTTP service. The source is a URL with `%s` where the
//! token goes (URL-encoded here; websockify pastes it in raw). A 2xx answer's body is `host:port`
//! (`BaseTokenAPI`) or `{"host": ..., "port": ...}` (`JSONTokenApi`); any other status means an
//! unknown token. Unlike websockify (`requests.get` without a timeout, a new connection each time),
//! connections are pooled and kept alive, and every lookup is bounded (`--token-timeout`).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Lookup, LookupError, TokenSource, parse_token_target};
use crate::config::Target;

/// Largest answer read from the API: a target is a few dozen bytes.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `host:port`
    Plain,
    /// `{"host": "...", "port": 5901}` (the port may be a string)
    Json,
}

pub struct TokenApi {
    /// The URL around the token: `before` + token + `after`.
    before: String,
    after: String,
    body: Body,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl TokenApi {
    pub fn new(source: &str, body: Body, timeout: Duration) -> Result<Self, String> {
        let Some((before, after)) = source.split_once("%s") else {
            return Err(format!(
                "--token-source {source:?} must be a URL with %s where the token goes"
            ));
        };
        let example: Uri = format!("{before}token{after}")
            .parse()
            .map_err(|e| format!("--token-source {source:?} is not a URL: {e}"))?;
        if !matches!(example.scheme_str(), Some("http" | "https")) || example.host().is_none() {
            return Err(format!("--token-source {source:?} must be an http:// or https:// URL"));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let tls = crate::tls::client_config(None)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(TokenApi {
            before: before.to_owned(),
            after: after.to_owned(),
            body,
            client,
        })
    }

    async fn ask(&self, token: &str) -> Result<Target, LookupError> {
        let url = format!("{}{}{}", self.before, percent_encode(token), self.after);
        let uri: Uri = url.parse().map_err(|_| LookupError::unknown())?;
        let request = Request::get(uri)
            .header(http::header::USER_AGENT, concat!("wsproxy/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|_| LookupError::unknown())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| LookupError::Unavailable(format!("token API: {}", error_chain(&e))))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| LookupError::Unavailable(format!("token API: reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(LookupError::unknown());
        }
        let text = String::from_utf8_lossy(&body);
        let parsed = match self.body {
            Body::Plain => parse_token_target(&text),
            Body::Json => parse_json(&text),
        };
        parsed.map_err(|why| {
            tracing::warn!("token API gave an unusable answer: {why}");
            LookupError::Unknown("The token's target is malformed".into())
        })
    }
}

impl TokenSource for TokenApi {
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a> {
        Box::pin(self.ask(token))
    }
}

/// `{"host": "h", "port": 5901}` or `"port": "5901"`.
pub fn parse_json(text: &str) -> Result<Target, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let host = value.get("host").and_then(|h| h.as_str()).ok_or("no \"host\" string")?;
    let port = match value.get("port") {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        _ => return Err("no \"port\" number or string".into()),
    };
    if host == "unix_socket" {
        return parse_token_target(&format!("unix_socket:{port}"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    parse_token_target(&format!("{bracketed}:{port}"))
}

/// Everything but RFC 3986's unreserved characters is `%XX`.
fn percent_encode(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `{"host": "h:p"}` (TokenRedis's JSON form).
pub fn parse_json_host(text: &str) -> Result<Target, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let host = value.get("host").and_then(|h| h.as_str()).ok_or("no \"host\" string")?;
    parse_token_target(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies() {
        let tcp = |host: &str, port| Target::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(
            parse_json(r#"{"host": "vnc1", "port": 5901}"#).unwrap(),
            tcp("vnc1", 5901)
        );
        assert_eq!(
            parse_json(r#"{"host": "::1", "port": "5901"}"#).unwrap(),
            tcp("::1", 5901)
        );
        assert_eq!(
            parse_json(r#"{"host": "unix_socket", "port": "/run/x.sock"}"#).unwrap(),
            Target::Unix("/run/x.sock".into())
        );
        assert!(parse_json(r#"{"host": "h"}"#).is_err());
        assert!(parse_json("h:1").is_err());
    }

    #[test]
    fn tokens_are_encoded() {
        assert_eq!(percent_encode("a b/c?d&e=é"), "a%20b%2Fc%3Fd%26e%3D%C3%A9");
        assert_eq!(percent_encode("Az09-._~"), "Az09-._~");
    }
}
