//! The WebSocket client: the browser's side of every run.
//!
//! Two implementations with the same two operations. `raw` (the default) is the hand-written
//! framing in `ws`; `tungstenite` is tokio-tungstenite, kept as an independent check of the
//! framing (a proxy whose frames one client accepts and the other refuses is worth knowing about)
//! and to show why `raw` is the default. Measured on the 2-core development machine (512 MiB,
//! 3 rounds, medians in MiB/s, down / up):
//!
//! | client      | no-proxy    | wsproxy     | bench process CPU for the whole run |
//! |-------------|-------------|-------------|-------------------------------------|
//! | raw         | 6,184/4,130 | 3,313/2,907 | 0.54 s user, 2.07 s sys             |
//! | tungstenite | 4,735/3,968 | 2,949/2,499 | 0.85 s user, 2.11 s sys             |
//!
//! Both are faster than any proxy, but with a proxy three processes share two cores, so every
//! cycle the client spends is taken from the proxy: tungstenite's extra copies cost wsproxy
//! 10–15 % of its measured rate.

pub mod raw;
mod tungstenite;

use std::sync::Arc;
use std::time::Duration;

use crate::tls::Tls;
use crate::transfer::{Progress, Transfer};

/// How long the closing handshake after a run may take before the connection is just dropped.
/// It is outside the measured time; the bound only keeps a proxy that never answers from
/// holding up the benchmark.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    Raw,
    Tungstenite,
}

impl ClientKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Tungstenite => "tungstenite",
        }
    }
}

/// Connects to 127.0.0.1:`port` and receives `size` bytes of test data (target → browser).
/// With `tls`, over wss://.
pub async fn download(
    kind: ClientKind,
    port: u16,
    tls: Option<&Arc<Tls>>,
    size: u64,
    progress: &Progress,
) -> Result<Transfer, String> {
    match kind {
        ClientKind::Raw => raw::download(port, tls, size, progress).await,
        ClientKind::Tungstenite => tungstenite::download(port, tls, size, progress).await,
    }
}

/// Connects to 127.0.0.1:`port` and sends `size` bytes of test data as masked binary messages
/// of `message` bytes (browser → target). With `tls`, over wss://.
pub async fn upload(
    kind: ClientKind,
    port: u16,
    tls: Option<&Arc<Tls>>,
    size: u64,
    message: usize,
) -> Result<(), String> {
    match kind {
        ClientKind::Raw => raw::upload(port, tls, size, message).await,
        ClientKind::Tungstenite => tungstenite::upload(port, tls, size, message).await,
    }
}
