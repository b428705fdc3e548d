//! Starting a command through librebind.so and stopping its whole process group: shared by wrap
//! mode and on-demand sessions.
//!
//! `rebound` passes the report pipe's write end and the library's shared-port memfd to the command
//! (cleared of `FD_CLOEXEC` only for the spawn, closed in wsproxy right after): the library moves
//! the command's bind of `port` to a loopback port the kernel picks and writes the address to the
//! pipe. `stop_group` sends SIGTERM to the group and to the processes carrying the command's
//! mark (daemons that left the group, see `leftovers`), then SIGKILL after the grace period.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, pipe2};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::warn;

use crate::wrap::{leftovers, preload};

/// Spawns `command` with librebind.so moving its bind of `port`; returns the child and the read end
/// of the report pipe (one address per line).
pub fn rebound(mut command: Command, lib: &Path, port: u16) -> std::io::Result<(Child, pipe::Receiver)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    let reader = pipe::Receiver::from_owned_fd(read)?;
    let state = memfd_create(c"rebind-state", MFdFlags::MFD_CLOEXEC)?;
    for fd in [&write, &state] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    }
    let existing = std::env::var_os("LD_PRELOAD");
    let fds = preload::Fds {
        report: write.as_raw_fd(),
        state: state.as_raw_fd(),
    };
    for (key, value) in preload::child_env(lib, existing.as_deref(), port, fds) {
        command.env(key, value);
    }
    let spawned = command.spawn();
    drop((write, state));
    Ok((spawned?, reader))
}

/// SIGTERM to the group `pgid` and to the processes whose environment holds `mark` (`NAME=value`),
/// SIGKILL to whatever is left after `grace`; the leader is reaped.
pub async fn stop_group(child: &mut Child, pgid: Pid, mark: &str, grace: Duration) {
    signal_all(pgid, mark, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    let _ = tokio::time::timeout_at(deadline, child.wait()).await;
    // Processes of the group that are not our children are reaped by their parent or init.
    while killpg(pgid, None).is_ok() || !leftovers::carrying(mark).is_empty() {
        if Instant::now() >= deadline {
            warn!("processes of the command outlived the grace period {grace:?}; killing them");
            signal_all(pgid, mark, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
}

fn signal_all(pgid: Pid, mark: &str, signal: Signal) {
    let _ = killpg(pgid, signal);
    for pid in leftovers::carrying(mark) {
        let _ = kill(pid, signal);
    }
}
