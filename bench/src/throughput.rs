//! Scenario "throughput": one connection moves SIZE bytes one way, as fast as it can.
//!
//! - down (target → browser): the backend writes, the proxy frames, the client reads.
//! - up (browser → target): the client sends 64 KiB binary messages, each masked with a fresh
//!   mask as browsers do; the proxy unmasks; the backend reads.
//!
//! The receiving end checks every byte and times the run from its first byte to its last.
//! With `--tls` the client speaks wss:// (the baseline serves TLS itself; a proxy's template must
//! turn TLS on, e.g. `--cert`). Each peer is started afresh for every round.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::{self, ClientKind};
use crate::peer::{self, Peer, Server};
use crate::procfs::CpuMark;
use crate::report::{self, Report};
use crate::tls::Tls;
use crate::transfer::{IO_SIZE, Progress, Transfer, receive_tcp, receive_ws, send_tcp, send_ws};
use crate::ws::send_close;

/// The message size in both directions: what a browser client such as noVNC sends, and what
/// the no-proxy server sends (a proxy picks its own size for the down direction).
pub const MESSAGE: usize = 64 * 1024;

/// How long the in-process WebSocket server waits for the client's Close after a run.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Target → browser.
    Down,
    /// Browser → target.
    Up,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Down, Direction::Up];

    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
        }
    }

    fn metric(self) -> report::Kind {
        match self {
            Self::Down => report::DOWN,
            Self::Up => report::UP,
        }
    }

    /// CPU time per GiB: all processes, and the proxy alone.
    fn cpu_metrics(self) -> (report::Kind, report::Kind) {
        match self {
            Self::Down => (report::CPU_DOWN, report::CPU_DOWN_PROXY),
            Self::Up => (report::CPU_UP, report::CPU_UP_PROXY),
        }
    }
}

pub struct Options {
    pub size: u64,
    pub client: ClientKind,
    /// A run fails when no data has arrived for this long.
    pub stall: Duration,
    pub directions: Vec<Direction>,
    pub tls: Option<Arc<Tls>>,
}

impl Options {
    pub fn new(
        size_mib: u64,
        client: ClientKind,
        stall_secs: u64,
        directions: &[Direction],
        tls: Option<Arc<Tls>>,
    ) -> Self {
        Options {
            size: size_mib << 20,
            client,
            stall: Duration::from_secs(stall_secs),
            directions: Direction::ALL.into_iter().filter(|d| directions.contains(d)).collect(),
            tls,
        }
    }

    /// Adds this scenario's rows to `report`, in table order.
    pub fn rows(&self, report: &mut Report) {
        for direction in &self.directions {
            report.metric(direction.metric());
        }
    }

    /// The CPU rows, which go below all the others.
    pub fn cpu_rows(&self, report: &mut Report) {
        for direction in &self.directions {
            let (all, proxy) = direction.cpu_metrics();
            report.metric(all);
            report.metric(proxy);
        }
    }
}

/// Measures every direction once against `peer` and records the rates.
pub async fn measure_into(
    peer: &Peer<'_>,
    options: &Options,
    report: &mut Report,
    (round, rounds): (u32, u32),
) -> Result<(), String> {
    let results = peer::measure(peer, options.tls.as_ref(), |port, server, group| async move {
        let mut results = Vec::new();
        for &direction in &options.directions {
            let mark = CpuMark::now(group);
            let transfer = run_once(port, server.clone(), direction, options)
                .await
                .map_err(|e| format!("{}: {e}", direction.name()))?;
            results.push((direction, transfer, mark.since()));
        }
        Ok(results)
    })
    .await?;
    for (direction, transfer, cpu) in results {
        let rate = transfer.mib_per_sec();
        let gib = transfer.bytes as f64 / f64::from(1 << 30);
        let (all, proxy) = (cpu.bench + cpu.proxy, cpu.proxy);
        eprintln!(
            "  round {round}/{rounds}  {:<12} {:<4} {rate:>9.1} MiB/s  ({:.3} s; CPU {:.3} s, proxy {:.3} s)",
            peer.name(),
            direction.name(),
            transfer.elapsed.as_secs_f64(),
            all.as_secs_f64(),
            proxy.as_secs_f64()
        );
        report.record(direction.metric(), peer.name(), rate);
        let (all_kind, proxy_kind) = direction.cpu_metrics();
        report.record(all_kind, peer.name(), all.as_secs_f64() * 1e3 / gib);
        if matches!(peer, Peer::Proxy(_)) {
            report.record(proxy_kind, peer.name(), proxy.as_secs_f64() * 1e3 / gib);
        }
    }
    Ok(())
}

/// One connection, one direction: the client on one task, the server on another, and a
/// watchdog that fails the run when data stops arriving. Whichever ends first with an error ends
/// the run; returning drops the `JoinSet`, which aborts the other task.
async fn run_once(port: u16, server: Server, direction: Direction, options: &Options) -> Result<Transfer, String> {
    let progress = Progress::default();
    let size = options.size;
    let mut tasks: JoinSet<Result<Option<Transfer>, String>> = JoinSet::new();
    {
        let progress = progress.clone();
        tasks.spawn(async move { serve(server, direction, size, &progress).await });
    }
    {
        let (progress, kind, tls) = (progress.clone(), options.client, options.tls.clone());
        tasks.spawn(async move {
            let tls = tls.as_ref();
            match direction {
                Direction::Down => client::download(kind, port, tls, size, &progress).await.map(Some),
                Direction::Up => client::upload(kind, port, tls, size, MESSAGE).await.map(|()| None),
            }
        });
    }
    let finished = async {
        let mut measured = None;
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.map_err(|e| format!("a task failed: {e}"))?;
            measured = measured.or(outcome?);
        }
        measured.ok_or_else(|| "the receiving end reported no transfer".to_string())
    };
    tokio::select! {
        outcome = finished => outcome,
        stalled = watchdog(&progress, size, options.stall) => Err(stalled),
    }
}

/// The far end's half of a run; returns the transfer when it is the receiving end.
async fn serve(
    server: Server,
    direction: Direction,
    size: u64,
    progress: &Progress,
) -> Result<Option<Transfer>, String> {
    match server {
        Server::Tcp(listener) => {
            let mut stream = Server::accept_tcp(&listener).await?;
            match direction {
                Direction::Down => send_tcp(&mut stream, size).await.map(|()| None),
                Direction::Up => receive_tcp(&mut stream, size, progress).await.map(Some),
            }
        }
        Server::WebSocket(listener, tls) => {
            let (mut frames, mut writer) = peer::accept_ws(&listener, tls.as_ref(), IO_SIZE).await?;
            let transfer = match direction {
                Direction::Down => {
                    send_ws(&mut writer, size, MESSAGE, None).await?;
                    None
                }
                Direction::Up => Some(receive_ws(&mut frames, size, progress).await?),
            };
            // The client closes; answer its Close so neither side is left with unread bytes.
            if timeout(CLOSE_WAIT, frames.drain_until_close()).await.is_ok() {
                let _ = send_close(&mut writer, None).await;
            }
            Ok(transfer)
        }
    }
}

/// Returns (with the message for the error) once no data has arrived for `limit`.
async fn watchdog(progress: &Progress, size: u64, limit: Duration) -> String {
    let mut last = progress.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= limit {
            return format!(
                "stalled: no data for {} s, after {now} of {size} bytes (the handshake included)",
                limit.as_secs()
            );
        }
    }
}
