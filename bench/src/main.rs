//! wsproxy-bench: a load generator that compares wsproxy with the proxies it replaces.
//!
//! Every proxy under test is started as a command on 127.0.0.1, in front of a TCP backend that
//! lives in this process, and driven by a WebSocket client that also lives here. A built-in
//! `no-proxy` baseline points the same client at an in-process WebSocket server, which shows what
//! the client itself can do; every proxy's result is reported as a ratio to it.
//!
//! # Layout
//! - `cli`: the command line (clap); one subcommand per scenario, and `all`.
//! - `plan`: which scenarios a command runs; runs them over the peers in alternation.
//! - Scenarios: `throughput` (one connection, SIZE bytes each way), `rtt` (32-byte round trips
//!   on 1 and on 64 connections), `connects` (connections per second, also through proxies
//!   that route by token), `idle` (proxy memory per idle connection); `sessions` (wsproxy's
//!   on-demand sessions: launch on first connect, reservations per second), `cluster`
//!   (instances sharing sessions through Redis: reservations per second through one and through
//!   several, the extra latency of a client forwarded to the instance that launched its session)
//!   and `soak` (long concurrent load while targets are killed; no leak after) run on their own;
//!   `reserve` is the reservation load of `sessions` and `cluster`.
//! - `peer`: the baseline or a proxy, and the far end (TCP backend or WebSocket server) of a run.
//! - `proxy`: `NAME=TEMPLATE` specs; starting a proxy, waiting until it listens, stopping it.
//! - `relay`: a minimal raw TCP relay, run as a reference peer (`wsproxy-bench relay`).
//! - `echo_server`: the command the sessions and cluster scenarios launch (`wsproxy-bench
//!   echo-server`).
//! - `http_client`: a minimal HTTP/1.1 keep-alive client for the sessions API.
//! - `tokens`: the token set and its sources (a token file, `redis_server`: a private Redis) for
//!   the proxies that route by token; the cluster scenario's store is such a Redis too.
//! - `echo`: echo servers (TCP and WebSocket) for the small-message scenarios.
//! - `client`: the WebSocket client, hand-written framing (`raw`) or tokio-tungstenite.
//! - `net`, `tls`: plain and TLS streams behind one type, for ws:// and wss:// runs.
//! - `handshake`: the HTTP upgrade, client and server side, kept minimal.
//! - `ws`: WebSocket framing: frame headers, masking 8 bytes at a time, a frame reader.
//! - `transfer`: moving test data through TCP or WebSocket, counting, checking and timing it.
//! - `pattern`: the test data, and checking that what arrived is what was sent.
//! - `rng`: a small generator for test data and frame masks.
//! - `stats`: medians and percentiles; `procfs`: memory and CPU time from /proc.
//! - `report`: the printed table, the targets judged, and the JSON file.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod cluster;
mod connects;
mod echo;
mod echo_server;
mod handshake;
mod http_client;
mod idle;
mod net;
mod pattern;
mod peer;
mod plan;
mod procfs;
mod proxy;
mod redis_server;
mod relay;
mod report;
mod reserve;
mod rng;
mod rtt;
mod sessions;
mod soak;
mod stats;
mod throughput;
mod tls;
mod tokens;
mod transfer;
mod ws;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match &cli.command {
        cli::Command::Relay(args) => return relay::main(args),
        // Before any runtime: its start-up is what the sessions scenario measures.
        cli::Command::EchoServer(args) => return echo_server::main(args),
        _ => {}
    }
    // The default multi-thread runtime: the client and the in-process server or backend run
    // on separate cores, as a browser and a target would, instead of taking turns on one.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wsproxy-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        // Proxies run in their own process group, so the terminal's Ctrl-C does not reach them.
        // Catch it here instead: dropping the scenario drops its `Proxy` guards, which kill them.
        tokio::select! {
            outcome = plan::run(cli.command) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsproxy-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
