//! The peers a scenario compares, and the far end of the client's connections for each.
//!
//! A peer is the built-in no-proxy baseline or a proxy command, or, for the connects-with-tokens
//! rows, a proxy's `--token-proxy` command routing by token. For one measurement a `Setup`
//! binds a fresh listener on 127.0.0.1 for the far end and, for a proxy, starts it in front of
//! that listener; the scenario then serves the listener (`Server`) and points its client at
//! `Setup::port`. A fresh setup per measurement keeps one scenario's leftovers (a late
//! connection, sockets in TIME_WAIT, a proxy's grown heap) out of the next.

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::handshake;
use crate::net::{self, Reader, Writer};
use crate::proxy::{NO_PROXY, Proxy, ProxySpec, SERVICES, Upstream};
use crate::tls::Tls;
use crate::tokens::{TokenSource, Tokens};
use crate::ws::FrameReader;

/// One side of every run, besides the client.
#[derive(Clone, Copy)]
pub enum Peer<'a> {
    /// The in-process WebSocket server: the client's own limit.
    NoProxy,
    /// A proxy command in front of an in-process backend.
    Proxy(&'a ProxySpec),
    /// A proxy command that routes by token (`--token-proxy`), every token naming the
    /// in-process backend. Its results go to the proxy of the same name, in the token rows.
    Tokens(&'a ProxySpec, &'a Tokens),
}

