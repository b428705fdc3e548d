//! What an operator watches and does: `metrics`, the Prometheus metrics of `--metrics`; `reload`,
//! SIGHUP and changed certificate files; `systemd`, socket activation and readiness notices.

pub mod metrics;
pub mod reload;
pub mod systemd;
