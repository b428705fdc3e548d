//! noVNC's playback format, as websockify writes it: a JavaScript array `VNC_frame_data` with one
//! `'{<ms>{<data>'` line per frame sent to the client and `'}<ms>}<data>'` per frame from it,
//! `<ms>` counted from the session's start and `<data>` escaped like Python's `unicode_escape` over
//! latin-1, ended by `'EOF'];`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

pub struct Writer {
    out: BufWriter<File>,
    start: Instant,
}

impl Writer {
    pub fn create(path: &Path) -> io::Result<Writer> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"var VNC_frame_data = [\n")?;
        Ok(Writer {
            out,
            start: Instant::now(),
        })
    }

    /// One frame: `dir` is `{` (to the client) or `}` (from it).
    pub fn frame(&mut self, dir: u8, data: &[u8]) -> io::Result<()> {
        let ms = self.start.elapsed().as_millis();
        let mut line = Vec::with_capacity(data.len() + 16);
        line.push(b'\'');
        line.push(dir);
        line.extend_from_slice(ms.to_string().as_bytes());
        line.push(dir);
        escape_into(data, &mut line);
        line.extend_from_slice(b"',\n");
        self.out.write_all(&line)
    }

    pub fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(b"'EOF'];\n")?;
        self.out.flush()
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
}
