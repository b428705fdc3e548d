//! Fuzz targets: what wsproxy does with bytes it did not choose, as functions of one byte string.
//!
//! Each function below is the body of a libFuzzer target in `wsproxy/fuzz/fuzz_targets/` (run
//! with `cargo fuzz run NAME` where a nightly toolchain is installed) and of the stable harness
//! in this module's tests, which `cargo test` runs over the seed corpus in
//! `wsproxy/fuzz/corpus/NAME/` and over generated inputs (random bytes and mutated seeds). Each
//! checks properties, not only the absence of a panic:
//!
//! - [`frame_decoder`]: the client frame parser, unmasking, close-frame validation and the
//!   server frame header, as pure functions: a header is complete or not at every cut, errors
//!   are protocol errors, unmasking is a byte-wise XOR wherever a frame is split, close payloads
//!   parse to valid codes, server headers read back.
//! - [`relay_session`]: any byte string as a client's side of a whole relay session (part of it
//!   as the early bytes read with the handshake), against a target that sends bytes too: the
//!   session ends, every frame wsproxy sends is a well-formed server frame, close codes are
//!   valid, and what reaches each side is at most, and in order, what the other sent.
//! - [`handshake`]: any header lines as an upgrade request: 101 with the right accept key and an
//!   offered subprotocol, or 400.
//! - [`token_file`]: any text as a token file, line by line: a line is blank, a comment, an
//!   error with a reason, or a token and target that read back the same when written again.
//! - [`services_file`]: any text as a services file (TOML or the seed's JSON): a service list or
//!   a one-line error; port expressions and placeholders never panic.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Target;
use crate::http::handshake;
use crate::relay::frame::{
    self, MAX_CLIENT_HEADER, MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG,
};
use crate::relay::{Relay, Settings};
use crate::route::parse_line;
use crate::sessions::services;

/// The client frame parser and the framing helpers, as pure functions over `data`.
pub fn frame_decoder(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        match frame::parse_client_header(rest) {
            Ok(None) => {
                assert!(
                    rest.len() < MAX_CLIENT_HEADER,
                    "{} bytes and still no header",
                    rest.len()
                );
                break;
            }
            Err(violation) => {
                assert_eq!(violation.code, frame::close::PROTOCOL_ERROR, "{violation:?}");
                // Every shorter cut is incomplete or fails the same way.
                for cut in 0..rest.len().min(MAX_CLIENT_HEADER) {
                    match frame::parse_client_header(&rest[..cut]) {
                        Ok(None) => {}
                        Err(early) => assert_eq!(early, violation),
                        Ok(Some(header)) => panic!("a cut of a bad header parsed: {header:?}"),
                    }
                }
                break;
            }
            Ok(Some(header)) => {
                assert!(matches!(header.header_len, 6 | 8 | 14), "{header:?}");
                assert!(header.header_len <= rest.len());
                assert!(header.payload_len < 1 << 63);
                if header.opcode & 0x8 != 0 {
                    assert!(
                        header.fin && header.payload_len <= MAX_CONTROL_PAYLOAD as u64,
                        "{header:?}"
                    );
                }
                for cut in 0..header.header_len {
                    assert_eq!(
                        frame::parse_client_header(&rest[..cut]),
                        Ok(None),
                        "cut {cut} of {header:?}"
                    );
                }
                let payload = &rest[header.header_len..];
                let n = usize::try_from(header.payload_len).map_or(payload.len(), |len| len.min(payload.len()));
                let plain = check_unmask(&payload[..n], header.mask, rest.first().copied().unwrap_or(0));
                if header.opcode == OP_CLOSE && n as u64 == header.payload_len {
                    check_close(&plain);
                }
                at += header.header_len + n;
            }
        }
    }
    // Server headers of any length read back, and a close frame built from any reason parses.
    let len = data.iter().take(8).fold(0usize, |acc, b| (acc << 8) | usize::from(*b)) >> 8;
    let mut buf = [0u8; MAX_SERVER_HEADER];
    let start = frame::write_server_header(&mut buf, MAX_SERVER_HEADER, OP_BINARY, len);
    let read = server_frame_header(&buf[start..]).expect("a complete header");
    assert_eq!(
        (read.0, read.1, read.2),
        (0x80 | OP_BINARY, len as u64, MAX_SERVER_HEADER - start)
    );
    let reason = String::from_utf8_lossy(data);
    let code = data.get(..2).map_or(1000, |b| u16::from_be_bytes([b[0], b[1]]));
    let built = frame::ControlFrame::close(code, &reason);
    let bytes = built.as_bytes();
    assert_eq!(usize::from(bytes[1]), bytes.len() - 2);
    assert!(bytes.len() - 2 <= MAX_CONTROL_PAYLOAD);
    assert!(reason.starts_with(std::str::from_utf8(&bytes[4..]).expect("a cut at a character boundary")));
}

