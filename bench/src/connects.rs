//! Scenario "connects": new connections per second, `concurrency` at a time.
//!
//! Each connection is what a page load costs a proxy: the TCP connection, the WebSocket upgrade,
//! the proxy's connection to the target, one 32-byte echo, and the closing handshake (the client
//! sends Close and waits for the proxy's Close or end of stream). Workers start new connections
//! until `secs` have passed; the rate counts the connections that completed, over the time until
//! the last one finished. Each round starts the peer afresh.
//!
//! With tokens (`--token-proxy`), the same is measured for a proxy that routes by token: each
//! connection asks for `/websockify?token=T`, T drawn from the whole set, and the proxy looks T up
//! in a file or in Redis (`tokens`). Those runs go to the proxy's column in the token rows, as
//! ratios to its connects without tokens.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::raw::Conn;
use crate::echo::Echo;
use crate::peer::{self, Peer};
use crate::procfs::CpuMark;
use crate::proxy::{ProxySpec, Upstream};
use crate::report::{self, Report};
use crate::rng::XorShift;
use crate::rtt::{self, CpuPer};
use crate::tokens::{TokenSet, TokenSource};

/// A whole connection (open, echo, close) that takes longer counts as failed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker stops after this many failures; a broken peer should not hold up the benchmark.
const MAX_FAILURES: u64 = 20;

pub struct Options {
    pub concurrency: usize,
    pub secs: Duration,
    /// The tokens every token source holds.
    pub tokens: TokenSet,
    /// Proxies routing by token (`--token-proxy`), each named like one of the `--proxy` peers.
    pub token_proxies: Vec<ProxySpec>,
}

impl Options {
    pub fn rows(&self, report: &mut Report) {
        report.metric_as(report::CONNECTS, format!("connects, {} at a time", self.concurrency));
        for source in self.token_sources() {
            let label = format!("connects, {}, {} tokens", source.plugin(), self.tokens.count);
            report.metric_as(source.connects_kind(), label);
        }
    }

    pub fn cpu_rows(&self, report: &mut Report) {
        report.metric(report::CPU_CONNECT);
        report.metric(report::CPU_CONNECT_PROXY);
        for source in self.token_sources() {
            report.metric(source.cpu_kind());
        }
    }

    /// The token sources the token proxies use, each once.
    pub fn token_sources(&self) -> Vec<TokenSource> {
        TokenSource::ALL
            .into_iter()
            .filter(|source| {
                self.token_proxies
                    .iter()
                    .any(|spec| spec.upstream == Upstream::Tokens(*source))
            })
            .collect()
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
    let tokens = peer.token_source().map(|_| options.tokens);
    let (count, elapsed, cpu) = peer::measure(peer, None, |port, server, group| async move {
        let _echo = Echo::spawn(server);
        let mark = CpuMark::now(group);
        let start = Instant::now();
        let deadline = start + options.secs;
        let mut workers = JoinSet::new();
        for worker in 0..options.concurrency {
            workers.spawn(work(port, worker as u64, deadline, tokens));
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
    let (name, source) = (peer.name(), peer.token_source());
    let via = source.map_or_else(String::new, |source| format!(" via {}", source.plugin()));
    eprintln!(
        "  round {round}/{rounds}  {name:<12} connects{via:<15} {rate:>8.0} /s  ({} in {:.2} s, {} failed)",
        count.done,
        elapsed.as_secs_f64(),
        count.failed
    );
    if let Some(e) = count.first_error {
        report.note(format!(
            "{name} connects{via}, round {round}: {} of {} connections failed; the first: {e}",
            count.failed,
            count.done + count.failed
        ));
    }
    match source {
        // The proxy's CPU time only: redis-server's would be missing from "all processes".
        Some(source) => {
            report.record(source.connects_kind(), name, rate);
            report.record(source.cpu_kind(), name, cpu.proxy_us);
        }
        None => {
            report.record(report::CONNECTS, name, rate);
            report.record(report::CPU_CONNECT, name, cpu.all_us);
            if matches!(peer, Peer::Proxy(_)) {
                report.record(report::CPU_CONNECT_PROXY, name, cpu.proxy_us);
            }
        }
    }
    Ok(())
}

/// One worker: connection after connection until `deadline`; with `tokens`, each to a token
/// drawn from the set (a generator per worker, seeded from its number).
async fn work(port: u16, worker: u64, deadline: Instant, tokens: Option<TokenSet>) -> Count {
    let mut count = Count::default();
    let mut picks = XorShift::new(0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(worker + 1));
    while Instant::now() < deadline && count.failed < MAX_FAILURES {
        let i = worker * 1_000_000 + count.done + count.failed;
        let path = tokens.map_or_else(|| "/".to_string(), |set| set.request_path(picks.next_u64()));
        match timeout(CONNECTION_TIMEOUT, one(port, &path, i)).await {
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

async fn one(port: u16, path: &str, i: u64) -> Result<(), String> {
    let mut conn: Conn = rtt::open(port, path).await?;
    rtt::trip(&mut conn, i % 4096).await?;
    conn.close().await;
    Ok(())
}
