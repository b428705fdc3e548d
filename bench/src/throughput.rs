//! Scenario "throughput": one connection moves SIZE bytes one way, as fast as it can.
//!
//! - down (target → browser): the backend writes, the proxy frames, the client reads.
//! - up (browser → target): the client sends 64 KiB binary messages, each masked with a fresh
//!   mask as browsers do; the proxy unmasks; the backend reads.
//!
//! The receiving end checks every byte and times the run from its first byte to its last.
//! Peers run in alternation, no-proxy first (A B C, A B C, ...), so that the slow drifts of a
//! noisy machine hit every peer alike; the report gives medians. Each peer is started afresh in
//! every round and stopped after its runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::cli::Throughput;
use crate::client;
use crate::handshake;
use crate::proxy::{NO_PROXY, Proxy, ProxySpec, Upstream};
use crate::report::{Report, Series};
use crate::transfer::{IO_SIZE, Progress, Transfer, receive_tcp, receive_ws, send_tcp, send_ws};
use crate::ws::{FrameReader, send_close};

/// The message size in both directions: what a browser client such as noVNC sends, and what
/// the no-proxy server sends (a proxy picks its own size for the down direction).
const MESSAGE: usize = 64 * 1024;

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
}

/// One side of a run, besides the client.
enum Peer<'a> {
    /// The in-process WebSocket server: the client's own limit.
    NoProxy,
    /// A proxy command in front of the in-process TCP backend.
    Proxy(&'a ProxySpec),
}

impl Peer<'_> {
    fn name(&self) -> &str {
        match self {
            Peer::NoProxy => NO_PROXY,
            Peer::Proxy(spec) => &spec.name,
        }
    }
}

/// The far end of one run: what the client's connection reaches, through a proxy or directly.
#[derive(Clone)]
enum Server {
    /// A TCP backend (the proxy's target).
    Tcp(Arc<TcpListener>),
    /// A WebSocket server (the no-proxy baseline), framing as cheaply as the client does.
    WebSocket(Arc<TcpListener>),
}

pub async fn run(args: &Throughput) -> Result<(), String> {
    let common = &args.common;
    let mut names = vec![NO_PROXY];
    for spec in &common.proxies {
        if names.contains(&spec.name.as_str()) {
            return Err(format!("two proxies are named `{}`", spec.name));
        }
        names.push(&spec.name);
    }
    let directions: Vec<Direction> = Direction::ALL
        .into_iter()
        .filter(|d| args.directions.contains(d))
        .collect();
    let size = args.size_mib << 20;
    let options = RunOptions {
        size,
        client: common.client,
        stall: Duration::from_secs(common.stall_secs),
    };

    let peers: Vec<Peer> = std::iter::once(Peer::NoProxy)
        .chain(common.proxies.iter().map(Peer::Proxy))
        .collect();
    let mut series: Vec<Series> = peers
        .iter()
        .map(|peer| Series {
            name: peer.name().to_string(),
            command: match peer {
                Peer::NoProxy => None,
                Peer::Proxy(spec) => Some(spec.template.clone()),
            },
            runs: Default::default(),
        })
        .collect();

    eprintln!(
        "throughput: {} MiB per run, {} round(s), {} client; each line is one run",
        args.size_mib,
        common.rounds,
        common.client.name()
    );
    for round in 1..=common.rounds {
        for (peer, series) in peers.iter().zip(&mut series) {
            for (direction, transfer) in measure_peer(peer, &directions, &options).await? {
                let rate = transfer.mib_per_sec();
                eprintln!(
                    "  round {round}/{}  {:<12} {:<4} {rate:>9.1} MiB/s  ({:.3} s)",
                    common.rounds,
                    peer.name(),
                    direction.name(),
                    transfer.elapsed.as_secs_f64()
                );
                series.runs[direction as usize].push(rate);
            }
        }
    }

    let report = Report {
        size_mib: args.size_mib,
        message_bytes: MESSAGE,
        rounds: common.rounds,
        client: common.client.name(),
        directions,
        series,
    };
    print!("{}", report.table());
    if let Some(path) = &common.json {
        let json = serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

struct RunOptions {
    size: u64,
    client: client::ClientKind,
    /// A run fails when no data has arrived for this long.
    stall: Duration,
}

/// Runs every direction once against `peer`, starting and stopping it around them.
async fn measure_peer(
    peer: &Peer<'_>,
    directions: &[Direction],
    options: &RunOptions,
) -> Result<Vec<(Direction, Transfer)>, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = Arc::new(listener);
    let mut results = Vec::new();
    match peer {
        Peer::NoProxy => {
            for &direction in directions {
                let transfer = run_once(addr.port(), Server::WebSocket(listener.clone()), direction, options)
                    .await
                    .map_err(|e| format!("{NO_PROXY} {}: {e}", direction.name()))?;
                results.push((direction, transfer));
            }
        }
        Peer::Proxy(spec) => {
            let proxy = Proxy::start(spec, addr).await?;
            for &direction in directions {
                let server = match spec.upstream {
                    Upstream::Tcp => Server::Tcp(listener.clone()),
                    Upstream::WebSocket => Server::WebSocket(listener.clone()),
                };
                match run_once(proxy.port(), server, direction, options).await {
                    Ok(transfer) => results.push((direction, transfer)),
                    Err(e) => {
                        let note = proxy.output_note();
                        // Stopping is best effort here: the run's error is the one to report.
                        let _ = proxy.stop().await;
                        return Err(format!("{} {}: {e}{note}", spec.name, direction.name()));
                    }
                }
            }
            proxy.stop().await?;
        }
    }
    Ok(results)
}

/// One connection, one direction: the client on one task, the server on another, and a
/// watchdog that fails the run when data stops arriving. Whichever ends first with an error ends
/// the run; returning drops the `JoinSet`, which aborts the other task.
async fn run_once(port: u16, server: Server, direction: Direction, options: &RunOptions) -> Result<Transfer, String> {
    let progress = Progress::default();
    let size = options.size;
    let mut tasks: JoinSet<Result<Option<Transfer>, String>> = JoinSet::new();
    {
        let progress = progress.clone();
        tasks.spawn(async move { serve(server, direction, size, &progress).await });
    }
    {
        let (progress, kind) = (progress.clone(), options.client);
        tasks.spawn(async move {
            match direction {
                Direction::Down => client::download(kind, port, size, &progress).await.map(Some),
                Direction::Up => client::upload(kind, port, size, MESSAGE).await.map(|()| None),
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
            let (mut stream, _) = listener
                .accept()
                .await
                .map_err(|e| format!("backend accept failed: {e}"))?;
            match direction {
                Direction::Down => send_tcp(&mut stream, size).await.map(|()| None),
                Direction::Up => receive_tcp(&mut stream, size, progress).await.map(Some),
            }
        }
        Server::WebSocket(listener) => {
            // A raw relay passes its readiness probe on to us as an empty connection: skip it.
            let (stream, leftover) = loop {
                let (mut stream, _) = listener
                    .accept()
                    .await
                    .map_err(|e| format!("server accept failed: {e}"))?;
                if let Some(leftover) = handshake::server(&mut stream).await? {
                    break (stream, leftover);
                }
            };
            let (reader, mut writer) = stream.into_split();
            let mut frames = FrameReader::new(reader, &leftover, IO_SIZE, true);
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
