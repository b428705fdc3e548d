//! The owner's side of a forwarded client (`sessions::cluster`): another instance of the shared
//! store sends `GET /_wsproxy/forward` with a session's token and the store's secret; once the
//! session's command listens, the answer is 101 and the connection becomes a byte stream to it,
//! counted as one of the session's clients until either side closes or the session ends.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

use crate::http::web::{Body, empty_body, text_response};
use crate::sessions::cluster::{self, Cluster};
use crate::sessions::manager::Manager;

pub async fn serve(manager: &Arc<Manager>, cluster: &Cluster, mut req: Request<Incoming>) -> Response<Body> {
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
    let target = match lease.connect().await {
        Ok(target) => target,
        Err(reason) => return text_response(StatusCode::BAD_GATEWAY, &reason),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return debug!("forwarded client: upgrade failed: {e}"),
        };
        let mut client = TokioIo::new(upgraded);
        let mut target = target;
        info!("open: forwarded client of session {}", lease.session());
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut target) => {
                if let Ok((up, down)) = copied {
                    info!("closed: forwarded client of session {}; {up} bytes to target, {down} bytes to client", lease.session());
                }
            }
            (_, reason) = lease.ended() => info!("closed: forwarded client of session {}: {reason}", lease.session()),
        }
    });
    cluster::switching()
        .body(empty_body())
        .unwrap_or_else(|_| text_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}
