//! Scenario "idle": what an open, idle connection costs the proxy in memory.
//!
//! The proxy is started, one connection warms it up, and its memory is read (RSS and PSS from
//! `/proc/PID/smaps_rollup`, summed over its process group, since websockify and socat fork a
//! process per connection). Then `conns` connections are opened, `CONCURRENCY` at a time, each
//! upgraded and proven relayed by a 1-byte echo, and left idle. After a pause the memory is read
//! again, and every connection echoes once more: those that do are "held". The cost per
//! connection is the growth divided by the connections open.
//!
//! Limits, reported rather than hidden:
//! - file descriptors: each connection costs the benchmark two (client and backend side) and the
//!   proxy two. The soft limit is raised to the hard one, and the hard one too where allowed
//!   (as root); the proxy inherits it. What the limit does not allow is not attempted.
//! - memory: opening stops when the proxy's group has grown by `budget_mib` (PSS), so a proxy
//!   that forks per connection cannot take the machine down.
//! - the first failure (a refused connection, a timeout) stops the opening.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

use crate::client::raw::Conn;
use crate::echo::Echo;
use crate::peer::{Peer, Setup};
use crate::procfs::Memory;
use crate::report::{self, Report};
use crate::rtt;

/// Connections being opened at once.
const CONCURRENCY: usize = 64;
/// How often (in connections opened) the proxy's memory is checked against the budget.
const CHECK_EVERY: usize = 500;
/// Pause before each memory reading, so the proxy can finish what the last activity started.
const SETTLE: Duration = Duration::from_millis(500);
/// Descriptors the benchmark keeps for itself besides two per connection.
const FD_MARGIN: u64 = 256;

pub struct Options {
    pub conns: usize,
    pub budget_mib: u64,
}

impl Options {
    pub fn rows(&self, report: &mut Report) {
        for kind in [
            report::IDLE_TRIED,
            report::IDLE_HELD,
            report::IDLE_RSS,
            report::IDLE_PSS,
        ] {
            report.metric(kind);
        }
    }
}

/// One idle measurement.
struct Held {
    /// What the fd limit allowed to attempt.
    attempted: usize,
    /// Open while the memory was read.
    open: usize,
    /// Echoed after the reading.
    held: usize,
    rss_kib: f64,
    pss_kib: f64,
    /// Why opening stopped before `attempted`, if it did.
    stopped: Option<String>,
}

/// Measures `peer` once; the baseline has no proxy, so nothing is measured for it.
pub async fn measure_into(peer: &Peer<'_>, options: &Options, report: &mut Report) -> Result<(), String> {
    if matches!(peer, Peer::NoProxy) {
        return Ok(());
    }
    let (soft, hard_before) = raise_fd_limit(2 * options.conns as u64 + FD_MARGIN);
    let capacity = usize::try_from(soft.saturating_sub(FD_MARGIN) / 2).unwrap_or(usize::MAX);
    let attempted = options.conns.min(capacity);
    let setup = Setup::start(peer, None).await?;
    let Some(group) = setup.proxy_group() else {
        return setup.fail("no proxy process".into()).await;
    };
    let held = match hold(&setup, group, attempted, options.budget_mib).await {
        Ok(held) => held,
        Err(e) => return setup.fail(e).await,
    };
    setup.stop().await?;
    eprintln!(
        "  idle {:<12} {} of {} requested held ({} open); +{:.2} KiB RSS, +{:.2} KiB PSS per connection{}",
        peer.name(),
        held.held,
        options.conns,
        held.open,
        held.rss_kib,
        held.pss_kib,
        held.stopped
            .as_deref()
            .map(|why| format!("; stopped opening: {why}"))
            .unwrap_or_default()
    );
    if held.attempted < options.conns {
        report.note(format!(
            "{} idle: the fd limit ({soft}, hard limit was {hard_before}) allowed {} of {} connections",
            peer.name(),
            held.attempted,
            options.conns
        ));
    }
    if let Some(why) = &held.stopped {
        report.note(format!(
            "{} idle: opening stopped at {} connections: {why}",
            peer.name(),
            held.open
        ));
    }
    if held.held < held.open {
        report.note(format!(
            "{} idle: {} of {} open connections did not echo after the memory reading",
            peer.name(),
            held.open - held.held,
            held.open
        ));
    }
    report.record(report::IDLE_TRIED, peer.name(), held.attempted as f64);
    report.record(report::IDLE_HELD, peer.name(), held.held as f64);
    if held.open > 0 {
        report.record(report::IDLE_RSS, peer.name(), held.rss_kib);
        report.record(report::IDLE_PSS, peer.name(), held.pss_kib);
    }
    Ok(())
}

