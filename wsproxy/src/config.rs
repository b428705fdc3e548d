//! The validated configuration: everything the command line says, checked once at start-up so a
//! mistake is one clear line and exit code 64 before anything listens, never a failure later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::cli::{Cli, RecordFormat, SslVersion, WrapMode};
use crate::http::recordings::Recordings;
use crate::http::web::StaticFiles;
use crate::ops::metrics::{Metrics, Scope};
use crate::ops::reload::{Live, LiveTls};
use crate::relay;
use crate::relay::recording::{Format, Record};
use crate::route::{Plugin, Route, TokenFrom, TokenRoute};
use crate::sessions::manager::Manager;
use crate::tls::{self, MinTlsVersion, ServerTlsSource};

/// Where wsproxy accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix {
        path: PathBuf,
        mode: u32,
    },
    /// The socket on stdin, from inetd or systemd.
    Inetd,
}

/// Where `--metrics` serves `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAt {
    /// Its own plain-HTTP listener.
    Listen(Listen),
    /// The main port (behind the API's bearer tokens when `--sessions` is on).
    SamePort,
}

/// Where sessions are relayed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Resolved for every session, so a name that moves is followed (as websockify does).
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    /// The wrapped command's listener: it binds `port`, librebind.so moves that bind to a loopback
    /// port the kernel picks, and the supervisor publishes the reported address (`server::Shared`).
    Wrapped {
        port: u16,
    },
    /// A target that speaks WebSocket itself (QEMU's `websocket=on` sockets): wsproxy is its
    /// client (`crate::ws_target`).
    WebSocket(Box<WsTarget>),
}

/// `ws://HOST:PORT/PATH`, `wss://...` or `ws+unix:/path[:/PATH]` (or `--target-websocket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsTarget {
    /// Where the connection goes (TCP, a UNIX socket or the wrapped command; never `WebSocket`).
    pub transport: Target,
    /// The request path of the opening handshake (QEMU takes `/`).
    pub path: String,
    /// `wss://`: TLS to the target even without `--ssl-target`.
    pub tls: bool,
}

impl Target {
    /// `target` spoken to as a WebSocket server at path `/` (`--target-websocket`).
    pub fn websocket(transport: Target, tls: bool) -> Target {
        Target::WebSocket(Box::new(WsTarget {
            transport,
            path: "/".into(),
            tls,
        }))
    }
}

/// `-- CMD ARGS` with `--wrap-mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrap {
    pub command: Vec<String>,
    pub mode: WrapMode,
    /// The port the command binds, which librebind.so moves.
    pub port: u16,
    pub lib: PathBuf,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Wrapped { port } => write!(f, "the wrapped command (its port {port}, moved to loopback)"),
            Target::WebSocket(ws) => match &ws.transport {
                Target::Unix(socket) if ws.path == "/" => write!(f, "ws+unix:{}", socket.display()),
                Target::Unix(socket) => write!(f, "ws+unix:{}:{}", socket.display(), ws.path),
                Target::Tcp { .. } => {
                    let scheme = if ws.tls { "wss" } else { "ws" };
                    write!(f, "{scheme}://{}{}", ws.transport, ws.path)
                }
                other => write!(f, "WebSocket {} (path {})", other, ws.path),
            },
        }
    }
}

/// Where log lines go besides stderr.
#[derive(Debug, Clone, Default)]
pub struct Logging {
    pub verbose: bool,
    pub file: Option<PathBuf>,
    pub syslog: Option<String>,
    pub legacy_syslog: bool,
    pub daemon: bool,
}

pub struct Config {
    pub listen: Listen,
    /// Where each request goes: the one target, or the target its token names.
    pub route: Route,
    /// `--auth-plugin`: checked after the route resolved.
    pub auth: Option<Auth>,
    /// `--web-auth`: the static files are behind `auth` too.
    pub web_auth: bool,
    /// `--sessions FILE`: the on-demand sessions and their API.
    pub sessions: Option<Arc<Manager>>,
    /// `--api-listen`: the API's own address (else the API is on the main port).
    pub api_listen: Option<Listen>,
    /// `--advertise`: where other instances forward this one's sessions' clients.
    pub advertise: Option<String>,
    /// `--metrics`: the metrics every part records into (`None`: off, nothing is recorded) ...
    pub metrics: Option<Arc<Metrics>>,
    /// ... and where they are served.
    pub metrics_at: Option<MetricsAt>,
    pub wrap: Option<Wrap>,
    /// `--cert`: replaced by a reload (SIGHUP, or its files changing on disk).
    pub tls: Option<LiveTls>,
    /// `--cert auto`: the certificate made or reused, for the start-up line.
    pub auto_cert: Option<crate::autocert::AutoCert>,
    pub ssl_only: bool,
    /// `--ssl-target` and `--target-cafile`: TLS to the target.
    pub target_tls: crate::target::TargetTls,
    pub web: Option<StaticFiles>,
    /// `--record FILE --record-format F`.
    pub record: Option<Record>,
    /// `--serve-recordings`: `/recordings/` lists and serves the `--record` files (with `--web`).
    pub recordings: Option<Recordings>,
    pub traffic: bool,
    pub daemon: bool,
    pub run_once: bool,
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub relay: relay::Settings,
    /// `--share` and the services' `share = true`: the shared target connections.
    pub share: Arc<crate::share::Shares>,
    pub handshake_timeout: Duration,
    /// `None`: derived from the file-descriptor limit at start-up.
    pub max_connections: Option<usize>,
    pub shutdown_grace: Duration,
    pub logging: Logging,
    /// `--workers`: event loops, one per thread.
    pub workers: usize,
}

