//! The session registry: the records the API shows, and the claims that keep the limits (a service
//! never has more than `count` sessions, no two share an index, a user stays within `per_user`).
//!
//! It sits behind a small trait so the records can live elsewhere (Redis, for several instances);
//! this is the in-memory one. Every state change goes through `state::apply`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::services::Service;
use super::state::{self, Event, InvalidTransition, State};

pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One session as the registry keeps it.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub service: String,
    pub user: String,
    pub index: u32,
    pub state: State,
    pub created_at: SystemTime,
    /// While reserved: when it expires.
    pub expires_at: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
    pub clients: u32,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The WebSocket token (`?token=`), random.
    pub token: String,
    /// The generated VNC password, if the service has one.
    pub secret: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// The user already has `per_user` sessions of this service.
    PerUserLimit { limit: u32 },
    /// All `count` indexes are taken.
    Full { count: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    NotFound,
    Invalid(InvalidTransition),
}

/// What a new session needs besides its service.
pub struct NewSession {
    pub id: String,
    pub user: String,
    pub token: String,
    pub secret: Option<String>,
    pub options: BTreeMap<String, String>,
    pub reserve_timeout: Duration,
}

pub trait Registry: Send + Sync {
    /// Claims the lowest free index of `service` for the user, checking `per_user` first.
    fn reserve<'a>(&'a self, service: &'a Service, new: NewSession) -> Fut<'a, Result<Record, ReserveError>>;
    fn get<'a>(&'a self, id: &'a str) -> Fut<'a, Option<Record>>;
    fn by_token<'a>(&'a self, token: &'a str) -> Fut<'a, Option<Record>>;
    fn list(&self) -> Fut<'_, Vec<Record>>;
    /// Applies `event`, then `change` to the record; an ended session frees its index and token.
    fn update<'a>(
        &'a self,
        id: &'a str,
        event: Option<Event>,
        change: Box<dyn FnOnce(&mut Record) + Send + 'a>,
    ) -> Fut<'a, Result<Record, UpdateError>>;
    /// Forgets sessions that ended longer ago than `keep`.
    fn prune(&self, keep: Duration) -> Fut<'_, ()>;
}

#[derive(Default)]
pub struct Memory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Record>,
    tokens: HashMap<String, String>,
    /// Free indexes, per service: O(log n) to claim the lowest, whatever the count.
    indexes: HashMap<String, Indexes>,
    /// Live sessions per (service, user), for `per_user`.
    per_user: HashMap<(String, String), u32>,
}

/// A service's indexes: every one below `high` was handed out; `freed` are those given back.
#[derive(Default)]
struct Indexes {
    high: u32,
    freed: BTreeSet<u32>,
}

impl Indexes {
    fn claim(&mut self, count: u32) -> Option<u32> {
        if let Some(index) = self.freed.pop_first() {
            return Some(index);
        }
        (self.high < count).then(|| {
            self.high += 1;
            self.high - 1
        })
    }

    fn release(&mut self, index: u32) {
        self.freed.insert(index);
        // Keep `freed` small: indexes at the top go back to never handed out.
        while self.high > 0 && self.freed.remove(&(self.high - 1)) {
            self.high -= 1;
        }
    }
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Registry for Memory {
    fn reserve<'a>(&'a self, service: &'a Service, new: NewSession) -> Fut<'a, Result<Record, ReserveError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let owner = (service.name.clone(), new.user.clone());
            let mine = inner.per_user.get(&owner).copied().unwrap_or(0);
            if service.per_user > 0 && mine >= service.per_user {
                return Err(ReserveError::PerUserLimit {
                    limit: service.per_user,
                });
            }
            let index = inner
                .indexes
                .entry(service.name.clone())
                .or_default()
                .claim(service.count)
                .ok_or(ReserveError::Full { count: service.count })?;
            inner.per_user.insert(owner, mine + 1);
            let now = SystemTime::now();
            let record = Record {
                id: new.id,
                service: service.name.clone(),
                user: new.user,
                index,
                state: State::Reserved,
                created_at: now,
                expires_at: Some(now + new.reserve_timeout),
                ended_at: None,
                clients: 0,
                exit_code: None,
                reason: None,
                token: new.token,
                secret: new.secret,
                options: new.options,
            };
            inner.tokens.insert(record.token.clone(), record.id.clone());
            inner.sessions.insert(record.id.clone(), record.clone());
            Ok(record)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> Fut<'a, Option<Record>> {
        Box::pin(async move { self.lock().sessions.get(id).cloned() })
    }

