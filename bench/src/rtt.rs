//! Scenario "rtt": round trips of 32-byte messages through the proxy to an echo and back.
//!
//! - 1 connection: `round_trips` round trips one after the other, each timed; the report gives
//!   p50, p99 and the maximum in µs. The first `WARMUP` are not counted.
//! - 64 connections: each does round trips one after the other for `secs` seconds, all at
//!   once; the report gives round trips per second, summed over the connections.
//!
//! Every echo is checked byte for byte. Each round starts the peer afresh.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::raw::Conn;
use crate::echo::Echo;
use crate::pattern::pattern;
use crate::peer::{self, Peer};
use crate::procfs::{CpuMark, CpuUse};
use crate::report::{self, Report};
use crate::stats::Latency;

/// The message size: a keystroke or a mouse move in a remote desktop, a line in a terminal.
pub const PAYLOAD: usize = 32;
/// Round trips before the timed ones: the proxy and the echo allocate what they need.
pub const WARMUP: usize = 200;
/// A round trip (or a connection) that takes longer fails the run.
pub const TRIP_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of the small-message scenarios: plenty for 32-byte echoes.
pub const SMALL_READ: usize = 4096;

pub struct Options {
    pub round_trips: usize,
    pub conns: usize,
    pub secs: Duration,
}

impl Options {
    pub fn rows(&self, report: &mut Report) {
        for kind in [report::RTT_P50, report::RTT_P99, report::RTT_MAX] {
            report.metric(kind);
        }
        report.metric_as(report::RTT64, format!("round trips, {} conns", self.conns));
    }

    pub fn cpu_rows(&self, report: &mut Report) {
        let conns = self.conns;
        report.metric_as(report::CPU_RTT64, format!("CPU per round trip ({conns} conns), all"));
        report.metric_as(
            report::CPU_RTT64_PROXY,
            format!("CPU per round trip ({conns} conns), proxy"),
        );
    }
}

/// Measures both parts once against `peer` and records them.
pub async fn measure_into(
    peer: &Peer<'_>,
    options: &Options,
    report: &mut Report,
    (round, rounds): (u32, u32),
) -> Result<(), String> {
    let (latency, (rate, cpu)) = peer::measure(peer, None, |port, server, group| async move {
        let _echo = Echo::spawn(server);
        let latency = one_connection(port, options.round_trips)
            .await
            .map_err(|e| format!("1 connection: {e}"))?;
        let rate = many_connections(port, options.conns, options.secs, group)
            .await
            .map_err(|e| format!("{} connections: {e}", options.conns))?;
        Ok((latency, rate))
    })
    .await?;
    eprintln!(
        "  round {round}/{rounds}  {:<12} rtt  p50 {:.1} µs  p99 {:.1} µs  max {:.0} µs;  {} conns {rate:.0} round trips/s",
        peer.name(),
        latency.p50,
        latency.p99,
        latency.max,
        options.conns
    );
    report.record(report::RTT_P50, peer.name(), latency.p50);
    report.record(report::RTT_P99, peer.name(), latency.p99);
    report.record(report::RTT_MAX, peer.name(), latency.max);
    report.record(report::RTT64, peer.name(), rate);
    report.record(report::CPU_RTT64, peer.name(), cpu.all_us);
    if matches!(peer, Peer::Proxy(_)) {
        report.record(report::CPU_RTT64_PROXY, peer.name(), cpu.proxy_us);
    }
    Ok(())
}

/// Opens a connection to `path`, bounded by `TRIP_TIMEOUT`.
pub async fn open(port: u16, path: &str) -> Result<Conn, String> {
    timeout(TRIP_TIMEOUT, Conn::open(port, path, None, SMALL_READ))
        .await
        .map_err(|_| format!("no WebSocket connection within {} s", TRIP_TIMEOUT.as_secs()))?
}

/// Round trip number `i` (its payload is that part of the test pattern), bounded.
pub async fn trip(conn: &mut Conn, i: u64) -> Result<(), String> {
    let payload = pattern().window(i * PAYLOAD as u64, PAYLOAD);
    timeout(TRIP_TIMEOUT, conn.round_trip(payload))
        .await
        .map_err(|_| format!("no echo within {} s", TRIP_TIMEOUT.as_secs()))?
}

async fn one_connection(port: u16, round_trips: usize) -> Result<Latency, String> {
    let mut conn = open(port, "/").await?;
    for i in 0..WARMUP {
        trip(&mut conn, i as u64).await?;
    }
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..round_trips {
        let start = Instant::now();
        trip(&mut conn, i as u64).await?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    conn.close().await;
    Latency::of(samples).ok_or_else(|| "no round trips".to_string())
}

/// CPU time per operation, in µs: all processes, and the proxy alone.
#[derive(Clone, Copy)]
pub struct CpuPer {
    pub all_us: f64,
    pub proxy_us: f64,
}

impl CpuPer {
    pub fn new(cpu: CpuUse, operations: u64) -> CpuPer {
        let per = |spent: Duration| spent.as_secs_f64() * 1e6 / operations.max(1) as f64;
        CpuPer {
            all_us: per(cpu.bench + cpu.proxy),
            proxy_us: per(cpu.proxy),
        }
    }
}

/// Round trips per second over `conns` connections running at once for `secs`, and the CPU
/// time they took.
async fn many_connections(
    port: u16,
    conns: usize,
    secs: Duration,
    group: Option<i32>,
) -> Result<(f64, CpuPer), String> {
    let mut open_conns = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut conn = open(port, "/").await?;
        trip(&mut conn, 0).await?;
        open_conns.push(conn);
    }
    let mark = CpuMark::now(group);
    let start = Instant::now();
    let deadline = start + secs;
    let mut tasks = JoinSet::new();
    for mut conn in open_conns {
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                trip(&mut conn, done).await?;
                done += 1;
            }
            Ok::<_, String>((done, conn))
        });
    }
    let mut total = 0;
    let mut finished = Vec::with_capacity(conns);
    while let Some(joined) = tasks.join_next().await {
        let (done, conn) = joined.map_err(|e| format!("a task failed: {e}"))??;
        total += done;
        finished.push(conn);
    }
    let elapsed = start.elapsed();
    let cpu = CpuPer::new(mark.since(), total);
    let mut closing = JoinSet::new();
    for conn in finished {
        closing.spawn(conn.close());
    }
    closing.join_all().await;
    Ok((total as f64 / elapsed.as_secs_f64(), cpu))
}
