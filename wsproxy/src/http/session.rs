//! One accepted connection: TLS detection, HTTP (the upgrade, static files or 405), then the relay.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tracing::{debug, info, warn};

use crate::auth::Peer;
use crate::config::MetricsAt;
use crate::gate;
use crate::http::web::{Body, text_response};
use crate::http::{handshake, recordings};
use crate::listener::Plain;
use crate::ops::metrics::{Outcome, Refusal, Tally};
use crate::relay::frame::{ControlFrame, close};
use crate::relay::tap::Tap;
use crate::relay::{End, Payload, Relay};
use crate::route::{Destination, Resolved};
use crate::server::Shared;
use crate::share::Upstream;
use crate::target;

/// A client connection after TLS detection.
pub type ClientStream = Either<Plain, Box<TlsStream<Plain>>>;

/// Largest request head accepted (hyper answers 431 beyond it); browsers send 1-2 KiB.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Serves one accepted connection to the end. Errors are logged here and never reach the accept loop.
pub async fn serve(shared: Arc<Shared>, stream: Plain, id: u64, _permit: OwnedSemaphorePermit) {
    let mut tally = Tally::new(shared.config.metrics.as_deref());
    let limit = shared.config.handshake_timeout;
    let client = match tokio::time::timeout(limit, detect_tls(&shared, stream, &mut tally)).await {
        Ok(Ok(Some(client))) => client,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return debug!("handshake failed: {e}"),
        Err(_) => return debug!("no TLS or HTTP request within {limit:?}; closed"),
    };

    let peer = Arc::new(peer_of(&shared, &client));
    let conn: Arc<Mutex<Conn>> = Arc::default();
    let service = service_fn({
        let shared = shared.clone();
        let conn = conn.clone();
        move |req| respond(shared.clone(), peer.clone(), conn.clone(), req)
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limit)
        .max_buf_size(MAX_REQUEST_HEAD);
    let http_conn = http.serve_connection(TokioIo::new(client), service).with_upgrades();
    let cancelled = tokio::select! {
        result = http_conn => {
            if let Err(e) = result {
                debug!("HTTP connection ended: {e}");
            }
            false
        }
        () = shared.cancel.cancelled() => true,
    };

    let (pending, answered) = match conn.lock() {
        Ok(mut conn) => (conn.upgrade.take(), conn.answered),
        Err(_) => (None, None),
    };
    if let Some(answered) = answered {
        tally.outcome = answered;
    }
    let Some(Upgrade {
        pending,
        resolved,
        payload,
    }) = pending.filter(|_| !cancelled)
    else {
        return;
    };
    tally.outcome = Outcome::HandshakeFailed;
    let upgraded = match pending.await {
        Ok(upgraded) => upgraded,
        Err(e) => return debug!("upgrade failed: {e}"),
    };
    match upgraded.downcast::<TokioIo<ClientStream>>() {
        Ok(parts) => {
            tally.upgraded();
            // `read_buf` shares hyper's 8 KiB read buffer: keep the early bytes, not the buffer, or every
            // idle session holds 8 KiB more (measured by `wsproxy-bench idle`: 7.15 → 3.09 KiB per session).
            let early = parts.read_buf.to_vec();
            drop(parts.read_buf);
            relay(
                &shared,
                parts.io.into_inner(),
                &early,
                id,
                resolved,
                payload,
                &mut tally,
            )
            .await
        }
        Err(_) => warn!("internal error: upgraded connection has an unexpected type"),
    }
}

/// Peeks at the first byte: 0x16 (TLS handshake record) or 0x80 (SSLv2-style hello) means TLS, so
/// ws:// and wss:// share one port as in websockify.
async fn detect_tls(shared: &Shared, stream: Plain, tally: &mut Tally<'_>) -> io::Result<Option<ClientStream>> {
    let first = match &stream {
        Either::Left(tcp) => peek_tcp(tcp).await?,
        Either::Right(unix) => peek_unix(unix).await?,
    };
    let Some(first) = first else { return Ok(None) };
    let is_tls = first == 0x16 || first == 0x80;
    match (&shared.config.tls, is_tls) {
        (Some(tls), true) => {
            // Until the handshake completes (or times out), its end is a TLS failure.
            tally.outcome = Outcome::TlsFailed;
            let tls = tls.acceptor().accept(stream).await?;
            tally.outcome = Outcome::HandshakeFailed;
            Ok(Some(Either::Right(Box::new(tls))))
        }
        (None, true) => {
            warn!("TLS client, but no certificate is configured: start wsproxy with --cert FILE");
            tally.outcome = Outcome::TlsFailed;
            Ok(None)
        }
        (_, false) if shared.config.ssl_only => {
            tally.outcome = Outcome::Refused(Refusal::TlsRequired);
            let mut stream = stream;
            let body = "This port only accepts TLS: use wss:// or https://\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await?;
            debug!("plain client refused by --ssl-only");
            Ok(None)
        }
        (_, false) => Ok(Some(Either::Left(stream))),
    }
}

async fn peek_tcp(stream: &TcpStream) -> io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    Ok((stream.peek(&mut byte).await? == 1).then_some(byte[0]))
}

