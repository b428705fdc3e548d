//! Token routing: every token plugin on the real binary, every refusal an HTTP answer, and after
//! each failure a normal session still works.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use crate::util::*;

/// Opens `?token=TOKEN` and expects a relayed echo session.
async fn works(addr: SocketAddr, token: &str) {
    let (mut raw, head) = Raw::upgrade_to(addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "token {token:?}: {head}");
    raw.echo(format!("through {token}").as_bytes()).await;
}

/// Opens `path` and expects an HTTP refusal; returns (status, body).
async fn refused(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let (mut raw, head) = Raw::upgrade_to(addr, path, headers).await;
    assert_ne!(status(&head), 101, "{path} was accepted");
    let body = raw.read_body(&head).await;
    assert!(
        header(&head, "content-type").is_some_and(|t| t.starts_with("text/plain")),
        "{head}"
    );
    assert_eq!(body.lines().count(), 1, "one line: {body:?}");
    (status(&head), body)
}

/// Waits (bounded) until `check` passes; token files are checked again once a second.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(addr: SocketAddr, token: &str) -> u16 {
    let (_raw, head) = Raw::upgrade_to(addr, &format!("/websockify?token={token}"), "").await;
    status(&head)
}

/// An echo server on a UNIX socket.
fn unix_echo(path: &std::path::Path) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

