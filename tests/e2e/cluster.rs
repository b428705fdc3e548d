//! Several real wsproxy instances sharing sessions through a real redis-server: one pool, claims
//! that hold under concurrency, clients forwarded to the instance that launched their session,
//! lost instances, Redis going away and coming back, and websockify's TokenRedis reading it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sessions::{ECHO, api, session_processes};
use crate::util::*;

/// A services file on the shared store `redis`, namespace `ns`: service "echo" (count `count`),
/// a Python echo server on a kernel-chosen loopback port (private to the instance that runs it).
fn services(dir: &TempDir, redis: &Redis, ns: &str, count: u32) -> String {
    std::fs::write(dir.path("echo.py"), ECHO).unwrap();
    let text = format!(
        "[sessions]\nstore = \"redis://127.0.0.1:{}/0?namespace={ns}\"\nlinger = 0\n\n\
         [[api.token]]\ntoken = \"root-token\"\nscopes = [\"admin\"]\nuser = \"root\"\n\n\
         [[api.token]]\ntoken = \"alice-token\"\nscopes = [\"sessions\"]\nuser = \"alice\"\n\n\
         [[service]]\nname = \"echo\"\ncount = {count}\ncommand = [\"python3\", \"{}\", \"announce\"]\n\
         target = {{ announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }}\npage = \"serial\"\n",
        redis.port,
        dir.path("echo.py").display()
    );
    let path = dir.path("services.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn instances(file: &str, n: usize) -> Vec<Proxy> {
    (0..n)
        .map(|_| Proxy::start(&["--sessions", file, "127.0.0.1:0"]))
        .collect()
}

async fn reserve(addr: SocketAddr, token: &str) -> serde_json::Value {
    let (code, head, json) = api(
        addr,
        "POST",
        "/api/v1/sessions",
        Some(token),
        Some(r#"{"service": "echo"}"#),
    )
    .await;
    assert_eq!(code, 201, "{head}\n{json}");
    json
}

async fn get(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (code, _, json) = api(addr, "GET", &format!("/api/v1/sessions/{id}"), Some("root-token"), None).await;
    assert_eq!(code, 200, "{json}");
    json
}

/// Waits (bounded by `limit`) until the session, seen through `addr`, is in `state`.
async fn until_state(addr: SocketAddr, id: &str, state: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let json = get(addr, id).await;
        if json["state"] == state {
            return json;
        }
        assert!(Instant::now() < deadline, "session {id} never became {state}: {json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open(addr: SocketAddr, token: &str) -> Raw {
    let (raw, head) = Raw::upgrade_to(addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "{head}");
    raw
}

#[tokio::test]
async fn reserve_on_one_open_on_others_stop_on_a_third() {
    let redis = Redis::start();
    let dir = TempDir::new("cluster");
    let file = services(&dir, &redis, "c1", 2);
    let proxies = instances(&file, 3);
    let (a, b, c) = (proxies[0].addr, proxies[1].addr, proxies[2].addr);

    let reserved = reserve(a, "alice-token").await;
    let (id, token) = (reserved["id"].as_str().unwrap(), reserved["token"].as_str().unwrap());
    // Every instance sees it, with the same index.
    for addr in [b, c] {
        let seen = get(addr, id).await;
        assert_eq!(
            (seen["state"].as_str(), seen["index"].as_u64()),
            (Some("reserved"), Some(0)),
            "{seen}"
        );
    }

    // The first connection, on B, launches it there; C's client is forwarded to B.
    let mut on_b = open(b, token).await;
    on_b.echo(b"through the launching instance").await;
    let mut on_c = open(c, token).await;
    on_c.echo(b"forwarded to the launching instance").await;
    on_b.echo(&vec![7u8; 200_000]).await;
    on_c.echo(&vec![9u8; 200_000]).await;
    let running = get(a, id).await;
    assert_eq!(
        (running["state"].as_str(), running["clients"].as_u64()),
        (Some("running"), Some(2)),
        "{running}"
    );
    let launched_on_b = proxies[1].lines().iter().any(|l| l.contains("listening at"));
    assert!(launched_on_b, "B launched it: {:?}", proxies[1].lines());
    assert!(
        !proxies[2].lines().iter().any(|l| l.contains("listening at")),
        "C did not launch it"
    );

    // websockify's TokenRedis can read its target while it runs.
    let published = redis
        .get(&format!("c1:{token}"))
        .expect("the session's target is published for TokenRedis");
    let value: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert!(value["host"].as_str().unwrap().starts_with("127.0.0.1:"), "{published}");
    let websockify_style = Proxy::start(&[
        "--token-plugin",
        "TokenRedis",
        "--token-source",
        &format!("127.0.0.1:{}:0::c1", redis.port),
        "127.0.0.1:0",
    ]);
    let mut via_token_redis = open(websockify_style.addr, token).await;
    via_token_redis.echo(b"through a TokenRedis proxy").await;
    drop(via_token_redis);

    // DELETE through A, which runs nothing of it: B stops it, both clients are closed.
    let (code, _, json) = api(
        a,
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        Some("alice-token"),
        None,
    )
    .await;
    assert_eq!(code, 204, "{json}");
    let stopped = until_state(c, id, "stopped", WAIT).await;
    assert_eq!(stopped["reason"], "stopped through the API", "{stopped}");
    let (code, reason) = on_b.read_close().await;
    assert_eq!((code, reason.as_str()), (1001, "stopped through the API"));
    let _ = tokio::time::timeout(WAIT, on_c.read_to_end())
        .await
        .expect("the forwarded client is closed too");
    assert_eq!(
        redis.get(&format!("c1:{token}")),
        None,
        "the TokenRedis key goes at stop"
    );
    assert_eq!(session_processes(proxies[1].pid()), 0, "no session process left on B");
}

#[tokio::test]
async fn concurrent_reservations_across_instances_never_exceed_the_count() {
    let redis = Redis::start();
    let dir = TempDir::new("cluster");
    let file = services(&dir, &redis, "c2", 5);
    let proxies = instances(&file, 3);
    let addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
    let calls = (0..200).map(|i| {
        let addr = addrs[i % addrs.len()];
        tokio::spawn(async move {
            api(
                addr,
                "POST",
                "/api/v1/sessions",
                Some("root-token"),
                Some(r#"{"service": "echo"}"#),
            )
            .await
        })
    });
    let mut indexes = Vec::new();
    let mut ids = std::collections::BTreeMap::new();
    let mut full = 0;
    for call in calls.collect::<Vec<_>>() {
        let (code, head, json) = call.await.unwrap();
        match code {
            201 => {
                indexes.push(json["index"].as_u64().unwrap());
                ids.insert(json["index"].as_u64().unwrap(), json["id"].as_str().unwrap().to_owned());
            }
            503 => {
                assert_eq!(json["error"]["code"], "service_full", "{json}");
                full += 1;
            }
            other => panic!("unexpected {other}: {head}\n{json}"),
        }
    }
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1, 2, 3, 4], "exactly 5 reservations, indexes once each");
    assert_eq!(full, 195);
    let (_, _, services) = api(addrs[2], "GET", "/api/v1/services", Some("root-token"), None).await;
    assert_eq!(
        (services[0]["free"].as_u64(), services[0]["reserved"].as_u64()),
        (Some(0), Some(5)),
        "{services}"
    );
    // Freed indexes are handed out again lowest first, through any instance.
    for index in [3u64, 1] {
        let path = format!("/api/v1/sessions/{}", ids[&index]);
        let (code, _, json) = api(addrs[index as usize % 3], "DELETE", &path, Some("root-token"), None).await;
        assert_eq!(code, 204, "{json}");
    }
    let first = reserve(addrs[0], "root-token").await;
    let second = reserve(addrs[1], "root-token").await;
    assert_eq!((first["index"].as_u64(), second["index"].as_u64()), (Some(1), Some(3)));
}

#[tokio::test]
async fn a_killed_instance_loses_its_sessions_and_frees_their_indexes() {
    let redis = Redis::start();
    let dir = TempDir::new("cluster");
    let file = services(&dir, &redis, "c3", 1);
    let mut proxies = instances(&file, 2);
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    let reserved = reserve(a, "alice-token").await;
    let (id, token) = (
        reserved["id"].as_str().unwrap().to_owned(),
        reserved["token"].as_str().unwrap().to_owned(),
    );
    let mut client = open(b, &token).await;
    client.echo(b"launched on B").await;
    let b_pid = proxies[1].pid();
    assert!(session_processes(b_pid) >= 1, "B runs the command");

    proxies[1].signal(nix::sys::signal::Signal::SIGKILL);
    proxies[1].wait_exit(WAIT);
    let killed = Instant::now();
    let lost = until_state(a, &id, "failed", Duration::from_secs(20)).await;
    assert_eq!(lost["reason"], "instance lost", "{lost}");
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "marked lost after {:?}",
        killed.elapsed()
    );
    // Its index is free for the others, and nothing of it is left running.
    let again = reserve(a, "alice-token").await;
    assert_eq!(again["index"], 0, "{again}");
    let deadline = Instant::now() + WAIT;
    while session_processes(b_pid) > 0 {
        assert!(Instant::now() < deadline, "B's session command outlived it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_down_is_503_running_relays_go_on_and_it_recovers() {
    let mut redis = Redis::start_persistent();
    let dir = TempDir::new("cluster");
    let file = services(&dir, &redis, "c4", 3);
    let proxies = instances(&file, 2);
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    let reserved = reserve(a, "alice-token").await;
    let (id, token) = (
        reserved["id"].as_str().unwrap().to_owned(),
        reserved["token"].as_str().unwrap().to_owned(),
    );
    let mut local = open(a, &token).await;
    let mut forwarded = open(b, &token).await;
    local.echo(b"before").await;
    forwarded.echo(b"before").await;

    redis.stop();
    let (code, _, json) = api(
        a,
        "POST",
        "/api/v1/sessions",
        Some("alice-token"),
        Some(r#"{"service": "echo"}"#),
    )
    .await;
    assert_eq!(
        (code, json["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{json}"
    );
    let (code, _, json) = api(b, "GET", "/api/v1/sessions", Some("root-token"), None).await;
    assert_eq!(
        (code, json["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{json}"
    );
    let (_, head) = Raw::upgrade_to(a, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 503, "{head}");
    // Relays already open keep every byte, both the local one and the forwarded one.
    let mut pattern = Pattern::new(11);
    for _ in 0..20 {
        let mut chunk = vec![0u8; 32 * 1024];
        pattern.fill(&mut chunk);
        local.echo(&chunk).await;
        forwarded.echo(&chunk).await;
    }

    redis.restart();
    let back = Instant::now();
    loop {
        let (code, _, json) = api(a, "GET", &format!("/api/v1/sessions/{id}"), Some("root-token"), None).await;
        if code == 200 {
            assert_eq!(json["state"], "running", "{json}");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the API did not recover within 5 s: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = open(b, &token).await;
    again.echo(b"after the restart").await;
    local.echo(b"still there").await;
    let ids: BTreeSet<String> = [id].into();
    let (_, _, listed) = api(b, "GET", "/api/v1/sessions", Some("root-token"), None).await;
    let listed: BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids);
}

/// A console that takes one connection, like a QEMU serial chardev: it listens on a kernel-chosen
/// port of the address in argv[2] (127.0.0.1 if none) and announces it as a job script would,
/// greets the first connection with `connection 1` and answers what it reads in capitals; any
/// later connection is closed at once. It writes how many connections it accepted to argv[1].
pub(crate) const ONE_CONNECTION: &str = r#"
import socket, sys, threading
s = socket.socket()
s.bind((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", 0))
s.listen(16)
print("PA_REMOTE_CONNECTION;job42;vnc;%s:%d" % s.getsockname(), flush=True)
def serve(c):
    c.sendall(b"connection 1\n")
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d.upper())
    c.close()
count = 0
while True:
    c, _ = s.accept()
    count += 1
    with open(sys.argv[1], "w") as f:
        f.write(str(count))
    if count == 1:
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    else:
        c.close()
"#;

/// Reads frames until `want` bytes came; they must be `expected`.
pub(crate) async fn expect_output(raw: &mut Raw, expected: &[u8]) {
    let got = crate::share::read_bytes(raw, expected.len()).await;
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
}

/// A shared service (`share = true`) whose command takes one connection, with the store shared:
/// the client on the instance that runs it and a client forwarded from another instance are two
/// windows on the one connection: both see everything it sends, both type into it.
/// Two instances on store namespace `ns` with `args`, and one service "echo" with `share = true`
/// whose command is `ONE_CONNECTION`; also the file where it counts its connections.
fn shared_console_instances(dir: &TempDir, redis: &Redis, ns: &str, args: &[&str]) -> (Vec<Proxy>, PathBuf) {
    std::fs::write(dir.path("console.py"), ONE_CONNECTION).unwrap();
    let connections = dir.path("connections");
    let text = format!(
        "[sessions]\nstore = \"redis://127.0.0.1:{}/0?namespace={ns}\"\nlinger = 0\n\n\
         [[api.token]]\ntoken = \"alice-token\"\nscopes = [\"sessions\"]\nuser = \"alice\"\n\n\
         [[service]]\nname = \"echo\"\ncount = 1\nshare = true\n\
         command = [\"python3\", \"{}\", \"{}\"]\n\
         target = {{ announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }}\npage = \"serial\"\n",
        redis.port,
        dir.path("console.py").display(),
        connections.display()
    );
    std::fs::write(dir.path("services.toml"), text).unwrap();
    let file = dir.path("services.toml").display().to_string();
    let mut all = vec!["--sessions", &file];
    all.extend_from_slice(args);
    all.push("127.0.0.1:0");
    let proxies = (0..2).map(|_| Proxy::start(&all)).collect();
    (proxies, connections)
}

/// A shared service (`share = true`) whose command takes one connection, with the store shared:
/// the client on the instance that runs it and a client forwarded from another instance are two
/// windows on the one connection: both see everything it sends, both type into it.
#[tokio::test]
async fn a_shared_console_is_shared_with_clients_forwarded_from_another_instance() {
    let redis = Redis::start();
    let dir = TempDir::new("cluster");
    let (mut proxies, connections) = shared_console_instances(&dir, &redis, "c6", &[]);
    let (a, b) = (proxies[0].addr, proxies[1].addr);

    let reserved = reserve(a, "alice-token").await;
    let token = reserved["token"].as_str().unwrap();
    let mut on_a = open(a, token).await;
    expect_output(&mut on_a, b"connection 1\n").await;
    // B forwards its client to A, which runs the session: it joins A's connection (and is
    // shown the output so far first).
    let mut via_b = open(b, token).await;
    expect_output(&mut via_b, b"connection 1\n").await;

    on_a.send_frame(0x82, b"typed on a;", true).await;
    expect_output(&mut on_a, b"TYPED ON A;").await;
    expect_output(&mut via_b, b"TYPED ON A;").await;
    via_b.send_frame(0x82, b"typed through b;", true).await;
    expect_output(&mut via_b, b"TYPED THROUGH B;").await;
    expect_output(&mut on_a, b"TYPED THROUGH B;").await;

    assert_eq!(
        std::fs::read_to_string(&connections).unwrap(),
        "1",
        "the console was connected to more than once"
    );
    let lines = proxies[0].lines();
    assert!(
        lines.iter().any(|l| l.contains("open: forwarded client of session")),
        "B's client went through A: {lines:?}"
    );
    assert!(
        !proxies[1].lines().iter().any(|l| l.contains("listening at")),
        "B did not launch it"
    );

    // The forwarded window leaves; the one on A goes on, on the same connection.
    drop(via_b);
    proxies[0].wait_line("closed: forwarded client of session", WAIT);
    on_a.send_frame(0x82, b"still here", true).await;
    expect_output(&mut on_a, b"STILL HERE").await;
    assert_eq!(std::fs::read_to_string(&connections).unwrap(), "1");
}

/// `--share-view-only` across instances: the oldest window types, wherever its browser
/// connected; a forwarded window is one by age like the others.
#[tokio::test]
async fn view_only_counts_forwarded_windows_by_age_too() {
    let redis = Redis::start();
    let dir = TempDir::new("cluster");
    let (mut proxies, connections) = shared_console_instances(&dir, &redis, "c7", &["--share-view-only"]);
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    let reserved = reserve(a, "alice-token").await;
    let token = reserved["token"].as_str().unwrap();
    let mut on_a = open(a, token).await;
    expect_output(&mut on_a, b"connection 1\n").await;
    let mut via_b = open(b, token).await;
    expect_output(&mut via_b, b"connection 1\n").await;
    proxies[0].wait_line("open: forwarded client of session", WAIT);

    // The forwarded window joined later: it only watches.
    via_b.send_frame(0x82, b"dropped;", true).await;
    on_a.send_frame(0x82, b"first;", true).await;
    expect_output(&mut on_a, b"FIRST;").await;
    expect_output(&mut via_b, b"FIRST;").await;

    // The window on A leaves: the forwarded one is the oldest now, and types.
    on_a.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    assert_eq!(on_a.read_close().await.0, 1000);
    proxies[0].wait_line("closed: client closed (1000)", WAIT);
    via_b.send_frame(0x82, b"now b;", true).await;
    expect_output(&mut via_b, b"NOW B;").await;
    assert_eq!(std::fs::read_to_string(&connections).unwrap(), "1");
    drop(proxies);
}

#[test]
fn a_wildcard_listener_needs_advertise_and_a_bad_store_is_one_line() {
    let redis = Redis::start();
    let dir = TempDir::new("cluster");
    let file = services(&dir, &redis, "c5", 1);
    let mut proxy = Proxy::spawn(&["--sessions", &file, "0.0.0.0:0"]);
    let status = proxy.wait_exit(WAIT);
    assert!(!status.success());
    let lines = proxy.lines();
    assert!(lines.iter().any(|l| l.contains("--advertise HOST:PORT")), "{lines:?}");

    std::fs::write(dir.path("bad.toml"), "[sessions]\nstore = \"http://127.0.0.1:1\"\n").unwrap();
    let mut proxy = Proxy::spawn(&["--sessions", dir.path("bad.toml").to_str().unwrap(), "127.0.0.1:0"]);
    let status = proxy.wait_exit(WAIT);
    assert_eq!(status.code(), Some(64));
    let lines = proxy.lines();
    assert!(
        lines.iter().any(|l| l.contains("it must start with redis://")),
        "{lines:?}"
    );
}
