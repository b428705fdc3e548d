//! The session registry: the records the API shows, and the claims that keep the limits (a service
//! never has more than `count` sessions, no two share an index, a user stays within `per_user`).
//!
//! It sits behind a small trait so the records can live in this process (`memory`) or in Redis,
//! shared by several instances (`redis`). Every state change goes through `state::apply`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::services::Service;
use super::state::{Event, InvalidTransition, State};

mod memory;
pub mod redis;

pub use memory::Memory;

pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One session as the registry keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The instance that launched it (shared store only): the one that relays its clients.
    #[serde(default)]
    pub owner: Option<String>,
    /// A stop asked for through another instance, with its reason; the owner carries it out.
    #[serde(default)]
    pub stop_request: Option<String>,
    /// The host placement chose (services with `hosts`).
    #[serde(default)]
    pub host: Option<String>,
    /// The target of a session placed on a host, once it listens: other instances relay their
    /// clients to it directly (a loopback target is never here: its clients are forwarded).
    #[serde(default)]
    pub direct: Option<String>,
    /// Clients other instances relay directly, per instance (`clients` counts the owner's own).
    #[serde(default)]
    pub remote_clients: BTreeMap<String, u32>,
}

impl Record {
    /// Open WebSocket connections, through every instance.
    pub fn all_clients(&self) -> u32 {
        self.clients + self.remote_clients.values().sum::<u32>()
    }

    /// An update as every store makes it: the event's transition, then the change. Returns
    /// whether the session ended with it (its index and per-user place are then free).
    pub fn apply(&mut self, event: Option<Event>, change: &Change<'_>) -> Result<bool, UpdateError> {
        let was_ended = self.state.is_ended();
        if let Some(event) = event {
            self.state = super::state::apply(self.state, event).map_err(UpdateError::Invalid)?;
        }
        change(self);
        Ok(self.state.is_ended() && !was_ended)
    }

    /// The order `Registry::list` gives: oldest first, ties by id.
    pub fn sort(records: &mut [Record]) {
        records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// The user already has `per_user` sessions of this service.
    PerUserLimit {
        limit: u32,
    },
    /// All `count` indexes are taken.
    Full {
        count: u32,
    },
    Store(StoreError),
}

/// The shared store could not be reached or answered nonsense; what to do is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    NotFound,
    Invalid(InvalidTransition),
    Store(StoreError),
}

impl From<StoreError> for UpdateError {
    fn from(e: StoreError) -> Self {
        UpdateError::Store(e)
    }
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

impl NewSession {
    /// The record as reserved, with index `index`.
    pub fn record(self, service: &Service, index: u32, now: SystemTime) -> Record {
        Record {
            id: self.id,
            service: service.name.clone(),
            user: self.user,
            index,
            state: State::Reserved,
            created_at: now,
            expires_at: Some(now + self.reserve_timeout),
            ended_at: None,
            clients: 0,
            exit_code: None,
            reason: None,
            token: self.token,
            secret: self.secret,
            options: self.options,
            owner: None,
            stop_request: None,
            host: None,
            direct: None,
            remote_clients: BTreeMap::new(),
        }
    }
}

/// A change to a record, applied after the event; may run more than once (the shared store retries
/// it when another instance changed the record first), so it must only look at the record.
pub type Change<'a> = Box<dyn Fn(&mut Record) + Send + Sync + 'a>;

pub trait Registry: Send + Sync {
    /// Claims the lowest free index of `service` for the user, checking `per_user` first.
    fn reserve<'a>(&'a self, service: &'a Service, new: NewSession) -> Fut<'a, Result<Record, ReserveError>>;
    fn get<'a>(&'a self, id: &'a str) -> Fut<'a, Result<Option<Record>, StoreError>>;
    fn by_token<'a>(&'a self, token: &'a str) -> Fut<'a, Result<Option<Record>, StoreError>>;
    fn list(&self) -> Fut<'_, Result<Vec<Record>, StoreError>>;
    /// Applies `event`, then `change` to the record; an ended session frees its index and token.
    fn update<'a>(
        &'a self,
        id: &'a str,
        event: Option<Event>,
        change: Change<'a>,
    ) -> Fut<'a, Result<Record, UpdateError>>;
    /// Forgets sessions that ended longer ago than `keep`.
    fn prune(&self, keep: Duration) -> Fut<'_, ()>;
    /// Host weights set through the API (`PATCH /api/v1/hosts/NAME`), over the services file's.
    fn weights(&self) -> Fut<'_, Result<HashMap<String, u32>, StoreError>>;
    fn set_weight<'a>(&'a self, host: &'a str, weight: u32) -> Fut<'a, Result<(), StoreError>>;
    /// Publishes a running session's TCP target as websockify's TokenRedis reads it (shared store
    /// only; removed when the session ends).
    fn publish_target<'a>(&'a self, _token: &'a str, _target: &'a str) -> Fut<'a, ()> {
        Box::pin(async {})
    }
}
