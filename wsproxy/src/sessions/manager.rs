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

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::audit::{Audit, Kind};
use super::cluster::{self, Cluster, Forward};
use super::launcher::{self, Ready, Spec};
use super::registry::{Change, NewSession, Record, Registry, ReserveError, StoreError, UpdateError};
use super::services::{Host, SecretKind, Service, Services, TargetRule, substitute};
use super::state::{Event, State};
use super::vncpasswd;
use crate::config::Target;
use crate::ops::metrics::Metrics;
use crate::relay::frame::close;
use crate::target::{TargetStream, TargetTls};

/// How long an ended session stays visible in the API.
pub const KEEP_ENDED: Duration = Duration::from_secs(600);

pub struct Manager {
    /// The services file as last (re)loaded: new reservations use it; each live session keeps the
    /// one it was reserved under.
    services: ArcSwap<Services>,
    registry: Arc<dyn Registry>,
    /// With a shared store: this instance among the others.
    cluster: Option<Arc<Cluster>>,
    runtimes: Mutex<HashMap<String, Arc<Runtime>>>,
    /// librebind.so, for `target = "rebind"` services.
    lib: Option<PathBuf>,
    pub audit: Audit,
    tasks: TaskTracker,
    /// Cancelled by `POST /api/v1/shutdown`: the server drains and exits.
    pub shutdown: CancellationToken,
    /// Cancelled once every session is stopped at shutdown: the instance leaves the shared store
    /// and its timers end.
    leaving: CancellationToken,
    /// Where runtime directories are made.
    runtime_root: PathBuf,
    /// `--metrics`: sessions by service and state, launch times, refused reservations.
    metrics: Option<Arc<Metrics>>,
    /// `--share`: every session's clients share one target connection, not only a `share = true`
    /// service's.
    share_all: bool,
    /// What `wss://` targets trust (`--target-cafile`).
    target_tls: TargetTls,
}

/// What only this process knows of a live session.
struct Runtime {
    id: String,
    token: String,
    /// The services in force when it was reserved, and its service's index in them.
    services: Arc<Services>,
    service: usize,
    /// Its clients here, and whether it still takes new ones.
    clients: Mutex<Seats>,
    /// Held while the clients, linger and end are written to the record, so the record's count,
    /// its state and the seats here change together and in order: a client attaching while the
    /// last one leaves, linger runs out or the command dies is either counted before (and the
    /// other side sees it) or refused, never counted by a session that has ended.
    book: tokio::sync::Mutex<()>,
    /// Bumped whenever linger starts or ends, so an old linger timer does nothing.
    linger_generation: AtomicU64,
    launch: watch::Sender<Launch>,
    /// Cancelled to stop the session; `stop_reason` says why (and which close code clients get).
    stop: CancellationToken,
    stop_reason: Mutex<Option<(u16, String)>>,
    /// The close code and reason clients get when the session ends.
    end: watch::Sender<Option<(u16, String)>>,
    /// The state the metrics count this session in (`transition` moves it); `None` while it is
    /// not counted here (adopted from another instance's reservation).
    counted: Mutex<Option<State>>,
    /// Cancelled once the command is gone and the record is final.
    done: CancellationToken,
}

#[derive(Debug, Default)]
struct Seats {
    count: u32,
    /// The session ends (stop, the end of linger, its command exited, expiry): no new client.
    closed: bool,
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
    /// The shared store could not be reached.
    Unavailable(String),
}

/// Why a WebSocket client gets no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// No live session has the token.
    Unknown,
    /// The session is ending (stopped, lingered out, or its command exited): reserve another.
    Ending,
    /// The shared store could not be reached.
    Unavailable(String),
}

impl Manager {
    pub fn new(services: Services, registry: Arc<dyn Registry>, lib: Option<PathBuf>, audit: Audit) -> Self {
        let runtime_root = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        Manager {
            services: ArcSwap::from_pointee(services),
            registry,
            cluster: None,
            runtimes: Mutex::default(),
            lib,
            audit,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            leaving: CancellationToken::new(),
            runtime_root,
            metrics: None,
            share_all: false,
            target_tls: TargetTls::default(),
        }
    }

    /// With a shared store: this instance among the others.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Shares the pool with the other instances of `cluster`'s store.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Records into `metrics` (`--metrics`), if given.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// What the sessions' `wss://` targets trust: `--target-cafile`'s CAs (`config` only; a
    /// session's target is TLS only when it says `wss://`).
    pub fn with_target_ca(mut self, config: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.target_tls = TargetTls { every: false, config };
        self
    }

    /// `--share`: every session is a shared console, whatever its service says.
    pub fn with_share_all(mut self, all: bool) -> Self {
        self.share_all = all;
        self
    }

    /// Whether the clients of `service`'s sessions share one target connection (`crate::share`):
    /// then the instance that runs a session fans it out, and every other instance forwards its
    /// clients there, never straight to the command (which may accept one connection only).
    pub fn shares_consoles(&self, service: &Service) -> bool {
        self.share_all || service.share
    }

