//! `--audit-log FILE`: one JSON line per session event, for whoever must answer "who had which
//! console when". Never a token or a secret.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use super::registry::Record;
use super::time::rfc3339;

pub struct Audit {
    file: Option<Mutex<File>>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Reserve,
    Launch,
    Ready,
    Connect,
    Disconnect,
    Stop,
    Expire,
    Fail,
    Reject,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: Kind,
    session: Option<&'a str>,
    service: Option<&'a str>,
    index: Option<u32>,
    user: Option<&'a str>,
    client: Option<&'a str>,
    reason: Option<&'a str>,
    exit_code: Option<i32>,
}

impl Audit {
    pub fn open(path: Option<&Path>) -> Result<Audit, String> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open --audit-log {}: {e}", path.display()))?,
            )),
            None => None,
        };
        Ok(Audit { file })
    }

    /// An event of a session.
    pub fn session(&self, event: Kind, record: &Record, client: Option<&str>) {
        self.write(&Line {
            time: rfc3339(SystemTime::now()),
            event,
            session: Some(&record.id),
            service: Some(&record.service),
            index: Some(record.index),
            user: Some(&record.user),
            client,
            reason: record.reason.as_deref(),
            exit_code: record.exit_code,
        });
    }

    /// A reservation the API refused.
    pub fn reject(&self, service: &str, user: &str, reason: &str) {
        self.write(&Line {
            time: rfc3339(SystemTime::now()),
            event: Kind::Reject,
            session: None,
            service: Some(service),
            index: None,
            user: Some(user),
            client: None,
            reason: Some(reason),
            exit_code: None,
        });
    }

    fn write(&self, line: &Line<'_>) {
        let Some(file) = &self.file else { return };
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::warn!("cannot write the audit log: {e}");
        }
    }
}
