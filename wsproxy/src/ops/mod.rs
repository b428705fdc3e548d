//! What an operator watches: `metrics`, the Prometheus metrics of `--metrics`.

pub mod metrics;