    /// `registry.update` for a live session, then the metrics move it to its new state.
    async fn transition<'a>(
        &'a self,
        runtime: &'a Runtime,
        event: Option<Event>,
        change: Change<'a>,
    ) -> Result<Record, UpdateError> {
        let updated = self.registry.update(&runtime.id, event, change).await;
        if let (Ok(record), Some(metrics)) = (&updated, &self.metrics) {
            let before = runtime
                .counted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .replace(record.state);
            metrics.ondemand_moved(&record.service, before, record.state);
        }
        updated
    }

    /// Forgets a runtime that another instance's launch made useless here.
    fn forget(&self, runtime: &Runtime) {
        self.runtimes().remove(&runtime.id);
        let counted = runtime
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let (Some(metrics), Some(state)) = (&self.metrics, counted) {
            metrics.ondemand_gone(&runtime.services.services[runtime.service].name, state);
        }
        runtime.done.cancel();
    }

    /// The services as last (re)loaded.
    pub fn services(&self) -> Arc<Services> {
        self.services.load_full()
    }

    /// A reload: new reservations use `services`; live sessions keep what they were reserved under.
    /// Refused (nothing changes) when a service needs librebind.so and none was found at start.
    pub fn replace_services(&self, services: Services) -> Result<(), String> {
        let needs_lib = services.services.iter().any(|s| matches!(s.target, TargetRule::Rebind));
        if needs_lib && self.lib.is_none() {
            return Err(
                "a service now has target = \"rebind\", but librebind.so was not looked for at start: restart wsproxy"
                    .into(),
            );
        }
        self.services.store(Arc::new(services));
        Ok(())
    }

    pub fn service(&self, name: &str) -> Option<Service> {
        self.services().services.iter().find(|s| s.name == name).cloned()
    }

    fn runtimes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Runtime>>> {
        self.runtimes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn list(&self) -> Result<Vec<Record>, StoreError> {
        self.registry.prune(KEEP_ENDED).await;
        self.registry.list().await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
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
        let services = self.services();
        let Some(index) = services.services.iter().position(|s| s.name == service_name) else {
            return Err(refused(Refusal::UnknownService, "unknown service"));
        };
        let service = &services.services[index];
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
            reserve_timeout: services.timing.reserve_timeout,
        };
        if self.cluster.is_none() {
            // Sessions long ended go even when nobody lists them (a shared store's reap does it
            // there).
            self.registry.prune(KEEP_ENDED).await;
        }
        let record = match self.registry.reserve(service, new).await {
            Ok(record) => record,
            Err(e) => {
                let why = match &e {
                    ReserveError::PerUserLimit { limit } => format!("per-user limit of {limit} reached"),
                    ReserveError::Full { count } => format!("all {count} sessions in use"),
                    ReserveError::Store(StoreError(why)) => {
                        warn!("cannot reserve a session: {why}");
                        return Err(refused(Refusal::Unavailable(why.clone()), "the store is unavailable"));
                    }
                };
                return Err(refused(Refusal::Limit(e), &why));
            }
        };
        let runtime = Runtime::new(&record, services.clone(), index, Some(record.state));
        if let Some(metrics) = &self.metrics {
            metrics.ondemand_moved(service_name, None, record.state);
        }
        self.runtimes().insert(record.id.clone(), runtime);
        self.audit.session(Kind::Reserve, &record, None);
        info!(
            "session {}: reserved {} #{} for {}",
            record.id, record.service, record.index, record.user
        );
        let manager = self.clone();
        let id = record.id.clone();
        let timeout = services.timing.reserve_timeout;
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(timeout) => manager.expire(&id).await,
                // Shutting down: a shared store's other instances expire it.
                () = manager.leaving.cancelled() => {}
            }
        });
        Ok(record)
    }

    async fn expire(&self, id: &str) {
        let Some(runtime) = self.runtimes().get(id).cloned() else {
            return;
        };
        let book = runtime.book.lock().await;
        let expired = self.transition(&runtime, Some(Event::Expire), Box::new(expiring)).await;
        if expired.is_ok() {
            runtime.seats().closed = true;
        }
        drop(book);
        match expired {
            Ok(record) => {
                info!("session {id}: expired (never connected)");
                self.audit.session(Kind::Expire, &record, None);
                if let Some(runtime) = self.runtimes().remove(id) {
                    runtime.done.cancel();
                }
            }
            // Launched through another instance: nothing of it is here.
            Err(UpdateError::Invalid(_)) if matches!(*runtime.launch.borrow(), Launch::Idle) => self.forget(&runtime),
            Err(_) => {}
        }
    }

    /// A WebSocket client with `token`: a lease on its session (launching it on the first
    /// connection), or why there is none.
    pub async fn attach(self: &Arc<Self>, token: &str, client: Option<IpAddr>) -> Result<Lease, AttachError> {
        let record = self
            .registry
            .by_token(token)
            .await
            .map_err(|StoreError(why)| AttachError::Unavailable(why))?
            .filter(|r| r.state.accepts_clients())
            .ok_or(AttachError::Unknown)?;
        let me = self.cluster.as_ref().map(|c| c.id.clone());
        let local = self.runtimes().get(&record.id).cloned();
        let runtime = match local {
            Some(runtime) => runtime,
            None => {
                // Only a shared store has sessions this instance has no runtime for.
                if me.is_none() {
                    return Err(AttachError::Unknown);
                }
                if let Some(owner) = record.owner.as_deref().filter(|o| Some(*o) != me.as_deref()) {
                    return self.remote(&record, owner, client).await;
                }
                let services = self.services();
                let index = services
                    .services
                    .iter()
                    .position(|s| s.name == record.service)
                    .ok_or(AttachError::Unknown)?;
                let adopted = Runtime::new(&record, services, index, None);
                self.runtimes().entry(record.id.clone()).or_insert(adopted).clone()
            }
        };
        if runtime.token != token {
            return Err(AttachError::Unknown);
        }
        let book = runtime.book.lock().await;
        let clients = {
            let mut seats = runtime.seats();
            if seats.closed || runtime.stop.is_cancelled() {
                return Err(AttachError::Ending);
            }
            seats.count += 1;
            seats.count
        };
        // From here on the lease (dropped on every way out) gives the seat back.
        let mut lease = Lease {
            manager: self.clone(),
            via: Via::Local(runtime.clone()),
            client: None,
            seat: true,
            connected: false,
        };
        runtime.linger_generation.fetch_add(1, Ordering::SeqCst);
        let claim = me.clone();
        let updated = self
            .transition(
                &runtime,
                Some(Event::Connect),
                Box::new(move |r| {
                    r.clients = clients;
                    r.expires_at = None;
                    if r.owner.is_none() {
                        r.owner.clone_from(&claim);
                    }
                }),
            )
            .await;
        let client_text = client.map(|ip| ip.to_string());
        let record = match updated {
            Ok(record) => record,
            Err(e) => {
                drop(book);
                return Err(match e {
                    UpdateError::Store(StoreError(why)) => AttachError::Unavailable(why),
                    UpdateError::Invalid(_) => AttachError::Ending,
                    UpdateError::NotFound => AttachError::Unknown,
                });
            }
        };
        if record.owner != me {
            // Another instance launched it first: its clients go there.
            if let Some(owner) = record.owner.clone() {
                lease.seat = false;
                runtime.seats().count -= 1;
                drop(book);
                drop(lease);
                self.forget(&runtime);
                return self.remote(&record, &owner, client).await;
            }
        }
        if runtime.seats().closed || runtime.stop.is_cancelled() {
            // Stopped or its command died meanwhile: the end writes no clients.
            drop(book);
            return Err(AttachError::Ending);
        }
        drop(book);
        self.audit.session(Kind::Connect, &record, client_text.as_deref());
        lease.client = client_text;
        lease.connected = true;
        let first = runtime.launch.send_if_modified(|launch| {
            let idle = *launch == Launch::Idle;
            if idle {
                *launch = Launch::Starting;
            }
            idle
        });
        if first {
            let manager = self.clone();
            let runtime = runtime.clone();
            self.tasks.spawn(async move { manager.run(runtime).await });
        }
        Ok(lease)
    }

    /// Whether `record`'s session is a shared console by this instance's services (its owner
    /// does not publish a shared console's `direct` address either; this guards a store written by
    /// an instance that did).
    fn shared_session(&self, record: &Record) -> bool {
        self.share_all
            || self
                .services()
                .services
                .iter()
                .any(|s| s.name == record.service && s.share)
    }

    /// A lease on a session another instance runs: its clients are forwarded there, or relayed
    /// straight to the host it runs on when the record says where (never a shared console's).
    async fn remote(
        self: &Arc<Self>,
        record: &Record,
        owner: &str,
        client: Option<IpAddr>,
    ) -> Result<Lease, AttachError> {
        let cluster = self.cluster.as_ref().ok_or(AttachError::Unknown)?;
        let unavailable = |StoreError(why)| AttachError::Unavailable(why);
        if let Some(target) = record.direct.clone().filter(|_| !self.shared_session(record)) {
            // On another host: relayed from here, counted in the record for the owner's linger.
            let me = cluster.id.clone();
            let counted = self
                .registry
                .update(
                    &record.id,
                    Some(Event::Connect),
                    Box::new(move |r| *r.remote_clients.entry(me.clone()).or_default() += 1),
                )
                .await
                .map_err(|e| match e {
                    UpdateError::Store(StoreError(why)) => AttachError::Unavailable(why),
                    _ => AttachError::Unknown,
                })?;
            self.audit
                .session(Kind::Connect, &counted, client.map(|ip| ip.to_string()).as_deref());
            return Ok(Lease {
                manager: self.clone(),
                via: Via::Direct {
                    session: record.id.clone(),
                    target,
                },
                client: client.map(|ip| ip.to_string()),
                seat: false,
                connected: true,
            });
        }
        // An owner whose lease ran out is gone; its sessions are about to be marked failed.
        let addr = cluster
            .address(owner)
            .await
            .map_err(unavailable)?
            .ok_or(AttachError::Unknown)?;
        let secret = cluster.secret().await.map_err(unavailable)?;
        Ok(Lease {
            manager: self.clone(),
            via: Via::Remote {
                session: record.id.clone(),
                forward: Forward {
                    addr,
                    token: record.token.clone(),
                    secret,
                },
            },
            client: client.map(|ip| ip.to_string()),
            seat: false,
            connected: true,
        })
    }

    /// Launches the command, serves until it exits or is stopped, and records the end.
    async fn run(self: Arc<Self>, runtime: Arc<Runtime>) {
        let service = &runtime.services.services[runtime.service];
        let grace = runtime.services.timing.stop_grace;
        runtime.launch.send_replace(Launch::Starting);
        let record = match self.registry.get(&runtime.id).await {
            Ok(Some(record)) => record,
            Ok(None) => return self.failed(&runtime, "the session's record is gone".into(), None).await,
            Err(StoreError(why)) => return self.failed(&runtime, why, None).await,
        };
        let runtime_dir = self.runtime_root.join(format!("wsproxy-session-{}", runtime.id));
        let started = tokio::time::Instant::now();
        // A launch that fails before listening on one host is tried once more on the next.
        let mut failed_on: Option<String> = None;
        let (mut running, record) = loop {
            let host = match self.place(service, failed_on.as_deref()).await {
                Ok(host) => host,
                Err(reason) => return self.failed(&runtime, reason, None).await,
            };
            let mut record = record.clone();
            if let Some(host) = &host {
                let name = host.name.clone();
                if let Ok(placed) = self
                    .transition(&runtime, None, Box::new(move |r| r.host = Some(name.clone())))
                    .await
                {
                    record = placed;
                }
                record.host = Some(host.name.clone());
            }
            let _ = std::fs::remove_dir_all(&runtime_dir);
            let start_timeout = runtime.services.timing.start_timeout;
            let spec = match self.prepare(service, start_timeout, &record, host.as_ref(), &runtime_dir) {
                Ok(spec) => spec,
                Err(reason) => {
                    self.failed(&runtime, reason, None).await;
                    let _ = std::fs::remove_dir_all(&runtime_dir);
                    return;
                }
            };
            self.audit.session(Kind::Launch, &record, None);
            let failure = match launcher::launch(spec, &runtime.stop, grace).await {
                Ok(running) => break (running, record),
                Err(launcher::Failure::Stopped) => {
                    self.stopped(&runtime, None).await;
                    let _ = std::fs::remove_dir_all(&runtime_dir);
                    return;
                }
                Err(failure) => failure,
            };
            match host {
                Some(host) if failed_on.is_none() && service.hosts.len() > 1 => {
                    warn!(
                        "session {}: {} on host {}; trying the next host",
                        runtime.id,
                        failure.reason(),
                        host.name
                    );
                    failed_on = Some(host.name);
                }
                _ => {
                    self.failed(&runtime, failure.reason(), failure.exit_code()).await;
                    let _ = std::fs::remove_dir_all(&runtime_dir);
                    return;
                }
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
            metrics.ondemand_launched(&service.name, took);
        }
        let ready = self.transition(&runtime, Some(Event::Ready), Box::new(|_| {})).await;
        if let Ok(record) = &ready {
            self.audit.session(Kind::Ready, record, None);
        }
        if let Target::Tcp { host, port } = &running.target {
            let address = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            self.registry.publish_target(&runtime.token, &address).await;
            if record.host.is_some() && !service.launcher.is_empty() && !self.shares_consoles(service) {
                // On another host: reachable from every instance, which relay to it directly
                // (not a shared console's: this instance fans it out, so its clients come here).
                let direct = address.clone();
                let _ = self
                    .transition(&runtime, None, Box::new(move |r| r.direct = Some(direct.clone())))
                    .await;
            }
        }
        runtime.launch.send_replace(Launch::Ready(running.target.clone()));
        {
            let _book = runtime.book.lock().await;
            if self.client_count(&runtime) == 0 {
                // Every client left while it started: linger as if the last one just left.
                self.start_linger(&runtime).await;
            }
        }
        tokio::select! {
            status = running.wait() => {
                // From now on nobody attaches: the command is gone.
                runtime.seats().closed = true;
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

    /// Weighted least-sessions: the host of `service` with the fewest live sessions (of every
    /// service) per unit of weight, skipping drained hosts (weight 0) and `skip`; `None` for a
    /// service without hosts.
    async fn place(&self, service: &Service, skip: Option<&str>) -> Result<Option<Host>, String> {
        if service.hosts.is_empty() {
            return Ok(None);
        }
        let weights = self.registry.weights().await.map_err(|StoreError(why)| why)?;
        let records = self.registry.list().await.map_err(|StoreError(why)| why)?;
        let load = |name: &str| {
            records
                .iter()
                .filter(|r| !r.state.is_ended() && r.host.as_deref() == Some(name))
                .count() as u64
        };
        service
            .hosts
            .iter()
            .map(|h| (h, u64::from(weights.get(&h.name).copied().unwrap_or(h.weight))))
            .filter(|(h, weight)| *weight > 0 && skip != Some(h.name.as_str()))
            .min_by(|(a, wa), (b, wb)| (load(&a.name) * wb).cmp(&(load(&b.name) * wa)))
            .map(|(h, _)| Some(h.clone()))
            .ok_or_else(|| {
                format!(
                    "no host of service {} takes new sessions (drained: weight 0)",
                    service.name
                )
            })
    }

    /// The host weights as the services file gives them, changed by `PATCH /api/v1/hosts/NAME`.
    pub async fn hosts(&self) -> Result<Vec<(Host, Vec<String>, Vec<Record>)>, StoreError> {
        let weights = self.registry.weights().await?;
        let records = self.registry.list().await?;
        let mut hosts: Vec<(Host, Vec<String>, Vec<Record>)> = Vec::new();
        let services = self.services();
        for service in &services.services {
            for host in &service.hosts {
                match hosts.iter_mut().find(|(h, _, _)| h.name == host.name) {
                    Some((_, services, _)) => services.push(service.name.clone()),
                    None => {
                        let mut host = host.clone();
                        host.weight = weights.get(&host.name).copied().unwrap_or(host.weight);
                        let live = records
                            .iter()
                            .filter(|r| !r.state.is_ended() && r.host.as_deref() == Some(host.name.as_str()))
                            .cloned()
                            .collect();
                        hosts.push((host, vec![service.name.clone()], live));
                    }
                }
            }
        }
        Ok(hosts)
    }

    /// Changes a host's weight for every instance of the store; `NotFound` for an unknown host.
    pub async fn set_weight(&self, name: &str, weight: u32) -> Result<(), UpdateError> {
        let known = self
            .services()
            .services
            .iter()
            .any(|s| s.hosts.iter().any(|h| h.name == name));
        if !known {
            return Err(UpdateError::NotFound);
        }
        self.registry.set_weight(name, weight).await?;
        info!("host {name}: weight {weight}");
        Ok(())
    }

    /// The command line, environment and readiness rule of one session; makes its runtime
    /// directory (0700) and secret file (0600).
    fn prepare(
        &self,
        service: &Service,
        start_timeout: Duration,
        record: &Record,
        host: Option<&Host>,
        dir: &std::path::Path,
    ) -> Result<Spec, String> {
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
                "host" => host.map(|h| h.name.clone()).unwrap_or_default(),
                "address" => host.map(|h| h.address.clone()).unwrap_or_default(),
                other => other
                    .strip_prefix("opt.")
                    .and_then(|o| record.options.get(o))
                    .cloned()
                    .unwrap_or_default(),
            }
        };
        // Through the launcher (`ssh ... {address} --`) when the service has one.
        let argv: Vec<String> = service
            .launcher
            .iter()
            .chain(&service.command)
            .map(|arg| substitute(arg, value))
            .collect();
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
                    Target::WebSocket(ws) => Ready::WebSocket(ws),
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
            start_timeout,
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
        let book = runtime.book.lock().await;
        runtime.seats().closed = true;
        // Its clients are told it ended and go; an ended session has none.
        let ended = self
            .transition(
                runtime,
                Some(event),
                Box::new(move |r| {
                    r.reason = Some(reason.clone());
                    r.exit_code = exit_code;
                    r.ended_at = Some(SystemTime::now());
                    r.expires_at = None;
                    r.clients = 0;
                    r.remote_clients.clear();
                }),
            )
            .await;
        drop(book);
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
        runtime.seats().count
    }

    /// Stops a session (its clients get 1001 with `reason`) and waits until it is gone.
    pub async fn stop(&self, id: &str, reason: &str) -> Result<(), UpdateError> {
        let runtime = self.runtimes().get(id).cloned();
        let Some(runtime) = runtime else {
            return self.stop_elsewhere(id, reason).await;
        };
        *runtime
            .stop_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((close::GOING_AWAY, reason.to_owned()));
        runtime.seats().closed = true;
        runtime.stop.cancel();
        let launching = !matches!(*runtime.launch.borrow(), Launch::Idle);
        if !launching {
            // Reserved, never launched: nothing runs, the record ends here.
            runtime.launch.send_replace(Launch::Failed(reason.to_owned()));
            self.finish(&runtime, Event::Stop, reason.to_owned(), None).await;
        }
        let grace = runtime.services.timing.stop_grace + Duration::from_secs(5);
        let _ = tokio::time::timeout(grace, runtime.done.cancelled()).await;
        Ok(())
    }

    /// Stops a session this instance has no runtime for: a reservation nobody launched ends here;
    /// one another instance runs gets a stop request, which its owner carries out.
    async fn stop_elsewhere(&self, id: &str, reason: &str) -> Result<(), UpdateError> {
        let record = self.registry.get(id).await?.ok_or(UpdateError::NotFound)?;
        if record.state.is_ended() {
            return Ok(());
        }
        if record.state == State::Reserved && record.owner.is_none() {
            let why = reason.to_owned();
            let stopped = self
                .registry
                .update(
                    id,
                    Some(Event::Stop),
                    Box::new(move |r| {
                        r.reason = Some(why.clone());
                        r.ended_at = Some(SystemTime::now());
                        r.expires_at = None;
                    }),
                )
                .await;
            match stopped {
                Ok(record) => {
                    self.audit.session(Kind::Stop, &record, None);
                    return Ok(());
                }
                // Launched meanwhile: ask its owner, below.
                Err(UpdateError::Invalid(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let why = reason.to_owned();
        self.registry
            .update(id, None, Box::new(move |r| r.stop_request = Some(why.clone())))
            .await?;
        // The owner notices within a sync tick, then stops the command within its grace.
        let deadline = tokio::time::Instant::now() + self.services().timing.stop_grace + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if self.registry.get(id).await?.is_none_or(|r| r.state.is_ended()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// With a shared store: renews this instance's lease, carries out what other instances asked
    /// of its sessions, forgets what others launched, and marks sessions of lost instances failed.
    /// Runs until the server stops.
    pub fn start_cluster(self: &Arc<Self>, advertise: String) {
        let stopping = self.leaving.clone();
        let Some(cluster) = self.cluster.clone() else { return };
        let manager = self.clone();
        info!(
            "sessions: instance {} in the shared store, forwarding at {advertise}",
            cluster.id
        );
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(SYNC);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut renewed = tokio::time::Instant::now() - cluster::RENEW;
            let mut store_down = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {},
                    () = stopping.cancelled() => break,
                }
                let mut result = Ok(());
                if renewed.elapsed() >= cluster::RENEW {
                    renewed = tokio::time::Instant::now();
                    result = cluster.renew(&advertise).await;
                    if result.is_ok() {
                        result = manager.reap(&cluster).await;
                    }
                }
                if result.is_ok() {
                    result = manager.sync(&cluster).await;
                }
                match result {
                    Err(StoreError(why)) if !store_down => {
                        store_down = true;
                        warn!("sessions: the shared store is unavailable ({why}); running sessions go on");
                    }
                    Ok(()) if store_down => {
                        store_down = false;
                        info!("sessions: the shared store is back");
                    }
                    _ => {}
                }
            }
            cluster.leave().await;
        });
    }

    /// One look at this instance's runtimes against their records.
    async fn sync(self: &Arc<Self>, cluster: &Cluster) -> Result<(), StoreError> {
        let runtimes: Vec<Arc<Runtime>> = self.runtimes().values().cloned().collect();
        for runtime in runtimes {
            let Some(record) = self.registry.get(&runtime.id).await? else {
                continue;
            };
            let idle = matches!(*runtime.launch.borrow(), Launch::Idle);
            let elsewhere = record.owner.as_deref().is_some_and(|o| o != cluster.id);
            if idle && (elsewhere || record.state.is_ended()) {
                self.forget(&runtime);
            } else if record.state == State::Running
                && record.all_clients() == record.clients
                && self.client_count(&runtime) == 0
                && matches!(*runtime.launch.borrow(), Launch::Ready(_))
            {
                // The last client another instance relayed directly left.
                let manager = self.clone();
                self.tasks.spawn(async move {
                    let _book = runtime.book.lock().await;
                    if manager.client_count(&runtime) == 0 {
                        manager.start_linger(&runtime).await;
                    }
                });
            } else if record.state.is_ended() || record.stop_request.is_some() {
                let reason = record
                    .stop_request
                    .clone()
                    .or(record.reason.clone())
                    .unwrap_or_else(|| "stopped".into());
                let manager = self.clone();
                self.tasks.spawn(async move {
                    let _ = manager.stop(&runtime.id, &reason).await;
                });
            }
        }
        Ok(())
    }

    /// Marks failed the sessions of instances whose lease ran out, and expires reservations whose
    /// instance did not (it may be gone).
    async fn reap(&self, cluster: &Cluster) -> Result<(), StoreError> {
        // Every instance, not only one asked for the list, forgets sessions long ended.
        self.registry.prune(KEEP_ENDED).await;
        let now = SystemTime::now();
        let mut alive: HashMap<String, bool> = HashMap::new();
        for record in self.registry.list().await? {
            if record.state.is_ended() {
                continue;
            }
            if record.state == State::Reserved {
                let late = record
                    .expires_at
                    .is_some_and(|at| now.duration_since(at).is_ok_and(|d| d > cluster::RENEW));
                if late
                    && let Ok(record) = self
                        .registry
                        .update(&record.id, Some(Event::Expire), Box::new(expiring))
                        .await
                {
                    info!("session {}: expired (never connected)", record.id);
                    self.audit.session(Kind::Expire, &record, None);
                }
                continue;
            }
            // Clients that instances gone since relayed directly are gone too.
            let mut gone = Vec::new();
            for instance in record.remote_clients.keys() {
                if !Self::alive(cluster, &mut alive, instance).await? {
                    gone.push(instance.clone());
                }
            }
            if !gone.is_empty() {
                let _ = self
                    .registry
                    .update(
                        &record.id,
                        None,
                        Box::new(move |r| r.remote_clients.retain(|i, _| !gone.contains(i))),
                    )
                    .await;
            }
            let Some(owner) = record.owner.clone().filter(|o| *o != cluster.id) else {
                continue;
            };
            if Self::alive(cluster, &mut alive, &owner).await? {
                continue;
            }
            let lost = self
                .registry
                .update(
                    &record.id,
                    Some(Event::Lost),
                    Box::new(|r| {
                        r.reason = Some("instance lost".into());
                        r.ended_at = Some(SystemTime::now());
                        r.clients = 0;
                    }),
                )
                .await;
            if let Ok(record) = lost {
                warn!("session {}: failed: instance {owner} lost", record.id);
                self.audit.session(Kind::Fail, &record, None);
            }
        }
        Ok(())
    }

    /// Whether `instance` still renews its lease (asked once per reap).
    async fn alive(cluster: &Cluster, known: &mut HashMap<String, bool>, instance: &str) -> Result<bool, StoreError> {
        if instance == cluster.id {
            return Ok(true);
        }
        if let Some(live) = known.get(instance) {
            return Ok(*live);
        }
        let live = cluster.address(instance).await?.is_some();
        known.insert(instance.to_owned(), live);
        Ok(live)
    }

    /// Stops every session (server shutdown).
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.runtimes().keys().cloned().collect();
        let stops = ids.iter().map(|id| self.stop(id, "server shutting down"));
        for stop in stops {
            let _ = stop.await;
        }
        self.leaving.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
    }

    /// A client left: the record gets the count, and the last one starts linger.
    fn release(self: &Arc<Self>, runtime: &Arc<Runtime>) {
        {
            let mut seats = runtime.seats();
            seats.count = seats.count.saturating_sub(1);
        }
        let manager = self.clone();
        let runtime = runtime.clone();
        self.tasks.spawn(async move {
            let _book = runtime.book.lock().await;
            if runtime.seats().closed {
                // Ended, or ending: its end writes the final record (no clients).
                return;
            }
            // The count as it is now, not as it was when this client left: an attach since then
            // has written its own, and this write must not undo it.
            let clients = manager.client_count(&runtime);
            let updated = manager
                .transition(&runtime, None, Box::new(move |r| r.clients = clients))
                .await;
            let nobody = updated.is_ok_and(|r| r.all_clients() == 0);
            if nobody && clients == 0 && matches!(*runtime.launch.borrow(), Launch::Ready(_)) {
                manager.start_linger(&runtime).await;
            }
        });
    }

    /// Nobody is connected (the caller holds the book): the session lingers, and a timer stops
    /// it unless a client comes back first. Lingering already (a duplicate call) only restarts the
    /// timer.
    async fn start_linger(self: &Arc<Self>, runtime: &Arc<Runtime>) {
        let lingering = match self
            .transition(runtime, Some(Event::LastClientLeft), Box::new(|_| {}))
            .await
        {
            Ok(_) => true,
            Err(UpdateError::Invalid(invalid)) => invalid.state == State::Lingering,
            Err(_) => false,
        };
        if !lingering {
            return;
        }
        let generation = runtime.linger_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let linger = runtime.services.timing.linger;
        let manager = self.clone();
        let runtime = runtime.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = runtime.done.cancelled() => return,
            }
            {
                let _book = runtime.book.lock().await;
                if runtime.linger_generation.load(Ordering::SeqCst) != generation
                    || manager.client_count(&runtime) != 0
                    || runtime.seats().closed
                {
                    return;
                }
                // Clients other instances relay directly count too.
                let remote = manager
                    .registry
                    .get(&runtime.id)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |r| r.all_clients() - r.clients);
                if remote != 0 {
                    return;
                }
                // Closed before the book is let go: a client now is refused, not half-attached
                // to a session being stopped.
                runtime.seats().closed = true;
            }
            let _ = manager.stop(&runtime.id, "the last client left").await;
        });
    }
}

