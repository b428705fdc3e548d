//! The resolve step: which target a WebSocket request goes to.
//!
//! Without a token plugin every request goes to the one static target. With `--token-plugin` the
//! request carries a token (the `token` query parameter on any path, or the Host header with
//! `--host-token`) and a [`TokenSource`] names the target. Each of websockify's plugins is a small
//! module behind that trait; a later resolver (on-demand sessions) is one more implementation.
//!
//! Failures are HTTP answers sent before the upgrade, never a silent close as in websockify: no
//! token 400, an unknown, expired or not-yet-valid token 404, a source that cannot answer (Redis
//! down, a token API timing out) 503 within `--token-timeout`; the next request asks again.

mod file_name;
mod socket_dir;
mod token_api;
mod token_file;
mod token_jwt;
mod token_redis;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use http::{HeaderMap, StatusCode, Uri};

use crate::config::{Target, parse_target};
use crate::http::reject::Reject;
use crate::ops::metrics::{LookupResult, Metrics};
use crate::ops::reload::Live;
use crate::sessions::manager::Lease;

pub use token_file::parse_line;

/// A token plugin: a token in, a target out.
pub trait TokenSource: Send + Sync {
    /// The target `token` names. Called once per WebSocket request; must not block the thread.
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a>;
}

pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Target, LookupError>> + Send + 'a>>;

/// Why a lookup gave no target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The source answered: no such token (or expired, not yet valid, malformed). The text is the
    /// client's one-line reason.
    Unknown(String),
    /// The source could not answer (down, timing out, an I/O error): 503, try again later.
    Unavailable(String),
}

impl LookupError {
    pub fn unknown() -> Self {
        LookupError::Unknown("Unknown token".into())
    }
}

/// Where the token is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFrom {
    /// The `token` query parameter (noVNC: `path=websockify?token=...`).
    Query,
    /// `--host-token`: the Host header without its port.
    Host,
}

/// websockify's token plugins, by the names its `--token-plugin` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    ReadOnlyTokenFile,
    TokenFile,
    TokenFileName,
    BaseTokenApi,
    JsonTokenApi,
    JwtTokenApi,
    TokenRedis,
    UnixDomainSocketDirectory,
}

impl Plugin {
    const ALL: [(&'static str, Plugin); 8] = [
        ("ReadOnlyTokenFile", Plugin::ReadOnlyTokenFile),
        ("TokenFile", Plugin::TokenFile),
        ("TokenFileName", Plugin::TokenFileName),
        ("BaseTokenAPI", Plugin::BaseTokenApi),
        ("JSONTokenApi", Plugin::JsonTokenApi),
        ("JWTTokenApi", Plugin::JwtTokenApi),
        ("TokenRedis", Plugin::TokenRedis),
        ("UnixDomainSocketDirectory", Plugin::UnixDomainSocketDirectory),
    ];

    /// `TokenFile` or websockify's dotted `websockify.token_plugins.TokenFile`.
    pub fn from_class(class: &str) -> Result<Plugin, String> {
        let short = class.strip_prefix("websockify.token_plugins.").unwrap_or(class);
        Plugin::ALL
            .iter()
            .find(|(name, _)| *name == short)
            .map(|(_, plugin)| *plugin)
            .ok_or_else(|| {
                let names: Vec<&str> = Plugin::ALL.iter().map(|(name, _)| *name).collect();
                format!(
                    "unknown --token-plugin {class:?}: wsproxy has {} (custom Python plugins cannot be loaded)",
                    names.join(", ")
                )
            })
    }

    /// Whether the source keeps what it read from files (token files, a JWT key), so that a reload
    /// has something to read again; the others ask their directory, API or Redis on every lookup.
    pub fn reads_files(self) -> bool {
        matches!(
            self,
            Plugin::ReadOnlyTokenFile | Plugin::TokenFile | Plugin::JwtTokenApi
        )
    }

    pub fn name(self) -> &'static str {
        Plugin::ALL
            .iter()
            .find(|(_, plugin)| *plugin == self)
            .map_or("?", |(name, _)| name)
    }

