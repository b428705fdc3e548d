//! One handler per call; each documents itself for the OpenAPI document.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{HOST, LOCATION};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Origin;
use super::auth::Caller;
use super::error::{ApiError, Code, ErrorBody};
use super::extract::{JsonBody, SessionId};
use crate::sessions::manager::{Manager, Refusal, may_use};
use crate::sessions::registry::{Record, ReserveError, StoreError, UpdateError};
use crate::sessions::state::State as SessionState;
use crate::sessions::time::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub count: u32,
    /// Indexes free now.
    pub free: u32,
    /// Sessions starting, running or lingering.
    pub running: u32,
    /// Sessions reserved and not connected yet.
    pub reserved: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub service: String,
    /// Values for the service's options; each must match the option's pattern.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub service: String,
    pub user: String,
    pub index: u32,
    pub state: SessionState,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// While reserved: when it expires unless a client connects.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Open WebSocket connections.
    pub clients: u32,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The WebSocket token; only for the owner and admins.
    pub token: Option<String>,
    /// The generated VNC password; only for the owner and admins.
    pub secret: Option<String>,
    pub urls: Option<Urls>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Urls {
    pub websocket: String,
    /// The service's page on this wsproxy; it connects by itself, the secret in the fragment.
    pub page: String,
}

fn view(
    manager: &Manager,
    record: &Record,
    caller: &Caller,
    host: Option<&str>,
    origin: Option<Origin>,
) -> SessionView {
    let owner = caller.owns(&record.user);
    let live = record.state.accepts_clients();
    let urls = match (owner && live, host) {
        (true, Some(host)) => {
            let secure = origin.is_some_and(|o| o.secure);
            let (ws, http) = if secure { ("wss", "https") } else { ("ws", "http") };
            let page = manager.service(&record.service).map_or("vnc.html", |s| s.page.file());
            let mut page_url = format!(
                "{http}://{host}/{page}?autoconnect=1&path=websockify%3Ftoken%3D{}",
                record.token
            );
            if let Some(secret) = &record.secret {
                page_url.push_str(&format!("#password={secret}"));
            }
            Some(Urls {
                websocket: format!("{ws}://{host}/websockify?token={}", record.token),
                page: page_url,
            })
        }
        _ => None,
    };
    SessionView {
        id: record.id.clone(),
        service: record.service.clone(),
        user: record.user.clone(),
        index: record.index,
        state: record.state,
        created_at: rfc3339(record.created_at),
        expires_at: record.expires_at.map(rfc3339),
        clients: record.all_clients(),
        exit_code: record.exit_code,
        reason: record.reason.clone(),
        token: (owner && live).then(|| record.token.clone()),
        secret: if owner && live { record.secret.clone() } else { None },
        urls,
    }
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(HOST).and_then(|h| h.to_str().ok())
}

/// The services the caller may reserve, with what is free.
#[utoipa::path(get, path = "/api/v1/services", responses(
    (status = 200, body = Vec<ServiceView>),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the shared session store cannot be reached", headers(("Retry-After" = String, description = "seconds"))),
))]
pub async fn list_services(
    State(manager): State<Arc<Manager>>,
    caller: Caller,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    let records = manager.list().await.map_err(unavailable)?;
    let services = manager.services();
    let views = services
        .services
        .iter()
        .filter(|s| caller.admin || may_use(s, &caller.groups))
        .map(|s| {
            let live: Vec<&Record> = records
                .iter()
                .filter(|r| r.service == s.name && !r.state.is_ended())
                .collect();
            let reserved = live.iter().filter(|r| r.state == SessionState::Reserved).count() as u32;
            ServiceView {
                name: s.name.clone(),
                count: s.count,
                free: s.count.saturating_sub(live.len() as u32),
                running: live.len() as u32 - reserved,
                reserved,
            }
        })
        .collect();
    Ok(Json(views))
}

fn unavailable(StoreError(why): StoreError) -> ApiError {
    ApiError::store_unavailable(&why)
}

