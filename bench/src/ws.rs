//! WebSocket framing (RFC 6455 §5), written for throughput and used by both ends of a run.
//!
//! The reader parses frames straight out of one large read buffer and hands payload out as
//! slices, unmasking in place; the writer puts each header in front of its payload in one buffer
//! and masks 8 bytes at a time. That keeps the client's own cost per byte to a copy or two, so
//! the benchmark measures the proxy, not the client (see `client` for the numbers).
//!
//! Only what the benchmark needs is here: binary messages, Ping/Pong skipped, Close ends the
//! stream. Anything else is reported as an error, which doubles as a sanity check of the proxies.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::rng::XorShift;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER: usize = 14;

/// Appends the header of a final frame with `len` payload bytes to `out`.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// XORs `data` with `mask`, where `data` starts `phase` bytes into its frame's payload.
///
/// Eight bytes per step (the compiler widens it further); a byte-at-a-time loop would cost more
/// than the copy the data has already had.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    let m: [u8; 4] = std::array::from_fn(|i| mask[(phase + i) % 4]);
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask's phase is unchanged.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= m[i % 4];
    }
}

/// Appends a Close frame (status 1000, normal closure) to `out`; masked when `masks` is given.
pub fn put_close(out: &mut Vec<u8>, masks: Option<&mut XorShift>) {
    let mask = masks.map(XorShift::mask);
    put_header(out, OP_CLOSE, 2, mask);
    let start = out.len();
    out.extend_from_slice(&1000u16.to_be_bytes());
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
}

/// Appends a final binary frame carrying `payload`, masked with a fresh mask when `masks` is
/// given (as a browser does for every message), to `out`.
pub fn put_binary(out: &mut Vec<u8>, payload: &[u8], masks: Option<&mut XorShift>) {
    let mask = masks.map(XorShift::mask);
    put_header(out, OP_BINARY, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
}

/// Sends a Close frame; masked (as a client must) when `masks` is given.
pub async fn send_close<W: AsyncWrite + Unpin>(io: &mut W, masks: Option<&mut XorShift>) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(MAX_HEADER + 2);
    put_close(&mut out, masks);
    io.write_all(&out).await?;
    // A TLS stream holds the record until flushed.
    io.flush().await
}

/// What `FrameReader::next` found.
pub enum Event<'a> {
    /// Payload of a binary message, unmasked; a long frame arrives as several of these.
    Data(&'a [u8]),
    /// The peer sent Close.
    Close,
    /// The connection ended cleanly between frames.
    Eof,
}

/// A parsed frame header.
struct Header {
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: u64,
    /// Bytes the header itself took.
    len: usize,
}

/// Parses the header at the start of `buf`; `None` when more bytes are needed.
fn parse_header(buf: &[u8], expect_masked: bool) -> Result<Option<Header>, String> {
    let [first, second, ..] = *buf else { return Ok(None) };
    if first & 0x70 != 0 {
        return Err(format!(
            "frame with reserved bits set ({first:#04x}); no extension was negotiated"
        ));
    }
    let opcode = first & 0x0f;
    let masked = second & 0x80 != 0;
    if masked != expect_masked {
        return Err(if masked {
            "a server sent a masked frame".into()
        } else {
            "a client sent an unmasked frame".into()
        });
    }
    let (payload, mut len) = match second & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10),
        126 | 127 => return Ok(None),
        short => (u64::from(short), 2),
    };
    if opcode >= OP_CLOSE && (payload > 125 || first & 0x80 == 0) {
        return Err(format!("control frame {opcode:#x} fragmented or longer than 125 bytes"));
    }
    let mask = if masked {
        let Some(mask) = buf.get(len..len + 4) else {
            return Ok(None);
        };
        len += 4;
        Some(mask.try_into().expect("4 bytes"))
    } else {
        None
    };
    Ok(Some(Header {
        opcode,
        mask,
        payload,
        len,
    }))
}

/// Incoming frames, parsed out of one large read buffer.
pub struct FrameReader<R> {
    io: R,
    buf: Box<[u8]>,
    /// `buf[start..end]` holds bytes read but not yet handed out or parsed.
    start: usize,
    end: usize,
    /// Payload bytes of the current frame that have not been handed out yet.
    remaining: u64,
    /// The current frame's mask, and how many of its payload bytes were already unmasked (the
    /// mask's phase for the next byte): a frame's payload often spans several reads.
    mask: Option<[u8; 4]>,
    phase: usize,
    /// The current frame is a Ping or Pong: its payload is skipped, not handed out.
    discard: bool,
    /// Whether frames must be masked (this end is a server) or must not be (a client).
    expect_masked: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `leftover` is what the handshake read past the HTTP head: the first frame bytes.
    pub fn new(io: R, leftover: &[u8], read_size: usize, expect_masked: bool) -> Self {
        let mut buf = vec![0; read_size.max(leftover.len() + MAX_HEADER)].into_boxed_slice();
        buf[..leftover.len()].copy_from_slice(leftover);
        Self {
            io,
            buf,
            start: 0,
            end: leftover.len(),
            remaining: 0,
            mask: None,
            phase: 0,
            discard: false,
            expect_masked,
        }
    }