    fn by_token<'a>(&'a self, token: &'a str) -> Fut<'a, Option<Record>> {
        Box::pin(async move {
            let inner = self.lock();
            inner.tokens.get(token).and_then(|id| inner.sessions.get(id)).cloned()
        })
    }

    fn list(&self) -> Fut<'_, Vec<Record>> {
        Box::pin(async move {
            let mut all: Vec<Record> = self.lock().sessions.values().cloned().collect();
            all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            all
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        event: Option<Event>,
        change: Box<dyn FnOnce(&mut Record) + Send + 'a>,
    ) -> Fut<'a, Result<Record, UpdateError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let record = inner.sessions.get_mut(id).ok_or(UpdateError::NotFound)?;
            let was_ended = record.state.is_ended();
            if let Some(event) = event {
                record.state = state::apply(record.state, event).map_err(UpdateError::Invalid)?;
            }
            change(record);
            let ended_now = record.state.is_ended() && !was_ended;
            let record = record.clone();
            if ended_now {
                inner.tokens.remove(&record.token);
                if let Some(indexes) = inner.indexes.get_mut(&record.service) {
                    indexes.release(record.index);
                }
                let owner = (record.service.clone(), record.user.clone());
                if let Some(count) = inner.per_user.get_mut(&owner) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        inner.per_user.remove(&owner);
                    }
                }
            }
            Ok(record)
        })
    }

    fn prune(&self, keep: Duration) -> Fut<'_, ()> {
        Box::pin(async move {
            let now = SystemTime::now();
            self.lock().sessions.retain(|_, r| {
                r.ended_at
                    .is_none_or(|at| now.duration_since(at).unwrap_or_default() < keep)
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::services::parse;

    fn new(id: &str, user: &str) -> NewSession {
        NewSession {
            id: id.into(),
            user: user.into(),
            token: format!("tok-{id}"),
            secret: None,
            options: BTreeMap::new(),
            reserve_timeout: Duration::from_secs(300),
        }
    }

    #[tokio::test]
    async fn indexes_counts_and_per_user_limits() {
        let services =
            parse("[[service]]\nname = \"d\"\ncount = 2\nper_user = 1\ncommand = [\"x\"]\ntarget = \"127.0.0.1:1\"\n")
                .unwrap();
        let d = &services.services[0];
        let registry = Memory::default();
        let a = registry.reserve(d, new("a", "alice")).await.unwrap();
        assert_eq!(a.index, 0);
        assert_eq!(
            registry.reserve(d, new("a2", "alice")).await.unwrap_err(),
            ReserveError::PerUserLimit { limit: 1 }
        );
        let b = registry.reserve(d, new("b", "bob")).await.unwrap();
        assert_eq!(b.index, 1);
        assert_eq!(
            registry.reserve(d, new("c", "carol")).await.unwrap_err(),
            ReserveError::Full { count: 2 }
        );
        assert_eq!(registry.by_token("tok-a").await.unwrap().id, "a");
        // Ending a frees its index and its token; the lowest free index is reused.
        let ended = registry
            .update(
                "a",
                Some(Event::Expire),
                Box::new(|r| r.ended_at = Some(SystemTime::now())),
            )
            .await
            .unwrap();
        assert_eq!(ended.state, State::Expired);
        assert!(registry.by_token("tok-a").await.is_none());
        assert_eq!(registry.reserve(d, new("c", "carol")).await.unwrap().index, 0);
        assert!(matches!(
            registry.update("a", Some(Event::Connect), Box::new(|_| {})).await,
            Err(UpdateError::Invalid(_))
        ));
        registry.prune(Duration::ZERO).await;
        assert!(registry.get("a").await.is_none());
        assert_eq!(registry.list().await.len(), 2);
    }

    #[test]
    fn the_lowest_free_index_is_claimed() {
        let mut indexes = Indexes::default();
        let claimed: Vec<u32> = (0..4).map(|_| indexes.claim(4).unwrap()).collect();
        assert_eq!(claimed, [0, 1, 2, 3]);
        assert_eq!(indexes.claim(4), None);
        indexes.release(2);
        indexes.release(0);
        assert_eq!(indexes.claim(4), Some(0));
        assert_eq!(indexes.claim(4), Some(2));
        indexes.release(3);
        indexes.release(2);
        assert_eq!((indexes.high, indexes.freed.len()), (2, 0), "top indexes fold back");
        assert_eq!(indexes.claim(4), Some(2));
    }
}