/// Unmasks `masked` in place as the relay does, split in two at `split`, and checks it against a
/// byte-wise XOR. Returns the plain payload.
fn check_unmask(masked: &[u8], mask: [u8; 4], split: u8) -> Vec<u8> {
    let want: Vec<u8> = masked.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
    // The relay moves payload down over headers: leave a gap in front, as a header would.
    let gap = usize::from(split % 15);
    let mut buf = vec![0xEE; gap];
    buf.extend_from_slice(masked);
    let first = usize::from(split).min(masked.len());
    frame::unmask_move(&mut buf, gap, 0, first, mask, 0);
    frame::unmask_move(&mut buf, gap + first, first, masked.len() - first, mask, first as u64);
    assert_eq!(&buf[..masked.len()], &want[..], "mask {mask:?} split {first}");
    want
}

fn check_close(payload: &[u8]) {
    match frame::parse_close(payload) {
        Ok(close) => {
            if let Some(code) = close.code {
                assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999), "code {code}");
                assert_eq!(close.reason.as_bytes(), &payload[2..]);
            } else {
                assert!(payload.is_empty());
            }
        }
        Err(violation) => assert!(
            matches!(
                violation.code,
                frame::close::PROTOCOL_ERROR | frame::close::INVALID_PAYLOAD
            ),
            "{violation:?}"
        ),
    }
}

/// A server frame header at the start of `bytes`: (first byte, payload length, header length).
fn server_frame_header(bytes: &[u8]) -> Option<(u8, u64, usize)> {
    let [b0, b1, rest @ ..] = bytes else { return None };
    assert_eq!(b1 & 0x80, 0, "a server frame is masked");
    match b1 & 0x7F {
        126 => {
            let len = u16::from_be_bytes(*rest.first_chunk::<2>()?);
            assert!(len >= 126, "length {len} not in its shortest form");
            Some((*b0, u64::from(len), 4))
        }
        127 => {
            let len = u64::from_be_bytes(*rest.first_chunk::<8>()?);
            assert!(len > 0xFFFF && len >> 63 == 0, "length {len} not in its shortest form");
            Some((*b0, len, 10))
        }
        len => Some((*b0, u64::from(len), 2)),
    }
}

