//! Bad input gets a clear answer, never a hang or a crash, and the next session still works.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

/// A normal echo session through the proxy.
async fn still_works(addr: SocketAddr) {
    let (mut ws, _) = ws_connect(addr, "binary").await;
    ws.send(Message::binary(b"still here".to_vec())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no echo")
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_data().as_ref(), b"still here");
    ws.close(None).await.unwrap();
}

async fn echo_proxy(extra: &[&str]) -> Proxy {
    let echo = echo_target().await.to_string();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["127.0.0.1:0", echo.as_str()]);
    Proxy::start(&args)
}

#[tokio::test]
async fn garbage_before_the_handshake_gets_400() {
    let proxy = echo_proxy(&[]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.stream.write_all(b"\x01\x02garbage\r\n\r\n").await.unwrap();
    let reply = String::from_utf8_lossy(&raw.read_to_end().await).into_owned();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let proxy = echo_proxy(&[]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(40 * 1024));
    let _ = raw.stream.write_all(big.as_bytes()).await;
    let reply = String::from_utf8_lossy(&raw.read_to_end().await).into_owned();
    assert!(
        reply.starts_with("HTTP/1.1 431") || reply.starts_with("HTTP/1.1 400"),
        "{reply:?}"
    );
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn slowloris_is_cut_off_by_the_handshake_timeout() {
    let proxy = echo_proxy(&["--handshake-timeout", "1"]).await;
    let mut silent = Raw::connect(proxy.addr).await;
    let mut slow = Raw::connect(proxy.addr).await;
    slow.stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for raw in [&mut silent, &mut slow] {
        let mut buf = [0u8; 256];
        // Closed by the proxy within about a second (bounded here by WAIT).
        let n = tokio::time::timeout(Duration::from_secs(5), raw.stream.read(&mut buf))
            .await
            .expect("not closed");
        assert!(matches!(n, Ok(_) | Err(_)));
    }
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn unmasked_frame_closes_with_1002() {
    let proxy = echo_proxy(&[]).await;
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    raw.send_frame(0x82, b"naked", false).await;
    assert_eq!(raw.read_close().await.0, 1002);
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn text_frame_closes_with_1003() {
    let proxy = echo_proxy(&[]).await;
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    raw.send_frame(0x81, b"hello", true).await;
    let (code, reason) = raw.read_close().await;
    assert_eq!(code, 1003);
    assert!(reason.contains("Text frames"), "{reason}");
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_with_1002() {
    let proxy = echo_proxy(&[]).await;
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    raw.stream.write_all(b"\xF3\xFFthis is not a frame").await.unwrap();
    assert_eq!(raw.read_close().await.0, 1002);
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let proxy = echo_proxy(&["--max-message-size", "1000"]).await;
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    raw.send_frame(0x02, &[0u8; 600], true).await;
    raw.send_frame(0x80, &[0u8; 600], true).await;
    assert_eq!(raw.read_close().await.0, 1009);
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn client_close_code_is_echoed() {
    let proxy = echo_proxy(&[]).await;
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    raw.send_frame(0x88, &payload, true).await;
    assert_eq!(raw.read_close().await, (4000, "bye".to_string()));
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn refused_target_gives_101_then_1011_and_a_log_line() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let mut proxy = Proxy::start(&["127.0.0.1:0", &target]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (code, reason) = raw.read_close().await;
    assert_eq!(code, 1011);
    assert!(reason.contains("downstream"), "{reason}");
    let line = proxy.wait_line("cannot connect to target", WAIT);
    assert!(line.contains(&target), "{line}");
    // The proxy is still up and answering.
    let (status, _, _) = http_get(proxy.addr, "GET", "/", "").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn failed_tls_handshake_does_not_hurt_the_server() {
    let dir = TempDir::new("badtls");
    let (self_pem, _, _, _) = make_cert(&dir);
    let proxy = echo_proxy(&["--cert", self_pem.to_str().unwrap()]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    // A TLS record header followed by nonsense.
    raw.stream
        .write_all(b"\x16\x03\x01\x00\x05hello-not-tls")
        .await
        .unwrap();
    let _ = raw.read_to_end().await;
    still_works(proxy.addr).await;
}

#[tokio::test]
async fn connection_cap_queues_extra_clients() {
    let proxy = echo_proxy(&["--max-connections", "1"]).await;
    let (mut first, _) = ws_connect(proxy.addr, "").await;
    // The second client is accepted by the kernel but not served while the first is open.
    let second = tokio::spawn(ws_connect(proxy.addr, ""));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "second session served beyond --max-connections 1"
    );
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(WAIT, first.next()).await.unwrap() {}
    let (mut ws, _) = tokio::time::timeout(WAIT, second)
        .await
        .expect("second never served")
        .unwrap();
    ws.send(Message::binary(b"x".to_vec())).await.unwrap();
    assert!(tokio::time::timeout(WAIT, ws.next()).await.unwrap().is_some());
}

#[test]
fn startup_errors_are_one_line_with_exit_64() {
    for (args, needle) in [
        (
            &["--cert", "/nonexistent/self.pem", "6080", "localhost:5901"][..],
            "/nonexistent/self.pem",
        ),
        (
            &["--web", "/nonexistent/dir", "6080", "localhost:5901"],
            "/nonexistent/dir",
        ),
        (&["70000", "localhost:5901"], "listen port"),
        (&["6080", "localhost"], "HOST:PORT"),
        (&["--ssl-only", "6080", "localhost:5901"], "--cert"),
        (&["--token-plugin", "TokenFile", "6080"], "needs --token-source"),
        (
            &["--token-plugin", "my.plugins.Custom", "--token-source", "x", "6080"],
            "unknown --token-plugin",
        ),
        (
            &[
                "--token-plugin",
                "TokenFile",
                "--token-source",
                "/nonexistent/tokens",
                "6080",
            ],
            "/nonexistent/tokens",
        ),
        (
            &["--token-plugin", "TokenRedis", "--token-source", "h:notaport", "6080"],
            "TokenRedis",
        ),
        (
            &[
                "--token-plugin",
                "JWTTokenApi",
                "--token-source",
                "/nonexistent/key.pem",
                "6080",
            ],
            "/nonexistent/key.pem",
        ),
        (
            &[
                "--auth-plugin",
                "BasicHTTPAuth",
                "--auth-source",
                "nocolon",
                "6080",
                "h:1",
            ],
            "user:password",
        ),
    ] {
        let mut proxy = Proxy::spawn(args);
        let status = proxy.wait_exit(WAIT);
        assert_eq!(status.code(), Some(64), "{args:?}: {:?}", proxy.lines());
        let lines = proxy.lines();
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].contains(needle), "{args:?}: {lines:?}");
    }
    // A port in use is a configuration error too, with a hint.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut proxy = Proxy::spawn(&[&addr, "localhost:5901"]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(64));
    assert!(proxy.lines()[0].contains("another program"), "{:?}", proxy.lines());
    // Usage errors are clap's exit 2.
    let mut proxy = Proxy::spawn(&["--no-such-option"]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(2));
}

/// The close reply survives a client that goes on sending after its close frame (Autobahn 9.x saw
/// it lost): the server reads and discards for a while instead of closing a socket with unread
/// bytes, which the kernel answers with a reset that destroys what the client has not read yet.
#[tokio::test]
async fn the_close_reply_arrives_while_the_client_is_still_sending() {
    let proxy = echo_proxy(&[]).await;
    for round in 0..3 {
        let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
        // Echoed data the client does not read for a while (both directions back up), its close
        // frame, and bytes it already had in flight after it.
        let mut bytes = Vec::new();
        for _ in 0..64 {
            bytes.extend(frame(0x82, &[0x33u8; 32 * 1024], true));
        }
        bytes.extend(frame(0x88, &1000u16.to_be_bytes(), true));
        bytes.extend(std::iter::repeat_n(0x55u8, 512 * 1024));
        let (mut reader, mut writer) = raw.stream.into_split();
        let sending = tokio::spawn(async move {
            let _ = writer.write_all(&bytes).await;
            writer
        });
        // Read only once the server has had time to answer and close.
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw.buf.clear();
        let mut got = Vec::new();
        loop {
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(WAIT, reader.read(&mut chunk))
                .await
                .expect("nothing read")
                .unwrap_or_else(|e| panic!("round {round}: reset before the close reply was read: {e}"));
            assert!(n > 0, "round {round}: end of stream without a close reply: {got:?}");
            got.extend_from_slice(&chunk[..n]);
            if got.windows(4).any(|w| w == [0x88, 0x02, 0x03, 0xe8]) {
                break;
            }
        }
        drop(sending);
    }
    still_works(proxy.addr).await;
}
