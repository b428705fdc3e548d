//! One multiplexed Redis connection (redis-rs's connection manager), shared by every caller and
//! made on first use: wsproxy may start before Redis, and Redis may restart.
//!
//! After a failed command the connection is dropped and the command tried once more on a fresh
//! one, if the failed one had been made before (Redis restarted since): so the first command after
//! a restart already works, and with Redis down each command fails within the timeout.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

pub struct RedisLink {
    client: redis::Client,
    timeout: Duration,
    manager: Mutex<Option<ConnectionManager>>,
}

impl RedisLink {
    pub fn new(client: redis::Client, timeout: Duration) -> Self {
        RedisLink {
            client,
            timeout,
            manager: Mutex::new(None),
        }
    }

    /// The shared connection, and whether it was made just now.
    async fn connection(&self) -> Result<(ConnectionManager, bool), String> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = &*slot {
            return Ok((manager.clone(), false));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        *slot = Some(manager.clone());
        Ok((manager, true))
    }

    /// Runs `command` on the shared connection (see the module's note on retries).
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, String>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        loop {
            let (connection, fresh) = self.connection().await?;
            match command(connection).await {
                Ok(value) => return Ok(value),
                // A script's own error is an answer, not a broken connection.
                Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                    return Err(format!("Redis: {e}"));
                }
                Err(e) => {
                    *self.manager.lock().await = None;
                    if fresh {
                        return Err(format!("Redis: {e}"));
                    }
                }
            }
        }
    }
}

/// `text` escaped for the user-info part of a `redis://` URL.
pub fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
