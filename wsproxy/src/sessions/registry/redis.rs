//! The shared registry (`[sessions] store = "redis://HOST:PORT/DB?namespace=NAME"`): every instance
//! started with the same store and services file serves one pool of sessions.
//!
//! Keys, under the namespace `NS` (default `wsproxy`):
//! - `NS:s:ID`: a hash, `r` the record as JSON and `v` its version (bumped by every change);
//! - `NS:sessions`: the set of ids; `NS:t:TOKEN`: the id a WebSocket token names;
//! - `NS:idx:SERVICE`: index → id of the indexes taken; `NS:high:SERVICE`: every index below it
//!   was handed out, `NS:freed:SERVICE` (sorted) those given back, so the lowest free index is
//!   found in O(log n) as in memory; `NS:pu:SERVICE`: user → live sessions;
//! - `NS:TOKEN`: `{"host": "HOST:PORT"}` while a TCP session runs, as websockify's TokenRedis
//!   reads it;
//! - `NS:instance:ID`: an instance's forwarding address, with a lease it renews (`cluster`);
//! - `NS:forward-secret`: what instances show each other when one forwards a client;
//! - `NS:weights`: host → weight, as `PATCH /api/v1/hosts/NAME` set it.
//!
//! Ended records are deleted 10 minutes after their end by the instances' periodic reap.
//!
//! Claims and changes are Lua scripts, so they are atomic across instances: a reservation checks
//! `per_user` and takes the lowest free index in one step, and a change is written only if the
//! record's version is still the one it was computed from (else it is computed again).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use redis::Script;

use super::{Change, Fut, NewSession, Record, Registry, ReserveError, StoreError, UpdateError};
use crate::redis_link::RedisLink;
use crate::sessions::services::Service;
use crate::sessions::state::Event;

/// How often a change is computed again when other instances keep changing the record first.
const MAX_ATTEMPTS: usize = 50;
/// What `reserve` writes in place of the index, for the script to fill in.
const INDEX_PLACEHOLDER: u32 = u32::MAX;

const RESERVE: &str = r#"
local ns, service, user, id, token = ARGV[1], ARGV[2], ARGV[3], ARGV[6], ARGV[7]
local count, per_user = tonumber(ARGV[4]), tonumber(ARGV[5])
local pu = ns .. ':pu:' .. service
local mine = tonumber(redis.call('HGET', pu, user) or '0')
if per_user > 0 and mine >= per_user then return -1 end
local idx, freed, high_key = ns .. ':idx:' .. service, ns .. ':freed:' .. service, ns .. ':high:' .. service
local index = -1
local lowest = redis.call('ZRANGE', freed, 0, 0)[1]
if lowest and tonumber(lowest) < count then
  index = tonumber(lowest)
  redis.call('ZREM', freed, lowest)
else
  local high = tonumber(redis.call('GET', high_key) or '0')
  if high < count then
    index = high
    redis.call('SET', high_key, high + 1)
  end
end
if index < 0 then return -2 end
redis.call('HSET', idx, tostring(index), id)
redis.call('HINCRBY', pu, user, 1)
local record = (string.gsub(ARGV[8], '"index":' .. ARGV[9], '"index":' .. index, 1))
redis.call('HSET', ns .. ':s:' .. id, 'v', '1', 'r', record)
redis.call('SET', ns .. ':t:' .. token, id)
redis.call('SADD', ns .. ':sessions', id)
return index
"#;

const UPDATE: &str = r#"
local ns, id = ARGV[1], ARGV[2]
local key = ns .. ':s:' .. id
local v = redis.call('HGET', key, 'v')
if not v then return -1 end
if v ~= ARGV[3] then return 0 end
redis.call('HSET', key, 'v', tostring(tonumber(v) + 1), 'r', ARGV[4])
if ARGV[5] == '1' then
  local service, index, user, token = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  local idx, freed, high_key = ns .. ':idx:' .. service, ns .. ':freed:' .. service, ns .. ':high:' .. service
  if redis.call('HGET', idx, index) == id then
    redis.call('HDEL', idx, index)
    redis.call('ZADD', freed, index, index)
    -- Indexes at the top go back to never handed out, which keeps the free set small.
    local high = tonumber(redis.call('GET', high_key) or '0')
    while high > 0 and redis.call('ZSCORE', freed, tostring(high - 1)) do
      redis.call('ZREM', freed, tostring(high - 1))
      high = high - 1
    end
    redis.call('SET', high_key, high)
  end
  local pu = ns .. ':pu:' .. service
  if redis.call('HINCRBY', pu, user, -1) <= 0 then redis.call('HDEL', pu, user) end
  redis.call('DEL', ns .. ':t:' .. token, ns .. ':' .. token)
end
return 1
"#;

pub struct RedisStore {
    pub(crate) link: RedisLink,
    pub(crate) namespace: String,
    reserve: Script,
    update: Script,
}

