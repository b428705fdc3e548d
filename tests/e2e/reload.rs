//! Reload on the real binary: SIGHUP swaps the certificate, a token file, the services file and the
//! log file while open sessions go on; a bad file keeps what was in use with one log line; a
//! certificate renewed on disk is used with no signal.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::net::TcpStream;

use crate::sessions::{api, open, prepare, reserve};
use crate::util::*;

/// What the server presents to a client trusting exactly `ca_der`: its certificate, or why the
/// handshake failed.
async fn served_cert(addr: SocketAddr, ca_der: &[u8]) -> Result<Vec<u8>, String> {
    let connector = tokio_rustls::TlsConnector::from(tls_client(ca_der));
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, stream))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let chain = tls.get_ref().1.peer_certificates().ok_or("no certificate")?;
    Ok(chain[0].to_vec())
}

/// Waits (at most `limit`) until the server presents `der`.
async fn until_served(addr: SocketAddr, der: &[u8], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let served = served_cert(addr, der).await;
        if served.as_deref() == Ok(der) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served within {limit:?}: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lines logged after the first `from`, containing `needle`.
fn lines_since(proxy: &Proxy, from: usize, needle: &str) -> Vec<String> {
    proxy
        .lines()
        .into_iter()
        .skip(from)
        .filter(|l| l.contains(needle))
        .collect()
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
    let dir = TempDir::new("reload-cert");
    let (_, cert, key, first) = make_cert(&dir);
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "127.0.0.1:0",
        &echo.to_string(),
    ]);
    let mut open_session = wss_connect(proxy.addr, &first).await;
    echo_once(&mut open_session, b"before the reload").await;

    let renewed = TempDir::new("reload-cert-renewed");
    let (_, new_cert, new_key, second) = make_cert(&renewed);
    copy(&new_key, &key);
    copy(&new_cert, &cert);
    proxy.signal(Signal::SIGHUP);
    proxy.wait_line("SIGHUP: reloaded", WAIT);
    assert_eq!(served_cert(proxy.addr, &second).await.unwrap(), second);
    assert!(
        served_cert(proxy.addr, &first).await.is_err(),
        "the old certificate is still served"
    );
    let mut new_session = wss_connect(proxy.addr, &second).await;
    echo_once(&mut new_session, b"new session").await;
    echo_once(&mut open_session, b"the open session goes on").await;

    // A broken certificate file: the reload fails, the certificate in use stays.
    let mark = proxy.lines().len();
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    proxy.signal(Signal::SIGHUP);
    let failed = proxy.wait_line("reload failed", WAIT);
    assert!(failed.contains(cert.to_str().unwrap()), "{failed}");
    assert_eq!(served_cert(proxy.addr, &second).await.unwrap(), second);
    echo_once(&mut open_session, b"still going").await;
    // The certificate watch, which checks every 2 s, does not report the same files again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let complaints: Vec<String> = lines_since(&proxy, mark, "WARN");
    assert_eq!(complaints.len(), 1, "one line for a failed reload: {complaints:#?}");
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_used_without_a_signal() {
    let dir = TempDir::new("reload-watch");
    let (_, cert, key, first) = make_cert(&dir);
    let echo = echo_target().await;
    let proxy = Proxy::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "127.0.0.1:0",
        &echo.to_string(),
    ]);
    let mut open_session = wss_connect(proxy.addr, &first).await;

    // As an ACME client does: new files written beside the old ones, then renamed over them.
    let renewed = TempDir::new("reload-watch-renamed");
    let (_, new_cert, new_key, second) = make_cert(&renewed);
    copy(&new_key, &dir.path("key.pem.new"));
    copy(&new_cert, &dir.path("cert.pem.new"));
    std::fs::rename(dir.path("key.pem.new"), &key).unwrap();
    std::fs::rename(dir.path("cert.pem.new"), &cert).unwrap();
    until_served(proxy.addr, &second, Duration::from_secs(10)).await;

    // Rewritten in place (the same inode).
    let rewritten = TempDir::new("reload-watch-rewritten");
    let (_, third_cert, third_key, third) = make_cert(&rewritten);
    std::fs::write(&key, std::fs::read(&third_key).unwrap()).unwrap();
    std::fs::write(&cert, std::fs::read(&third_cert).unwrap()).unwrap();
    until_served(proxy.addr, &third, Duration::from_secs(10)).await;

    echo_once(&mut open_session, b"the first session is untouched").await;
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.contains("certificate files changed") && l.contains("loaded again")),
        "{:#?}",
        proxy.lines()
    );
}

