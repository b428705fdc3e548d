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
    /// Over wss:// (the baseline serves TLS with the PEM given; proxies enable it themselves):
    ///   wsproxy-bench throughput --tls target/bench-cert.pem \
    ///     --proxy 'wsproxy=target/release/wsproxy --cert target/bench-cert.pem 127.0.0.1:{listen} {target}'
    #[command(verbatim_doc_comment)]
    Throughput(Throughput),
    /// Round-trip latency of 32-byte messages on 1 connection (p50/p99/max), and round trips
    /// per second on --rtt-conns connections at once.
    Rtt(Rtt),
    /// New connections per second (upgrade, one 32-byte echo, closing handshake), several at once;
    /// with --token-proxy, also through proxies that route by token.
    ///
    /// Example (wsproxy and websockify with 10,000 tokens in a file and in Redis):
    ///   wsproxy-bench connects --rounds 3 \
    ///     --proxy 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}' \
    ///     --proxy 'websockify=target/bench-venv/bin/websockify 127.0.0.1:{listen} {target}' \
    ///     --token-proxy 'wsproxy=target/release/wsproxy --token-plugin TokenFile --token-source {token-file} 127.0.0.1:{listen}' \
    ///     --token-proxy 'wsproxy=target/release/wsproxy --token-plugin TokenRedis --token-source {redis} 127.0.0.1:{listen}' \
    ///     --token-proxy 'websockify=target/bench-venv/bin/websockify --token-plugin TokenFile --token-source {token-file} 127.0.0.1:{listen}' \
    ///     --token-proxy 'websockify=target/bench-venv/bin/websockify --token-plugin TokenRedis --token-source {redis} 127.0.0.1:{listen}'
    #[command(verbatim_doc_comment)]
    Connects(Connects),
    /// Proxy memory per idle connection with --idle-conns connections open.
    Idle(Idle),
    /// Every scenario, every peer in alternation, one table: what `make bench` runs.
    ///
    /// Each round runs, for each peer in turn, throughput, rtt and connects (then connects with
    /// each of its --token-proxy templates); idle runs once per proxy after the rounds.
    /// A quick smoke run:
    ///   wsproxy-bench all --size-mib 16 --rounds 1 --round-trips 1000 --rtt-secs 1 \
    ///     --connects-secs 1 --idle-conns 500 --proxy 'wsproxy=...'
    #[command(verbatim_doc_comment)]
    All(All),
    /// wsproxy's on-demand sessions (`--sessions`): a launch on first connect next to the same
    /// command started alone, and reservations per second through the REST API.
    ///
    /// Each round starts each --proxy afresh with a services file of its own, then: --launches
    /// launches, each paired with a start of the command alone just before it; then
    /// --reserve-conns keep-alive clients posting reservations for --reserve-secs.
    /// Example (what `make bench` runs):
    ///   wsproxy-bench sessions --rounds 3 \
    ///     --proxy 'wsproxy=target/release/wsproxy --sessions {services} 127.0.0.1:{listen}'
    #[command(verbatim_doc_comment)]
    Sessions(Sessions),
    /// Scale-out through Redis (`[sessions] store`): reservations per second through one wsproxy
    /// instance and through --instances of them sharing a redis-server, and the extra latency of
    /// a client that reaches a session through an instance other than the one that launched it.
    ///
    /// A redis-server is started for the run (on a free port; needs redis-server on PATH). Each
    /// round starts, for each --proxy: one instance, then --instances instances, each set afresh
    /// with a services file of its own on its own namespace of that Redis. Through each set,
    /// --reserve-conns keep-alive clients (spread evenly over the instances) reserve for
    /// --reserve-secs, each reservation deleted at once, so at most one per client is live. With
    /// the bigger set, first: a session of `wsproxy-bench echo-server` launched by the first
    /// instance; --connects connects to its first echo and --round-trips 32-byte round trips,
    /// through the first instance and through the second (forwarded to the first), alternately.
    /// Example (what `make bench` runs):
    ///   wsproxy-bench cluster --rounds 3 \
    ///     --proxy 'wsproxy=target/release/wsproxy --sessions {services} 127.0.0.1:{listen}'
    #[command(verbatim_doc_comment)]
    Cluster(Cluster),
    /// Soak: --sessions sessions at once for --secs with traffic both ways (every echo compared),
    /// while token targets, wrapped commands and on-demand session commands are SIGKILLed at
    /// random; fails on a crash or panic, a failed session on a living target, file descriptors
    /// not back within 5 % of the baseline after the load (memory: 5 % or 1 MiB), a session
    /// command left running, or a zombie process. What `make soak` runs:
    ///   wsproxy-bench soak --wsproxy target/release/wsproxy --sessions 1000 --secs 600
    #[command(verbatim_doc_comment)]
    Soak(Soak),
    /// A minimal raw TCP relay (tokio copy_bidirectional, current_thread), used as a reference
    /// peer: --proxy 'raw-relay=target/release/wsproxy-bench relay 127.0.0.1:{listen} {ws-target}'
    #[command(hide = true)]
    Relay(Relay),
    /// A TCP echo server on 127.0.0.1:PORT, the command the sessions scenario launches.
    #[command(hide = true)]
    EchoServer(EchoServer),
}

