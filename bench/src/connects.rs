//! Scenario "connects": new connections per second, `concurrency` at a time.
//!
//! Each connection is what a page load costs a proxy: the TCP connection, the WebSocket upgrade,
//! the proxy's connection to the target, one 32-byte echo, and the closing handshake (the client
//! sends Close and waits for the proxy's Close or end of stream). Workers start new connections
//! until `secs` have passed; the rate counts the connections that completed, over the time until
//! the last one finished. Each round starts the peer afresh.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::raw::Conn;
use crate::echo::Echo;
use crate::peer::{self, Peer};
use crate::procfs::CpuMark;
use crate::report::{self, Report};
use crate::rtt::{self, CpuPer};

/// A whole connection (open, echo, close) that takes longer counts as failed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker stops after this many failures; a broken peer should not hold up the benchmark.
const MAX_FAILURES: u64 = 20;

pub struct Options {
    pub concurrency: usize,
    pub secs: Duration,
}

impl Options {
    pub fn rows(&self, report: &mut Report) {
        report.metric_as(report::CONNECTS, format!("connects, {} at a time", self.concurrency));
    }

    pub fn cpu_rows(&self, report: &mut Report) {
        report.metric(report::CPU_CONNECT);
        report.metric(report::CPU_CONNECT_PROXY);
    }
}

#[derive(Default)]
struct Count {
    done: u64,
    failed: u64,
    first_error: Option<String>,
}

pub async fn measure_into(
    peer: &Peer<'_>,
    options: &Options,
    report: &mut Report,
    (round, rounds): (u32, u32),
) -> Result<(), String> {
    let (count, elapsed, cpu) = peer::measure(peer, None, |port, server, group| async move {
        let _echo = Echo::spawn(server);
        let mark = CpuMark::now(group);
        let start = Instant::now();
        let deadline = start + options.secs;
        let mut workers = JoinSet::new();
        for worker in 0..options.concurrency {
            workers.spawn(work(port, worker as u64, deadline));
        }
        let mut total = Count::default();
        while let Some(joined) = workers.join_next().await {
            let count = joined.map_err(|e| format!("a worker failed: {e}"))?;
            total.done += count.done;
            total.failed += count.failed;
            total.first_error = total.first_error.or(count.first_error);
        }
        let elapsed = start.elapsed();
        let cpu = CpuPer::new(mark.since(), total.done);
        match (total.done, &total.first_error) {
            (0, Some(e)) => Err(format!("no connection completed; the first error: {e}")),
            _ => Ok((total, elapsed, cpu)),
        }
    })
    .await?;
    let rate = count.done as f64 / elapsed.as_secs_f64();
    eprintln!(
        "  round {round}/{rounds}  {:<12} connects {rate:>8.0} /s  ({} in {:.2} s, {} failed)",
        peer.name(),
        count.done,
        elapsed.as_secs_f64(),
        count.failed
    );
    if let Some(e) = count.first_error {
        report.note(format!(
            "{} connects, round {round}: {} of {} connections failed; the first: {e}",
            peer.name(),
            count.failed,
            count.done + count.failed
        ));
    }
    report.record(report::CONNECTS, peer.name(), rate);
    report.record(report::CPU_CONNECT, peer.name(), cpu.all_us);
    if matches!(peer, Peer::Proxy(_)) {
        report.record(report::CPU_CONNECT_PROXY, peer.name(), cpu.proxy_us);
    }
    Ok(())
}

/// One worker: connection after connection until `deadline`.
async fn work(port: u16, worker: u64, deadline: Instant) -> Count {
    let mut count = Count::default();
    while Instant::now() < deadline && count.failed < MAX_FAILURES {
        let i = worker * 1_000_000 + count.done + count.failed;
        match timeout(CONNECTION_TIMEOUT, one(port, i)).await {
            Ok(Ok(())) => count.done += 1,
            Ok(Err(e)) => {
                count.failed += 1;
                count.first_error.get_or_insert(e);
            }
            Err(_) => {
                count.failed += 1;
                count.first_error.get_or_insert(format!(
                    "a connection took more than {} s",
                    CONNECTION_TIMEOUT.as_secs()
                ));
            }
        }
    }
    count
}

async fn one(port: u16, i: u64) -> Result<(), String> {
    let mut conn: Conn = rtt::open(port).await?;
    rtt::trip(&mut conn, i % 4096).await?;
    conn.close().await;
    Ok(())
}
