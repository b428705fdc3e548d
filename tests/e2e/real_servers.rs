//! Wrap mode with real servers from Debian's packages (installed by `make deps`): telnetd through
//! `scripts/telnetd-once PORT`, which serves one connection with the telnetd installed (netkit's
//! `in.telnetd -debug PORT`, or inetutils' telnetd the inetd way; both flavours are tested), and
//! tigervnc's `vncserver`, which probes its port, starts Xvnc on both stacks and daemonizes.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;
use crate::wrap::{logged_group, wait_group_gone};

/// telnetd looks up the peer's name before it prompts, which takes seconds on a closed network.
const PROMPT_WAIT: Duration = Duration::from_secs(20);

/// Fails with the package to install when a server program is missing.
pub(crate) fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(found, "{program} not found: run `make deps` (Debian package {package})");
}

/// `scripts/telnetd-once`: one telnet connection on a port, served by the telnetd installed.
pub(crate) fn telnetd_once() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/telnetd-once").to_owned()
}

/// Fails with what to install when `scripts/telnetd-once` finds no telnetd.
pub(crate) fn require_telnetd() {
    let which = std::process::Command::new(telnetd_once())
        .arg("--which")
        .output()
        .unwrap();
    assert!(
        which.status.success(),
        "{}: run `make deps` (it installs telnetd-ssl when no telnetd is installed)",
        String::from_utf8_lossy(&which.stderr).trim()
    );
}

/// GNU inetutils' telnetd as `make deps` unpacks it (scripts/unpack-deb, never installed: it
/// conflicts with telnetd-ssl), so that flavour is tested whichever one the machine has.
fn unpacked_inetutils_telnetd() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/debs/inetutils-telnetd/usr/sbin/telnetd"
    );
    assert!(
        std::path::Path::new(path).is_file(),
        "{path} is missing: run `make deps` (scripts/unpack-deb inetutils-telnetd target/debs/inetutils-telnetd)"
    );
    path.to_owned()
}

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const WONT: u8 = 252;
const DO: u8 = 253;
const DONT: u8 = 254;

/// The dumbest correct telnet client: refuses every option, collects the text.
#[derive(Default)]
pub(crate) struct Telnet {
    /// Bytes of an unfinished command carried over from the previous message.
    pending: Vec<u8>,
    /// Every DO/DONT/WILL/WONT the server sent, as (verb, option).
    pub(crate) commands: Vec<(u8, u8)>,
    text: Vec<u8>,
}