/// Written by hand: key material and TLS internals stay out of logs.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("route", &self.route.to_string())
            .field("auth", &self.auth.is_some())
            .field("wrap", &self.wrap)
            .field("tls", &self.tls.is_some())
            .field("ssl_only", &self.ssl_only)
            .field("ssl_target", &self.target_tls.every)
            .field("target_cafile", &self.target_tls.config.is_some())
            .field("web", &self.web.is_some())
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

/// `--token-plugin`/`--target-config`, `--auth-plugin` and their sources, checked together.
fn plugins(cli: &Cli) -> Result<(Option<Route>, Option<Auth>), String> {
    let token = match (&cli.target_config, &cli.token_plugin, &cli.token_source) {
        (Some(_), Some(_), _) => {
            return Err("--target-config is the old spelling of --token-plugin TokenFile: give one of them".into());
        }
        (Some(file), None, None) => Some((Plugin::TokenFile, file.clone())),
        (Some(_), None, Some(_)) => return Err("--token-source goes with --token-plugin, not --target-config".into()),
        (None, Some(class), Some(source)) => Some((Plugin::from_class(class)?, source.clone())),
        (None, Some(class), None) => {
            return Err(format!("--token-plugin {class} needs --token-source ARG"));
        }
        (None, None, Some(_)) => return Err("--token-source needs --token-plugin CLASS".into()),
        (None, None, None) => None,
    };
    if cli.host_token && token.is_none() {
        return Err("--host-token needs --token-plugin CLASS --token-source ARG".into());
    }
    if cli.token_timeout == 0 {
        return Err("--token-timeout must be at least 1 second".into());
    }
    let timeout = Duration::from_secs(cli.token_timeout);
    let route = match token {
        Some((plugin, source)) => Some(Route::Tokens(TokenRoute {
            from: if cli.host_token {
                TokenFrom::Host
            } else {
                TokenFrom::Query
            },
            plugin,
            lookup: Live::new(plugin.open(&source, timeout)?),
            source,
            timeout,
        })),
        None => None,
    };
    let auth = match (&cli.auth_plugin, &cli.auth_source) {
        (Some(class), Some(source)) => Some(Auth::open(class, source)?),
        (Some(class), None) => return Err(format!("--auth-plugin {class} needs --auth-source ARG")),
        (None, Some(_)) => return Err("--auth-source needs --auth-plugin CLASS".into()),
        (None, None) => None,
    };
    if auth.as_ref().is_some_and(Auth::needs_client_cert) && !cli.verify_client {
        return Err(
            "ClientCertCNAuth needs --verify-client (and --cert, --cafile): it reads client certificates".into(),
        );
    }
    if cli.web_auth && (auth.is_none() || cli.web.is_none()) {
        return Err("--web-auth needs --auth-plugin and --web DIR: it puts the files behind the same auth".into());
    }
    Ok((route, auth))
}

impl TryFrom<Cli> for Config {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Self, String> {
        let (mut tokens, auth) = plugins(&cli)?;
        let takes_listen = cli.unix_listen.is_none() && !cli.inetd;
        let wrapping = !cli.wrap_command.is_empty();
        if tokens.is_some() && (wrapping || cli.unix_target.is_some()) {
            return Err(
                "--token-plugin names the targets: it cannot be combined with --unix-target or a wrapped command"
                    .into(),
            );
        }
        let metrics_at = cli
            .metrics
            .as_deref()
            .map(|arg| parse_metrics_at(arg, cli.prefer_ipv6))
            .transpose()?;
        let services = match &cli.sessions {
            Some(file) => {
                if tokens.is_some() || wrapping || cli.unix_target.is_some() {
                    return Err(
                        "--sessions names the targets: it cannot be combined with --token-plugin, --unix-target or a \
                         wrapped command"
                            .into(),
                    );
                }
                let file = absolute(file)?;
                tokens = Some(Route::Sessions(file.clone()));
                Some(crate::sessions::services::load(&file)?)
            }
            None => None,
        };
        let metrics = metrics_at.as_ref().map(|_| {
            Arc::new(Metrics::new(&Scope {
                wrapped: wrapping,
                services: services
                    .as_ref()
                    .map(|s| s.services.iter().map(|s| s.name.clone()).collect()),
            }))
        });
        // `--target-cafile`: the only CAs TLS to a target trusts (`--ssl-target`, `wss://` targets).
        let target_ca = match &cli.target_cafile {
            Some(file) => Some(tls::client_config(Some(&absolute(file)?))?),
            None => None,
        };
        let sessions = services
            .map(|services| {
                sessions_manager(
                    services,
                    cli.audit_log.as_deref(),
                    metrics.clone(),
                    cli.share,
                    target_ca.clone(),
                )
            })
            .transpose()?;
        let api_listen = cli
            .api_listen
            .as_deref()
            .map(|addr| parse_listen(addr, cli.prefer_ipv6).map(Listen::Tcp))
            .transpose()?;
        let takes_target = cli.unix_target.is_none() && !wrapping && tokens.is_none();
        let wanted = usize::from(takes_listen) + usize::from(takes_target);
        let mut args = cli.positional.iter();
        let listen_arg = if takes_listen { args.next() } else { None };
        let target_arg = if takes_target { args.next() } else { None };
        if cli.positional.len() > wanted {
            return Err(format!("too many arguments: {:?}", &cli.positional[wanted..]));
        }

