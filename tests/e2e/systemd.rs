//! systemd on the real binary: socket activation by `systemd-socket-activate` (TCP and UNIX
//! sockets at once), and the shipped unit's command line run with the unit's environment, its
//! readiness notices read from a NOTIFY_SOCKET the test listens on.

use std::path::Path;
use std::process::Command;

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::net::{TcpStream, UnixDatagram, UnixStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::*;

const UNIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/systemd");

/// One message through a WebSocket to an echo target and back.
async fn echo_once<S>(ws: &mut Ws<S>, payload: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::binary(payload.to_vec())).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.expect("no echo") {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], payload),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// A WebSocket over the UNIX socket at `path`.
async fn ws_unix(path: &Path, uri: &str) -> Ws<UnixStream> {
    let stream = UnixStream::connect(path).await.unwrap();
    let request = uri.into_client_request().unwrap();
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake timed out")
        .expect("handshake over the UNIX socket")
        .0
}

/// `systemd-socket-activate` listening on `listen` (the first a TCP address), which starts wsproxy
/// (`argv`, with `env`) on the first connection, as systemd does with a socket unit. Returns once
/// the sockets listen, with `addr` the TCP one: the caller's first connection starts wsproxy.
fn activate(listen: &[String], env: &[(String, String)], argv: &[String]) -> Proxy {
    let mut command = Command::new("systemd-socket-activate");
    for address in listen {
        command.args(["-l", address]);
    }
    for (name, value) in env {
        command.args(["-E", &format!("{name}={value}")]);
    }
    command.args(argv);
    let mut proxy = Proxy::spawn_command(command);
    proxy.wait_line(&format!(" as {}.", 2 + listen.len()), WAIT);
    proxy.addr = listen[0].parse().unwrap();
    proxy
}

#[tokio::test]
async fn socket_activation_serves_a_tcp_and_a_unix_socket_at_once_on_two_workers() {
    let dir = TempDir::new("systemd-activate");
    let echo = echo_target().await;
    let port = free_port();
    // Named on the command line for compatibility, not bound while systemd passes sockets.
    let named = free_port();
    let socket = dir.path("ws.sock");
    // Two workers: both accept on their own handle of each passed socket.
    let argv = [
        env!("CARGO_BIN_EXE_wsproxy").to_owned(),
        "--workers".to_owned(),
        "2".to_owned(),
        format!("127.0.0.1:{named}"),
        echo.to_string(),
    ];
    let listen = [format!("127.0.0.1:{port}"), socket.to_str().unwrap().to_owned()];
    let mut proxy = activate(&listen, &[], &argv);
    // The first connection starts wsproxy, which then serves it.
    let (mut tcp, _) = ws_connect(proxy.addr, "").await;
    echo_once(&mut tcp, b"through the passed TCP socket").await;
    for i in 0..8u8 {
        let (mut more, _) = ws_connect(proxy.addr, "").await;
        echo_once(&mut more, &[i; 4]).await;
    }
    let line = proxy.wait_line("listening on", WAIT);
    assert!(
        line.contains(&format!("listening on 127.0.0.1:{port} and unix:{}", socket.display())),
        "{line}"
    );
    for _ in 0..8 {
        let mut unix = ws_unix(&socket, "ws://localhost/websockify").await;
        echo_once(&mut unix, b"through the passed UNIX socket").await;
    }
    assert!(
        TcpStream::connect(("127.0.0.1", named)).await.is_err(),
        "the command line's address was bound too"
    );

    drop(tcp);
    proxy.signal(Signal::SIGTERM);
    assert!(proxy.wait_exit(WAIT).success());
    // systemd's socket: not wsproxy's to remove.
    assert!(socket.exists(), "wsproxy removed the socket systemd passed");
}

