//! End-to-end tests: the real `wsproxy` binary on ephemeral loopback ports, real sockets, real TLS.
//! One test binary (ripgrep style) so it links once.

mod auth;
mod bad_input;
mod http;
mod lifecycle;
mod metrics;
mod real_servers;
mod relay;
mod sessions;
mod share;
mod tokens;
mod util;
mod wrap;