/// `redis://[:PASSWORD@]HOST:PORT/DB[?namespace=NAME]`: the client and the namespace. Without a
/// password in the URL, `REDIS_PASSWORD` gives it.
pub fn parse_url(url: &str, env_password: Option<&str>) -> Result<(String, String), String> {
    let bad = |why: &str| format!("bad [sessions] store {url:?}: {why} (redis://HOST:PORT/DB?namespace=NAME)");
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let rest = base
        .strip_prefix("redis://")
        .or_else(|| base.strip_prefix("rediss://"))
        .ok_or_else(|| bad("it must start with redis://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("no host"));
    }
    let mut namespace = "wsproxy".to_owned();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("namespace", value)) if !value.is_empty() && !value.contains(':') => namespace = value.to_owned(),
            Some(("namespace", _)) => return Err(bad("the namespace must be a non-empty name without ':'")),
            _ => return Err(bad(&format!("unknown parameter {pair:?}"))),
        }
    }
    let client_url = match env_password {
        Some(password) if !rest.contains('@') => {
            let scheme = &base[..base.len() - rest.len()];
            format!("{scheme}:{}@{rest}", crate::redis_link::url_escape(password))
        }
        _ => base.to_owned(),
    };
    Ok((client_url, namespace))
}

fn unavailable(why: String) -> StoreError {
    StoreError(format!(
        "{why}; is redis-server running at the [sessions] store address?"
    ))
}

fn decode(json: &str) -> Result<Record, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError(format!("a session record in Redis is not wsproxy's: {e}")))
}

impl RedisStore {
    pub fn open(url: &str, timeout: Duration) -> Result<Self, String> {
        let env = std::env::var("REDIS_PASSWORD").ok();
        let (client_url, namespace) = parse_url(url, env.as_deref())?;
        let client =
            redis::Client::open(client_url.as_str()).map_err(|e| format!("bad [sessions] store {url:?}: {e}"))?;
        Ok(RedisStore {
            link: RedisLink::new(client, timeout),
            namespace,
            reserve: Script::new(RESERVE),
            update: Script::new(UPDATE),
        })
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.namespace)
    }

    /// The record and its version.
    async fn versioned(&self, id: &str) -> Result<Option<(String, Record)>, StoreError> {
        let key = self.key(&format!("s:{id}"));
        let (version, json): (Option<String>, Option<String>) = self
            .link
            .run(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg("v")
                        .arg("r")
                        .query_async(&mut c)
                        .await
                }
            })
            .await
            .map_err(unavailable)?;
        match (version, json) {
            (Some(version), Some(json)) => Ok(Some((version, decode(&json)?))),
            _ => Ok(None),
        }
    }

    /// Every record, in one round trip per hundred.
    async fn all(&self) -> Result<Vec<Record>, StoreError> {
        let set = self.key("sessions");
        let ids: Vec<String> = self
            .link
            .run(|mut c| {
                let set = set.clone();
                async move { redis::cmd("SMEMBERS").arg(&set).query_async(&mut c).await }
            })
            .await
            .map_err(unavailable)?;
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let keys: Vec<String> = chunk.iter().map(|id| self.key(&format!("s:{id}"))).collect();
            let jsons: Vec<Option<String>> = self
                .link
                .run(|mut c| {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("HGET").arg(key).arg("r");
                    }
                    async move { pipe.query_async(&mut c).await }
                })
                .await
                .map_err(unavailable)?;
            for json in jsons.into_iter().flatten() {
                records.push(decode(&json)?);
            }
        }
        Ok(records)
    }
}

