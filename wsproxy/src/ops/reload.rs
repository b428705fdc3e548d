//! Reload: SIGHUP reads again what wsproxy read from files at start (the certificate and key, with
//! the `--cafile` of `--verify-client`; the token sources that keep what they read, token files and
//! a JWT key; the services file of `--sessions`) and opens `--log-file` again, so logrotate's
//! `postrotate kill -HUP` works.
//!
//! Each part lives in a [`Live`] that a connection reads once as it starts, so open sessions keep
//! what they started with and new connections use the new parts at once. Everything is loaded
//! before anything is swapped: a reload that fails (a bad certificate, a syntax error in the
//! services file) changes nothing and logs one line saying why.
//!
//! The `--cert` files are also watched: their stamp (size, modification time, inode) is compared
//! every [`CERT_CHECK_EVERY`], so a certificate renewed on disk, rewritten in place or renamed over
//! the old one, is used within seconds with no signal (as an ACME client leaves it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::reloading::{Stamp, stamp};
use crate::route::{Route, TokenSource};
use crate::tls::ServerTlsSource;

/// How often the certificate files' stamps are compared.
pub const CERT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// A value a reload replaces whole. Readers take the current one (`get`) and keep it as long as
/// they need it.
pub struct Live<T>(ArcSwap<T>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Live(ArcSwap::from_pointee(value))
    }

    pub fn get(&self) -> Arc<T> {
        self.0.load_full()
    }

    pub fn set(&self, value: Arc<T>) {
        self.0.store(value);
    }
}

/// `--cert`: the TLS configuration in use, and what it was built from.
pub struct LiveTls {
    source: ServerTlsSource,
    current: Live<ServerConfig>,
    /// The files' stamps when `current` was loaded (`None` for a file that could not be read).
    loaded: Mutex<Vec<Option<Stamp>>>,
}

impl LiveTls {
    /// Loads the configuration now; failing to is a start-up error.
    pub fn new(source: ServerTlsSource) -> Result<Self, String> {
        let loaded = Mutex::new(stamps(&source.files()));
        let config = source.load()?;
        Ok(LiveTls {
            source,
            current: Live(ArcSwap::new(config)),
            loaded,
        })
    }

    /// For one client's handshake: the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.get())
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.get()
    }

    /// The files changed since the configuration in use was loaded: their stamps now, else `None`.
    fn changed(&self) -> Option<Vec<Option<Stamp>>> {
        let now = stamps(&self.source.files());
        let loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (*loaded != now).then_some(now)
    }

    fn install(&self, config: Arc<ServerConfig>, stamps: Vec<Option<Stamp>>) {
        self.current.set(config);
        self.remember(stamps);
    }

    fn remember(&self, stamps: Vec<Option<Stamp>>) {
        *self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stamps;
    }

    /// The certificate files, as the log names them.
    fn names(&self) -> String {
        let files: Vec<String> = self.source.files().iter().map(|f| f.display().to_string()).collect();
        files.join(", ")
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    files.iter().map(|f| stamp(f).ok()).collect()
}

/// Everything a reload replaces, loaded; nothing is in use yet.
struct Loaded {
    tls: Option<(Arc<ServerConfig>, Vec<Option<Stamp>>)>,
    tokens: Option<Box<dyn TokenSource>>,
    services: Option<crate::sessions::services::Services>,
    log: Option<std::fs::File>,
}

fn load(config: &Config) -> Result<Loaded, String> {
    let tls = match &config.tls {
        Some(tls) => {
            let stamps = stamps(&tls.source.files());
            Some((tls.source.load()?, stamps))
        }
        None => None,
    };
    let tokens = match &config.route {
        Route::Tokens(tokens) if tokens.plugin.reads_files() => {
            Some(tokens.plugin.open(&tokens.source, tokens.timeout)?)
        }
        _ => None,
    };
    let services = match &config.route {
        Route::Sessions(file) if config.sessions.is_some() => Some(crate::sessions::services::load(file)?),
        _ => None,
    };
    let log = crate::logging::reopen().transpose()?;
    Ok(Loaded {
        tls,
        tokens,
        services,
        log,
    })
}

/// Reads everything again and puts it in use, or changes nothing. Returns what was replaced.
pub fn reload(config: &Config) -> Result<Vec<&'static str>, String> {
    let loaded = load(config).inspect_err(|_| {
        // Already reported: the certificate watch does not report the same files again.
        if let Some(tls) = &config.tls {
            tls.remember(stamps(&tls.source.files()));
        }
    })?;
    let mut done = Vec::new();
    // The only step that can still refuse goes first, so a refusal changes nothing.
    if let (Some(services), Some(manager)) = (loaded.services, &config.sessions) {
        manager.replace_services(services)?;
        done.push("the services file");
    }
    if let (Some((new, stamps)), Some(tls)) = (loaded.tls, &config.tls) {
        tls.install(new, stamps);
        done.push("the certificate");
    }
    if let (Some(new), Route::Tokens(tokens)) = (loaded.tokens, &config.route) {
        tokens.lookup.set(Arc::new(new));
        done.push("the token source");
    }
    if let Some(file) = loaded.log {
        crate::logging::use_file(file);
        done.push("the log file");
    }
    Ok(done)
}

/// SIGHUP, caught from now on (its default action ends the process). Taken before systemd hears
/// READY=1, since a `systemctl reload` may follow at once.
pub fn hangup() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            warn!("cannot watch SIGHUP, so no reload on it: {e}");
            None
        }
    }
}

/// Until `stop`: reloads on `hangup` (telling systemd), and loads the certificate again whenever
/// its files change.
pub async fn serve(config: &Config, mut hangup: Option<Signal>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CERT_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hup = async {
            match &mut hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            _ = hup => on_hangup(config),
            _ = tick.tick() => {
                if let Some(tls) = &config.tls {
                    certificate_check(tls);
                }
            }
        }
    }
}

fn on_hangup(config: &Config) {
    crate::ops::systemd::reloading();
    match reload(config) {
        Ok(done) if done.is_empty() => {
            info!("SIGHUP: nothing to reload (no certificate, token file, services or log file)")
        }
        Ok(done) => info!("SIGHUP: reloaded {}", done.join(", ")),
        Err(e) => warn!("SIGHUP: reload failed, the configuration in use is kept: {e}"),
    }
    crate::ops::systemd::ready();
}

/// Loads the certificate again if its files changed; one log line per change.
fn certificate_check(tls: &LiveTls) {
    let Some(now) = tls.changed() else { return };
    match tls.source.load() {
        Ok(config) => {
            tls.install(config, now);
            info!("certificate files changed ({}): loaded again", tls.names());
        }
        Err(e) => {
            // Remembered, so a file that stays bad is reported once, and tried again when it changes.
            tls.remember(now);
            warn!("certificate files changed but cannot be used, the certificate in use is kept: {e}");
        }
    }
}
