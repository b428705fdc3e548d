//! asciicast v2, the format asciinema records and plays: a header line
//! `{"version": 2, "width": 80, "height": 24, "timestamp": <unix seconds>}`, then one JSON array
//! per event: `[<seconds since the start>, "o", "<text>"]` for what the target sent, `"i"` for what
//! the client sent (only with `asciicast-with-input`: it includes passwords typed at a prompt), and
//! `"r"` with `"<cols>x<rows>"` when a telnet client reports its window size.
//!
//! Events are text, so bytes go through a UTF-8 decoder that carries an incomplete sequence at the
//! end of one frame over to the next (a character split across frames is not lost); bytes that can
//! never be UTF-8 become U+FFFD, as in asciinema's own recorder and as a terminal shows them.
//! serde_json escapes the text (control characters, quotes), so any bytes make valid JSON. Telnet
//! commands are left out (`super::telnet`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::telnet;

/// The size in the header: a terminal's default until the client reports its own.
const WIDTH: u16 = 80;
const HEIGHT: u16 = 24;

pub struct Writer {
    out: BufWriter<File>,
    start: Instant,
    /// Whether client data is recorded (`"i"` events).
    input: bool,
    output_side: Side,
    input_side: Side,
}

/// One direction's decoding state.
#[derive(Default)]
struct Side {
    telnet: telnet::Filter,
    utf8: Utf8,
}

impl Writer {
    pub fn create(path: &Path, input: bool) -> io::Result<Writer> {
        let mut out = BufWriter::new(File::create(path)?);
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let header = serde_json::json!({
            "version": 2,
            "width": WIDTH,
            "height": HEIGHT,
            "timestamp": timestamp,
            "env": {"TERM": "xterm"},
        });
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        Ok(Writer {
            out,
            start: Instant::now(),
            input,
            output_side: Side::default(),
            input_side: Side::default(),
        })
    }

    pub fn output(&mut self, data: &[u8]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(data.len());
        self.output_side.telnet.text(data, &mut bytes);
        let text = self.output_side.utf8.decode(&bytes);
        self.event("o", &text)
    }

    pub fn input(&mut self, data: &[u8]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(data.len());
        let size = self.input_side.telnet.text(data, &mut bytes);
        if let Some((cols, rows)) = size {
            self.event("r", &format!("{cols}x{rows}"))?;
        }
        if self.input {
            let text = self.input_side.utf8.decode(&bytes);
            self.event("i", &text)?;
        }
        Ok(())
    }

    /// A character cut off by the session's end is shown as U+FFFD, then the file is flushed.
    pub fn finish(&mut self) -> io::Result<()> {
        let rest = self.output_side.utf8.finish();
        self.event("o", &rest)?;
        if self.input {
            let rest = self.input_side.utf8.finish();
            self.event("i", &rest)?;
        }
        self.out.flush()
    }

    fn event(&mut self, kind: &str, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        // Microseconds, as asciinema writes them.
        let time = (self.start.elapsed().as_micros() as f64) / 1e6;
        serde_json::to_writer(&mut self.out, &(time, kind, text))?;
        self.out.write_all(b"\n")
    }
}

/// A UTF-8 decoder over a stream of chunks.
#[derive(Default)]
struct Utf8 {
    /// The start of a character whose remaining bytes are in the next chunk (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8 {
    fn decode(&mut self, data: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(data);
        let mut text = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // from_utf8 checked this prefix.
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            // An incomplete character at the end: wait for its other bytes.
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        text
    }

    fn finish(&mut self) -> String {
        if std::mem::take(&mut self.pending).is_empty() {
            String::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_chunks_are_carried_and_bad_bytes_replaced() {
        let mut d = Utf8::default();
        let all = "héllo ✓ 😀".as_bytes();
        // Every split point, including inside each multi-byte character.
        for cut in 0..=all.len() {
            let mut d = Utf8::default();
            let text = d.decode(&all[..cut]) + &d.decode(&all[cut..]);
            assert_eq!(text, "héllo ✓ 😀", "cut at {cut}");
            assert_eq!(d.finish(), "");
        }
        assert_eq!(d.decode(b"a\xffb\xe2\x9c"), "a\u{fffd}b");
        assert_eq!(d.decode(b"\x93!"), "✓!");
        assert_eq!(d.decode(b"\xe2\x9c"), "");
        assert_eq!(d.decode(b"x"), "\u{fffd}x");
        assert_eq!(d.decode(b"\xf0"), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn the_file_is_a_header_then_one_json_event_per_line() {
        let path = std::env::temp_dir().join(format!("wsproxy-cast-{}.cast", std::process::id()));
        let mut w = Writer::create(&path, true).unwrap();
        w.output(b"login: \xff\xfb\x01\xe2\x9c").unwrap();
        w.output(b"\x93 \"q\"\x1b[0m\x07").unwrap();
        w.input(b"\xff\xfa\x1f\x00\x64\x00\x1e\xff\xf0me\r").unwrap();
        w.finish().unwrap();
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(
            (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert!(lines[0]["timestamp"].as_u64().unwrap() > 1_600_000_000);
        let events: Vec<(&str, &str)> = lines[1..]
            .iter()
            .map(|e| (e[1].as_str().unwrap(), e[2].as_str().unwrap()))
            .collect();
        assert_eq!(
            events,
            [
                ("o", "login: "),
                ("o", "✓ \"q\"\x1b[0m\x07"),
                ("r", "100x30"),
                ("i", "me\r")
            ]
        );
        let times: Vec<f64> = lines[1..].iter().map(|e| e[0].as_f64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }
}