impl Registry for RedisStore {
    fn reserve<'a>(&'a self, service: &'a Service, new: NewSession) -> Fut<'a, Result<Record, ReserveError>> {
        Box::pin(async move {
            let (id, token, user) = (new.id.clone(), new.token.clone(), new.user.clone());
            let mut record = new.record(service, INDEX_PLACEHOLDER, SystemTime::now());
            let template =
                serde_json::to_string(&record).map_err(|e| ReserveError::Store(StoreError(e.to_string())))?;
            let answer: i64 = self
                .link
                .run(|mut c| {
                    let mut call = self.reserve.prepare_invoke();
                    call.arg(&self.namespace)
                        .arg(&service.name)
                        .arg(&user)
                        .arg(service.count)
                        .arg(service.per_user)
                        .arg(&id)
                        .arg(&token)
                        .arg(&template)
                        .arg(INDEX_PLACEHOLDER);
                    async move { call.invoke_async(&mut c).await }
                })
                .await
                .map_err(|e| ReserveError::Store(unavailable(e)))?;
            match answer {
                -1 => Err(ReserveError::PerUserLimit {
                    limit: service.per_user,
                }),
                -2 => Err(ReserveError::Full { count: service.count }),
                index => {
                    record.index =
                        u32::try_from(index).map_err(|_| ReserveError::Store(StoreError("bad index".into())))?;
                    Ok(record)
                }
            }
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> Fut<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move { Ok(self.versioned(id).await?.map(|(_, record)| record)) })
    }

    fn by_token<'a>(&'a self, token: &'a str) -> Fut<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            let key = self.key(&format!("t:{token}"));
            let id: Option<String> = self
                .link
                .run(|mut c| {
                    let key = key.clone();
                    async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
                })
                .await
                .map_err(unavailable)?;
            match id {
                Some(id) => Ok(self.get(&id).await?.filter(|r| r.token == token)),
                None => Ok(None),
            }
        })
    }

    fn list(&self) -> Fut<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            let mut all = self.all().await?;
            Record::sort(&mut all);
            Ok(all)
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        event: Option<Event>,
        change: Change<'a>,
    ) -> Fut<'a, Result<Record, UpdateError>> {
        Box::pin(async move {
            for _ in 0..MAX_ATTEMPTS {
                let (version, mut record) = self.versioned(id).await?.ok_or(UpdateError::NotFound)?;
                let ended_now = record.apply(event, &change)?;
                let json = serde_json::to_string(&record).map_err(|e| StoreError(e.to_string()))?;
                let written: i64 = self
                    .link
                    .run(|mut c| {
                        let mut call = self.update.prepare_invoke();
                        call.arg(&self.namespace)
                            .arg(id)
                            .arg(&version)
                            .arg(&json)
                            .arg(if ended_now { "1" } else { "0" })
                            .arg(&record.service)
                            .arg(record.index)
                            .arg(&record.user)
                            .arg(&record.token);
                        async move { call.invoke_async(&mut c).await }
                    })
                    .await
                    .map_err(unavailable)?;
                match written {
                    1 => return Ok(record),
                    -1 => return Err(UpdateError::NotFound),
                    // Changed by another instance since it was read: compute the change again.
                    _ => tokio::task::yield_now().await,
                }
            }
            Err(UpdateError::Store(StoreError(format!(
                "session {id} kept changing under {MAX_ATTEMPTS} attempts to update it"
            ))))
        })
    }

    fn prune(&self, keep: Duration) -> Fut<'_, ()> {
        Box::pin(async move {
            let Ok(all) = self.all().await else { return };
            let now = SystemTime::now();
            let old: Vec<String> = all
                .into_iter()
                .filter(|r| {
                    r.ended_at
                        .is_some_and(|at| now.duration_since(at).unwrap_or_default() >= keep)
                })
                .map(|r| r.id)
                .collect();
            if old.is_empty() {
                return;
            }
            let set = self.key("sessions");
            let keys: Vec<String> = old.iter().map(|id| self.key(&format!("s:{id}"))).collect();
            let _: Result<(), String> = self
                .link
                .run(|mut c| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("DEL").arg(&keys).ignore();
                    pipe.cmd("SREM").arg(&set).arg(&old).ignore();
                    async move { pipe.query_async(&mut c).await }
                })
                .await;
        })
    }

    fn weights(&self) -> Fut<'_, Result<HashMap<String, u32>, StoreError>> {
        Box::pin(async move {
            let key = self.key("weights");
            self.link
                .run(|mut c| {
                    let key = key.clone();
                    async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await }
                })
                .await
                .map_err(unavailable)
        })
    }

    fn set_weight<'a>(&'a self, host: &'a str, weight: u32) -> Fut<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.key("weights");
            self.link
                .run(|mut c| {
                    let key = key.clone();
                    async move {
                        redis::cmd("HSET")
                            .arg(&key)
                            .arg(host)
                            .arg(weight)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await
                .map_err(unavailable)
        })
    }

    fn publish_target<'a>(&'a self, token: &'a str, target: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            let key = self.key(token);
            let value = serde_json::json!({ "host": target }).to_string();
            let set = self
                .link
                .run(|mut c| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { redis::cmd("SET").arg(&key).arg(&value).query_async::<()>(&mut c).await }
                })
                .await;
            if let Err(e) = set {
                tracing::warn!("cannot publish a session's target for TokenRedis: {e}");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6379/0", None).unwrap(),
            ("redis://127.0.0.1:6379/0".into(), "wsproxy".into())
        );
        assert_eq!(
            parse_url("redis://h:1/2?namespace=lab", Some("p w")).unwrap(),
            ("redis://:p%20w@h:1/2".into(), "lab".into())
        );
        assert_eq!(
            parse_url("redis://:x@h:1/2", Some("other")).unwrap().0,
            "redis://:x@h:1/2",
            "the URL's password wins"
        );
        for bad in [
            "http://h",
            "redis://",
            "redis://h?ns=x",
            "redis://h?namespace=",
            "redis://h?namespace=a:b",
        ] {
            assert!(parse_url(bad, None).is_err(), "{bad}");
        }
    }
}
