//! Targets that speak WebSocket themselves: real QEMU (its VNC server's WebSocket port and a
//! `websocket=on` monitor chardev on a UNIX socket), and a tungstenite server written here for close
//! codes, pings and large messages both ways.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::real_servers::require;
use crate::util::*;

/// A QEMU started by a test, killed on drop.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Qemu {
    /// `qemu-system-x86_64 -machine none` (nothing boots) with `args`.
    fn start(args: &[&str]) -> Qemu {
        require("qemu-system-x86_64", "qemu-system-x86");
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-display", "none"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64");
        Qemu(child)
    }

    /// Waits (bounded) until `ready` says QEMU listens; panics if it exited.
    async fn wait_until(&mut self, what: &str, mut ready: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !ready().await {
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!("QEMU exited ({status}) before {what}");
            }
            assert!(Instant::now() < deadline, "QEMU: no {what} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// QEMU's VNC server on a free display, with its WebSocket port; returns QEMU and that port.
async fn qemu_vnc() -> (Qemu, u16) {
    let display = free_port() - 5900;
    let ws_port = free_port();
    let vnc = format!("127.0.0.1:{display},websocket=127.0.0.1:{ws_port}");
    let mut qemu = Qemu::start(&["-vnc", &vnc]);
    qemu.wait_until("its VNC WebSocket port", async || {
        TcpStream::connect(("127.0.0.1", ws_port)).await.is_ok()
    })
    .await;
    (qemu, ws_port)
}

/// The RFB exchange up to ServerInit through wsproxy (security type None); returns the desktop name.
async fn rfb_server_init(raw: &mut Raw) -> String {
    let mut rx = Vec::new();
    let need = async |raw: &mut Raw, rx: &mut Vec<u8>, n: usize| -> Vec<u8> {
        while rx.len() < n {
            let (first, data) = raw.read_frame().await;
            assert_eq!(first, 0x82, "expected binary frames, got {first:#x} {data:?}");
            rx.extend_from_slice(&data);
        }
        rx.drain(..n).collect()
    };
    assert_eq!(need(raw, &mut rx, 12).await, b"RFB 003.008\n");
    raw.send_frame(0x82, b"RFB 003.008\n", true).await;
    let count = need(raw, &mut rx, 1).await[0] as usize;
    let types = need(raw, &mut rx, count).await;
    assert!(
        types.contains(&1),
        "QEMU without a password offers security type None: {types:?}"
    );
    raw.send_frame(0x82, &[1], true).await;
    assert_eq!(need(raw, &mut rx, 4).await, [0, 0, 0, 0], "SecurityResult OK");
    raw.send_frame(0x82, &[1], true).await; // ClientInit, shared
    let init = need(raw, &mut rx, 24).await;
    let (width, height) = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    assert!(width > 0 && height > 0, "ServerInit {init:?}");
    let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&need(raw, &mut rx, name_len).await).into_owned()
}

#[tokio::test]
async fn qemu_vnc_websocket_port_behind_target_websocket_gives_rfb_and_server_init() {
    let (_qemu, ws_port) = qemu_vnc().await;
    let target = format!("127.0.0.1:{ws_port}");
    let mut proxy = Proxy::start(&["--target-websocket", "127.0.0.1:0", &target]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: binary\r\n").await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(rfb_server_init(&mut raw).await, "QEMU");
    raw.send_frame(0x88, &[0x0F, 0xA1], true).await;
    assert_eq!(raw.read_close().await.0, 4001);
    let line = proxy.wait_line("closed:", WAIT);
    assert!(line.contains("client closed (4001)"), "{line}");
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.contains(&format!("relaying to ws://127.0.0.1:{ws_port}/")))
    );
}

#[tokio::test]
async fn qemu_vnc_websocket_port_named_by_a_token_file_ws_url() {
    let (_qemu, ws_port) = qemu_vnc().await;
    let dir = TempDir::new("ws-tokens");
    let tokens = dir.path("tokens");
    std::fs::write(&tokens, format!("vm1: ws://127.0.0.1:{ws_port}/\nplain: 127.0.0.1:1\n")).unwrap();
    let source = tokens.to_str().unwrap();
    let proxy = Proxy::start(&["--token-plugin", "TokenFile", "--token-source", source, "127.0.0.1:0"]);
    let (mut raw, head) = Raw::upgrade_to(proxy.addr, "/websockify?token=vm1", "").await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(rfb_server_init(&mut raw).await, "QEMU");
}