#[tokio::test]
async fn sighup_reopens_the_log_file_for_logrotate() {
    let dir = TempDir::new("reload-log");
    let log = dir.path("wsproxy.log");
    let echo = echo_target().await;
    let mut proxy = Proxy::start(&["--log-file", log.to_str().unwrap(), "127.0.0.1:0", &echo.to_string()]);
    let (mut before, _) = ws_connect(proxy.addr, "").await;
    echo_once(&mut before, b"logged in the first file").await;

    // logrotate: move the file away, then `postrotate kill -HUP`.
    let rotated = dir.path("wsproxy.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal(Signal::SIGHUP);
    proxy.wait_line("SIGHUP: reloaded the log file", WAIT);
    let (mut after, _) = ws_connect(proxy.addr, "").await;
    echo_once(&mut after, b"logged in the new file").await;
    echo_once(&mut before, b"the open session goes on").await;

    let deadline = Instant::now() + WAIT;
    let fresh = loop {
        let fresh = std::fs::read_to_string(&log).unwrap_or_default();
        if fresh.contains("open: relaying") {
            break fresh;
        }
        assert!(
            Instant::now() < deadline,
            "no session line in the new log file: {fresh:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(fresh.contains("SIGHUP: reloaded"), "{fresh}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.matches("open: relaying").count(), 1, "{old}");
}

#[tokio::test]
async fn sighup_reads_a_read_only_token_file_again() {
    let dir = TempDir::new("reload-tokens");
    let echo = echo_target().await;
    let tokens = dir.path("tokens");
    std::fs::write(&tokens, format!("first: {echo}\n")).unwrap();
    let mut proxy = Proxy::start(&[
        "--token-plugin",
        "ReadOnlyTokenFile",
        "--token-source",
        tokens.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let (mut first, _) = ws_connect_to(proxy.addr, "/?token=first", "").await;
    echo_once(&mut first, b"first").await;
    std::fs::write(&tokens, format!("second: {echo}\n")).unwrap();
    // Read-only: read at start and on SIGHUP only.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(&Raw::upgrade_to(proxy.addr, "/?token=second", "").await.1), 404);

    proxy.signal(Signal::SIGHUP);
    proxy.wait_line("SIGHUP: reloaded the token source", WAIT);
    let (mut second, _) = ws_connect_to(proxy.addr, "/?token=second", "").await;
    echo_once(&mut second, b"second").await;
    assert_eq!(status(&Raw::upgrade_to(proxy.addr, "/?token=first", "").await.1), 404);
    echo_once(&mut first, b"the session of a removed token goes on").await;
}

const FIRST_SERVICE: &str = r#"
[[service]]
name = "first"
count = 1
command = ["python3", "ECHO", "unix", "{runtime_dir}/echo.sock"]
target = "unix:{runtime_dir}/echo.sock"
"#;

#[tokio::test]
async fn sighup_reloads_the_services_file_and_running_sessions_go_on() {
    let dir = prepare("reserve_timeout = 60", FIRST_SERVICE);
    let services = dir.path("services.toml");
    let mut proxy = Proxy::start(&["--sessions", services.to_str().unwrap(), "127.0.0.1:0"]);
    let addr = proxy.addr;
    let running = reserve(addr, "alice-token", "first").await;
    let mut window = open(addr, running["token"].as_str().unwrap()).await;
    window.echo(b"first service").await;

    let next = prepare(
        "reserve_timeout = 60",
        &FIRST_SERVICE.replace("\"first\"", "\"second\""),
    );
    copy(&next.path("services.toml"), &services);
    proxy.signal(Signal::SIGHUP);
    proxy.wait_line("SIGHUP: reloaded the services file", WAIT);
    let body = r#"{"service": "first"}"#;
    let (code, _, json) = api(addr, "POST", "/api/v1/sessions", Some("alice-token"), Some(body)).await;
    assert_eq!(code, 404, "{json}");
    let second = reserve(addr, "alice-token", "second").await;
    let mut other = open(addr, second["token"].as_str().unwrap()).await;
    other.echo(b"second service").await;
    window.echo(b"the running session goes on").await;

    // A syntax error: one line, and the services in use stay.
    std::fs::write(&services, "[[service]\nname = ").unwrap();
    proxy.signal(Signal::SIGHUP);
    let failed = proxy.wait_line("reload failed", WAIT);
    assert!(failed.contains("services.toml"), "{failed}");
    let (_, _, listed) = api(addr, "GET", "/api/v1/services", Some("alice-token"), None).await;
    assert_eq!(listed[0]["name"], "second", "{listed}");
    window.echo(b"still going").await;
}