#[derive(Args)]
pub struct Soak {
    /// The wsproxy binary under test.
    #[arg(long, default_value = "target/release/wsproxy")]
    pub wsproxy: PathBuf,
    /// Sessions open at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions: u32,
    /// How long the load and the kills go on, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub secs: u64,
    /// The warm-up before the baseline (the same load and kills), in seconds.
    #[arg(long, default_value_t = 30)]
    pub warmup_secs: u64,
    /// Echo servers behind the wsproxy that routes by token.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub targets: u32,
    /// wsproxies in wrap mode, each wrapping an echo server.
    #[arg(long, default_value_t = 2)]
    pub wrapped: u32,
    /// A kill every this many milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub kill_every_ms: u64,
    /// Of the --sessions clients, how many use on-demand sessions of a wsproxy --sessions (whose
    /// commands are killed too); 0: no sessions wsproxy. Default: one in ten.
    #[arg(long)]
    pub session_clients: Option<u32>,
}

/// `wsproxy-bench echo-server PORT`: binds 127.0.0.1:PORT and echoes every connection until killed;
/// the command the sessions and cluster scenarios launch.
#[derive(Args)]
pub struct EchoServer {
    pub port: u16,
    /// Print `echo-server listening on 127.0.0.1:PORT` once listening (for PORT 0).
    #[arg(long)]
    pub announce: bool,
}

#[derive(Args)]
pub struct Relay {
    /// Where to listen (a loopback address).
    pub listen: std::net::SocketAddr,
    /// Where to relay to (a loopback address).
    pub target: std::net::SocketAddr,
}

/// Options every scenario shares.
#[derive(Args)]
pub struct Common {
    /// A proxy under test, as NAME=COMMAND TEMPLATE (split with shell quoting rules).
    /// {listen} becomes the port it must listen on, on 127.0.0.1; {target} becomes
    /// 127.0.0.1:PORT of the in-process TCP backend. A raw TCP relay (socat) takes
    /// {ws-target} instead: the in-process WebSocket server, so it measures the cost of
    /// one more hop alone. Repeat for each proxy. The built-in no-proxy baseline always
    /// runs first and is the base of every ratio. The targets are judged for the
    /// proxy named `wsproxy` against those named websocat, websockify and socat.
    /// (Templates that route by token go in --token-proxy.)
    #[arg(long = "proxy", value_name = "NAME=TEMPLATE", verbatim_doc_comment)]
    pub proxies: Vec<ProxySpec>,

    /// Rounds. Each round runs every peer once, in the order given (A B C, A B C, ...), so
    /// that drifts on a noisy machine hit them all alike; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,

    /// Also write the results, every run included, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Fail a throughput run, and stop its proxy, when no data has arrived for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_secs: u64,
}

#[derive(Args)]
pub struct ThroughputArgs {
    /// Bytes moved per run and direction, in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub size_mib: u64,

    /// Directions to measure, comma-separated.
    #[arg(long = "direction", value_enum, value_delimiter = ',', default_values_t = [Direction::Down, Direction::Up])]
    pub directions: Vec<Direction>,

    /// The WebSocket client: `raw` is hand-written framing, fast enough not to be the
    /// bottleneck; `tungstenite` (tokio-tungstenite) is a cross-check of the framing.
    /// The other scenarios always use `raw`.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,
}

#[derive(Args)]
pub struct RttArgs {
    /// Timed round trips on the single connection.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub round_trips: u64,

    /// Connections in the many-connection part.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub rtt_conns: u64,

    /// Seconds the many-connection part runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub rtt_secs: u64,
}

#[derive(Args)]
pub struct ConnectsArgs {
    /// Seconds during which new connections are started.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connects_secs: u64,

    /// Connections in progress at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connects_concurrency: u64,