        let listen = match (&cli.unix_listen, cli.inetd, listen_arg) {
            (Some(_), true, _) => return Err("--unix-listen and --inetd cannot be used together".into()),
            (Some(path), false, _) => Listen::Unix {
                path: absolute(path)?,
                mode: parse_mode(&cli.unix_listen_mode)?,
            },
            (None, true, _) => Listen::Inetd,
            (None, false, Some(arg)) => Listen::Tcp(parse_listen(arg, cli.prefer_ipv6)?),
            (None, false, None) => {
                return Err(
                    "missing the port to listen on: wsproxy [source_addr:]source_port target_addr:target_port".into(),
                );
            }
        };
        let wrap = if wrapping {
            Some(wrap_config(&cli, &listen)?)
        } else if cli.wrap_mode.is_some() || cli.wrap_port.is_some() {
            return Err("--wrap-mode and --wrap-port need a command to wrap: wsproxy PORT -- CMD ARGS...".into());
        } else {
            None
        };
        let route = match (tokens, &cli.unix_target, target_arg, &wrap) {
            (Some(route), ..) => route,
            (None, _, _, Some(wrap)) => Route::Static(Target::Wrapped { port: wrap.port }),
            (None, Some(path), _, None) => Route::Static(Target::Unix(absolute(path)?)),
            (None, None, Some(arg), None) => Route::Static(parse_target(arg)?),
            (None, None, None, None) => {
                return Err(
                    "missing the target: give target_addr:target_port, --unix-target FILE or --token-plugin CLASS"
                        .into(),
                );
            }
        };
        let route = match route {
            Route::Static(target) if cli.target_websocket => match target {
                Target::WebSocket(_) => Route::Static(target),
                transport => Route::Static(Target::websocket(transport, false)),
            },
            _ if cli.target_websocket => {
                return Err(
                    "--target-websocket applies to the one static target: a token or service names a WebSocket \
                     target as ws://HOST:PORT/PATH or ws+unix:/path"
                        .into(),
                );
            }
            route => route,
        };
        let transport = |target: &Target| match target {
            Target::WebSocket(ws) => ws.transport.clone(),
            other => other.clone(),
        };
        if cli.ssl_target
            && matches!(
                route.static_target().map(transport),
                Some(Target::Unix(_) | Target::Wrapped { .. })
            )
        {
            return Err("--ssl-target needs a TCP target (host:port), not --unix-target or a wrapped command".into());
        }
        // Without --ssl-target, only a wss:// target speaks TLS: a static target that is not one never
        // would (token and session targets come later, and may be).
        if cli.target_cafile.is_some()
            && !cli.ssl_target
            && let Some(target) = route.static_target()
            && !matches!(target, Target::WebSocket(ws) if ws.tls)
        {
            let fix = match transport(target) {
                Target::Tcp { .. } => "add --ssl-target, or name a wss:// target",
                _ => "leave it out (a UNIX socket or a wrapped command has no TLS)",
            };
            return Err(format!(
                "--target-cafile is for TLS to the target, which {target} does not speak: {fix}"
            ));
        }