/// How often an instance looks at its sessions' records (stop requests from other instances).
const SYNC: Duration = Duration::from_millis(250);

/// The change that expires a reservation.
fn expiring(r: &mut Record) {
    r.reason = Some("never connected within reserve_timeout".into());
    r.ended_at = Some(SystemTime::now());
    r.expires_at = None;
}

impl Runtime {
    fn seats(&self) -> std::sync::MutexGuard<'_, Seats> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn new(record: &Record, services: Arc<Services>, service: usize, counted: Option<State>) -> Arc<Runtime> {
        let (launch, _) = watch::channel(Launch::Idle);
        let (end, _) = watch::channel(None);
        Arc::new(Runtime {
            id: record.id.clone(),
            token: record.token.clone(),
            services,
            service,
            clients: Mutex::default(),
            book: tokio::sync::Mutex::new(()),
            linger_generation: AtomicU64::new(0),
            launch,
            stop: CancellationToken::new(),
            stop_reason: Mutex::new(None),
            end,
            done: CancellationToken::new(),
            counted: Mutex::new(counted),
        })
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
    via: Via,
    client: Option<String>,
    /// It holds one of a local session's seats (gives it back when dropped).
    seat: bool,
    /// Its connection was audited (its end is, too).
    connected: bool,
}

enum Via {
    /// This instance runs it.
    Local(Arc<Runtime>),
    /// Another instance runs it: the client is forwarded there, which counts it.
    Remote { session: String, forward: Forward },
    /// Another instance runs it on a host this one reaches: relayed there directly, counted in the
    /// record's `remote_clients`.
    Direct { session: String, target: String },
}

