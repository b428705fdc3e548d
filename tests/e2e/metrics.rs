//! `--metrics`: scrape the real binary's /metrics (its own port, or the main one with `same-port`)
//! while real traffic flows and check that the numbers move; and the real `promtool check metrics`
//! (Debian package `prometheus`) finds no problem in a scrape.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

/// Starts `wsproxy ARGS` and returns it with the address of its `--metrics` listener.
fn start(args: &[&str]) -> (Proxy, SocketAddr) {
    let mut proxy = Proxy::start(args);
    let line = proxy.wait_line("metrics on http://", WAIT);
    let addr = line
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"));
    (proxy, addr)
}

/// GET `path` with `headers`; (status, head, body).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let (code, head, body) = tokio::time::timeout(WAIT, http_get(addr, "GET", path, headers))
        .await
        .expect("no answer to GET");
    (code, head, String::from_utf8(body).expect("UTF-8 body"))
}

/// A scrape of `/metrics` that must succeed.
async fn scrape(addr: SocketAddr, headers: &str) -> String {
    let (code, head, body) = get(addr, "/metrics", headers).await;
    assert_eq!(code, 200, "{head}{body}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body
}

/// The value of the sample `series` (name and labels as wsproxy writes them) in a scrape.
fn value(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    let values: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
    assert_eq!(values.len(), 1, "{series}: {values:?} in\n{text}");
    values[0].parse().unwrap()
}

/// Scrapes until every `(series, value)` holds (the counts of a connection land when it has
/// closed), bounded by `WAIT`; returns the last scrape.
async fn wait_for(addr: SocketAddr, headers: &str, want: &[(&str, f64)]) -> String {
    wait_until(addr, headers, &format!("{want:?}"), |text| {
        want.iter().all(|(series, v)| value(text, series) == *v)
    })
    .await
}

/// Scrapes until `holds` says yes, bounded by `WAIT`; returns the last scrape.
async fn wait_until(addr: SocketAddr, headers: &str, what: &str, holds: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(addr, headers).await;
        if holds(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {what} within {WAIT:?}; last scrape:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

const RELAYED: &str = r#"wsproxy_connections_total{outcome="relayed"}"#;
const TO_TARGET: &str = r#"wsproxy_bytes_total{direction="to_target"}"#;
const TO_CLIENT: &str = r#"wsproxy_bytes_total{direction="to_client"}"#;
const OPEN: &str = "wsproxy_connections_open";

fn refused(reason: &str) -> String {
    format!(r#"wsproxy_connections_total{{outcome="refused",reason="{reason}"}}"#)
}

fn outcome(outcome: &str) -> String {
    format!(r#"wsproxy_connections_total{{outcome="{outcome}"}}"#)
}

/// One echo of `payload` through a WebSocket session to `path`, then a clean close.
async fn echo_session(addr: SocketAddr, path: &str, payload: &[u8]) {
    let (mut ws, _) = ws_connect_to(addr, path, "binary").await;
    ws.send(Message::binary(payload.to_vec())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < payload.len() {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no echo") {
            Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, payload);
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
}

#[tokio::test]
async fn a_relayed_session_moves_connections_and_bytes() {
    let target = echo_target().await;
    let (proxy, metrics) = start(&["--metrics", "127.0.0.1:0", "127.0.0.1:0", &target.to_string()]);
    let text = scrape(metrics, "").await;
    assert_eq!(value(&text, RELAYED), 0.0);
    assert_eq!(value(&text, TO_TARGET), 0.0);
    assert!(text.contains("# HELP wsproxy_connections_total "), "{text}");

    echo_session(proxy.addr, "/websockify", &[7u8; 3000]).await;
    let text = wait_for(
        metrics,
        "",
        &[(RELAYED, 1.0), (TO_TARGET, 3000.0), (TO_CLIENT, 3000.0), (OPEN, 0.0)],
    )
    .await;
    assert_eq!(value(&text, "wsproxy_sessions_open"), 0.0);
    assert_eq!(value(&text, "wsproxy_session_duration_seconds_count"), 1.0);
    assert_eq!(value(&text, "wsproxy_handshake_duration_seconds_count"), 1.0);

    // A plain HTTP request (405 without --web), a connection that says nothing, and an upgrade
    // that breaks the WebSocket rules (neither `binary` nor `base64` among the protocols offered).
    let (code, _, _) = get(proxy.addr, "/", "").await;
    assert_eq!(code, 405);
    drop(Raw::connect(proxy.addr).await);
    let (_, head) = Raw::upgrade(proxy.addr, "Sec-WebSocket-Protocol: chat\r\n").await;
    assert_eq!(status(&head), 400, "{head}");
    wait_for(
        metrics,
        "",
        &[
            (&outcome("http"), 1.0),
            (&outcome("handshake_failed"), 2.0),
            (OPEN, 0.0),
        ],
    )
    .await;

    // The metrics port serves /metrics only, and only GET and HEAD.
    assert_eq!(get(metrics, "/", "").await.0, 404);
    let (code, head, _) = tokio::time::timeout(WAIT, http_get(metrics, "POST", "/metrics", ""))
        .await
        .unwrap();
    assert_eq!(code, 405);
    assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn refusals_count_by_reason_and_lookups_by_result() {
    let target = echo_target().await;
    let dir = TempDir::new("metrics-tokens");
    let tokens = dir.path("tokens");
    let dead = free_port();
    std::fs::write(&tokens, format!("desk: {target}\ndead: 127.0.0.1:{dead}\n")).unwrap();
    let (proxy, metrics) = start(&[
        "--metrics",
        "127.0.0.1:0",
        "--token-plugin",
        "TokenFile",
        "--token-source",
        tokens.to_str().unwrap(),
        "127.0.0.1:0",
    ]);

    let (_, head) = Raw::upgrade_to(proxy.addr, "/websockify", "").await;
    assert_eq!(status(&head), 400, "{head}");
    let (_, head) = Raw::upgrade_to(proxy.addr, "/websockify?token=nope", "").await;
    assert_eq!(status(&head), 404, "{head}");
    echo_session(proxy.addr, "/websockify?token=desk", b"hello").await;
    // The target a token names is down: 101, then close 1011.
    let (mut ws, _) = ws_connect_to(proxy.addr, "/websockify?token=dead", "binary").await;
    match tokio::time::timeout(WAIT, ws.next()).await.expect("no close") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1011),
        other => panic!("unexpected {other:?}"),
    }
    drop(ws);

    let text = wait_for(
        metrics,
        "",
        &[
            (&refused("no_token"), 1.0),
            (&refused("unknown_token"), 1.0),
            (RELAYED, 1.0),
            (&outcome("target_failed"), 1.0),
            (OPEN, 0.0),
        ],
    )
    .await;
    assert_eq!(value(&text, r#"wsproxy_token_lookups_total{result="found"}"#), 2.0);
    assert_eq!(value(&text, r#"wsproxy_token_lookups_total{result="unknown"}"#), 1.0);
    assert_eq!(
        value(&text, r#"wsproxy_token_lookups_total{result="unavailable"}"#),
        0.0
    );
    assert_eq!(value(&text, TO_TARGET), 5.0);
    assert_eq!(value(&text, &refused("unauthorized")), 0.0);
}

#[tokio::test]
async fn tls_failures_and_wss_sessions() {
    let target = echo_target().await;
    let dir = TempDir::new("metrics-tls");
    let (pem, _, _, ca) = make_cert(&dir);
    let (proxy, metrics) = start(&[
        "--cert",
        pem.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
        "127.0.0.1:0",
        &target.to_string(),
    ]);

    // A TLS record header, then garbage: the TLS handshake fails and the server hangs up.
    let mut raw = Raw::connect(proxy.addr).await;
    raw.stream
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.stream.read_to_end(&mut sink)).await;

    let mut ws = wss_connect(proxy.addr, &ca).await;
    ws.send(Message::binary(vec![1u8; 100])).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.expect("no echo") {
        Some(Ok(Message::Binary(data))) => assert_eq!(data.len(), 100),
        other => panic!("unexpected {other:?}"),
    }
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}

    let text = wait_for(
        metrics,
        "",
        &[(&outcome("tls_failed"), 1.0), (RELAYED, 1.0), (OPEN, 0.0)],
    )
    .await;
    assert_eq!(value(&text, TO_CLIENT), 100.0);
    assert_eq!(value(&text, "wsproxy_handshake_duration_seconds_count"), 1.0);
}

/// A services file with one API token (`ops-token`, admin) and one service, `echo`.
fn services(dir: &TempDir) -> String {
    std::fs::write(dir.path("echo.py"), crate::sessions::ECHO).unwrap();
    let text = format!(
        "[sessions]\nreserve_timeout = 60\nlinger = 0\n\n[[api.token]]\ntoken = \"ops-token\"\nscopes = [\"admin\"]\n\
         user = \"ops\"\n\n[[service]]\nname = \"echo\"\ncount = 1\n\
         command = [\"python3\", \"{}\", \"unix\", \"{{runtime_dir}}/echo.sock\"]\ntarget = \"unix:{{runtime_dir}}/echo.sock\"\n\
         page = \"serial\"\n",
        dir.path("echo.py").display()
    );
    let file = dir.path("services.toml");
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_owned()
}

/// `POST /api/v1/sessions` for `service`: (status, body).
async fn reserve(addr: SocketAddr, service: &str) -> (u16, serde_json::Value) {
    let body = format!(r#"{{"service": "{service}"}}"#);
    let (code, _, json) = crate::sessions::api(addr, "POST", "/api/v1/sessions", Some("ops-token"), Some(&body)).await;
    (code, json)
}

const BEARER: &str = "Authorization: Bearer ops-token\r\n";

fn ondemand(state: &str) -> String {
    format!(r#"wsproxy_ondemand_sessions{{service="echo",state="{state}"}}"#)
}

#[tokio::test]
async fn same_port_metrics_take_the_api_token_and_count_sessions() {
    let dir = TempDir::new("metrics-sessions");
    let file = services(&dir);
    let mut proxy = Proxy::start(&["--sessions", &file, "--metrics", "same-port", "127.0.0.1:0"]);
    proxy.wait_line("metrics at /metrics on the main port", WAIT);
    let addr = proxy.addr;

    for headers in ["", "Authorization: Bearer wrong\r\n"] {
        let (code, head, body) = get(addr, "/metrics", headers).await;
        assert_eq!(code, 401, "{head}{body}");
        assert!(
            header(&head, "www-authenticate").is_some_and(|h| h.starts_with("Bearer")),
            "{head}"
        );
        assert!(!body.contains("wsproxy_"), "{body}");
    }
    let text = scrape(addr, BEARER).await;
    assert_eq!(value(&text, &ondemand("reserved")), 0.0);
    assert_eq!(
        value(&text, r#"wsproxy_ondemand_rejections_total{reason="unknown_service"}"#),
        0.0
    );

    let (code, _) = reserve(addr, "nope").await;
    assert_eq!(code, 404);
    let (code, session) = reserve(addr, "echo").await;
    assert_eq!(code, 201, "{session}");
    let token = session["token"].as_str().unwrap().to_owned();
    let text = scrape(addr, BEARER).await;
    assert_eq!(value(&text, &ondemand("reserved")), 1.0);
    assert_eq!(
        value(&text, r#"wsproxy_ondemand_rejections_total{reason="unknown_service"}"#),
        1.0
    );

    // The first connection launches the command; with linger 0 its end stops the session.
    let (mut ws, _) = ws_connect_to(addr, &format!("/websockify?token={token}"), "binary").await;
    ws.send(Message::binary(b"ping".to_vec())).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.expect("no echo") {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], b"ping"),
        other => panic!("unexpected {other:?}"),
    }
    let text = scrape(addr, BEARER).await;
    assert_eq!(value(&text, &ondemand("reserved")), 0.0);
    assert_eq!(value(&text, &ondemand("running")), 1.0);
    assert_eq!(
        value(
            &text,
            r#"wsproxy_ondemand_launch_duration_seconds_count{service="echo"}"#
        ),
        1.0
    );
    assert_eq!(value(&text, r#"wsproxy_token_lookups_total{result="found"}"#), 1.0);
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}

    let stopped = r#"wsproxy_ondemand_sessions_ended_total{service="echo",state="stopped"}"#;
    let text = wait_for(
        addr,
        BEARER,
        &[
            (stopped, 1.0),
            (&ondemand("running"), 0.0),
            (&ondemand("lingering"), 0.0),
            (RELAYED, 1.0),
        ],
    )
    .await;
    assert_eq!(value(&text, TO_TARGET), 4.0);
    // The scrapes themselves are plain HTTP connections on the main port.
    assert!(value(&text, &outcome("http")) >= 4.0, "{text}");
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (std::process::ExitStatus, String) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool not found: install the Debian package `prometheus` (`make deps` does: \
             apt-get install prometheus)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_owned();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, said)
}

#[tokio::test]
async fn promtool_finds_no_problem() {
    // A scrape with every family this wsproxy has, after some traffic moved the histograms.
    let dir = TempDir::new("metrics-promtool");
    let file = services(&dir);
    let (proxy, metrics) = start(&["--sessions", &file, "--metrics", "127.0.0.1:0", "127.0.0.1:0"]);
    let (code, session) = reserve(proxy.addr, "echo").await;
    assert_eq!(code, 201, "{session}");
    let token = session["token"].as_str().unwrap();
    echo_session(proxy.addr, &format!("/websockify?token={token}"), b"data").await;
    let (_, head) = Raw::upgrade_to(proxy.addr, "/websockify?token=nope", "").await;
    assert_eq!(status(&head), 404);
    let text = wait_for(metrics, "", &[(RELAYED, 1.0), (&refused("unknown_token"), 1.0)]).await;
    assert!(text.contains("wsproxy_ondemand_sessions{"), "{text}");

    // And a plain one.
    let target = echo_target().await;
    let (plain, plain_metrics) = start(&["--metrics", "127.0.0.1:0", "127.0.0.1:0", &target.to_string()]);
    echo_session(plain.addr, "/", b"x").await;
    let plain_text = wait_for(plain_metrics, "", &[(RELAYED, 1.0)]).await;

    for text in [text, plain_text] {
        let (status, said) = promtool(&text);
        assert!(status.success(), "promtool check metrics: {status}: {said}\n{text}");
        assert_eq!(said.trim(), "", "promtool check metrics said something about\n{text}");
    }
    // promtool does find problems (so a pass above means something).
    let (status, said) = promtool("# TYPE bad_count counter\nbad_count 1\n");
    assert!(!status.success(), "{said}");
}

#[tokio::test]
async fn wrapped_command_starts_and_exits() {
    // `respawn` restarts a command that exits at once (3 starts within 10 s, then a backoff).
    let listen = format!("127.0.0.1:{}", free_port());
    let (_proxy, metrics) = start(&[
        "--metrics",
        "127.0.0.1:0",
        "--wrap-mode",
        "respawn",
        &listen,
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    let starts = "wsproxy_wrapped_starts_total";
    let failures = r#"wsproxy_wrapped_exits_total{status="failure"}"#;
    let text = wait_until(metrics, "", "2 starts and 1 failure", |text| {
        value(text, starts) >= 2.0 && value(text, failures) >= 1.0
    })
    .await;
    assert_eq!(value(&text, r#"wsproxy_wrapped_exits_total{status="success"}"#), 0.0);
    assert_eq!(value(&text, r#"wsproxy_wrapped_exits_total{status="no_bind"}"#), 0.0);
    let (status, said) = promtool(&text);
    assert!(status.success(), "promtool check metrics: {status}: {said}\n{text}");
}

#[tokio::test]
async fn metrics_options_are_checked_at_start() {
    for (args, needle) in [
        (&["--metrics", "9100", "127.0.0.1:0", "127.0.0.1:1"][..], "HOST:PORT"),
        (&["--metrics", "nohost:x", "127.0.0.1:0", "127.0.0.1:1"], "--metrics"),
    ] {
        let mut proxy = Proxy::spawn(args);
        let status = proxy.wait_exit(WAIT);
        assert_eq!(status.code(), Some(64), "{args:?}: {:?}", proxy.lines());
        assert!(
            proxy.lines().iter().any(|l| l.contains(needle)),
            "{args:?}: {:?}",
            proxy.lines()
        );
    }
    // A port in use is a configuration mistake too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut proxy = Proxy::spawn(&["--metrics", &addr, "127.0.0.1:0", "127.0.0.1:1"]);
    assert_eq!(proxy.wait_exit(WAIT).code(), Some(64), "{:?}", proxy.lines());
    assert!(
        proxy.lines().iter().any(|l| l.starts_with("wsproxy: --metrics:")),
        "{:?}",
        proxy.lines()
    );
}
