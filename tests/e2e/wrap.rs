//! Wrap mode (issue 3): `wsproxy PORT -- CMD` with the real librebind.so loaded into real processes.
//!
//! The command must be told the port wsproxy listens on, so these tests pick a free port first (bind
//! port 0, read it, close it); the small race with other processes is accepted here.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

/// `python3 -m http.server PORT` bound to loopback.
fn http_server(port: u16) -> String {
    format!("python3 -m http.server {port} --bind 127.0.0.1")
}

/// Sends an HTTP/1.0 request through a WebSocket session and returns what came back.
async fn http_through(proxy: &Proxy) -> String {
    http_over(ws_connect(proxy.addr, "binary").await.0).await
}

async fn http_over<S>(mut ws: Ws<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::binary(b"GET / HTTP/1.0\r\n\r\n".to_vec()))
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no answer") {
            Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("session failed: {e}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The wrapped command's process group, and the wsproxy whose mark its escaped daemons carry; all
/// killed on drop so a failed test (whose wsproxy gets SIGKILL and cannot stop them) leaves nothing
/// behind.
pub(crate) struct Group(pub(crate) i32, u32);

impl Drop for Group {
    fn drop(&mut self) {
        if !group_members(self.0).is_empty() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
        }
        for pid in wsproxy::wrap::leftovers::marked(self.1) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
    }
}

/// The process group the supervisor logged for the wrapped command.
pub(crate) fn logged_group(proxy: &mut Proxy) -> Group {
    let line = proxy.wait_line("process group ", WAIT);
    let pgid = line
        .split("process group ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no process group in {line:?}"));
    Group(pgid, proxy.pid())
}

/// Every process as (`pid (comm)`, state, parent pid, process group), read from /proc/*/stat.
fn processes() -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let [state, ppid, pgrp, ..] = fields[..] {
            out.push((
                format!("{head})"),
                state.to_string(),
                ppid.to_string(),
                pgrp.to_string(),
            ));
        }
    }
    out
}

/// Processes (not zombies) in process group `pgid`, as `pid (comm) state` strings.
pub(crate) fn group_members(pgid: i32) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|(_, state, _, pgrp)| *pgrp == pgid.to_string() && state != "Z")
        .map(|(name, state, _, _)| format!("{name} {state}"))
        .collect()
}

/// Zombie children of `parent`.
fn zombie_children(parent: u32) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|(_, state, ppid, _)| state == "Z" && *ppid == parent.to_string())
        .map(|(name, ..)| name)
        .collect()
}

pub(crate) fn wait_group_gone(pgid: i32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = group_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the command still alive: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The command binds `0.0.0.0:PORT`; librebind.so moves it to loopback, where wsproxy relays.
#[tokio::test]
async fn r3_exit_mode_relays_to_the_moved_port() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cmd = format!("python3 -m http.server {port} --bind 0.0.0.0");
    let mut args = vec!["--wrap-mode=exit", &listen, "--"];
    args.extend(cmd.split(' '));
    let mut proxy = Proxy::start(&args);
    let _group = logged_group(&mut proxy);
    let bound = proxy.wait_line("bound port", WAIT);
    assert!(bound.contains("127.0.0.1:"), "{bound}");
    assert!(!bound.contains(&format!("127.0.0.1:{port})")), "not moved: {bound}");
    let answer = http_through(&proxy).await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}; {:#?}", proxy.lines());
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
}

#[tokio::test]
async fn r3_exit_mode_exits_with_the_command_code() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&[&listen, "--", "sh", "-c", "exit 3"]);
    let status = proxy.wait_exit(Duration::from_secs(4));
    assert_eq!(status.code(), Some(3), "{:#?}", proxy.lines());
    proxy.wait_line("exited with code 3", WAIT);
}

#[tokio::test]
async fn r3_exit_mode_reports_a_signal_as_128_plus() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&[&listen, "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(143), "{:#?}", proxy.lines());
}

#[tokio::test]
async fn r3_respawn_is_limited_then_backs_off() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&["--wrap-mode=respawn", &listen, "--", "sh", "-c", "exit 1"]);
    let line = proxy.wait_line("before the next start", Duration::from_secs(3));
    assert!(line.contains("3 starts within 10s"), "{line}");
    let starts = proxy
        .lines()
        .iter()
        .filter(|l| l.contains("started the wrapped command"))
        .count();
    assert_eq!(starts, 3, "{:#?}", proxy.lines());
    // Still serving, and every exited start was reaped.
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_ok());
    assert_eq!(zombie_children(proxy.pid()), Vec::<String>::new());
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
}

#[tokio::test]
async fn r3_sigterm_leaves_no_process_of_the_command() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let script = format!("sleep 300 & sleep 300 & {}", http_server(port));
    let mut proxy = Proxy::start(&["--wrap-mode=respawn", &listen, "--", "sh", "-c", &script]);
    let group = logged_group(&mut proxy);
    proxy.wait_line("bound port", WAIT);
    assert!(group_members(group.0).len() >= 3, "{:?}", group_members(group.0));
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
    wait_group_gone(group.0);
}

