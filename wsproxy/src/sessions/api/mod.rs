//! The REST API under `/api/v1/` (JSON; on the main port, or on `--api-listen`): services,
//! sessions, hosts, shutdown, and the OpenAPI 3 document generated from the handlers (utoipa).

mod auth;
mod error;
mod extract;
mod handlers;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::manager::Manager;

/// How the request reached us: the scheme of the URLs handed back.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub secure: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wsproxy sessions API", description = "Reserve consoles that launch on first connect"),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API's router, with the OpenAPI document at `/api/v1/openapi.json`. Every error, axum's
/// own included (404 for an unknown path, 405 for a method a path lacks), is the JSON error.
pub fn router(manager: Arc<Manager>) -> Router {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::list_services))
        .routes(routes!(handlers::create_session, handlers::list_sessions))
        .routes(routes!(handlers::get_session, handlers::delete_session))
        .routes(routes!(handlers::shutdown))
        .routes(routes!(handlers::list_hosts))
        .routes(routes!(handlers::patch_host))
        .split_for_parts();
    let document = Arc::new(document);
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json((*document).clone()) }
            }),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .with_state(manager)
}

/// `--metrics same-port` with `--sessions`: `/metrics` takes the API's bearer tokens (any scope).
/// The refusal, if any, is the API's (401, JSON, `WWW-Authenticate: Bearer`).
pub fn bearer_refusal(manager: &Manager, headers: &http::HeaderMap) -> Option<axum::response::Response> {
    auth::caller(manager, headers)
        .err()
        .map(axum::response::IntoResponse::into_response)
}

#[cfg(test)]
mod tests;
