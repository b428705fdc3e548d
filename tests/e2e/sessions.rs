//! On-demand sessions on the real binary with real commands: the REST API, launch on first
//! connect (shared by every window), stop when the last one leaves, expiry, failures, DELETE,
//! shutdown, and no process left behind even when wsproxy is SIGKILLed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

/// An echo server in Python: `tcp PORT` binds 0.0.0.0:PORT (librebind.so moves it), `unix PATH`,
/// `announce` binds a kernel-chosen loopback port and prints it the way a job script would
/// (`announce-on ADDR`: on ADDR);
/// `exit N` exits at once with N; `sleep` never listens; `later S` serves, then exits 3 after S s.
pub(crate) const ECHO: &str = r#"
import os, socket, sys, threading, time
mode = sys.argv[1]
if mode == "exit":
    sys.exit(int(sys.argv[2]))
if mode == "sleep":
    time.sleep(600)
if mode == "unix":
    s = socket.socket(socket.AF_UNIX)
    s.bind(sys.argv[2])
elif mode == "announce":
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
elif mode == "announce-on":
    s = socket.socket()
    s.bind((sys.argv[2], 0))
else:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(16)
if mode.startswith("announce"):
    print("PA_REMOTE_CONNECTION;job42;vnc;%s:%d" % s.getsockname(), flush=True)
if mode == "later":
    threading.Thread(target=lambda: (time.sleep(float(sys.argv[3])), os._exit(3)), daemon=True).start()
print("echo ready (%s) secret=%s options=%s" % (mode, bool(os.environ.get("WSPROXY_SECRET")), os.environ.get("WSPROXY_OPTIONS")), flush=True)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

struct Fixture {
    dir: TempDir,
    proxy: Proxy,
}

/// A services file with `[sessions]` timing `timing`, two API users (root: admin; alice: staff),
/// and `services`, served by a fresh wsproxy.
fn start(timing: &str, services: &str) -> Fixture {
    let dir = prepare(timing, services);
    let audit = dir.path("audit.log");
    let proxy = Proxy::start(&[
        "--sessions",
        dir.path("services.toml").to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    Fixture { dir, proxy }
}

/// Writes echo.py and services.toml (see `start`) into a new directory.
pub(crate) fn prepare(timing: &str, services: &str) -> TempDir {
    let dir = TempDir::new("sessions");
    std::fs::write(dir.path("echo.py"), ECHO).unwrap();
    let echo = dir.path("echo.py");
    let text = format!(
        "[sessions]\n{timing}\n\n[[api.token]]\ntoken = \"root-token\"\nscopes = [\"admin\"]\nuser = \"root\"\n\n\
         [[api.token]]\ntoken = \"alice-token\"\nscopes = [\"sessions\"]\nuser = \"alice\"\ngroups = [\"staff\"]\n\n\
         [[api.token]]\ntoken = \"bob-token\"\nscopes = [\"sessions\"]\nuser = \"bob\"\n\n{}",
        services.replace("ECHO", echo.to_str().unwrap())
    );
    std::fs::write(dir.path("services.toml"), text).unwrap();
    dir
}

/// One API call: (status, response head, JSON body or Null).
pub(crate) async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, serde_json::Value) {
    let mut raw = Raw::connect(addr).await;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw.stream.write_all(request.as_bytes()).await.unwrap();
    let head = raw.read_head().await;
    let code = status(&head);
    let json = if header(&head, "content-length").is_some_and(|l| l != "0") {
        serde_json::from_str(&raw.read_body(&head).await).unwrap()
    } else {
        serde_json::Value::Null
    };
    (code, head, json)
}

pub(crate) async fn reserve(addr: SocketAddr, token: &str, service: &str) -> serde_json::Value {
    let (code, head, json) = api(
        addr,
        "POST",
        "/api/v1/sessions",
        Some(token),
        Some(&format!(r#"{{"service": "{service}"}}"#)),
    )
    .await;
    assert_eq!(code, 201, "{head}\n{json}");
    json
}

/// DELETE /api/v1/sessions/ID as the holder of `token`; the status.
async fn delete(addr: SocketAddr, id: &str, token: &str) -> u16 {
    api(addr, "DELETE", &format!("/api/v1/sessions/{id}"), Some(token), None)
        .await
        .0
}

async fn session(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (code, _, json) = api(addr, "GET", &format!("/api/v1/sessions/{id}"), Some("root-token"), None).await;
    assert_eq!(code, 200, "{json}");
    json
}

/// Waits (bounded) until the session's state is `state`.
async fn until_state(addr: SocketAddr, id: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let json = session(addr, id).await;
        if json["state"] == state {
            return json;
        }
        assert!(Instant::now() < deadline, "session {id} never became {state}: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn open(addr: SocketAddr, token: &str) -> Raw {
    let (raw, head) = Raw::upgrade_to(addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "{head}");
    raw
}

fn started_count(proxy: &Proxy) -> usize {
    proxy.lines().iter().filter(|l| l.contains(": started [")).count()
}

/// Processes carrying a session mark of this wsproxy.
pub(crate) fn session_processes(wsproxy: u32) -> usize {
    let needle = format!("WSPROXY_SESSION={wsproxy}:");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var.starts_with(needle.as_bytes())))
        })
        .count()
}

