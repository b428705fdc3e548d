//! Test harness: the real `wsproxy` binary on port 0, real sockets, bounded waits everywhere.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Every wait in the tests is bounded by this unless a test says otherwise.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `wsproxy`, killed on drop. Its stderr is collected line by line.
pub struct Proxy {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// Set when stderr reached EOF: every line has been collected.
    stderr_done: Arc<std::sync::atomic::AtomicBool>,
    pub addr: SocketAddr,
}

impl Proxy {
    /// Starts `wsproxy ARGS` and waits for its "listening on" line.
    pub fn start(args: &[&str]) -> Proxy {
        Proxy::spawn(args).started()
    }

    /// Waits for the "listening on" line and takes the (first) address from it.
    pub fn started(self) -> Proxy {
        let mut proxy = self;
        let line = proxy.wait_line("listening on ", WAIT);
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|all| all.split(" and ").next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}; stderr: {:?}", proxy.lines()));
        proxy.addr = addr;
        proxy
    }

    /// Starts `wsproxy ARGS` without waiting for anything (for start-up errors, UNIX listeners).
    pub fn spawn(args: &[&str]) -> Proxy {
        Proxy::spawn_with_stdin(args, Stdio::null())
    }

    /// Starts `wsproxy ARGS` with the given stdin (a socket, for `--inetd`).
    pub fn spawn_with_stdin(args: &[&str], stdin: Stdio) -> Proxy {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsproxy"));
        command.args(args).stdin(stdin);
        Proxy::spawn_command(command)
    }

    /// Starts `command`, which runs wsproxy in its own process (`systemd-socket-activate`
    /// execs it), collecting its stderr.
    pub fn spawn_command(mut command: Command) -> Proxy {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsproxy");
        let stderr = child.stderr.take().expect("stderr");
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let sink = lines.clone();
        let stderr_done: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let done = stderr_done.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("WSPROXY_TEST_VERBOSE").is_some() {
                    eprintln!("[wsproxy] {line}");
                }
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
            let _guard = sink.0.lock().unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            sink.1.notify_all();
        });
        Proxy {
            child,
            lines,
            stderr_done,
            addr: "0.0.0.0:0".parse().unwrap(),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let (lock, cond) = &*self.lines;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                drop(lines);
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "no stderr line with {needle:?} within {limit:?}; exit: {status:?}; stderr: {:#?}",
                    self.lines()
                );
            }
            lines = cond.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).expect("signal");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader collect the last lines (bounded: a leftover process may hold stderr).
                let (lock, cond) = &*self.lines;
                let guard = lock.lock().unwrap();
                let _ = cond
                    .wait_timeout_while(guard, Duration::from_secs(2), |_| {
                        !self.stderr_done.load(std::sync::atomic::Ordering::SeqCst)
                    })
                    .unwrap();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wsproxy still running after {limit:?}; stderr: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wsproxy-e2e-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A deterministic byte stream (xorshift), so both ends can check every byte without storing it.
/// The stream is continuous whatever sizes `fill` is called with.
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state.to_le_bytes()
    }

    pub fn fill(&mut self, mut buf: &mut [u8]) {
        while self.used < 8 && !buf.is_empty() {
            buf[0] = self.word[self.used];
            self.used += 1;
            buf = &mut buf[1..];
        }
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_word());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word();
            let n = rest.len();
            rest.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }
}

/// Checks incoming bytes against a `Pattern`, whatever the chunking.
pub struct Checker {
    pattern: Pattern,
    expected: Vec<u8>,
    pub seen: u64,
}

impl Checker {
    pub fn new(seed: u64) -> Checker {
        Checker {
            pattern: Pattern::new(seed),
            expected: Vec::new(),
            seen: 0,
        }
    }

    /// Returns false if any byte differs.
    pub fn check(&mut self, data: &[u8]) -> bool {
        self.expected.resize(data.len(), 0);
        self.pattern.fill(&mut self.expected);
        self.seen += data.len() as u64;
        self.expected == data
    }
}

/// A target that, for each connection, sends `send` bytes of pattern `seed_down` and checks what it
/// receives against pattern `seed_up`, then reports (bytes received, all matched).
pub async fn pattern_target_tcp(
    send: u64,
    seed_down: u64,
    seed_up: u64,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(u64, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(pattern_session(stream, send, seed_down, seed_up, tx.clone()));
        }
    });
    (addr, rx)
}

pub async fn pattern_target_unix(
    path: &Path,
    send: u64,
    seed_down: u64,
    seed_up: u64,
) -> tokio::sync::mpsc::UnboundedReceiver<(u64, bool)> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(pattern_session(stream, send, seed_down, seed_up, tx.clone()));
        }
    });
    rx
}

async fn pattern_session<S>(
    stream: S,
    send: u64,
    seed_down: u64,
    seed_up: u64,
    tx: tokio::sync::mpsc::UnboundedSender<(u64, bool)>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = tokio::spawn(async move {
        let mut pattern = Pattern::new(seed_down);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = send;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pattern.fill(&mut buf[..n]);
            if writer.write_all(&buf[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
        // Keep the write side open: the client decides when the session ends.
        std::future::pending::<()>().await;
    });
    let mut checker = Checker::new(seed_up);
    let mut ok = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => ok &= checker.check(&buf[..n]),
        }
    }
    writing.abort();
    let _ = tx.send((checker.seen, ok));
}

