//! A smoke run of `wsproxy-bench all`, seconds long: every scenario against the baseline and the
//! built-in raw relay, plus wsproxy when a build of it is at hand. It checks that the harness
//! works end to end (table, targets, JSON), not any number: performance is judged by `make bench`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A wsproxy binary built earlier in this workspace, if any.
fn wsproxy() -> Option<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("wsproxy"))
        .find(|path| path.is_file())
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
    let with_wsproxy = wsproxy();
    if let Some(path) = &with_wsproxy {
        command
            .arg("--proxy")
            .arg(format!("wsproxy={} 127.0.0.1:{{listen}} {{target}}", path.display()));
    }
    let output = command.output().expect("run wsproxy-bench");
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
        assert!(stdout.contains("targets (issue 5)"), "{stdout}");
    }
}
