//! Connecting to the target: TCP (every resolved address in turn, optionally TLS) or a UNIX socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::config::Target;
use crate::listener::Plain;

pub type TargetStream = Either<Plain, Box<TlsStream<Plain>>>;

/// How long one address gets to accept before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn connect(target: &Target, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<TargetStream> {
    match target {
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
