//! Bytes through the real binary: both directions at once, checked byte by byte.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn tcp_target_64mib_each_way() {
    let (target, mut reports) = pattern_target_tcp(64 * MIB, 1, 2).await;
    let proxy = Proxy::start(&["127.0.0.1:0", &target.to_string()]);
    let (ws, response) = ws_connect(proxy.addr, "binary").await;
    assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
    let (down, ok) = exchange(ws, 64 * MIB, 64 * 1024, 2, 64 * MIB, 1).await;
    assert_eq!(down, 64 * MIB);
    assert!(ok, "target → client bytes differ");
    let (up, ok) = tokio::time::timeout(WAIT, reports.recv()).await.unwrap().unwrap();
    assert_eq!(up, 64 * MIB);
    assert!(ok, "client → target bytes differ");
}

#[tokio::test]
async fn unix_target_64mib_each_way() {
    let dir = TempDir::new("unix-target");
    let socket = dir.path("target.sock");
    let mut reports = pattern_target_unix(&socket, 64 * MIB, 3, 4).await;
    let proxy = Proxy::start(&["--unix-target", socket.to_str().unwrap(), "127.0.0.1:0"]);
    let (ws, _) = ws_connect(proxy.addr, "").await;
    // Odd message sizes: frame boundaries fall everywhere inside the relay's buffers.
    let (down, ok) = exchange(ws, 64 * MIB, 40_001, 4, 64 * MIB, 3).await;
    assert_eq!((down, ok), (64 * MIB, true));
    let (up, ok) = tokio::time::timeout(WAIT, reports.recv()).await.unwrap().unwrap();
    assert_eq!((up, ok), (64 * MIB, true));
}

#[tokio::test]
async fn wss_64mib_each_way_with_self_pem() {
    let dir = TempDir::new("wss");
    let (self_pem, _, _, ca) = make_cert(&dir);
    let (target, mut reports) = pattern_target_tcp(64 * MIB, 5, 6).await;
    let proxy = Proxy::start(&["--cert", self_pem.to_str().unwrap(), "127.0.0.1:0", &target.to_string()]);
    let ws = wss_connect(proxy.addr, &ca).await;
    let (down, ok) = exchange(ws, 64 * MIB, 64 * 1024, 6, 64 * MIB, 5).await;
    assert_eq!((down, ok), (64 * MIB, true));
    let (up, ok) = tokio::time::timeout(WAIT, reports.recv()).await.unwrap().unwrap();
    assert_eq!((up, ok), (64 * MIB, true));

    // The same port still speaks plain ws://.
    let echo = echo_target().await;
    drop(proxy);
    let proxy = Proxy::start(&["--cert", self_pem.to_str().unwrap(), "127.0.0.1:0", &echo.to_string()]);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    ws.send(Message::binary(b"plain".to_vec())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.into_data().as_ref(), b"plain");
}

#[tokio::test]
async fn wss_with_separate_key_and_ssl_only() {
    let dir = TempDir::new("ssl-only");
    let (_, cert, key, ca) = make_cert(&dir);
    let echo = echo_target().await;
    let proxy = Proxy::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--ssl-only",
        "127.0.0.1:0",
        &echo.to_string(),
    ]);
    // Plain clients get a clear refusal...
    let (status, _, body) = http_get(proxy.addr, "GET", "/", "").await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("wss://"));
    // ...and TLS clients are relayed.
    let mut ws = wss_connect(proxy.addr, &ca).await;
    ws.send(Message::binary(b"secret".to_vec())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.into_data().as_ref(), b"secret");
}

/// `--ssl-target` with a private CA (websockify cannot: #506).
#[tokio::test]
async fn ssl_target_trusts_a_custom_ca() {
    let dir = TempDir::new("ssl-target");
    let (_, cert, key, _) = make_cert(&dir);
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = tls.flush().await;
                }
            });
        }
    });
    use rustls::pki_types::pem::PemObject;
    let target_name = format!("localhost:{}", target.port());
    let proxy = Proxy::start(&[
        "--ssl-target",
        "--target-cafile",
        cert.to_str().unwrap(),
        "127.0.0.1:0",
        &target_name,
    ]);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    ws.send(Message::binary(b"over tls".to_vec())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.into_data().as_ref(), b"over tls");

    // Without the CA the target's certificate is refused: the client gets 1011.
    let proxy = Proxy::start(&["--ssl-target", "127.0.0.1:0", &target_name]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(raw.read_close().await.0, 1011);
}

