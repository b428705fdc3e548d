//! Optional views of a session's traffic: `--record` files and the `--traffic` legend.
//!
//! `--record FILE` writes `FILE.<connection id>` in noVNC's playback format, as websockify does:
//! a JavaScript array `VNC_frame_data` with one `'{<ms>{<data>'` line per frame sent to the client
//! and `'}<ms>}<data>'` per frame from it, `<ms>` counted from the session's start and `<data>`
//! escaped like Python's `unicode_escape` over latin-1.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

pub struct Tap {
    record: Option<Recording>,
    traffic: bool,
}

struct Recording {
    out: BufWriter<File>,
    start: Instant,
}

impl Tap {
    /// Returns `None` when neither view is wanted, so the relay's hot path skips the tap entirely.
    pub fn new(record: Option<&Path>, id: u64, traffic: bool) -> io::Result<Option<Box<Tap>>> {
        let record = match record {
            Some(base) => {
                let mut name = base.as_os_str().to_owned();
                name.push(format!(".{id}"));
                let mut out = BufWriter::new(File::create(&name)?);
                out.write_all(b"var VNC_frame_data = [\n")?;
                Some(Recording {
                    out,
                    start: Instant::now(),
                })
            }
            None => None,
        };
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
        self.record(b'{', data);
    }

    pub fn from_client(&mut self, data: &[u8]) {
        self.record(b'}', data);
    }

    fn record(&mut self, dir: u8, data: &[u8]) {
        if let Some(rec) = &mut self.record {
            let ms = rec.start.elapsed().as_millis();
            let mut line = Vec::with_capacity(data.len() + 16);
            line.push(b'\'');
            line.push(dir);
            line.extend_from_slice(ms.to_string().as_bytes());
            line.push(dir);
            escape_into(data, &mut line);
            line.extend_from_slice(b"',\n");
            if let Err(e) = rec.out.write_all(&line) {
                tracing::warn!("recording stopped: {e}");
                self.record = None;
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(rec) = &mut self.record {
            let _ = rec.out.write_all(b"'EOF'];\n");
            let _ = rec.out.flush();
        }
    }
}

/// Python's `data.decode('latin1').encode('unicode_escape')`, then `'` escaped as `\'`.
fn escape_into(data: &[u8], out: &mut Vec<u8>) {
    for &b in data {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\'' => out.extend_from_slice(b"\\'"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x20..=0x7E => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_python_unicode_escape() {
        let mut out = Vec::new();
        escape_into(b"RFB 003.008\n\x00\xff'\\\t\r", &mut out);
        assert_eq!(out, b"RFB 003.008\\n\\x00\\xff\\'\\\\\\t\\r");
    }

    #[test]
    fn recording_file_has_novnc_playback_shape() {
        let base = std::env::temp_dir().join(format!("wsproxy-rec-{}", std::process::id()));
        let mut tap = Tap::new(Some(&base), 7, false).unwrap().unwrap();
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
}
