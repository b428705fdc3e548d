//! wsproxy: a WebSocket to TCP/UNIX-socket proxy, command-line compatible with websockify.
//!
//! # Layout
//! The folders follow the path a connection takes: accept → TLS/HTTP → resolve → auth → target →
//! relay.
//! - `cli`: the command line (clap), websockify's options and ours; nothing else sees clap.
//! - `config`: turns the command line into a validated [`config::Config`] (exit 64 on mistakes).
//! - `listener`: binds TCP, UNIX or inetd sockets before the runtime starts; accepts clients.
//! - `server`: the accept loops (one event loop per `--workers` thread), connection limit, stop
//!   conditions and the drain on shutdown.
//! - `tls`: rustls configuration for `--cert`/`--key`/`--verify-client` and `--ssl-target`;
//!   `autocert`: `--cert auto`'s self-signed certificate, made once and kept.
//! - `http/`: one connection's HTTP side: `session` (TLS detection, hyper: upgrade, static
//!   files, 405, then the relay), `handshake` (the upgrade rules: websockify's `binary`
//!   subprotocol rule, lenient, and `base64` for old clients), `forward` (another instance's
//!   client of a session run here; on a shared console, a window like a local one), `web`
//!   (`--web` files: no escape from the directory, no open redirect), `recordings`
//!   (`--serve-recordings`: the `--record` files for `web/replay.html`), `reject` (a refused
//!   request's one-line answer).
//! - `gate`: between the request and the target: throttle, then `route`, then `auth`.
//! - `route/`: the resolve step: the static target, or the one a token names (`TokenSource`,
//!   one module per websockify token plugin: files, file names, HTTP APIs, JWT, Redis, sockets).
//! - `auth/`: websockify's auth plugins (Basic, Origin, client-certificate CN) and `throttle`,
//!   the per-address limit on failures.
//! - `target`: connecting to the target (every resolved address, optional TLS, UNIX sockets, the
//!   wrapped command's moved port); `ws_target/`: a target that speaks WebSocket itself
//!   (`ws://`, `ws+unix:`, `--target-websocket`): the client handshake, and `stream`, a byte
//!   stream over its frames, so the relay stays as it is.
//! - `share`: `--share`: one target connection fanned out to several windows (a window is a
//!   stream the relay reads and writes like a target's; `Upstream` says which it has).
//! - `relay/`: the data path, one hand-polled future per session with backpressure both ways;
//!   `frame` (the framing, pure functions), `buffer` (buffers only while data flows, pooled per
//!   thread), `tap` (`--record` and `--traffic`), `recording/` (`--record-format`: noVNC's playback
//!   format, asciicast v2 with telnet's commands left out), `b64` (the `base64` subprotocol of old
//!   clients, decoded and encoded in place).
//! - `wrap/`: wrap mode (`-- CMD ARGS`): `supervisor` starts, watches, respawns and stops the
//!   command; `preload` finds librebind.so and builds its environment; `leftovers` finds daemons
//!   that left its process group.
//! - `sessions/`: on-demand sessions (`--sessions`): services, the registry (in memory or in
//!   Redis, shared by several instances), the manager, the launcher, placement on hosts, the
//!   cluster of instances and the REST API; the map is in `sessions/mod.rs`. Their clients come
//!   through `gate` as a `route::Destination::Session`; `http/forward` is the owner's side of a
//!   client another instance forwards.
//! - `reloading`: a value read from files and read again when they change (token files, keys).
//! - `redis_link`: the one Redis connection a part keeps (TokenRedis, the session store).
//! - `logging`: stderr, `--log-file` and `--syslog` sinks.
//! - `fuzzing`: fuzz targets (frames, a whole relay session, the handshake, token and services
//!   files) for `wsproxy/fuzz/`'s libFuzzer targets and the stable harness in its tests.
//! - `ops/`: what an operator watches and does: `metrics`, the Prometheus metrics of `--metrics`
//!   (one registry of closed-label series, recorded at a few places along the path above);
//!   `reload`, SIGHUP and changed certificate files (the parts read from files, swapped whole);
//!   `systemd`, socket activation and sd_notify.
#![forbid(unsafe_code)]

pub mod auth;
pub mod autocert;
pub mod cli;
pub mod config;
pub mod fuzzing;
pub mod gate;
pub mod http;
pub mod listener;
pub mod logging;
pub mod ops;
pub mod redis_link;
pub mod relay;
pub mod reloading;
pub mod route;
pub mod server;
pub mod sessions;
pub mod share;
pub mod target;
pub mod tls;
pub mod wrap;
pub mod ws_target;

/// Serves until SIGINT or SIGTERM (or a lifecycle option, or in wrap mode the command) ends it.
/// `bound` holds each worker's listeners (`listener::bind_workers`); `api` and `metrics` are the
/// listeners of `--api-listen` and `--metrics ADDR`.
/// Returns the exit code: 0, or under `--wrap-mode=exit` the command's.
pub async fn run(
    config: config::Config,
    bound: Vec<Vec<listener::Bound>>,
    api: Option<listener::Bound>,
    metrics: Option<listener::Bound>,
) -> Result<u8, String> {
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
        return server::run(config, bound, server::Extra { api, metrics }, None, shutdown)
            .await
            .map(|()| 0);
    };
    let listeners = server::Extra { api, metrics };
    let metrics = config.metrics.clone();
    let (addr, wrapped) = tokio::sync::watch::channel(None);
    let grace = config.shutdown_grace;
    let supervisor = async {
        let code = wrap::supervisor::run(wrap, grace, addr, stop_command.clone(), metrics).await;
        command_done.cancel();
        code
    };
    let server = async {
        let served = server::run(config, bound, listeners, Some(wrapped), shutdown).await;
        stop_command.cancel();
        served
    };
    let (code, served) = tokio::join!(supervisor, server);
    served.map(|()| code)
}
