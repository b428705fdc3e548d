//! `--record-format asciicast` through real targets, and `--serve-recordings` for web/replay.html.

use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::real_servers::{Telnet, require, require_telnetd, telnet_until, telnetd_once};
use crate::util::*;
use crate::wrap::logged_group;

/// The one recording file (not a link) in `dir` whose name starts with `prefix`.
fn recording_in(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix) && e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    assert_eq!(found.len(), 1, "recordings: {found:?}");
    found[0].clone()
}

/// An asciicast v2 file: its header, then the events as (time, kind, text). Fails on any line that
/// is not the JSON asciinema expects.
fn read_cast(path: &Path) -> (serde_json::Value, Vec<(f64, String, String)>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().expect("empty recording")).unwrap();
    let events = lines
        .map(|line| {
            let event: (f64, String, String) =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not an asciicast event ({e}): {line}"));
            event
        })
        .collect();
    (header, events)
}

/// The text of the events of one kind, joined.
fn joined(events: &[(f64, String, String)], kind: &str) -> String {
    events
        .iter()
        .filter(|(_, k, _)| k == kind)
        .map(|(_, _, text)| text.as_str())
        .collect()
}

/// Ends a session from the client side and waits for wsproxy to log it closed (the recording is
/// complete then).
async fn close_and_wait(ws: &mut Ws<TcpStream>, proxy: &mut Proxy) {
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    proxy.wait_line("closed:", WAIT);
}

/// A login at the real telnetd, recorded as asciicast: the header asciinema needs, one event per
/// line with times that never go back, and as output exactly the text the telnet client saw (the
/// prompt, the user name telnetd echoed, the password prompt), without telnet's commands.
#[tokio::test]
async fn asciicast_records_a_real_telnetd_login() {
    require_telnetd();
    let dir = TempDir::new("cast-telnetd");
    let base = dir.path("console");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (port, once) = (port.to_string(), telnetd_once());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut proxy = Proxy::start(&[
        "--record",
        base.to_str().unwrap(),
        "--record-format",
        "asciicast",
        "--wrap-mode=respawn",
        &listen,
        "--",
        &once,
        &port,
    ]);
    let _group = logged_group(&mut proxy);
    proxy.wait_line("bound port", WAIT);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    let mut telnet = Telnet::default();
    telnet_until(&mut ws, &mut telnet, "login:").await;
    ws.send(Message::binary(b"wsproxy-nobody\r\n".to_vec())).await.unwrap();
    telnet_until(&mut ws, &mut telnet, "Password").await;
    close_and_wait(&mut ws, &mut proxy).await;

    let path = recording_in(&dir.0, "console.");
    assert!(path.to_string_lossy().ends_with(".cast"), "{path:?}");
    let (header, events) = read_cast(&path);
    assert_eq!(header["version"], 2, "{header}");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    let timestamp = header["timestamp"].as_u64().unwrap();
    assert!(timestamp >= before && timestamp <= before + 60, "{header}");
    assert!(!events.is_empty());
    assert!(
        events.windows(2).all(|w| w[0].0 <= w[1].0) && events[0].0 >= 0.0,
        "times go back: {events:?}"
    );
    assert!(
        events.iter().all(|(_, kind, _)| kind == "o"),
        "only output without -with-input: {events:?}"
    );
    let shown = joined(&events, "o");
    assert!(
        shown.starts_with(&telnet.text()),
        "the recording differs from what the client saw:\n{shown:?}\n{:?}",
        telnet.text()
    );
    // The name typed at the prompt is echoed by the pty only when it arrives after login set the
    // terminal up (not always on a loaded machine); the password prompt shows the login went on.
    assert!(shown.contains("login:") && shown.contains("Password:"), "{shown:?}");
    assert!(
        !shown.contains('\u{fffd}') && !shown.contains('\u{ff}'),
        "telnet commands leaked: {shown:?}"
    );
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(0), "{:#?}", proxy.lines());
}

