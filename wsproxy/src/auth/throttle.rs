//! Token guessing and password guessing: an address that presents unknown tokens or fails auth
//! `LIMIT` times within `WINDOW` gets 429 for the next `BLOCK`, logged once per address.
//!
//! Memory stays bounded: entries whose window and block are over are dropped whenever the table
//! reaches `MAX_TRACKED` addresses, and a table still full of live entries stops adding new ones
//! (those addresses are then not throttled, which is the price of not growing without bound).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub const LIMIT: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const BLOCK: Duration = Duration::from_secs(60);
const MAX_TRACKED: usize = 65_536;

#[derive(Default)]
pub struct Throttle {
    addresses: Mutex<HashMap<IpAddr, Entry>>,
}

struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now < self.window_start + WINDOW || self.blocked_until.is_some_and(|until| now < until)
    }
}

impl Throttle {
    /// How long `ip` stays blocked, if it is.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let addresses = self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = addresses.get(&ip)?.blocked_until?;
        (now < until).then(|| until - now)
    }

    /// Counts one failure of `ip`; blocks it when the limit is reached.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut addresses = self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if addresses.len() >= MAX_TRACKED && !addresses.contains_key(&ip) {
            addresses.retain(|_, entry| entry.live(now));
            if addresses.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = addresses.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now >= entry.window_start + WINDOW {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= LIMIT && entry.blocked_until.is_none_or(|until| now >= until) {
            entry.blocked_until = Some(now + BLOCK);
            entry.window_start = now + BLOCK;
            entry.failures = 0;
            tracing::warn!(
                "{ip}: {LIMIT} unknown tokens or failed logins within {WINDOW:?}; answering 429 for {BLOCK:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn twenty_failures_block_for_a_minute() {
        let throttle = Throttle::default();
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let other: IpAddr = "127.0.0.8".parse().unwrap();
        for _ in 0..LIMIT - 1 {
            throttle.failed(ip);
        }
        assert_eq!(throttle.blocked(ip), None);
        throttle.failed(ip);
        assert_eq!(throttle.blocked(ip), Some(BLOCK));
        assert_eq!(throttle.blocked(other), None);
        tokio::time::advance(BLOCK - Duration::from_secs(1)).await;
        assert!(throttle.blocked(ip).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(throttle.blocked(ip), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_over_more_than_a_window_do_not_block() {
        let throttle = Throttle::default();
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..3 * LIMIT {
            throttle.failed(ip);
            tokio::time::advance(WINDOW / 10).await;
            assert_eq!(throttle.blocked(ip), None);
        }
    }
}