/// A target that closes: everything it sent arrives before the close frame (1000), and the client
/// can still send to the target's open half until it answers the close (half-close).
#[tokio::test]
async fn target_close_flushes_then_1000_and_half_close_keeps_upstream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        stream.write_all(&data).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        let _ = got_tx.send(received);
    });
    let proxy = Proxy::start(&["127.0.0.1:0", &target.to_string()]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: binary\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"));
    let mut data = Vec::new();
    let code = loop {
        let (first, payload) = raw.read_frame().await;
        match first & 0x0F {
            0x2 => data.extend_from_slice(&payload),
            0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(code, 1000);
    assert_eq!(data.len(), 300_000);
    assert!(data.iter().enumerate().all(|(i, b)| *b == i as u8));
    // The target's read half is still open: a late message reaches it, then our close ends it.
    raw.send_frame(0x82, b"late words", true).await;
    raw.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    let received = tokio::time::timeout(WAIT, got_rx).await.unwrap().unwrap();
    assert_eq!(received, b"late words");
}

/// A client that vanishes (no close frame): the target sees EOF at once, and what the client sent
/// before is delivered.
#[tokio::test]
async fn vanished_client_closes_target_after_delivering() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let proxy = Proxy::start(&["127.0.0.1:0", &target.to_string()]);
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    let (mut stream, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    raw.send_frame(0x82, b"last words", true).await;
    drop(raw);
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("target not closed")
        .unwrap();
    assert_eq!(received, b"last words");
}

/// A client that stops reading slows the target down instead of filling the proxy's memory.
#[tokio::test]
async fn slow_client_backpressures_the_target() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0u64;
        // Write for a while; once the proxy stops reading, writes block and the count stalls.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            loop {
                stream.write_all(&chunk).await.unwrap();
                sent += chunk.len() as u64;
            }
        })
        .await;
        let _ = sent_tx.send(sent);
        std::future::pending::<()>().await;
    });
    let proxy = Proxy::start(&["127.0.0.1:0", &target.to_string()]);
    let (_raw, _) = Raw::upgrade(proxy.addr, "").await;
    let sent = tokio::time::timeout(WAIT, sent_rx).await.unwrap().unwrap();
    let pid = proxy.pid();
    let rss = rss_kib(pid);
    // Socket buffers on both sides hold a few MiB; without backpressure it would be gigabytes.
    assert!(
        sent < 64 * MIB,
        "target wrote {sent} bytes to a client that reads nothing"
    );
    assert!(rss < 64 * 1024, "proxy RSS grew to {rss} KiB");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Frames arriving together with the handshake (before the 101 was read) are not lost, and many
/// small messages, fragments and pings mixed in all arrive in order.
#[tokio::test]
async fn early_frames_fragments_and_pings() {
    let echo = echo_target().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    let mut raw = Raw::connect(proxy.addr).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    request.extend(frame(0x82, b"early", true));
    request.extend(frame(0x02, b"frag", true));
    request.extend(frame(0x89, b"are you there", true));
    request.extend(frame(0x80, b"mented", true));
    raw.stream.write_all(&request).await.unwrap();
    let head = raw.read_head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut echoed = Vec::new();
    let mut pong = None;
    while echoed.len() < b"earlyfragmented".len() || pong.is_none() {
        let (first, payload) = raw.read_frame().await;
        match first {
            0x82 => echoed.extend_from_slice(&payload),
            0x8A => pong = Some(payload),
            other => panic!("unexpected frame {other:#x}"),
        }
    }
    assert_eq!(echoed, b"earlyfragmented");
    assert_eq!(pong.unwrap(), b"are you there");
}

/// Every ping of a burst gets its pong, in order (Autobahn 2.10, 2.11); a flood of pings is
/// answered without growing without bound, and the session goes on.
#[tokio::test]
async fn every_ping_of_a_burst_gets_its_pong() {
    let echo = echo_target().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend(frame(0x89, format!("payload-{i}").as_bytes(), true));
    }
    raw.stream.write_all(&burst).await.unwrap();
    for i in 0..10 {
        let (first, payload) = raw.read_frame().await;
        assert_eq!(first, 0x8A);
        assert_eq!(payload, format!("payload-{i}").as_bytes());
    }
    let mut flood = Vec::new();
    for _ in 0..5000 {
        flood.extend(frame(0x89, &[7u8; 125], true));
    }
    flood.extend(frame(0x82, b"after the flood", true));
    raw.stream.write_all(&flood).await.unwrap();
    let mut pongs = 0;
    loop {
        let (first, payload) = raw.read_frame().await;
        match first {
            0x8A => pongs += 1,
            0x82 => {
                assert_eq!(payload, b"after the flood");
                break;
            }
            other => panic!("unexpected frame {other:#x}"),
        }
    }
    assert!((64..=5000).contains(&pongs), "{pongs} pongs");
}
