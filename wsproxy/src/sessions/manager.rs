//! The running side of on-demand sessions: reservations, the launch on first connect, clients
//! coming and going, linger, expiry and stop. Records live in the `Registry`; what only this
//! process has (the command, its clients, timers) lives here, one `Runtime` per live session.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::audit::{Audit, Kind};
use super::launcher::{self, Ready, Spec};
use super::registry::{NewSession, Record, Registry, ReserveError, UpdateError};
use super::services::{SecretKind, Service, Services, TargetRule, substitute};
use super::state::{Event, State};
use super::vncpasswd;
use crate::config::Target;
use crate::ops::metrics::Metrics;
use crate::relay::frame::close;
use crate::target::TargetStream;

/// How long an ended session stays visible in the API.
pub const KEEP_ENDED: Duration = Duration::from_secs(600);

pub struct Manager {
    pub services: Services,
    registry: Box<dyn Registry>,
    runtimes: Mutex<HashMap<String, Arc<Runtime>>>,
    /// librebind.so, for `target = "rebind"` services.
    lib: Option<PathBuf>,
    pub audit: Audit,
    tasks: TaskTracker,
    /// Cancelled by `POST /api/v1/shutdown`: the server drains and exits.
    pub shutdown: CancellationToken,
    /// Where runtime directories are made.
    runtime_root: PathBuf,
    /// `--metrics`: sessions by service and state, launch times, refused reservations.
    metrics: Option<Arc<Metrics>>,
}

/// What only this process knows of a live session.
struct Runtime {
    id: String,
    token: String,
    service: usize,
    clients: Mutex<u32>,
    /// Bumped whenever linger starts or ends, so an old linger timer does nothing.
    linger_generation: AtomicU64,
    launch: watch::Sender<Launch>,
    /// Cancelled to stop the session; `stop_reason` says why (and which close code clients get).
    stop: CancellationToken,
    stop_reason: Mutex<Option<(u16, String)>>,
    /// The close code and reason clients get when the session ends.
    end: watch::Sender<Option<(u16, String)>>,
    /// The state the metrics count this session in (`transition` moves it).
    counted: Mutex<State>,
    /// Cancelled once the command is gone and the record is final.
    done: CancellationToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Launch {
    Idle,
    Starting,
    Ready(Target),
    Failed(String),
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownService,
    Forbidden,
    BadOption(String),
    Limit(ReserveError),
}

impl Manager {
    pub fn new(services: Services, registry: Box<dyn Registry>, lib: Option<PathBuf>, audit: Audit) -> Self {
        let runtime_root = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        Manager {
            services,
            registry,
            runtimes: Mutex::default(),
            lib,
            audit,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            runtime_root,
            metrics: None,
        }
    }

    /// Records into `metrics` (`--metrics`), if given.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// `registry.update` for a live session, then the metrics move it to its new state.
    async fn transition<'a>(
        &'a self,
        runtime: &'a Runtime,
        event: Option<Event>,
        change: Box<dyn FnOnce(&mut Record) + Send + 'a>,
    ) -> Result<Record, UpdateError> {
        let updated = self.registry.update(&runtime.id, event, change).await;
        if let (Ok(record), Some(metrics)) = (&updated, &self.metrics) {
            let before = std::mem::replace(
                &mut *runtime
                    .counted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                record.state,
            );
            metrics.ondemand_moved(runtime.service, Some(before), record.state);
        }
        updated
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.services.iter().find(|s| s.name == name)
    }