    /// Builds the source from `--token-source`; a missing file or a bad argument is a start-up error.
    pub fn open(self, source: &str, timeout: Duration) -> Result<Box<dyn TokenSource>, String> {
        let path = || std::path::absolute(source).map_err(|e| format!("bad --token-source {source:?}: {e}"));
        Ok(match self {
            Plugin::ReadOnlyTokenFile => Box::new(token_file::TokenFile::read_only(path()?)?),
            Plugin::TokenFile => Box::new(token_file::TokenFile::reloading(path()?)?),
            Plugin::TokenFileName => Box::new(file_name::TokenFileName::new(path()?)?),
            Plugin::BaseTokenApi => Box::new(token_api::TokenApi::new(source, token_api::Body::Plain, timeout)?),
            Plugin::JsonTokenApi => Box::new(token_api::TokenApi::new(source, token_api::Body::Json, timeout)?),
            Plugin::JwtTokenApi => Box::new(token_jwt::JwtTokens::new(path()?)?),
            Plugin::TokenRedis => Box::new(token_redis::TokenRedis::new(source, timeout)?),
            Plugin::UnixDomainSocketDirectory => Box::new(socket_dir::SocketDirectory::new(path()?)?),
        })
    }
}

/// How a request finds its target.
pub enum Route {
    /// One target for every request (the command line's, or the wrapped command's).
    Static(Target),
    Tokens(TokenRoute),
    /// `--sessions FILE`: tokens name on-demand sessions (`crate::sessions`).
    Sessions(PathBuf),
}

pub struct TokenRoute {
    pub from: TokenFrom,
    pub plugin: Plugin,
    /// `--token-source`, for the start-up line and to open it again on a reload.
    pub source: String,
    /// Replaced whole by a reload; a lookup uses the one current when it starts.
    pub lookup: Live<Box<dyn TokenSource>>,
    /// Bounds every lookup: a source that does not answer in time is a 503.
    pub timeout: Duration,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Static(target) => target.fmt(f),
            Route::Tokens(tokens) => {
                let from = match tokens.from {
                    TokenFrom::Query => "?token=",
                    TokenFrom::Host => "the Host header",
                };
                write!(
                    f,
                    "the targets {} {} names (tokens from {from})",
                    tokens.plugin.name(),
                    tokens.source
                )
            }
            Route::Sessions(file) => write!(f, "the on-demand sessions of {}", file.display()),
        }
    }
}

impl Route {
    /// The static target, if there is one (wrap mode checks it).
    pub fn static_target(&self) -> Option<&Target> {
        match self {
            Route::Static(target) => Some(target),
            Route::Tokens(_) | Route::Sessions(_) => None,
        }
    }

    /// The target of one upgrade request, or the HTTP answer that refuses it. A token lookup is
    /// counted in `metrics` by its result.
    pub async fn resolve(&self, uri: &Uri, headers: &HeaderMap, metrics: Option<&Metrics>) -> Result<Resolved, Reject> {
        let tokens = match self {
            Route::Static(target) => {
                return Ok(Resolved {
                    destination: Destination::Target(target.clone()),
                    token: None,
                });
            }
            Route::Tokens(tokens) => tokens,
            Route::Sessions(_) => {
                return Err(Reject::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "sessions are resolved by the gate",
                ));
            }
        };
        let token = match tokens.from {
            TokenFrom::Query => query_token(uri.query()),
            TokenFrom::Host => host_token(headers),
        };
        let Some(token) = token else {
            let hint = match tokens.from {
                TokenFrom::Query => "No token: add ?token=TOKEN to the WebSocket URL",
                TokenFrom::Host => "No token: the Host header names the target (--host-token)",
            };
            return Err(Reject::new(StatusCode::BAD_REQUEST, hint));
        };
        let label = TokenLabel::of(&token);
        let source = tokens.lookup.get();
        let looked_up = tokio::time::timeout(tokens.timeout, source.lookup(&token)).await;
        if let Some(metrics) = metrics {
            metrics.token_lookup(match &looked_up {
                Ok(Ok(_)) => LookupResult::Found,
                Ok(Err(LookupError::Unknown(_))) => LookupResult::Unknown,
                Ok(Err(LookupError::Unavailable(_))) => LookupResult::Unavailable,
                Err(_) => LookupResult::Timeout,
            });
        }
        match looked_up {
            Ok(Ok(target)) => Ok(Resolved {
                destination: Destination::Target(target),
                token: Some(label),
            }),
            Ok(Err(LookupError::Unknown(reason))) => {
                tracing::info!("refused {label}: {reason}");
                Err(Reject::new(StatusCode::NOT_FOUND, &reason).guessing())
            }
            Ok(Err(LookupError::Unavailable(reason))) => {
                tracing::warn!("token source unavailable for {label}: {reason}");
                Err(Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("The token source cannot answer ({reason}); try again later"),
                ))
            }
            Err(_) => {
                let limit = tokens.timeout;
                tracing::warn!("token source did not answer for {label} within {limit:?}");
                Err(Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("The token source did not answer within {limit:?}; try again later"),
                ))
            }
        }
    }
}

