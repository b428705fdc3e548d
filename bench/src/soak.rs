//! `wsproxy-bench soak`: many concurrent sessions for a long time while targets and wrapped
//! commands are killed at random; then wsproxy must be as it was before the load.
//!
//! Set-up, all on 127.0.0.1: `--targets` echo servers (`wsproxy-bench echo-server`, separate
//! processes) behind one wsproxy that routes by token (a TokenFile), and `--wrapped` wsproxies in
//! wrap mode (`--wrap-mode=respawn`), each wrapping an echo server of its own.
//!
//! Load: `--sessions` clients at once, each opening a session on a random endpoint (a token or
//! a wrapped wsproxy), doing 10-100 round trips of 1 B-8 KiB (one in 20: up to 512 KiB) of random bytes with 50-250 ms
//! between them (each echo compared byte for byte with what was sent), closing, and starting
//! over. Every `--kill-every-ms` a random target is SIGKILLed and started again, or (at most one
//! every 5 s per wrapped wsproxy) a wrapped command is SIGKILLed and wsproxy respawns it.
//!
//! Verdict: a session may fail only if its target was down or killed while it ran; wsproxy and
//! every wrapped wsproxy must still run without having panicked; after the load, wsproxy's open
//! file descriptors and resident memory must return within 5 % of the baseline taken after a
//! warm-up (the same load, kills included, for `--warmup-secs`); no zombie process may be left.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::cli::Soak;
use crate::client::raw::Conn;
use crate::proxy::free_port;
use crate::rng::XorShift;

/// How long an echo server or wsproxy has to listen, a wrapped command to come back.
const START_WAIT: Duration = Duration::from_secs(20);
/// How long after the load the counts have to come back to the baseline.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// One round trip (or connect) taking longer than this is a failure.
const STEP_WAIT: Duration = Duration::from_secs(20);

/// One place sessions go: a token of the main wsproxy, or a wrapped wsproxy.
struct Endpoint {
    port: u16,
    path: String,
    /// Bumped when its target is killed and when it is back.
    generation: AtomicU64,
    alive: AtomicBool,
}

#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    round_trips: AtomicU64,
    bytes: AtomicU64,
    ended_by_kill: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// The killer's switches and count.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    paused: AtomicBool,
    kills: AtomicU64,
}

struct Proc {
    child: Child,
    panicked: Arc<AtomicBool>,
}