/// `data` as the client's side of a relay session: the first byte says how much of it arrives
/// with the handshake (the early bytes) and where the rest is cut into reads; the target sends
/// a few bytes of it back, then closes or not.
pub fn relay_session(data: &[u8]) {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let early_len = usize::from(control & 0x0F).min(data.len());
    let (early, rest) = data.split_at(early_len);
    let cut = if rest.is_empty() {
        0
    } else {
        usize::from(control) * 7 % rest.len()
    };
    let target_sends: Vec<u8> = data.iter().rev().take(usize::from(control >> 2)).copied().collect();
    let target_closes = control & 0x80 != 0;
    let (early, rest) = (early.to_vec(), rest.to_vec());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (report, to_target, back) = runtime.block_on(async move {
        let (client_side, relay_client) = tokio::io::duplex(1 << 16);
        let (relay_target, target_side) = tokio::io::duplex(1 << 16);
        let settings = Settings {
            max_message: 4096,
            heartbeat: None,
            close_timeout: Duration::from_millis(200),
        };
        let relay = tokio::spawn(async move {
            let mut relay = Relay::new(relay_client, relay_target, &early, settings, None);
            std::future::poll_fn(|cx| relay.poll_relay(cx)).await
        });
        let (mut client_read, mut client_write) = tokio::io::split(client_side);
        let writer = tokio::spawn(async move {
            for piece in [&rest[..cut], &rest[cut..]] {
                if client_write.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = client_write.shutdown().await;
        });
        let sends = target_sends.clone();
        let target = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(target_side);
            let _ = write.write_all(&sends).await;
            if target_closes {
                let _ = write.shutdown().await;
            }
            let mut got = Vec::new();
            let _ = read.read_to_end(&mut got).await;
            drop(write);
            got
        });
        let mut back = Vec::new();
        let limit = Duration::from_secs(30);
        tokio::time::timeout(limit, client_read.read_to_end(&mut back))
            .await
            .expect("the relay never closed the client's side")
            .expect("reading the relay's frames");
        let report = tokio::time::timeout(limit, relay)
            .await
            .expect("the relay never ended")
            .expect("the relay panicked");
        let _ = writer.await;
        let to_target = tokio::time::timeout(limit, target)
            .await
            .expect("the target's side never ended")
            .expect("the target task panicked");
        (report, to_target, (back, target_sends))
    });
    let (back, target_sent) = back;
    assert!(
        to_target.len() <= data.len(),
        "more reached the target than the client sent"
    );
    assert_eq!(report.to_target, to_target.len() as u64);

    // Every frame wsproxy sent is a final, unmasked server frame; data is binary; a close is last.
    let mut at = 0;
    let mut payloads = Vec::new();
    let mut closed = false;
    while at < back.len() {
        assert!(!closed, "a frame after the close frame");
        let (first, len, header_len) = server_frame_header(&back[at..]).expect("a whole frame header");
        let len = usize::try_from(len).expect("a frame length");
        let payload = back.get(at + header_len..at + header_len + len).expect("a whole frame");
        assert_eq!(first & 0xF0, 0x80, "a server frame with RSV bits or without FIN");
        match first & 0x0F {
            OP_BINARY => payloads.extend_from_slice(payload),
            OP_PING | OP_PONG => assert!(len <= MAX_CONTROL_PAYLOAD),
            OP_CLOSE => {
                closed = true;
                // Empty: the reply to a client's close that had no code.
                assert_ne!(len, 1, "a close frame with a 1-byte body");
                if len >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    assert!(
                        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                        "close code {code} sent"
                    );
                    assert!(
                        std::str::from_utf8(&payload[2..]).is_ok(),
                        "a close reason that is not UTF-8"
                    );
                }
            }
            opcode => panic!("a server frame with opcode {opcode}"),
        }
        at += header_len + len;
    }
    assert!(
        target_sent.starts_with(&payloads),
        "the client got other bytes than the target sent"
    );
    assert!(payloads.len() as u64 <= report.to_client);
}

/// `data` as the header lines of an upgrade request (`name: value` per line; the first byte
/// picks the method).
pub fn handshake(data: &[u8]) {
    let method = if data.first().is_some_and(|b| b & 1 == 1) {
        Method::POST
    } else {
        Method::GET
    };
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let upgrade = handshake::is_upgrade(&method, &headers);
    if method != Method::GET {
        assert!(!upgrade, "a {method} request upgraded");
    }
    if upgrade {
        assert!(headers.get_all(http::header::UPGRADE).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .to_ascii_lowercase()
                .contains("websocket")
        }));
    }
    let response = handshake::accept(&headers);
    let version = headers
        .get("sec-websocket-version")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let key = headers.get("sec-websocket-key");
    let offered: Vec<String> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    match response.status() {
        StatusCode::SWITCHING_PROTOCOLS => {
            assert!(matches!(version, Some("13" | "8" | "7")), "101 for version {version:?}");
            let key = key.expect("101 without a key");
            let accept = response
                .headers()
                .get(SEC_WEBSOCKET_ACCEPT)
                .expect("101 without an accept key");
            assert_eq!(
                accept.as_bytes(),
                tungstenite::handshake::derive_accept_key(key.as_bytes()).as_bytes()
            );
            let chosen = response
                .headers()
                .get(SEC_WEBSOCKET_PROTOCOL)
                .map(|p| p.to_str().unwrap_or("?"));
            if let Some(chosen) = chosen {
                assert!(
                    offered.iter().any(|p| p.eq_ignore_ascii_case(chosen)),
                    "chose {chosen:?} from {offered:?}"
                );
            }
            if offered.iter().any(|p| p.eq_ignore_ascii_case("binary")) {
                assert_eq!(chosen, Some("binary"), "binary offered in {offered:?}");
            }
        }
        StatusCode::BAD_REQUEST => {}
        status => panic!("an upgrade answered {status}"),
    }
    if !matches!(version, Some("13" | "8" | "7")) || key.is_none() {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}

