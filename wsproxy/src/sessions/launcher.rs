//! Launching a session's command and knowing when it listens.
//!
//! The command runs in its own process group with a mark in its environment
//! (`WSPROXY_SESSION=<wsproxy pid>:<session>`), its stdout and stderr go to wsproxy's log prefixed
//! with the session id. Readiness is event-driven where it can be (librebind.so's report, the
//! announce line) and then read from the kernel's socket tables, every 5 ms at first: never a fixed
//! one-second sleep. The launch races the command's exit and `start_timeout`.
//!
//! No process of a session outlives wsproxy, even a SIGKILLed one: a guard process per session (a
//! one-line `sh`, in its own process group) holds the read end of a pipe whose write end only
//! wsproxy has. When wsproxy dies the pipe ends, and the guard kills the session's process group;
//! a normal stop tells the guard "done" first. (A parent-death signal would reach only the direct
//! child and fire when the spawning thread exits.)

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::unistd::Pid;
use regex::Regex;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Target;
use crate::wrap::spawn;

/// The variable that marks every process of a session (value `<wsproxy pid>:<session id>`).
pub const MARK_VAR: &str = "WSPROXY_SESSION";
const FIRST_POLL: Duration = Duration::from_millis(5);
const FAST_POLLING: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_millis(50);

pub struct Spec {
    pub session: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ready: Ready,
    pub start_timeout: Duration,
}

/// Where the command will listen, as far as is known before it runs.
pub enum Ready {
    /// It binds `port`; librebind.so moves the bind to loopback and reports the address.
    Rebind {
        lib: PathBuf,
        port: u16,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    /// A line of its stdout names the address (`host` and `port` groups).
    Announce(Regex),
    /// `ws://`, `wss://` or `ws+unix:`: it speaks WebSocket where it listens (QEMU's websocket=on).
    WebSocket(Box<crate::config::WsTarget>),
}

/// Why a launch did not end listening.
#[derive(Debug)]
pub enum Failure {
    CannotStart(io::Error),
    Exited(ExitStatus),
    NotListening(Duration),
    Stopped,
}

impl Failure {
    /// The session's `reason`, as the client's close frame says it too.
    pub fn reason(&self) -> String {
        match self {
            Failure::CannotStart(e) => format!("cannot start the command: {e}"),
            Failure::Exited(status) => format!("exited {}", describe(*status)),
            Failure::NotListening(limit) => format!("did not listen within {} s", limit.as_secs()),
            Failure::Stopped => "stopped before it listened".into(),
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Failure::Exited(status) => Some(code(*status)),
            _ => None,
        }
    }
}

/// "with status 3", "by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("with status {code}"),
        (None, Some(signal)) => format!("by signal {signal}"),
        _ => format!("({status})"),
    }
}

/// The exit code, or 128+signal as shells report it.
pub fn code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// A launched command that listens.
pub struct Running {
    child: Child,
    pgid: Pid,
    mark: String,
    guard: Option<Guard>,
    pub target: Target,
}

impl Running {
    /// Resolves when the command (its group leader) exits.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the whole group (SIGTERM, SIGKILL after `grace`) and releases the guard.
    pub async fn stop(mut self, grace: Duration) {
        spawn::stop_group(&mut self.child, self.pgid, &self.mark, grace).await;
        if let Some(guard) = self.guard.take() {
            guard.release().await;
        }
    }
}