impl Lease {
    pub fn session(&self) -> &str {
        match &self.via {
            Via::Local(runtime) => &runtime.id,
            Via::Remote { session, .. } | Via::Direct { session, .. } => session,
        }
    }

    /// The session runs here and is a shared console (`share = true`, or `--share`): its clients
    /// here, local and forwarded by other instances (`http::forward`), share one target
    /// connection. A lease on a session another instance runs is never shared here: its client's
    /// bytes go to the owner as they are, and the owner fans them out (a shared console is never
    /// relayed `Direct`).
    pub fn shared(&self) -> bool {
        match &self.via {
            Via::Local(runtime) => self
                .manager
                .shares_consoles(&runtime.services.services[runtime.service]),
            Via::Remote { .. } | Via::Direct { .. } => false,
        }
    }

    /// Waits for the launch (shared by every client of the session) and connects to the target;
    /// the error is the reason clients are told (`exited with status 1`, `did not listen ...`).
    pub async fn connect(&self) -> Result<TargetStream, String> {
        let runtime = match &self.via {
            Via::Local(runtime) => runtime,
            Via::Remote { forward, .. } => {
                // The owner answers once the command listens, which may take its start timeout.
                let wait = self.manager.services().timing.start_timeout + Duration::from_secs(5);
                let stream = cluster::connect(forward, wait).await?;
                use tokio_util::either::Either;
                return Ok(Either::Left(Either::Left(Either::Left(stream))));
            }
            Via::Direct { target, .. } => {
                let target = crate::config::parse_target(target)?;
                return crate::target::connect(&target, &self.manager.target_tls, None)
                    .await
                    .map_err(|e| format!("cannot connect to the session's command: {e}"));
            }
        };
        let mut launch = runtime.launch.subscribe();
        let state = launch
            .wait_for(|l| matches!(l, Launch::Ready(_) | Launch::Failed(_)))
            .await
            .map(|l| l.clone())
            .map_err(|_| "the session ended".to_owned())?;
        match state {
            Launch::Ready(target) => crate::target::connect(&target, &self.manager.target_tls, None)
                .await
                .map_err(|e| format!("cannot connect to the session's command: {e}")),
            Launch::Failed(reason) => Err(reason),
            Launch::Idle | Launch::Starting => Err("the session ended".into()),
        }
    }

