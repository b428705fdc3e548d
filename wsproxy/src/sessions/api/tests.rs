//! The router in process: every error is the JSON error, with the status and headers the OpenAPI
//! document gives (scripts/api-conformance checks the rest against a running wsproxy).

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::router;
use crate::sessions::audit::Audit;
use crate::sessions::manager::Manager;
use crate::sessions::registry::Memory;
use crate::sessions::services;

const SERVICES: &str = r#"
[[api.token]]
token = "admin-token"
scopes = ["admin"]
user = "root"

[[service]]
name = "web"
count = 1
command = ["true"]
target = "127.0.0.1:1"
"#;

fn api() -> axum::Router {
    let services = services::parse(SERVICES).unwrap();
    let manager = Manager::new(
        services,
        std::sync::Arc::new(Memory::default()),
        None,
        Audit::open(None).unwrap(),
    );
    router(Arc::new(manager))
}

/// One call as the admin to `api`: (status, headers, JSON body or Null).
async fn call(
    api: &axum::Router,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("Authorization", "Bearer admin-token");
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    let response = api.clone().oneshot(request.body(body.into()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"))
    };
    (parts.status, parts.headers, json)
}

fn code(json: &serde_json::Value) -> &str {
    json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {json}"))
}

#[tokio::test]
async fn a_method_a_path_lacks_is_a_json_405_with_allow() {
    let api = api();
    let (status, headers, json) = call(&api, "PUT", "/api/v1/sessions/abc", None, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(&json), "method_not_allowed");
    let allow = headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("DELETE"), "{allow}");
    let (status, headers, json) = call(&api, "GET", "/api/v1/shutdown", None, "").await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert_eq!(headers["allow"], "POST");
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let api = api();
    let (status, _, json) = call(&api, "GET", "/api/v1/nothing", None, "").await;
    assert_eq!((status, code(&json)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415_and_no_content_type_is_json() {
    let api = api();
    let body = r#"{"service": "web"}"#;
    for declared in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, _, json) = call(&api, "POST", "/api/v1/sessions", Some(declared), body).await;
        assert_eq!(
            (status, code(&json)),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            "{declared}"
        );
    }
    let (status, headers, json) = call(&api, "POST", "/api/v1/sessions", None, body).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(
        headers["location"],
        format!("/api/v1/sessions/{}", json["id"].as_str().unwrap())
    );
    let (status, headers, json) = call(&api, "POST", "/api/v1/sessions", Some("application/json"), body).await;
    assert_eq!((status, code(&json)), (StatusCode::SERVICE_UNAVAILABLE, "service_full"));
    assert_eq!(headers["retry-after"], "30");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413() {
    let api = api();
    let body = format!(
        r#"{{"service": "web", "options": {{"x": "{}"}}}}"#,
        "a".repeat(super::extract::BODY_LIMIT)
    );
    let (status, _, json) = call(&api, "POST", "/api/v1/sessions", Some("application/json"), body).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
}

#[tokio::test]
async fn a_body_that_is_not_the_json_asked_for_is_a_json_400() {
    let api = api();
    for body in ["", "{", r#"{"service": 1}"#, r#"{"service": "web", "extra": 1}"#] {
        let (status, _, json) = call(&api, "POST", "/api/v1/sessions", Some("application/json"), body).await;
        assert_eq!(
            (status, code(&json)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_id_that_does_not_decode_names_no_session() {
    let api = api();
    for method in ["GET", "DELETE"] {
        let (status, _, json) = call(&api, method, "/api/v1/sessions/%FF", None, "").await;
        assert_eq!((status, code(&json)), (StatusCode::NOT_FOUND, "not_found"), "{method}");
    }
}

#[tokio::test]
async fn no_token_is_a_json_401_with_www_authenticate() {
    let request = Request::builder().uri("/api/v1/services").body(Body::empty()).unwrap();
    let response = api().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"wsproxy\"");
}

/// Every error the document lists is the JSON error, every 401 has `WWW-Authenticate`, and
/// POST /api/v1/sessions lists what `JsonBody` answers.
#[tokio::test]
async fn the_document_lists_the_errors_as_they_are() {
    let request = Request::builder()
        .uri("/api/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let response = api().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let document: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.as_str() < "400" {
                    continue;
                }
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                if status == "401" {
                    assert!(
                        response["headers"]["WWW-Authenticate"].is_object(),
                        "{method} {path} 401"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "{checked}");
    let create = &document["paths"]["/api/v1/sessions"]["post"]["responses"];
    for status in ["400", "413", "415", "429", "503"] {
        assert!(create[status].is_object(), "POST /api/v1/sessions lacks {status}");
    }
    assert!(create["201"]["headers"]["Location"].is_object());
    assert!(create["503"]["headers"]["Retry-After"].is_object());
    let codes = &document["components"]["schemas"]["Code"]["enum"];
    for code in ["method_not_allowed", "unsupported_media_type", "payload_too_large"] {
        assert!(codes.as_array().unwrap().iter().any(|c| c == code), "{code}");
    }
}