/// Starts `spec` and waits until it listens, it exits, `start_timeout` passes or `stop` is
/// cancelled; on failure everything it started is stopped (within `grace`).
pub async fn launch(spec: Spec, stop: &CancellationToken, grace: Duration) -> Result<Running, Failure> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(Failure::CannotStart(io::Error::other("empty command")));
    };
    let mark = format!("{MARK_VAR}={}:{}", std::process::id(), spec.session);
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(MARK_VAR, mark.split_once('=').map_or("", |(_, v)| v))
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, reports) = match &spec.ready {
        Ready::Rebind { lib, port } => {
            let (child, reader) = spawn::rebound(command, lib, *port).map_err(Failure::CannotStart)?;
            (child, Some(reader))
        }
        _ => (command.spawn().map_err(Failure::CannotStart)?, None),
    };
    let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw) else {
        return Err(Failure::CannotStart(io::Error::other("the command ended at once")));
    };
    let guard = Guard::start(pgid)
        .map_err(|e| {
            warn!(
                "session {}: no guard process ({e}); a SIGKILLed wsproxy would leave it",
                spec.session
            )
        })
        .ok();
    info!(
        "session {}: started {:?} (process group {pgid})",
        spec.session, spec.argv
    );

    // Output to the log; the announce rule also watches stdout for its line.
    let (announced, mut announcement) = watch::channel(None::<(String, u16)>);
    let announce = match &spec.ready {
        Ready::Announce(regex) => Some(regex.clone()),
        _ => None,
    };
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(log_lines(stdout, spec.session.clone(), announce, Some(announced)));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_lines(stderr, spec.session.clone(), None, None));
    }
    let (reported, mut report) = watch::channel(None::<std::net::SocketAddr>);
    if let Some(reader) = reports {
        tokio::spawn(read_reports(reader, reported));
    }

    let deadline = Instant::now() + spec.start_timeout;
    let listening = async {
        let target = match &spec.ready {
            Ready::Rebind { .. } => {
                let addr = report.wait_for(Option::is_some).await.ok().and_then(|a| *a);
                let addr = addr.ok_or_else(|| io::Error::other("the report pipe closed"))?;
                Target::Tcp {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                }
            }
            Ready::Tcp { host, port } => Target::Tcp {
                host: host.clone(),
                port: *port,
            },
            Ready::Unix(path) => Target::Unix(path.clone()),
            Ready::WebSocket(ws) => Target::WebSocket(ws.clone()),
            Ready::Announce(_) => {
                let found = announcement
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|a| a.clone());
                let (host, port) = found.ok_or_else(|| io::Error::other("stdout closed without the announce line"))?;
                Target::Tcp { host, port }
            }
        };
        accepts(&target).await;
        Ok::<Target, io::Error>(target)
    };
    let failure = tokio::select! {
        ready = listening => match ready {
            Ok(target) => {
                return Ok(Running { child, pgid, mark, guard, target });
            }
            // The report pipe or stdout closed: the command exited or is about to.
            Err(_) => match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) => Failure::Exited(status),
                _ => Failure::NotListening(spec.start_timeout),
            },
        },
        status = child.wait() => match status {
            Ok(status) => Failure::Exited(status),
            Err(e) => Failure::CannotStart(e),
        },
        () = tokio::time::sleep_until(deadline) => Failure::NotListening(spec.start_timeout),
        () = stop.cancelled() => Failure::Stopped,
    };
    spawn::stop_group(&mut child, pgid, &mark, grace).await;
    if let Some(guard) = guard {
        guard.release().await;
    }
    Err(failure)
}

/// Waits until the target listens, polling every 5 ms for the first 200 ms, then every 50 ms (the
/// caller bounds it). A target on this machine is looked up in the kernel's socket tables
/// (`/proc/net/tcp`, `tcp6`, `unix`) instead of connected to: a server that takes one connection
/// (netkit telnetd) must keep it for the client. Those tables are read on the blocking pool: with
/// tens of thousands of sockets a read takes milliseconds, which must not stall the relays. A
/// target elsewhere is connected to.
async fn accepts(target: &Target) {
    let started = Instant::now();
    let target = match target {
        Target::WebSocket(ws) => &ws.transport,
        target => target,
    };
    loop {
        let ok = match target {
            Target::Tcp { host, port } if is_local(host) => {
                let (host, port) = (host.clone(), *port);
                tokio::task::spawn_blocking(move || listening_tcp(&host, port))
                    .await
                    .unwrap_or(false)
            }
            Target::Tcp { host, port } => TcpStream::connect((host.as_str(), *port)).await.is_ok(),
            Target::Unix(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || listening_unix(&path))
                    .await
                    .unwrap_or(false)
            }
            Target::Wrapped { .. } | Target::WebSocket(_) => true,
        };
        if ok {
            return;
        }
        let pause = if started.elapsed() < FAST_POLLING {
            FIRST_POLL
        } else {
            MAX_POLL
        };
        tokio::time::sleep(pause).await;
    }
}

