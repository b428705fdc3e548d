//! End-to-end tests: the real `wsproxy` binary on ephemeral loopback ports, real sockets, real TLS.
//! One test binary (ripgrep style) so it links once.

mod auth;
mod bad_input;
mod base64_clients;
mod cluster;
mod http;
mod lifecycle;
mod metrics;
mod placement;
mod real_servers;
mod recording;
mod relay;
mod reload;
mod sessions;
mod share;
mod systemd;
mod tokens;
mod util;
mod workers;
mod wrap;
mod ws_target;