    /// Resolves when the session ends, with the close code and reason its clients get (a
    /// forwarded client learns it from the end of its stream).
    pub async fn ended(&self) -> (u16, String) {
        let runtime = match &self.via {
            Via::Local(runtime) => runtime,
            Via::Remote { .. } => return std::future::pending().await,
            Via::Direct { session, .. } => loop {
                // The owner ends it; its record says so (and why) within a second here.
                tokio::time::sleep(Duration::from_secs(1)).await;
                match self.manager.registry.get(session).await {
                    Ok(Some(record)) if !record.state.is_ended() => {}
                    Ok(Some(record)) => {
                        let code = if record.state == State::Stopped {
                            close::GOING_AWAY
                        } else {
                            close::INTERNAL_ERROR
                        };
                        return (code, record.reason.unwrap_or_else(|| "session ended".into()));
                    }
                    Ok(None) => return (close::GOING_AWAY, "session ended".into()),
                    Err(_) => {}
                }
            },
        };
        let mut end = runtime.end.subscribe();
        match end.wait_for(Option::is_some).await {
            Ok(end) => end.clone().unwrap_or((close::GOING_AWAY, "session ended".into())),
            Err(_) => (close::GOING_AWAY, "session ended".into()),
        }
    }

    /// Whether the target is this instance's own (not forwarded).
    pub fn is_local(&self) -> bool {
        matches!(self.via, Via::Local(_))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Via::Direct { session, .. }, Some(cluster)) = (&self.via, &self.manager.cluster) {
            let (manager, session, me) = (self.manager.clone(), session.clone(), cluster.id.clone());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let left = manager
                        .registry
                        .update(
                            &session,
                            None,
                            Box::new(move |r| {
                                if let Some(n) = r.remote_clients.get_mut(&me) {
                                    *n = n.saturating_sub(1);
                                    if *n == 0 {
                                        r.remote_clients.remove(&me);
                                    }
                                }
                            }),
                        )
                        .await;
                    if let Err(UpdateError::Store(StoreError(why))) = left {
                        warn!("session {session}: cannot record a client leaving ({why})");
                    }
                });
            }
            return;
        }
        let Via::Local(runtime) = &self.via else { return };
        if !self.seat {
            return;
        }
        let manager = self.manager.clone();
        let runtime = runtime.clone();
        let client = self.client.take();
        if self.connected
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let runtime = runtime.clone();
            handle.spawn(async move {
                if let Ok(Some(record)) = manager.registry.get(&runtime.id).await {
                    manager.audit.session(Kind::Disconnect, &record, client.as_deref());
                }
            });
        }
        self.manager.release(&runtime);
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
