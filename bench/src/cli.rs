//! The command line. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::ClientKind;
use crate::proxy::ProxySpec;
use crate::throughput::Direction;

/// Load generator comparing wsproxy with other WebSocket-to-TCP proxies, on 127.0.0.1 only.
#[derive(Parser)]
#[command(name = "wsproxy-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// One connection moves --size-mib target → browser (down), then browser → target (up).
    ///
    /// Example:
    ///   wsproxy-bench throughput --size-mib 512 --rounds 3 \
    ///     --proxy 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}' \
    ///     --proxy 'websockify=target/bench-venv/bin/websockify 127.0.0.1:{listen} {target}'
    #[command(verbatim_doc_comment)]
    Throughput(Throughput),
}

/// Options every scenario shares.
#[derive(Args)]
pub struct Common {
    /// A proxy under test, as NAME=COMMAND TEMPLATE (split with shell quoting rules).
    /// {listen} becomes the port it must listen on, on 127.0.0.1; {target} becomes
    /// 127.0.0.1:PORT of the in-process TCP backend. A raw TCP relay (socat) takes
    /// {ws-target} instead: the in-process WebSocket server, so it measures the cost of
    /// one more hop alone. Repeat for each proxy. The built-in no-proxy baseline always
    /// runs first and is the base of every ratio.
    #[arg(long = "proxy", value_name = "NAME=TEMPLATE", verbatim_doc_comment)]
    pub proxies: Vec<ProxySpec>,

    /// Rounds. Each round runs every proxy once, in the order given (A B C, A B C, ...), so
    /// that drifts on a noisy machine hit them all alike; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,

    /// Also write the results, every run included, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// The WebSocket client: `raw` is hand-written framing, fast enough not to be the
    /// bottleneck; `tungstenite` (tokio-tungstenite) is a cross-check of the framing.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,

    /// Fail a run, and stop its proxy, when no data has arrived for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_secs: u64,
}

#[derive(Args)]
pub struct Throughput {
    #[command(flatten)]
    pub common: Common,

    /// Bytes moved per run and direction, in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub size_mib: u64,

    /// Directions to measure, comma-separated.
    #[arg(long = "direction", value_enum, value_delimiter = ',', default_values_t = [Direction::Down, Direction::Up])]
    pub directions: Vec<Direction>,
}
