//! Wrap mode: starts `-- CMD ARGS` with librebind.so preloaded, publishes the loopback address the
//! library reports, and applies `--wrap-mode` when the command exits.
//!
//! The command runs in its own process group (`process_group(0)`), with stdin, stdout and stderr
//! inherited. librebind.so writes one line per rewritten bind to an inherited pipe; a task per start
//! reads those lines until EOF (so the read end stays open as long as any process of the command holds
//! the write end: no SIGPIPE in a daemonized server) and publishes the latest address in a
//! `watch` channel that sessions connect through. Stopping kills the whole group: SIGTERM, then
//! SIGKILL after the grace period, and the leader is reaped through tokio (never `waitpid(-1)`);
//! processes that left the group (daemons) are found by their environment (`leftovers`) and stopped
//! alike.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::WrapMode;
use crate::config::Wrap;
use crate::ops::metrics::Metrics;
use crate::wrap::{leftovers, spawn};

/// A command that has not bound its port by then gets an error naming the likely causes.
const BIND_WAIT: Duration = Duration::from_secs(5);
/// `respawn`: at most `RESPAWN_STARTS` starts within `RESPAWN_WINDOW`, then a doubling backoff.
const RESPAWN_STARTS: usize = 3;
const RESPAWN_WINDOW: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Added to the window's end: timers may fire a millisecond early, which must not let a fourth
/// start in at 9.999 s.
const WINDOW_MARGIN: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Exit codes when the command cannot be started, as sh uses them.
pub const EXIT_NOT_FOUND: u8 = 127;
pub const EXIT_CANNOT_RUN: u8 = 126;

/// Runs the command under `wrap.mode` until `stop` is cancelled (then the group is stopped and the
/// result is 0) or, in `exit` mode, until the command ends: the result is then its exit code, or
/// 128+signal. 1 if it never bound its port, 127/126 if it cannot be started. Starts and exits
/// are counted in `metrics` (`--metrics`).
pub async fn run(
    wrap: Wrap,
    grace: Duration,
    addr: watch::Sender<Option<SocketAddr>>,
    stop: CancellationToken,
    metrics: Option<Arc<Metrics>>,
) -> u8 {
    let metrics = metrics.as_deref();
    let addr = Arc::new(addr);
    let mut limit = RespawnLimit::default();
    loop {
        if let Some(wait) = limit.delay(Instant::now()) {
            warn!(
                "respawn: {RESPAWN_STARTS} starts within {RESPAWN_WINDOW:?}; waiting {:.1}s before the next start",
                wait.as_secs_f64()
            );
            tokio::select! {
                () = stop.cancelled() => return 0,
                () = tokio::time::sleep(wait) => {},
            }
        }
        let started = Instant::now();
        limit.started(started);
        let mut child = match start(&wrap, &addr) {
            Ok(child) => child,
            Err((code, msg)) => {
                error!("{msg}");
                return code;
            }
        };
        let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw) else {
            error!("the wrapped command ended before its process id could be read");
            return 1;
        };
        if let Some(metrics) = metrics {
            metrics.wrapped_started();
        }
        info!(
            "started the wrapped command {:?} (process group {pgid}, --wrap-mode={})",
            wrap.command,
            mode_name(wrap.mode)
        );

        let mut warned = false;
        let no_bind = tokio::time::sleep(BIND_WAIT);
        let mut no_bind = std::pin::pin!(no_bind);
        let status = loop {
            tokio::select! {
                () = stop.cancelled() => {
                    stop_group(&mut child, pgid, grace).await;
                    return 0;
                }
                status = child.wait() => break status.ok(),
                () = &mut no_bind, if !warned => {
                    warned = true;
                    if addr_known(&addr) {
                        continue;
                    }
                    no_bind_error(wrap.port);
                    if let Some(metrics) = metrics && wrap.mode != WrapMode::Ignore {
                        metrics.wrapped_exited(None);
                    }
                    match wrap.mode {
                        WrapMode::Exit => {
                            stop_group(&mut child, pgid, grace).await;
                            return 1;
                        }
                        WrapMode::Respawn => {
                            stop_group(&mut child, pgid, grace).await;
                            break None;
                        }
                        WrapMode::Ignore => {}
                    }
                }
            }
        };
        if let Some(metrics) = metrics
            && status.is_some()
        {
            metrics.wrapped_exited(status);
        }
        let what = status.map_or_else(|| "stopped: never bound its port".to_owned(), describe);
        match wrap.mode {
            WrapMode::Exit => {
                info!("the wrapped command {what}; stopping (--wrap-mode=exit)");
                // Anything it left behind in its group goes too: no orphans.
                stop_group(&mut child, pgid, grace).await;
                return status.map_or(1, exit_code);
            }
            WrapMode::Ignore => {
                warn!(
                    "the wrapped command {what}; still serving (--wrap-mode=ignore): sessions reach whatever keeps its \
                     moved port"
                );
                // A daemonizing server may bind after its parent exited: the bind check still applies.
                if !warned {
                    tokio::select! {
                        () = stop.cancelled() => {},
                        () = &mut no_bind => if !addr_known(&addr) {
                            no_bind_error(wrap.port);
                        },
                    }
                }
                stop.cancelled().await;
                stop_group(&mut child, pgid, grace).await;
                return 0;
            }
            WrapMode::Respawn => {
                warn!("the wrapped command {what}; restarting it (--wrap-mode=respawn)");
                stop_group(&mut child, pgid, grace).await;
                addr.send_replace(None);
                limit.ran(started.elapsed());
            }
        }
    }
}

