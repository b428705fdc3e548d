//! The accept loop, the limits around it, and the drain at the end.
//!
//! Past `--max-connections` each accept loop holds the one client it accepted last until a session
//! ends, and new clients wait in the kernel's backlog instead of costing memory. Accept errors
//! (EMFILE, ENFILE, ...) back off with a cap instead of spinning. On a stop (signal, `--run-once`, `--timeout`, `--idle-timeout`) the listener closes
//! first, then every session is asked to close with 1001 and gets `--shutdown-grace` to do so.
//! With `--workers N` the accept loops run on N threads, each with its own event loop; the
//! connection limit, the stop and the drain are shared.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::auth::throttle::Throttle;
use crate::config::Config;
use crate::http::session;
use crate::listener::{Bound, Listener};
use crate::ops::metrics::Metrics;
use crate::target::WrappedAddr;

const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Open and finished WebSocket sessions, watched by the stop conditions.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    pub open: usize,
    pub finished: u64,
    /// When `open` last changed (or the server started): the idle clock.
    pub since: Instant,
}

/// What every connection task shares.
pub struct Shared {
    pub config: Config,
    /// Cancelled when the server stops: sessions close with 1001.
    pub cancel: CancellationToken,
    /// Wrap mode: the wrapped command's latest loopback address, published by the supervisor.
    pub wrapped: Option<WrappedAddr>,
    /// Addresses that keep presenting unknown tokens or failing auth.
    pub throttle: Throttle,
    /// `--sessions`: the REST API, on the main port unless `--api-listen` gives it its own.
    pub api: Option<axum::Router>,
    activity: watch::Sender<Activity>,
}

/// With a shared session store: the address other instances forward this one's clients to.
fn advertised(config: &Config, bound: Option<&Bound>) -> Result<Option<String>, String> {
    if config.sessions.as_ref().is_none_or(|s| s.services().store.is_none()) {
        return Ok(None);
    }
    if let Some(advertise) = &config.advertise {
        return Ok(Some(advertise.clone()));
    }
    match bound {
        Some(Bound::Tcp(listener)) => match listener.local_addr() {
            Ok(addr) if !addr.ip().is_unspecified() => Ok(Some(addr.to_string())),
            _ => Err("with a shared session store, --advertise HOST:PORT must say where other instances reach this one (it listens on every address)".into()),
        },
        _ => Err("with a shared session store, --advertise HOST:PORT must say where other instances reach this one (it does not listen on TCP)".into()),
    }
}

/// The listeners besides the main one, bound before the runtime started.
#[derive(Default)]
pub struct Extra {
    /// `--api-listen`.
    pub api: Option<Bound>,
    /// `--metrics ADDR`.
    pub metrics: Option<Bound>,
}

impl Shared {
    pub fn session_opened(&self) {
        if let Some(metrics) = &self.config.metrics {
            metrics.session_opened();
        }
        self.activity.send_modify(|a| {
            a.open += 1;
            a.since = Instant::now();
        });
    }

    pub fn session_closed(&self) {
        if let Some(metrics) = &self.config.metrics {
            metrics.session_closed();
        }
        self.activity.send_modify(|a| {
            a.open -= 1;
            a.finished += 1;
            a.since = Instant::now();
        });
    }
}

