//! WebSocket framing (RFC 6455) for the relay's data path.
//!
//! This is the one small interface the relay uses to speak WebSocket: parse a client frame header,
//! unmask a payload, write a server frame header, build a control frame. Everything here is pure and
//! allocation-free, so the relay decides when buffers exist (only while data flows) and a different
//! framing implementation can be dropped in by replacing this module.
//!
//! Why not tokio-tungstenite for the data path: it owns a zero-filled read buffer per connection from
//! the start, caps reads at that buffer's size and copies each outgoing message twice. Measured on
//! this machine it reached ~0.65x of the no-proxy ceiling and 5.75 KiB per idle connection; the relay
//! built on this module streams payloads in place instead (see `relay.rs`).

/// Longest client frame header: 2 bytes + 8 bytes of extended length + 4 bytes of mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// Longest server frame header (servers never mask): 2 bytes + 8 bytes of extended length.
pub const MAX_SERVER_HEADER: usize = 10;
/// Control frames carry at most 125 bytes of payload (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes used by the proxy (RFC 6455 7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    pub payload_len: u64,
    /// Bytes the header itself occupies; the payload starts right after.
    pub header_len: usize,
}

/// Why a client frame is refused: a close code and the reason sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// Parses the header of a frame sent by a client. `Ok(None)` means more bytes are needed.
///
/// Clients must mask (RFC 6455 5.1), no extension is negotiated so RSV bits must be clear, control
/// frames must be short and unfragmented. Data-level rules (text frames, message size) are the
/// relay's, because they depend on the session's state.
pub fn parse_client_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    parse_header(buf, true)
}

/// Parses the header of a frame sent by a server (a WebSocket target, `crate::ws_target`): the
/// same rules, except that servers must not mask (RFC 6455 5.1); `mask` is zero.
pub fn parse_server_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    parse_header(buf, false)
}

fn parse_header(buf: &[u8], from_client: bool) -> Result<Option<Header>, Violation> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(violation(
            close::PROTOCOL_ERROR,
            "Reserved bits set without an extension",
        ));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(violation(close::PROTOCOL_ERROR, "Unknown opcode"));
    }
    let masked = b1 & 0x80 != 0;
    if masked != from_client {
        return Err(violation(
            close::PROTOCOL_ERROR,
            if from_client {
                "Protocol error: frame not masked"
            } else {
                "Protocol error: server frame masked"
            },
        ));
    }
    let (payload_len, rest, ext) = match b1 & 0x7F {
        126 => match rest {
            [a, b, rest @ ..] => (u64::from(u16::from_be_bytes([*a, *b])), rest, 2),
            _ => return Ok(None),
        },
        127 => match rest.split_first_chunk::<8>() {
            Some((len, rest)) => {
                let len = u64::from_be_bytes(*len);
                if len >> 63 != 0 {
                    return Err(violation(close::PROTOCOL_ERROR, "Frame length has the top bit set"));
                }
                (len, rest, 8)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), rest, 0),
    };
    let mask = match rest.first_chunk::<4>() {
        Some(mask) => *mask,
        None if !masked => [0; 4],
        None => return Ok(None),
    };
    if opcode & 0x8 != 0 {
        if !fin {
            return Err(violation(close::PROTOCOL_ERROR, "Fragmented control frame"));
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(violation(close::PROTOCOL_ERROR, "Control frame longer than 125 bytes"));
        }
    }
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: 2 + ext + if masked { 4 } else { 0 },
    }))
}

