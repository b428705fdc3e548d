//! Connecting to the target: TCP (every resolved address in turn, optionally TLS), a UNIX socket, or
//! the wrapped command's moved listener (the latest address the supervisor published).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::config::Target;
use crate::listener::Plain;
use crate::ws_target::{self, WsStream};

/// A connection to the target: plain or TLS ...
pub type Transport = Either<Plain, Box<TlsStream<Plain>>>;
/// ... and spoken to as bytes, or as a WebSocket client (`crate::ws_target`).
pub type TargetStream = Either<Transport, Box<WsStream<Transport>>>;

/// How long one address gets to accept before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session waits for the wrapped command to report its first bind.
const WRAPPED_REPORT_WAIT: Duration = Duration::from_secs(5);
/// The report means "bound", not yet "listening": refused connects are retried this long.
const WRAPPED_REFUSED_RETRY: Duration = Duration::from_secs(1);

/// The wrapped command's loopback address, `None` until it reports a bind (or while it restarts).
pub type WrappedAddr = watch::Receiver<Option<SocketAddr>>;

/// TLS to targets: which get it, and what they trust.
#[derive(Clone, Default)]
pub struct TargetTls {
    /// `--ssl-target`: TLS to every TCP target (a `ws://` one too), not only to `wss://` ones.
    pub every: bool,
    /// The roots of `--target-cafile` (only its CAs are trusted); `None`: the system's roots.
    pub config: Option<Arc<rustls::ClientConfig>>,
}

impl TargetTls {
    /// The configuration a TLS connection to a target uses.
    fn client_config(&self) -> io::Result<Arc<rustls::ClientConfig>> {
        match &self.config {
            Some(config) => Ok(config.clone()),
            None => default_tls(),
        }
    }
}

/// Connects to `target`, with TLS to it as `tls` says (`--ssl-target`, `wss://`).
pub async fn connect(target: &Target, tls: &TargetTls, wrapped: Option<&WrappedAddr>) -> io::Result<TargetStream> {
    let Target::WebSocket(ws) = target else {
        let config = tls.every.then(|| tls.client_config()).transpose()?;
        return Ok(Either::Left(connect_transport(target, config.as_ref(), wrapped).await?));
    };
    let config = (tls.every || ws.tls).then(|| tls.client_config()).transpose()?;
    let stream = connect_transport(&ws.transport, config.as_ref(), wrapped).await?;
    let host = match &ws.transport {
        Target::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
        Target::Tcp { host, port } => format!("{host}:{port}"),
        _ => "localhost".to_owned(),
    };
    let shaken = tokio::time::timeout(CONNECT_TIMEOUT, ws_target::handshake(stream, &host, &ws.path))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no WebSocket handshake answer within {CONNECT_TIMEOUT:?}"),
            )
        })??;
    Ok(Either::Right(Box::new(shaken)))
}

/// TLS to targets without `--target-cafile`: the system's roots, loaded once.
fn default_tls() -> io::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| crate::tls::client_config(None))
        .clone()
        .map_err(io::Error::other)
}

async fn connect_transport(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    wrapped: Option<&WrappedAddr>,
) -> io::Result<Transport> {
    match target {
        Target::WebSocket(_) => Err(io::Error::other("a WebSocket target inside a WebSocket target")),
        Target::Wrapped { .. } => match wrapped {
            Some(addr) => Ok(Either::Left(Either::Left(connect_wrapped(addr.clone()).await?))),
            None => Err(io::Error::other("wrap mode without a supervisor")),
        },
        Target::Unix(path) => Ok(Either::Left(Either::Right(UnixStream::connect(path).await?))),
        Target::Tcp { host, port } => {
            let tcp = connect_tcp(host, *port).await?;
            match tls {
                None => Ok(Either::Left(Either::Left(tcp))),
                Some(config) => {
                    let name = ServerName::try_from(host.clone()).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidInput, format!("bad TLS server name: {e}"))
                    })?;
                    let stream = TlsConnector::from(config.clone())
                        .connect(name, Either::Left(tcp))
                        .await?;
                    Ok(Either::Right(Box::new(stream)))
                }
            }
        }
    }
}

/// Tries every address the name resolves to, IPv4 first as websockify orders them (websockify
/// gives up after the first one, so `localhost` failed whenever `::1` came first and was closed).
async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"));
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{addr}: no answer in {CONNECT_TIMEOUT:?}"),
                )
            }
        }
    }
    Err(last)
}

/// Connects to the latest address the wrapped command reported, waiting briefly for a first report
/// and for `listen` after the bind. A refusal that lasts means the wrapped server is gone or busy (netkit
/// telnetd closes its listener while it serves its one connection).
async fn connect_wrapped(mut addr: WrappedAddr) -> io::Result<TcpStream> {
    let started = Instant::now();
    // The address that last refused, and since when: a new report (a respawn) starts a new retry window.
    let mut refusing: Option<(SocketAddr, Instant)> = None;
    loop {
        let current = *addr.borrow_and_update();
        let Some(current) = current else {
            match tokio::time::timeout_at(started + WRAPPED_REPORT_WAIT, addr.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the wrapped command has not bound its port (not started yet, restarting, or gone)",
                    ));
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(current)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let since = match refusing {
                    Some((at, since)) if at == current => since,
                    _ => {
                        refusing = Some((current, Instant::now()));
                        Instant::now()
                    }
                };
                if since.elapsed() >= WRAPPED_REFUSED_RETRY {
                    return Err(gone(current, &e));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok(Err(e)) => return Err(gone(current, &e)),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{current}: the wrapped server did not answer in {CONNECT_TIMEOUT:?}"),
                ));
            }
        }
    }
}

fn gone(addr: SocketAddr, e: &io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "nothing listens on {addr}, where the wrapped command's port was moved ({e}): the wrapped server is \
             gone, restarting, or serves one connection at a time and is busy"
        ),
    )
}
