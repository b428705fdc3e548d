//! `ExpectOrigin`: the `Origin` header must be one of the listed origins (space-separated), else
//! 403. Browsers always send Origin on WebSocket requests, so this stops other sites' pages from
//! opening consoles with the user's credentials.

use http::{HeaderMap, StatusCode};

use crate::http::reject::Reject;

pub struct ExpectOrigin {
    origins: Vec<String>,
}

impl ExpectOrigin {
    pub fn new(source: &str) -> Result<Self, String> {
        let origins: Vec<String> = source.split_whitespace().map(str::to_owned).collect();
        if origins.is_empty() {
            return Err("ExpectOrigin needs --auth-source \"ORIGIN ...\", e.g. \"https://console.example.org\"".into());
        }
        Ok(ExpectOrigin { origins })
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), Reject> {
        let origin = headers.get(http::header::ORIGIN).and_then(|o| o.to_str().ok());
        match origin {
            Some(origin) if self.origins.iter().any(|o| o == origin) => Ok(()),
            Some(_) => Err(Reject::new(StatusCode::FORBIDDEN, "Invalid Origin")),
            None => Err(Reject::new(
                StatusCode::FORBIDDEN,
                "Invalid Origin: the request has none",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins() {
        let auth = ExpectOrigin::new("https://a.example http://b.example:8080").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(auth.check(&headers).unwrap_err().status, StatusCode::FORBIDDEN);
        headers.insert("origin", "https://a.example".parse().unwrap());
        assert!(auth.check(&headers).is_ok());
        headers.insert("origin", "https://a.example.evil".parse().unwrap());
        assert_eq!(auth.check(&headers).unwrap_err().status, StatusCode::FORBIDDEN);
        assert!(ExpectOrigin::new("  ").is_err());
    }
}
