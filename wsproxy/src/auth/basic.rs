//! `BasicHTTPAuth`: HTTP Basic credentials, `--auth-source user:password` as in websockify, or
//! `--auth-source @FILE`: an htpasswd file of bcrypt entries (`htpasswd -B`), loaded again when it
//! changes. No or wrong credentials: 401 with `WWW-Authenticate: Basic realm="Websockify"`; a
//! header that is not Basic, not base64 or has no `:`: 403 (websockify drops the connection on
//! bad base64). bcrypt runs on the blocking pool: its cost is milliseconds, and the event loop
//! serves every other session meanwhile.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};

use crate::http::reject::Reject;
use crate::reloading::Reloading;

pub enum BasicAuth {
    /// `user:password`; kept as a SHA-256 digest so comparing takes the same time whatever matches.
    One {
        user: String,
        digest: Vec<u8>,
    },
    File(Reloading<HashMap<String, String>>),
}

impl BasicAuth {
    pub fn new(source: &str) -> Result<Self, String> {
        if let Some(path) = source.strip_prefix('@') {
            let path = std::path::absolute(path).map_err(|e| format!("bad --auth-source {source:?}: {e}"))?;
            return Ok(BasicAuth::File(Reloading::new(path, load_htpasswd, true)?));
        }
        let Some((user, _)) = source.split_once(':') else {
            return Err("BasicHTTPAuth needs --auth-source user:password (or @HTPASSWD_FILE)".into());
        };
        Ok(BasicAuth::One {
            user: user.to_owned(),
            digest: sha256(source.as_bytes()),
        })
    }

    pub async fn check(&self, headers: &HeaderMap) -> Result<(), Reject> {
        let Some(header) = headers.get(AUTHORIZATION) else {
            return Err(demand("Unauthorized: this server needs a user name and password"));
        };
        let (user, password) = credentials(header)?;
        let ok = match self {
            BasicAuth::One { user: expected, digest } => {
                let mut given = user.clone().into_bytes();
                given.push(b':');
                given.extend_from_slice(&password);
                // Equal digests, compared in full; the user name alone says nothing.
                sha256(&given) == *digest && user == *expected
            }
            BasicAuth::File(file) => {
                let entries: Arc<HashMap<String, String>> = file.get();
                match entries.get(&user).cloned() {
                    Some(hash) => {
                        tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                            .await
                            .unwrap_or(false)
                    }
                    None => false,
                }
            }
        };
        if ok {
            Ok(())
        } else {
            tracing::info!("wrong user name or password (user {user:?})");
            Err(demand("Unauthorized: wrong user name or password"))
        }
    }
}

fn demand(reason: &str) -> Reject {
    Reject::new(StatusCode::UNAUTHORIZED, reason)
        .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Websockify\""))
}

/// `Basic base64(user:password)`; the user is read as ISO-8859-1 as websockify does.
fn credentials(header: &HeaderValue) -> Result<(String, Vec<u8>), Reject> {
    let malformed = |why: &str| Reject::new(StatusCode::FORBIDDEN, &format!("Forbidden: {why}"));
    let value = header.as_bytes();
    let encoded = value
        .strip_prefix(b"Basic ")
        .ok_or_else(|| malformed("the Authorization header is not Basic"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .map_err(|_| malformed("the Basic credentials are not base64"))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| malformed("the Basic credentials have no ':'"))?;
    let user: String = decoded[..colon].iter().map(|&b| char::from(b)).collect();
    Ok((user, decoded[colon + 1..].to_vec()))
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// `user:$2y$...` lines; other hash kinds are skipped with a warning naming the line.
fn load_htpasswd(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) => {
                users.insert(user.to_owned(), hash.to_owned());
            }
            _ => tracing::warn!(
                "{} line {}: not a bcrypt entry (write it with `htpasswd -B`); skipped",
                path.display(),
                index + 1
            ),
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_pass);
        headers.insert(AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn plain_source() {
        let auth = BasicAuth::new("alice:s3cret:with:colons").unwrap();
        assert!(auth.check(&basic("alice:s3cret:with:colons")).await.is_ok());
        let err = auth.check(&basic("alice:wrong")).await.unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert_eq!(err.header.unwrap().1, "Basic realm=\"Websockify\"");
        assert_eq!(
            auth.check(&HeaderMap::new()).await.unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(auth.check(&headers).await.unwrap_err().status, StatusCode::FORBIDDEN);
        headers.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(auth.check(&headers).await.unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(
            auth.check(&basic("nocolon")).await.unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(BasicAuth::new("nocolon").is_err());
    }

    #[tokio::test]
    async fn htpasswd_bcrypt() {
        let hash = bcrypt::hash_with_result("pw", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let path = std::env::temp_dir().join(format!("wsproxy-htpasswd-{}", std::process::id()));
        std::fs::write(&path, format!("bob:{hash}\nold:{{SHA}}xyz\n")).unwrap();
        let auth = BasicAuth::new(&format!("@{}", path.display())).unwrap();
        assert!(auth.check(&basic("bob:pw")).await.is_ok());
        assert_eq!(
            auth.check(&basic("bob:nope")).await.unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            auth.check(&basic("old:xyz")).await.unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        std::fs::remove_file(path).unwrap();
    }
}