/// Writes the header of a masked, final client frame at the start of `buf` (which must hold
/// `MAX_CLIENT_HEADER` bytes) and returns its length; the payload, masked with `mask`, follows.
pub fn write_client_header(buf: &mut [u8], opcode: u8, payload_len: usize, mask: [u8; 4]) -> usize {
    buf[0] = 0x80 | opcode;
    let at = if payload_len < 126 {
        buf[1] = 0x80 | payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        buf[1] = 0x80 | 126;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        buf[1] = 0x80 | 127;
        buf[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    buf[at..at + 4].copy_from_slice(&mask);
    at + 4
}

/// Unmasks `len` bytes starting at `src` and stores them at `dst` (`dst <= src`), in one pass.
///
/// Moving while unmasking lets the relay squeeze frame headers out of its buffer so the payloads of
/// several frames reach the target in one write. `offset` is how many payload bytes of this frame
/// came before, which selects where in the 4-byte mask to start. Works 8 bytes at a time.
pub fn unmask_move(buf: &mut [u8], src: usize, dst: usize, len: usize, mask: [u8; 4], offset: u64) {
    debug_assert!(dst <= src && src + len <= buf.len());
    let shift = (offset % 4) as usize;
    let mut wide = [0u8; 8];
    for (i, byte) in wide.iter_mut().enumerate() {
        *byte = mask[(shift + i) % 4];
    }
    let word_mask = u64::from_ne_bytes(wide);
    let words = len / 8;
    for i in 0..words {
        let s = src + i * 8;
        let d = dst + i * 8;
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[s..s + 8]);
        let value = u64::from_ne_bytes(word) ^ word_mask;
        buf[d..d + 8].copy_from_slice(&value.to_ne_bytes());
    }
    for i in words * 8..len {
        buf[dst + i] = buf[src + i] ^ wide[i % 8];
    }
}

/// Writes the header of an unmasked, final server frame so that it ends exactly at `end`, and
/// returns where it starts. The relay reads payload into its buffer after `MAX_SERVER_HEADER`
/// bytes of room, so header and payload go out in one write with no copy.
pub fn write_server_header(buf: &mut [u8], end: usize, opcode: u8, payload_len: usize) -> usize {
    let first = 0x80 | opcode;
    if payload_len < 126 {
        let start = end - 2;
        buf[start] = first;
        buf[start + 1] = payload_len as u8;
        start
    } else if let Ok(len) = u16::try_from(payload_len) {
        let start = end - 4;
        buf[start] = first;
        buf[start + 1] = 126;
        buf[start + 2..end].copy_from_slice(&len.to_be_bytes());
        start
    } else {
        let start = end - 10;
        buf[start] = first;
        buf[start + 1] = 127;
        buf[start + 2..end].copy_from_slice(&(payload_len as u64).to_be_bytes());
        start
    }
}

/// A complete small server frame (close, ping or pong), kept inline so queuing one never allocates.
#[derive(Clone)]
pub struct ControlFrame {
    bytes: [u8; 2 + MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl ControlFrame {
    /// Builds a frame; the payload is cut to 125 bytes if longer.
    pub fn new(opcode: u8, payload: &[u8]) -> Self {
        let n = payload.len().min(MAX_CONTROL_PAYLOAD);
        let mut bytes = [0u8; 2 + MAX_CONTROL_PAYLOAD];
        bytes[0] = 0x80 | opcode;
        bytes[1] = n as u8;
        bytes[2..2 + n].copy_from_slice(&payload[..n]);
        ControlFrame {
            bytes,
            len: (2 + n) as u8,
        }
    }

    /// A close frame with a status code and a reason (cut at a character boundary to fit).
    pub fn close(code: u16, reason: &str) -> Self {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
        Self::new(OP_CLOSE, &payload[..2 + cut])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn opcode(&self) -> u8 {
        self.bytes[0] & 0x0F
    }
}

/// What a client's close frame said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// `None` when the frame had no body (reported as 1005 by peers).
    pub code: Option<u16>,
    pub reason: String,
}

/// Validates the (unmasked) payload of a client close frame (RFC 6455 5.5.1, 7.4).
pub fn parse_close(payload: &[u8]) -> Result<CloseFrame, Violation> {
    match payload {
        [] => Ok(CloseFrame {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(violation(close::PROTOCOL_ERROR, "Close frame with a 1-byte body")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(violation(close::PROTOCOL_ERROR, "Invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| violation(close::INVALID_PAYLOAD, "Close reason is not UTF-8"))?;
            Ok(CloseFrame {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A client frame (masked with `mask`), for the tests here and the relay's property tests.
    pub(in crate::relay) fn masked_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn parses_each_length_form() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
            let payload = vec![7u8; len];
            let frame = masked_frame(0x82, &payload, [1, 2, 3, 4]);
            let header = parse_client_header(&frame).unwrap().unwrap();
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(header.header_len + len, frame.len());
            assert!(header.fin);
            assert_eq!(header.opcode, OP_BINARY);
            for cut in 0..header.header_len {
                assert_eq!(parse_client_header(&frame[..cut]), Ok(None), "len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn refuses_protocol_violations() {
        let unmasked = [0x82, 0x01, 0xAA];
        assert_eq!(parse_client_header(&unmasked).unwrap_err().code, close::PROTOCOL_ERROR);
        let rsv = masked_frame(0xC2, b"x", [0; 4]);
        assert_eq!(parse_client_header(&rsv).unwrap_err().code, close::PROTOCOL_ERROR);
        let opcode = masked_frame(0x83, b"x", [0; 4]);
        assert_eq!(parse_client_header(&opcode).unwrap_err().reason, "Unknown opcode");
        let fragmented_ping = masked_frame(0x09, b"x", [0; 4]);
        assert!(parse_client_header(&fragmented_ping).is_err());
        let long_ping = masked_frame(0x89, &[0; 126], [0; 4]);
        assert!(parse_client_header(&long_ping).is_err());
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert!(parse_client_header(&huge).is_err());
    }

    #[test]
    fn unmask_move_matches_bytewise_xor_at_every_offset_and_shift() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let plain: Vec<u8> = (0..100u8).collect();
        for offset in 0..4u64 {
            for gap in [0usize, 1, 3, 14] {
                let masked: Vec<u8> = plain
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(i + offset as usize) % 4])
                    .collect();
                let mut buf = vec![0xEEu8; gap];
                buf.extend_from_slice(&masked);
                unmask_move(&mut buf, gap, 0, plain.len(), mask, offset);
                assert_eq!(&buf[..plain.len()], &plain[..], "offset {offset} gap {gap}");
            }
        }
    }

    #[test]
    fn client_headers_written_here_parse_back_and_server_frames_must_not_mask() {
        for len in [0usize, 125, 126, 65535, 65536, 300_000] {
            let mut buf = [0u8; MAX_CLIENT_HEADER];
            let n = write_client_header(&mut buf, OP_BINARY, len, [9, 8, 7, 6]);
            let header = parse_client_header(&buf[..n]).unwrap().unwrap();
            assert_eq!(
                (header.payload_len, header.header_len, header.mask),
                (len as u64, n, [9, 8, 7, 6])
            );
            assert!(
                parse_server_header(&buf[..n]).is_err(),
                "a masked server frame is refused"
            );
            let mut server = [0u8; MAX_SERVER_HEADER];
            let start = write_server_header(&mut server, MAX_SERVER_HEADER, OP_BINARY, len);
            let header = parse_server_header(&server[start..]).unwrap().unwrap();
            assert_eq!(
                (header.payload_len, header.header_len),
                (len as u64, MAX_SERVER_HEADER - start)
            );
            assert!(parse_client_header(&server[start..]).is_err());
        }
        assert_eq!(parse_server_header(&[0x82]), Ok(None));
        assert_eq!(parse_server_header(&[0x82, 126, 0]), Ok(None));
    }

    #[test]
    fn server_header_round_trips_through_lengths() {
        for len in [0usize, 125, 126, 65535, 65536, 300_000] {
            let mut buf = [0u8; MAX_SERVER_HEADER];
            let start = write_server_header(&mut buf, MAX_SERVER_HEADER, OP_BINARY, len);
            let header = &buf[start..];
            assert_eq!(header[0], 0x82);
            let decoded = match header[1] {
                126 => u16::from_be_bytes([header[2], header[3]]) as usize,
                127 => u64::from_be_bytes(header[2..10].try_into().unwrap()) as usize,
                n => n as usize,
            };
            assert_eq!(decoded, len);
        }
    }

    #[test]
    fn close_frames_build_and_parse() {
        let frame = ControlFrame::close(4000, "bye");
        assert_eq!(frame.as_bytes(), &[0x88, 5, 0x0F, 0xA0, b'b', b'y', b'e']);
        let long = ControlFrame::close(1000, &"é".repeat(100));
        assert_eq!(long.as_bytes().len(), 2 + 2 + 122);
        assert_eq!(
            parse_close(&[0x03, 0xE8, b'o', b'k']),
            Ok(CloseFrame {
                code: Some(1000),
                reason: "ok".into()
            })
        );
        assert_eq!(parse_close(&[]).unwrap().code, None);
        assert!(parse_close(&[3]).is_err());
        assert!(parse_close(&1005u16.to_be_bytes()).is_err());
        assert_eq!(
            parse_close(&[0x03, 0xE8, 0xFF]).unwrap_err().code,
            close::INVALID_PAYLOAD
        );
    }
}