/// The `[Service]` section's `Environment=` assignments and `ExecStart=` words.
fn unit_command(unit: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut exec = Vec::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[Service]" {
            continue;
        }
        if let Some(value) = line.strip_prefix("Environment=") {
            for assignment in words(value) {
                let (name, value) = assignment.split_once('=').expect("NAME=VALUE");
                env.push((name.to_owned(), value.to_owned()));
            }
        } else if let Some(value) = line.strip_prefix("ExecStart=") {
            exec = words(value);
        }
    }
    assert!(!exec.is_empty(), "no ExecStart= in the unit");
    (env, exec)
}

/// systemd's word splitting: white space separates words, double quotes group them.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// systemd's expansion in ExecStart=: a word `$NAME` becomes the value's words (none if unset),
/// `${NAME}` inside a word its value.
fn expand(exec: &[String], env: &[(String, String)]) -> Vec<String> {
    let value = |name: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut argv = Vec::new();
    for word in exec {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            argv.extend(value(name).split_whitespace().map(str::to_owned));
            continue;
        }
        let mut out = String::new();
        let mut rest = word.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closing brace") + start;
            out.push_str(&value(&rest[start + 2..end]));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        argv.push(out);
    }
    argv
}

/// The next notice on `socket`, within `WAIT`.
async fn notice(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("no notice from wsproxy")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[tokio::test]
async fn the_units_command_line_runs_activated_and_notifies_systemd() {
    let unit = std::fs::read_to_string(format!("{UNIT_DIR}/wsproxy.service")).unwrap();
    assert!(unit.contains("\nType=notify\n"), "the unit is not Type=notify");
    let (unit_env, exec) = unit_command(&unit);
    assert_eq!(exec[0], "/usr/bin/wsproxy", "where the package installs it");

    let dir = TempDir::new("systemd-unit");
    let echo = echo_target().await;
    // What systemd provides: the unit's directories (ConfigurationDirectory= and the others) and
    // NOTIFY_SOCKET.
    let (config, runtime, state) = (dir.path("etc"), dir.path("run"), dir.path("state"));
    for d in [&config, &runtime, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(config.join("tokens"), format!("desk1: {echo}\n")).unwrap();
    let notify_path = dir.path("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut env = unit_env;
    env.extend([
        ("CONFIGURATION_DIRECTORY".to_owned(), config.display().to_string()),
        ("RUNTIME_DIRECTORY".to_owned(), runtime.display().to_string()),
        ("STATE_DIRECTORY".to_owned(), state.display().to_string()),
        ("NOTIFY_SOCKET".to_owned(), notify_path.display().to_string()),
    ]);
    let mut argv = expand(&exec, &env);
    argv[0] = env!("CARGO_BIN_EXE_wsproxy").to_owned();
    // The socket unit's port, on loopback and free for the test.
    let listen = [format!("127.0.0.1:{}", free_port())];
    let mut proxy = activate(&listen, &env, &argv);
    let (mut ws, _) = ws_connect_to(proxy.addr, "/websockify?token=desk1", "").await;
    echo_once(&mut ws, b"routed by the unit's token file").await;
    assert!(notice(&notify).await.contains("READY=1"));

    proxy.signal(Signal::SIGHUP);
    let reloading = notice(&notify).await;
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(usec > 0 && usec <= now_usec, "MONOTONIC_USEC={usec}, now {now_usec}");
    assert!(notice(&notify).await.contains("READY=1"));
    proxy.wait_line("SIGHUP: reloaded the token source", WAIT);
    echo_once(&mut ws, b"the session goes on").await;

    proxy.signal(Signal::SIGTERM);
    assert!(notice(&notify).await.contains("STOPPING=1"));
    assert!(proxy.wait_exit(WAIT).success(), "{:#?}", proxy.lines());
}

#[test]
fn the_unit_is_hardened() {
    // systemd's own rating of the sandbox (0 is the best, 10 the worst): at most 2.0.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(format!("{UNIT_DIR}/wsproxy.service"))
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security rates the unit above 2.0: {}\n{text}",
        text.lines().last().unwrap_or_default()
    );
    assert!(text.contains("Overall exposure level"), "{text}");
}