#[tokio::test]
async fn token_file_routes_tcp_ipv6_and_unix_targets_and_picks_up_edits() {
    let dir = TempDir::new("tokenfile");
    let v4 = echo_target().await;
    let v6 = echo_target_at("[::1]:0").await;
    let sock = dir.path("serial.sock");
    unix_echo(&sock);
    let file = dir.path("tokens.conf");
    std::fs::write(
        &file,
        format!(
            "# consoles\ndesk1: {v4}\n\nbroken line without a target\nv6: [::1]:{}\nserial: unix_socket:{}\n",
            v6.port(),
            sock.display()
        ),
    )
    .unwrap();
    let mut proxy = Proxy::start(&[
        "--token-plugin",
        "websockify.token_plugins.TokenFile",
        "--token-source",
        file.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let warning = proxy.wait_line("syntax error", WAIT);
    assert!(warning.contains("tokens.conf on line 4"), "{warning}");
    for token in ["desk1", "v6", "serial"] {
        works(proxy.addr, token).await;
    }
    let (code, body) = refused(proxy.addr, "/websockify", "").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("?token="), "{body}");
    let (code, body) = refused(proxy.addr, "/websockify?token=nope", "").await;
    assert_eq!((code, body.trim()), (404, "Unknown token"));
    // noVNC's path form, and any path.
    works(proxy.addr, "desk1&other=1").await;
    let (mut raw, head) = Raw::upgrade_to(proxy.addr, "/any/path?token=desk1", "").await;
    assert_eq!(status(&head), 101);
    raw.echo(b"any path").await;

    // An open session is not touched by an edit; new connections see the edit.
    let (mut open, head) = Raw::upgrade_to(proxy.addr, "/?token=desk1", "").await;
    assert_eq!(status(&head), 101);
    std::fs::write(&file, format!("desk2: {v4}\n")).unwrap();
    eventually("the edit", || async { status_of(proxy.addr, "desk2").await == 101 }).await;
    assert_eq!(status_of(proxy.addr, "desk1").await, 404);
    open.echo(b"still relayed after the edit").await;
    // stderr is collected by another thread: wait (bounded) for the line rather than race it.
    proxy.wait_line("changed: loaded again", WAIT);
    let logs = proxy.lines().join("\n");
    assert!(
        !logs.contains("desk1") && !logs.contains("nope"),
        "a token in the log: {logs}"
    );
    assert!(logs.contains("token#"), "{logs}");
}

#[tokio::test]
async fn token_directories_pick_up_new_and_removed_files_and_read_only_does_not() {
    let dir = TempDir::new("tokendir");
    let target = echo_target().await;
    let tokens = dir.path("tokens.d");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(tokens.join("a.conf"), format!("a: {target}\n")).unwrap();
    let source = tokens.to_str().unwrap();
    let live = Proxy::start(&["--token-plugin", "TokenFile", "--token-source", source, "127.0.0.1:0"]);
    let fixed = Proxy::start(&[
        "--token-plugin",
        "ReadOnlyTokenFile",
        "--token-source",
        source,
        "127.0.0.1:0",
    ]);
    works(live.addr, "a").await;
    works(fixed.addr, "a").await;
    std::fs::write(tokens.join("b.conf"), format!("b: {target}\n")).unwrap();
    std::fs::remove_file(tokens.join("a.conf")).unwrap();
    eventually("the new file", || async { status_of(live.addr, "b").await == 101 }).await;
    assert_eq!(status_of(live.addr, "a").await, 404);
    // ReadOnlyTokenFile read its files once, at start.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    works(fixed.addr, "a").await;
    assert_eq!(status_of(fixed.addr, "b").await, 404);
}

#[tokio::test]
async fn token_file_name_and_socket_directory_never_leave_their_directory() {
    let dir = TempDir::new("tokennames");
    let target = echo_target().await;
    let names = dir.path("names");
    std::fs::create_dir(&names).unwrap();
    std::fs::write(names.join("desk1"), format!("{target}\n")).unwrap();
    std::fs::write(dir.path("outside"), format!("{target}\n")).unwrap();
    std::os::unix::fs::symlink(dir.path("outside"), names.join("link-out")).unwrap();
    let proxy = Proxy::start(&[
        "--token-plugin",
        "TokenFileName",
        "--token-source",
        names.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    works(proxy.addr, "desk1").await;
    for bad in ["..%2Foutside", "link-out", "..", "missing", "%2Fetc%2Fpasswd"] {
        let (code, _) = refused(proxy.addr, &format!("/?token={bad}"), "").await;
        assert_eq!(code, 404, "{bad}");
    }

    let sockets = dir.path("sockets");
    std::fs::create_dir(&sockets).unwrap();
    unix_echo(&sockets.join("vm1"));
    unix_echo(&dir.path("outside.sock"));
    std::os::unix::fs::symlink(dir.path("outside.sock"), sockets.join("escape")).unwrap();
    std::fs::write(sockets.join("plain-file"), "x").unwrap();
    let proxy = Proxy::start(&[
        "--token-plugin",
        "UnixDomainSocketDirectory",
        "--token-source",
        sockets.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    works(proxy.addr, "vm1").await;
    for bad in ["..%2Foutside.sock", "escape", "plain-file", "nothing"] {
        let (code, _) = refused(proxy.addr, &format!("/?token={bad}"), "").await;
        assert_eq!(code, 404, "{bad}");
    }
    works(proxy.addr, "vm1").await;
}

#[tokio::test]
async fn host_token_takes_the_host_header_without_its_port() {
    let dir = TempDir::new("hosttoken");
    let target = echo_target().await;
    let file = dir.path("tokens");
    std::fs::write(&file, format!("desk1.example: {target}\n::1: {target}\n")).unwrap();
    let proxy = Proxy::start(&[
        "--token-plugin",
        "TokenFile",
        "--token-source",
        file.to_str().unwrap(),
        "--host-token",
        "127.0.0.1:0",
    ]);
    for host in ["desk1.example:6080", "desk1.example", "[::1]:6080"] {
        let raw = Raw::connect(proxy.addr).await;
        let (mut raw, head) = raw.send_upgrade("/", &format!("Host: {host}\r\n")).await;
        assert_eq!(status(&head), 101, "{host}: {head}");
        raw.echo(host.as_bytes()).await;
    }
    let raw = Raw::connect(proxy.addr).await;
    let (mut raw, head) = raw.send_upgrade("/?token=desk1.example", "Host: other:6080\r\n").await;
    assert_eq!(status(&head), 404, "the query is not read with --host-token");
    raw.read_body(&head).await;
}

/// A token API: `/plain/TOKEN` answers `host:port`, `/json/TOKEN` JSON, `/slow/...` never answers,
/// anything else 404. Counts the connections it accepts (pooling keeps that at one).
async fn token_api(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let (status, body) = if path == "/plain/good" {
                        ("200 OK", format!("{target}"))
                    } else if path == "/json/good" {
                        (
                            "200 OK",
                            format!(r#"{{"host": "127.0.0.1", "port": {}}}"#, target.port()),
                        )
                    } else if path == "/json/a%20b%2Fc" {
                        (
                            "200 OK",
                            format!(r#"{{"host": "127.0.0.1", "port": "{}"}}"#, target.port()),
                        )
                    } else if path.starts_with("/slow/") {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    } else {
                        ("404 Not Found", "no such token".to_owned())
                    };
                    let reply = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn token_apis_pool_connections_and_answer_503_when_the_api_cannot() {
    let target = echo_target().await;
    let (api, connections) = token_api(target).await;
    let plain = Proxy::start(&[
        "--token-plugin",
        "BaseTokenAPI",
        "--token-source",
        &format!("http://{api}/plain/%s"),
        "127.0.0.1:0",
    ]);
    let json = Proxy::start(&[
        "--token-plugin",
        "JSONTokenApi",
        "--token-source",
        &format!("http://{api}/json/%s"),
        "127.0.0.1:0",
    ]);
    for _ in 0..3 {
        works(plain.addr, "good").await;
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "three lookups, one kept-alive connection"
    );
    works(json.addr, "good").await;
    works(json.addr, "a%20b%2Fc").await;
    assert_eq!(refused(plain.addr, "/?token=bad", "").await.0, 404);

    let slow = Proxy::start(&[
        "--token-plugin",
        "JSONTokenApi",
        "--token-source",
        &format!("http://{api}/slow/%s"),
        "--token-timeout",
        "1",
        "127.0.0.1:0",
    ]);
    let started = Instant::now();
    let (code, body) = refused(slow.addr, "/?token=x", "").await;
    assert_eq!(code, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(body.contains("did not answer within 1s"), "{body}");

    let closed = free_port();
    let down = Proxy::start(&[
        "--token-plugin",
        "BaseTokenAPI",
        "--token-source",
        &format!("http://127.0.0.1:{closed}/%s"),
        "127.0.0.1:0",
    ]);
    let (code, body) = refused(down.addr, "/?token=x", "").await;
    assert_eq!(code, 503, "{body}");
    // Each proxy still serves after its failures.
    works(plain.addr, "good").await;
}

/// Signs `claims` with `openssl` for the PEM key kinds rcgen does not make (RSA, Ed25519).
fn openssl_key(dir: &TempDir, name: &str, args: &[&str]) -> std::path::PathBuf {
    let path = dir.path(name);
    let status = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl genpkey {args:?}");
    path
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn jwt_tokens_with_rsa_ec_ed25519_and_hmac_keys() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = TempDir::new("jwt");
    let target = echo_target().await;
    let claims = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({"host": "127.0.0.1", "port": target.port()});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };

    let rsa = openssl_key(
        &dir,
        "rsa.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ed = openssl_key(&dir, "ed.pem", &["-algorithm", "ED25519"]);
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    std::fs::write(dir.path("ec-public.pem"), ec.public_key_pem()).unwrap();
    let secret = b"0123456789abcdef0123456789abcdef";
    let k = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret);
    std::fs::write(dir.path("hmac.key"), format!("{k}\n")).unwrap();

    let rsa_key = EncodingKey::from_rsa_pem(&std::fs::read(&rsa).unwrap()).unwrap();
    let cases = [
        ("rsa.pem", Algorithm::RS256, rsa_key.clone()),
        ("rsa.pem", Algorithm::PS384, rsa_key),
        (
            "ed.pem",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&std::fs::read(&ed).unwrap()).unwrap(),
        ),
        (
            "ec-public.pem",
            Algorithm::ES384,
            EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        ),
        ("hmac.key", Algorithm::HS256, EncodingKey::from_secret(secret)),
    ];
    for (key_file, alg, key) in cases {
        let proxy = Proxy::start(&[
            "--token-plugin",
            "JWTTokenApi",
            "--token-source",
            dir.path(key_file).to_str().unwrap(),
            "127.0.0.1:0",
        ]);
        let sign = |claims: &serde_json::Value| encode(&Header::new(alg), claims, &key).unwrap();
        works(proxy.addr, &sign(&claims(serde_json::json!({"exp": now() + 600})))).await;
        let expired = sign(&claims(serde_json::json!({"exp": now() - 600})));
        let (code, body) = refused(proxy.addr, &format!("/?token={expired}"), "").await;
        assert_eq!((code, body.trim()), (404, "Token expired"), "{key_file}");
        let early = sign(&claims(serde_json::json!({"nbf": now() + 600})));
        assert_eq!(refused(proxy.addr, &format!("/?token={early}"), "").await.0, 404);
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims(serde_json::json!({})),
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert_eq!(
            refused(proxy.addr, &format!("/?token={forged}"), "").await.0,
            404,
            "{key_file}"
        );
        let (code, body) = refused(proxy.addr, "/?token=eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "").await;
        assert_eq!((code, body.trim()), (404, "encrypted tokens are not supported"));
        works(proxy.addr, &sign(&claims(serde_json::json!({})))).await;
    }
}

#[tokio::test]
async fn token_redis_survives_a_redis_restart_and_is_shared_by_two_instances() {
    let mut redis = Redis::start();
    let target = echo_target().await;
    let source = format!("127.0.0.1:{}:0::consoles", redis.port);
    let args = [
        "--token-plugin",
        "TokenRedis",
        "--token-source",
        &source,
        "--token-timeout",
        "2",
        "127.0.0.1:0",
    ];
    let a = Proxy::start(&args);
    let b = Proxy::start(&args);
    // Set after both started: both route it.
    assert_eq!(
        redis.command(&["SET", "consoles:json", &format!(r#"{{"host": "{target}"}}"#)]),
        "+OK"
    );
    assert_eq!(redis.command(&["SET", "consoles:plain", &target.to_string()]), "+OK");
    assert_eq!(
        redis.command(&["SET", "plain-without-namespace", &target.to_string()]),
        "+OK"
    );
    for proxy in [&a, &b] {
        works(proxy.addr, "json").await;
        works(proxy.addr, "plain").await;
        assert_eq!(refused(proxy.addr, "/?token=plain-without-namespace", "").await.0, 404);
    }

    // An open session keeps relaying while Redis is down; new ones get 503 within the timeout.
    let (mut open, head) = Raw::upgrade_to(a.addr, "/?token=json", "").await;
    assert_eq!(status(&head), 101);
    redis.stop();
    let started = Instant::now();
    let (code, body) = refused(a.addr, "/?token=json", "").await;
    assert_eq!(code, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    open.echo(b"relayed while Redis is down").await;

    redis.restart();
    assert_eq!(redis.command(&["SET", "consoles:back", &target.to_string()]), "+OK");
    // The first connection after the restart already works, on both instances.
    works(a.addr, "back").await;
    works(b.addr, "back").await;
}
