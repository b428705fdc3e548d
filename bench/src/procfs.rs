//! What the benchmark reads about the proxies from /proc: memory and CPU time of a process
//! group (a proxy and whatever it forked), and the benchmark's own CPU time.

use std::time::Duration;

/// The pids of the processes whose process group is `group`.
fn members(group: i32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()))
        .filter(|pid| {
            // Processes come and go while we look: one that vanished is simply not counted.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| process_group(&stat) == Some(group))
        })
        .collect()
}

/// Memory of a process group, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub processes: usize,
}

impl Memory {
    /// Sums `/proc/PID/smaps_rollup` over every process whose process group is `group`.
    pub fn of_group(group: i32) -> Result<Memory, String> {
        let mut total = Memory::default();
        for pid in members(group) {
            let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
                continue;
            };
            let one = Memory::parse_rollup(&rollup);
            total.rss_kib += one.rss_kib;
            total.pss_kib += one.pss_kib;
            total.processes += 1;
        }
        match total.processes {
            0 => Err(format!("no process of group {group} is left")),
            _ => Ok(total),
        }
    }

    fn parse_rollup(text: &str) -> Memory {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("Rss:"),
            pss_kib: field("Pss:"),
            processes: 1,
        }
    }
}

/// The process group in a `/proc/PID/stat` line: the third field after the command name (which
/// is in parentheses and may itself contain spaces and parentheses).
fn process_group(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// CPU time (user + system) of the processes in `group`, or of this process for `None`.
///
/// Per process, the larger of two readings: the sum over its live threads of
/// `/proc/PID/task/TID/schedstat` (nanoseconds, so runs of a tenth of a second are measured
/// well) and `utime + stime` from `/proc/PID/stat` (clock ticks, but it keeps the time of threads
/// that have exited); plus `cutime + cstime`, the time of children it has reaped (socat and
/// websockify fork a process per connection, which exits with the connection).
pub fn cpu(group: Option<i32>) -> Duration {
    let pids = match group {
        Some(group) => members(group),
        None => vec![std::process::id()],
    };
    pids.iter().map(|&pid| process_cpu(pid)).sum()
}

/// `/proc/PID/stat` counts in USER_HZ, which Linux fixes at 100 for every architecture's ABI.
const TICK: Duration = Duration::from_millis(10);

/// CPU time (user + system) of one process, as `cpu` counts it.
pub fn process_cpu(pid: u32) -> Duration {
    let live: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flat_map(|tasks| tasks.flatten())
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let (own, children) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_times(&stat))
        .unwrap_or_default();
    Duration::from_nanos(live).max(TICK * own) + TICK * children
}

/// `utime + stime` and `cutime + cstime` from a `/proc/PID/stat` line, in ticks.
fn stat_times(stat: &str) -> Option<(u32, u32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<u32> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    match fields[..] {
        [utime, stime, cutime, cstime] => Some((utime + stime, cutime + cstime)),
        _ => None,
    }
}

/// CPU time spent by the benchmark and by the proxy between two readings.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub bench: Duration,
    pub proxy: Duration,
}

/// A reading of the CPU time of the benchmark and of a proxy's group.
#[derive(Clone, Copy)]
pub struct CpuMark {
    group: Option<i32>,
    bench: Duration,
    proxy: Duration,
}

impl CpuMark {
    pub fn now(group: Option<i32>) -> CpuMark {
        CpuMark {
            group,
            bench: cpu(None),
            proxy: group.map(|g| cpu(Some(g))).unwrap_or_default(),
        }
    }

    /// What was spent since this reading. A forked child that exited in between is not
    /// counted (its time went to a parent that never waited for it).
    pub fn since(&self) -> CpuUse {
        let now = CpuMark::now(self.group);
        CpuUse {
            bench: now.bench.saturating_sub(self.bench),
            proxy: now.proxy.saturating_sub(self.proxy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_rollup_are_parsed() {
        let stat = "1234 (web (socket) x) S 1 1200 1200 0 -1 4194560 100";
        assert_eq!(process_group(stat), Some(1200));
        let rollup = "55d0-7ffd ---p 00000000 00:00 0   [rollup]\nRss:                5120 kB\nPss:                4100 kB\nPss_Dirty:          3000 kB\n";
        let memory = Memory::parse_rollup(rollup);
        assert_eq!((memory.rss_kib, memory.pss_kib), (5120, 4100));
        let stat = "77 (a) b) S 1 77 77 0 -1 4194560 10 0 0 0 250 40 7 3 20 0 1 0";
        assert_eq!(stat_times(stat), Some((290, 10)));
    }

    #[test]
    fn this_process_is_found_in_its_own_group_and_spends_cpu() {
        let group = nix::unistd::getpgrp().as_raw();
        let memory = Memory::of_group(group).unwrap();
        assert!(memory.processes >= 1 && memory.rss_kib > 0, "{memory:?}");
        let mark = CpuMark::now(Some(group));
        // /proc counts CPU time in clock ticks (10 ms): spin until a tick shows, for 5 s at most.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut x = 0u64;
        let mut spent = mark.since();
        while (spent.bench == Duration::ZERO || spent.proxy == Duration::ZERO) && std::time::Instant::now() < deadline {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
            }
            spent = mark.since();
        }
        std::hint::black_box(x);
        assert!(
            spent.bench > Duration::ZERO && spent.proxy > Duration::ZERO,
            "{spent:?}"
        );
    }
}
