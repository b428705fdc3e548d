//! wsproxy: a WebSocket to TCP/UNIX-socket proxy, command-line compatible with websockify.
//!
//! # Layout
//! - `cli`: the command line (clap), websockify's options and ours; nothing else sees clap.
//! - `config`: turns the command line into a validated [`config::Config`] (exit 64 on mistakes).
//! - `listener`: binds TCP, UNIX or inetd sockets before the runtime starts; accepts clients.
//! - `server`: the accept loop, connection limit, stop conditions and the drain on shutdown.
//! - `session`: one connection: TLS detection, HTTP via hyper (upgrade, static files, 405).
//! - `handshake`: the WebSocket upgrade rules (websockify's `binary` subprotocol rule, lenient).
//! - `target`: connecting to the target (every resolved address, optional TLS, UNIX sockets).
//! - `relay`: the data path, one hand-polled future per session with backpressure both ways.
//! - `frame`: the WebSocket framing the relay uses; pure functions, swappable in one place.
//! - `buffer`: relay buffers that exist only while data flows, pooled per thread.
//! - `tap`: `--record` (noVNC playback files) and `--traffic`.
//! - `web`: static files for `--web` (no escape from the directory, no open redirect).
//! - `tls`: rustls configuration for `--cert`/`--key`/`--verify-client` and `--ssl-target`.
//! - `logging`: stderr, `--log-file` and `--syslog` sinks.
#![forbid(unsafe_code)]

pub mod buffer;
pub mod cli;
pub mod config;
pub mod frame;
pub mod handshake;
pub mod listener;
pub mod logging;
pub mod relay;
pub mod server;
pub mod session;
pub mod tap;
pub mod target;
pub mod tls;
pub mod web;

/// Serves until SIGINT or SIGTERM (or a lifecycle option) ends it.
pub async fn run(config: config::Config, bound: listener::Bound) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    server::run(config, bound, shutdown).await
}