/// Reads binary frames until the text contains every needle.
async fn read_until(raw: &mut Raw, needles: &[&str]) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !needles.iter().all(|n| text.contains(n)) {
        assert!(Instant::now() < deadline, "no {needles:?} in {text:?}");
        let (first, data) = raw.read_frame().await;
        assert_eq!(first, 0x82, "expected binary frames, got {first:#x} {data:?}");
        text.push_str(&String::from_utf8_lossy(&data));
    }
    text
}

#[tokio::test]
async fn qemu_monitor_on_a_websocket_unix_socket_answers_and_its_quit_closes_the_client() {
    let dir = TempDir::new("ws-monitor");
    let socket = dir.path("mon.sock");
    let chardev = format!("socket,id=m0,path={},server=on,wait=off,websocket=on", socket.display());
    let mut qemu = Qemu::start(&["-chardev", &chardev, "-mon", "chardev=m0,mode=readline"]);
    let path = socket.clone();
    qemu.wait_until("its monitor socket", async || path.exists()).await;
    let target = format!("ws+unix:{}", socket.display());
    let mut proxy = Proxy::start(&["127.0.0.1:0", &target]);

    let (mut raw, head) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: binary\r\n").await;
    assert_eq!(status(&head), 101, "{head}");
    read_until(&mut raw, &["QEMU", "monitor", "(qemu)"]).await;
    raw.send_frame(0x82, b"info version\r\n", true).await;
    let text = read_until(&mut raw, &["info version", "7.", "(qemu) "]).await;
    assert!(text.contains("7."), "{text:?}");

    // `quit`: QEMU ends the connection; the browser side gets a close frame, not a bare hang-up.
    raw.send_frame(0x82, b"quit\r\n", true).await;
    let (code, reason) = raw.read_close().await;
    assert_eq!(code, 1000, "{reason}");
    let line = proxy.wait_line("closed:", WAIT);
    assert!(line.contains("target closed"), "{line}");
    let deadline = Instant::now() + WAIT;
    while qemu.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "QEMU did not quit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the test's WebSocket server saw of one connection.
#[derive(Debug)]
enum Seen {
    Request {
        path: String,
        protocol: Option<String>,
    },
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    /// Bytes sent in 3 s of `flood`.
    Flooded(u64),
}

/// A WebSocket server (tungstenite) on a loopback port, behind TLS with `tls`. It echoes binary
/// messages, and on `bye` closes with 4001 "bye now", on `ping` sends a ping, on `big` sends a
/// 3 MiB message, on `flood` sends 64 KiB messages for 3 s.
async fn ws_server_tls(tls: Option<tokio_rustls::TlsAcceptor>) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_ws(stream, tx).await,
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            serve_ws(stream, tx).await;
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

async fn ws_server() -> (u16, mpsc::UnboundedReceiver<Seen>) {
    ws_server_tls(None).await
}

async fn serve_ws<S>(stream: S, tx: mpsc::UnboundedSender<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let seen = tx.clone();
    // The callback's type is tungstenite's, its large error response included.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, mut response: Response| {
        let protocol = req
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        let path = req.uri().to_string();
        let _ = seen.send(Seen::Request { path, protocol });
        response
            .headers_mut()
            .insert("sec-websocket-protocol", "binary".parse().unwrap());
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Binary(data) if &data[..] == b"bye" => {
                let close = CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "bye now".into(),
                };
                let _ = ws.close(Some(close)).await;
            }
            Message::Binary(data) if &data[..] == b"ping" => {
                ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
            }
            Message::Binary(data) if &data[..] == b"flood" => {
                let chunk = vec![7u8; 64 * 1024];
                let mut sent = 0u64;
                let _ = tokio::time::timeout(Duration::from_secs(3), async {
                    loop {
                        ws.send(Message::binary(chunk.clone())).await.unwrap();
                        sent += chunk.len() as u64;
                    }
                })
                .await;
                let _ = tx.send(Seen::Flooded(sent));
                std::future::pending::<()>().await;
            }
            Message::Binary(data) if &data[..] == b"big" => {
                let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
                ws.send(Message::binary(big)).await.unwrap();
            }
            Message::Binary(data) => {
                let _ = tx.send(Seen::Binary(data.to_vec()));
                ws.send(Message::Binary(data)).await.unwrap();
            }
            Message::Pong(data) => {
                let _ = tx.send(Seen::Pong(data.to_vec()));
            }
            Message::Close(frame) => {
                let _ = tx.send(Seen::Close(frame.map(|f| (u16::from(f.code), f.reason.to_string()))));
            }
            _ => {}
        }
    }
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the WebSocket server saw nothing")
        .expect("the WebSocket server stopped")
}