        let auto_cert = match &cli.cert {
            Some(cert) if cert.as_os_str() == "auto" => {
                let dir = absolute(&cli.cert_dir.clone().unwrap_or_else(crate::autocert::default_dir))?;
                let names = if cli.cert_name.is_empty() {
                    let ip = match &listen {
                        Listen::Tcp(addr) => Some(addr.ip()),
                        _ => None,
                    };
                    crate::autocert::default_names(ip)
                } else {
                    cli.cert_name.clone()
                };
                if cli.key.is_some() {
                    return Err("--cert auto makes its own key: leave out --key".into());
                }
                Some(crate::autocert::ensure(&dir, &names)?)
            }
            _ if !cli.cert_name.is_empty() || cli.cert_dir.is_some() => {
                return Err("--cert-name and --cert-dir go with --cert auto".into());
            }
            _ => None,
        };
        let cert = match &cli.cert {
            Some(_) if auto_cert.is_some() => auto_cert.as_ref().map(|a| a.path.clone()),
            Some(cert) => Some(absolute(cert)?),
            // websockify's default: ./self.pem, used when it exists.
            None => Some(absolute(Path::new("self.pem"))?).filter(|p| p.exists()),
        };
        if cli.ssl_only && cert.is_none() {
            return Err(
                "--ssl-only needs a certificate: give --cert FILE (or put self.pem in the working directory)".into(),
            );
        }
        if cert.is_none() && (cli.key.is_some() || cli.verify_client) {
            return Err("--key and --verify-client need --cert FILE".into());
        }
        let tls = match &cert {
            Some(cert) => Some(LiveTls::new(ServerTlsSource {
                cert: cert.clone(),
                key: cli.key.as_deref().map(absolute).transpose()?,
                key_password: cli.key_password.clone(),
                min_version: match cli.ssl_version {
                    SslVersion::Default => MinTlsVersion::Default,
                    SslVersion::Tlsv11 => MinTlsVersion::Tls11,
                    SslVersion::Tlsv12 => MinTlsVersion::Tls12,
                    SslVersion::Tlsv13 => MinTlsVersion::Tls13,
                },
                ciphers: cli.ssl_ciphers.clone(),
                client_ca: if cli.verify_client {
                    cli.cafile.as_deref().map(absolute).transpose()?
                } else {
                    None
                },
                verify_client: cli.verify_client,
            })?),
            None => None,
        };
        let target_tls = crate::target::TargetTls {
            every: cli.ssl_target,
            config: match target_ca {
                Some(config) => Some(config),
                // --ssl-target's system roots are loaded (and checked) at start.
                None if cli.ssl_target => Some(tls::client_config(None)?),
                None => None,
            },
        };
        let web = match &cli.web {
            Some(dir) => Some(StaticFiles::new(&absolute(dir)?, !cli.file_only)?),
            None => None,
        };
        if cli.handshake_timeout == 0 {
            return Err("--handshake-timeout must be at least 1 second".into());
        }
        if cli.max_connections == Some(0) {
            return Err("--max-connections must be at least 1".into());
        }
        let recordings = match (&cli.record, cli.serve_recordings) {
            (Some(base), true) => Some(Recordings::new(&absolute(base)?)?),
            _ => None,
        };
        let workers = match (cli.workers, &listen) {
            (Some(0), _) => return Err("--workers must be at least 1".into()),
            (Some(n), _) if n > MAX_WORKERS => {
                return Err(format!("--workers {n} is too many: at most {MAX_WORKERS}"));
            }
            (Some(n), Listen::Inetd) if n > 1 => {
                return Err("--inetd serves one socket from one event loop: leave out --workers".into());
            }
            (_, Listen::Inetd) => 1,
            (Some(n), _) => n,
            (None, _) => default_workers(),
        };
        let seconds = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        Ok(Config {
            listen,
            auto_cert,
            route,
            auth,
            web_auth: cli.web_auth,
            sessions,
            api_listen,
            advertise: cli.advertise.clone(),
            metrics,
            metrics_at,
            wrap,
            tls,
            ssl_only: cli.ssl_only,
            target_tls,
            web,
            record: cli
                .record
                .as_deref()
                .map(|base| {
                    Ok::<_, String>(Record {
                        base: absolute(base)?,
                        format: match cli.record_format {
                            RecordFormat::Novnc => Format::Novnc,
                            RecordFormat::Asciicast => Format::Asciicast { input: false },
                            RecordFormat::AsciicastWithInput => Format::Asciicast { input: true },
                        },
                    })
                })
                .transpose()?,
            recordings,
            traffic: cli.traffic,
            daemon: cli.daemon,
            run_once: cli.run_once,
            timeout: seconds(cli.timeout),
            idle_timeout: seconds(cli.idle_timeout),
            relay: relay::Settings {
                max_message: cli.max_message_size,
                heartbeat: seconds(cli.heartbeat),
                close_timeout: Duration::from_secs(5),
            },
            share: Arc::new(crate::share::Shares::new(crate::share::Policy {
                all: cli.share,
                keep: cli.share_keep,
                view_only: cli.share_view_only,
            })),
            handshake_timeout: Duration::from_secs(cli.handshake_timeout),
            max_connections: cli.max_connections,
            shutdown_grace: Duration::from_secs(cli.shutdown_grace),
            logging: Logging {
                verbose: cli.verbose,
                file: cli.log_file.as_deref().map(absolute).transpose()?,
                syslog: cli.syslog.clone(),
                legacy_syslog: cli.legacy_syslog,
                daemon: cli.daemon,
            },
            workers,
        })
    }
}

/// How long a call to the shared session store may take before the API answers 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most `--workers` accepted (and the default's cap): past this, threads cost more than they give.
const MAX_WORKERS: usize = 64;

/// One event loop on up to 2 cores (measured: the kernel's share of the work is large, and a
/// second loop only competes with it), else one per core, at most 16.
fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cores <= 2 { 1 } else { cores.min(16) }
}