/// A TCP echo target.
pub async fn echo_target() -> SocketAddr {
    echo_target_at("127.0.0.1:0").await
}

/// A TCP echo target on `addr` (`[::1]:0` for IPv6).
pub async fn echo_target_at(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

pub type Ws<S> = WebSocketStream<S>;

/// A WebSocket client over plain TCP, offering `protocols` (comma-joined) if not empty.
pub async fn ws_connect(addr: SocketAddr, protocols: &str) -> (Ws<TcpStream>, http::Response<Option<Vec<u8>>>) {
    ws_connect_to(addr, "/websockify", protocols).await
}

/// `ws_connect` to `path` (with a query: `/websockify?token=...`).
pub async fn ws_connect_to(
    addr: SocketAddr,
    path: &str,
    protocols: &str,
) -> (Ws<TcpStream>, http::Response<Option<Vec<u8>>>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if !protocols.is_empty() {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake timed out")
        .expect("handshake failed")
}

/// Sends `total` bytes of pattern `seed_up` in `chunk`-sized binary messages while reading and
/// checking `expect_down` bytes of pattern `seed_down`; returns (bytes received, all matched).
pub async fn exchange<S>(
    ws: Ws<S>,
    total: u64,
    chunk: usize,
    seed_up: u64,
    expect_down: u64,
    seed_down: u64,
) -> (u64, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        let mut pattern = Pattern::new(seed_up);
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk as u64) as usize;
            let mut buf = vec![0u8; n];
            pattern.fill(&mut buf);
            sink.send(Message::binary(buf)).await.expect("send");
            left -= n as u64;
        }
        sink
    });
    let mut checker = Checker::new(seed_down);
    let mut ok = true;
    while checker.seen < expect_down {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("download stalled")
        {
            Some(Ok(Message::Binary(data))) => ok &= checker.check(&data),
            other => panic!("unexpected {other:?} after {} bytes", checker.seen),
        }
    }
    let mut sink = tokio::time::timeout(WAIT, sender)
        .await
        .expect("upload stalled")
        .unwrap();
    sink.send(Message::Close(None)).await.unwrap();
    (checker.seen, ok)
}

/// A WebSocket client over TLS to `addr`, trusting exactly `ca_der` (name: localhost).
pub async fn wss_connect(addr: SocketAddr, ca_der: &[u8]) -> Ws<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("wss://localhost:{}/", addr.port())
        .into_client_request()
        .unwrap();
    let connector = tokio_tungstenite::Connector::Rustls(tls_client(ca_der));
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async_tls_with_config(request, stream, None, Some(connector)),
    )
    .await
    .expect("wss handshake timed out")
    .expect("wss handshake");
    ws
}

