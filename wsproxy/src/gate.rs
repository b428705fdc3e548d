//! Between the HTTP request and the target: throttle → resolve (which target) → auth (may this
//! client use it). Every refusal is an HTTP answer; failures that look like guessing count
//! towards the address's limit.

use http::header::{HeaderValue, RETRY_AFTER};
use http::{HeaderMap, StatusCode, Uri};

use crate::auth::Peer;
use crate::http::reject::Reject;
use std::sync::Arc;

use crate::ops::metrics::LookupResult;
use crate::route::{Destination, Resolved, TokenLabel, query_token};
use crate::server::Shared;
use crate::sessions::manager::{AttachError, Manager};

/// A WebSocket upgrade request: its target, or the answer that refuses it.
pub async fn admit_upgrade(shared: &Shared, peer: &Peer, uri: &Uri, headers: &HeaderMap) -> Result<Resolved, Reject> {
    throttled(shared, peer)?;
    if let Some(sessions) = &shared.config.sessions {
        // Auth first: a session's first connection launches its command.
        if let Some(auth) = &shared.config.auth {
            count(shared, peer, auth.check(headers, peer).await)?;
        }
        return count(shared, peer, session(shared, sessions, peer, uri).await);
    }
    let metrics = shared.config.metrics.as_deref();
    let resolved = shared.config.route.resolve(uri, headers, metrics).await;
    let checked = match resolved {
        Ok(resolved) => match &shared.config.auth {
            Some(auth) => auth.check(headers, peer).await.map(|()| resolved),
            None => Ok(resolved),
        },
        Err(reject) => Err(reject),
    };
    count(shared, peer, checked)
}

/// `?token=` of an on-demand session: a lease on it (the first one launches its command).
async fn session(shared: &Shared, sessions: &Arc<Manager>, peer: &Peer, uri: &Uri) -> Result<Resolved, Reject> {
    let Some(token) = query_token(uri.query()) else {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "No token: add ?token=TOKEN (the session's token from the API) to the WebSocket URL",
        ));
    };
    let label = TokenLabel::of(&token);
    let attached = sessions.attach(&token, peer.ip).await;
    if let Some(metrics) = &shared.config.metrics {
        metrics.token_lookup(match &attached {
            Ok(_) => LookupResult::Found,
            Err(AttachError::Unknown | AttachError::Ending) => LookupResult::Unknown,
            Err(AttachError::Unavailable(_)) => LookupResult::Unavailable,
        });
    }
    match attached {
        Ok(lease) => Ok(Resolved {
            destination: Destination::Session(lease),
            token: Some(label),
        }),
        Err(AttachError::Unknown) => {
            tracing::info!("refused {label}: no live session has it");
            Err(Reject::new(StatusCode::NOT_FOUND, "Unknown token: no such session, or it has ended").guessing())
        }
        Err(AttachError::Ending) => {
            tracing::info!("refused {label}: its session is ending");
            // Not a guess: the token was good a moment ago.
            Err(Reject::new(
                StatusCode::GONE,
                "The session is ending (stopped, or its command exited): reserve a new one",
            ))
        }
        Err(AttachError::Unavailable(why)) => {
            tracing::warn!("refused {label}: {why}");
            Err(Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The session store is unavailable; try again shortly",
            ))
        }
    }
}

/// A static-file request under `--web-auth`.
pub async fn admit_file(shared: &Shared, peer: &Peer, headers: &HeaderMap) -> Result<(), Reject> {
    let Some(auth) = shared.config.auth.as_ref().filter(|_| shared.config.web_auth) else {
        return Ok(());
    };
    throttled(shared, peer)?;
    let checked = auth.check(headers, peer).await;
    count(shared, peer, checked)
}

fn throttled(shared: &Shared, peer: &Peer) -> Result<(), Reject> {
    let Some(left) = peer.ip.and_then(|ip| shared.throttle.blocked(ip)) else {
        return Ok(());
    };
    let seconds = left.as_secs().max(1);
    Err(Reject::new(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too many unknown tokens or failed logins from this address; try again in {seconds} s"),
    )
    .with_header(RETRY_AFTER, HeaderValue::from(seconds)))
}

fn count<T>(shared: &Shared, peer: &Peer, result: Result<T, Reject>) -> Result<T, Reject> {
    if let (Err(reject), Some(ip)) = (&result, peer.ip)
        && reject.guessing
    {
        shared.throttle.failed(ip);
    }
    result
}
