//! The `base64` subprotocol of old clients (the original wsproxy, noVNC before 0.5): every message
//! carries base64 text (standard alphabet, padded), both ways.
//!
//! Both directions work in place in the relay's buffers, so base64 costs no extra buffer:
//! - [`Decoder`] decodes a message as it streams in, frame by frame and read by read. It keeps
//!   the bits of an unfinished 4-character group (never the characters), so it never writes more
//!   bytes than it has read characters and can write over its own input. It is strict: only the
//!   standard alphabet, `=` padding only to end a message, zero leftover bits (what Python's
//!   `b64decode` and websockify's old `base64` mode produced and accepted, minus stray characters).
//! - [`encode_in_place`] turns bytes at the front of a buffer into their base64 text, which is
//!   longer: groups are encoded from the last to the first, so no input is overwritten before it
//!   is read. The relay reads at most [`max_input`] bytes so the text fits.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::frame::{Violation, close};

const INVALID: Violation = Violation {
    code: close::INVALID_PAYLOAD,
    reason: "Invalid base64 data",
};

/// The state of one client's base64 messages.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    /// Bits decoded but not yet a whole byte (fewer than 8 after each character).
    acc: u32,
    bits: u8,
    /// Characters into the current 4-character group.
    pos: u8,
    /// `=` seen: the message may only finish its group with `=`.
    padding: bool,
}

impl Decoder {
    /// Decodes the `len` characters at `buf[src..]` into bytes at `buf[dst..]` (`dst <= src`) and
    /// returns how many bytes it wrote (at most `len`).
    pub fn decode(&mut self, buf: &mut [u8], src: usize, dst: usize, len: usize) -> Result<usize, Violation> {
        debug_assert!(dst <= src && src + len <= buf.len());
        let mut w = dst;
        for r in src..src + len {
            let c = buf[r];
            if c == b'=' {
                // `xx==` or `xxx=`: padding starts at the group's third or fourth character, and
                // the bits it leaves over must be zero (as canonical encoders write them).
                let starts = !self.padding && self.pos >= 2 && self.acc == 0;
                let continues = self.padding && self.pos == 3;
                if !starts && !continues {
                    return Err(INVALID);
                }
                self.padding = true;
                self.pos = (self.pos + 1) % 4;
                continue;
            }
            let value = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(INVALID),
            };
            if self.padding {
                return Err(INVALID);
            }
            self.acc = (self.acc << 6) | u32::from(value);
            self.bits += 6;
            if self.bits >= 8 {
                self.bits -= 8;
                buf[w] = (self.acc >> self.bits) as u8;
                w += 1;
                self.acc &= (1 << self.bits) - 1;
            }
            self.pos = (self.pos + 1) % 4;
        }
        Ok(w - dst)
    }

    /// The message is over: its last group must be complete. Resets for the next message.
    pub fn end_message(&mut self) -> Result<(), Violation> {
        let complete = self.pos == 0;
        *self = Decoder::default();
        if complete { Ok(()) } else { Err(INVALID) }
    }
}

/// Base64 text length of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The most bytes whose base64 text fits in `room` bytes.
pub fn max_input(room: usize) -> usize {
    room / 4 * 3
}

/// Replaces the `n` bytes at `buf[start..]` with their base64 text and returns its length;
/// `buf` must hold `encoded_len(n)` bytes from `start`.
pub fn encode_in_place(buf: &mut [u8], start: usize, n: usize) -> usize {
    /// Groups encoded per step (through a small copy of their input).
    const GROUPS: usize = 256;
    let groups = n / 3;
    let tail = n % 3;
    if tail > 0 {
        let mut input = [0u8; 2];
        input[..tail].copy_from_slice(&buf[start + groups * 3..start + n]);
        let out = start + groups * 4;
        let _ = STANDARD.encode_slice(&input[..tail], &mut buf[out..out + 4]);
    }
    let mut end = groups;
    while end > 0 {
        let first = end.saturating_sub(GROUPS);
        let mut input = [0u8; GROUPS * 3];
        let bytes = (end - first) * 3;
        input[..bytes].copy_from_slice(&buf[start + first * 3..start + end * 3]);
        let out = start + first * 4;
        let _ = STANDARD.encode_slice(&input[..bytes], &mut buf[out..out + bytes / 3 * 4]);
        end = first;
    }
    encoded_len(n)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Decodes `text` split into the given pieces, each moved down as the relay does.
    fn decode_split(text: &[u8], cuts: &[usize]) -> Result<Vec<u8>, Violation> {
        let mut decoder = Decoder::default();
        let mut buf = text.to_vec();
        let mut out = 0;
        let mut at = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        bounds.push(text.len());
        bounds.sort_unstable();
        for end in bounds {
            out += decoder.decode(&mut buf, at, out, end - at)?;
            at = end;
        }
        decoder.end_message()?;
        buf.truncate(out);
        Ok(buf)
    }

    #[test]
    fn strict_rules() {
        assert_eq!(decode_split(b"aGVsbG8=", &[]).unwrap(), b"hello");
        assert_eq!(decode_split(b"aGk=", &[1, 3]).unwrap(), b"hi");
        assert_eq!(decode_split(b"YQ==", &[3]).unwrap(), b"a");
        assert_eq!(decode_split(b"", &[]).unwrap(), b"");
        for bad in [
            &b"aGVsbG8"[..], // missing padding
            b"aGk",          // missing padding
            b"aG k=",        // whitespace
            b"aGk=\n",       // a newline after
            b"YQ==YQ==",     // data after padding
            b"Y===",         // padding too early
            b"YR==",         // leftover bits not zero
            b"aGk-",         // URL-safe alphabet
            b"YQ=",          // padding cut short
        ] {
            assert_eq!(decode_split(bad, &[]), Err(INVALID), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encodes_in_place_at_every_length() {
        for n in 0..2000usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let mut buf = vec![0xEE; 5 + encoded_len(n)];
            buf[5..5 + n].copy_from_slice(&data);
            let len = encode_in_place(&mut buf, 5, n);
            assert_eq!(&buf[5..5 + len], STANDARD.encode(&data).as_bytes(), "n {n}");
        }
        assert!(encoded_len(max_input(1000)) <= 1000);
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip_through_any_split(data in prop::collection::vec(any::<u8>(), 0..3000), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
            let text = STANDARD.encode(&data);
            prop_assert_eq!(decode_split(text.as_bytes(), &cuts).unwrap(), data);
        }

        #[test]
        fn decoding_agrees_with_the_crate(text in "[A-Za-z0-9+/=]{0,16}") {
            let ours = decode_split(text.as_bytes(), &[]).ok();
            let crate_says = STANDARD.decode(&text).ok();
            prop_assert_eq!(ours, crate_says);
        }
    }
}
