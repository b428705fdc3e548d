//! The HTTP side of a connection: TLS detection and hyper (`session`), the WebSocket upgrade rules
//! (`handshake`), static files (`web`), the `--record` files for the replay page (`recordings`) and
//! the answers that refuse a request (`reject`).

pub mod forward;
pub mod handshake;
pub mod recordings;
pub mod reject;
pub mod session;
pub mod web;
