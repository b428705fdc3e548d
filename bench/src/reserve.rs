//! Reservations through wsproxy's sessions API, as fast as keep-alive clients can post them: the
//! load of the sessions and cluster scenarios.
//!
//! `conns` HTTP/1.1 keep-alive clients, spread evenly over the instances' ports (client `i` on
//! `ports[i % n]`), post `{"service": SERVICE}` one request after the other until the deadline.
//! With `free`, each client deletes each reservation right after its 201 (and before the next
//! post, even past the deadline), so at most one per client is live; the rate still counts the
//! 201s only, over the time until the last answer. Any other answer is an error; a client stops
//! after `MAX_FAILURES` of them, so a broken proxy does not hold up the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::http_client::Client;

/// A client stops after this many failed calls.
const MAX_FAILURES: u64 = 20;

pub struct Load<'a> {
    /// The instances' ports on 127.0.0.1; the clients are spread over them.
    pub ports: &'a [u16],
    /// `Authorization: Bearer` for the API.
    pub bearer: &'a str,
    pub service: &'a str,
    pub conns: usize,
    pub secs: Duration,
    /// Delete each reservation right after it is made.
    pub free: bool,
}

#[derive(Default)]
struct Count {
    done: u64,
    failed: u64,
    reconnects: u64,
    first_error: Option<String>,
}

impl Count {
    fn fail(&mut self, error: impl FnOnce() -> String) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }
}

pub struct Reserved {
    /// Reservations made (201).
    pub done: u64,
    /// Failed calls: reservations refused or lost, and with `free`, deletes that failed.
    pub failed: u64,
    pub reconnects: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Reservations in each whole second of the run.
    pub by_second: Vec<u64>,
}

