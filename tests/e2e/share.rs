//! Shared consoles (`--share`): several raw WebSocket clients on one target connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, watch};

use crate::real_servers::require;
use crate::util::*;

/// A target that takes any number of connections (so a test sees if wsproxy opens a second),
/// records what it receives, and sends what the test says on the latest connection.
struct Target {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Everything received, over all connections.
    input: watch::Receiver<Vec<u8>>,
    /// Connections that reached end of stream.
    closed: watch::Receiver<usize>,
    writer: Arc<Mutex<Option<OwnedWriteHalf>>>,
}

impl Target {
    async fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (input_tx, input) = watch::channel(Vec::new());
        let (closed_tx, closed) = watch::channel(0);
        let writer: Arc<Mutex<Option<OwnedWriteHalf>>> = Arc::default();
        let (input_tx, closed_tx) = (Arc::new(input_tx), Arc::new(closed_tx));
        let (count, latest) = (accepted.clone(), writer.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (mut read, write) = stream.into_split();
                *latest.lock().await = Some(write);
                let (input_tx, closed_tx) = (input_tx.clone(), closed_tx.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = read.read(&mut buf).await {
                        input_tx.send_modify(|input| input.extend_from_slice(&buf[..n]));
                    }
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        Target {
            addr,
            accepted,
            input,
            closed,
            writer,
        }
    }

    /// Sends on the latest connection, once there is one (bounded wait).
    async fn send(&self, bytes: &[u8]) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(writer) = self.writer.lock().await.as_mut() {
                writer.write_all(bytes).await.expect("the target's write");
                return;
            }
            assert!(Instant::now() < deadline, "no connection to the target");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the target has received something that `done` accepts.
    async fn input_until(&mut self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut input = self.input.clone();
        match tokio::time::timeout(WAIT, input.wait_for(|input| done(input))).await {
            Ok(seen) => seen.expect("the target's input").clone(),
            Err(_) => panic!(
                "the target received only {:?}",
                String::from_utf8_lossy(&self.input.borrow())
            ),
        }
    }

    async fn closed_connections(&mut self, count: usize) {
        tokio::time::timeout(WAIT, self.closed.wait_for(|n| *n >= count))
            .await
            .expect("the target connection was not closed")
            .unwrap();
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn window(proxy: &Proxy) -> Raw {
    let (raw, head) = Raw::upgrade(proxy.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    raw
}

/// Reads binary frames until `want` bytes came.
pub(crate) async fn read_bytes(raw: &mut Raw, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let (first, data) = raw.read_frame().await;
        assert_eq!(
            first,
            0x82,
            "expected data, got {first:#x} {:?}",
            String::from_utf8_lossy(&data)
        );
        got.extend_from_slice(&data);
    }
    got
}

/// Waits (bounded) until `count` windows are relayed (each logs one "open:" line).
fn opened(proxy: &mut Proxy, count: usize) {
    let deadline = Instant::now() + WAIT;
    while proxy.lines().iter().filter(|l| l.contains("open: relaying")).count() < count {
        assert!(
            Instant::now() < deadline,
            "{count} windows did not open: {:?}",
            proxy.lines()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn windows_share_one_connection_see_all_output_and_all_type() {
    let mut target = Target::start().await;
    let mut proxy = Proxy::start(&["--share", "127.0.0.1:0", &target.addr.to_string()]);
    let mut a = window(&proxy).await;
    let mut b = window(&proxy).await;
    opened(&mut proxy, 2);
    target.send(b"login: ").await;
    assert_eq!(read_bytes(&mut a, 7).await, b"login: ");
    assert_eq!(read_bytes(&mut b, 7).await, b"login: ");
    assert_eq!(
        target.accepted(),
        1,
        "a second window opened a second target connection"
    );

    // Both type at once, each in its own alphabet: each window's bytes arrive whole and in order.
    let (from_a, from_b): (Vec<u8>, Vec<u8>) = (
        (0..2000).map(|i| b'a' + (i % 26) as u8).collect(),
        (0..2000).map(|i| b'A' + (i % 26) as u8).collect(),
    );
    let (mut a, mut b) = tokio::join!(
        async {
            for piece in from_a.chunks(37) {
                a.send_frame(0x82, piece, true).await;
            }
            a
        },
        async {
            for piece in from_b.chunks(53) {
                b.send_frame(0x82, piece, true).await;
            }
            b
        }
    );
    let input = target.input_until(|input| input.len() >= 4000).await;
    let lower: Vec<u8> = input.iter().copied().filter(u8::is_ascii_lowercase).collect();
    let upper: Vec<u8> = input.iter().copied().filter(u8::is_ascii_uppercase).collect();
    assert_eq!((lower, upper), (from_a, from_b));
    assert_eq!(input.len(), 4000);

    target.send(b"$ ").await;
    assert_eq!(read_bytes(&mut a, 2).await, b"$ ");
    assert_eq!(read_bytes(&mut b, 2).await, b"$ ");
    assert_eq!(target.accepted(), 1);
}

#[tokio::test]
async fn a_late_window_gets_the_last_64_kib_first() {
    let target = Target::start().await;
    let mut proxy = Proxy::start(&["--share", "127.0.0.1:0", &target.addr.to_string()]);
    let mut a = window(&proxy).await;
    opened(&mut proxy, 1);
    let mut output = vec![0u8; 100_000];
    Pattern::new(7).fill(&mut output);
    target.send(&output).await;
    assert_eq!(read_bytes(&mut a, output.len()).await, output);

    let mut late = window(&proxy).await;
    let replay = read_bytes(&mut late, 64 * 1024).await;
    assert_eq!(replay, output[output.len() - 64 * 1024..], "the late window's replay");
    target.send(b"next").await;
    assert_eq!(read_bytes(&mut late, 4).await, b"next");
    assert_eq!(read_bytes(&mut a, 4).await, b"next");
    assert_eq!(target.accepted(), 1);
}

#[tokio::test]
async fn view_only_windows_after_the_first_do_not_type() {
    let mut target = Target::start().await;
    let mut proxy = Proxy::start(&["--share", "--share-view-only", "127.0.0.1:0", &target.addr.to_string()]);
    let mut first = window(&proxy).await;
    opened(&mut proxy, 1);
    let mut viewer = window(&proxy).await;
    opened(&mut proxy, 2);
    viewer.send_frame(0x82, b"VIEWER", true).await;
    first.send_frame(0x82, b"first", true).await;
    assert_eq!(target.input_until(|input| input.ends_with(b"first")).await, b"first");
    target.send(b"shown to both").await;
    assert_eq!(read_bytes(&mut first, 13).await, b"shown to both");
    assert_eq!(read_bytes(&mut viewer, 13).await, b"shown to both");

    // The first window leaves: the oldest one left types now.
    first.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    assert_eq!(first.read_close().await.0, 1000);
    proxy.wait_line("closed: client closed (1000)", WAIT);
    viewer.send_frame(0x82, b"NOW", true).await;
    assert_eq!(target.input_until(|input| input.ends_with(b"NOW")).await, b"firstNOW");
    assert_eq!(target.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_falls_1_mib_behind_is_closed_with_1008() {
    let target = Arc::new(Target::start().await);
    let mut proxy = Proxy::start(&["--share", "127.0.0.1:0", &target.addr.to_string()]);
    let mut fast = window(&proxy).await;
    // The slow window reads nothing until it is dropped: once the kernel's buffers are full, it
    // falls behind.
    let slow_socket = tokio::net::TcpSocket::new_v4().unwrap();
    slow_socket.set_recv_buffer_size(4096).unwrap();
    let slow_stream = slow_socket.connect(proxy.addr).await.unwrap();
    let (mut slow, head) = Raw {
        stream: slow_stream,
        buf: Vec::new(),
    }
    .send_upgrade("/", &format!("Host: {}\r\n", proxy.addr))
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    opened(&mut proxy, 2);

    const TOTAL: usize = 24 << 20;
    let reader = tokio::spawn(async move {
        let mut checker = Checker::new(11);
        let mut got = 0;
        while got < TOTAL {
            let (first, data) = fast.read_frame().await;
            assert_eq!(
                first,
                0x82,
                "the fast window got {first:#x} {:?}",
                String::from_utf8_lossy(&data)
            );
            assert!(checker.check(&data), "the fast window's bytes differ at {got}");
            got += data.len();
        }
        got
    });
    // Paced like a (very busy) console: the fast window keeps up, the slow one cannot.
    let sender = tokio::spawn({
        let target = target.clone();
        async move {
            let mut pattern = Pattern::new(11);
            let mut chunk = vec![0u8; 64 * 1024];
            for _ in 0..TOTAL / chunk.len() {
                pattern.fill(&mut chunk);
                target.send(&chunk).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    proxy.wait_line("more than 1 MiB behind", WAIT);
    let (code, reason) = slow.read_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("1 MiB behind"), "{reason}");
    tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    assert_eq!(tokio::time::timeout(WAIT, reader).await.unwrap().unwrap(), TOTAL);
    assert_eq!(target.accepted(), 1);
}

#[tokio::test]
async fn the_target_connection_closes_when_the_last_window_leaves() {
    let mut target = Target::start().await;
    let mut proxy = Proxy::start(&["--share", "127.0.0.1:0", &target.addr.to_string()]);
    let mut a = window(&proxy).await;
    let mut b = window(&proxy).await;
    opened(&mut proxy, 2);
    a.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    assert_eq!(a.read_close().await.0, 1000);
    proxy.wait_line("closed: client closed (1000)", WAIT);
    still_reaches(&mut b, &mut target).await;
    b.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    assert_eq!(b.read_close().await.0, 1000);
    target.closed_connections(1).await;

    // The next window opens a new connection.
    let mut c = window(&proxy).await;
    opened(&mut proxy, 3);
    let deadline = Instant::now() + WAIT;
    while target.accepted() < 2 {
        assert!(Instant::now() < deadline, "no new target connection");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    target.send(b"fresh").await;
    assert_eq!(read_bytes(&mut c, 5).await, b"fresh");
}

#[tokio::test]
async fn share_keep_keeps_the_connection_and_the_output_of_the_meantime() {
    let mut target = Target::start().await;
    let mut proxy = Proxy::start(&["--share", "--share-keep", "127.0.0.1:0", &target.addr.to_string()]);
    let mut a = window(&proxy).await;
    opened(&mut proxy, 1);
    target.send(b"before;").await;
    assert_eq!(read_bytes(&mut a, 7).await, b"before;");
    a.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    assert_eq!(a.read_close().await.0, 1000);
    proxy.wait_line("closed: client closed (1000)", WAIT);

    // Nobody is connected; the target still talks, and its connection stays.
    target.send(b"meanwhile;").await;
    let mut b = window(&proxy).await;
    assert_eq!(read_bytes(&mut b, 17).await, b"before;meanwhile;");
    b.send_frame(0x82, b"typed", true).await;
    target.input_until(|input| input == b"typed").await;
    assert_eq!(target.accepted(), 1);
    assert_eq!(*target.closed.borrow(), 0, "the kept connection was closed");
}

#[tokio::test]
async fn the_target_closing_closes_every_window_with_1000() {
    let target = Target::start().await;
    let mut proxy = Proxy::start(&["--share", "127.0.0.1:0", &target.addr.to_string()]);
    let mut a = window(&proxy).await;
    let mut b = window(&proxy).await;
    opened(&mut proxy, 2);
    target.send(b"bye").await;
    target.writer.lock().await.take();
    assert_eq!(read_bytes(&mut a, 3).await, b"bye");
    assert_eq!(read_bytes(&mut b, 3).await, b"bye");
    assert_eq!(a.read_close().await.0, 1000);
    assert_eq!(b.read_close().await.0, 1000);
}

/// QEMU's monitor on a chardev socket takes one client; with `--share` two windows use it: both
/// see what either typed and its answer, and a late window sees the earlier answers.
#[tokio::test]
async fn two_windows_on_a_real_qemu_monitor_chardev() {
    require("qemu-system-x86_64", "qemu-system-x86");
    let dir = TempDir::new("share-qemu");
    let socket = dir.path("monitor.sock");
    let mut qemu = std::process::Command::new("qemu-system-x86_64")
        .args(["-machine", "none", "-nodefaults", "-display", "none", "-chardev"])
        .arg(format!("socket,id=mon,path={},server=on,wait=off", socket.display()))
        .args(["-mon", "chardev=mon,mode=readline"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let deadline = Instant::now() + WAIT;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "QEMU made no monitor socket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut proxy = Proxy::start(&["--share", "--unix-target", socket.to_str().unwrap(), "127.0.0.1:0"]);
    let mut a = window(&proxy).await;
    let mut b = window(&proxy).await;
    opened(&mut proxy, 2);
    a.send_frame(0x82, b"info version\r", true).await;
    let answer_a = text_until(&mut a, |t| {
        t.contains("info version") && t.matches("(qemu)").count() >= 2
    })
    .await;
    let answer_b = text_until(&mut b, |t| {
        t.contains("info version") && t.matches("(qemu)").count() >= 2
    })
    .await;
    assert!(
        answer_a.contains("7.") || answer_a.contains("8.") || answer_a.contains("9."),
        "{answer_a}"
    );
    assert!(
        answer_b.contains(answer_a.trim_end()),
        "b saw {answer_b:?}, a saw {answer_a:?}"
    );

    b.send_frame(0x82, b"info name\r", true).await;
    text_until(&mut a, |t| t.contains("info name")).await;
    let mut late = window(&proxy).await;
    let replay = text_until(&mut late, |t| t.contains("info version") && t.contains("info name")).await;
    assert!(replay.contains("QEMU"), "{replay:?}");
    drop((a, b, late));
    let _ = qemu.kill();
    let _ = qemu.wait();
}

/// Reads frames as text until `done` holds for all read so far.
async fn text_until(raw: &mut Raw, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !done(&text) {
        assert!(Instant::now() < deadline, "not there yet: {text:?}");
        let (_, data) = raw.read_frame().await;
        text.push_str(&String::from_utf8_lossy(&data));
    }
    text
}

/// The window still reaches the target (after another window left).
async fn still_reaches(raw: &mut Raw, target: &mut Target) {
    raw.send_frame(0x82, b"still here", true).await;
    target.input_until(|input| input.ends_with(b"still here")).await;
    target.send(b"ok").await;
    assert_eq!(read_bytes(raw, 2).await, b"ok");
}
