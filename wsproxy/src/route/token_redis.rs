//! `TokenRedis`: `GET [namespace:]token` from Redis; the value is `{"host": "h:p"}` or `h:p`.
//!
//! The source is websockify's `host[:port[:db[:password[:namespace]]]]`; a field may be
//! double-quoted to hold colons (an IPv6 host, a password), an empty field takes the default
//! (6379, 0, none, none). Unlike websockify, which opens a client per lookup, one multiplexed
//! connection is kept and shared by every lookup (`redis_link`), each bounded by `--token-timeout`.

use std::time::Duration;

use super::token_api::parse_json_host;
use super::{Lookup, LookupError, TokenSource, parse_token_target};
use crate::config::Target;
use crate::redis_link::{RedisLink, url_escape};

pub struct TokenRedis {
    link: RedisLink,
    namespace: String,
}

/// websockify's source fields.
#[derive(Debug, PartialEq, Eq)]
pub struct Source {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub password: Option<String>,
    pub namespace: String,
}

impl TokenRedis {
    pub fn new(source: &str, timeout: Duration) -> Result<Self, String> {
        let parsed = parse_source(source)?;
        let host = if parsed.host.contains(':') {
            format!("[{}]", parsed.host)
        } else {
            parsed.host.clone()
        };
        let auth = match &parsed.password {
            Some(password) => format!(":{}@", url_escape(password)),
            None => String::new(),
        };
        let url = format!("redis://{auth}{host}:{}/{}", parsed.port, parsed.db);
        let client = redis::Client::open(url).map_err(|e| format!("bad --token-source for TokenRedis: {e}"))?;
        Ok(TokenRedis {
            link: RedisLink::new(client, timeout),
            namespace: parsed.namespace,
        })
    }

    async fn ask(&self, token: &str) -> Result<Target, LookupError> {
        let key = if self.namespace.is_empty() {
            token.to_owned()
        } else {
            format!("{}:{token}", self.namespace)
        };
        let value: Option<String> = self
            .link
            .run(|mut connection| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(&key).query_async(&mut connection).await }
            })
            .await
            .map_err(LookupError::Unavailable)?;
        let value = value.ok_or_else(LookupError::unknown)?;
        parse_value(&value).map_err(|why| {
            tracing::warn!("unusable Redis value for a token: {why}");
            LookupError::Unknown("The token's target is malformed".into())
        })
    }
}

impl TokenSource for TokenRedis {
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a> {
        Box::pin(self.ask(token))
    }
}

/// `{"host": "h:p"}` or `h:p`.
pub fn parse_value(value: &str) -> Result<Target, String> {
    let value = value.trim();
    if value.starts_with('{') {
        parse_json_host(value)
    } else {
        parse_token_target(value)
    }
}

/// `host[:port[:db[:password[:namespace]]]]`, fields optionally double-quoted.
pub fn parse_source(source: &str) -> Result<Source, String> {
    let bad = |why: &str| {
        format!("bad --token-source {source:?} for TokenRedis: {why} (host[:port[:db[:password[:namespace]]]])")
    };
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    for c in source.chars() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if quoted {
        return Err(bad("a quote is not closed"));
    }
    fields.push(field);
    if fields.len() > 5 {
        return Err(bad("too many fields; quote a field that holds a colon"));
    }
    fields.resize(5, String::new());
    let [host, port, db, password, namespace] = <[String; 5]>::try_from(fields).map_err(|_| bad("fields"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = if port.is_empty() {
        6379
    } else {
        port.parse().map_err(|_| bad("the port is not a number"))?
    };
    let db = if db.is_empty() {
        0
    } else {
        db.parse().map_err(|_| bad("the database is not a number"))?
    };
    Ok(Source {
        host,
        port,
        db,
        password: (!password.is_empty()).then_some(password),
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(host: &str, port: u16, db: i64, password: Option<&str>, namespace: &str) -> Source {
        Source {
            host: host.into(),
            port,
            db,
            password: password.map(Into::into),
            namespace: namespace.into(),
        }
    }

    #[test]
    fn sources_as_websockify_reads_them() {
        assert_eq!(
            parse_source("redis.local").unwrap(),
            source("redis.local", 6379, 0, None, "")
        );
        assert_eq!(
            parse_source("127.0.0.1:6380").unwrap(),
            source("127.0.0.1", 6380, 0, None, "")
        );
        assert_eq!(
            parse_source("h:6380:2:secret:ns").unwrap(),
            source("h", 6380, 2, Some("secret"), "ns")
        );
        assert_eq!(parse_source("h:::pw").unwrap(), source("h", 6379, 0, Some("pw"), ""));
        assert_eq!(parse_source("h::::ns").unwrap(), source("h", 6379, 0, None, "ns"));
        assert_eq!(
            parse_source(r#""::1":6379:0:"pa:ss":"a:b""#).unwrap(),
            source("::1", 6379, 0, Some("pa:ss"), "a:b")
        );
        for bad in ["", ":6379", "h:port", "h:1:db", "h:1:0:p:n:extra", r#""h"#] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values() {
        let tcp = |host: &str, port| Target::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(parse_value(r#"{"host": "vnc1:5901"}"#).unwrap(), tcp("vnc1", 5901));
        assert_eq!(parse_value(" vnc1:5901\n").unwrap(), tcp("vnc1", 5901));
        assert_eq!(parse_value(r#"{"host": "[::1]:5901"}"#).unwrap(), tcp("::1", 5901));
        assert!(parse_value(r#"{"port": 1}"#).is_err());
        assert!(parse_value("garbage").is_err());
    }
}