impl Reserved {
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// Which instance each client uses: client `i` on `i % instances`.
pub fn spread(conns: usize, instances: usize) -> Vec<usize> {
    (0..conns).map(|i| i % instances.max(1)).collect()
}

/// Runs `load` to its end.
pub async fn run(load: &Load<'_>) -> Result<Reserved, String> {
    if load.ports.is_empty() {
        return Err("no instance to reserve through".into());
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + load.secs;
    let mut workers = JoinSet::new();
    for instance in spread(load.conns, load.ports.len()) {
        let client = Client::new(load.ports[instance], load.bearer);
        let body = serde_json::json!({ "service": load.service }).to_string();
        workers.spawn(reserve(client, body, load.free, deadline, done.clone()));
    }
    let whole_seconds = load.secs.as_secs() as usize;
    let mut by_second = Vec::with_capacity(whole_seconds);
    let mut ticks = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let mut counted = 0;
    let mut total = Count::default();
    loop {
        tokio::select! {
            joined = workers.join_next() => {
                let Some(joined) = joined else { break };
                let count = joined.map_err(|e| format!("a client failed: {e}"))?;
                total.done += count.done;
                total.failed += count.failed;
                total.reconnects += count.reconnects;
                total.first_error = total.first_error.or(count.first_error);
            }
            _ = ticks.tick(), if by_second.len() < whole_seconds => {
                let now = done.load(Ordering::Relaxed);
                by_second.push(now - counted);
                counted = now;
            }
        }
    }
    let elapsed = start.elapsed();
    // The clients stop at the deadline: what came after the last tick is the last second's.
    if by_second.len() < whole_seconds {
        by_second.push(done.load(Ordering::Relaxed) - counted);
    }
    match (total.done, total.first_error) {
        (0, Some(e)) => Err(format!("no reservation succeeded; the first error: {e}")),
        (_, first_error) => Ok(Reserved {
            done: total.done,
            failed: total.failed,
            reconnects: total.reconnects,
            first_error,
            elapsed,
            by_second,
        }),
    }
}

/// One client: reservation after reservation (each deleted at once with `free`) on one
/// keep-alive connection until `deadline`.
async fn reserve(mut client: Client, body: String, free: bool, deadline: Instant, done: Arc<AtomicU64>) -> Count {
    let post = client.request("POST", "/api/v1/sessions", Some(&body));
    let mut count = Count::default();
    while Instant::now() < deadline && count.failed < MAX_FAILURES {
        let created = match client.call(&post).await {
            Ok(response) if response.status == 201 => response,
            Ok(response) => {
                count.fail(|| format!("answered {}: {}", response.status, response.excerpt()));
                continue;
            }
            Err(e) => {
                count.fail(|| e);
                continue;
            }
        };
        count.done += 1;
        done.fetch_add(1, Ordering::Relaxed);
        if !free {
            continue;
        }
        let Some(id) = session_id(&created.body) else {
            count.fail(|| format!("a reservation without an id: {}", created.excerpt()));
            continue;
        };
        let delete = client.request("DELETE", &format!("/api/v1/sessions/{id}"), None);
        match client.call(&delete).await {
            Ok(response) if response.status == 204 => {}
            Ok(response) => count.fail(|| {
                format!(
                    "DELETE of a reservation answered {}: {}",
                    response.status,
                    response.excerpt()
                )
            }),
            Err(e) => count.fail(|| format!("DELETE of a reservation: {e}")),
        }
    }
    count.reconnects = client.reconnects;
    count
}

/// A session just reserved, as the API answered.
pub struct Session {
    pub id: String,
    pub token: String,
    /// Its index in the service (0..count): what its `{port}` is made from.
    pub index: u64,
}

impl Session {
    /// The WebSocket path that connects with its token.
    pub fn path(&self) -> String {
        format!("{}?token={}", crate::tokens::PATH, self.token)
    }
}

/// Reserves one session of `service` through `api` (`POST /api/v1/sessions`, 201 expected).
pub async fn reserve_one(api: &mut Client, service: &str) -> Result<Session, String> {
    let body = serde_json::json!({ "service": service }).to_string();
    let request = api.request("POST", "/api/v1/sessions", Some(&body));
    let created = api.call(&request).await?;
    if created.status != 201 {
        return Err(format!(
            "the reservation was answered {}: {}",
            created.status,
            created.excerpt()
        ));
    }
    let session: serde_json::Value =
        serde_json::from_slice(&created.body).map_err(|e| format!("the reservation's body is not JSON: {e}"))?;
    match (
        session_id(&created.body),
        session["token"].as_str(),
        session["index"].as_u64(),
    ) {
        (Some(id), Some(token), Some(index)) => Ok(Session {
            id,
            token: token.to_owned(),
            index,
        }),
        _ => Err(format!("the reservation has no id, token or index: {session}")),
    }
}

/// The `id` of a session as the API shows it.
pub fn session_id(body: &[u8]) -> Option<String> {
    let session: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = session["id"].as_str()?;
    // It goes into a request line: nothing but what ids are made of.
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_spread_evenly() {
        let per_instance = |conns, instances| {
            let mut counts = vec![0; instances];
            for i in spread(conns, instances) {
                counts[i] += 1;
            }
            counts
        };
        assert_eq!(per_instance(24, 3), [8, 8, 8]);
        assert_eq!(per_instance(16, 3), [6, 5, 5]);
        assert_eq!(per_instance(5, 1), [5]);
        assert_eq!(per_instance(2, 3), [1, 1, 0]);
    }

    #[test]
    fn ids_are_read_from_the_body_and_checked() {
        assert_eq!(
            session_id(br#"{"id": "a1B2-c_3", "token": "t"}"#).as_deref(),
            Some("a1B2-c_3")
        );
        assert_eq!(session_id(br#"{"id": "a b"}"#), None);
        assert_eq!(session_id(br#"{"id": ""}"#), None);
        assert_eq!(session_id(br#"{"token": "t"}"#), None);
        assert_eq!(session_id(b"not json"), None);
    }
}