    /// The proxy NAME (given with --proxy) routing by token, as NAME=COMMAND TEMPLATE: the
    /// connects scenario runs again through it, into the row of its token source, as a ratio
    /// to NAME's connects without tokens. Instead of {target} the template has one of:
    ///   {token-file}  a file of --tokens lines `tokNNNNN: 127.0.0.1:PORT` (TokenFile)
    ///   {redis}       127.0.0.1:PORT of a redis-server started for the run, holding the
    ///                 same tokens as keys (TokenRedis; needs redis-server on PATH)
    /// Every token names the in-process backend; each connection asks for
    /// /websockify?token=tokNNNNN, the token drawn from the whole set. Repeat per source.
    #[arg(long = "token-proxy", value_name = "NAME=TEMPLATE", verbatim_doc_comment)]
    pub token_proxies: Vec<ProxySpec>,

    /// Tokens in each token source.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tokens: u64,
}

#[derive(Args)]
pub struct IdleArgs {
    /// Idle connections to open (each costs two file descriptors here and two in the proxy;
    /// the limit is raised as far as allowed, and what it does not allow is not attempted).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub idle_conns: u64,

    /// Stop opening when the proxy (with its forked children) has grown by this many MiB (PSS).
    #[arg(long, value_name = "MIB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_budget_mib: u64,
}

#[derive(Args)]
pub struct Throughput {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub throughput: ThroughputArgs,

    /// Connect with wss://, accepting any certificate; the no-proxy baseline serves TLS with the
    /// certificate and key in this PEM file. Proxy templates must turn TLS on themselves.
    #[arg(long, value_name = "PEM")]
    pub tls: Option<PathBuf>,
}

#[derive(Args)]
pub struct Rtt {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub rtt: RttArgs,
}

#[derive(Args)]
pub struct Connects {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub connects: ConnectsArgs,
}

#[derive(Args)]
pub struct Idle {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub idle: IdleArgs,
}

#[derive(Args)]
pub struct All {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub throughput: ThroughputArgs,

    #[command(flatten)]
    pub rtt: RttArgs,

    #[command(flatten)]
    pub connects: ConnectsArgs,

    #[command(flatten)]
    pub idle: IdleArgs,
}

#[derive(Args)]
pub struct Sessions {
    /// The proxy serving sessions, as NAME=COMMAND TEMPLATE (split with shell quoting rules):
    /// {listen} becomes the port it must listen on, on 127.0.0.1; {services} the services file
    /// the benchmark writes for each start (an API token, a service launching
    /// `wsproxy-bench echo-server` on a port found free, and one for the reservations with a
    /// count no run can reach). Repeat to compare builds; the targets are judged for `wsproxy`.
    #[arg(long = "proxy", value_name = "NAME=TEMPLATE", required = true, verbatim_doc_comment)]
    pub proxies: Vec<ProxySpec>,

    /// Rounds. Each round starts every proxy afresh, in the order given.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,

    /// Also write the results, every launch included, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Launches timed per round and proxy (after one that is not), each paired with a start of
    /// the command alone.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub launches: u64,

    /// Keep-alive connections posting reservations at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub reserve_conns: u64,

    /// Seconds the reservations run, per round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub reserve_secs: u64,
}

#[derive(Args)]
pub struct Cluster {
    /// The proxy, as NAME=COMMAND TEMPLATE (split with shell quoting rules): {listen} becomes the
    /// port an instance listens on, on 127.0.0.1 (what the others forward to); {services} the
    /// services file all instances of a set share (the Redis store and its namespace, an API
    /// token, a service launching `wsproxy-bench echo-server` on a port the kernel chooses, and one
    /// for the reservations). Repeat to compare builds; the target is judged for `wsproxy`.
    #[arg(long = "proxy", value_name = "NAME=TEMPLATE", required = true, verbatim_doc_comment)]
    pub proxies: Vec<ProxySpec>,

    /// Rounds. Each round runs every proxy in the order given: one instance, then the bigger set.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,

    /// Also write the results, every round included, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Instances in the bigger set (compared with one).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
    pub instances: u64,

    /// Keep-alive connections posting reservations at once, spread evenly over the instances.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub reserve_conns: u64,

    /// Seconds the reservations run, per set and round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub reserve_secs: u64,

    /// Connects (upgrade to the first echo) timed per path and round, after one that is not.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connects: u64,

    /// Round trips timed per path and round, after 200 that are not.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub round_trips: u64,
}
