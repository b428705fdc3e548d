//! On-demand sessions (`--sessions FILE`): a portal reserves a console through the REST API and
//! gets a token; the first WebSocket connection with it launches the service's command, later ones
//! share it, and when the last one leaves (after `linger`) the command is stopped and its index
//! freed. A reservation nobody uses expires.
//!
//! - `services`: the services file (TOML, or the seed's JSON), checked at start-up.
//! - `state`: the lifecycle as one pure transition function.
//! - `registry/`: the records and the count/index/per-user claims, behind a trait: in memory, or
//!   in Redis (`[sessions] store`), shared by several instances.
//! - `cluster`: with a shared store, this instance among the others: leases, lost instances, and
//!   forwarding a client to the instance that launched its session.
//! - `manager`: the running side: launch on first connect, clients, linger, expiry, stop.
//! - `launcher`: starting a command, knowing when it listens, the guard against orphans.
//! - `api/`: the REST API and its OpenAPI document.
//! - `audit`: `--audit-log`, one JSON line per event; `vncpasswd`: VNC password files;
//!   `time`: RFC 3339 timestamps.

pub mod api;
pub mod audit;
pub mod cluster;
pub mod launcher;
pub mod manager;
pub mod registry;
pub mod services;
pub mod state;
pub mod time;
pub mod vncpasswd;
