//! A refused request: the HTTP answer sent instead of the upgrade (or the file), with a one-line
//! `text/plain` reason, so a client learns what went wrong where websockify just closes.

use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::http::web::{Body, text_response};

#[derive(Debug, Clone)]
pub struct Reject {
    pub status: StatusCode,
    pub reason: String,
    /// An extra header (`WWW-Authenticate`, `Retry-After`).
    pub header: Option<(HeaderName, HeaderValue)>,
    /// Counts towards the address's guessing limit (unknown tokens, failed auth).
    pub guessing: bool,
}

impl Reject {
    pub fn new(status: StatusCode, reason: &str) -> Self {
        Reject {
            status,
            reason: reason.to_owned(),
            header: None,
            guessing: false,
        }
    }

    pub fn guessing(mut self) -> Self {
        self.guessing = true;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some((name, value));
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = text_response(self.status, &self.reason);
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
