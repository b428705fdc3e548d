//! The process around the sessions: signals, heartbeat, run-once, UNIX listeners, recordings.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::util::*;

/// SIGTERM: sessions get close 1001, the process exits 0 within the grace period.
#[tokio::test]
async fn sigterm_drains_sessions_with_1001() {
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    let (mut a, _) = ws_connect(proxy.addr, "binary").await;
    let (mut b, _) = ws_connect(proxy.addr, "binary").await;
    a.send(Message::binary(b"before".to_vec())).await.unwrap();
    assert_eq!(a.next().await.unwrap().unwrap().into_data().as_ref(), b"before");
    proxy.signal(Signal::SIGTERM);
    for ws in [&mut a, &mut b] {
        let close = loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("no close frame") {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(close.expect("close code").code, CloseCode::Away);
    }
    let status = proxy.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{:?}", proxy.lines());
    // New connections are refused once it stopped.
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
}

/// A client that completes the handshake and then never answers pings is dropped, and the
/// target sees EOF (websockify never detects it: #456, #562).
#[tokio::test]
async fn heartbeat_closes_a_dead_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let mut proxy = Proxy::start(&["--heartbeat", "1", "127.0.0.1:0", &target.to_string()]);
    let (raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"));
    let (mut stream, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut sink))
        .await
        .expect("dead peer kept open")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        started.elapsed()
    );
    proxy.wait_line("stopped answering heartbeat", WAIT);
    drop(raw);

    // A live client (tungstenite answers pings) survives several intervals.
    let echo = echo_target().await;
    let proxy = Proxy::start(&["--heartbeat", "1", "127.0.0.1:0", &echo.to_string()]);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        // Reading drives tungstenite's automatic pong.
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            assert!(message.unwrap().is_ping(), "only pings expected");
        }
    }
    ws.send(Message::binary(b"alive".to_vec())).await.unwrap();
    let reply = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Binary(data) => break data,
            _ => continue,
        }
    };
    assert_eq!(reply.as_ref(), b"alive");
}

#[tokio::test]
async fn run_once_exits_after_the_first_session() {
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["--run-once", "127.0.0.1:0", &echo.to_string()]);
    // Plain HTTP does not count as a session.
    let (status, _, _) = http_get(proxy.addr, "GET", "/", "").await;
    assert_eq!(status, 405);
    let (mut ws, _) = ws_connect(proxy.addr, "").await;
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0));
}

#[tokio::test]
async fn idle_timeout_exits_when_nobody_is_connected() {
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["--idle-timeout", "1", "127.0.0.1:0", &echo.to_string()]);
    let started = Instant::now();
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn unix_listen_with_mode_and_cleanup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("unix-listen");
    let socket = dir.path("ws.sock");
    let echo = echo_target().await;
    let mut proxy = Proxy::spawn(&[
        "--unix-listen",
        socket.to_str().unwrap(),
        "--unix-listen-mode",
        "0660",
        &echo.to_string(),
    ]);
    proxy.wait_line("listening on unix:", WAIT);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/", stream)
        .await
        .expect("handshake over unix");
    ws.send(Message::binary(b"via unix".to_vec())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.into_data().as_ref(), b"via unix");
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0));
    assert!(!socket.exists(), "socket file left behind");
}

/// `--record` writes noVNC's playback format for each session.
#[tokio::test]
async fn record_writes_playback_file() {
    let dir = TempDir::new("record");
    let base = dir.path("session");
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["--record", base.to_str().unwrap(), "127.0.0.1:0", &echo.to_string()]);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    ws.send(Message::binary(b"RFB 003.008\n".to_vec())).await.unwrap();
    let _ = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    proxy.wait_line("closed:", WAIT);
    let file = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("session."))
        .expect("no recording file")
        .path();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.starts_with("var VNC_frame_data = [\n"), "{text}");
    assert!(text.contains("}RFB 003.008\\n',"), "{text}");
    assert!(text.contains("{RFB 003.008\\n',"), "{text}");
    assert!(text.trim_end().ends_with("'EOF'];"), "{text}");
}

/// One line at open and one at close, with the byte counts.
#[tokio::test]
async fn logs_one_line_at_open_and_close() {
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    ws.send(Message::binary(vec![1u8; 1000])).await.unwrap();
    let _ = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    let open = proxy.wait_line("open: relaying to", WAIT);
    assert!(open.contains("peer=127.0.0.1:"), "{open}");
    let closed = proxy.wait_line("closed:", WAIT);
    assert!(
        closed.contains("1000 bytes to target, 1000 bytes to client"),
        "{closed}"
    );
}

/// `--inetd` with one accepted connection on stdin (inetd "nowait"): serve it, then exit 0.
#[tokio::test]
async fn inetd_serves_the_connection_on_stdin() {
    let echo = echo_target().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let mut proxy = Proxy::spawn_with_stdin(
        &["--inetd", &echo.to_string()],
        std::os::fd::OwnedFd::from(server_side).into(),
    );
    client.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(client).unwrap();
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async("ws://localhost/", stream))
        .await
        .unwrap()
        .expect("handshake over the inetd socket");
    ws.send(Message::binary(b"from inetd".to_vec())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.into_data().as_ref(), b"from inetd");
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:?}", proxy.lines());
}

/// `--inetd` with a listening socket on stdin (inetd "wait", systemd Accept=no).
#[tokio::test]
async fn inetd_serves_a_listening_socket_on_stdin() {
    let echo = echo_target().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut proxy = Proxy::spawn_with_stdin(
        &["--inetd", &echo.to_string()],
        std::os::fd::OwnedFd::from(listener).into(),
    );
    proxy.wait_line("listening on", WAIT);
    for _ in 0..2 {
        let (mut ws, _) = ws_connect(addr, "binary").await;
        ws.send(Message::binary(b"again".to_vec())).await.unwrap();
        let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(reply.into_data().as_ref(), b"again");
    }
}

/// `--log-file` and `--syslog` (RFC 5424 over UDP, and the legacy format) get the same lines.
#[tokio::test]
async fn log_file_and_syslog_receive_log_lines() {
    let dir = TempDir::new("logs");
    let log = dir.path("wsproxy.log");
    let echo = echo_target().await;
    for (legacy, prefix) in [(false, "<14>1 "), (true, "<14>wsproxy[")] {
        let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        syslog.set_read_timeout(Some(WAIT)).unwrap();
        let server = syslog.local_addr().unwrap().to_string();
        let mut args = vec!["--log-file", log.to_str().unwrap(), "--syslog", &server];
        if legacy {
            args.push("--legacy-syslog");
        }
        let echo = echo.to_string();
        args.extend(["127.0.0.1:0", &echo]);
        let mut proxy = Proxy::start(&args);
        let (mut ws, _) = ws_connect(proxy.addr, "").await;
        ws.close(None).await.unwrap();
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
        proxy.wait_line("closed:", WAIT);
        let mut datagram = [0u8; 2048];
        let n = syslog.recv(&mut datagram).expect("no syslog datagram");
        let text = String::from_utf8_lossy(&datagram[..n]).into_owned();
        assert!(text.starts_with(prefix), "{text}");
        assert!(text.contains("open: relaying to"), "{text}");
    }
    let written = std::fs::read_to_string(&log).unwrap();
    assert_eq!(written.matches("open: relaying to").count(), 2, "{written}");
}