/// `respawn`'s rule: never more than `RESPAWN_STARTS` starts within any `RESPAWN_WINDOW`. A start
/// that would break it waits until the window allows it, and at least the backoff, which doubles
/// with each such wait (up to `MAX_BACKOFF`) and resets once a run lasted a whole window. So a
/// command that always fails gets bursts of 3 starts, further and further apart.
#[derive(Debug)]
struct RespawnLimit {
    starts: VecDeque<Instant>,
    backoff: Duration,
}

impl Default for RespawnLimit {
    fn default() -> Self {
        RespawnLimit {
            starts: VecDeque::new(),
            backoff: FIRST_BACKOFF,
        }
    }
}

impl RespawnLimit {
    /// How long to wait before the next start, if the limit is reached.
    fn delay(&mut self, now: Instant) -> Option<Duration> {
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RESPAWN_WINDOW)
        {
            self.starts.pop_front();
        }
        if self.starts.len() < RESPAWN_STARTS {
            return None;
        }
        let oldest = self.starts.len() - RESPAWN_STARTS;
        let window_allows = (self.starts[oldest] + RESPAWN_WINDOW + WINDOW_MARGIN).saturating_duration_since(now);
        let wait = window_allows.max(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Some(wait)
    }

    fn started(&mut self, at: Instant) {
        self.starts.push_back(at);
    }

    /// A stable run resets the backoff.
    fn ran(&mut self, uptime: Duration) {
        if uptime >= RESPAWN_WINDOW {
            self.backoff = FIRST_BACKOFF;
        }
    }
}

fn no_bind_error(port: u16) {
    error!(
        "the wrapped command has not bound port {port} within {BIND_WAIT:?}: it must bind the same port wsproxy \
         listens on (or --wrap-port), and statically linked, Go or setuid programs bypass LD_PRELOAD (librebind.so)"
    );
}

fn addr_known(addr: &watch::Sender<Option<SocketAddr>>) -> bool {
    addr.borrow().is_some()
}

fn mode_name(mode: WrapMode) -> &'static str {
    match mode {
        WrapMode::Exit => "exit",
        WrapMode::Ignore => "ignore",
        WrapMode::Respawn => "respawn",
    }
}