#[tokio::test]
async fn websocket_target_gets_path_binary_masked_messages_pongs_and_the_clients_close_code() {
    let (port, mut seen) = ws_server().await;
    let target = format!("ws://127.0.0.1:{port}/vm/7?console=serial");
    let mut proxy = Proxy::start(&["127.0.0.1:0", &target]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: binary\r\n").await;
    assert_eq!(status(&head), 101, "{head}");
    match next_seen(&mut seen).await {
        Seen::Request { path, protocol } => {
            assert_eq!(path, "/vm/7?console=serial");
            assert_eq!(protocol.as_deref(), Some("binary"));
        }
        other => panic!("{other:?}"),
    }
    // tungstenite refuses unmasked client frames, so arriving at all proves the masking.
    raw.echo(b"hello target").await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Binary(d) if d == b"hello target"));
    // Large both ways: a 1 MiB upload in one frame, and the target's 3 MiB message.
    let up: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    raw.echo(&up).await;
    // A byte relay: the message may reach the target in several frames, as the client's reads went.
    let mut arrived = Vec::new();
    while arrived.len() < up.len() {
        match next_seen(&mut seen).await {
            Seen::Binary(d) => arrived.extend_from_slice(&d),
            other => panic!("{other:?}"),
        }
    }
    assert!(arrived == up);
    raw.send_frame(0x82, b"big", true).await;
    let mut got = Vec::new();
    while got.len() < 3 << 20 {
        let (first, data) = raw.read_frame().await;
        assert_eq!(first, 0x82);
        got.extend_from_slice(&data);
    }
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // The target's ping is answered by wsproxy and never reaches the browser.
    raw.send_frame(0x82, b"ping", true).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Pong(d) if d == b"p1"));
    raw.echo(b"after the ping").await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Binary(_)));
    // The browser's close code and reason reach the target.
    let mut close = 4002u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"window closed");
    raw.send_frame(0x88, &close, true).await;
    assert_eq!(raw.read_close().await, (4002, "window closed".into()));
    match next_seen(&mut seen).await {
        Seen::Close(frame) => assert_eq!(frame, Some((4002, "window closed".into()))),
        other => panic!("{other:?}"),
    }
    proxy.wait_line("client closed (4002 window closed)", WAIT);
}

/// The test's WebSocket server (`ws_server_tls`'s) on the UNIX socket `path`.
fn ws_server_unix(path: &std::path::Path) -> mpsc::UnboundedReceiver<Seen> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_ws(stream, tx.clone()));
        }
    });
    rx
}