    /// The next piece of payload, or the end of the stream.
    pub async fn next(&mut self) -> Result<Event<'_>, String> {
        loop {
            if self.remaining > 0 {
                if self.start == self.end {
                    // Empty: read from the start, so that reads stay as large as the buffer.
                    (self.start, self.end) = (0, 0);
                    if self.fill().await? == 0 {
                        return Err("connection closed in the middle of a frame".into());
                    }
                }
                let n = (self.end - self.start).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let at = self.start;
                self.start += n;
                self.remaining -= n as u64;
                if self.discard {
                    continue;
                }
                if let Some(mask) = self.mask {
                    apply_mask(&mut self.buf[at..at + n], mask, self.phase);
                    self.phase = (self.phase + n) % 4;
                }
                return Ok(Event::Data(&self.buf[at..at + n]));
            }
            let Some(header) = parse_header(&self.buf[self.start..self.end], self.expect_masked)? else {
                // An incomplete header: move it to the front and read more behind it.
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
                if self.fill().await? == 0 {
                    return match self.end {
                        0 => Ok(Event::Eof),
                        _ => Err("connection closed in the middle of a frame header".into()),
                    };
                }
                continue;
            };
            self.start += header.len;
            match header.opcode {
                OP_BINARY | OP_CONTINUATION => self.discard = false,
                OP_PING | OP_PONG => self.discard = true,
                OP_CLOSE => return Ok(Event::Close),
                OP_TEXT => return Err("text frame: the proxy is not relaying in binary mode".into()),
                other => return Err(format!("frame with unknown opcode {other:#x}")),
            }
            (self.remaining, self.mask, self.phase) = (header.payload, header.mask, 0);
        }
    }

    /// Reads until the peer's Close or the end of the connection, ignoring data and errors.
    ///
    /// Used after the measured part, so that neither end closes its socket with unread bytes
    /// in it (which turns the close into a reset, and the proxy's log into noise).
    pub async fn drain_until_close(&mut self) {
        while let Ok(Event::Data(_)) = self.next().await {}
    }

    async fn fill(&mut self) -> Result<usize, String> {
        let n = self
            .io
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `wire` fed in pieces of `step` bytes and returns the payload and how it ended.
    async fn read_all(wire: &[u8], step: usize, expect_masked: bool) -> (Vec<u8>, &'static str) {
        let (mut tx, rx) = tokio::io::duplex(step);
        let wire = wire.to_vec();
        let writer = tokio::spawn(async move {
            // Errors end the loop: the reader stops at Close and drops its end.
            for piece in wire.chunks(step) {
                if tx.write_all(piece).await.is_err() {
                    break;
                }
            }
        });
        let mut reader = FrameReader::new(rx, &[], 64, expect_masked);
        let mut payload = Vec::new();
        let end = loop {
            match reader.next().await.unwrap() {
                Event::Data(d) => payload.extend_from_slice(d),
                Event::Close => break "close",
                Event::Eof => break "eof",
            }
        };
        drop(reader);
        writer.await.unwrap();
        (payload, end)
    }

    #[tokio::test]
    async fn masked_frames_of_every_length_class_round_trip_through_small_reads() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let mut masks = XorShift::new(42);
        let mut wire = Vec::new();
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 3] {
            put_binary(&mut wire, &data[..len], Some(&mut masks));
        }
        // A Ping in between is skipped.
        put_header(&mut wire, OP_PING, 3, Some([1, 2, 3, 4]));
        wire.extend_from_slice(&[9, 9, 9]);
        put_binary(&mut wire, &data[..1000], Some(&mut masks));
        put_close(&mut wire, Some(&mut masks));
        let expected: Vec<u8> = [0, 1, 125, 126, 127, 65_535, 65_536, 3, 1000]
            .iter()
            .flat_map(|&len| data[..len].to_vec())
            .collect();
        for step in [1, 5, 13, 4096] {
            let (payload, end) = read_all(&wire, step, true).await;
            assert_eq!(payload, expected, "step {step}");
            assert_eq!(end, "close");
        }
    }

    #[tokio::test]
    async fn unmasked_frames_end_with_eof_and_a_masked_one_is_refused() {
        let mut wire = Vec::new();
        put_binary(&mut wire, b"hello", None);
        assert_eq!(read_all(&wire, 2, false).await, (b"hello".to_vec(), "eof"));

        let mut masked = Vec::new();
        put_binary(&mut masked, b"hello", Some(&mut XorShift::new(1)));
        let mut reader = FrameReader::new(&masked[..], &[], 64, false);
        assert!(reader.next().await.is_err());
    }

    #[test]
    fn mask_phase_carries_across_pieces() {
        let original: Vec<u8> = (0..=255).collect();
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let mut whole = original.clone();
        apply_mask(&mut whole, mask, 0);
        let expected: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(whole, expected);
        let mut pieces = original.clone();
        let (a, b) = pieces.split_at_mut(37);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 37);
        assert_eq!(pieces, expected);
    }
}