/// A raw TCP client for what libraries refuse to send: unmasked frames, garbage, slow requests.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Connects from a chosen loopback address (to be another client for per-address limits).
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        Raw {
            stream: socket.connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Sends an upgrade request and returns the response head; leftover bytes stay in `buf`.
    pub async fn upgrade(addr: SocketAddr, extra_headers: &str) -> (Raw, String) {
        Raw::upgrade_to(addr, "/websockify", extra_headers).await
    }

    /// Sends an upgrade request for `path` (with a query: `/websockify?token=...`).
    pub async fn upgrade_to(addr: SocketAddr, path: &str, extra_headers: &str) -> (Raw, String) {
        let raw = Raw::connect(addr).await;
        raw.send_upgrade(path, &format!("Host: {addr}\r\n{extra_headers}"))
            .await
    }

    /// Sends an upgrade request on this connection; `headers` must include Host if wanted.
    pub async fn send_upgrade(mut self, path: &str, headers: &str) -> (Raw, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        self.stream.write_all(request.as_bytes()).await.unwrap();
        let head = self.read_head().await;
        (self, head)
    }

    /// Reads the body that follows `head` (by its Content-Length; the connection stays open).
    pub async fn read_body(&mut self, head: &str) -> String {
        let len: usize = header(head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
        while self.buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("body timed out")
                .unwrap();
            assert!(n > 0, "connection closed inside the body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = self.buf.drain(..len).collect();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Sends `payload` as a binary message and expects it back (an echo target behind the proxy).
    pub async fn echo(&mut self, payload: &[u8]) {
        self.send_frame(0x82, payload, true).await;
        let mut got = Vec::new();
        while got.len() < payload.len() {
            let (first, data) = self.read_frame().await;
            assert_eq!(first, 0x82, "expected a binary frame, got {first:#x} {data:?}");
            got.extend_from_slice(&data);
        }
        assert_eq!(got, payload);
    }

    /// Reads an HTTP response head (up to the blank line).
    pub async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("response timed out")
                .unwrap();
            assert!(
                n > 0,
                "connection closed before a response; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads everything until the server closes (bounded).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let _ = tokio::time::timeout(WAIT, self.stream.read_to_end(&mut self.buf))
            .await
            .expect("no EOF");
        std::mem::take(&mut self.buf)
    }

    pub async fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        self.stream.write_all(&frame(first, payload, masked)).await.unwrap();
    }

    /// Reads one server frame: (first byte, payload).
    pub async fn read_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((first, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return (first, payload);
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("frame timed out")
                .unwrap();
            assert!(n > 0, "connection closed while waiting for a frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame and returns its code.
    pub async fn read_close(&mut self) -> (u16, String) {
        loop {
            let (first, payload) = self.read_frame().await;
            if first & 0x0F == 0x8 {
                assert!(payload.len() >= 2, "close frame without a code");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
    }
}

/// Builds a client frame (masked with a fixed key unless `masked` is false).
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![first];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, start) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= start + len).then(|| (buf[0], buf[start..start + len].to_vec(), start + len))
}

/// One raw HTTP request; returns (status, head, body) after the server closes or the body is read.
pub async fn http_get(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut raw = Raw::connect(addr).await;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    raw.stream.write_all(request.as_bytes()).await.unwrap();
    let head = raw.read_head().await;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        raw.read_to_end().await
    };
    (status, head, body)
}

/// The status code of a response head.
pub fn status(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Header value from a response head, case-insensitively.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A self-signed certificate for 127.0.0.1/localhost, written as one PEM (cert + key, websockify's
/// self.pem convention) and as separate files. Returns (self.pem, cert.pem, key.pem, CA der).
pub fn make_cert(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let both = dir.path("self.pem");
    std::fs::write(&both, format!("{cert_pem}{key_pem}")).unwrap();
    let cert_path = dir.path("cert.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    let key_path = dir.path("key.pem");
    std::fs::write(&key_path, &key_pem).unwrap();
    (both, cert_path, key_path, cert.cert.der().to_vec())
}

/// A TLS client configuration trusting exactly `ca_der`.
pub fn tls_client(ca_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A free loopback port at this instant (for servers that cannot report a port they bound, such as
/// redis-server): callers retry with another one if the server then fails to bind it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real redis-server on a loopback port, in a temporary directory, without persistence; killed on
/// drop. `stop` and `restart` (same port) are for outage tests.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// Keeps its data across `restart` (an append-only file in its directory).
    persist: bool,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(false)
    }

    /// One that keeps its data across `restart`, as a production Redis would.
    pub fn start_persistent() -> Redis {
        Redis::start_with(true)
    }

    fn start_with(persist: bool) -> Redis {
        let dir = TempDir::new("redis");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = Redis::spawn(port, &dir, persist) {
                return Redis {
                    child: Some(child),
                    port,
                    dir,
                    persist,
                };
            }
        }
        panic!("redis-server did not start on any of 5 ports (is it installed? make deps installs it)");
    }

    /// Starts redis-server on `port` and waits (bounded) until it answers PING; `None` if it exits.
    fn spawn(port: u16, dir: &TempDir, persist: bool) -> Option<Child> {
        // The UNIX socket lies in our own directory: a PONG there is from this server, not from
        // another test's redis-server that took the port first.
        let socket = dir.path(&format!("redis-{port}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if persist { "yes" } else { "no" },
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&dir.0)
            .arg("--unixsocket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            let pong = std::os::unix::net::UnixStream::connect(&socket)
                .and_then(|stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                    resp_command(stream, &["PING"])
                })
                .is_ok_and(|reply| reply == "+PONG");
            if pong {
                return Some(child);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (a restart after `stop`).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + WAIT;
        while self.child.is_none() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not come back on port {}",
                self.port
            );
            self.child = Redis::spawn(self.port, &self.dir, self.persist);
        }
    }

    /// GET `key`: the value, or `None` for a missing key.
    pub fn get(&self, key: &str) -> Option<String> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let request = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        std::io::Write::write_all(reader.get_mut(), request.as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if line.starts_with("$-1") {
            return None;
        }
        let mut value = String::new();
        std::io::BufRead::read_line(&mut reader, &mut value).unwrap();
        Some(value.trim_end().to_owned())
    }

    /// Runs one command; returns the first line of the reply.
    pub fn command(&self, args: &[&str]) -> String {
        redis_command(self.port, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One RESP command over a fresh connection; the reply's first line (`+OK`, `:1`, `$-1`, ...).
fn redis_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    resp_command(stream, args)
}

fn resp_command<S: std::io::Read + std::io::Write>(mut stream: S, args: &[&str]) -> std::io::Result<String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "redis closed"));
        }
        reply.push(byte[0]);
    }
    reply.truncate(reply.len() - 2);
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// One message through a WebSocket to an echo target and back.
pub async fn echo_once<S>(ws: &mut Ws<S>, payload: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    futures_util::SinkExt::send(ws, tokio_tungstenite::tungstenite::Message::binary(payload.to_vec()))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, futures_util::StreamExt::next(ws))
        .await
        .expect("no echo")
    {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(data))) => assert_eq!(&data[..], payload),
        other => panic!("expected the echo, got {other:?}"),
    }
}
