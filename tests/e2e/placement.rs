//! Placement of on-demand sessions on several hosts: a real sshd on loopback addresses (127.0.0.2
//! and 127.0.0.3 are the hosts), commands launched through `ssh`, weighted least-sessions, a drained
//! host, a host that cannot launch (retried on the next), and weights shared through Redis.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sessions::{ECHO, api};
use crate::util::*;

/// sshd on `127.0.0.1`, `127.0.0.2` and `127.0.0.3` at one free port, with a throwaway host key
/// and a throwaway client key for root.
struct Sshd {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = TempDir::new("sshd");
        let keygen = |file: &str| {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.path(file))
                .status()
                .expect("ssh-keygen (openssh-client)");
            assert!(status.success());
        };
        keygen("host_key");
        keygen("id");
        std::fs::copy(dir.path("id.pub"), dir.path("authorized_keys")).unwrap();
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nListenAddress 127.0.0.3\n\
                 HostKey {}\nAuthorizedKeysFile {}\nPidFile none\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
                dir.path("host_key").display(),
                dir.path("authorized_keys").display()
            );
            std::fs::write(dir.path("sshd_config"), config).unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(dir.path("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start sshd (openssh-server; make deps installs it)");
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                if banner(port) {
                    return Sshd { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start on any of 5 ports");
    }

    /// The launcher prefix for the services file.
    fn launcher(&self) -> String {
        format!(
            r#"["ssh", "-tt", "-q", "-F", "/dev/null", "-i", "{}", "-p", "{}", "-oBatchMode=yes", "-oStrictHostKeyChecking=no", "-oUserKnownHostsFile=/dev/null", "-oConnectTimeout=5", "root@{{address}}", "--"]"#,
            self.dir.path("id").display(),
            self.port
        )
    }
}

/// Whether our sshd answers with its banner on every host address.
fn banner(port: u16) -> bool {
    ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().all(|host| {
        std::net::TcpStream::connect((*host, port)).is_ok_and(|mut stream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 7];
            std::io::Read::read_exact(&mut stream, &mut buf).is_ok() && &buf == b"SSH-2.0"
        })
    })
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Echo processes started from `echo` (this test's copy), wherever their parent is.
fn echo_processes(echo: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"python3")) && args.contains(&echo.as_bytes())
            })
        })
        .count()
}

async fn launch(addr: SocketAddr, service: &str) -> (String, Raw) {
    let (id, _, raw) = launch_with_token(addr, service).await;
    (id, raw)
}

async fn launch_with_token(addr: SocketAddr, service: &str) -> (String, String, Raw) {
    let body = format!(r#"{{"service": "{service}"}}"#);
    let (code, head, json) = api(addr, "POST", "/api/v1/sessions", Some("root-token"), Some(&body)).await;
    assert_eq!(code, 201, "{head}\n{json}");
    let token = json["token"].as_str().unwrap();
    let (mut raw, head) = Raw::upgrade_to(addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "{head}");
    raw.echo(format!("hello from a {service} session").as_bytes()).await;
    (json["id"].as_str().unwrap().to_owned(), token.to_owned(), raw)
}

async fn state(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (code, _, json) = api(addr, "GET", &format!("/api/v1/sessions/{id}"), Some("root-token"), None).await;
    assert_eq!(code, 200, "{json}");
    json
}

async fn hosts(addr: SocketAddr) -> serde_json::Value {
    let (code, _, json) = api(addr, "GET", "/api/v1/hosts", Some("root-token"), None).await;
    assert_eq!(code, 200, "{json}");
    json
}

fn sessions_on(hosts: &serde_json::Value, name: &str) -> u64 {
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .and_then(|h| h["sessions"].as_u64())
        .unwrap_or_else(|| panic!("no host {name} in {hosts}"))
}

async fn host_of(addr: SocketAddr, id: &str) -> String {
    let hosts = hosts(addr).await;
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["session_ids"].as_array().unwrap().iter().any(|s| s == id))
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("session {id} on no host: {hosts}"))
}