/// `--sessions FILE`: the services, librebind.so when a service needs it, the audit log;
/// `share_all` is `--share` (every session a shared console), `target_ca` `--target-cafile`'s
/// roots for `wss://` targets.
fn sessions_manager(
    services: crate::sessions::services::Services,
    audit: Option<&Path>,
    metrics: Option<Arc<Metrics>>,
    share_all: bool,
    target_ca: Option<Arc<rustls::ClientConfig>>,
) -> Result<Arc<Manager>, String> {
    let needs_lib = services
        .services
        .iter()
        .any(|s| matches!(s.target, crate::sessions::services::TargetRule::Rebind));
    let lib = if needs_lib {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the wsproxy executable: {e}"))?;
        let lib = crate::wrap::preload::locate(&exe, std::env::var_os("WSPROXY_REBIND_LIB").as_deref(), Path::exists)?;
        Some(absolute(&lib)?)
    } else {
        None
    };
    let audit = crate::sessions::audit::Audit::open(audit.map(absolute).transpose()?.as_deref())?;
    let (registry, cluster): (Arc<dyn crate::sessions::registry::Registry>, _) = match &services.store {
        Some(url) => {
            let store = Arc::new(crate::sessions::registry::redis::RedisStore::open(url, STORE_TIMEOUT)?);
            let cluster = Arc::new(crate::sessions::cluster::Cluster::new(store.clone()));
            (store, Some(cluster))
        }
        None => (Arc::new(crate::sessions::registry::Memory::default()), None),
    };
    Ok(Arc::new(
        Manager::new(services, registry, lib, audit)
            .with_cluster(cluster)
            .with_metrics(metrics)
            .with_share_all(share_all)
            .with_target_ca(target_ca),
    ))
}

/// Wrap mode: which port the command binds, and where librebind.so is.
fn wrap_config(cli: &Cli, listen: &Listen) -> Result<Wrap, String> {
    if cli.unix_target.is_some() {
        return Err("--unix-target cannot be used with a wrapped command (-- CMD)".into());
    }
    if cli.ssl_target {
        return Err("--ssl-target needs a TCP target (host:port), not a wrapped command".into());
    }
    let port = match (cli.wrap_port, listen) {
        (Some(port), _) => port,
        (None, Listen::Tcp(addr)) => addr.port(),
        (None, _) => {
            return Err(
                "a wrapped command with --unix-listen or --inetd needs --wrap-port PORT: the port the command binds"
                    .into(),
            );
        }
    };
    if port == 0 {
        return Err(
            "wrap mode needs a fixed port: the command must bind the port wsproxy listens on (or --wrap-port PORT), not 0"
                .into(),
        );
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the wsproxy executable: {e}"))?;
    let lib = crate::wrap::preload::locate(&exe, std::env::var_os("WSPROXY_REBIND_LIB").as_deref(), Path::exists)?;
    Ok(Wrap {
        command: cli.wrap_command.clone(),
        mode: cli.wrap_mode.unwrap_or(WrapMode::Exit),
        port,
        lib: absolute(&lib)?,
    })
}

/// Paths are made absolute at start-up because `--daemon` changes directory to `/`.
fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("bad path {}: {e}", path.display()))
}

/// Splits `host:port` at the last colon; brackets around an IPv6 host are optional, as in websockify.
fn split_host_port(arg: &str) -> Option<(&str, &str)> {
    let (host, port) = arg.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some((host, port))
}

fn parse_port(port: &str, what: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("{what} port {port:?} is not a number from 0 to 65535"))
}

/// `[source_addr:]source_port`: a bare port listens on all IPv4 addresses (IPv6 with -6).
pub fn parse_listen(arg: &str, prefer_ipv6: bool) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(arg).unwrap_or(("", arg));
    let port = parse_port(port, "listen")?;
    if host.is_empty() {
        let any = if prefer_ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        return Ok(SocketAddr::new(any, port));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve listen address {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv6() == prefer_ipv6)
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("listen address {host:?} resolves to nothing"))
}