/// Reserves a session; the first WebSocket connection with its token launches it.
#[utoipa::path(post, path = "/api/v1/sessions", request_body = CreateSession, responses(
    (status = 201, body = SessionView, headers(("Location" = String, description = "the session's URL"))),
    (status = 400, body = ErrorBody, description = "`bad_request`: the body is not this JSON; `bad_option`: an option the service lacks, or a value its pattern refuses"),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over 64 KiB"),
    (status = 415, body = ErrorBody, description = "`unsupported_media_type`: a `Content-Type` other than JSON"),
    (status = 429, body = ErrorBody, description = "`per_user_limit`"),
    (status = 503, body = ErrorBody, description = "`service_full`, or `store_unavailable` (the shared store is down)", headers(("Retry-After" = String, description = "seconds"))),
))]
pub async fn create_session(
    State(manager): State<Arc<Manager>>,
    caller: Caller,
    origin: Option<axum::Extension<Origin>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let record = manager
        .reserve(
            &request.service,
            &caller.user,
            &caller.groups,
            caller.admin,
            request.options,
        )
        .await
        .map_err(|refusal| match refusal {
            Refusal::UnknownService => ApiError::not_found(&format!("no service {:?}", request.service)),
            Refusal::Forbidden => ApiError::forbidden(&format!("service {:?} is only for its groups", request.service)),
            Refusal::BadOption(why) => ApiError::new(StatusCode::BAD_REQUEST, Code::BadOption, why),
            Refusal::Limit(ReserveError::PerUserLimit { limit }) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::PerUserLimit,
                format!("{} already has {limit} session(s) of {}", caller.user, request.service),
            ),
            Refusal::Limit(ReserveError::Store(StoreError(why))) | Refusal::Unavailable(why) => {
                ApiError::store_unavailable(&why)
            }
            Refusal::Limit(ReserveError::Full { count }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::ServiceFull,
                format!(
                    "all {count} sessions of {} are in use; try again later",
                    request.service
                ),
            ),
        })?;
    let location = format!("/api/v1/sessions/{}", record.id);
    let body = view(&manager, &record, &caller, host(&headers), origin.map(|o| o.0));
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(body)).into_response())
}

/// The caller's sessions (every session for admins), ended ones for at least 10 minutes.
#[utoipa::path(get, path = "/api/v1/sessions", responses(
    (status = 200, body = Vec<SessionView>),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the shared session store cannot be reached", headers(("Retry-After" = String, description = "seconds"))),
))]
pub async fn list_sessions(
    State(manager): State<Arc<Manager>>,
    caller: Caller,
    origin: Option<axum::Extension<Origin>>,
    headers: HeaderMap,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let origin = origin.map(|o| o.0);
    let records = manager.list().await.map_err(unavailable)?;
    Ok(Json(
        records
            .iter()
            .filter(|r| caller.owns(&r.user))
            .map(|r| view(&manager, r, &caller, host(&headers), origin))
            .collect(),
    ))
}

/// One session; its token and secret only for its owner and admins.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", params(("id" = String, Path, description = "the session's id, as `POST /api/v1/sessions` gave it")), responses(
    (status = 200, body = SessionView),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 404, body = ErrorBody),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the shared session store cannot be reached", headers(("Retry-After" = String, description = "seconds"))),
))]
pub async fn get_session(
    State(manager): State<Arc<Manager>>,
    caller: Caller,
    origin: Option<axum::Extension<Origin>>,
    headers: HeaderMap,
    SessionId(id): SessionId,
) -> Result<Json<SessionView>, ApiError> {
    let record = manager
        .get(&id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(&format!("no session {id:?}")))?;
    Ok(Json(view(
        &manager,
        &record,
        &caller,
        host(&headers),
        origin.map(|o| o.0),
    )))
}

/// Stops a session: its command is stopped and its clients closed with 1001.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", params(("id" = String, Path, description = "the session's id, as `POST /api/v1/sessions` gave it")), responses(
    (status = 204),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the shared session store cannot be reached", headers(("Retry-After" = String, description = "seconds"))),
))]
pub async fn delete_session(
    State(manager): State<Arc<Manager>>,
    caller: Caller,
    SessionId(id): SessionId,
) -> Result<StatusCode, ApiError> {
    let record = manager
        .get(&id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(&format!("no session {id:?}")))?;
    if !caller.owns(&record.user) {
        return Err(ApiError::forbidden("only its owner or an admin may stop a session"));
    }
    manager
        .stop(&id, "stopped through the API")
        .await
        .map_err(|e| match e {
            UpdateError::Store(e) => unavailable(e),
            _ => ApiError::not_found(&format!("no session {id:?}")),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HostView {
    pub name: String,
    pub address: String,
    /// Its share of new sessions; 0: drained (running sessions stay).
    pub weight: u32,
    /// The services that may launch on it.
    pub services: Vec<String>,
    /// Live sessions on it (of every service).
    pub sessions: u32,
    /// Their ids; only for admins.
    pub session_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostChange {
    /// The new weight, 0 to 1000; 0 drains the host.
    #[serde(deserialize_with = "weight")]
    #[schema(value_type = u32, minimum = 0, maximum = 1000)]
    pub weight: u32,
}

/// The largest weight: a share, not a count.
const MAX_WEIGHT: u32 = 1000;

/// A whole number from 0 to `MAX_WEIGHT`, also when written `3.0` (JSON does not tell integers
/// from other numbers).
fn weight<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 1e6)
                .map(|f| f as u64)
        })
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= MAX_WEIGHT)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number from 0 to {MAX_WEIGHT}")))
}