/// Where a request goes, and the token that named it (for the log).
pub struct Resolved {
    pub destination: Destination,
    pub token: Option<TokenLabel>,
}

/// A target to connect to, or an on-demand session (launched on its first connection).
pub enum Destination {
    Target(Target),
    Session(Lease),
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.destination {
            Destination::Target(target) => target.fmt(f)?,
            Destination::Session(lease) => write!(f, "session {}", lease.session())?,
        }
        match &self.token {
            Some(label) => write!(f, " ({label})"),
            None => Ok(()),
        }
    }
}

/// How logs name a token: a short hash, so a log never lets anyone in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLabel(String);

impl TokenLabel {
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let hex: String = digest.as_ref()[..3].iter().map(|b| format!("{b:02x}")).collect();
        TokenLabel(format!("token#{hex}"))
    }
}

impl fmt::Display for TokenLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first `token` query parameter, percent-decoded (`+` is a space, as Python's `parse_qs`),
/// trailing newlines stripped as websockify does. An empty value is no token.
pub fn query_token(query: Option<&str>) -> Option<String> {
    let value = query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| form_decode(name).as_deref() == Some("token"))?
        .1;
    let decoded = form_decode(value)?;
    let token = decoded.trim_end_matches('\n');
    (!token.is_empty()).then(|| token.to_owned())
}

/// The Host header without its port; an IPv6 literal loses its brackets (`[::1]:6080` is `::1`).
fn host_token(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        host.split(':').next().unwrap_or(host)
    };
    (!name.is_empty()).then(|| name.to_owned())
}

/// `application/x-www-form-urlencoded` decoding; `None` for invalid UTF-8 after decoding.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex(bytes[i + 1]).is_some() && hex(bytes[i + 2]).is_some() => {
                out.push(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A target as token sources write it: `host:port`, `[v6]:port`, `v6:port` (websockify's
/// `rsplit(':', 1)`), or `unix_socket:/path` for a UNIX socket.
pub fn parse_token_target(text: &str) -> Result<Target, String> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix("unix_socket:") {
        if path.is_empty() {
            return Err("unix_socket: needs a path".into());
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    parse_target(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_follow_parse_qs() {
        assert_eq!(query_token(Some("token=abc")).as_deref(), Some("abc"));
        assert_eq!(
            query_token(Some("x=1&token=a%2Fb&token=second")).as_deref(),
            Some("a/b")
        );
        assert_eq!(query_token(Some("token=a+b%0A%0A")).as_deref(), Some("a b"));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(Some("tokens=x")), None);
        assert_eq!(query_token(None), None);
        assert_eq!(query_token(Some("token=%zz")).as_deref(), Some("%zz"));
    }

    #[test]
    fn host_tokens_drop_the_port() {
        let parts = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("host", host.parse().unwrap());
            headers
        };
        assert_eq!(
            host_token(&parts("desk1.example:6080")).as_deref(),
            Some("desk1.example")
        );
        assert_eq!(host_token(&parts("desk1")).as_deref(), Some("desk1"));
        assert_eq!(host_token(&parts("[::1]:6080")).as_deref(), Some("::1"));
        assert_eq!(host_token(&parts(":6080")), None);
    }

    #[test]
    fn token_targets() {
        let tcp = |host: &str, port| Target::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(parse_token_target(" vnc1:5901 ").unwrap(), tcp("vnc1", 5901));
        assert_eq!(parse_token_target("[::1]:5901").unwrap(), tcp("::1", 5901));
        assert_eq!(parse_token_target("::1:5901").unwrap(), tcp("::1", 5901));
        assert_eq!(
            parse_token_target("unix_socket:/run/a.sock").unwrap(),
            Target::Unix("/run/a.sock".into())
        );
        assert!(parse_token_target("nohost").is_err());
        assert!(parse_token_target("unix_socket:").is_err());
    }

    #[test]
    fn labels_are_short_hashes() {
        assert_eq!(TokenLabel::of("test").to_string(), "token#9f86d0");
    }

    #[test]
    fn plugin_names() {
        assert_eq!(Plugin::from_class("TokenFile").unwrap(), Plugin::TokenFile);
        assert_eq!(
            Plugin::from_class("websockify.token_plugins.JWTTokenApi").unwrap(),
            Plugin::JwtTokenApi
        );
        let err = Plugin::from_class("mymodule.Custom").unwrap_err();
        assert!(err.contains("TokenRedis"), "{err}");
    }
}
