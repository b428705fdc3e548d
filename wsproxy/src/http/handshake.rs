//! The WebSocket opening handshake (RFC 6455 4.2), with websockify's rules: any path upgrades, and
//! the subprotocol is `binary` whenever offered. `base64`, which websockify dropped in 0.9, is
//! chosen again for old clients that offer it without `binary` (`crate::relay::b64`).

use http::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Response, StatusCode};

use crate::http::web::{Body, text_response};
use crate::relay::Payload;

/// A request is a WebSocket upgrade when it is a GET with `Upgrade: websocket` (websockify does not
/// look at `Connection`, and some proxies rewrite it).
pub fn is_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get_all(UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

/// The 101 response for a valid upgrade request, or the 400 that explains what is wrong.
pub fn accept(headers: &HeaderMap) -> Response<Body> {
    check(headers).unwrap_or_else(|refusal| *refusal)
}

fn check(headers: &HeaderMap) -> Result<Response<Body>, Box<Response<Body>>> {
    let version = headers
        .get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if !matches!(version, Some("13" | "8" | "7")) {
        let mut response = text_response(
            StatusCode::BAD_REQUEST,
            "Unsupported WebSocket version (wsproxy speaks 13)",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(Box::new(response));
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(text_response(
            StatusCode::BAD_REQUEST,
            "Missing Sec-WebSocket-Key header",
        )));
    };
    let chosen = match offered_protocols(headers) {
        None => None,
        Some(offered) if offered.iter().any(|p| p == "binary") => Some("binary"),
        Some(offered) if offered.iter().any(|p| p == "base64") => Some("base64"),
        Some(offered) => {
            let text = format!(
                "Invalid protocol selected: offered {offered:?}, wsproxy speaks 'binary' (or none, or 'base64' for old clients)"
            );
            return Err(Box::new(text_response(StatusCode::BAD_REQUEST, &text)));
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(chosen) = chosen {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(chosen));
    }
    Ok(response)
}

/// What the client's messages carry, by the subprotocol an accepted upgrade chose.
pub fn payload(response: &Response<Body>) -> Payload {
    match response.headers().get(SEC_WEBSOCKET_PROTOCOL) {
        Some(chosen) if chosen == "base64" => Payload::Base64,
        _ => Payload::Binary,
    }
}

/// Offered subprotocols, trimmed (websockify splits on ',' without trimming, so `base64, binary`
/// failed there). `None` when the header is absent.
fn offered_protocols(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut values = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().peekable();
    values.peek()?;
    Some(
        values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const BASE: [(&str, &str); 2] = [
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accept_key_matches_rfc_example() {
        let response = accept(&headers(&BASE));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(response.headers().get(SEC_WEBSOCKET_PROTOCOL).is_none());
    }

    #[test]
    fn binary_is_chosen_whenever_offered() {
        for offer in ["binary", "binary, base64", "base64,binary", "base64, binary", "BINARY"] {
            let mut h = headers(&BASE);
            h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(offer));
            let response = accept(&h);
            assert_eq!(response.headers()[SEC_WEBSOCKET_PROTOCOL], "binary", "{offer}");
        }
    }

    #[test]
    fn base64_is_chosen_only_without_binary() {
        for offer in ["base64", "BASE64", "chat, base64"] {
            let mut h = headers(&BASE);
            h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(offer));
            let response = accept(&h);
            assert_eq!(response.headers()[SEC_WEBSOCKET_PROTOCOL], "base64", "{offer}");
            assert_eq!(payload(&response), Payload::Base64);
        }
        let mut h = headers(&BASE);
        h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("base64, binary"));
        assert_eq!(payload(&accept(&h)), Payload::Binary);
        assert_eq!(payload(&accept(&headers(&BASE))), Payload::Binary);
    }

    #[test]
    fn other_protocols_and_versions_are_refused() {
        let mut h = headers(&BASE);
        h.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat"));
        assert_eq!(accept(&h).status(), StatusCode::BAD_REQUEST);
        let h = headers(&[("sec-websocket-version", "12"), ("sec-websocket-key", "x")]);
        assert_eq!(accept(&h).status(), StatusCode::BAD_REQUEST);
        let h = headers(&[("sec-websocket-version", "13")]);
        assert_eq!(accept(&h).status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade(&Method::GET, &headers(&[("upgrade", "WebSocket")])));
        assert!(is_upgrade(&Method::GET, &headers(&[("upgrade", "h2c, websocket")])));
        assert!(!is_upgrade(&Method::POST, &headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&Method::GET, &headers(&[])));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_headers_get_101_or_400(
            version in "[ -~]{0,8}",
            key in "[ -~]{0,40}",
            protocols in prop::collection::vec("[ -~]{0,12}", 0..4),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in [("sec-websocket-version", &version), ("sec-websocket-key", &key)] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            for p in &protocols {
                if let Ok(value) = HeaderValue::from_str(p) {
                    headers.append(SEC_WEBSOCKET_PROTOCOL, value);
                }
            }
            let response = accept(&headers);
            let offered = |name: &str| protocols.iter().flat_map(|p| p.split(',')).any(|p| p.trim().eq_ignore_ascii_case(name));
            let expected = if offered("binary") { Some("binary") } else if offered("base64") { Some("base64") } else { None };
            match response.status() {
                StatusCode::SWITCHING_PROTOCOLS => {
                    prop_assert!(matches!(version.trim(), "13" | "8" | "7"));
                    let chosen = response.headers().get(SEC_WEBSOCKET_PROTOCOL).map(|v| v.to_str().unwrap().to_owned());
                    prop_assert_eq!(chosen.as_deref(), expected);
                }
                status => prop_assert_eq!(status, StatusCode::BAD_REQUEST),
            }
        }
    }
}
