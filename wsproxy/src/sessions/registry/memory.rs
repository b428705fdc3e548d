//! The in-memory registry: one instance, records in a map, indexes in a high-water mark plus a
//! set of freed ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{Change, Fut, NewSession, Record, Registry, ReserveError, StoreError, UpdateError};
use crate::sessions::services::Service;
use crate::sessions::state::Event;

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
    weights: HashMap<String, u32>,
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
            let record = new.record(service, index, SystemTime::now());
            inner.tokens.insert(record.token.clone(), record.id.clone());
            inner.sessions.insert(record.id.clone(), record.clone());
            Ok(record)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> Fut<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move { Ok(self.lock().sessions.get(id).cloned()) })
    }

    fn by_token<'a>(&'a self, token: &'a str) -> Fut<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            let inner = self.lock();
            Ok(inner.tokens.get(token).and_then(|id| inner.sessions.get(id)).cloned())
        })
    }

    fn list(&self) -> Fut<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            let mut all: Vec<Record> = self.lock().sessions.values().cloned().collect();
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
            let mut inner = self.lock();
            let record = inner.sessions.get_mut(id).ok_or(UpdateError::NotFound)?;
            let ended_now = record.apply(event, &change)?;
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

    fn weights(&self) -> Fut<'_, Result<HashMap<String, u32>, StoreError>> {
        Box::pin(async move { Ok(self.lock().weights.clone()) })
    }

    fn set_weight<'a>(&'a self, host: &'a str, weight: u32) -> Fut<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.lock().weights.insert(host.to_owned(), weight);
            Ok(())
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
    use crate::sessions::state::State;
    use std::collections::BTreeMap;

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
        assert_eq!(registry.by_token("tok-a").await.unwrap().unwrap().id, "a");
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
        assert!(registry.by_token("tok-a").await.unwrap().is_none());
        assert_eq!(registry.reserve(d, new("c", "carol")).await.unwrap().index, 0);
        assert!(matches!(
            registry.update("a", Some(Event::Connect), Box::new(|_| {})).await,
            Err(UpdateError::Invalid(_))
        ));
        registry.prune(Duration::ZERO).await;
        assert!(registry.get("a").await.unwrap().is_none());
        assert_eq!(registry.list().await.unwrap().len(), 2);
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
