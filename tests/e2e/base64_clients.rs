//! The `base64` subprotocol of old clients: a raw client for the framing rules, and Python's
//! `websockets` (Debian's python3-websockets, installed by `make deps`) as an independent client.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::util::*;

/// Reads text frames until `want` bytes decoded; each frame is base64 on its own.
async fn read_base64(raw: &mut Raw, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let (first, data) = raw.read_frame().await;
        assert_eq!(first, 0x81, "expected a text frame, got {first:#x} {data:?}");
        got.extend(STANDARD.decode(&data).expect("each frame is valid base64"));
    }
    got
}

#[tokio::test]
async fn base64_clients_get_text_frames_both_ways_and_binary_still_wins() {
    let echo = echo_target().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);

    let (mut raw, head) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: base64\r\n").await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(header(&head, "sec-websocket-protocol"), Some("base64"));
    raw.send_frame(0x81, STANDARD.encode(b"hello").as_bytes(), true).await;
    assert_eq!(read_base64(&mut raw, 5).await, b"hello");

    // One message in three fragments, cut inside 4-character groups, with a ping between them;
    // websockify's old mode also decoded binary frames.
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let text = STANDARD.encode(&data);
    let (a, rest) = text.as_bytes().split_at(1001);
    let (b, c) = rest.split_at(50_002);
    raw.send_frame(0x01, a, true).await;
    raw.send_frame(0x89, b"still here", true).await;
    raw.send_frame(0x00, b, true).await;
    raw.send_frame(0x80, c, true).await;
    let (first, pong) = raw.read_frame().await;
    assert_eq!((first, &pong[..]), (0x8A, &b"still here"[..]));
    assert!(read_base64(&mut raw, data.len()).await == data);
    raw.send_frame(0x82, STANDARD.encode(b"binary frame").as_bytes(), true)
        .await;
    assert_eq!(read_base64(&mut raw, 12).await, b"binary frame");

    let (mut raw, head) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: base64, binary\r\n").await;
    assert_eq!(header(&head, "sec-websocket-protocol"), Some("binary"));
    raw.echo(b"binary wins").await;
}

#[tokio::test]
async fn invalid_base64_closes_1007_and_limits_still_apply() {
    let echo = echo_target().await;
    let proxy = Proxy::start(&["--max-message-size", "1000", "127.0.0.1:0", &echo.to_string()]);
    for bad in [&b"aGk"[..], b"aGk=\n", b"a GVsbG8=", b"aGk=aGk=", b"aGVsbG8_"] {
        let (mut raw, _) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: base64\r\n").await;
        raw.send_frame(0x81, bad, true).await;
        let (code, reason) = raw.read_close().await;
        assert_eq!(code, 1007, "{} gave {code} {reason}", String::from_utf8_lossy(bad));
    }
    // A message split before its padding is fine; its last fragment may not leave a group open.
    let (mut raw, _) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: base64\r\n").await;
    raw.send_frame(0x01, b"aG", true).await;
    raw.send_frame(0x80, b"k=", true).await;
    assert_eq!(read_base64(&mut raw, 2).await, b"hi");
    raw.send_frame(0x01, b"aGk=", true).await;
    raw.send_frame(0x80, b"", true).await;
    assert_eq!(read_base64(&mut raw, 2).await, b"hi");
    raw.send_frame(0x01, b"aG", true).await;
    raw.send_frame(0x80, b"", true).await;
    assert_eq!(raw.read_close().await.0, 1007);
    // The message limit counts the text the client sends.
    let (mut raw, _) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: base64\r\n").await;
    raw.send_frame(0x81, STANDARD.encode([7u8; 800]).as_bytes(), true).await;
    assert_eq!(raw.read_close().await.0, 1009);
}

/// `websockets` (Python) offers only `base64`, sends base64 text and reads it back, then sends
/// text that is not base64 and reports the close code.
const PYTHON_CLIENT: &str = r#"
import asyncio, base64, sys, websockets

async def main(uri):
    async with websockets.connect(uri, subprotocols=["base64"], max_size=None) as ws:
        print("subprotocol", ws.subprotocol, flush=True)
        data = bytes(range(256)) * 1024
        await ws.send(base64.b64encode(data).decode())
        got = b""
        while len(got) < len(data):
            message = await asyncio.wait_for(ws.recv(), 20)
            assert isinstance(message, str), type(message)
            got += base64.b64decode(message, validate=True)
        print("echoed", len(got), got == data, flush=True)
        await ws.send("this is not base64!")
        try:
            await asyncio.wait_for(ws.recv(), 20)
        except websockets.ConnectionClosed as closed:
            print("closed", closed.rcvd.code if closed.rcvd else None, flush=True)

asyncio.run(asyncio.wait_for(main(sys.argv[1]), 40))
"#;

#[tokio::test]
async fn pythons_websockets_speaks_base64_through_wsproxy() {
    assert!(
        Command::new("/usr/bin/python3")
            .args(["-c", "import websockets"])
            .status()
            .is_ok_and(|s| s.success()),
        "Python's websockets is missing: run `make deps` (Debian package python3-websockets)"
    );
    let echo = echo_target().await;
    let proxy = Proxy::start(&["127.0.0.1:0", &echo.to_string()]);
    let uri = format!("ws://{}/websockify", proxy.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/python3")
            .args(["-c", PYTHON_CLIENT, &uri])
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, "subprotocol base64\nechoed 262144 True\nclosed 1007\n");
}