async fn peek_unix(stream: &UnixStream) -> io::Result<Option<u8>> {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    loop {
        stream.readable().await?;
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            nix::sys::socket::recv(stream.as_raw_fd(), &mut byte, nix::sys::socket::MsgFlags::MSG_PEEK)
                .map_err(io::Error::from)
        });
        match peeked {
            Ok(n) => return Ok((n == 1).then_some(byte[0])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One REST API call, answered by the sessions API's router.
pub async fn api_call(api: axum::Router, secure: bool, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let mut req = req.map(axum::body::Body::new);
    req.extensions_mut().insert(crate::sessions::api::Origin { secure });
    let response = match api.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    debug!("{method} {uri} {}", response.status().as_u16());
    Ok(response.map(|body| body.map_err(std::io::Error::other).boxed_unsync()))
}

/// An accepted upgrade: the connection hyper hands over, and where it goes.
struct Upgrade {
    pending: OnUpgrade,
    resolved: Resolved,
    payload: Payload,
}

/// What the requests of one connection left for `serve`: the upgrade to relay, and how the last
/// request was answered (the connection's outcome in the metrics if it ends there).
#[derive(Default)]
struct Conn {
    upgrade: Option<Upgrade>,
    answered: Option<Outcome>,
}

impl Conn {
    fn answered(conn: &Mutex<Conn>, outcome: Outcome) {
        if let Ok(mut conn) = conn.lock() {
            conn.answered = Some(outcome);
        }
    }
}

/// Who is connecting, for the auth step: the address, and a verified client certificate's name.
fn peer_of(shared: &Shared, client: &ClientStream) -> Peer {
    let ip = match client {
        Either::Left(plain) => tcp_ip(plain),
        Either::Right(tls) => tcp_ip(tls.get_ref().0),
    };
    let cert_cn = match client {
        Either::Right(tls) if shared.config.auth.as_ref().is_some_and(|a| a.needs_client_cert()) => tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(crate::auth::common_name),
        _ => None,
    };
    Peer {
        ip,
        cert_cn,
        tls: matches!(client, Either::Right(_)),
    }
}

fn tcp_ip(plain: &Plain) -> Option<std::net::IpAddr> {
    match plain {
        Either::Left(tcp) => tcp.peer_addr().ok().map(|a| a.ip().to_canonical()),
        Either::Right(_) => None,
    }
}

/// Answers one HTTP request: the WebSocket upgrade, a static file, or 405.
async fn respond(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    conn: Arc<Mutex<Conn>>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(api) = &shared.api
        && req.uri().path().starts_with("/api/")
    {
        Conn::answered(&conn, Outcome::Http);
        let secure = shared.config.tls.is_some() && peer.tls;
        return api_call(api.clone(), secure, req).await;
    }
    if let Some(metrics) = &shared.config.metrics
        && shared.config.metrics_at == Some(MetricsAt::SamePort)
        && req.uri().path() == "/metrics"
    {
        Conn::answered(&conn, Outcome::Http);
        let refused = shared
            .config
            .sessions
            .as_ref()
            .and_then(|sessions| crate::sessions::api::bearer_refusal(sessions, req.headers()));
        let response = match refused {
            Some(refused) => {
                use http_body_util::BodyExt;
                refused.map(|body| body.map_err(std::io::Error::other).boxed_unsync())
            }
            None => metrics.respond(req.method()),
        };
        debug!("{} {} {}", req.method(), req.uri(), response.status().as_u16());
        return Ok(response);
    }
    if let Some(sessions) = &shared.config.sessions
        && let Some(cluster) = sessions.cluster()
        && crate::sessions::cluster::is_forward(req.uri().path(), req.headers())
    {
        Conn::answered(&conn, Outcome::Http);
        return Ok(crate::http::forward::serve(sessions, cluster, &shared.config.share, req).await);
    }
    let response = if handshake::is_upgrade(req.method(), req.headers()) {
        let response = handshake::accept(req.headers());
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            Conn::answered(&conn, Outcome::HandshakeFailed);
            response
        } else {
            match gate::admit_upgrade(&shared, &peer, req.uri(), req.headers()).await {
                Ok(resolved) => {
                    if let Ok(mut conn) = conn.lock() {
                        conn.upgrade = Some(Upgrade {
                            pending: hyper::upgrade::on(&mut req),
                            resolved,
                            payload: handshake::payload(&response),
                        });
                    }
                    response
                }
                Err(reject) => {
                    Conn::answered(&conn, Outcome::Refused(Refusal::of(reject.status)));
                    reject.into_response()
                }
            }
        }
    } else if let Some(web) = &shared.config.web {
        Conn::answered(&conn, Outcome::Http);
        if let Err(reject) = gate::admit_file(&shared, &peer, req.headers()).await {
            let response = reject.into_response();
            debug!("{} {} {}", req.method(), req.uri(), response.status().as_u16());
            return Ok(response);
        }
        let (parts, _body) = req.into_parts();
        let response = match &shared.config.recordings {
            Some(recordings) if parts.uri.path().starts_with(recordings::PREFIX) => recordings.respond(&parts).await,
            _ => web.respond(&parts).await,
        };
        debug!("{} {} {}", parts.method, parts.uri, response.status().as_u16());
        return Ok(response);
    } else {
        Conn::answered(&conn, Outcome::Http);
        text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed: this port accepts WebSocket connections only (start wsproxy with --web DIR to serve files)",
        )
    };
    debug!("{} {} {}", req.method(), req.uri(), response.status().as_u16());
    Ok(response)
}

