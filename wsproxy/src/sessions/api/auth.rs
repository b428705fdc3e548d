//! `Authorization: Bearer TOKEN` for every call but the OpenAPI document. Tokens are compared by
//! their SHA-256 digests (the services file may hold only the digest), so the comparison says
//! nothing about how much of a wrong token was right.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::error::ApiError;
use crate::sessions::manager::Manager;
use crate::sessions::services::{Scope, token_digest};

/// Who is calling, from their bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    pub admin: bool,
}

impl Caller {
    /// Whether the caller may see the token and secret of (and stop) a session of `user`.
    pub fn owns(&self, user: &str) -> bool {
        self.admin || self.user == user
    }
}

impl FromRequestParts<Arc<Manager>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, manager: &Arc<Manager>) -> Result<Self, Self::Rejection> {
        caller(manager, &parts.headers)
    }
}

/// The caller a request's `Authorization: Bearer TOKEN` names, or the 401 that refuses it.
pub fn caller(manager: &Manager, headers: &http::HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("this API needs Authorization: Bearer TOKEN"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be Bearer TOKEN"))?;
    let digest = token_digest(token);
    let services = manager.services();
    let found = services
        .api_tokens
        .iter()
        .find(|t| t.sha256 == digest)
        .ok_or_else(|| ApiError::unauthorized("unknown API token"))?;
    Ok(Caller {
        user: found.user.clone(),
        groups: found.groups.clone(),
        admin: found.scopes.contains(&Scope::Admin),
    })
}