/// Serves until `shutdown` resolves or a lifecycle option says to stop, then drains.
/// `listeners` holds one list per worker (`--workers`): the first is served on this thread, each
/// other on a thread of its own with its own event loop; all share `Shared`, the connection limit
/// and the drain.
pub async fn run(
    config: Config,
    listeners: Vec<Vec<Bound>>,
    extra: Extra,
    wrapped: Option<WrappedAddr>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let Extra {
        api: api_bound,
        metrics: metrics_bound,
    } = extra;
    let advertise = advertised(&config, listeners.first().and_then(|l| l.first()))?;
    let socket_paths: Vec<PathBuf> = listeners
        .iter()
        .flatten()
        .filter_map(|b| b.socket_path().map(Into::into))
        .collect();
    let max = config.max_connections.unwrap_or_else(default_max_connections);
    let grace = config.shutdown_grace;
    let (activity, watcher) = watch::channel(Activity {
        open: 0,
        finished: 0,
        since: Instant::now(),
    });
    let stop_rules = lifecycle(watcher, config.run_once, config.timeout, config.idle_timeout);
    let sessions = config.sessions.clone();
    let api = sessions.clone().map(crate::sessions::api::router);
    let api_elsewhere = api_bound.is_some();
    let shared = Arc::new(Shared {
        config,
        cancel: CancellationToken::new(),
        wrapped,
        throttle: Throttle::default(),
        api: api.clone().filter(|_| !api_elsewhere),
        activity,
    });
    let api_server = match (api_bound, api) {
        (Some(bound), Some(api)) => Some(tokio::spawn(serve_api(bound, api, shared.cancel.clone()))),
        _ => None,
    };
    let metrics_server = match (metrics_bound, &shared.config.metrics) {
        (Some(bound), Some(metrics)) => Some(tokio::spawn(serve_metrics(
            bound,
            metrics.clone(),
            shared.cancel.clone(),
        ))),
        _ => None,
    };
    let api_shutdown = async {
        match &sessions {
            Some(sessions) => sessions.shutdown.cancelled().await,
            None => std::future::pending().await,
        }
    };
    if let (Some(sessions), Some(advertise)) = (&sessions, advertise) {
        sessions.start_cluster(advertise);
    }
    let many = listeners.len() > 1;
    let accept = Accept {
        shared: shared.clone(),
        permits: Arc::new(Semaphore::new(max)),
        tracker: TaskTracker::new(),
        ids: Arc::new(AtomicU64::new(1)),
        stop: CancellationToken::new(),
    };
    // Cancelled once the drain is over: the other workers' event loops end.
    let done = CancellationToken::new();
    let mut lists = listeners.into_iter();
    let mut loops = tokio::task::JoinSet::new();
    for bound in lists.next().unwrap_or_default() {
        let listener = Listener::register(bound).map_err(|e| format!("cannot use the listening socket: {e}"))?;
        loops.spawn(accept.clone().serve(listener, many.then_some(0)));
    }
    let mut threads = Vec::new();
    for (index, list) in lists.enumerate() {
        let worker = index + 1;
        let (accept, done) = (accept.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name(format!("wsproxy-worker-{worker}"))
            .spawn(move || worker_thread(accept, list, worker, &done))
            .map_err(|e| format!("cannot start worker {worker}: {e}"))?;
        threads.push(thread);
    }
    let reload = tokio::spawn({
        let shared = shared.clone();
        let stop = accept.stop.clone();
        let hangup = crate::ops::reload::hangup();
        async move { crate::ops::reload::serve(&shared.config, hangup, stop).await }
    });
    crate::ops::systemd::ready();

    tokio::select! {
        () = shutdown => info!("stopping: closing sessions (grace {grace:?})"),
        () = stop_rules => {},
        () = api_shutdown => info!("stopping (asked through the API): closing sessions (grace {grace:?})"),
        // Only an inetd connection's loop ends by itself: its one connection was served.
        Some(_) = loops.join_next() => {},
    }
    crate::ops::systemd::stopping();
    accept.stop.cancel();
    while loops.join_next().await.is_some() {}
    let _ = reload.await;
    for path in socket_paths {
        let _ = std::fs::remove_file(path);
    }
    let tracker = &accept.tracker;
    tracker.close();
    shared.cancel.cancel();
    if let Some(sessions) = &sessions {
        sessions.stop_all().await;
    }
    if let Some(api_server) = api_server {
        api_server.abort();
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            "{} connection(s) did not close within {grace:?}; dropping them",
            tracker.len()
        );
    }
    done.cancel();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// Worker `worker`'s thread: its own event loop accepting on `list` until the stop, then driving
/// its sessions through the drain until `done`.
fn worker_thread(accept: Accept, list: Vec<Bound>, worker: usize, done: &CancellationToken) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return warn!("worker {worker}: cannot start its event loop: {e}"),
    };
    runtime.block_on(async {
        let mut loops = tokio::task::JoinSet::new();
        for bound in list {
            match Listener::register(bound) {
                Ok(listener) => {
                    loops.spawn(accept.clone().serve(listener, Some(worker)));
                }
                Err(e) => warn!("worker {worker}: cannot use the listening socket: {e}"),
            }
        }
        while loops.join_next().await.is_some() {}
        done.cancelled().await;
    });
}

/// What every accept loop shares, across workers.
#[derive(Clone)]
struct Accept {
    shared: Arc<Shared>,
    /// `--max-connections`, over all workers.
    permits: Arc<Semaphore>,
    /// Every connection task, for the drain.
    tracker: TaskTracker,
    ids: Arc<AtomicU64>,
    /// Cancelled at the stop: listeners close.
    stop: CancellationToken,
}