pub async fn run(args: &Soak) -> Result<(), String> {
    raise_fd_limit(u64::from(args.sessions) * 4 + 1024);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let work = std::env::temp_dir().join(format!("wsproxy-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let outcome = soak(args, &exe, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    outcome
}

async fn soak(args: &Soak, exe: &Path, work: &Path) -> Result<(), String> {
    // The targets and the wsproxy routing to them by token.
    let mut targets = Vec::new();
    let mut lines = String::new();
    for i in 0..args.targets {
        let port = free_port()?;
        targets.push((port, echo_server(exe, port).await?));
        lines.push_str(&format!("t{i}: 127.0.0.1:{port}\n"));
    }
    let tokens = work.join("tokens");
    std::fs::write(&tokens, lines).map_err(|e| format!("cannot write {}: {e}", tokens.display()))?;
    let (main, main_port) = wsproxy(
        &args.wsproxy,
        &[
            "--token-plugin",
            "TokenFile",
            "--token-source",
            tokens.to_str().unwrap_or_default(),
            "127.0.0.1:0",
        ],
    )
    .await?;
    let mut endpoints: Vec<Arc<Endpoint>> = (0..args.targets)
        .map(|i| endpoint(main_port, format!("/websockify?token=t{i}")))
        .collect();
    let mut wrapped = Vec::new();
    for _ in 0..args.wrapped {
        let port = free_port()?;
        let port_text = port.to_string();
        let (proc, listen) = wsproxy(
            &args.wsproxy,
            &[
                "--wrap-mode=respawn",
                "--wrap-port",
                &port_text,
                "127.0.0.1:0",
                "--",
                exe.to_str().unwrap_or_default(),
                "echo-server",
                &port_text,
            ],
        )
        .await?;
        let end = endpoint(listen, "/websockify".into());
        wait_echo(&end).await?;
        endpoints.push(end);
        wrapped.push(proc);
    }
    let main_pid = main.child.id().ok_or("wsproxy exited at once")?;
    println!(
        "soak: wsproxy {main_pid} on 127.0.0.1:{main_port} with {} token targets, {} wrapped wsproxies; {} sessions at once",
        args.targets, args.wrapped, args.sessions
    );

    // The killer runs from the warm-up on (paused while the counts are taken): what the
    // allocator keeps after a first load of the same kind is the baseline, not a leak.
    let control = Arc::new(Control::default());
    let wrapped_pids: Vec<u32> = wrapped.iter().filter_map(|p: &Proc| p.child.id()).collect();
    let killer = {
        let (endpoints, control) = (endpoints.clone(), control.clone());
        let every = Duration::from_millis(args.kill_every_ms);
        let exe = exe.to_path_buf();
        tokio::spawn(async move { kill_at_random(exe, targets, wrapped_pids, endpoints, every, control).await })
    };

    // Warm-up: the same load, then the baseline.
    let warm = load(&endpoints, args.sessions, Duration::from_secs(args.warmup_secs)).await;
    if let Some(failure) = warm.failures.lock().await.first() {
        return Err(format!(
            "a session on a living target failed during the warm-up: {failure}"
        ));
    }
    control.paused.store(true, Ordering::SeqCst);
    let baseline = settle(main_pid, None).await?;
    control.kills.store(0, Ordering::Relaxed);
    control.paused.store(false, Ordering::SeqCst);
    println!(
        "soak: warm-up {} s, {} sessions; baseline {} fds, {} KiB resident",
        args.warmup_secs,
        warm.sessions.load(Ordering::Relaxed),
        baseline.0,
        baseline.1
    );

    // The soak: the load with kills, then the load stops.
    let peak = Arc::new(Mutex::new((0usize, 0u64)));
    let sampler = {
        let (control, peak) = (control.clone(), peak.clone());
        tokio::spawn(async move {
            while !control.stop.load(Ordering::Relaxed) {
                if let Ok((fds, rss)) = counts(main_pid) {
                    let mut peak = peak.lock().await;
                    *peak = (peak.0.max(fds), peak.1.max(rss));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let started = Instant::now();
    let tally = load(&endpoints, args.sessions, Duration::from_secs(args.secs)).await;
    let took = started.elapsed();
    control.stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let targets = killer.await.map_err(|e| format!("the killer task failed: {e}"))??;

    let mut problems = Vec::new();
    let after = settle(main_pid, Some(baseline)).await;
    let after = match after {
        Ok(after) => after,
        Err(e) => {
            problems.push(e);
            counts(main_pid).unwrap_or((0, 0))
        }
    };
    for (name, proc) in std::iter::once(("wsproxy", &main)).chain(wrapped.iter().map(|p| ("a wrapped wsproxy", p))) {
        if proc.panicked.load(Ordering::Relaxed) {
            problems.push(format!("{name} panicked"));
        }
    }
    let mut all = vec![main];
    all.extend(wrapped);
    for proc in &mut all {
        if let Ok(Some(status)) = proc.child.try_wait() {
            problems.push(format!("a wsproxy exited during the soak ({status})"));
        }
    }
    let failures = tally.failures.lock().await.clone();
    for failure in failures.iter().take(10) {
        problems.push(format!("a session on a living target failed: {failure}"));
    }
    let mut watched: Vec<u32> = all.iter().filter_map(|p| p.child.id()).collect();
    watched.push(std::process::id());
    let zombies = zombies(&watched);
    if zombies > 0 {
        problems.push(format!("{zombies} zombie processes"));
    }
    let peak = *peak.lock().await;
    let secs = took.as_secs_f64();
    println!(
        "soak: {:.0} s; {} sessions ({:.0}/s), {} round trips ({:.0}/s), {:.1} MiB each way, all compared",
        secs,
        tally.sessions.load(Ordering::Relaxed),
        tally.sessions.load(Ordering::Relaxed) as f64 / secs,
        tally.round_trips.load(Ordering::Relaxed),
        tally.round_trips.load(Ordering::Relaxed) as f64 / secs,
        tally.bytes.load(Ordering::Relaxed) as f64 / f64::from(1 << 20),
    );
    println!(
        "soak: {} kills; {} sessions ended by a kill of their target; {} failed on a living target",
        control.kills.load(Ordering::Relaxed),
        tally.ended_by_kill.load(Ordering::Relaxed),
        failures.len()
    );
    println!(
        "soak: wsproxy fds {} → peak {} → {} after; resident {} KiB → peak {} KiB → {} KiB after; {} zombies",
        baseline.0, peak.0, after.0, baseline.1, peak.1, after.1, zombies
    );
    for proc in &mut all {
        let _ = proc.child.start_kill();
        let _ = proc.child.wait().await;
    }
    for (_, mut child) in targets {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if problems.is_empty() {
        println!("soak: passed");
        Ok(())
    } else {
        Err(format!("soak failed: {}", problems.join("; ")))
    }
}

fn endpoint(port: u16, path: String) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        port,
        path,
        generation: AtomicU64::new(0),
        alive: AtomicBool::new(true),
    })
}

/// `wsproxy-bench echo-server PORT`, once it accepts connections.
async fn echo_server(exe: &Path, port: u16) -> Result<Child, String> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        let mut child = Command::new(exe)
            .args(["echo-server", &port.to_string()])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the echo server: {e}"))?;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // the port is still taken: try again
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the echo server on port {port} did not listen within {START_WAIT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the echo server could not bind port {port} within {START_WAIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts wsproxy with `args` and returns it and the port of its "listening on" line; its
/// stderr is watched for panics from then on.
async fn wsproxy(program: &Path, args: &[&str]) -> Result<(Proc, u16), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let port = tokio::time::timeout(START_WAIT, async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if let Some(rest) = line.strip_prefix("wsproxy: listening on 127.0.0.1:") {
                return rest.split(',').next().and_then(|p| p.parse::<u16>().ok());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| format!("{} {} did not start listening", program.display(), args.join(" ")))?;
    let panicked = Arc::new(AtomicBool::new(false));
    let seen = panicked.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("panicked") {
                eprintln!("soak: {line}");
                seen.store(true, Ordering::Relaxed);
            }
        }
    });
    Ok((Proc { child, panicked }, port))
}

/// Waits until a round trip through `end` works (its target is back).
async fn wait_echo(end: &Endpoint) -> Result<(), String> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        let tried = tokio::time::timeout(STEP_WAIT, async {
            let mut conn = Conn::open(end.port, &end.path, None, 65536).await?;
            conn.round_trip(b"probe").await?;
            conn.close().await;
            Ok::<(), String>(())
        })
        .await;
        if matches!(tried, Ok(Ok(()))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nothing echoes through 127.0.0.1:{}{} after {START_WAIT:?}",
                end.port, end.path
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `sessions` clients for `length`, each session after session.
async fn load(endpoints: &[Arc<Endpoint>], sessions: u32, length: Duration) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + length;
    let mut clients = Vec::new();
    for i in 0..sessions {
        let (endpoints, tally) = (endpoints.to_vec(), tally.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = XorShift::new(u64::from(i) * 7919 + 17);
            // Spread the first connects over a second.
            tokio::time::sleep(Duration::from_millis(rng.next_u64() % 1000)).await;
            while Instant::now() < deadline {
                let end = &endpoints[(rng.next_u64() % endpoints.len() as u64) as usize];
                let generation = end.generation.load(Ordering::SeqCst);
                let alive = end.alive.load(Ordering::SeqCst);
                tally.sessions.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = session(end, &mut rng, deadline, &tally).await {
                    if !alive || end.generation.load(Ordering::SeqCst) != generation {
                        tally.ended_by_kill.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally
                            .failures
                            .lock()
                            .await
                            .push(format!("127.0.0.1:{}{}: {e}", end.port, end.path));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for client in clients {
        let _ = client.await;
    }
    tally
}

/// One session: 10-100 round trips of random bytes, then a clean close.
async fn session(end: &Endpoint, rng: &mut XorShift, deadline: Instant, tally: &Tally) -> Result<(), String> {
    let mut conn = tokio::time::timeout(STEP_WAIT, Conn::open(end.port, &end.path, None, 65536))
        .await
        .map_err(|_| "no upgrade in time".to_string())??;
    let trips = 10 + rng.next_u64() % 91;
    let mut payload = Vec::new();
    for _ in 0..trips {
        if Instant::now() >= deadline {
            break;
        }
        payload.clear();
        // Mostly console-sized, one in 20 up to 512 KiB: those fill wsproxy's 256 KiB relay
        // buffers, so the warm-up already touches every page of its pooled buffers.
        let most = if rng.next_u64() % 20 == 0 { 512 * 1024 } else { 8192 };
        let len = 1 + (rng.next_u64() % most) as usize;
        payload.extend((0..len).map(|_| rng.next_u64() as u8));
        tokio::time::timeout(STEP_WAIT, conn.round_trip(&payload))
            .await
            .map_err(|_| "no echo in time".to_string())??;
        tally.round_trips.fetch_add(1, Ordering::Relaxed);
        tally.bytes.fetch_add(len as u64, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50 + rng.next_u64() % 200)).await;
    }
    conn.close().await;
    Ok(())
}

/// Every `every`, SIGKILLs a random target (and starts it again) or a wrapped command (wsproxy
/// respawns it; each at most once per 5 s, its respawn throttle allows 3 starts in 10 s). The
/// endpoint counts as down from the kill until a round trip through it works again.
async fn kill_at_random(
    exe: PathBuf,
    mut targets: Vec<(u16, Child)>,
    wrapped: Vec<u32>,
    endpoints: Vec<Arc<Endpoint>>,
    every: Duration,
    control: Arc<Control>,
) -> Result<Vec<(u16, Child)>, String> {
    let mut rng = XorShift::new(4242);
    let mut last_wrapped_kill = vec![Instant::now(); wrapped.len()];
    while !control.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        if control.paused.load(Ordering::SeqCst) {
            continue;
        }
        let pick = (rng.next_u64() % (targets.len() + wrapped.len()) as u64) as usize;
        let end = &endpoints[pick];
        if pick < targets.len() {
            end.alive.store(false, Ordering::SeqCst);
            end.generation.fetch_add(1, Ordering::SeqCst);
            let (port, child) = &mut targets[pick];
            let _ = child.start_kill();
            let _ = child.wait().await;
            *child = echo_server(&exe, *port).await?;
        } else {
            let w = pick - targets.len();
            if last_wrapped_kill[w].elapsed() < Duration::from_secs(5) {
                continue;
            }
            let Some(command) = child_of(wrapped[w]) else {
                continue; // between a death and its respawn
            };
            end.alive.store(false, Ordering::SeqCst);
            end.generation.fetch_add(1, Ordering::SeqCst);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(command), nix::sys::signal::Signal::SIGKILL);
            last_wrapped_kill[w] = Instant::now();
        }
        control.kills.fetch_add(1, Ordering::Relaxed);
        wait_echo(end).await?;
        end.generation.fetch_add(1, Ordering::SeqCst);
        end.alive.store(true, Ordering::SeqCst);
    }
    Ok(targets)
}

/// A child process of `parent` (the wrapped command of a wrap-mode wsproxy).
fn child_of(parent: u32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let (ppid, _) = stat(pid)?;
        (ppid == parent).then_some(pid)
    })
}

/// (parent pid, state) from /proc/PID/stat.
fn stat(pid: i32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: read after the last ')'.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Zombie children of any of `parents`.
fn zombies(parents: &[u32]) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .filter(|(ppid, state)| *state == 'Z' && parents.contains(ppid))
        .count()
}

/// wsproxy's open file descriptors and resident KiB.
fn counts(pid: u32) -> Result<(usize, u64), String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("wsproxy {pid} is gone: {e}"))?
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    Ok((fds, rss))
}

/// After a load: waits (bounded) until the sessions' lingering closes are done and the counts
/// have not fallen (by more than 1 %) for `STEADY` seconds (the allocator gives freed pages back over a few seconds), or,
/// given a baseline, come back within 5 % of it.
async fn settle(pid: u32, baseline: Option<(usize, u64)>) -> Result<(usize, u64), String> {
    const STEADY: usize = 5;
    let deadline = Instant::now() + SETTLE_WAIT;
    // wsproxy reads a closed client for up to 2 s (its lingering close).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut seen = vec![counts(pid)?];
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counts(pid)?;
        seen.push(now);
        let done = match baseline {
            Some((fds, rss)) => now.0 as f64 <= fds as f64 * 1.05 && now.1 as f64 <= rss as f64 * 1.05,
            None => {
                seen.len() > STEADY
                    && seen[seen.len() - 1 - STEADY..]
                        .iter()
                        .all(|c| c.0 <= now.0 && c.1 as f64 <= now.1 as f64 * 1.01)
            }
        };
        if done {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return match baseline {
                Some((fds, rss)) => Err(format!(
                    "{SETTLE_WAIT:?} after the load wsproxy holds {} fds and {} KiB (baseline {fds} fds, {rss} KiB, 5 % allowed)",
                    now.0, now.1
                )),
                None => Ok(now),
            };
        }
    }
}

fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}