/// `target_addr:target_port`, or a WebSocket target: `ws://HOST[:PORT][/PATH]`, `wss://...` or
/// `ws+unix:/path[:/PATH]`.
pub fn parse_target(arg: &str) -> Result<Target, String> {
    if let Some(target) = parse_ws_target(arg)? {
        return Ok(target);
    }
    let (host, port) =
        split_host_port(arg).ok_or_else(|| format!("target {arg:?} must be HOST:PORT (or use --unix-target FILE)"))?;
    let port = parse_port(port, "target")?;
    if host.is_empty() || port == 0 {
        return Err(format!(
            "target {arg:?} must be HOST:PORT with a host and a port above 0"
        ));
    }
    Ok(Target::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// A WebSocket target URL, `None` when `arg` is not one. The port defaults to 80 (`ws`) or 443
/// (`wss`), the path to `/`; `ws+unix:` takes a socket path, then optionally `:` and the request
/// path, as the `ws` npm package reads it (`ws+unix:/run/vm/serial.sock:/console`; a socket path
/// cannot hold a `:`).
fn parse_ws_target(arg: &str) -> Result<Option<Target>, String> {
    if let Some(rest) = arg.strip_prefix("ws+unix:") {
        let (socket, path) = rest.split_once(':').unwrap_or((rest, ""));
        if socket.is_empty() {
            return Err(format!(
                "target {arg:?}: ws+unix: needs a socket path (ws+unix:/run/vm/serial.sock, or \
                 ws+unix:/run/vm/serial.sock:/path for a request path other than /)"
            ));
        }
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('/') => p.to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            _ => {
                return Err(format!(
                    "target {arg:?}: after the socket path, ':' starts the request path, which must start with / \
                     (ws+unix:/run/vm/serial.sock:/path)"
                ));
            }
        };
        if bad_request_path(&path) {
            return Err(format!(
                "target {arg:?}: the request path must not contain spaces or control characters"
            ));
        }
        return Ok(Some(Target::WebSocket(Box::new(WsTarget {
            transport: Target::Unix(PathBuf::from(socket)),
            path,
            tls: false,
        }))));
    }
    let (rest, tls) = match (arg.strip_prefix("ws://"), arg.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Ok(None),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_owned()),
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_owned()),
    };
    let bad = |why: &str| format!("target {arg:?}: {why} (ws://HOST:PORT/PATH, wss://... or ws+unix:/path)");
    if bad_request_path(&path) || authority.contains('@') {
        return Err(bad(
            "the path must not contain spaces or control characters, nor the host a user",
        ));
    }
    let bracketed = authority.starts_with('[');
    let (host, port) = match split_host_port(authority) {
        Some((host, port)) if !bracketed || authority.contains("]:") => (host, parse_port(port, "target")?),
        _ => {
            let host = authority
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(authority);
            (host, if tls { 443 } else { 80 })
        }
    };
    if host.is_empty() || port == 0 {
        return Err(bad("needs a host and a port above 0"));
    }
    let transport = Target::Tcp {
        host: host.to_owned(),
        port,
    };
    Ok(Some(Target::WebSocket(Box::new(WsTarget { transport, path, tls }))))
}

/// A request path a WebSocket target cannot be sent: one with spaces or control characters.
fn bad_request_path(path: &str) -> bool {
    path.chars().any(|c| c.is_ascii_control() || c == ' ')
}

/// `--metrics ADDR|same-port`.
fn parse_metrics_at(arg: &str, prefer_ipv6: bool) -> Result<MetricsAt, String> {
    if arg == "same-port" {
        return Ok(MetricsAt::SamePort);
    }
    if !arg.contains(':') {
        return Err(format!(
            "--metrics {arg:?} must be HOST:PORT (127.0.0.1:9100; port 0 picks one) or same-port"
        ));
    }
    parse_listen(arg, prefer_ipv6)
        .map(|addr| MetricsAt::Listen(Listen::Tcp(addr)))
        .map_err(|e| format!("--metrics: {e}"))
}