impl Accept {
    /// Accepts on `listener` until the stop (or, for inetd's one connection, until it is served).
    async fn serve(self, mut listener: Listener, worker: Option<usize>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok(Some((stream, peer))) => {
                    backoff = MIN_BACKOFF;
                    // Past the limit this loop holds the one client it accepted and takes no
                    // other: the rest wait in the kernel's backlog. (A permit taken before
                    // `accept` would sit idle in one worker while another's clients wait.)
                    let permit = tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return,
                        permit = self.permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                    };
                    let id = self.ids.fetch_add(1, Ordering::Relaxed);
                    let span = info_span!("conn", id, peer = %peer, worker = tracing::field::Empty);
                    if let Some(worker) = worker {
                        span.record("worker", worker);
                    }
                    self.tracker
                        .spawn(session::serve(self.shared.clone(), stream, id, permit).instrument(span));
                }
                Ok(None) => {
                    // inetd handed over one connection: serve it to the end (or until a signal).
                    self.tracker.close();
                    tokio::select! {
                        () = self.stop.cancelled() => {},
                        () = self.tracker.wait() => {},
                    }
                    return;
                }
                Err(e) => {
                    warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {},
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// `--api-listen`: plain HTTP, the API only, until the server stops.
async fn serve_api(bound: Bound, api: axum::Router, cancel: CancellationToken) {
    serve_side("api", bound, cancel, move |req| {
        crate::http::session::api_call(api.clone(), false, req)
    })
    .await;
}

/// `--metrics ADDR`: plain HTTP, `/metrics` only, until the server stops.
async fn serve_metrics(bound: Bound, metrics: Arc<Metrics>, cancel: CancellationToken) {
    serve_side(
        "metrics",
        bound,
        cancel,
        move |req: http::Request<hyper::body::Incoming>| {
            let response = if req.uri().path() == "/metrics" {
                metrics.respond(req.method())
            } else {
                crate::http::web::text_response(
                    http::StatusCode::NOT_FOUND,
                    "404 Not Found: the metrics are at /metrics",
                )
            };
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        },
    )
    .await;
}

/// A side listener (`--api-listen`, `--metrics ADDR`): plain HTTP/1.1 answered by `respond`, each
/// connection given `SIDE_REQUEST_TIMEOUT` for its request head, until the server stops.
async fn serve_side<F, Fut>(what: &'static str, bound: Bound, cancel: CancellationToken, respond: F)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<http::Response<crate::http::web::Body>, std::convert::Infallible>> + Send + 'static,
{
    let mut listener = match Listener::register(bound) {
        Ok(listener) => listener,
        Err(e) => return warn!("cannot use the {what} listening socket: {e}"),
    };
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(Some(accepted)) => accepted,
            Ok(None) => return,
            Err(e) => {
                warn!("{what} accept failed: {e}");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let respond = respond.clone();
        let cancel = cancel.clone();
        tokio::spawn(
            async move {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(SIDE_REQUEST_TIMEOUT);
                let conn = http.serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(respond),
                );
                tokio::select! {
                    _ = conn => {},
                    () = cancel.cancelled() => {},
                }
            }
            .instrument(info_span!("side", listener = what, peer = %peer)),
        );
    }
}

/// A client of a side listener sends its request at once; one that sends nothing is closed after this.
const SIDE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves when `--run-once`, `--timeout` or `--idle-timeout` says the server is done.
async fn lifecycle(
    mut watcher: watch::Receiver<Activity>,
    run_once: bool,
    timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
) {
    if !run_once && timeout.is_none() && idle_timeout.is_none() {
        return std::future::pending().await;
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let now = Instant::now();
        let activity = *watcher.borrow_and_update();
        if run_once && activity.finished > 0 {
            return info!("--run-once: the session ended; exiting");
        }
        let mut wake: Option<Instant> = None;
        if let Some(deadline) = deadline {
            if now >= deadline && activity.open == 0 {
                return info!("--timeout reached; exiting");
            }
            wake = Some(deadline.max(now));
        }
        if let Some(idle) = idle_timeout
            && activity.open == 0
        {
            let due = activity.since + idle;
            if now >= due {
                return info!("--idle-timeout: no session for {idle:?}; exiting");
            }
            wake = Some(wake.map_or(due, |w| w.min(due)));
        }
        let sleep = async {
            match wake {
                Some(at) if at > now => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = watcher.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
            () = sleep => {},
        }
    }
}

/// Each session holds two descriptors; keep some for the listener, logs and recordings.
fn default_max_connections() -> usize {
    let soft =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    (soft.saturating_sub(64) / 2).max(1)
}
