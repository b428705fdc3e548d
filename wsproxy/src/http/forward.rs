//! The owner's side of a forwarded client (`sessions::cluster`): another instance of the shared
//! store sends `GET /_wsproxy/forward` with a session's token and the store's secret; once the
//! session's command listens, the answer is 101 and the connection becomes a byte stream to it,
//! counted as one of the session's clients until either side closes or the session ends.
//!
//! A shared console's forwarded client is a window on the same shared connection as the clients
//! here (`crate::share`): every window, wherever its browser connected, sees the same output and
//! types into the one connection (`--share-view-only` and the replay apply alike). The forwarding
//! instance only pipes bytes.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use crate::http::web::{Body, empty_body, text_response};
use crate::sessions::cluster::{self, Cluster};
use crate::sessions::manager::Manager;
use crate::share::{Shares, Upstream};

pub async fn serve(
    manager: &Arc<Manager>,
    cluster: &Cluster,
    shares: &Shares,
    mut req: Request<Incoming>,
) -> Response<Body> {
    if !cluster.admits(req.headers()).await {
        return text_response(
            StatusCode::FORBIDDEN,
            "Forbidden: not an instance of this session store",
        );
    }
    let Some(token) = cluster::forwarded_token(req.headers()).map(str::to_owned) else {
        return text_response(StatusCode::BAD_REQUEST, "No session token");
    };
    let lease = match manager.attach(&token, None).await {
        Ok(lease) if lease.is_local() => lease,
        // Never forward a forwarded client again: the sender's idea of the owner is stale.
        Ok(_) | Err(_) => return text_response(StatusCode::NOT_FOUND, "No such session runs here"),
    };
    let connect = async {
        lease
            .connect()
            .await
            .map_err(|reason| (format!("session {}: {reason}", lease.session()), reason))
    };
    let connected = match Shares::session_key(&lease) {
        Some(key) => shares.open(key, connect).await,
        None => connect.await.map(Upstream::Own),
    };
    let target = match connected {
        Ok(target) => target,
        Err((_, reason)) => return text_response(StatusCode::BAD_GATEWAY, &reason),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return debug!("forwarded client: upgrade failed: {e}"),
        };
        let client = TokioIo::new(upgraded);
        let session = lease.session();
        info!("open: forwarded client of session {session}");
        tokio::select! {
            closed = pipe(client, target) => info!("closed: forwarded client of session {session}; {closed}"),
            (_, reason) = lease.ended() => info!("closed: forwarded client of session {session}: {reason}"),
        }
    });
    cluster::switching()
        .body(empty_body())
        .unwrap_or_else(|_| text_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// Copies between the forwarded client and its target until it is over; says how it ended.
async fn pipe<C: AsyncRead + AsyncWrite + Unpin>(mut client: C, target: Upstream) -> String {
    let window = match target {
        Upstream::Own(mut target) => {
            return match tokio::io::copy_bidirectional(&mut client, &mut target).await {
                Ok((up, down)) => format!("{up} bytes to target, {down} bytes to client"),
                Err(e) => e.to_string(),
            };
        }
        Upstream::Shared(window) => window,
    };
    // A window is over when either side is: the client's end of stream leaves the shared
    // connection to the other windows (it never ends while they are open), the connection's end
    // or a dropped window (too far behind) closes the client.
    let lagged = window.lagged();
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut window_read, mut window_write) = tokio::io::split(window);
    tokio::select! {
        up = tokio::io::copy(&mut client_read, &mut window_write) => match up {
            Ok(up) => format!("the client left; {up} bytes to target"),
            Err(e) => e.to_string(),
        },
        down = tokio::io::copy(&mut window_read, &mut client_write) => {
            let _ = client_write.shutdown().await;
            match down {
                Ok(down) => format!("the shared target connection ended; {down} bytes to client"),
                Err(e) => e.to_string(),
            }
        }
        (_, reason) = lagged.wait() => reason,
    }
}