#[tokio::test]
async fn sessions_are_placed_by_weight_over_ssh_and_weights_are_shared() {
    let sshd = Sshd::start();
    let redis = Redis::start();
    let dir = TempDir::new("placement");
    std::fs::write(dir.path("echo.py"), ECHO).unwrap();
    let echo = dir.path("echo.py").display().to_string();
    let services = format!(
        "[sessions]\nstore = \"redis://127.0.0.1:{}/0?namespace=p1\"\n\n\
         [[api.token]]\ntoken = \"root-token\"\nscopes = [\"admin\"]\nuser = \"root\"\n\n\
         [[service]]\nname = \"desk\"\ncount = 6\nlauncher = {launcher}\n\
         hosts = [{{ name = \"blade1\", address = \"127.0.0.2\", weight = 2 }}, {{ name = \"blade2\", address = \"127.0.0.3\" }}]\n\
         command = [\"python3\", \"{echo}\", \"announce-on\", \"{{address}}\"]\n\
         target = {{ announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }}\n\n\
         [[service]]\nname = \"flaky\"\ncount = 1\nlauncher = {launcher}\n\
         hosts = [{{ name = \"nowhere\", address = \"127.0.0.9\" }}, {{ name = \"blade2\", address = \"127.0.0.3\" }}]\n\
         command = [\"python3\", \"{echo}\", \"announce-on\", \"{{address}}\"]\n\
         target = {{ announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }}\n",
        redis.port,
        launcher = sshd.launcher(),
    );
    std::fs::write(dir.path("services.toml"), services).unwrap();
    let file = dir.path("services.toml").display().to_string();
    let a = Proxy::start(&["--sessions", &file, "127.0.0.1:0"]);
    let b = Proxy::start(&["--sessions", &file, "127.0.0.1:0"]);

    // Weighted least-sessions: blade1 (weight 2) takes two of the first three.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(launch(a.addr, "desk").await);
    }
    let placed = hosts(b.addr).await;
    assert_eq!(
        (sessions_on(&placed, "blade1"), sessions_on(&placed, "blade2")),
        (2, 1),
        "{placed}"
    );
    // The commands run under sshd, on the hosts' addresses: wsproxy relays to 127.0.0.2/3.
    assert_eq!(echo_processes(&echo), 3);
    let lines = a.lines();
    assert!(lines.iter().any(|l| l.contains("listening at 127.0.0.2:")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("listening at 127.0.0.3:")), "{lines:?}");
    // A client through the other instance is relayed too.
    for (id, raw) in &mut open {
        raw.echo(id.as_bytes()).await;
    }

    // Drained through B, for every instance: A's next launches go to blade2 only.
    let (code, _, json) = api(
        b.addr,
        "PATCH",
        "/api/v1/hosts/blade1",
        Some("root-token"),
        Some(r#"{"weight": 0}"#),
    )
    .await;
    assert_eq!((code, json["weight"].as_u64()), (200, Some(0)), "{json}");
    let (id, _fourth) = launch(a.addr, "desk").await;
    assert_eq!(host_of(a.addr, &id).await, "blade2");
    let (id, _fifth) = launch(a.addr, "desk").await;
    assert_eq!(host_of(b.addr, &id).await, "blade2");
    let placed = hosts(a.addr).await;
    assert_eq!(
        (sessions_on(&placed, "blade1"), sessions_on(&placed, "blade2")),
        (2, 3),
        "running ones stay: {placed}"
    );
    let (code, _, json) = api(
        a.addr,
        "PATCH",
        "/api/v1/hosts/nosuch",
        Some("root-token"),
        Some(r#"{"weight": 1}"#),
    )
    .await;
    assert_eq!(
        (code, json["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{json}"
    );

    // A client through B of a session A runs on a host: B relays it to the host directly (no
    // forwarding through A), and the session lives until the last client, wherever, leaves.
    let (id, token, on_a) = launch_with_token(a.addr, "desk").await;
    let (mut on_b, head) = Raw::upgrade_to(b.addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "{head}");
    on_b.echo(b"relayed by B straight to the host").await;
    assert_eq!(state(a.addr, &id).await["clients"], 2);
    assert!(
        !a.lines().iter().any(|l| l.contains("forwarded client")),
        "B did not go through A"
    );
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        state(b.addr, &id).await["state"],
        "running",
        "B's client keeps it running"
    );
    on_b.echo(b"still relayed").await;
    drop(on_b);
    let deadline = Instant::now() + WAIT;
    loop {
        let json = state(a.addr, &id).await;
        if json["state"] == "stopped" {
            assert_eq!(json["reason"], "the last client left", "{json}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never stopped after the last (remote) client left: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A host where ssh cannot even connect: the launch is retried once on the next host.
    let (id, mut flaky) = launch(a.addr, "flaky").await;
    assert_eq!(host_of(a.addr, &id).await, "blade2");
    flaky.echo(b"after a retry").await;

    // Stopping sessions stops their commands on the hosts (ssh goes, sshd hangs up on them).
    for (id, _) in &open {
        let (code, _, json) = api(
            b.addr,
            "DELETE",
            &format!("/api/v1/sessions/{id}"),
            Some("root-token"),
            None,
        )
        .await;
        assert_eq!(code, 204, "{json}");
    }
    let deadline = Instant::now() + WAIT;
    while echo_processes(&echo) > 3 {
        assert!(
            Instant::now() < deadline,
            "commands of stopped sessions still run on their hosts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shared console on another host is not relayed there directly by the other instances (its
/// command takes one connection): their clients are forwarded to the instance that launched it,
/// which fans the one connection out.
#[tokio::test]
async fn a_shared_console_on_a_host_is_forwarded_to_its_owner_not_relayed_directly() {
    use crate::cluster::{ONE_CONNECTION, expect_output};
    let sshd = Sshd::start();
    let redis = Redis::start();
    let dir = TempDir::new("placement");
    std::fs::write(dir.path("console.py"), ONE_CONNECTION).unwrap();
    let connections = dir.path("connections");
    let services = format!(
        "[sessions]\nstore = \"redis://127.0.0.1:{}/0?namespace=p2\"\nlinger = 0\n\n\
         [[api.token]]\ntoken = \"root-token\"\nscopes = [\"admin\"]\nuser = \"root\"\n\n\
         [[service]]\nname = \"console\"\ncount = 1\nshare = true\nlauncher = {launcher}\n\
         hosts = [{{ name = \"blade1\", address = \"127.0.0.2\" }}]\n\
         command = [\"python3\", \"{}\", \"{}\", \"{{address}}\"]\n\
         target = {{ announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }}\n",
        redis.port,
        dir.path("console.py").display(),
        connections.display(),
        launcher = sshd.launcher(),
    );
    std::fs::write(dir.path("services.toml"), services).unwrap();
    let file = dir.path("services.toml").display().to_string();
    let mut a = Proxy::start(&["--sessions", &file, "127.0.0.1:0"]);
    let b = Proxy::start(&["--sessions", &file, "127.0.0.1:0"]);

    let (code, head, json) = api(
        a.addr,
        "POST",
        "/api/v1/sessions",
        Some("root-token"),
        Some(r#"{"service": "console"}"#),
    )
    .await;
    assert_eq!(code, 201, "{head}\n{json}");
    let token = json["token"].as_str().unwrap();
    let (mut on_a, head) = Raw::upgrade_to(a.addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "{head}");
    expect_output(&mut on_a, b"connection 1\n").await;
    let lines = a.lines();
    assert!(lines.iter().any(|l| l.contains("listening at 127.0.0.2:")), "{lines:?}");

    let (mut on_b, head) = Raw::upgrade_to(b.addr, &format!("/websockify?token={token}"), "").await;
    assert_eq!(status(&head), 101, "{head}");
    expect_output(&mut on_b, b"connection 1\n").await;
    on_b.send_frame(0x82, b"through b;", true).await;
    expect_output(&mut on_b, b"THROUGH B;").await;
    expect_output(&mut on_a, b"THROUGH B;").await;
    on_a.send_frame(0x82, b"on a;", true).await;
    expect_output(&mut on_a, b"ON A;").await;
    expect_output(&mut on_b, b"ON A;").await;
    a.wait_line("open: forwarded client of session", WAIT);
    assert_eq!(
        std::fs::read_to_string(&connections).unwrap(),
        "1",
        "the console on the host was connected to more than once"
    );
}
