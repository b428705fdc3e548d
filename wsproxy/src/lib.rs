//! wsproxy: a WebSocket to TCP/UNIX-socket proxy, command-line compatible with websockify.
//!
//! # Layout
//! - `cli`: the command line (clap), websockify's options and ours; nothing else sees clap.
//! - `config`: turns the command line into a validated [`config::Config`] (exit 64 on mistakes).
//! - `listener`: binds TCP, UNIX or inetd sockets before the runtime starts; accepts clients.
//! - `server`: the accept loop, connection limit, stop conditions and the drain on shutdown.
//! - `session`: one connection: TLS detection, HTTP via hyper (upgrade, static files, 405).
//! - `handshake`: the WebSocket upgrade rules (websockify's `binary` subprotocol rule, lenient).
//! - `gate`: between the request and the target: throttle, then `route`, then `auth`.
//! - `route/`: the resolve step: the static target, or the one a token names (`TokenSource`,
//!   one module per websockify token plugin: files, file names, HTTP APIs, JWT, Redis, sockets).
//! - `auth/`: websockify's auth plugins (Basic, Origin, client-certificate CN) and `throttle`,
//!   the per-address limit on failures.
//! - `reject`: a refused request's HTTP answer (status, one-line reason, extra header).
//! - `reloading`: a value read from files and read again when they change (token files, keys).
//! - `target`: connecting to the target (every resolved address, optional TLS, UNIX sockets, the
//!   wrapped command's moved port).
//! - `supervisor`: wrap mode (`-- CMD ARGS`): starts, watches, respawns and stops the command.
//! - `preload`: wrap mode's pure parts: finding librebind.so, the command's environment.
//! - `relay`: the data path, one hand-polled future per session with backpressure both ways.
//! - `frame`: the WebSocket framing the relay uses; pure functions, swappable in one place.
//! - `buffer`: relay buffers that exist only while data flows, pooled per thread.
//! - `tap`: `--record` (noVNC playback files) and `--traffic`.
//! - `web`: static files for `--web` (no escape from the directory, no open redirect).
//! - `tls`: rustls configuration for `--cert`/`--key`/`--verify-client` and `--ssl-target`.
//! - `logging`: stderr, `--log-file` and `--syslog` sinks.
#![forbid(unsafe_code)]

pub mod auth;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod frame;
pub mod gate;
pub mod handshake;
pub mod leftovers;
pub mod listener;
pub mod logging;
pub mod preload;
pub mod reject;
pub mod relay;
pub mod reloading;
pub mod route;
pub mod server;
pub mod session;
pub mod supervisor;
pub mod tap;
pub mod target;
pub mod tls;
pub mod web;

/// Serves until SIGINT or SIGTERM (or a lifecycle option, or in wrap mode the command) ends it.
/// Returns the exit code: 0, or under `--wrap-mode=exit` the command's.
pub async fn run(config: config::Config, bound: listener::Bound) -> Result<u8, String> {
    use tokio::signal::unix::{SignalKind, signal};
    use tokio_util::sync::CancellationToken;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    // Cancelled on a signal or when the server stops: the wrapped command is stopped at once.
    let stop_command = CancellationToken::new();
    // Cancelled when the supervisor is done (`--wrap-mode=exit`): the server drains and stops.
    let command_done = CancellationToken::new();
    let shutdown = async {
        tokio::select! {
            _ = term.recv() => tracing::info!("signal received (SIGTERM)"),
            _ = int.recv() => tracing::info!("signal received (SIGINT)"),
            () = command_done.cancelled() => {},
        }
        stop_command.cancel();
    };
    let Some(wrap) = config.wrap.clone() else {
        return server::run(config, bound, None, shutdown).await.map(|()| 0);
    };
    let (addr, wrapped) = tokio::sync::watch::channel(None);
    let grace = config.shutdown_grace;
    let supervisor = async {
        let code = supervisor::run(wrap, grace, addr, stop_command.clone()).await;
        command_done.cancel();
        code
    };
    let server = async {
        let served = server::run(config, bound, Some(wrapped), shutdown).await;
        stop_command.cancel();
        served
    };
    let (code, served) = tokio::join!(supervisor, server);
    served.map(|()| code)
}
