//! A minimal HTTP/1.1 client for wsproxy's sessions API: one keep-alive connection, one request
//! at a time (no pipelining), bodies by Content-Length only (what the API sends).
//!
//! The request is written in one `write_all`, the response read into a buffer that is kept for
//! the next one, so a reservation costs the client one write and one or two reads. A response
//! that says `Connection: close` (or a connection that ends) makes the next call reconnect, and
//! the reconnections are counted: the API is meant to keep connections alive.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A whole call (connecting if needed, the request, the response) that takes longer fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest response head and body accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;

/// One response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body's first line, shortened, for error messages.
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let line = text.lines().next().unwrap_or_default();
        line.chars().take(200).collect()
    }
}

/// A keep-alive connection to 127.0.0.1:`port`, sending `Authorization: Bearer` with each call.
pub struct Client {
    port: u16,
    bearer: String,
    stream: Option<TcpStream>,
    /// What was read past the last response (nothing, unless the server misbehaves).
    buf: Vec<u8>,
    /// Connections opened after the first.
    pub reconnects: u64,
    opened: bool,
}

impl Client {
    pub fn new(port: u16, bearer: &str) -> Client {
        Client {
            port,
            bearer: bearer.to_string(),
            stream: None,
            buf: Vec::with_capacity(4096),
            reconnects: 0,
            opened: false,
        }
    }

    /// The bytes of a request, to build once and send many times.
    pub fn request(&self, method: &str, path: &str, json: Option<&str>) -> Vec<u8> {
        let port = self.port;
        let bearer = &self.bearer;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {bearer}\r\n");
        match json {
            Some(body) => {
                request += &format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            None => request += "\r\n",
        }
        request.into_bytes()
    }

    /// Sends `request` (from `request`) and reads the response, bounded by `CALL_TIMEOUT`. After
    /// an error the connection is dropped; the next call opens another.
    pub async fn call(&mut self, request: &[u8]) -> Result<Response, String> {
        let outcome = match timeout(CALL_TIMEOUT, self.exchange(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no response within {} s", CALL_TIMEOUT.as_secs())),
        };
        match outcome {
            Ok((response, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok(response)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<(Response, bool), String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| format!("cannot connect to 127.0.0.1:{}: {e}", self.port))?;
            stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
            self.buf.clear();
            self.reconnects += u64::from(self.opened);
            self.opened = true;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("no connection".into());
        };
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(format!("no end of the response head in {MAX_HEAD} bytes"));
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| "a response head that is not UTF-8")?;
        let (status, length, keep_alive) = parse_head(head)?;
        if length > MAX_BODY {
            return Err(format!("a response body of {length} bytes"));
        }
        while self.buf.len() < head_end + length {
            read_more(stream, &mut self.buf).await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok((Response { status, body }, keep_alive))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(4096);
    match stream.read_buf(buf).await {
        Ok(0) => Err("the connection closed before the end of the response".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("response read failed: {e}")),
    }
}

/// The status, the Content-Length (0 without one) and whether the connection stays open.
fn parse_head(head: &str) -> Result<(u16, usize, bool), String> {
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version = words.next().unwrap_or_default();
    let status = words
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut length = 0;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| format!("Content-Length: {value:?}"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "Transfer-Encoding: {value} is not supported (the API sends Content-Length)"
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    Ok((status, length, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn heads_are_parsed() {
        let head = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(parse_head(head), Ok((201, 12, true)));
        let head = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        assert_eq!(parse_head(head), Ok((204, 0, false)));
        assert!(parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head("garbage\r\n\r\n").is_err());
    }

    /// Two calls on one connection, the second response split across writes and closing it; the
    /// third call reconnects.
    #[tokio::test]
    async fn calls_share_a_connection_until_the_server_closes_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            let replies: [&[&[u8]]; 3] = [
                &[b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"],
                &[b"HTTP/1.1 204 No Co", b"ntent\r\nConnection: close\r\n\r\n"],
                &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope\n"],
            ];
            let (mut stream, _) = listener.accept().await.unwrap();
            for (i, parts) in replies.iter().enumerate() {
                if i == 2 {
                    stream = listener.accept().await.unwrap().0;
                }
                let mut buf = [0; 4096];
                let n = stream.read(&mut buf).await.unwrap();
                requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                for part in *parts {
                    stream.write_all(part).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            requests
        });
        let mut client = Client::new(port, "t0k");
        let post = client.request("POST", "/api/v1/sessions", Some(r#"{"service": "x"}"#));
        let created = client.call(&post).await.unwrap();
        assert_eq!((created.status, created.body.as_slice()), (201, &b"{}"[..]));
        let delete = client.request("DELETE", "/api/v1/sessions/abc", None);
        assert_eq!(client.call(&delete).await.unwrap().status, 204);
        let missing = client.call(&delete).await.unwrap();
        assert_eq!((missing.status, missing.excerpt().as_str()), (404, "nope"));
        assert_eq!(client.reconnects, 1);
        let requests = server.await.unwrap();
        assert!(
            requests[0].starts_with("POST /api/v1/sessions HTTP/1.1\r\n")
                && requests[0].contains("Authorization: Bearer t0k\r\n")
                && requests[0].ends_with("Content-Length: 16\r\n\r\n{\"service\": \"x\"}"),
            "{requests:?}"
        );
        assert!(
            requests[1].starts_with("DELETE /api/v1/sessions/abc HTTP/1.1\r\n") && requests[1].ends_with("\r\n\r\n")
        );
    }
}
