//! Extractors whose every refusal is the API's JSON error (axum's own answer in `text/plain`):
//! the request body (JSON, at most `BODY_LIMIT`) and the session id in the path.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use super::error::{ApiError, Code};

/// The largest request body the API reads; a reservation is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON request body: 415 when it is declared as something else (no `Content-Type` is taken
/// as JSON), 413 over `BODY_LIMIT`, 400 when it is not the JSON the call takes.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(declared) = req.headers().get(CONTENT_TYPE)
            && !is_json(declared)
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::UnsupportedMediaType,
                format!(
                    "the body must be application/json, not {}",
                    String::from_utf8_lossy(declared.as_bytes())
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Code::PayloadTooLarge,
                    format!("the body is over {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, Code::BadRequest, rejection.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::BadRequest,
                format!(
                    "the body is not the JSON this call takes ({}): {e}",
                    std::any::type_name::<T>().rsplit("::").next().unwrap_or("?")
                ),
            )
        })
    }
}

/// `application/json` or `application/*+json`, with any parameters.
fn is_json(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The `{id}` of `/api/v1/sessions/{id}`. An id that does not decode (`%FF`) names no session: 404.
pub struct SessionId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SessionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(SessionId(id)),
            Err(rejection) => Err(ApiError::not_found(&format!(
                "no such session ({})",
                rejection.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(&HeaderValue::from_static(json)), "{json}");
        }
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "json",
            "",
        ] {
            assert!(!is_json(&HeaderValue::from_static(other)), "{other}");
        }
    }
}
