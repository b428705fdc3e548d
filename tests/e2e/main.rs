//! End-to-end tests: the real `wsproxy` binary on ephemeral loopback ports, real sockets, real TLS.
//! One test binary (ripgrep style) so it links once.

mod auth;
mod bad_input;
mod cluster;
mod http;
mod lifecycle;
mod metrics;
mod placement;
mod real_servers;
mod recording;
mod relay;
mod sessions;
mod tokens;
mod util;
mod wrap;