#[tokio::test]
async fn r3_ignore_mode_keeps_serving_a_daemonized_server() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let script = format!("{} & exit 0", http_server(port));
    let mut proxy = Proxy::start(&["--wrap-mode=ignore", &listen, "--", "sh", "-c", &script]);
    let group = logged_group(&mut proxy);
    proxy.wait_line("still serving", WAIT);
    proxy.wait_line("bound port", WAIT);
    let answer = http_through(&proxy).await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}; {:#?}", proxy.lines());
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
    wait_group_gone(group.0);
}

#[tokio::test]
async fn r3_ignore_mode_says_when_the_server_is_gone() {
    let listen = format!("127.0.0.1:{}", free_port());
    let port = listen.rsplit(':').next().unwrap().to_owned();
    // Binds (so the address is reported) but never listens, then exits.
    let script = format!("python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", {port}))'");
    let mut proxy = Proxy::start(&["--wrap-mode=ignore", &listen, "--", "sh", "-c", &script]);
    proxy.wait_line("still serving", WAIT);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no close") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("close code").code), 1011);
    let line = proxy.wait_line("nothing listens on", WAIT);
    assert!(line.contains("the wrapped server is gone"), "{line}");
}

#[tokio::test]
async fn r3_a_command_that_is_not_found_exits_127() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&[&listen, "--", "/nonexistent/wsproxy-test-cmd"]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(127), "{:#?}", proxy.lines());
    let line = proxy.wait_line("cannot start the wrapped command", WAIT);
    assert!(line.contains("/nonexistent/wsproxy-test-cmd"), "{line}");
}

#[tokio::test]
async fn r3_wrap_mode_with_unix_listen_needs_wrap_port() {
    let dir = TempDir::new("wrap-unix");
    let sock = dir.path("ws.sock");
    let mut proxy = Proxy::spawn(&["--unix-listen", sock.to_str().unwrap(), "--", "true"]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(64), "{:#?}", proxy.lines());
    proxy.wait_line("--wrap-port", WAIT);
}

#[tokio::test]
async fn r3_a_command_that_is_not_executable_exits_126() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&[&listen, "--", "/etc/passwd"]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(126), "{:#?}", proxy.lines());
}

/// A command that never binds the port (wrong port, static binary) is named within 5 s; exit mode exits 1.
#[tokio::test]
async fn r3_a_command_that_never_binds_is_reported() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&[&listen, "--", "sleep", "60"]);
    let _group = logged_group(&mut proxy);
    let line = proxy.wait_line("has not bound port", Duration::from_secs(8));
    assert!(line.contains("LD_PRELOAD") && line.contains("same port"), "{line}");
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(1), "{:#?}", proxy.lines());
}

/// websockify crashes with a wrapped command on a UNIX listener (#570); wsproxy takes --wrap-port.
#[tokio::test]
async fn r3_unix_listen_with_wrap_port_and_web() {
    let dir = TempDir::new("wrap-unix-web");
    let socket = dir.path("ws.sock");
    let port = free_port().to_string();
    let script = http_server(port.parse().unwrap());
    let mut args = vec![
        "--unix-listen",
        socket.to_str().unwrap(),
        "--web",
        dir.0.to_str().unwrap(),
        "--wrap-port",
        &port,
        "--",
    ];
    args.extend(script.split(' '));
    let mut proxy = Proxy::spawn(&args);
    let _group = logged_group(&mut proxy);
    proxy.wait_line("bound port", WAIT);
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async("ws://localhost/", stream))
        .await
        .unwrap()
        .expect("handshake over unix");
    let answer = http_over(ws).await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}; {:#?}", proxy.lines());
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
}

/// wss:// to a wrapped command (`--cert`): TLS ends in wsproxy, the command speaks plain TCP.
#[tokio::test]
async fn r3_wss_with_cert_to_a_wrapped_command() {
    let dir = TempDir::new("wrap-wss");
    let (self_pem, _, _, ca) = make_cert(&dir);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let script = http_server(port);
    let mut args = vec!["--cert", self_pem.to_str().unwrap(), &listen, "--"];
    args.extend(script.split(' '));
    let mut proxy = Proxy::start(&args);
    let _group = logged_group(&mut proxy);
    let ws = wss_connect(proxy.addr, &ca).await;
    let answer = http_over(ws).await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}; {:#?}", proxy.lines());
}

/// A telnetd stand-in that serves one connection and exits: `respawn` restarts it, so two sessions
/// in a row both get the prompt (each run reports a new loopback port). It closes its listener
/// before answering, so the second client is refused (and retried) rather than queued in a backlog
/// that dies with the process.
#[tokio::test]
async fn r3_respawn_serves_sessions_in_a_row() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let script = format!(
        "import socket; s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(); \
         c, _ = s.accept(); s.close(); c.sendall(b'login: '); c.close()"
    );
    let mut proxy = Proxy::start(&["--wrap-mode=respawn", &listen, "--", "python3", "-c", &script]);
    let _group = logged_group(&mut proxy);
    for round in 0..2 {
        let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("no prompt") {
                Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(got, b"login: ", "round {round}: {:#?}", proxy.lines());
    }
    let starts = proxy
        .lines()
        .iter()
        .filter(|l| l.contains("started the wrapped command"))
        .count();
    assert!(starts >= 2, "{:#?}", proxy.lines());
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
}