/// Starts the command through librebind.so (`spawn::rebound`) and a task that reads its reports.
fn start(wrap: &Wrap, addr: &Arc<watch::Sender<Option<SocketAddr>>>) -> Result<Child, (u8, String)> {
    let (program, args) = wrap
        .command
        .split_first()
        .ok_or_else(|| (1, "no command to wrap".to_owned()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .process_group(0)
        .kill_on_drop(true)
        .env(leftovers::MARK_VAR, leftovers::mark_value());
    let (child, reader) = spawn::rebound(command, &wrap.lib, wrap.port).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            EXIT_NOT_FOUND
        } else {
            EXIT_CANNOT_RUN
        };
        (code, format!("cannot start the wrapped command {program:?}: {e}"))
    })?;
    tokio::spawn(read_reports(reader, addr.clone(), wrap.port));
    Ok(child)
}

/// Publishes every address librebind.so reports, until no process holds the write end any more.
/// Each address is logged once: `vncserver` probes the port every 100 ms until Xvnc is up.
async fn read_reports(reader: pipe::Receiver, addr: Arc<watch::Sender<Option<SocketAddr>>>, port: u16) {
    let mut lines = BufReader::new(reader).lines();
    let mut seen = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim().parse::<SocketAddr>() {
            Ok(at) => {
                if !seen.contains(&at) {
                    info!("the wrapped command bound port {port} (moved to {at})");
                    seen.push(at);
                }
                addr.send_replace(Some(at));
            }
            Err(_) => warn!("librebind.so reported {line:?}, which is not an address; ignored"),
        }
    }
}

async fn stop_group(child: &mut Child, pgid: Pid, grace: Duration) {
    let mark = format!("{}={}", leftovers::MARK_VAR, leftovers::mark_value());
    spawn::stop_group(child, pgid, &mark, grace).await;
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended ({status})"),
    }
}

/// The command's exit code, or 128+signal as shells report it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respawn_allows_three_starts_per_window_and_backs_off() {
        let t0 = Instant::now();
        let mut limit = RespawnLimit::default();
        let mut now = t0;
        let mut starts = Vec::new();
        let mut waits = Vec::new();
        // A command that always fails at once, for five minutes.
        while now < t0 + Duration::from_secs(300) {
            if let Some(wait) = limit.delay(now) {
                waits.push(wait);
                now += wait;
            }
            limit.started(now);
            starts.push(now);
            limit.ran(Duration::from_millis(10));
            now += Duration::from_millis(10);
        }
        for (i, start) in starts.iter().enumerate() {
            let in_window = starts[i..].iter().filter(|s| **s < *start + RESPAWN_WINDOW).count();
            assert!(
                in_window <= RESPAWN_STARTS,
                "{in_window} starts within 10 s from {:?}",
                *start - t0
            );
        }
        assert_eq!(
            starts[..3].iter().filter(|s| **s < t0 + Duration::from_secs(1)).count(),
            3
        );
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(waits.last(), Some(&MAX_BACKOFF), "{waits:?}");
        // A run that lasted a whole window resets the backoff.
        limit.ran(RESPAWN_WINDOW);
        assert_eq!(limit.backoff, FIRST_BACKOFF);
        now += RESPAWN_WINDOW;
        assert_eq!(limit.delay(now), None);
    }

    /// Timers that fire up to a millisecond early (rounding) still never allow a fourth start within
    /// the window, including at its boundary.
    #[test]
    fn the_window_holds_when_timers_fire_early() {
        let t0 = Instant::now();
        let mut limit = RespawnLimit::default();
        let mut now = t0;
        let mut starts = Vec::new();
        while now < t0 + Duration::from_secs(120) {
            if let Some(wait) = limit.delay(now) {
                now += wait.saturating_sub(Duration::from_millis(1));
            }
            limit.started(now);
            starts.push(now);
            // A command that fails at once, and resets the backoff as if it had run long enough:
            // only the window limits the starts.
            limit.ran(RESPAWN_WINDOW);
            now += Duration::from_millis(10);
        }
        for (i, start) in starts.iter().enumerate() {
            let in_window = starts[i..].iter().filter(|s| **s < *start + RESPAWN_WINDOW).count();
            assert!(
                in_window <= RESPAWN_STARTS,
                "{in_window} starts within 10 s from {:?}",
                *start - t0
            );
        }
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exited with code 3");
    }
}
