//! Targets that speak WebSocket themselves (QEMU's `-vnc ...,websocket=` and `websocket=on`
//! chardevs): wsproxy is their client.
//!
//! `handshake` does the client side of the opening handshake (RFC 6455 4.1) on a connected
//! stream: path `/` for QEMU, subprotocol `binary`, the server's `Sec-WebSocket-Accept` checked.
//! It returns a [`WsStream`], which the relay uses like any byte stream: what the relay writes
//! goes out as masked binary frames, what it reads is the payload of the target's frames. The
//! target's pings are answered there, and its close frame ends the stream; [`WsStream::closed_by`]
//! tells the session the code to pass on to the browser, and [`WsStream::close`] sends the
//! browser's close to the target. So the relay's data path (`crate::relay`) does not change.

mod stream;

use std::io;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use stream::WsStream;

/// Largest response head accepted from the target.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Does the opening handshake as a client on `stream` (already connected, TLS done), asking for
/// `path` with `host` in the Host header. Bytes the target sent right after its 101 (QEMU's VNC
/// banner comes in the same segment) are kept for the first read.
pub async fn handshake<S>(mut stream: S, host: &str, path: &str) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| io::Error::other("no random bytes for the WebSocket key"))?;
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(refused(format!(
                "its handshake response is longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(refused(
                "it closed the connection during the WebSocket handshake (is it a WebSocket server?)".into(),
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]);
    check_response(&text, &key).map_err(refused)?;
    Ok(WsStream::new(stream, &head[end + 4..]))
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket target refused: {why}"))
}

/// The 101 response rules of RFC 6455 4.1 (the subprotocol, when named, must be ours).
fn check_response(head: &str, key: &str) -> Result<(), String> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "101" {
        let status = status.chars().take(100).collect::<String>();
        return Err(format!(
            "it answered {status:?} instead of 101 Switching Protocols (is it a WebSocket server, and is the path right?)"
        ));
    }
    let headers: Vec<(String, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim()))
        .collect();
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let has_token =
        |name: &str, token: &str| get(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)));
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err("its 101 response lacks Upgrade: websocket or Connection: Upgrade".into());
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if get("sec-websocket-accept") != Some(expected.as_str()) {
        return Err("its Sec-WebSocket-Accept does not match our key".into());
    }
    match get("sec-websocket-protocol") {
        None | Some("binary") => {}
        Some(other) => {
            return Err(format!(
                "it chose subprotocol {other:?}; wsproxy offered only \"binary\""
            ));
        }
    }
    if get("sec-websocket-extensions").is_some() {
        return Err("it chose an extension; wsproxy offered none".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn responses_are_checked() {
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: binary"
        );
        assert_eq!(check_response(&ok, KEY), Ok(()));
        let no_protocol = ok.replace("\r\nSec-WebSocket-Protocol: binary", "");
        assert_eq!(check_response(&no_protocol, KEY), Ok(()));
        assert!(
            check_response(&ok.replace("binary", "base64"), KEY)
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            check_response(&ok.replace(ACCEPT, "x"), KEY)
                .unwrap_err()
                .contains("Accept")
        );
        assert!(
            check_response(&ok.replace("101 Switching Protocols", "404 Not Found"), KEY)
                .unwrap_err()
                .contains("404")
        );
        assert!(check_response(&ok.replace("Upgrade: websocket", "Upgrade: h2c"), KEY).is_err());
    }
}