/// Through an echo server, in three frames that cut `é` and `✓` in two: the characters arrive whole
/// in the events, control characters and quotes are escaped JSON, a byte that is never UTF-8 is
/// U+FFFD, and with `asciicast-with-input` the client's side is there too.
#[tokio::test]
async fn asciicast_carries_split_characters_and_records_input() {
    let dir = TempDir::new("cast-utf8");
    let base = dir.path("term");
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&[
        "--record",
        base.to_str().unwrap(),
        "--record-format",
        "asciicast-with-input",
        "127.0.0.1:0",
        &echo.to_string(),
    ]);
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    let parts: [&[u8]; 3] = [
        b"caf\xc3",
        b"\xa9 \xe2\x9c",
        b"\x93 \x1b[1mbold\x1b[0m \"q\" \\ \x00 \x80 end\r\n",
    ];
    for part in parts {
        ws.send(Message::binary(part.to_vec())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < part.len() {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => got.extend_from_slice(&data),
                other => panic!("no echo: {other:?}"),
            }
        }
        assert_eq!(got, part);
    }
    close_and_wait(&mut ws, &mut proxy).await;

    let (header, events) = read_cast(&recording_in(&dir.0, "term."));
    assert_eq!(header["version"], 2);
    let want = "café ✓ \x1b[1mbold\x1b[0m \"q\" \\ \0 \u{fffd} end\r\n";
    assert_eq!(joined(&events, "o"), want);
    assert_eq!(joined(&events, "i"), want);
    let outputs: Vec<&str> = events
        .iter()
        .filter(|(_, k, _)| k == "o")
        .map(|(_, _, t)| t.as_str())
        .collect();
    assert_eq!(outputs[..2], ["caf", "é "], "{outputs:?}");
    let file = recording_in(&dir.0, "term.");
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(raw.contains(r#"\u001b[1mbold"#) && raw.contains(r#"\"q\""#), "{raw}");

    // asciinema itself reads it: `asciinema cat` prints the output events (it wants a terminal,
    // which util-linux's script provides).
    require("asciinema", "asciinema");
    require("script", "bsdutils");
    let cat = std::process::Command::new("timeout")
        .args(["20", "script", "-qec"])
        .arg(format!("asciinema cat {}", file.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(cat.status.success(), "asciinema cat: {cat:?}");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), want);
}

/// `--serve-recordings`: `/recordings/` lists the recordings as JSON and serves each; other names,
/// escapes and links are 404s; without the option the path is the pages' as before; `--web-auth`
/// guards it like the pages; without --web it is a usage error.
#[tokio::test]
async fn recordings_are_listed_and_served_only_by_name() {
    let dir = TempDir::new("serve-recordings");
    let web = dir.path("web");
    std::fs::create_dir(&web).unwrap();
    std::fs::write(web.join("replay.html"), "<title>replay</title>").unwrap();
    let rec = dir.path("rec");
    std::fs::create_dir(&rec).unwrap();
    std::fs::write(rec.join("secret.txt"), "not a recording").unwrap();
    std::os::unix::fs::symlink(rec.join("secret.txt"), rec.join("s.99.cast")).unwrap();
    std::fs::write(rec.join("other.1"), "another base").unwrap();
    let base = rec.join("s");
    let echo = echo_target().await;
    let args = [
        "--web",
        web.to_str().unwrap(),
        "--record",
        base.to_str().unwrap(),
        "--record-format",
        "asciicast",
        "--serve-recordings",
        "127.0.0.1:0",
    ];
    let mut proxy = Proxy::start(&[&args[..], &[&echo.to_string()]].concat());
    let (mut ws, _) = ws_connect(proxy.addr, "binary").await;
    ws.send(Message::binary(b"listed\r\n".to_vec())).await.unwrap();
    let _ = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    close_and_wait(&mut ws, &mut proxy).await;
    let file = recording_in(&rec, "s.");
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    let content = std::fs::read(&file).unwrap();

    let (code, head, body) = http_get(proxy.addr, "GET", "/recordings/", "").await;
    assert_eq!(code, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let list = list["recordings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only the real recording: {list:?}");
    assert_eq!(list[0]["name"], name.as_str());
    assert_eq!(list[0]["format"], "asciicast");
    assert_eq!(list[0]["size"].as_u64(), Some(content.len() as u64));

    let (code, _, body) = http_get(proxy.addr, "GET", &format!("/recordings/{name}"), "").await;
    assert_eq!((code, &body), (200, &content));
    let escaped = name.replace('.', "%2E");
    let (code, _, body) = http_get(proxy.addr, "GET", &format!("/recordings/{escaped}"), "").await;
    assert_eq!((code, body), (200, content), "{escaped}");
    for path in [
        "/recordings/secret.txt",
        "/recordings/s.99.cast",
        "/recordings/other.1",
        "/recordings/../rec/secret.txt",
        "/recordings/%2e%2e/rec/secret.txt",
        "/recordings/s.1%2f..%2fsecret.txt",
        "/recordings/s.1/x",
    ] {
        let (code, head, _) = http_get(proxy.addr, "GET", path, "").await;
        assert_eq!(code, 404, "{path}: {head}");
    }
    let (code, _, body) = http_get(proxy.addr, "GET", "/replay.html", "").await;
    assert_eq!((code, body), (200, b"<title>replay</title>".to_vec()));
    drop(proxy);

    // Without --serve-recordings the recordings are not reachable.
    let plain: Vec<&str> = args.iter().copied().filter(|a| *a != "--serve-recordings").collect();
    let proxy = Proxy::start(&[&plain[..], &[&echo.to_string()]].concat());
    let (code, _, _) = http_get(proxy.addr, "GET", "/recordings/", "").await;
    assert_eq!(code, 404);
    drop(proxy);

    // --web-auth puts them behind the auth plugin, as the pages.
    let guarded = [
        &args[..],
        &["--auth-plugin", "BasicHTTPAuth", "--auth-source", "u:p", "--web-auth"],
    ]
    .concat();
    let proxy = Proxy::start(&[&guarded[..], &[&echo.to_string()]].concat());
    let (code, _, _) = http_get(proxy.addr, "GET", "/recordings/", "").await;
    assert_eq!(code, 401);
    let (code, _, _) = http_get(proxy.addr, "GET", "/recordings/", "Authorization: Basic dTpw\r\n").await;
    assert_eq!(code, 200);
    drop(proxy);

    let mut proxy = Proxy::spawn(&[
        "--record",
        base.to_str().unwrap(),
        "--serve-recordings",
        "127.0.0.1:0",
        "h:1",
    ]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(2));
    assert!(proxy.lines().join("\n").contains("--web"), "{:?}", proxy.lines());
}
