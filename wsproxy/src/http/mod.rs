//! The HTTP side of a connection: TLS detection and hyper (`session`), the WebSocket upgrade rules
//! (`handshake`), static files (`web`) and the answers that refuse a request (`reject`).

pub mod forward;
pub mod handshake;
pub mod reject;
pub mod session;
pub mod web;