fn parse_mode(mode: &str) -> Result<u32, String> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("--unix-listen-mode {mode:?} must be octal permissions such as 0600"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("wsproxy").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        Config::try_from(cli)
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("6080", false).unwrap(), "0.0.0.0:6080".parse().unwrap());
        assert_eq!(parse_listen("6080", true).unwrap(), "[::]:6080".parse().unwrap());
        assert_eq!(
            parse_listen("[::1]:6080", false).unwrap(),
            "[::1]:6080".parse().unwrap()
        );
        assert_eq!(parse_listen("::1:6080", false).unwrap(), "[::1]:6080".parse().unwrap());
        assert_eq!(
            parse_listen("127.0.0.1:0", false).unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_listen("localhost:6080", false).unwrap().ip().is_loopback());
        assert!(parse_listen("65536", false).is_err());
        assert!(parse_listen("x:y", false).is_err());
    }

    #[test]
    fn target_forms() {
        assert_eq!(
            parse_target("localhost:5901").unwrap(),
            Target::Tcp {
                host: "localhost".into(),
                port: 5901
            }
        );
        assert_eq!(
            parse_target("[::1]:5901").unwrap(),
            Target::Tcp {
                host: "::1".into(),
                port: 5901
            }
        );
        assert_eq!(parse_target("[::1]:5901").unwrap().to_string(), "[::1]:5901");
        assert!(parse_target("5901").unwrap_err().contains("HOST:PORT"));
        assert!(parse_target("host:0").is_err());
        assert!(parse_target(":5901").is_err());
    }

    #[test]
    fn websocket_target_forms() {
        let ws = |host: &str, port, path: &str, tls| {
            Target::WebSocket(Box::new(WsTarget {
                transport: Target::Tcp {
                    host: host.into(),
                    port,
                },
                path: path.into(),
                tls,
            }))
        };
        assert_eq!(
            parse_target("ws://127.0.0.1:5700/").unwrap(),
            ws("127.0.0.1", 5700, "/", false)
        );
        assert_eq!(parse_target("ws://vm1:5700").unwrap(), ws("vm1", 5700, "/", false));
        assert_eq!(parse_target("ws://vm1").unwrap(), ws("vm1", 80, "/", false));
        assert_eq!(
            parse_target("wss://vm1/console").unwrap(),
            ws("vm1", 443, "/console", true)
        );
        assert_eq!(
            parse_target("ws://[::1]:5700/a?b=c").unwrap(),
            ws("::1", 5700, "/a?b=c", false)
        );
        assert_eq!(parse_target("ws://[::1]").unwrap(), ws("::1", 80, "/", false));
        assert_eq!(parse_target("ws://h:1?x").unwrap(), ws("h", 1, "/?x", false));
        assert_eq!(
            parse_target("ws+unix:/run/vm/mon.sock").unwrap(),
            Target::websocket(Target::Unix("/run/vm/mon.sock".into()), false)
        );
        // The request path after the socket path, as the ws npm package takes it.
        let unix = |socket: &str, path: &str| {
            Target::WebSocket(Box::new(WsTarget {
                transport: Target::Unix(socket.into()),
                path: path.into(),
                tls: false,
            }))
        };
        assert_eq!(
            parse_target("ws+unix:/run/vm/serial.sock:/some/path").unwrap(),
            unix("/run/vm/serial.sock", "/some/path")
        );
        assert_eq!(
            parse_target("ws+unix:/run/vm/serial.sock:/a?b=c").unwrap(),
            unix("/run/vm/serial.sock", "/a?b=c")
        );
        assert_eq!(parse_target("ws+unix:/s.sock:?x").unwrap(), unix("/s.sock", "/?x"));
        assert_eq!(parse_target("ws+unix:/s.sock:").unwrap(), unix("/s.sock", "/"));
        assert_eq!(parse_target("ws+unix:rel.sock:/p").unwrap(), unix("rel.sock", "/p"));
        for shown in [
            "ws://127.0.0.1:5700/",
            "wss://[::1]:443/x",
            "ws+unix:/run/vm/mon.sock",
            "ws+unix:/run/vm/mon.sock:/console?vm=7",
        ] {
            assert_eq!(parse_target(shown).unwrap().to_string(), shown);
        }
        for bad in [
            "ws://",
            "ws://:5700/",
            "ws://h:0/",
            "ws://h:x/",
            "ws+unix:",
            "ws+unix::/path",
            "ws+unix:/s.sock:path",
            "ws+unix:/s.sock:/a b",
            "ws+unix:/s.sock:/a\u{7}",
            "ws://u@h:1/",
            "ws://h:1/a b",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        assert_eq!(
            crate::route::parse_token_target(" ws://10.0.0.5:5700/ ").unwrap(),
            ws("10.0.0.5", 5700, "/", false)
        );
        assert_eq!(
            crate::route::parse_token_target(" ws+unix:/run/q/vm7.sock:/monitor ").unwrap(),
            unix("/run/q/vm7.sock", "/monitor")
        );
    }

    #[test]
    fn target_cafile_goes_where_the_target_may_speak_tls() {
        let dir = std::env::temp_dir().join(format!("wsproxy-cafile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let ca = ca.to_str().unwrap();
        // With --ssl-target, for every TCP target.
        let c = config(&["--ssl-target", "--target-cafile", ca, "6080", "localhost:5901"]).unwrap();
        assert!(c.target_tls.every && c.target_tls.config.is_some());
        // A wss:// target speaks TLS without it.
        let c = config(&["--target-cafile", ca, "6080", "wss://localhost:5701/"]).unwrap();
        assert!(!c.target_tls.every && c.target_tls.config.is_some());
        // Tokens name their targets later: one may be wss://.
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, "vm: wss://localhost:5701/\n").unwrap();
        let tokens = tokens.to_str().unwrap();
        let c = config(&[
            "--target-cafile",
            ca,
            "--token-plugin",
            "TokenFile",
            "--token-source",
            tokens,
            "6080",
        ])
        .unwrap();
        assert!(!c.target_tls.every && c.target_tls.config.is_some());
        // Where it cannot apply, one line that says what to do.
        let err = config(&["--target-cafile", ca, "6080", "localhost:5901"]).unwrap_err();
        assert!(err.contains("add --ssl-target") && !err.contains('\n'), "{err}");
        let err = config(&["--target-cafile", ca, "6080", "ws://localhost:5701/"]).unwrap_err();
        assert!(err.contains("add --ssl-target"), "{err}");
        let err = config(&["--target-cafile", ca, "--unix-target", "/run/s.sock", "6080"]).unwrap_err();
        assert!(err.contains("leave it out"), "{err}");
        let err = config(&["--target-cafile", "/nonexistent/ca.pem", "6080", "wss://h/"]).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn target_websocket_wraps_the_static_target() {
        let c = config(&["--target-websocket", "6080", "localhost:5700"]).unwrap();
        assert_eq!(
            c.route.static_target(),
            Some(&Target::websocket(
                Target::Tcp {
                    host: "localhost".into(),
                    port: 5700
                },
                false
            ))
        );
        let c = config(&["--target-websocket", "--unix-target", "/run/s.sock", "6080"]).unwrap();
        assert_eq!(
            c.route.static_target(),
            Some(&Target::websocket(Target::Unix("/run/s.sock".into()), false))
        );
        let err = config(&["--ssl-target", "6080", "ws+unix:/run/s.sock"]).unwrap_err();
        assert!(err.contains("--ssl-target"), "{err}");
    }

    #[test]
    fn positional_arguments_follow_websockify() {
        let c = config(&["6080", "localhost:5901"]).unwrap();
        assert_eq!(c.listen, Listen::Tcp("0.0.0.0:6080".parse().unwrap()));
        let c = config(&["--unix-target", "/tmp/x.sock", "127.0.0.1:6080"]).unwrap();
        assert!(matches!(c.route, Route::Static(Target::Unix(_))));
        let c = config(&[
            "--unix-listen",
            "/tmp/ws.sock",
            "--unix-listen-mode",
            "0660",
            "localhost:5901",
        ])
        .unwrap();
        assert!(matches!(c.listen, Listen::Unix { mode: 0o660, .. }));
        assert!(
            config(&["6080", "localhost:5901", "extra"])
                .unwrap_err()
                .contains("too many")
        );
        assert!(config(&["6080"]).unwrap_err().contains("missing the target"));
        assert!(config(&["--unix-listen-mode", "999", "--unix-listen", "/tmp/a", "h:1"]).is_err());
    }

    #[test]
    fn token_and_auth_plugins_are_checked_together() {
        let dir = std::env::temp_dir().join(format!("wsproxy-config-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "a: h:1\n").unwrap();
        let file = file.to_str().unwrap();
        let c = config(&["--token-plugin", "TokenFile", "--token-source", file, "6080"]).unwrap();
        assert!(matches!(c.route, Route::Tokens(_)));
        let c = config(&["--target-config", file, "--host-token", "6080"]).unwrap();
        assert!(matches!(&c.route, Route::Tokens(t) if t.from == TokenFrom::Host));
        for (args, needle) in [
            (
                &["--token-plugin", "Nope", "--token-source", "x", "6080"][..],
                "unknown --token-plugin",
            ),
            (&["--token-plugin", "TokenFile", "6080"], "needs --token-source"),
            (&["--token-source", file, "6080", "h:1"], "needs --token-plugin"),
            (&["--host-token", "6080", "h:1"], "--host-token needs"),
            (&["--target-config", file, "6080", "h:1"], "too many"),
            (
                &[
                    "--token-plugin",
                    "TokenFile",
                    "--token-source",
                    "/nonexistent/t",
                    "6080",
                ],
                "/nonexistent/t",
            ),
            (
                &["--target-config", file, "--unix-target", "/tmp/x", "6080"],
                "cannot be combined",
            ),
            (
                &["--auth-plugin", "BasicHTTPAuth", "6080", "h:1"],
                "needs --auth-source",
            ),
            (
                &["--auth-plugin", "Foo", "--auth-source", "x", "6080", "h:1"],
                "unknown --auth-plugin",
            ),
            (
                &[
                    "--auth-plugin",
                    "ClientCertCNAuth",
                    "--auth-source",
                    "cn",
                    "6080",
                    "h:1",
                ],
                "--verify-client",
            ),
            (&["--web-auth", "6080", "h:1"], "--web-auth needs"),
        ] {
            let err = config(args).err().unwrap_or_else(|| panic!("{args:?} was accepted"));
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrap_mode_needs_a_port_and_a_command() {
        let err = config(&["127.0.0.1:0", "--", "telnetd"]).unwrap_err();
        assert!(err.contains("fixed port"), "{err}");
        let err = config(&["--unix-listen", "/tmp/ws.sock", "--", "telnetd"]).unwrap_err();
        assert!(err.contains("--wrap-port"), "{err}");
        let err = config(&["--wrap-mode", "respawn", "6080", "h:1"]).unwrap_err();
        assert!(err.contains("need a command"), "{err}");
        let err = config(&["--unix-target", "/tmp/x", "6080", "--", "telnetd"]).unwrap_err();
        assert!(err.contains("--unix-target"), "{err}");
        let err = config(&["--ssl-target", "6080", "--", "telnetd"]).unwrap_err();
        assert!(err.contains("--ssl-target"), "{err}");
        let err = config(&["6080", "h:1", "--", "telnetd"]).unwrap_err();
        assert!(err.contains("too many"), "{err}");
    }

    #[test]
    fn workers_are_checked() {
        assert_eq!(config(&["--workers", "3", "6080", "h:1"]).unwrap().workers, 3);
        let default = config(&["6080", "h:1"]).unwrap().workers;
        assert!((1..=16).contains(&default), "{default}");
        assert_eq!(config(&["--inetd", "h:1"]).unwrap().workers, 1);
        for (args, needle) in [
            (&["--workers", "0", "6080", "h:1"][..], "at least 1"),
            (&["--workers", "65", "6080", "h:1"], "too many"),
            (&["--workers", "2", "--inetd", "h:1"], "--inetd"),
        ] {
            let err = config(args).err().unwrap_or_else(|| panic!("{args:?} was accepted"));
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn missing_files_are_config_errors() {
        let err = config(&["--cert", "/nonexistent/cert.pem", "6080", "h:1"]).unwrap_err();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let err = config(&["--web", "/nonexistent/web", "6080", "h:1"]).unwrap_err();
        assert!(err.contains("/nonexistent/web"), "{err}");
        let err = config(&["--ssl-only", "6080", "h:1"]).unwrap_err();
        assert!(err.contains("--cert"), "{err}");
    }
}
