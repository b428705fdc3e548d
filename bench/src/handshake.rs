//! The WebSocket upgrade (RFC 6455 §4), both sides, kept to what the benchmark needs.
//!
//! The client asks for the `binary` subprotocol and sends an Origin, as noVNC in a browser does,
//! so proxies take the same path they take in real use. Both sides return the bytes they read
//! past the HTTP head: a proxy may send its first frames in the same segment as its 101.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

/// The longest HTTP head either side accepts.
const MAX_HEAD: usize = 16 * 1024;

/// Upgrades a connection to 127.0.0.1:`port`, asking for `path` (`/`, or `/websockify?token=T` for
/// a proxy that routes by token); returns the bytes read past the response head.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, port: u16, path: &str) -> Result<Vec<u8>, String> {
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\
         Origin: http://127.0.0.1:{port}\r\n\r\n"
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the upgrade request: {e}"))?;
    let (head, rest) = read_head(io)
        .await?
        .ok_or("connection closed before the upgrade response")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(format!("upgrade refused: {status}"));
    }
    match header(&head, "sec-websocket-accept") {
        Some(accept) if accept == derive_accept_key(key.as_bytes()) => Ok(rest),
        _ => Err("upgrade response without the right Sec-WebSocket-Accept".into()),
    }
}

/// Accepts an upgrade request; returns the bytes read past the request head, or `None` when the
/// connection closed without a byte (a readiness probe that a relay passed on).
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<Option<Vec<u8>>, String> {
    let Some((head, rest)) = read_head(io).await? else {
        return Ok(None);
    };
    let key = header(&head, "sec-websocket-key").ok_or("upgrade request without Sec-WebSocket-Key")?;
    let offers_binary = header(&head, "sec-websocket-protocol")
        .is_some_and(|protocols| protocols.split(',').any(|p| p.trim() == "binary"));
    let protocol = if offers_binary {
        "Sec-WebSocket-Protocol: binary\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{protocol}\r\n",
        derive_accept_key(key.as_bytes())
    );
    io.write_all(response.as_bytes())
        .await
        .map_err(|e| format!("cannot send the upgrade response: {e}"))?;
    Ok(Some(rest))
}

/// Reads up to the blank line that ends an HTTP head; returns the head and what followed it, or
/// `None` if the connection closed before sending anything.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<Option<(String, Vec<u8>)>, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0; 4096];
    loop {
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| format!("handshake read failed: {e}"))?;
        if n == 0 && buf.is_empty() {
            return Ok(None);
        }
        if n == 0 {
            return Err("connection closed during the WebSocket handshake".into());
        }
        // Search from just before the new bytes: the blank line may straddle two reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(from + at + 4);
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("no end of the HTTP head in {MAX_HEAD} bytes"));
        }
    }
}

/// The value of header `name` (lower case) in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_and_server_agree() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move { server(&mut b).await });
        assert_eq!(client(&mut a, 8080, "/").await, Ok(Vec::new()));
        assert_eq!(server.await.unwrap(), Ok(Some(Vec::new())));
    }

    #[tokio::test]
    async fn frame_bytes_in_the_same_segment_as_the_101_are_kept() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let fake = tokio::spawn(async move {
            let (head, _) = read_head(&mut b).await.unwrap().unwrap();
            let accept = derive_accept_key(header(&head, "sec-websocket-key").unwrap().as_bytes());
            let reply = format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n\x02\x01x");
            b.write_all(reply.as_bytes()).await.unwrap();
            b
        });
        assert_eq!(client(&mut a, 8080, "/").await, Ok(b"\x02\x01x".to_vec()));
        drop(fake.await.unwrap());
    }
}