fn host_views(
    hosts: Vec<(crate::sessions::services::Host, Vec<String>, Vec<Record>)>,
    caller: &Caller,
) -> Vec<HostView> {
    hosts
        .into_iter()
        .map(|(host, services, live)| HostView {
            name: host.name,
            address: host.address,
            weight: host.weight,
            services,
            sessions: live.len() as u32,
            session_ids: caller.admin.then(|| live.into_iter().map(|r| r.id).collect()),
        })
        .collect()
}

/// The hosts services launch on (placement), with their weights and sessions.
#[utoipa::path(get, path = "/api/v1/hosts", responses(
    (status = 200, body = Vec<HostView>),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the shared session store cannot be reached", headers(("Retry-After" = String, description = "seconds"))),
))]
pub async fn list_hosts(State(manager): State<Arc<Manager>>, caller: Caller) -> Result<Json<Vec<HostView>>, ApiError> {
    let hosts = manager.hosts().await.map_err(unavailable)?;
    Ok(Json(host_views(hosts, &caller)))
}

/// Changes a host's weight for every instance sharing the store (admin); 0 drains it.
#[utoipa::path(patch, path = "/api/v1/hosts/{name}", params(("name" = String, Path, description = "the host's name in the services file")), request_body = HostChange, responses(
    (status = 200, body = HostView),
    (status = 400, body = ErrorBody, description = "`bad_request`: the body is not this JSON"),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 413, body = ErrorBody, description = "`payload_too_large`: the body is over 64 KiB"),
    (status = 415, body = ErrorBody, description = "`unsupported_media_type`: a `Content-Type` other than JSON"),
    (status = 503, body = ErrorBody, description = "`store_unavailable`: the shared session store cannot be reached", headers(("Retry-After" = String, description = "seconds"))),
))]
pub async fn patch_host(
    State(manager): State<Arc<Manager>>,
    caller: Caller,
    SessionId(name): SessionId,
    JsonBody(change): JsonBody<HostChange>,
) -> Result<Json<HostView>, ApiError> {
    if !caller.admin {
        return Err(ApiError::forbidden("changing a host's weight needs the admin scope"));
    }
    manager.set_weight(&name, change.weight).await.map_err(|e| match e {
        UpdateError::Store(e) => unavailable(e),
        _ => ApiError::not_found(&format!("no host {name:?}")),
    })?;
    let hosts = manager.hosts().await.map_err(unavailable)?;
    let views = host_views(hosts, &caller);
    views
        .into_iter()
        .find(|h| h.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(&format!("no host {name:?}")))
}

/// Stops every session and the server (admin).
#[utoipa::path(post, path = "/api/v1/shutdown", responses(
    (status = 202),
    (status = 401, body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wsproxy\"`"))),
    (status = 403, body = ErrorBody),
))]
pub async fn shutdown(State(manager): State<Arc<Manager>>, caller: Caller) -> Result<StatusCode, ApiError> {
    if !caller.admin {
        return Err(ApiError::forbidden("shutdown needs the admin scope"));
    }
    tracing::info!("shutdown requested through the API by {}", caller.user);
    manager.shutdown.cancel();
    Ok(StatusCode::ACCEPTED)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such API call; see /api/v1/openapi.json")
}

/// A path of the API with a method it lacks; axum adds the `Allow` header.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::MethodNotAllowed,
        format!(
            "{method} is not allowed on {}; the Allow header lists what is",
            uri.path()
        ),
    )
}
