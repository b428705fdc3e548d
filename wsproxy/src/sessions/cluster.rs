//! Several instances sharing one Redis store: who launched what, whether it is still alive, and
//! forwarding a client to the instance that launched its session.
//!
//! Each instance has a random id and renews `NS:instance:ID` (its forwarding address, from
//! `--advertise` or the address it listens on) every `RENEW`, with a lease of `LEASE`. An instance
//! that stops renewing (killed) has its sessions marked failed, "instance lost", by whichever
//! instance notices first, which frees their indexes; their commands died with it (the launcher's
//! guard kills a command's process group when wsproxy goes away).
//!
//! A client that reaches an instance other than its session's owner is relayed by this one as
//! usual, with its target being a byte stream to the owner: `GET /_wsproxy/forward` with the
//! session's token and the store's shared secret, upgraded to the session's target there. The
//! owner counts it as a client, so linger and the session's end work as for its own clients; on a
//! shared console it is one more window on the owner's one connection (`http::forward`).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use super::registry::StoreError;
use super::registry::redis::RedisStore;

/// How often an instance renews its lease, and how long the lease lasts.
pub const RENEW: Duration = Duration::from_secs(2);
pub const LEASE: Duration = Duration::from_secs(10);
/// The path of the forwarding call; never a page or a WebSocket path.
pub const FORWARD_PATH: &str = "/_wsproxy/forward";
const TOKEN_HEADER: &str = "x-wsproxy-token";
const SECRET_HEADER: &str = "x-wsproxy-secret";
/// The `Upgrade` protocol of a forwarded client.
const PROTOCOL: &str = "wsproxy-forward";
/// A forwarding answer's head is small; anything longer is not wsproxy.
const MAX_HEAD: usize = 4096;

pub struct Cluster {
    pub store: Arc<RedisStore>,
    /// This instance's id, recorded as the owner of what it launches.
    pub id: String,
    secret: OnceCell<String>,
}

/// Where another instance's client goes: the owner's address, with what it checks.
#[derive(Debug, Clone)]
pub struct Forward {
    pub addr: String,
    pub token: String,
    pub secret: String,
}

fn unavailable(why: String) -> StoreError {
    StoreError(format!(
        "{why}; is redis-server running at the [sessions] store address?"
    ))
}

impl Cluster {
    pub fn new(store: Arc<RedisStore>) -> Self {
        Cluster {
            store,
            id: super::manager::random_text(10),
            secret: OnceCell::new(),
        }
    }

    /// The secret instances show each other: made by the first instance, kept in the store.
    pub async fn secret(&self) -> Result<String, StoreError> {
        let key = self.store.key("forward-secret");
        self.secret
            .get_or_try_init(|| async {
                let fresh = super::manager::random_text(32);
                self.store
                    .link
                    .run(|mut c| {
                        let (key, fresh) = (key.clone(), fresh.clone());
                        async move {
                            let _: Option<String> = redis::cmd("SET")
                                .arg(&key)
                                .arg(&fresh)
                                .arg("NX")
                                .query_async(&mut c)
                                .await?;
                            redis::cmd("GET").arg(&key).query_async::<String>(&mut c).await
                        }
                    })
                    .await
                    .map_err(unavailable)
            })
            .await
            .cloned()
    }

    /// Renews this instance's lease, with the address other instances forward to.
    pub async fn renew(&self, advertise: &str) -> Result<(), StoreError> {
        let key = self.store.key(&format!("instance:{}", self.id));
        let lease = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        self.store
            .link
            .run(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(advertise)
                        .arg("PX")
                        .arg(lease)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
            .map_err(unavailable)
    }

    /// Gives up the lease at a clean stop, so nobody waits for it to run out.
    pub async fn leave(&self) {
        let key = self.store.key(&format!("instance:{}", self.id));
        let _ = self
            .store
            .link
            .run(|mut c| {
                let key = key.clone();
                async move { redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await }
            })
            .await;
    }

    /// An instance's forwarding address, or `None` once its lease ran out.
    pub async fn address(&self, instance: &str) -> Result<Option<String>, StoreError> {
        let key = self.store.key(&format!("instance:{instance}"));
        self.store
            .link
            .run(|mut c| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
            })
            .await
            .map_err(unavailable)
    }

    /// Whether a forwarding call shows this store's secret.
    pub async fn admits(&self, headers: &HeaderMap) -> bool {
        let (Some(shown), Ok(secret)) = (
            headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok()),
            self.secret().await,
        ) else {
            return false;
        };
        shown.len() == secret.len() && shown.bytes().zip(secret.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The token a forwarding call names.
pub fn forwarded_token(headers: &HeaderMap) -> Option<&str> {
    headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok())
}

/// Whether a request is a forwarding call (the path and the `Upgrade` protocol).
pub fn is_forward(path: &str, headers: &HeaderMap) -> bool {
    path == FORWARD_PATH
        && headers
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL))
}

/// The 101 answer of a forwarding call.
pub fn switching() -> http::response::Builder {
    http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, PROTOCOL)
}

/// Opens the byte stream to a session's target through its owner.
pub async fn connect(forward: &Forward, timeout: Duration) -> Result<TcpStream, String> {
    let opened = async {
        let mut stream = TcpStream::connect(&forward.addr).await.map_err(|e| {
            format!(
                "cannot reach the instance running this session at {}: {e}",
                forward.addr
            )
        })?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {FORWARD_PATH} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {PROTOCOL}\r\n{TOKEN_HEADER}: {}\r\n{SECRET_HEADER}: {}\r\n\r\n",
            forward.addr, forward.token, forward.secret
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        // Byte by byte up to the blank line: nothing after the head may be consumed here.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err("the owning instance answered with an oversized head".to_owned());
            }
            let byte = stream
                .read_u8()
                .await
                .map_err(|e| format!("the owning instance closed: {e}"))?;
            head.push(byte);
        }
        let status_line = String::from_utf8_lossy(&head);
        let status_line = status_line.lines().next().unwrap_or_default();
        if status_line.split_whitespace().nth(1) == Some("101") {
            Ok(stream)
        } else {
            Err(format!("the owning instance refused the client: {status_line}"))
        }
    };
    tokio::time::timeout(timeout, opened)
        .await
        .map_err(|_| format!("the instance running this session at {} did not answer", forward.addr))?
}