/// `data` as a token file, line by line.
pub fn token_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let trimmed = line.trim();
        match parse_line(line) {
            None => assert!(trimmed.is_empty() || trimmed.starts_with('#'), "{line:?} skipped"),
            Some(Err(why)) => {
                assert!(!why.is_empty() && !why.contains('\n'), "{why:?}");
                assert!(!trimmed.is_empty() && !trimmed.starts_with('#'));
            }
            Some(Ok((token, target))) => {
                assert!(trimmed.starts_with(&token), "token {token:?} of {line:?}");
                let written = match &target {
                    Target::Tcp { host, port } if host.contains(':') => format!("{token}: [{host}]:{port}"),
                    Target::Tcp { host, port } => format!("{token}: {host}:{port}"),
                    Target::Unix(path) => format!("{token}: unix_socket:{}", path.display()),
                    Target::Wrapped { .. } => panic!("a token file named the wrapped command"),
                    Target::WebSocket(_) => format!("{token}: {target}"),
                };
                assert_eq!(
                    parse_line(&written),
                    Some(Ok((token, target))),
                    "{line:?} written as {written:?}"
                );
            }
        }
    }
}

/// `data` as a services file (TOML, or the seed's JSON), and as port expressions and templates.
pub fn services_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for parsed in [services::parse(&text), services::from_json(&text)] {
        match parsed {
            Ok(found) => {
                for (i, service) in found.services.iter().enumerate() {
                    assert!(
                        found.services[..i].iter().all(|other| other.name != service.name),
                        "service {:?} twice",
                        service.name
                    );
                }
            }
            Err(e) => assert!(!e.is_empty() && !e.contains('\n'), "{e:?}"),
        }
    }
    let index = data.first().map_or(0, |b| u32::from(*b));
    if let Ok(expr) = services::Expr::parse(&text) {
        let _ = expr.eval(index);
        let _ = expr.eval(u32::MAX);
    }
    match services::placeholders(&text) {
        Ok(names) => {
            let out = services::substitute(&text, |_| String::new());
            for name in names {
                assert!(!name.contains('}'), "{name:?}");
            }
            assert!(out.len() <= text.len());
        }
        Err(e) => assert!(e.contains("unclosed")),
    }
}

#[cfg(test)]
mod tests {
    //! The stable harness: every target over its seed corpus, then over generated inputs.

    use std::path::PathBuf;

    use super::*;

    /// A small deterministic generator (xorshift64*): the same inputs in every run, unless
    /// `WSPROXY_FUZZ_SEED` picks others (a failure prints the seed and the input).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the seed corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        files.sort();
        let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("a corpus file")).collect();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    /// A mutation of a seed: bytes flipped, inserted, removed, or a piece of another seed.
    fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len() + 1);
            match rng.below(5) {
                0 if at < input.len() => input[at] ^= 1 << rng.below(8),
                1 => input.insert(at, rng.next() as u8),
                2 if at < input.len() => {
                    input.remove(at);
                }
                3 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    let to = from + rng.below(other.len() - from + 1);
                    input.splice(at..at, other[from..to].iter().copied());
                }
                _ => {
                    let interesting = [0u8, 0x7F, 0x80, 0xFF, b':', b' ', b'\n', b'{', b'}', 126, 127];
                    if at < input.len() {
                        input[at] = interesting[rng.below(interesting.len())];
                    }
                }
            }
        }
        input
    }

    fn random(rng: &mut Rng) -> Vec<u8> {
        (0..rng.below(300)).map(|_| rng.next() as u8).collect()
    }

    /// Runs `target` over the corpus, then `generated` inputs (half random, half mutated seeds).
    fn harness(name: &str, target: fn(&[u8]), generated: usize) {
        let seeds = corpus(name);
        let seed = std::env::var("WSPROXY_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED_F0F0_F022_u64);
        let mut rng = Rng(seed | 1);
        let inputs = seeds.iter().cloned().chain((0..generated).map(|i| {
            if i % 2 == 0 {
                random(&mut rng)
            } else {
                mutate(&mut rng, &seeds)
            }
        }));
        for input in inputs {
            let outcome = std::panic::catch_unwind(|| target(&input));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} failed (WSPROXY_FUZZ_SEED={seed}) on {} bytes: {input:?}",
                input.len()
            );
        }
    }

    #[test]
    fn frame_decoder_over_corpus_and_generated_inputs() {
        harness("frame_decoder", frame_decoder, 200_000);
    }

    #[test]
    fn relay_session_over_corpus_and_generated_inputs() {
        harness("relay_session", relay_session, 20_000);
    }

    #[test]
    fn handshake_over_corpus_and_generated_inputs() {
        harness("handshake", handshake, 100_000);
    }

    #[test]
    fn token_file_over_corpus_and_generated_inputs() {
        harness("token_file", token_file, 100_000);
    }

    #[test]
    fn services_file_over_corpus_and_generated_inputs() {
        harness("services_file", services_file, 20_000);
    }
}
