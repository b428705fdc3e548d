//! A smoke run of `wsproxy-bench all`, seconds long: every scenario against the baseline and the
//! built-in raw relay, plus wsproxy when a build of it is at hand, then with tokens (a small token
//! file, and Redis when redis-server is installed); and of `wsproxy-bench sessions` and
//! `wsproxy-bench cluster` through that wsproxy. It checks that the harness works end to end (table, targets, JSON, cleaning up), not
//! any number: performance is judged by `make bench`.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Tokens in the smoke run's sources.
const TOKENS: u32 = 50;

/// A wsproxy binary built earlier in this workspace, if any.
/// The wsproxy the smoke runs measure (`cargo test --workspace` builds target/debug/wsproxy).
fn wsproxy() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("wsproxy"))
        .find(|path| path.is_file())
        .expect("no build of wsproxy in target/: run `cargo build -p wsproxy` (cargo test --workspace builds it)")
}

fn redis_server_installed() -> bool {
    let installed = Command::new("redis-server").arg("--version").output().is_ok();
    assert!(installed, "redis-server is not installed: `make deps` installs it");
    installed
}

#[test]
fn every_scenario_runs_and_reports() {
    let bench = env!("CARGO_BIN_EXE_wsproxy-bench");
    let json = std::env::temp_dir().join(format!("wsproxy-bench-smoke-{}.json", std::process::id()));
    let mut command = Command::new(bench);
    command.args([
        "all",
        "--size-mib",
        "4",
        "--rounds",
        "1",
        "--round-trips",
        "200",
        "--rtt-conns",
        "4",
        "--rtt-secs",
        "1",
        "--connects-secs",
        "1",
        "--connects-concurrency",
        "4",
        "--idle-conns",
        "50",
        "--json",
    ]);
    command.arg(&json);
    command
        .arg("--proxy")
        .arg(format!("raw-relay={bench} relay 127.0.0.1:{{listen}} {{ws-target}}"));
    let with_wsproxy = Some(wsproxy());
    let with_redis = redis_server_installed();
    if let Some(path) = &with_wsproxy {
        let path = path.display();
        command
            .arg("--proxy")
            .arg(format!("wsproxy={path} 127.0.0.1:{{listen}} {{target}}"))
            .args(["--tokens", &TOKENS.to_string(), "--token-proxy"])
            .arg(format!(
                "wsproxy={path} --token-plugin TokenFile --token-source {{token-file}} 127.0.0.1:{{listen}}"
            ));
        if with_redis {
            command.arg("--token-proxy").arg(format!(
                "wsproxy={path} --token-plugin TokenRedis --token-source {{redis}} 127.0.0.1:{{listen}}"
            ));
        }
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wsproxy-bench");
    // Where its token sources were (tokens::Tokens): gone once it has exited.
    let token_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/bench-tokens.{}", child.id()));
    let output = child.wait_with_output().expect("wait for wsproxy-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for row in [
        "target → browser",
        "browser → target",
        "round trip p50",
        "round trips, 4 conns",
        "connects, 4 at a time",
        "idle conns held",
        "CPU per GiB down",
    ] {
        assert!(stdout.contains(row), "no `{row}` row:\n{stdout}");
    }
    assert!(!stdout.contains("failed"), "a peer failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let held = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "idle_held")
        .unwrap();
    assert_eq!(held["peers"]["raw-relay"]["median"], 50.0, "{held}");
    if with_wsproxy.is_some() {
        assert_eq!(held["peers"]["wsproxy"]["median"], 50.0, "{held}");
        assert!(stdout.contains("targets (issue 5"), "{stdout}");
        let mut plugins = vec![("TokenFile", "connects_token_file")];
        if with_redis {
            plugins.push(("TokenRedis", "connects_token_redis"));
        } else {
            eprintln!("redis-server is not installed: TokenRedis not run");
        }
        for (plugin, key) in plugins {
            assert!(
                stdout.contains(&format!("connects, {plugin}, {TOKENS} tokens")),
                "{stdout}"
            );
            assert!(
                stdout.contains(&format!("{plugin} connects/s ≥")),
                "no {plugin} target:\n{stdout}"
            );
            let row = report["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["key"] == key)
                .unwrap();
            let rate = row["peers"]["wsproxy"]["median"].as_f64().unwrap_or_default();
            assert!(rate > 0.0, "{row}");
            assert!(row["peers"]["wsproxy"]["ratio_to_connects"].is_f64(), "{row}");
        }
        assert!(!token_dir.exists(), "{} was left behind", token_dir.display());
    }
}

/// Processes running `bench echo-server ...` (this test's binary): none may outlive a run.
fn echo_servers(bench: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| {
            cmdline
                .split(|&b| b == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect::<Vec<_>>()
        })
        .filter(|args| args.len() >= 2 && args[0] == bench && args[1] == "echo-server")
        .map(|args| args.join(" "))
        .collect()
}

/// A smoke run of `wsproxy-bench sessions` when a build of wsproxy is at hand: a few launches of
/// `wsproxy-bench echo-server` through it and alone, and a second of reservations; the rows, the
/// targets and the JSON are there, and nothing it started is left.
#[test]
fn the_sessions_scenario_runs_and_reports() {
    let wsproxy = wsproxy();
    let bench = env!("CARGO_BIN_EXE_wsproxy-bench");
    let json = std::env::temp_dir().join(format!("wsproxy-bench-sessions-smoke-{}.json", std::process::id()));
    let child = Command::new(bench)
        .args([
            "sessions",
            "--rounds",
            "1",
            "--launches",
            "3",
            "--reserve-conns",
            "2",
            "--reserve-secs",
            "1",
            "--json",
        ])
        .arg(&json)
        .arg("--proxy")
        .arg(format!(
            "wsproxy={} --sessions {{services}} 127.0.0.1:{{listen}}",
            wsproxy.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wsproxy-bench sessions");
    let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/bench-sessions.{}", child.id()));
    let output = child.wait_with_output().expect("wait for wsproxy-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for row in [
        "launch through the proxy, upgrade → first echo (ms)",
        "launch through the proxy, upgrade → first echo, p90 (ms)",
        "the command alone, exec → listening (ms)",
        "launch overhead (each launch − the start before it) (ms)",
        "reservations, 2 keep-alive conns (/s)",
        "launch overhead ≤ 20 ms",
        "reservations ≥ 5000/s",
    ] {
        assert!(stdout.contains(row), "no `{row}`:\n{stdout}");
    }
    assert!(!stdout.contains("failed"), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let metric = |key: &str| {
        report["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))["peers"]["wsproxy"]
            .clone()
    };
    for key in ["launch", "launch_alone", "launch_overhead"] {
        let runs = metric(key)["runs"].as_array().unwrap().len();
        assert_eq!(runs, 3, "{key}: {}", metric(key));
    }
    assert!(metric("launch")["median"].as_f64().unwrap() > 0.0);
    assert!(metric("launch_alone")["median"].as_f64().unwrap() > 0.0);
    assert!(metric("reservations")["median"].as_f64().unwrap() > 0.0);
    assert_eq!(report["targets"].as_array().unwrap().len(), 2, "{}", report["targets"]);
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
    let left = echo_servers(bench);
    assert!(left.is_empty(), "left running: {left:?}");
}

/// A smoke run of `wsproxy-bench cluster` (needs redis-server and a build of wsproxy): one round
/// through one instance and through two sharing a redis-server, a few connects and round trips
/// through the instance that launched the session and through the other; the rows, the target and
/// the JSON are there, and nothing it started is left.
#[test]
fn the_cluster_scenario_runs_and_reports() {
    let wsproxy = wsproxy();
    redis_server_installed();
    let bench = env!("CARGO_BIN_EXE_wsproxy-bench");
    let json = std::env::temp_dir().join(format!("wsproxy-bench-cluster-smoke-{}.json", std::process::id()));
    let child = Command::new(bench)
        .args([
            "cluster",
            "--rounds",
            "1",
            "--instances",
            "2",
            "--reserve-conns",
            "4",
            "--reserve-secs",
            "1",
            "--connects",
            "5",
            "--round-trips",
            "50",
            "--json",
        ])
        .arg(&json)
        .arg("--proxy")
        .arg(format!(
            "wsproxy={} --sessions {{services}} 127.0.0.1:{{listen}}",
            wsproxy.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wsproxy-bench cluster");
    let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/bench-cluster.{}", child.id()));
    let output = child.wait_with_output().expect("wait for wsproxy-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for row in [
        "reservations, 4 keep-alive conns, 1 instance (/s)",
        "reservations, 4 keep-alive conns, 2 instances (/s)",
        "redis-server CPU per reservation, 2 instances (µs)",
        "round trip via another instance, p50 (µs)",
        "round trip, extra when forwarded, p99 (µs)",
        "connect → first echo via the owner, p50 (ms)",
        "connect → first echo, extra when forwarded, p50 (ms)",
        "reservations through 2 instances ≥ through 1 (ratio)",
    ] {
        assert!(stdout.contains(row), "no `{row}`:\n{stdout}");
    }
    assert!(!stdout.contains("failed"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("still taken"), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let median = |key: &str| {
        report["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))["peers"]["wsproxy"]["median"]
            .as_f64()
            .unwrap_or_else(|| panic!("no median of {key} in {report}"))
    };
    for key in [
        "cluster_reservations_one",
        "cluster_reservations_many",
        "cluster_rtt_owner_p50",
        "cluster_rtt_other_p99",
        "cluster_connect_owner_p99",
        "cluster_connect_other_p50",
    ] {
        assert!(median(key) > 0.0, "{key}: {}", median(key));
    }
    assert_eq!(report["targets"].as_array().unwrap().len(), 1, "{}", report["targets"]);
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
    let left = echo_servers(bench);
    assert!(left.is_empty(), "left running: {left:?}");
}
