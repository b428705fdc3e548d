//! `--workers` on the real binary: two event loops both take connections on one port, and the
//! drain, a reload and the connection limit hold across them.

use std::time::Duration;

use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

/// How many of the `total` sessions opened since the first `from` log lines each worker took,
/// once all of them are logged (bounded wait: the lines come through a pipe).
async fn sessions_by_worker(proxy: &Proxy, from: usize, total: usize) -> [usize; 2] {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines = proxy.lines();
        let count = |worker: &str| {
            lines
                .iter()
                .skip(from)
                .filter(|l| l.contains("open: relaying") && l.contains(&format!(" worker={worker}}}")))
                .count()
        };
        let counts = [count("0"), count("1")];
        if counts[0] + counts[1] >= total {
            return counts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{counts:?} of {total} sessions logged by a worker: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) for the close frame of a session and returns its code.
async fn close_code<S>(ws: &mut Ws<S>) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no close frame") {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn two_workers_both_take_connections_and_drain_together() {
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["--workers", "2", "127.0.0.1:0", &echo.to_string()]);
    assert!(proxy.wait_line("listening on", WAIT).contains("; 2 workers"));
    // SO_REUSEPORT spreads connections by a hash of their addresses: with 32 client ports, the
    // chance that one worker gets none is 2 in 2^32.
    let mut sessions = Vec::new();
    for i in 0..32u8 {
        let (mut ws, _) = ws_connect(proxy.addr, "").await;
        echo_once(&mut ws, &[i; 16]).await;
        sessions.push(ws);
    }
    let [first, second] = sessions_by_worker(&proxy, 0, 32).await;
    assert_eq!(first + second, 32, "{:#?}", proxy.lines());
    assert!(
        first > 0 && second > 0,
        "one worker took every connection: {first} and {second}"
    );

    // The drain closes the sessions of both workers with 1001, then wsproxy exits.
    proxy.signal(Signal::SIGTERM);
    for ws in &mut sessions {
        assert_eq!(close_code(ws).await, 1001);
    }
    drop(sessions);
    assert!(proxy.wait_exit(WAIT).success(), "{:#?}", proxy.lines());
}

#[tokio::test]
async fn the_connection_limit_and_a_reload_hold_across_workers() {
    let dir = TempDir::new("workers-limit");
    let (_, cert, key, first_ca) = make_cert(&dir);
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&[
        "--workers",
        "2",
        "--max-connections",
        "4",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "127.0.0.1:0",
        &echo.to_string(),
    ]);
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut ws = wss_connect(proxy.addr, &first_ca).await;
        echo_once(&mut ws, b"within the limit").await;
        open.push(ws);
    }
    // Whichever worker accepts them, clients past the limit wait.
    let waiting: Vec<_> = (0..3).map(|_| tokio::spawn(ws_connect(proxy.addr, ""))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a session was served beyond --max-connections 4"
    );

    // A reload reaches both workers: every new connection sees the new certificate.
    let renewed = TempDir::new("workers-limit-renewed");
    let (_, new_cert, new_key, second_ca) = make_cert(&renewed);
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    proxy.signal(Signal::SIGHUP);
    proxy.wait_line("SIGHUP: reloaded the certificate", WAIT);
    for ws in &mut open {
        echo_once(ws, b"open sessions go on").await;
    }

    // Three sessions end: the three waiting clients are served, whichever worker holds them.
    for mut ws in open.drain(..3) {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {}
    }
    for waiter in waiting {
        let (mut ws, _) = tokio::time::timeout(WAIT, waiter)
            .await
            .expect("a waiting client was never served")
            .unwrap();
        echo_once(&mut ws, b"served once a session ended").await;
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {}
    }
    // New TLS clients on both workers get the new certificate (24 clients: both take some).
    let mark = proxy.lines().len();
    for _ in 0..24 {
        let mut ws = wss_connect(proxy.addr, &second_ca).await;
        echo_once(&mut ws, b"the new certificate").await;
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {}
    }
    let [first, second] = sessions_by_worker(&proxy, mark, 24).await;
    assert!(
        first > 0 && second > 0,
        "one worker took every connection: {first} and {second}"
    );
}

#[tokio::test]
async fn workers_share_a_unix_socket() {
    let dir = TempDir::new("workers-unix");
    let socket = dir.path("ws.sock");
    let echo = echo_target().await;
    let mut proxy = Proxy::spawn(&[
        "--workers",
        "2",
        "--unix-listen",
        socket.to_str().unwrap(),
        &echo.to_string(),
    ]);
    proxy.wait_line("listening on", WAIT);
    for i in 0..8u8 {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request("ws://localhost/websockify")
                .unwrap();
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
            .await
            .unwrap()
            .unwrap();
        echo_once(&mut ws, &[i; 8]).await;
    }
    proxy.signal(Signal::SIGTERM);
    assert!(proxy.wait_exit(WAIT).success());
    assert!(!socket.exists(), "the socket wsproxy bound was not removed");
}
