//! Optional views of a session's traffic: `--record` files (`recording`, in the format of
//! `--record-format`) and the `--traffic` legend.

use std::io::{self, Write};

use super::recording::{Record, Recording};

pub struct Tap {
    record: Option<Recording>,
    traffic: bool,
}

impl Tap {
    /// Returns `None` when neither view is wanted, so the relay's hot path skips the tap entirely.
    pub fn new(record: Option<&Record>, id: u64, traffic: bool) -> io::Result<Option<Box<Tap>>> {
        let record = record.map(|record| Recording::create(record, id)).transpose()?;
        if record.is_none() && !traffic {
            return Ok(None);
        }
        Ok(Some(Box::new(Tap { record, traffic })))
    }

    /// Writes websockify's legend characters: `}` client frame in, `>` sent to target,
    /// `{` target data in, `<` frame sent to client.
    pub fn traffic(&self, legend: &str) {
        if self.traffic {
            let mut out = io::stdout().lock();
            let _ = out.write_all(legend.as_bytes());
            let _ = out.flush();
        }
    }

    pub fn to_client(&mut self, data: &[u8]) {
        self.record(|rec| rec.to_client(data));
    }

    pub fn from_client(&mut self, data: &[u8]) {
        self.record(|rec| rec.from_client(data));
    }

    fn record(&mut self, write: impl FnOnce(&mut Recording) -> io::Result<()>) {
        if let Some(rec) = &mut self.record
            && let Err(e) = write(rec)
        {
            tracing::warn!("recording stopped: {e}");
            self.record = None;
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(rec) = &mut self.record
            && let Err(e) = rec.finish()
        {
            tracing::warn!("recording not finished: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::recording::Format;

    #[test]
    fn recording_file_has_novnc_playback_shape() {
        let base = std::env::temp_dir().join(format!("wsproxy-rec-{}", std::process::id()));
        let record = Record {
            base: base.clone(),
            format: Format::Novnc,
        };
        let mut tap = Tap::new(Some(&record), 7, false).unwrap().unwrap();
        tap.to_client(b"RFB 003.008\n");
        tap.from_client(b"ok");
        drop(tap);
        let path = format!("{}.7", base.display());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "var VNC_frame_data = [");
        assert!(
            lines[1].starts_with("'{") && lines[1].ends_with("{RFB 003.008\\n',"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("'}") && lines[2].ends_with("}ok',"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "'EOF'];");
    }

    #[test]
    fn no_tap_without_a_view() {
        assert!(Tap::new(None, 1, false).unwrap().is_none());
    }
}