impl<'a> Peer<'a> {
    /// The baseline first, then the proxies in the order given; refuses duplicate names and
    /// token templates (those go in `--token-proxy`).
    pub fn all(specs: &'a [ProxySpec]) -> Result<Vec<Peer<'a>>, String> {
        let mut peers = vec![Peer::NoProxy];
        for spec in specs {
            if peers.iter().any(|peer| peer.name() == spec.name) {
                return Err(format!("two proxies are named `{}`", spec.name));
            }
            match spec.upstream {
                Upstream::Tokens(source) => {
                    return Err(format!(
                        "--proxy {}: {} goes in a --token-proxy template",
                        spec.name,
                        source.placeholder()
                    ));
                }
                Upstream::Services => {
                    return Err(format!(
                        "--proxy {}: {SERVICES} is for `wsproxy-bench sessions`",
                        spec.name
                    ));
                }
                Upstream::Tcp | Upstream::WebSocket => {}
            }
            peers.push(Peer::Proxy(spec));
        }
        Ok(peers)
    }

    /// The sources `token_specs` (`--token-proxy`) need; refuses a template without one, and a
    /// name that no `--proxy` has (its rows would have no column, its ratio no base).
    pub fn token_sources(specs: &[ProxySpec], token_specs: &[ProxySpec]) -> Result<Vec<TokenSource>, String> {
        let mut sources = Vec::new();
        for spec in token_specs {
            let Upstream::Tokens(source) = spec.upstream else {
                return Err(format!(
                    "--token-proxy {}: the template needs {{token-file}} or {{redis}} instead of a target",
                    spec.name
                ));
            };
            if !specs.iter().any(|proxy| proxy.name == spec.name) {
                return Err(format!("--token-proxy {0}: no --proxy is named `{0}`", spec.name));
            }
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
        Ok(sources)
    }

    pub fn name(&self) -> &str {
        match self {
            Peer::NoProxy => NO_PROXY,
            Peer::Proxy(spec) | Peer::Tokens(spec, _) => &spec.name,
        }
    }

    pub fn command(&self) -> Option<String> {
        match self {
            Peer::NoProxy => None,
            Peer::Proxy(spec) | Peer::Tokens(spec, _) => Some(spec.template.clone()),
        }
    }

    /// The token source, for a peer that routes by token.
    pub fn token_source(&self) -> Option<TokenSource> {
        match self {
            Peer::Tokens(spec, _) => match spec.upstream {
                Upstream::Tokens(source) => Some(source),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The far end of the client's connections: what the proxy connects to, or what the client
/// reaches directly in the baseline.
#[derive(Clone)]
pub enum Server {
    /// A TCP backend (the target of a WebSocket-to-TCP proxy).
    Tcp(Arc<TcpListener>),
    /// A WebSocket server (the baseline, or behind a raw TCP relay), with TLS when given.
    WebSocket(Arc<TcpListener>, Option<Arc<Tls>>),
}

impl Server {
    /// Accepts the next connection of a TCP backend.
    pub async fn accept_tcp(listener: &TcpListener) -> Result<TcpStream, String> {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("backend accept failed: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        Ok(stream)
    }
}

/// Completes the server side of a WebSocket connection: TLS if configured, then the upgrade.
/// `None` for a connection that closed without a request (a raw relay passes on the readiness
/// probe it was sent).
pub async fn upgrade(
    tcp: TcpStream,
    tls: Option<&Arc<Tls>>,
    read_size: usize,
) -> Result<Option<(FrameReader<Reader>, Writer)>, String> {
    let mut stream = net::accept(tcp, tls).await?;
    let Some(leftover) = handshake::server(&mut stream).await? else {
        return Ok(None);
    };
    let (reader, writer) = net::split(stream);
    Ok(Some((FrameReader::new(reader, &leftover, read_size, true), writer)))
}

/// Accepts connections until one completes the WebSocket upgrade (probes are skipped).
pub async fn accept_ws(
    listener: &TcpListener,
    tls: Option<&Arc<Tls>>,
    read_size: usize,
) -> Result<(FrameReader<Reader>, Writer), String> {
    loop {
        let (tcp, _) = listener
            .accept()
            .await
            .map_err(|e| format!("server accept failed: {e}"))?;
        if let Some(ends) = upgrade(tcp, tls, read_size).await? {
            return Ok(ends);
        }
    }
}

/// A peer ready for one measurement.
pub struct Setup {
    /// Where the client connects, on 127.0.0.1.
    pub port: u16,
    /// What the scenario must serve.
    pub server: Server,
    proxy: Option<Proxy>,
}

impl Setup {
    /// Binds the far end and starts the proxy, if any, in front of it. `tls` makes the
    /// in-process WebSocket server speak TLS (the baseline of a wss:// run, or the server behind
    /// a raw relay, which passes TLS through).
    pub async fn start(peer: &Peer<'_>, tls: Option<&Arc<Tls>>) -> Result<Setup, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let listener = Arc::new(listener);
        let websocket = Server::WebSocket(listener.clone(), tls.cloned());
        Ok(match peer {
            Peer::NoProxy => Setup {
                port: addr.port(),
                server: websocket,
                proxy: None,
            },
            Peer::Proxy(spec) => {
                let proxy = Proxy::start(spec, &addr.to_string()).await?;
                let server = match spec.upstream {
                    // `Peer::all` lets neither tokens nor services through; they are a TCP backend's.
                    Upstream::Tcp | Upstream::Tokens(_) | Upstream::Services => Server::Tcp(listener),
                    Upstream::WebSocket => websocket,
                };
                Setup {
                    port: proxy.port(),
                    server,
                    proxy: Some(proxy),
                }
            }
            Peer::Tokens(spec, tokens) => {
                let source = peer.token_source().ok_or("a token peer without a token source")?;
                let upstream = tokens.point_at(source, addr).await?;
                let proxy = Proxy::start(spec, &upstream).await?;
                Setup {
                    port: proxy.port(),
                    server: Server::Tcp(listener),
                    proxy: Some(proxy),
                }
            }
        })
    }

    /// The proxy's process group (its leader's pid), if there is a proxy.
    pub fn proxy_group(&self) -> Option<i32> {
        self.proxy.as_ref().map(Proxy::group)
    }

    /// Stops the proxy, if any.
    pub async fn stop(self) -> Result<(), String> {
        match self.proxy {
            Some(proxy) => proxy.stop().await,
            None => Ok(()),
        }
    }

    /// Stops the proxy after a failed measurement and returns the error with the proxy's output.
    pub async fn fail<T>(self, error: String) -> Result<T, String> {
        let note = self.proxy.as_ref().map(Proxy::output_note).unwrap_or_default();
        // Stopping is best effort here: the measurement's error is the one to report.
        let _ = self.stop().await;
        Err(format!("{error}{note}"))
    }
}

/// Sets `peer` up, runs `measure` against it, and stops it, whatever the outcome. `measure` gets
/// the port to connect to, the far end to serve, and the proxy's process group (for CPU time).
pub async fn measure<T, F, Fut>(peer: &Peer<'_>, tls: Option<&Arc<Tls>>, measure: F) -> Result<T, String>
where
    F: FnOnce(u16, Server, Option<i32>) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let setup = Setup::start(peer, tls).await?;
    match measure(setup.port, setup.server.clone(), setup.proxy_group()).await {
        Ok(value) => setup.stop().await.map(|()| value),
        Err(e) => setup.fail(e).await,
    }
}