    fn runtimes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Runtime>>> {
        self.runtimes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn list(&self) -> Vec<Record> {
        self.registry.prune(KEEP_ENDED).await;
        self.registry.list().await
    }

    pub async fn get(&self, id: &str) -> Option<Record> {
        self.registry.get(id).await
    }

    /// Reserves a session of `service` for `user` with the client's `options` (checked against
    /// their patterns; the others take their defaults).
    pub async fn reserve(
        self: &Arc<Self>,
        service_name: &str,
        user: &str,
        groups: &[String],
        admin: bool,
        options: BTreeMap<String, String>,
    ) -> Result<Record, Refusal> {
        let refused = |refusal: Refusal, why: &str| {
            self.audit.reject(service_name, user, why);
            if let Some(metrics) = &self.metrics {
                metrics.ondemand_rejected(&refusal);
            }
            refusal
        };
        let Some(index) = self.services.services.iter().position(|s| s.name == service_name) else {
            return Err(refused(Refusal::UnknownService, "unknown service"));
        };
        let service = &self.services.services[index];
        if !admin && !may_use(service, groups) {
            return Err(refused(Refusal::Forbidden, "not in the service's groups"));
        }
        let mut chosen = BTreeMap::new();
        for (name, rule) in &service.options {
            let value = options.get(name).cloned().unwrap_or_else(|| rule.default.clone());
            if !rule.pattern.is_match(&value) {
                let why = format!("option {name} must match {}", rule.pattern.as_str());
                return Err(refused(Refusal::BadOption(why.clone()), &why));
            }
            chosen.insert(name.clone(), value);
        }
        if let Some(unknown) = options.keys().find(|k| !service.options.contains_key(*k)) {
            let why = format!("service {service_name} has no option {unknown}");
            return Err(refused(Refusal::BadOption(why.clone()), &why));
        }
        let new = NewSession {
            id: random_text(12),
            user: user.to_owned(),
            token: random_text(32),
            secret: service.secret.map(|SecretKind::VncPassword| random_text(8)),
            options: chosen,
            reserve_timeout: self.services.timing.reserve_timeout,
        };
        let record = match self.registry.reserve(service, new).await {
            Ok(record) => record,
            Err(e) => {
                let why = match &e {
                    ReserveError::PerUserLimit { limit } => format!("per-user limit of {limit} reached"),
                    ReserveError::Full { count } => format!("all {count} sessions in use"),
                };
                return Err(refused(Refusal::Limit(e), &why));
            }
        };
        let (launch, _) = watch::channel(Launch::Idle);
        let (end, _) = watch::channel(None);
        let runtime = Arc::new(Runtime {
            id: record.id.clone(),
            token: record.token.clone(),
            service: index,
            clients: Mutex::new(0),
            linger_generation: AtomicU64::new(0),
            launch,
            stop: CancellationToken::new(),
            stop_reason: Mutex::new(None),
            end,
            done: CancellationToken::new(),
            counted: Mutex::new(record.state),
        });
        if let Some(metrics) = &self.metrics {
            metrics.ondemand_moved(index, None, record.state);
        }
        self.runtimes().insert(record.id.clone(), runtime);
        self.audit.session(Kind::Reserve, &record, None);
        info!(
            "session {}: reserved {} #{} for {}",
            record.id, record.service, record.index, record.user
        );
        let manager = self.clone();
        let id = record.id.clone();
        let timeout = self.services.timing.reserve_timeout;
        self.tasks.spawn(async move {
            tokio::time::sleep(timeout).await;
            manager.expire(&id).await;
        });
        Ok(record)
    }

    async fn expire(&self, id: &str) {
        let Some(runtime) = self.runtimes().get(id).cloned() else {
            return;
        };
        let expired = self
            .transition(
                &runtime,
                Some(Event::Expire),
                Box::new(|r| {
                    r.reason = Some("never connected within reserve_timeout".into());
                    r.ended_at = Some(SystemTime::now());
                    r.expires_at = None;
                }),
            )
            .await;
        if let Ok(record) = expired {
            info!("session {id}: expired (never connected)");
            self.audit.session(Kind::Expire, &record, None);
            if let Some(runtime) = self.runtimes().remove(id) {
                runtime.done.cancel();
            }
        }
    }

    /// A WebSocket client with `token`: a lease on its session (launching it on the first
    /// connection), or `None` for a token that names no live session.
    pub async fn attach(self: &Arc<Self>, token: &str, client: Option<IpAddr>) -> Option<Lease> {
        let record = self.registry.by_token(token).await?;
        let runtime = self.runtimes().get(&record.id).cloned()?;
        if runtime.token != token || runtime.stop.is_cancelled() || !record.state.accepts_clients() {
            return None;
        }
        let clients = {
            let mut clients = runtime
                .clients
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *clients += 1;
            *clients
        };
        runtime.linger_generation.fetch_add(1, Ordering::SeqCst);
        let event = match record.state {
            State::Reserved | State::Lingering => Some(Event::Connect),
            _ => None,
        };
        let updated = self
            .transition(
                &runtime,
                event,
                Box::new(move |r| {
                    r.clients = clients;
                    r.expires_at = None;
                }),
            )
            .await;
        let client_text = client.map(|ip| ip.to_string());
        match updated {
            Ok(record) => self.audit.session(Kind::Connect, &record, client_text.as_deref()),
            Err(_) => {
                self.release(&runtime);
                return None;
            }
        }
        if record.state == State::Reserved {
            let manager = self.clone();
            let runtime = runtime.clone();
            self.tasks.spawn(async move { manager.run(runtime).await });
        }
        Some(Lease {
            manager: self.clone(),
            runtime,
            client: client_text,
        })
    }

    /// Launches the command, serves until it exits or is stopped, and records the end.
    async fn run(self: Arc<Self>, runtime: Arc<Runtime>) {
        let service = &self.services.services[runtime.service];
        let grace = self.services.timing.stop_grace;
        runtime.launch.send_replace(Launch::Starting);
        let Some(record) = self.registry.get(&runtime.id).await else {
            return;
        };
        let runtime_dir = self.runtime_root.join(format!("wsproxy-session-{}", runtime.id));
        let spec = match self.prepare(service, &record, &runtime_dir) {
            Ok(spec) => spec,
            Err(reason) => {
                self.failed(&runtime, reason, None).await;
                let _ = std::fs::remove_dir_all(&runtime_dir);
                return;
            }
        };
        self.audit.session(Kind::Launch, &record, None);
        let started = tokio::time::Instant::now();
        let launched = launcher::launch(spec, &runtime.stop, grace).await;
        let mut running = match launched {
            Ok(running) => running,
            Err(failure) => {
                if matches!(failure, launcher::Failure::Stopped) {
                    self.stopped(&runtime, None).await;
                } else {
                    self.failed(&runtime, failure.reason(), failure.exit_code()).await;
                }
                let _ = std::fs::remove_dir_all(&runtime_dir);
                return;
            }
        };
        let took = started.elapsed();
        info!(
            "session {}: listening at {} after {} ms",
            runtime.id,
            running.target,
            took.as_millis()
        );
        if let Some(metrics) = &self.metrics {
            metrics.ondemand_launched(runtime.service, took);
        }
        let ready = self.transition(&runtime, Some(Event::Ready), Box::new(|_| {})).await;
        if let Ok(record) = &ready {
            self.audit.session(Kind::Ready, record, None);
        }
        runtime.launch.send_replace(Launch::Ready(running.target.clone()));
        if self.client_count(&runtime) == 0 {
            // Every client left while it started: linger as if the last one just left.
            self.last_client_left(&runtime).await;
        }
        tokio::select! {
            status = running.wait() => {
                let exit = status.ok();
                let reason = exit.map_or_else(|| "exited".to_owned(), |s| format!("exited {}", launcher::describe(s)));
                runtime.end.send_replace(Some((close::INTERNAL_ERROR, reason.clone())));
                running.stop(grace).await;
                self.finish(&runtime, Event::Exited, reason, exit.map(launcher::code)).await;
            }
            () = runtime.stop.cancelled() => {
                let (code, reason) = self.stop_reason(&runtime);
                runtime.end.send_replace(Some((code, reason.clone())));
                running.stop(grace).await;
                self.finish(&runtime, Event::Stop, reason, None).await;
            }
        }
        let _ = std::fs::remove_dir_all(&runtime_dir);
    }

    /// The command line, environment and readiness rule of one session; makes its runtime
    /// directory (0700) and secret file (0600).
    fn prepare(&self, service: &Service, record: &Record, dir: &std::path::Path) -> Result<Spec, String> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the runtime directory {}: {e}", dir.display()))?;
        let secret_file = dir.join("passwd");
        if let Some(secret) = &record.secret {
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&secret_file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &vncpasswd::obfuscate(secret)))
                .map_err(|e| format!("cannot write the secret file: {e}"))?;
        }
        let port = service.port.as_ref().map(|p| p.eval(record.index));
        let display = service.display.as_ref().map(|d| d.eval(record.index));
        let value = |name: &str| -> String {
            match name {
                "index" => record.index.to_string(),
                "port" => port.map(|p| p.to_string()).unwrap_or_default(),
                "display" => display.map(|d| d.to_string()).unwrap_or_default(),
                "session" => record.id.clone(),
                "user" => record.user.clone(),
                "runtime_dir" => dir.display().to_string(),
                "secret_file" => secret_file.display().to_string(),
                other => other
                    .strip_prefix("opt.")
                    .and_then(|o| record.options.get(o))
                    .cloned()
                    .unwrap_or_default(),
            }
        };
        let argv: Vec<String> = service.command.iter().map(|arg| substitute(arg, value)).collect();
        let ready = match &service.target {
            TargetRule::Rebind => {
                let lib = self
                    .lib
                    .clone()
                    .ok_or("librebind.so was not found (build it with make)")?;
                let port = port
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or("the port is not a valid port number")?;
                Ready::Rebind { lib, port }
            }
            TargetRule::Tcp(text) => {
                let text = substitute(text, value);
                match crate::config::parse_target(&text)? {
                    Target::Tcp { host, port } => Ready::Tcp { host, port },
                    other => return Err(format!("target {other} is not HOST:PORT")),
                }
            }
            TargetRule::Unix(path) => Ready::Unix(PathBuf::from(substitute(path, value))),
            TargetRule::Announce(regex) => Ready::Announce(regex.clone()),
        };
        let mut env = vec![
            ("WSPROXY_SESSION_ID".to_owned(), record.id.clone()),
            ("WSPROXY_USER".to_owned(), record.user.clone()),
        ];
        if let Some(secret) = &record.secret {
            env.push(("WSPROXY_SECRET".into(), secret.clone()));
        }
        if service.options_env {
            let json = serde_json::to_string(&record.options).unwrap_or_default();
            env.push(("WSPROXY_OPTIONS".into(), json));
        }
        Ok(Spec {
            session: record.id.clone(),
            argv,
            env,
            ready,
            start_timeout: self.services.timing.start_timeout,
        })
    }

    async fn failed(&self, runtime: &Runtime, reason: String, exit_code: Option<i32>) {
        warn!("session {}: failed: {reason}", runtime.id);
        runtime.launch.send_replace(Launch::Failed(reason.clone()));
        runtime.end.send_replace(Some((close::INTERNAL_ERROR, reason.clone())));
        let event = if exit_code.is_some() {
            Event::Exited
        } else {
            Event::LaunchFailed
        };
        self.finish(runtime, event, reason, exit_code).await;
    }

    async fn stopped(&self, runtime: &Runtime, exit_code: Option<i32>) {
        let (code, reason) = self.stop_reason(runtime);
        runtime.launch.send_replace(Launch::Failed(reason.clone()));
        runtime.end.send_replace(Some((code, reason.clone())));
        self.finish(runtime, Event::Stop, reason, exit_code).await;
    }

    /// Records the end, frees the index (in the registry) and forgets the runtime.
    async fn finish(&self, runtime: &Runtime, event: Event, reason: String, exit_code: Option<i32>) {
        let logged = reason.clone();
        let ended = self
            .transition(
                runtime,
                Some(event),
                Box::new(move |r| {
                    r.reason = Some(reason);
                    r.exit_code = exit_code;
                    r.ended_at = Some(SystemTime::now());
                    r.expires_at = None;
                }),
            )
            .await;
        match ended {
            Ok(record) => {
                info!("session {}: {:?}: {logged}", runtime.id, record.state);
                let kind = if record.state == State::Failed {
                    Kind::Fail
                } else {
                    Kind::Stop
                };
                self.audit.session(kind, &record, None);
            }
            Err(e) => warn!("session {}: cannot record its end ({e:?})", runtime.id),
        }
        self.runtimes().remove(&runtime.id);
        runtime.done.cancel();
    }

    fn stop_reason(&self, runtime: &Runtime) -> (u16, String) {
        runtime
            .stop_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or((close::GOING_AWAY, "stopped".into()))
    }

    fn client_count(&self, runtime: &Runtime) -> u32 {
        *runtime
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops a session (its clients get 1001 with `reason`) and waits until it is gone.
    pub async fn stop(&self, id: &str, reason: &str) -> Result<(), UpdateError> {
        let runtime = self.runtimes().get(id).cloned();
        let Some(runtime) = runtime else {
            return match self.registry.get(id).await {
                Some(_) => Ok(()),
                None => Err(UpdateError::NotFound),
            };
        };
        *runtime
            .stop_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((close::GOING_AWAY, reason.to_owned()));
        runtime.stop.cancel();
        let launching = !matches!(*runtime.launch.borrow(), Launch::Idle);
        if !launching {
            // Reserved, never launched: nothing runs, the record ends here.
            runtime.launch.send_replace(Launch::Failed(reason.to_owned()));
            self.finish(&runtime, Event::Stop, reason.to_owned(), None).await;
        }
        let grace = self.services.timing.stop_grace + Duration::from_secs(5);
        let _ = tokio::time::timeout(grace, runtime.done.cancelled()).await;
        Ok(())
    }

    /// Stops every session (server shutdown).
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.runtimes().keys().cloned().collect();
        let stops = ids.iter().map(|id| self.stop(id, "server shutting down"));
        for stop in stops {
            let _ = stop.await;
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
    }

    /// A client left: the last one starts linger.
    fn release(self: &Arc<Self>, runtime: &Arc<Runtime>) {
        let clients = {
            let mut clients = runtime
                .clients
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *clients = clients.saturating_sub(1);
            *clients
        };
        let manager = self.clone();
        let runtime = runtime.clone();
        self.tasks.spawn(async move {
            let _ = manager
                .transition(&runtime, None, Box::new(move |r| r.clients = clients))
                .await;
            if clients == 0 && matches!(*runtime.launch.borrow(), Launch::Ready(_)) {
                manager.last_client_left(&runtime).await;
            }
        });
    }

    async fn last_client_left(self: &Arc<Self>, runtime: &Arc<Runtime>) {
        let Ok(_) = self
            .transition(runtime, Some(Event::LastClientLeft), Box::new(|_| {}))
            .await
        else {
            return;
        };
        let generation = runtime.linger_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let linger = self.services.timing.linger;
        tokio::time::sleep(linger).await;
        if runtime.linger_generation.load(Ordering::SeqCst) == generation && self.client_count(runtime) == 0 {
            let _ = self.stop(&runtime.id, "the last client left").await;
        }
    }
}