async fn until_no_session_processes(wsproxy: u32) {
    let deadline = Instant::now() + WAIT;
    while session_processes(wsproxy) > 0 {
        assert!(Instant::now() < deadline, "session processes of {wsproxy} outlived it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ECHO_SERVICE: &str = r#"
[[service]]
name = "echo"
count = 2
per_user = 1
command = ["python3", "ECHO", "tcp", "{port}"]
port = "47100+{index}"
target = "rebind"
page = "serial"
secret = "vnc-password"

[[service]]
name = "staff-only"
count = 1
groups = ["staff"]
command = ["python3", "ECHO", "unix", "{runtime_dir}/echo.sock"]
target = "unix:{runtime_dir}/echo.sock"
page = "telnet"
[service.options.geometry]
default = "800x600"
pattern = '^\d{3,4}x\d{3,4}$'
"#;

#[tokio::test]
async fn the_api_reserves_lists_and_refuses_with_json_errors() {
    let f = start("reserve_timeout = 60", ECHO_SERVICE);
    let addr = f.proxy.addr;
    let (code, head, json) = api(addr, "GET", "/api/v1/services", None, None).await;
    assert_eq!(code, 401);
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer realm=\"wsproxy\""));
    assert_eq!(json["error"]["code"], "unauthorized");
    assert_eq!(api(addr, "GET", "/api/v1/services", Some("wrong"), None).await.0, 401);
    // Bob is not staff: he sees one service.
    let (_, _, services) = api(addr, "GET", "/api/v1/services", Some("bob-token"), None).await;
    assert_eq!(services.as_array().unwrap().len(), 1, "{services}");
    let (_, _, services) = api(addr, "GET", "/api/v1/services", Some("alice-token"), None).await;
    assert_eq!(
        services[0],
        serde_json::json!({"name": "echo", "count": 2, "free": 2, "running": 0, "reserved": 0})
    );

    let (code, head, mine) = api(
        addr,
        "POST",
        "/api/v1/sessions",
        Some("alice-token"),
        Some(r#"{"service": "echo"}"#),
    )
    .await;
    assert_eq!(code, 201, "{mine}");
    let id = mine["id"].as_str().unwrap();
    assert_eq!(
        header(&head, "location"),
        Some(format!("/api/v1/sessions/{id}").as_str())
    );
    assert_eq!(mine["state"], "reserved");
    assert_eq!(
        (mine["index"].as_u64(), mine["user"].as_str()),
        (Some(0), Some("alice"))
    );
    let token = mine["token"].as_str().unwrap();
    let secret = mine["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 8);
    assert_eq!(
        mine["urls"]["websocket"],
        format!("ws://{addr}/websockify?token={token}")
    );
    assert_eq!(
        mine["urls"]["page"],
        format!("http://{addr}/serial.html?autoconnect=1&path=websockify%3Ftoken%3D{token}#password={secret}")
    );

    let refuse =
        |token: &'static str, body: &'static str| api(addr, "POST", "/api/v1/sessions", Some(token), Some(body));
    let (code, _, json) = refuse("alice-token", r#"{"service": "echo"}"#).await;
    assert_eq!((code, json["error"]["code"].as_str()), (429, Some("per_user_limit")));
    let (code, _, json) = refuse("bob-token", r#"{"service": "staff-only"}"#).await;
    assert_eq!((code, json["error"]["code"].as_str()), (403, Some("forbidden")));
    let (code, _, json) = refuse("bob-token", r#"{"service": "nope"}"#).await;
    assert_eq!((code, json["error"]["code"].as_str()), (404, Some("not_found")));
    let (code, _, json) = refuse(
        "alice-token",
        r#"{"service": "staff-only", "options": {"geometry": "800x600; rm -rf /"}}"#,
    )
    .await;
    assert_eq!(
        (code, json["error"]["code"].as_str()),
        (400, Some("bad_option")),
        "{json}"
    );
    let (code, _, json) = refuse("alice-token", "not json").await;
    assert_eq!((code, json["error"]["code"].as_str()), (400, Some("bad_request")));
    reserve(addr, "bob-token", "echo").await;
    let (code, head, json) = refuse("root-token", r#"{"service": "echo"}"#).await;
    assert_eq!((code, json["error"]["code"].as_str()), (503, Some("service_full")));
    assert!(header(&head, "retry-after").is_some());

    // Bob sees his own session only; alice's, fetched by id, without its token and secret.
    let (_, _, list) = api(addr, "GET", "/api/v1/sessions", Some("bob-token"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (code, _, other) = api(addr, "GET", &format!("/api/v1/sessions/{id}"), Some("bob-token"), None).await;
    assert_eq!(code, 200);
    assert!(
        other["token"].is_null() && other["secret"].is_null() && other["urls"].is_null(),
        "{other}"
    );
    assert_eq!(delete(addr, id, "bob-token").await, 403);
    let (_, _, list) = api(addr, "GET", "/api/v1/sessions", Some("root-token"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(
        api(addr, "GET", "/api/v1/sessions/nope", Some("root-token"), None)
            .await
            .0,
        404
    );
    assert_eq!(delete(addr, id, "alice-token").await, 204);
    assert_eq!(session(addr, id).await["state"], "stopped");
    assert_eq!(
        status(&Raw::upgrade_to(addr, &format!("/?token={token}"), "").await.1),
        404
    );

    let (code, _, doc) = api(addr, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/services",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/shutdown",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let audit = std::fs::read_to_string(f.dir.path("audit.log")).unwrap();
    assert!(
        audit.contains(r#""event":"reserve""#) && audit.contains(r#""event":"reject""#),
        "{audit}"
    );
    assert!(
        !audit.contains(token) && !audit.contains(secret),
        "a token or secret in the audit log"
    );
}

#[tokio::test]
async fn the_first_connection_launches_windows_share_it_and_the_last_one_stops_it() {
    let f = start("reserve_timeout = 60\nlinger = 0\nstop_grace = 2", ECHO_SERVICE);
    let addr = f.proxy.addr;
    let mine = reserve(addr, "alice-token", "echo").await;
    let (id, token) = (mine["id"].as_str().unwrap(), mine["token"].as_str().unwrap());
    let started = Instant::now();
    let mut first = open(addr, token).await;
    // Sent before the command listens: delivered, not lost.
    first.send_frame(0x82, b"early bytes", true).await;
    let mut second = open(addr, token).await;
    first.echo(b"").await;
    let (first_byte, data) = first.read_frame().await;
    assert_eq!((first_byte, data.as_slice()), (0x82, &b"early bytes"[..]));
    eprintln!("launch to first echo: {:?}", started.elapsed());
    second.echo(b"second window").await;
    first.echo(b"first window").await;
    assert_eq!(started_count(&f.proxy), 1, "one launch for two windows");
    let running = until_state(addr, id, "running").await;
    assert_eq!(running["clients"], 2);
    assert!(
        f.proxy
            .lines()
            .iter()
            .any(|l| l.contains("echo ready (tcp) secret=True"))
    );

    first.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    drop(first);
    second.echo(b"still served").await;
    second.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    drop(second);
    let stopped = until_state(addr, id, "stopped").await;
    assert_eq!(stopped["reason"], "the last client left");
    until_no_session_processes(f.proxy.pid()).await;
    assert_eq!(
        status(&Raw::upgrade_to(addr, &format!("/?token={token}"), "").await.1),
        404
    );
    // The index is free again.
    let (_, _, services) = api(addr, "GET", "/api/v1/services", Some("alice-token"), None).await;
    assert_eq!(services[0]["free"], 2, "{services}");
    assert_eq!(reserve(addr, "alice-token", "echo").await["index"], 0);
}

/// `share = true`: the windows of a session share one connection to its command, so each sees
/// the echo of what the other typed (without it, each would have its own echo).
#[tokio::test]
async fn a_shared_service_gives_its_windows_one_connection() {
    let services = r#"
[[service]]
name = "shared-echo"
count = 1
command = ["python3", "ECHO", "unix", "{runtime_dir}/echo.sock"]
target = "unix:{runtime_dir}/echo.sock"
page = "serial"
share = true
"#;
    let f = start("reserve_timeout = 60\nlinger = 0", services);
    let addr = f.proxy.addr;
    let mine = reserve(addr, "alice-token", "shared-echo").await;
    let token = mine["token"].as_str().unwrap();
    let mut first = open(addr, token).await;
    first.echo(b"").await;
    let mut second = open(addr, token).await;
    first.echo(b"typed in the first").await;
    let (byte, data) = second.read_frame().await;
    assert_eq!(
        (byte, data.as_slice()),
        (0x82, &b"typed in the first"[..]),
        "the other window's echo"
    );
    second.echo(b"typed in the second").await;
    let (byte, data) = first.read_frame().await;
    assert_eq!((byte, data.as_slice()), (0x82, &b"typed in the second"[..]));
    first.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    second.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    until_state(addr, mine["id"].as_str().unwrap(), "stopped").await;
}

#[tokio::test]
async fn unix_and_announce_targets_linger_and_reattach() {
    let services = format!(
        "{ECHO_SERVICE}\n[[service]]\nname = \"job\"\ncount = 1\ncommand = [\"python3\", \"ECHO\", \"announce\"]\n\
         target = {{ announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }}\n"
    );
    let f = start("reserve_timeout = 60\nlinger = 3", &services);
    let addr = f.proxy.addr;
    for service in ["staff-only", "job"] {
        let mine = reserve(addr, "alice-token", service).await;
        let (id, token) = (
            mine["id"].as_str().unwrap().to_owned(),
            mine["token"].as_str().unwrap().to_owned(),
        );
        let mut window = open(addr, &token).await;
        window.echo(service.as_bytes()).await;
        drop(window);
        until_state(addr, &id, "lingering").await;
        // Within linger, a reconnect re-attaches to the same command.
        let mut again = open(addr, &token).await;
        again.echo(b"re-attached").await;
        assert_eq!(session(addr, &id).await["state"], "running");
        drop(again);
        until_state(addr, &id, "stopped").await;
    }
    assert_eq!(started_count(&f.proxy), 2);
}

#[tokio::test]
async fn failures_reach_the_client_as_1011_with_the_reason() {
    let services = r#"
[[service]]
name = "fails"
count = 1
command = ["python3", "ECHO", "exit", "1"]
target = "127.0.0.1:1"

[[service]]
name = "silent"
count = 1
command = ["python3", "ECHO", "sleep"]
target = "127.0.0.1:1"

[[service]]
name = "dies-later"
count = 1
command = ["python3", "ECHO", "later", "{port}", "1.5"]
port = "47200+{index}"
target = "rebind"
"#;
    let f = start("start_timeout = 1\nreserve_timeout = 1", services);
    let addr = f.proxy.addr;
    for (service, reason) in [
        ("fails", "exited with status 1"),
        ("silent", "did not listen within 1 s"),
    ] {
        let mine = reserve(addr, "alice-token", service).await;
        let mut window = open(addr, mine["token"].as_str().unwrap()).await;
        assert_eq!(window.read_close().await, (1011, reason.to_owned()), "{service}");
        let failed = until_state(addr, mine["id"].as_str().unwrap(), "failed").await;
        assert_eq!(failed["reason"], reason);
        if service == "fails" {
            assert_eq!(failed["exit_code"], 1);
        }
    }
    let mine = reserve(addr, "alice-token", "dies-later").await;
    let mut window = open(addr, mine["token"].as_str().unwrap()).await;
    window.echo(b"while it lives").await;
    assert_eq!(window.read_close().await, (1011, "exited with status 3".to_owned()));
    let stopped = until_state(addr, mine["id"].as_str().unwrap(), "stopped").await;
    assert_eq!(stopped["exit_code"], 3);

    // A reservation nobody uses expires and frees its index.
    let unused = reserve(addr, "alice-token", "fails").await;
    let expired = until_state(addr, unused["id"].as_str().unwrap(), "expired").await;
    assert!(expired["token"].is_null());
    assert_eq!(reserve(addr, "alice-token", "fails").await["index"], 0);
    until_no_session_processes(f.proxy.pid()).await;
}

#[tokio::test]
async fn delete_closes_clients_with_1001_and_shutdown_stops_everything() {
    let f = start("reserve_timeout = 60", ECHO_SERVICE);
    let addr = f.proxy.addr;
    let mine = reserve(addr, "alice-token", "echo").await;
    let mut window = open(addr, mine["token"].as_str().unwrap()).await;
    window.echo(b"hello").await;
    let id = mine["id"].as_str().unwrap();
    assert_eq!(delete(addr, id, "alice-token").await, 204);
    assert_eq!(window.read_close().await, (1001, "stopped through the API".to_owned()));
    assert_eq!(
        session_processes(f.proxy.pid()),
        0,
        "DELETE answers once the command is gone"
    );

    let mut f = f;
    let other = reserve(addr, "bob-token", "echo").await;
    let mut window = open(addr, other["token"].as_str().unwrap()).await;
    window.echo(b"before shutdown").await;
    assert_eq!(
        api(addr, "POST", "/api/v1/shutdown", Some("alice-token"), None).await.0,
        403
    );
    assert_eq!(
        api(addr, "POST", "/api/v1/shutdown", Some("root-token"), None).await.0,
        202
    );
    assert_eq!(window.read_close().await.0, 1001);
    assert_eq!(f.proxy.wait_exit(WAIT).code(), Some(0));
    until_no_session_processes(f.proxy.pid()).await;
}

#[tokio::test]
async fn a_sigkilled_wsproxy_leaves_no_session_process() {
    let f = start("reserve_timeout = 60", ECHO_SERVICE);
    let addr = f.proxy.addr;
    let mine = reserve(addr, "alice-token", "echo").await;
    let mut window = open(addr, mine["token"].as_str().unwrap()).await;
    window.echo(b"alive").await;
    let pid = f.proxy.pid();
    assert!(session_processes(pid) > 0);
    let mut f = f;
    f.proxy.signal(nix::sys::signal::Signal::SIGKILL);
    f.proxy.wait_exit(WAIT);
    until_no_session_processes(pid).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, window.stream.read_to_end(&mut rest)).await;
}

#[test]
fn a_bad_services_file_is_one_line_and_exit_64() {
    let dir = TempDir::new("badservices");
    for (text, needle) in [
        ("[sessions]\nlingr = 1\n", "lingr"),
        (
            "[[service]]\nname = \"x\"\ncount = 1\ncommand = [\"x\", \"{nope}\"]\ntarget = \"h:1\"\n",
            "{nope}",
        ),
    ] {
        let file = dir.path("services.toml");
        std::fs::write(&file, text).unwrap();
        let mut proxy = Proxy::spawn(&["--sessions", file.to_str().unwrap(), "127.0.0.1:0"]);
        assert_eq!(proxy.wait_exit(WAIT).code(), Some(64));
        let lines = proxy.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(needle), "{lines:?}");
    }
}

/// Real programs as session commands: the installed telnetd through scripts/telnetd-once, found
/// through librebind.so (it binds the service's port, serves one connection and exits), and QEMU's
/// monitor on a UNIX socket in the session's runtime directory.
#[tokio::test]
async fn real_telnetd_and_qemu_monitor_sessions() {
    use crate::real_servers::{Telnet, require, require_telnetd, telnet_until, telnetd_once};
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    require_telnetd();
    require("qemu-system-x86_64", "qemu-system-x86");
    let services = r#"
[[service]]
name = "telnet"
count = 2
command = ["TELNETD_ONCE", "{port}"]
port = "47400+{index}"
target = "rebind"
page = "telnet"

[[service]]
name = "qemu"
count = 1
command = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
           "-chardev", "socket,id=mon,path={runtime_dir}/monitor.sock,server=on,wait=off",
           "-mon", "chardev=mon,mode=readline"]
target = "unix:{runtime_dir}/monitor.sock"
page = "serial"
"#
    .replace("TELNETD_ONCE", &telnetd_once());
    let f = start("start_timeout = 20", &services);
    let addr = f.proxy.addr;

    let mine = reserve(addr, "alice-token", "telnet").await;
    let token = mine["token"].as_str().unwrap();
    let (mut ws, _) = ws_connect_to(addr, &format!("/websockify?token={token}"), "binary").await;
    let mut telnet = Telnet::default();
    telnet_until(&mut ws, &mut telnet, "login:").await;
    ws.send(Message::binary(b"wsproxy-nobody\r\n".to_vec())).await.unwrap();
    telnet_until(&mut ws, &mut telnet, "Password").await;
    ws.close(None).await.unwrap();
    until_state(addr, mine["id"].as_str().unwrap(), "stopped").await;

    let mine = reserve(addr, "alice-token", "qemu").await;
    let mut monitor = open(addr, mine["token"].as_str().unwrap()).await;
    monitor.send_frame(0x82, b"info version\r\n", true).await;
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !text.contains("7.") || !text.contains("(qemu)") {
        assert!(Instant::now() < deadline, "no version from the QEMU monitor: {text:?}");
        let (_, data) = monitor.read_frame().await;
        text.push_str(&String::from_utf8_lossy(&data));
    }
    let id = mine["id"].as_str().unwrap();
    assert_eq!(delete(addr, id, "alice-token").await, 204);
    until_no_session_processes(f.proxy.pid()).await;
}

/// A service whose command speaks WebSocket itself: QEMU's monitor on a `websocket=on` UNIX socket,
/// named `ws+unix:` as the target.
#[tokio::test]
async fn a_service_target_that_speaks_websocket() {
    crate::real_servers::require("qemu-system-x86_64", "qemu-system-x86");
    let services = r#"
[[service]]
name = "qemu-ws"
count = 1
command = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
           "-chardev", "socket,id=mon,path={runtime_dir}/monitor.sock,server=on,wait=off,websocket=on",
           "-mon", "chardev=mon,mode=readline"]
target = "ws+unix:{runtime_dir}/monitor.sock"
page = "serial"
"#;
    let f = start("start_timeout = 20", services);
    let addr = f.proxy.addr;
    let mine = reserve(addr, "alice-token", "qemu-ws").await;
    let mut monitor = open(addr, mine["token"].as_str().unwrap()).await;
    monitor.send_frame(0x82, b"info version\r\n", true).await;
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !text.contains("info version") || !text.contains("7.") || !text.ends_with("(qemu) ") {
        assert!(Instant::now() < deadline, "no version from the QEMU monitor: {text:?}");
        let (first, data) = monitor.read_frame().await;
        assert_eq!(first, 0x82, "{data:?}");
        text.push_str(&String::from_utf8_lossy(&data));
    }
    // No WebSocket framing leaks into the console: the text is the monitor's own.
    assert!(text.starts_with("QEMU "), "{text:?}");
    let id = mine["id"].as_str().unwrap();
    assert_eq!(delete(addr, id, "alice-token").await, 204);
    assert_eq!(monitor.read_close().await.0, 1001);
    until_no_session_processes(f.proxy.pid()).await;
}

/// The seed system's JSON services (`seed_services`): the script runs as `PATH start INDEX` with the
/// options as JSON in `WSPROXY_OPTIONS`, and binds 5900+INDEX, which librebind.so moves.
#[tokio::test]
async fn seed_json_services_run_their_script_with_start_index() {
    let dir = prepare("reserve_timeout = 60\nseed_services = \"seed.json\"", "");
    let script = dir.path("start-desktop");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = start ] || exit 2\necho \"seed script index=$2 options=$WSPROXY_OPTIONS\"\n\
             exec python3 {} tcp $((5900 + $2))\n",
            dir.path("echo.py").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path("seed.json"),
        format!(
            r#"{{"Desktop": {{"script": "{}", "count": 2, "options": {{"geometry": "1024x768"}}}}}}"#,
            script.display()
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&["--sessions", dir.path("services.toml").to_str().unwrap(), "127.0.0.1:0"]);
    let addr = proxy.addr;
    let first = reserve(addr, "alice-token", "Desktop").await;
    let second = reserve(addr, "bob-token", "Desktop").await;
    let mut window = open(addr, second["token"].as_str().unwrap()).await;
    window.echo(b"seed desktop").await;
    let line = proxy
        .lines()
        .into_iter()
        .find(|l| l.contains("seed script index="))
        .expect("the script's line in the log");
    assert!(line.contains(r#"index=1 options={"geometry":"1024x768"}"#), "{line}");
    let (code, _, json) = api(
        addr,
        "POST",
        "/api/v1/sessions",
        Some("root-token"),
        Some(r#"{"service": "Desktop", "options": {"geometry": "1x1; reboot"}}"#),
    )
    .await;
    assert_eq!((code, json["error"]["code"].as_str()), (400, Some("bad_option")));
    assert_eq!(first["index"], 0);
}

/// `--api-listen`: the API on its own address, and not on the main port.
#[tokio::test]
async fn the_api_can_have_its_own_address() {
    let dir = prepare("reserve_timeout = 60", ECHO_SERVICE);
    let mut proxy = Proxy::start(&[
        "--sessions",
        dir.path("services.toml").to_str().unwrap(),
        "--api-listen",
        "127.0.0.1:0",
        "127.0.0.1:0",
    ]);
    let line = proxy.wait_line("sessions API on http://", WAIT);
    let api_addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mine = reserve(api_addr, "alice-token", "echo").await;
    let mut window = open(proxy.addr, mine["token"].as_str().unwrap()).await;
    window.echo(b"relayed on the main port").await;
    let (code, _, _) = http_get(
        proxy.addr,
        "GET",
        "/api/v1/services",
        "Authorization: Bearer alice-token\r\n",
    )
    .await;
    assert_eq!(code, 405, "the main port does not serve the API then");
}

/// The pids of this wsproxy's session commands (their processes carry its mark; the guards do not).
fn session_pids(wsproxy: u32) -> Vec<i32> {
    let needle = format!("WSPROXY_SESSION={wsproxy}:");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var.starts_with(needle.as_bytes())))
        })
        .collect()
}

/// Clients reconnecting with the token while the command is SIGKILLed, or while the last client
/// leaves, are counted exactly: the session ends (lingers out, or stops with its command) with no
/// client counted and no process left, and a client of an ending session is refused at once.
#[tokio::test]
async fn reconnects_racing_a_killed_command_or_linger_leave_no_session_behind() {
    let services = "[[service]]\nname = \"churn\"\ncount = 8\ncommand = [\"python3\", \"ECHO\", \"announce\"]\n\
                    target = { announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }\n";
    let f = start("reserve_timeout = 60\nlinger = 1\nstop_grace = 1", services);
    let (addr, wsproxy) = (f.proxy.addr, f.proxy.pid());
    let mut ids = Vec::new();
    for round in 0..12u8 {
        let mine = reserve(addr, "root-token", "churn").await;
        let (id, token) = (
            mine["id"].as_str().unwrap().to_owned(),
            mine["token"].as_str().unwrap().to_owned(),
        );
        let mut first = open(addr, &token).await;
        first.echo(b"launched").await;
        let pids = session_pids(wsproxy);
        // Clients come and go with the token (each from its own address: refusals of an ended
        // session's token count as guesses).
        let churn: Vec<_> = (0..6u8)
            .map(|client| {
                let token = token.clone();
                tokio::spawn(async move {
                    let from = std::net::IpAddr::from([127, 1, round, client + 1]);
                    for _ in 0..6 {
                        let raw = Raw::connect_from(addr, from).await;
                        let path = format!("/websockify?token={token}");
                        let (raw, head) = raw.send_upgrade(&path, &format!("Host: {addr}\r\n")).await;
                        let code = status(&head);
                        assert!([101, 404, 410].contains(&code), "{head}");
                        drop(raw);
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        if round % 2 == 0 {
            // The command dies under its clients.
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        drop(first);
        for task in churn {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("a client of the session hung")
                .unwrap();
        }
        ids.push(id);
    }
    // Every session ends (linger is 1 s) with no client counted and its command gone.
    for id in &ids {
        let json = until_ended(addr, id).await;
        assert_eq!(json["clients"], 0, "an ended session still counts clients: {json}");
    }
    until_no_session_processes(wsproxy).await;
    let (_, _, list) = api(addr, "GET", "/api/v1/sessions", Some("root-token"), None).await;
    for json in list.as_array().unwrap() {
        assert!(json["state"] == "stopped" && json["clients"] == 0, "{json}");
    }
}

/// Waits (bounded) until the session has ended (any end).
async fn until_ended(addr: SocketAddr, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let json = session(addr, id).await;
        if ["stopped", "failed", "expired"].contains(&json["state"].as_str().unwrap_or("")) {
            return json;
        }
        assert!(Instant::now() < deadline, "session {id} never ended: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