async fn hold(setup: &Setup, group: i32, attempted: usize, budget_mib: u64) -> Result<Held, String> {
    let _echo = Echo::spawn(setup.server.clone());
    let port = setup.port;
    open_one(port, 0).await?.close().await;
    sleep(SETTLE).await;
    let before = Memory::of_group(group)?;

    let mut conns: Vec<Conn> = Vec::with_capacity(attempted);
    let mut stopped = None;
    let mut opening = JoinSet::new();
    let mut launched = 0;
    let mut next_check = CHECK_EVERY;
    loop {
        while stopped.is_none() && launched < attempted && opening.len() < CONCURRENCY {
            opening.spawn(open_one(port, launched as u64));
            launched += 1;
        }
        let Some(joined) = opening.join_next().await else { break };
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => {
                stopped.get_or_insert(e);
            }
            Err(e) => {
                stopped.get_or_insert(format!("a task failed: {e}"));
            }
        }
        if conns.len() >= next_check {
            next_check += CHECK_EVERY;
            let grown = Memory::of_group(group)?.pss_kib.saturating_sub(before.pss_kib);
            if grown > budget_mib * 1024 && stopped.is_none() {
                stopped = Some(format!("the proxy grew past the {budget_mib} MiB memory budget (PSS)"));
            }
        }
    }

    sleep(SETTLE).await;
    let after = Memory::of_group(group)?;
    let open = conns.len();
    let per = |after: u64, before: u64| match open {
        0 => 0.0,
        n => (after as f64 - before as f64) / n as f64,
    };
    // Prove the connections still relay, without opening anything new.
    let held = futures_util::stream::iter(conns.into_iter().map(|mut conn| async move {
        let ok = rtt::trip(&mut conn, 1).await.is_ok();
        (ok, conn)
    }))
    .buffer_unordered(CONCURRENCY)
    .fold(0, |held, (ok, conn)| async move {
        drop(conn);
        held + usize::from(ok)
    })
    .await;
    Ok(Held {
        attempted,
        open,
        held,
        rss_kib: per(after.rss_kib, before.rss_kib),
        pss_kib: per(after.pss_kib, before.pss_kib),
        stopped,
    })
}

/// A connection, upgraded and proven relayed by a 1-byte echo.
async fn open_one(port: u16, i: u64) -> Result<Conn, String> {
    let mut conn = rtt::open(port, "/").await?;
    let byte = [i as u8];
    timeout(rtt::TRIP_TIMEOUT, conn.round_trip(&byte))
        .await
        .map_err(|_| format!("no echo within {} s", rtt::TRIP_TIMEOUT.as_secs()))??;
    Ok(conn)
}

/// Raises RLIMIT_NOFILE: the soft limit to `want` or the hard limit, and the hard limit to `want`
/// where that is allowed (root). Returns the soft limit now in force and the hard limit before.
fn raise_fd_limit(want: u64) -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (1024, 1024);
    };
    if soft >= want {
        return (soft, hard);
    }
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return (want, hard);
    }
    let soft_new = want.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, soft_new, hard) {
        Ok(()) => (soft_new, hard),
        Err(_) => (soft, hard),
    }
}
