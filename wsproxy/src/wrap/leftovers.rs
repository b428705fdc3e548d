//! Processes of a wrapped command that left its process group.
//!
//! Daemonizing servers (`vncserver` forks, calls `setsid` and lets its parent exit) escape
//! `killpg`, and websockify leaves them running when it stops. Every process of the command
//! inherits the environment, so wsproxy marks it with `WSPROXY_WRAPPED=<wsproxy's pid>` and finds
//! the escaped ones by that mark in `/proc/PID/environ` when it stops the command. A process that
//! rewrote its environment, or one owned by another user, is not found.

use std::fs;

use nix::unistd::Pid;

/// The variable that marks every process of the command.
pub const MARK_VAR: &str = "WSPROXY_WRAPPED";

/// The mark's value: this wsproxy's process id.
pub fn mark_value() -> String {
    std::process::id().to_string()
}

/// Live processes whose environment carries the mark of the wsproxy with process id `wsproxy`
/// (zombies have an empty environment and are skipped).
pub fn marked(wsproxy: u32) -> Vec<Pid> {
    carrying(&format!("{MARK_VAR}={wsproxy}"))
}

/// Live processes whose environment holds the variable `needle` (`NAME=value`), such as an
/// on-demand session's `WSPROXY_SESSION` mark.
pub fn carrying(needle: &str) -> Vec<Pid> {
    let needle = needle.as_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|&b| b == 0).any(|var| var == needle))
        })
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_marked_child_and_not_others() {
        let mut marked_child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARK_VAR, mark_value())
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .env(MARK_VAR, "1")
            .spawn()
            .unwrap();
        let want = Pid::from_raw(i32::try_from(marked_child.id()).unwrap());
        // Until the child has exec'd, /proc shows the environment it was forked with: look again,
        // for at most 5 s (a loaded machine is slow to exec).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = marked(std::process::id());
        while !found.contains(&want) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = marked(std::process::id());
        }
        let _ = (marked_child.kill(), other.kill());
        let _ = (marked_child.wait(), other.wait());
        assert!(found.contains(&want), "{found:?}");
        let not = Pid::from_raw(i32::try_from(other.id()).unwrap());
        assert!(!found.contains(&not), "{found:?}");
        assert!(!found.contains(&Pid::this()), "{found:?}");
    }
}
