//! Property tests of the relay's client-side decoding, driven through a whole `Relay` over
//! in-memory streams: any split of valid frames into reads relays the same bytes and answers the
//! same pings; any byte string ends the session without a panic, and a close frame sent back has a
//! valid code.

use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::frame::tests::masked_frame;
use super::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG};
use super::{Relay, Settings};

fn settings() -> Settings {
    Settings {
        max_message: 1 << 20,
        heartbeat: None,
        close_timeout: Duration::from_millis(200),
    }
}

/// Server frames in `bytes`: (first byte, payload); the rest (an unfinished frame) is ignored.
fn server_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 2 {
        let (len, start) = match bytes[at + 1] & 0x7f {
            126 if bytes.len() >= at + 4 => (usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])), at + 4),
            127 if bytes.len() >= at + 10 => (
                usize::try_from(u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap())).unwrap(),
                at + 10,
            ),
            126 | 127 => break,
            n => (usize::from(n), at + 2),
        };
        if bytes.len() < start + len {
            break;
        }
        frames.push((bytes[at], bytes[start..start + len].to_vec()));
        at = start + len;
    }
    frames
}

/// A message as frames: its payload cut into fragments, pings between them.
#[derive(Debug, Clone)]
struct Message {
    fragments: Vec<Vec<u8>>,
    pings: Vec<Vec<u8>>,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..4),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..3),
    )
        .prop_map(|(fragments, pings)| Message { fragments, pings })
}

/// Serialises the messages, then a close; returns the bytes, the payload bytes, the ping payloads.
fn encode(messages: &[Message], mask: [u8; 4]) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let (mut bytes, mut data, mut pings) = (Vec::new(), Vec::new(), Vec::new());
    for message in messages {
        let last = message.fragments.len() - 1;
        for (i, fragment) in message.fragments.iter().enumerate() {
            let opcode = if i == 0 { OP_BINARY } else { OP_CONTINUATION };
            let fin = if i == last { 0x80 } else { 0 };
            bytes.extend(masked_frame(fin | opcode, fragment, mask));
            data.extend_from_slice(fragment);
            if let Some(ping) = message.pings.get(i) {
                bytes.extend(masked_frame(0x80 | OP_PING, ping, mask));
                pings.push(ping.clone());
            }
        }
    }
    bytes.extend(masked_frame(0x80 | OP_CLOSE, &1000u16.to_be_bytes(), mask));
    (bytes, data, pings)
}

/// Runs a relay: the client writes `bytes` in pieces cut at `cuts` (yielding between them), then
/// closes its write half. Returns (what reached the target, what the client got back).
fn run(bytes: Vec<u8>, cuts: Vec<usize>) -> (Vec<u8>, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (client_side, relay_client): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 16);
        let (relay_target, mut target_side) = tokio::io::duplex(1 << 16);
        let relay = tokio::spawn(async move {
            let mut relay = Relay::new(relay_client, relay_target, &[], settings(), None);
            std::future::poll_fn(|cx| relay.poll_relay(cx)).await
        });
        let (mut client_read, mut client_write) = tokio::io::split(client_side);
        let writer = tokio::spawn(async move {
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            points.push(bytes.len());
            let mut from = 0;
            for to in points {
                if client_write.write_all(&bytes[from..to]).await.is_err() {
                    return;
                }
                from = to;
                tokio::task::yield_now().await;
            }
            let _ = client_write.shutdown().await;
        });
        let target = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = target_side.read_to_end(&mut got).await;
            got
        });
        let mut back = Vec::new();
        let read_back = tokio::time::timeout(Duration::from_secs(10), client_read.read_to_end(&mut back));
        assert!(read_back.await.is_ok(), "the relay never ended");
        tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("relay stuck")
            .expect("relay panicked");
        let _ = writer.await;
        let target = tokio::time::timeout(Duration::from_secs(10), target)
            .await
            .unwrap()
            .unwrap();
        (target, back)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_split_of_valid_frames_relays_the_same(
        messages in prop::collection::vec(message(), 1..5),
        mask in any::<[u8; 4]>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (bytes, data, pings) = encode(&messages, mask);
        let (target, back) = run(bytes, cuts);
        prop_assert_eq!(target, data);
        let frames = server_frames(&back);
        let pongs: Vec<Vec<u8>> = frames.iter().filter(|(first, _)| first & 0x0f == OP_PONG).map(|(_, p)| p.clone()).collect();
        prop_assert_eq!(pongs, pings);
        let close = frames.last().expect("a close reply");
        prop_assert_eq!(close.0 & 0x0f, OP_CLOSE);
        prop_assert_eq!(&close.1[..2], &1000u16.to_be_bytes()[..]);
    }

    #[test]
    fn any_byte_string_ends_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..2000), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let (_, back) = run(bytes, cuts);
        for (first, payload) in server_frames(&back) {
            if first & 0x0f == OP_CLOSE {
                prop_assert!(payload.len() >= 2, "a close without a code: {payload:?}");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                prop_assert!((1000..=1011).contains(&code) && code != 1004 && code != 1005 && code != 1006, "code {code}");
            }
        }
    }
}
