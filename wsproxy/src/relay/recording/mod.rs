//! `--record FILE`: one file per session, in the format `--record-format` names.
//!
//! - `novnc`: `FILE.<id>`, noVNC's playback format (as websockify writes it), for VNC sessions.
//! - `asciicast`: `FILE.<id>.cast`, asciicast v2 (asciinema's format) for terminal sessions: what
//!   the target sent, as the text a terminal shows (telnet commands left out, UTF-8 decoded across
//!   frames); `asciicast-with-input` adds what the client typed.
//!
//! `web/replay.html` plays both kinds back from `/recordings/` (`--serve-recordings`,
//! `http::recordings`), which lists exactly the names made here ([`Format::is_recording`]).

mod asciicast;
mod novnc;
mod telnet;

use std::io;
use std::path::{Path, PathBuf};

/// How sessions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Novnc,
    Asciicast { input: bool },
}

/// `--record` and `--record-format`, validated.
#[derive(Debug, Clone)]
pub struct Record {
    /// `FILE` of `--record FILE`, absolute: recordings are `FILE.<id>` or `FILE.<id>.cast`.
    pub base: PathBuf,
    pub format: Format,
}

impl Record {
    /// The file of connection `id`.
    pub fn path(&self, id: u64) -> PathBuf {
        let mut name = self.base.as_os_str().to_owned();
        name.push(format!(".{id}"));
        if matches!(self.format, Format::Asciicast { .. }) {
            name.push(".cast");
        }
        PathBuf::from(name)
    }
}

impl Format {
    /// Whether `name` (a file name, no directory) is a recording made with base name `prefix`, of
    /// either kind: `prefix.<digits>` (noVNC) or `prefix.<digits>.cast` (asciicast). Returns its kind.
    pub fn is_recording(prefix: &str, name: &str) -> Option<&'static str> {
        let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
        let (digits, kind) = match rest.strip_suffix(".cast") {
            Some(digits) => (digits, "asciicast"),
            None => (rest, "novnc"),
        };
        (!digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(kind)
    }
}

/// One session's recording file being written.
pub enum Recording {
    Novnc(novnc::Writer),
    Asciicast(asciicast::Writer),
}

impl Recording {
    /// Creates the file of connection `id` and writes its header.
    pub fn create(record: &Record, id: u64) -> io::Result<Recording> {
        let path = record.path(id);
        Ok(match record.format {
            Format::Novnc => Recording::Novnc(novnc::Writer::create(&path)?),
            Format::Asciicast { input } => Recording::Asciicast(asciicast::Writer::create(&path, input)?),
        })
    }

    /// Data the target sent, as the client gets it.
    pub fn to_client(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Recording::Novnc(w) => w.frame(b'{', data),
            Recording::Asciicast(w) => w.output(data),
        }
    }

    /// Data the client sent to the target.
    pub fn from_client(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Recording::Novnc(w) => w.frame(b'}', data),
            Recording::Asciicast(w) => w.input(data),
        }
    }

    /// Ends the file (noVNC's closing `'EOF'];`, asciicast's last partial character) and flushes it.
    pub fn finish(&mut self) -> io::Result<()> {
        match self {
            Recording::Novnc(w) => w.finish(),
            Recording::Asciicast(w) => w.finish(),
        }
    }
}

/// The file name of `base` as a string, for matching listed names (`None`: not UTF-8).
pub fn prefix_of(base: &Path) -> Option<&str> {
    base.file_name()?.to_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_names_are_the_base_a_number_and_cast_for_asciicast() {
        assert_eq!(Format::is_recording("rec", "rec.7"), Some("novnc"));
        assert_eq!(Format::is_recording("rec", "rec.12.cast"), Some("asciicast"));
        for name in [
            "rec",
            "rec.",
            "rec.cast",
            "rec..cast",
            "rec.7x",
            "rec.-1",
            "other.7",
            "rec.7.cast.bak",
            "rec.7/x",
        ] {
            assert_eq!(Format::is_recording("rec", name), None, "{name}");
        }
        let record = Record {
            base: PathBuf::from("/var/rec/s"),
            format: Format::Asciicast { input: false },
        };
        assert_eq!(record.path(3), Path::new("/var/rec/s.3.cast"));
        let record = Record {
            format: Format::Novnc,
            ..record
        };
        assert_eq!(record.path(3), Path::new("/var/rec/s.3"));
    }
}