/// Whether a user of `groups` may reserve `service`.
pub fn may_use(service: &Service, groups: &[String]) -> bool {
    service
        .groups
        .as_ref()
        .is_none_or(|allowed| allowed.iter().any(|g| groups.contains(g)))
}

/// A client's hold on a session: the way to its target, and the end signal.
pub struct Lease {
    manager: Arc<Manager>,
    runtime: Arc<Runtime>,
    client: Option<String>,
}

impl Lease {
    pub fn session(&self) -> &str {
        &self.runtime.id
    }

    /// The service says `share = true`: the session's clients share one target connection.
    pub fn shared(&self) -> bool {
        self.manager.services.services[self.runtime.service].share
    }

    /// Waits for the launch (shared by every client of the session) and connects to the target;
    /// the error is the reason clients are told (`exited with status 1`, `did not listen ...`).
    pub async fn connect(&self) -> Result<TargetStream, String> {
        let mut launch = self.runtime.launch.subscribe();
        let state = launch
            .wait_for(|l| matches!(l, Launch::Ready(_) | Launch::Failed(_)))
            .await
            .map(|l| l.clone())
            .map_err(|_| "the session ended".to_owned())?;
        match state {
            Launch::Ready(target) => crate::target::connect(&target, None, None)
                .await
                .map_err(|e| format!("cannot connect to the session's command: {e}")),
            Launch::Failed(reason) => Err(reason),
            Launch::Idle | Launch::Starting => Err("the session ended".into()),
        }
    }

    /// Resolves when the session ends, with the close code and reason its clients get.
    pub async fn ended(&self) -> (u16, String) {
        let mut end = self.runtime.end.subscribe();
        match end.wait_for(Option::is_some).await {
            Ok(end) => end.clone().unwrap_or((close::GOING_AWAY, "session ended".into())),
            Err(_) => (close::GOING_AWAY, "session ended".into()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let manager = self.manager.clone();
        let runtime = self.runtime.clone();
        let client = self.client.take();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Some(record) = manager.registry.get(&runtime.id).await {
                    manager.audit.session(Kind::Disconnect, &record, client.as_deref());
                }
            });
        }
        self.manager.release(&self.runtime);
    }
}

/// `len` random characters from an alphabet with no look-alikes (tokens, ids, VNC passwords).
pub fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut byte = [0u8; 1];
        if ring::rand::SecureRandom::fill(&rng, &mut byte).is_err() {
            continue;
        }
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        if usize::from(byte[0]) < limit {
            out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    out
}