/// How long an on-demand session's target may be at end of stream before the relay closes with 1000
/// anyway: the session's end (its command exited: 1011 and the status) usually comes in milliseconds.
const SESSION_EOF_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The WebSocket session: connect to the target, relay, log one line at open and one at close.
async fn relay(
    shared: &Shared,
    mut client: ClientStream,
    early: &[u8],
    id: u64,
    resolved: Resolved,
    payload: Payload,
    tally: &mut Tally<'_>,
) {
    let config = &shared.config;
    shared.session_opened();
    let started = Instant::now();
    let named = resolved.to_string();
    let lease = match &resolved.destination {
        Destination::Session(lease) => Some(lease),
        Destination::Target(_) => None,
    };
    // Boxed: connecting (TLS, a WebSocket handshake, a session's launch) takes kilobytes of state
    // that a running session's task would otherwise keep.
    let connect = Box::pin(async {
        match &resolved.destination {
            Destination::Target(target) => target::connect(target, &config.target_tls, shared.wrapped.as_ref())
                .await
                .map_err(|e| {
                    (
                        format!("cannot connect to target {named}: {e}"),
                        "Failed to connect to downstream server".to_owned(),
                    )
                }),
            Destination::Session(lease) => lease
                .connect()
                .await
                .map_err(|reason| (format!("{named}: {reason}"), reason)),
        }
    });
    // A shared target: a window on the connection the first window made (`crate::share`).
    let connected = match config.share.key(&resolved) {
        Some(key) => Box::pin(config.share.open(key, connect)).await,
        None => connect.await.map(Upstream::Own),
    };
    let target = match connected {
        Ok(target) => target,
        Err((log, reason)) => {
            warn!("{log}");
            tally.outcome = Outcome::TargetFailed;
            // As websockify: the handshake already succeeded, so the failure is a close frame.
            Box::pin(refuse(
                &mut client,
                close::INTERNAL_ERROR,
                &reason,
                config.relay.close_timeout,
            ))
            .await;
            shared.session_closed();
            return;
        }
    };
    info!("open: relaying to {named}");
    tally.outcome = Outcome::Relayed;
    let tap = Tap::new(config.record.as_ref(), id, config.traffic).unwrap_or_else(|e| {
        warn!("cannot record this session: {e}");
        None
    });
    let websocket = matches!(target, Upstream::Own(Either::Right(_)));
    let lagged = target.lagged();
    let mut relay = Relay::with_payload(client, target, early, config.relay, tap, payload);
    if lease.is_some() || websocket {
        relay.hold_target_eof();
    }
    let mut cancelled = std::pin::pin!(shared.cancel.cancelled());
    // The session behind the target ended, or this window fell too far behind a shared target.
    let mut ended = std::pin::pin!(async {
        let session = async {
            match lease {
                Some(lease) => lease.ended().await,
                None => std::future::pending().await,
            }
        };
        let behind = async {
            match &lagged {
                Some(lagged) => lagged.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            end = session => end,
            end = behind => end,
        }
    });
    let mut eof_wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut going_away = false;
    let mut session_over = false;
    let report = poll_fn(|cx| {
        if !going_away && cancelled.as_mut().poll(cx).is_ready() {
            going_away = true;
            relay.go_away();
        }
        if !session_over && let std::task::Poll::Ready((code, reason)) = ended.as_mut().poll(cx) {
            session_over = true;
            relay.session_ended(code, &reason);
        }
        let polled = relay.poll_relay(cx);
        if polled.is_pending() && relay.target_eof_held() && !session_over {
            // A WebSocket target's close code reaches the client as it is.
            if let Upstream::Own(Either::Right(ws)) = relay.target()
                && let Some(code) = ws.closed_by().and_then(|close| close.code)
            {
                let reason = ws.closed_by().map(|close| close.reason.clone()).unwrap_or_default();
                session_over = true;
                relay.target_closed_with(code, &reason);
                return relay.poll_relay(cx);
            }
            if lease.is_none() {
                session_over = true;
                relay.target_closed();
                return relay.poll_relay(cx);
            }
            let wait = eof_wait.get_or_insert_with(|| Box::pin(tokio::time::sleep(SESSION_EOF_GRACE)));
            if wait.as_mut().poll(cx).is_ready() {
                session_over = true;
                relay.target_closed();
                return relay.poll_relay(cx);
            }
        }
        polled
    })
    .await;
    // The relay's parts (the recording among them) are finished before the session is logged closed.
    let (client, target) = relay.into_parts();
    info!(
        "closed: {}; {} bytes to target, {} bytes to client, {:.1}s",
        report.end,
        report.to_target,
        report.to_client,
        started.elapsed().as_secs_f64()
    );
    if let Some(metrics) = &shared.config.metrics {
        metrics.session_ended(report.to_target, report.to_client, started.elapsed());
    }
    shared.session_closed();
    match target {
        Upstream::Own(Either::Right(mut ws)) => {
            let (code, reason) = close_for_target(&report.end);
            let wait = config.relay.close_timeout;
            // Boxed, as connecting: only a closing session needs the close handshake's state.
            Box::pin(async { tokio::join!(linger(client), ws.close(code, reason, wait)) }).await;
        }
        other => {
            // Let go of the target (a shared console's window, a connection) before lingering.
            drop(other);
            linger(client).await;
        }
    }
}

/// The close frame a WebSocket target gets when the session ends: the client's own close, else
/// 1001 (going away). When the target closed first, only its reply goes out.
fn close_for_target(end: &End) -> (Option<u16>, &str) {
    match end {
        End::ClientClosed(code, reason) => (*code, reason),
        End::Shutdown => (Some(close::GOING_AWAY), "Server shutting down"),
        End::SessionEnded(_) => (Some(close::GOING_AWAY), "Session ended"),
        End::TargetClosed | End::TargetClosedWith(..) | End::TargetError(_) => (Some(close::NORMAL), ""),
        End::ClientGone | End::ClientError(_) | End::Refused(_) | End::HeartbeatTimeout => {
            (Some(close::GOING_AWAY), "Client gone")
        }
    }
}

/// How long a closed session keeps reading what the client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A lingering close, as nginx does: our close frame is written and our half shut, but closing the
/// socket while unread client bytes wait in the kernel would answer them with a reset, which can
/// destroy the close frame before the client reads it. So read and discard until the client's end
/// of stream, for at most `LINGER`.
async fn linger(mut client: ClientStream) {
    // On the heap: an array here would be part of every session's task, lingering or not.
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Sends a close frame on a session that never reached the relay, then waits (bounded) for the
/// client to hang up so the frame is not lost to a TCP reset.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(client: &mut S, code: u16, reason: &str, wait: std::time::Duration) {
    let frame = ControlFrame::close(code, reason);
    let _ = tokio::time::timeout(wait, async {
        client.write_all(frame.as_bytes()).await?;
        client.shutdown().await?;
        let mut sink = vec![0u8; 512];
        while client.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}