/// `ws+unix:SOCKET:PATH` (the `ws` npm package's form): the handshake asks for PATH, on the
/// command line and in a token file alike; without `:PATH`, `/`.
#[tokio::test]
async fn a_ws_unix_target_sends_the_request_path_after_the_socket_path() {
    let dir = TempDir::new("ws-unix-path");
    let socket = dir.path("serial.sock");
    let mut seen = ws_server_unix(&socket);
    let target = format!("ws+unix:{}:/vm/7/serial?x=1", socket.display());
    let mut proxy = Proxy::start(&["127.0.0.1:0", &target]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert_eq!(status(&head), 101, "{head}");
    raw.echo(b"over a UNIX socket").await;
    match next_seen(&mut seen).await {
        Seen::Request { path, .. } => assert_eq!(path, "/vm/7/serial?x=1"),
        other => panic!("{other:?}"),
    }
    proxy.wait_line(&format!("relaying to {target}"), WAIT);

    let tokens = dir.path("tokens");
    let lines = format!(
        "vm7: ws+unix:{0}:/from/the/token/file\nroot: ws+unix:{0}\n",
        socket.display()
    );
    std::fs::write(&tokens, lines).unwrap();
    let proxy = Proxy::start(&[
        "--token-plugin",
        "TokenFile",
        "--token-source",
        tokens.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    for (token, want) in [("vm7", "/from/the/token/file"), ("root", "/")] {
        let (mut raw, head) = Raw::upgrade_to(proxy.addr, &format!("/websockify?token={token}"), "").await;
        assert_eq!(status(&head), 101, "{head}");
        raw.echo(token.as_bytes()).await;
        loop {
            match next_seen(&mut seen).await {
                Seen::Request { path, .. } => {
                    assert_eq!(path, want);
                    break;
                }
                Seen::Binary(_) | Seen::Close(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_websocket_targets_close_code_and_reason_reach_the_client() {
    let (port, mut seen) = ws_server().await;
    let mut proxy = Proxy::start(&["127.0.0.1:0", &format!("ws://127.0.0.1:{port}")]);
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    raw.echo(b"first").await;
    raw.send_frame(0x82, b"bye", true).await;
    assert_eq!(raw.read_close().await, (4001, "bye now".into()));
    let line = proxy.wait_line("closed:", WAIT);
    assert!(line.contains("target closed (4001 bye now)"), "{line}");
    // The target got wsproxy's reply to its close (tungstenite reports it as the peer's close).
    assert!(matches!(next_seen(&mut seen).await, Seen::Request { .. }));
    assert!(matches!(next_seen(&mut seen).await, Seen::Binary(_)));
    match next_seen(&mut seen).await {
        Seen::Close(frame) => assert_eq!(frame.map(|f| f.0), Some(4001)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_target_that_does_not_speak_websocket_gives_1011_and_a_clear_log_line() {
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["--target-websocket", "127.0.0.1:0", &echo.to_string()]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(raw.read_close().await.0, 1011);
    let line = proxy.wait_line("cannot connect to target", WAIT);
    assert!(
        line.contains("WebSocket target refused") && line.contains("instead of 101"),
        "{line}"
    );
}

#[tokio::test]
async fn target_websocket_with_a_token_plugin_is_refused_at_start() {
    let dir = TempDir::new("ws-refused");
    let tokens = dir.path("tokens");
    std::fs::write(&tokens, "vm1: ws://127.0.0.1:5700/\n").unwrap();
    let mut proxy = Proxy::spawn(&[
        "--target-websocket",
        "--token-plugin",
        "TokenFile",
        "--token-source",
        tokens.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let status = proxy.wait_exit(WAIT);
    assert_eq!(status.code(), Some(64));
    assert!(
        proxy.lines().iter().any(|l| l.contains("ws://HOST:PORT/PATH")),
        "{:?}",
        proxy.lines()
    );
}

/// The test's WebSocket server behind TLS with a self-signed certificate for `localhost`; its
/// port, what it sees, and the certificate's file (the CA to trust).
async fn wss_server(dir: &TempDir) -> (u16, mpsc::UnboundedReceiver<Seen>, std::path::PathBuf) {
    use rustls::pki_types::pem::PemObject;
    let (_, cert, key, _) = make_cert(dir);
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let (port, seen) = ws_server_tls(Some(acceptor)).await;
    (port, seen, cert)
}

/// The request path of the next connection the server sees (its messages before are skipped).
async fn next_request_path(seen: &mut mpsc::UnboundedReceiver<Seen>) -> String {
    loop {
        match next_seen(seen).await {
            Seen::Request { path, .. } => return path,
            Seen::Binary(_) | Seen::Close(_) | Seen::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_wss_target_trusts_the_target_cafile_and_only_that() {
    let dir = TempDir::new("wss-target");
    let (port, mut seen, cert) = wss_server(&dir).await;
    let target = format!("wss://localhost:{port}/secure");

    let proxy = Proxy::start(&[
        "--ssl-target",
        "--target-cafile",
        cert.to_str().unwrap(),
        "127.0.0.1:0",
        &target,
    ]);
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    raw.echo(b"over wss").await;
    match next_seen(&mut seen).await {
        Seen::Request { path, .. } => assert_eq!(path, "/secure"),
        other => panic!("{other:?}"),
    }
    raw.send_frame(0x82, b"bye", true).await;
    assert_eq!(raw.read_close().await, (4001, "bye now".into()));

    // Without --target-cafile, wss:// trusts the system's roots, which do not know this CA.
    let mut proxy = Proxy::start(&["127.0.0.1:0", &target]);
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    assert_eq!(raw.read_close().await.0, 1011);
    let line = proxy.wait_line("cannot connect to target", WAIT);
    assert!(
        line.contains(&target) && line.to_lowercase().contains("certificate"),
        "{line}"
    );
}

/// `--target-cafile` without `--ssl-target`: wss:// targets trust it, whether the command line, a
/// token file or a session's service names them; a target that never speaks TLS refuses it at
/// start with one line saying what to do.
#[tokio::test]
async fn the_target_cafile_serves_wss_targets_without_ssl_target() {
    let dir = TempDir::new("wss-cafile");
    let (port, mut seen, cert) = wss_server(&dir).await;
    let ca = cert.to_str().unwrap();

    let target = format!("wss://localhost:{port}/static");
    let proxy = Proxy::start(&["--target-cafile", ca, "127.0.0.1:0", &target]);
    let (mut raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert_eq!(status(&head), 101, "{head}");
    raw.echo(b"static wss").await;
    assert_eq!(next_request_path(&mut seen).await, "/static");

    let tokens = dir.path("tokens");
    std::fs::write(&tokens, format!("vm: wss://localhost:{port}/from-a-token\n")).unwrap();
    let proxy = Proxy::start(&[
        "--target-cafile",
        ca,
        "--token-plugin",
        "TokenFile",
        "--token-source",
        tokens.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let (mut raw, head) = Raw::upgrade_to(proxy.addr, "/websockify?token=vm", "").await;
    assert_eq!(status(&head), 101, "{head}");
    raw.echo(b"token wss").await;
    assert_eq!(next_request_path(&mut seen).await, "/from-a-token");

    // A session's command (here one that only waits) and its wss:// target.
    let services = format!(
        "[[service]]\nname = \"vm\"\ncount = 1\ncommand = [\"sleep\", \"600\"]\n\
         target = \"wss://localhost:{port}/from-a-session\"\n"
    );
    let sessions = crate::sessions::prepare("reserve_timeout = 60", &services);
    let file = sessions.path("services.toml");
    let proxy = Proxy::start(&[
        "--target-cafile",
        ca,
        "--sessions",
        file.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let token = crate::sessions::reserve(proxy.addr, "alice-token", "vm").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut raw, head) = Raw::upgrade_to(proxy.addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "{head}");
    raw.echo(b"session wss").await;
    assert_eq!(next_request_path(&mut seen).await, "/from-a-session");

    // A plain TCP target never speaks TLS without --ssl-target.
    let mut refused = Proxy::spawn(&["--target-cafile", ca, "127.0.0.1:0", "127.0.0.1:5901"]);
    assert_eq!(refused.wait_exit(WAIT).code(), Some(64));
    let lines = refused.lines();
    assert!(
        lines.len() == 1 && lines[0].contains("--target-cafile") && lines[0].contains("add --ssl-target"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_client_that_reads_nothing_backpressures_a_websocket_target() {
    let (port, mut seen) = ws_server().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &format!("ws://127.0.0.1:{port}/")]);
    let (mut raw, _) = Raw::upgrade(proxy.addr, "").await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Request { .. }));
    raw.send_frame(0x82, b"flood", true).await;
    let sent = match next_seen(&mut seen).await {
        Seen::Flooded(sent) => sent,
        other => panic!("{other:?}"),
    };
    // Socket buffers on the way hold a few MiB; without backpressure it would be gigabytes.
    assert!(
        sent < 64 << 20,
        "the target sent {sent} bytes to a client that reads nothing"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
    let rss: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss < 64 * 1024, "proxy RSS grew to {rss} KiB");
}