fn is_local(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Whether a TCP socket of this network namespace listens on `host:port`: the table of the address's
/// family, a socket bound to that address or to the unspecified one (`localhost`: either family).
pub fn listening_tcp(host: &str, port: u16) -> bool {
    let addresses: Vec<std::net::IpAddr> = match host.parse() {
        Ok(ip) => vec![ip],
        Err(_) => vec![
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ],
    };
    addresses.iter().any(|ip| {
        let (table, unspecified) = match ip {
            std::net::IpAddr::V4(_) => ("/proc/net/tcp", std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED)),
            std::net::IpAddr::V6(_) => (
                "/proc/net/tcp6",
                std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
            ),
        };
        let wanted = [proc_address(*ip, port), proc_address(unspecified, port)];
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let mut fields = line.split_whitespace();
                let local = fields.nth(1).unwrap_or("");
                let state = fields.nth(1).unwrap_or("");
                state == "0A" && wanted.iter().any(|w| w == local)
            })
        })
    })
}

/// An address as `/proc/net/tcp*` writes it: 32-bit words in the machine's byte order, in hex.
fn proc_address(ip: std::net::IpAddr, port: u16) -> String {
    let octets: Vec<u8> = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut text: String = octets
        .chunks(4)
        .map(|word| format!("{:08X}", u32::from_ne_bytes([word[0], word[1], word[2], word[3]])))
        .collect();
    text.push_str(&format!(":{port:04X}"));
    text
}

/// Whether a UNIX socket listens at `path` (`__SO_ACCEPTCON` in `/proc/net/unix`).
pub fn listening_unix(path: &std::path::Path) -> bool {
    let Some(path) = path.to_str() else { return false };
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|text| {
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 8
                && fields[7] == path
                && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & 0x0001_0000 != 0)
        })
    })
}

/// Logs each line as `session ID: line`; with `announce`, publishes the first matching address.
async fn log_lines(
    stream: impl AsyncRead + Unpin,
    session: String,
    announce: Option<Regex>,
    announced: Option<watch::Sender<Option<(String, u16)>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        info!("session {session}: {text}");
        if let (Some(regex), Some(sender)) = (&announce, &announced)
            && sender.borrow().is_none()
            && let Some(found) = regex.captures(text)
            && let (Some(host), Some(port)) = (found.name("host"), found.name("port"))
            && let Ok(port) = port.as_str().parse::<u16>()
        {
            sender.send_replace(Some((host.as_str().to_owned(), port)));
        }
    }
}

/// Keeps the first address librebind.so reports: a server that binds IPv4 and IPv6 (telnetd)
/// listens on the first before it binds the second.
async fn read_reports(reader: tokio::net::unix::pipe::Receiver, reported: watch::Sender<Option<std::net::SocketAddr>>) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(addr) = line.trim().parse() {
            reported.send_if_modified(|first| first.is_none() && first.replace(addr).is_none());
        }
    }
}

/// The process that kills the session's group if wsproxy dies (see the module docs).
struct Guard {
    stdin: ChildStdin,
    child: Child,
}

impl Guard {
    fn start(pgid: Pid) -> io::Result<Guard> {
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"read -r line; [ "$line" = done ] || kill -KILL -"$1" 2>/dev/null"#,
                "wsproxy-session-guard",
                &pgid.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| io::Error::other("no stdin"))?;
        Ok(Guard { stdin, child })
    }

    async fn release(mut self) {
        let _ = self.stdin.write_all(b"done\n").await;
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_tables_show_listeners_without_connecting() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        assert!(listening_tcp("127.0.0.1", port));
        assert!(listening_tcp("localhost", port));
        assert!(!listening_tcp("::1", port), "the IPv6 table has no such socket");
        let v6 = std::net::TcpListener::bind(("::1", port)).unwrap();
        assert!(listening_tcp("::1", port));
        drop((tcp, v6));
        assert!(!listening_tcp("127.0.0.1", port));
        let dir = std::env::temp_dir().join(format!("wsproxy-listening-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        assert!(!listening_unix(&path));
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listening_unix(&path));
        drop(unix);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