impl Telnet {
    /// Takes one message from the server; returns the replies to send.
    fn take(&mut self, data: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(data);
        let mut replies = Vec::new();
        let mut i = 0;
        while i < input.len() {
            if input[i] != IAC {
                self.text.push(input[i]);
                i += 1;
                continue;
            }
            let Some(&verb) = input.get(i + 1) else { break };
            match verb {
                IAC => {
                    self.text.push(IAC);
                    i += 2;
                }
                WILL | WONT | DO | DONT => {
                    let Some(&option) = input.get(i + 2) else { break };
                    self.commands.push((verb, option));
                    match verb {
                        DO => replies.extend_from_slice(&[IAC, WONT, option]),
                        WILL => replies.extend_from_slice(&[IAC, DONT, option]),
                        _ => {}
                    }
                    i += 3;
                }
                SB => match input[i..].windows(2).position(|w| w == [IAC, SE]) {
                    Some(end) => i += end + 2,
                    None => break,
                },
                _ => i += 2,
            }
        }
        self.pending = input[i..].to_vec();
        replies
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// Runs the telnet side of a session until the server's text contains `want`.
pub(crate) async fn telnet_until(ws: &mut Ws<TcpStream>, telnet: &mut Telnet, want: &str) {
    let deadline = Instant::now() + PROMPT_WAIT;
    while !telnet.text().contains(want) {
        let next = tokio::time::timeout_at(deadline.into(), ws.next()).await;
        let Ok(Some(Ok(message))) = next else {
            panic!(
                "no {want:?} within {PROMPT_WAIT:?}: {next:?}; text so far {:?}",
                telnet.text()
            );
        };
        if let Message::Binary(data) = message {
            let replies = telnet.take(&data);
            if !replies.is_empty() {
                ws.send(Message::binary(replies)).await.unwrap();
            }
        }
    }
}

#[test]
fn telnet_client_refuses_options_across_messages() {
    let mut t = Telnet::default();
    assert_eq!(t.take(&[IAC, DO, 24, IAC]), vec![IAC, WONT, 24]);
    assert_eq!(t.take(&[WILL, 1, b'h', IAC, IAC, b'i']), vec![IAC, DONT, 1]);
    assert_eq!(t.take(&[IAC, SB, 24, 1, IAC]), Vec::<u8>::new());
    assert_eq!(t.take(&[SE, b'!']), Vec::<u8>::new());
    assert_eq!(t.commands, vec![(DO, 24), (WILL, 1)]);
    assert_eq!(t.text, b"h\xffi!");
}

/// Two sessions in a row through `--wrap-mode=respawn` with the telnetd installed: telnetd-once serves
/// one connection and exits, so the second session meets a respawned one. Each gets telnet's option
/// negotiation and a login prompt, and a typed user name reaches login (it asks for the password).
#[tokio::test]
async fn r3_real_telnetd_respawned_serves_two_sessions_in_a_row() {
    require_telnetd();
    telnetd_serves_two_sessions(&[]).await;
}

/// The same with GNU inetutils' telnetd, which does not listen by itself: telnetd-once accepts the
/// connection and execs it with the socket as stdin and stdout, as inetd would.
#[tokio::test]
async fn r3_inetutils_telnetd_runs_the_inetd_way_under_telnetd_once() {
    let inetutils = format!("TELNETD={}", unpacked_inetutils_telnetd());
    telnetd_serves_two_sessions(&["env", &inetutils]).await;
}

/// `wsproxy --wrap-mode=respawn PORT -- [PREFIX...] scripts/telnetd-once PORT`, two logins in a row.
async fn telnetd_serves_two_sessions(prefix: &[&str]) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let port = port.to_string();
    let once = telnetd_once();
    let mut args = vec!["--wrap-mode=respawn", &listen, "--"];
    args.extend_from_slice(prefix);
    args.extend_from_slice(&[&once, &port]);
    let mut proxy = Proxy::start(&args);
    let _group = logged_group(&mut proxy);
    for round in 0..2 {
        proxy.wait_line("bound port", WAIT);
        let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
        let mut telnet = Telnet::default();
        telnet_until(&mut ws, &mut telnet, "login:").await;
        assert!(
            telnet.commands.iter().any(|&(verb, _)| verb == DO),
            "round {round}: no option negotiation before the prompt: {:?}",
            telnet.commands
        );
        ws.send(Message::binary(b"wsproxy-nobody\r\n".to_vec())).await.unwrap();
        telnet_until(&mut ws, &mut telnet, "Password").await;
        ws.close(None).await.unwrap();
        // The next round needs the respawned telnetd.
        if round == 0 {
            let deadline = Instant::now() + WAIT;
            while proxy
                .lines()
                .iter()
                .filter(|l| l.contains("started the wrapped command"))
                .count()
                < 2
            {
                assert!(Instant::now() < deadline, "telnetd not respawned: {:#?}", proxy.lines());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
}

/// A display number with no X server: neither its lock file nor its socket exists.
fn free_display() -> u32 {
    (90..200)
        .find(|n| {
            !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("no free X display number in 90..200")
}

/// Reads from the session until `len` bytes arrived.
async fn read_bytes(ws: &mut Ws<TcpStream>, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("nothing from the server")
        {
            Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected data, got {other:?} after {got:?}"),
        }
    }
    got
}

/// `wsproxy --wrap-mode=ignore PORT -- vncserver ...`, the README's example: vncserver probes the
/// port by binding it every 100 ms until Xvnc holds it (so the probe and Xvnc, two programs, must
/// land on the same moved port), then daemonizes and exits. Xvnc binds IPv4 and IPv6; two sessions
/// at once get the RFB greeting; SIGTERM stops the daemonized Xvnc too.
#[tokio::test]
async fn r3_real_vncserver_daemonizes_behind_ignore_mode() {
    require("vncserver", "tigervnc-standalone-server");
    let home = TempDir::new("vnc-home");
    let xstartup = home.path("xstartup");
    std::fs::write(&xstartup, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&xstartup, std::fs::Permissions::from_mode(0o755)).unwrap();
    let display = free_display();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (home_var, display_arg, port) = (
        format!("HOME={}", home.0.display()),
        format!(":{display}"),
        port.to_string(),
    );
    let mut proxy = Proxy::start(&[
        "--wrap-mode=ignore",
        &listen,
        "--",
        "env",
        &home_var,
        "vncserver",
        &display_arg,
        "-rfbport",
        &port,
        "-SecurityTypes",
        "None",
        "--I-KNOW-THIS-IS-INSECURE",
        "-geometry",
        "640x480",
        "-xstartup",
        xstartup.to_str().unwrap(),
    ]);
    let group = logged_group(&mut proxy);
    let exited = proxy.wait_line("still serving", Duration::from_secs(40));
    assert!(
        exited.contains("exited with code 0"),
        "vncserver failed: {:#?}",
        proxy.lines()
    );
    let moved: Vec<String> = proxy
        .lines()
        .iter()
        .filter_map(|l| l.split("(moved to ").nth(1).map(|a| a.trim_end_matches(')').to_owned()))
        .collect();
    let ports: Vec<&str> = moved.iter().filter_map(|a| a.rsplit(':').next()).collect();
    assert!(
        moved.iter().any(|a| a.starts_with("127.0.0.1:")) && moved.iter().any(|a| a.starts_with("[::1]:")),
        "{moved:?}"
    );
    assert!(
        ports.windows(2).all(|w| w[0] == w[1]),
        "probe and Xvnc disagree: {moved:?}"
    );

    let (mut first, _) = ws_connect(proxy.addr, "binary").await;
    let (mut second, _) = ws_connect(proxy.addr, "binary").await;
    assert_eq!(read_bytes(&mut first, 12).await, b"RFB 003.008\n");
    assert_eq!(read_bytes(&mut second, 12).await, b"RFB 003.008\n");

    let wsproxy_pid = proxy.pid();
    assert!(
        !wsproxy::wrap::leftovers::marked(wsproxy_pid).is_empty(),
        "no daemonized Xvnc found"
    );
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
    wait_group_gone(group.0);
    let deadline = Instant::now() + WAIT;
    while !wsproxy::wrap::leftovers::marked(wsproxy_pid).is_empty() {
        assert!(Instant::now() < deadline, "the daemonized Xvnc outlived wsproxy");
        std::thread::sleep(Duration::from_millis(50));
    }
}
