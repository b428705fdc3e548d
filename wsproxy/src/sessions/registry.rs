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
    /// Indexes in use, per service.
    taken: HashMap<String, BTreeSet<u32>>,
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
            if service.per_user > 0 {
                let mine = inner
                    .sessions
                    .values()
                    .filter(|r| r.service == service.name && r.user == new.user && !r.state.is_ended())
                    .count();
                if mine >= service.per_user as usize {
                    return Err(ReserveError::PerUserLimit {
                        limit: service.per_user,
                    });
                }
            }
            let taken = inner.taken.entry(service.name.clone()).or_default();
            let index = (0..service.count)
                .find(|i| !taken.contains(i))
                .ok_or(ReserveError::Full { count: service.count })?;
            taken.insert(index);
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
            if let Some(event) = event {
                record.state = state::apply(record.state, event).map_err(UpdateError::Invalid)?;
            }
            change(record);
            let record = record.clone();
            if record.state.is_ended() {
                inner.tokens.remove(&record.token);
                if let Some(taken) = inner.taken.get_mut(&record.service) {
                    taken.remove(&record.index);
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
}
