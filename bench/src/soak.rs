//! `wsproxy-bench soak`: many concurrent sessions for a long time while targets and wrapped
//! commands are killed at random; then wsproxy must be as it was before the load.
//!
//! Set-up, all on 127.0.0.1: `--targets` echo servers (`wsproxy-bench echo-server`, separate
//! processes) behind one wsproxy that routes by token (a TokenFile), and `--wrapped` wsproxies in
//! wrap mode (`--wrap-mode=respawn`), each wrapping an echo server of its own. Unless
//! `--session-clients 0`, a third kind: a wsproxy with on-demand sessions (`--sessions
//! SERVICES_FILE`, the file the sessions benchmark writes), whose echo service launches
//! `wsproxy-bench echo-server {port}` on a session's first connection and stops it 2 s after its
//! last client left (linger).
//!
//! Load: `--sessions` clients at once, each opening a session on a random endpoint (a token or
//! a wrapped wsproxy), doing 10-100 round trips of 1 B-8 KiB (one in 20: up to 512 KiB) of random bytes with 50-250 ms
//! between them (each echo compared byte for byte with what was sent), closing, and starting
//! over. `--session-clients` of them (one in ten by default) go to the sessions wsproxy instead,
//! each like a user with a console of its own: it reserves a session through the API and
//! connects with its token (the first connection launches the command), and after each session
//! keeps the reservation for the next one (which re-attaches within the linger) or, one time in
//! four, leaves it to linger out and reserves anew; it reserves anew too when its command was
//! killed. Every `--kill-every-ms` a random target is SIGKILLed and started again, or (at most one
//! every 5 s per wrapped wsproxy) a wrapped command is SIGKILLed and wsproxy respawns it, or (two
//! picks in the draw) a running session command, found among the sessions wsproxy's children, is
//! SIGKILLed: its session ends and its clients are closed.
//!
//! Verdict: a session may fail only if its target was down or killed while it ran (on-demand: if
//! its command was killed); wsproxy, every wrapped wsproxy and the sessions wsproxy must still run
//! without having panicked; after the load, wsproxy's open file descriptors must return within 5 %
//! of the baseline taken after a warm-up (the same load, kills included, for `--warmup-secs`),
//! its resident memory within 5 % or 1 MiB (`memory_allowance`); no zombie process may be left; the sessions wsproxy's descriptors must
//! come back within 5 % too, and no session command may still run (every session lingered out).

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
use crate::http_client::Client;
use crate::proxy::free_port;
use crate::reserve::{self, Session};
use crate::rng::XorShift;
use crate::sessions::{ECHO, Scratch, Services, first_echo};

/// How long an echo server or wsproxy has to listen, a wrapped command to come back.
const START_WAIT: Duration = Duration::from_secs(20);
/// How long after the load the counts have to come back to the baseline.
const SETTLE_WAIT: Duration = Duration::from_secs(45);
/// One round trip (or connect) taking longer than this is a failure.
const STEP_WAIT: Duration = Duration::from_secs(20);
/// How long a wsproxy has to exit after SIGTERM at the end.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Seconds an on-demand session waits for another client after its last one left.
const LINGER_SECS: u64 = 2;
/// The killer's draw holds the session commands this many times (a target once).
const SESSION_PICKS: usize = 2;

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
    /// On-demand sessions: reservations made, commands launched (a first echo through a fresh
    /// reservation), sessions ended by a kill of their command (counted in `ended_by_kill` too).
    reserved: AtomicU64,
    launched: AtomicU64,
    session_ends_by_kill: AtomicU64,
}

/// The sessions wsproxy's echo service, as its clients and the killer see it.
struct OnDemand {
    /// Where the sessions wsproxy listens: its API and the sessions' WebSockets.
    port: u16,
    pid: u32,
    bearer: String,
    /// The echo service's first port: session `index` listens on `base + index`.
    base: u16,
    /// One per index: bumped just before the killer SIGKILLs that index's command.
    kills: Vec<AtomicU64>,
}

impl OnDemand {
    fn kills_of(&self, index: u64) -> u64 {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.kills.get(i))
            .map_or(0, |k| k.load(Ordering::SeqCst))
    }
}

/// The killer's switches and count.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    paused: AtomicBool,
    kills: AtomicU64,
    /// Of `kills`, those of session commands.
    session_kills: AtomicU64,
}

struct Proc {
    child: Child,
    panicked: Arc<AtomicBool>,
}

pub async fn run(args: &Soak) -> Result<(), String> {
    raise_fd_limit(u64::from(args.sessions) * 4 + 1024);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let scratch = Scratch::new("soak")?;
    soak(args, &exe, &scratch).await
}

async fn soak(args: &Soak, exe: &Path, scratch: &Scratch) -> Result<(), String> {
    // The targets and the wsproxy routing to them by token.
    let mut targets = Vec::new();
    let mut lines = String::new();
    for i in 0..args.targets {
        let port = free_port()?;
        targets.push((port, echo_server(exe, port).await?));
        lines.push_str(&format!("t{i}: 127.0.0.1:{port}\n"));
    }
    let tokens = scratch.write("tokens", &lines)?;
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
    let session_clients = args.session_clients.unwrap_or(args.sessions / 10).min(args.sessions);
    let (sessions_proxy, ondemand) = if session_clients > 0 {
        let (proc, ondemand) = sessions_wsproxy(args, exe, scratch, session_clients).await?;
        (Some(proc), Some(Arc::new(ondemand)))
    } else {
        (None, None)
    };
    let main_pid = main.child.id().ok_or("wsproxy exited at once")?;
    let sessions_text = match &ondemand {
        Some(od) => format!(
            ", a sessions wsproxy on 127.0.0.1:{} ({} echo sessions at most, linger {LINGER_SECS} s)",
            od.port,
            od.kills.len()
        ),
        None => String::new(),
    };
    println!(
        "soak: wsproxy {main_pid} on 127.0.0.1:{main_port} with {} token targets, {} wrapped wsproxies{sessions_text}; \
         {} sessions at once, {session_clients} of them on-demand",
        args.targets, args.wrapped, args.sessions
    );

    // The killer runs from the warm-up on (paused while the counts are taken): what the
    // allocator keeps after a first load of the same kind is the baseline, not a leak.
    let control = Arc::new(Control::default());
    let wrapped_pids: Vec<u32> = wrapped.iter().filter_map(|p: &Proc| p.child.id()).collect();
    let killer = {
        let (endpoints, control, ondemand) = (endpoints.clone(), control.clone(), ondemand.clone());
        let every = Duration::from_millis(args.kill_every_ms);
        let exe = exe.to_path_buf();
        tokio::spawn(
            async move { kill_at_random(exe, targets, wrapped_pids, endpoints, ondemand, every, control).await },
        )
    };
    let load = |length: u64| Load {
        endpoints: &endpoints,
        ondemand: ondemand.as_ref(),
        sessions: args.sessions,
        session_clients,
        length: Duration::from_secs(length),
    };

    // Warm-up: the same load, then the baseline.
    let idle_threads = status_field(main_pid, "Threads:")?;
    let warm = load(args.warmup_secs).run().await;
    if let Some(failure) = warm.failures.lock().await.first() {
        return Err(format!(
            "a session on a living target failed during the warm-up: {failure}"
        ));
    }
    control.paused.store(true, Ordering::SeqCst);
    let baseline = settle(main_pid, None, &endpoints[0], idle_threads).await?;
    let sessions_pid = ondemand.as_ref().map(|od| od.pid);
    let sessions_baseline = sessions_pid.map(counts).transpose()?.map_or(0, |c| c.0);
    control.kills.store(0, Ordering::Relaxed);
    control.session_kills.store(0, Ordering::Relaxed);
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
    let tally = load(args.secs).run().await;
    let took = started.elapsed();
    control.stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let targets = killer.await.map_err(|e| format!("the killer task failed: {e}"))??;

    let mut problems = Vec::new();
    let after = settle(main_pid, Some(baseline), &endpoints[0], idle_threads).await;
    let after = match after {
        Ok(after) => after,
        Err(e) => {
            problems.push(e);
            counts(main_pid).unwrap_or((0, 0))
        }
    };
    let sessions_after = match sessions_pid {
        Some(pid) => settle_fds(pid, sessions_baseline).await.unwrap_or_else(|e| {
            problems.push(e);
            counts(pid).map_or(0, |c| c.0)
        }),
        None => 0,
    };
    let still_running = sessions_pid.map_or(0, |pid| session_commands(pid).len());
    if still_running > 0 {
        problems.push(format!(
            "{still_running} session commands still run after every client left"
        ));
    }
    let named = std::iter::once(("wsproxy", &main))
        .chain(wrapped.iter().map(|p| ("a wrapped wsproxy", p)))
        .chain(sessions_proxy.iter().map(|p| ("the sessions wsproxy", p)));
    for (name, proc) in named {
        if proc.panicked.load(Ordering::Relaxed) {
            problems.push(format!("{name} panicked"));
        }
    }
    let mut all = vec![main];
    all.extend(wrapped);
    let mut sessions_proxy = sessions_proxy;
    if let Some(proc) = &mut sessions_proxy
        && let Ok(Some(status)) = proc.child.try_wait()
    {
        problems.push(format!("the sessions wsproxy exited during the soak ({status})"));
    }
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
    watched.extend(sessions_pid);
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
    if sessions_pid.is_some() {
        println!(
            "soak: on-demand sessions: {} reserved, {} launched, {} commands killed, {} sessions ended by a kill; \
             sessions wsproxy fds {sessions_baseline} → {sessions_after} after, {} session commands still running",
            tally.reserved.load(Ordering::Relaxed),
            tally.launched.load(Ordering::Relaxed),
            control.session_kills.load(Ordering::Relaxed),
            tally.session_ends_by_kill.load(Ordering::Relaxed),
            still_running,
        );
    }
    println!(
        "soak: wsproxy fds {} → peak {} → {} after; resident {} KiB → peak {} KiB → {} KiB after; {} zombies",
        baseline.0, peak.0, after.0, baseline.1, peak.1, after.1, zombies
    );
    for proc in all.iter_mut().chain(sessions_proxy.as_mut()) {
        stop(proc).await;
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

/// Stops a wsproxy with SIGTERM, so that it stops what it started (a wrapped command, sessions'
/// commands), which a SIGKILL would leave running; SIGKILL after `STOP_WAIT`.
async fn stop(proc: &mut Proc) {
    if let Some(pid) = proc.child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_WAIT, proc.child.wait()).await.is_err() {
        let _ = proc.child.start_kill();
        let _ = proc.child.wait().await;
    }
}

/// One short session through `end`: a round trip, then the closing handshake.
async fn probe_once(end: &Endpoint) -> Result<(), String> {
    tokio::time::timeout(STEP_WAIT, async {
        let mut conn = Conn::open(end.port, &end.path, None, 65536).await?;
        conn.round_trip(b"probe").await?;
        conn.close().await;
        Ok(())
    })
    .await
    .map_err(|_| {
        format!(
            "no echo through 127.0.0.1:{}{} within {STEP_WAIT:?}",
            end.port, end.path
        )
    })?
}

/// Waits until a round trip through `end` works (its target is back).
async fn wait_echo(end: &Endpoint) -> Result<(), String> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        if probe_once(end).await.is_ok() {
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

/// The load: `sessions` clients for `length`, each session after session; the first
/// `session_clients` of them on the sessions wsproxy.
struct Load<'a> {
    endpoints: &'a [Arc<Endpoint>],
    ondemand: Option<&'a Arc<OnDemand>>,
    sessions: u32,
    session_clients: u32,
    length: Duration,
}

impl Load<'_> {
    async fn run(&self) -> Arc<Tally> {
        let tally = Arc::new(Tally::default());
        let deadline = Instant::now() + self.length;
        let mut clients = Vec::new();
        for i in 0..self.sessions {
            let (endpoints, tally) = (self.endpoints.to_vec(), tally.clone());
            let ondemand = self.ondemand.filter(|_| i < self.session_clients).cloned();
            clients.push(tokio::spawn(async move {
                let mut rng = XorShift::new(u64::from(i) * 7919 + 17);
                // Spread the first connects over a second.
                tokio::time::sleep(Duration::from_millis(rng.next_u64() % 1000)).await;
                match ondemand {
                    Some(od) => on_demand_client(&od, &mut rng, deadline, &tally).await,
                    None => client(&endpoints, &mut rng, deadline, &tally).await,
                }
            }));
        }
        for client in clients {
            let _ = client.await;
        }
        tally
    }
}

/// A client of the main and wrapped wsproxies: session after session on random endpoints.
async fn client(endpoints: &[Arc<Endpoint>], rng: &mut XorShift, deadline: Instant, tally: &Tally) {
    while Instant::now() < deadline {
        let end = &endpoints[(rng.next_u64() % endpoints.len() as u64) as usize];
        let generation = end.generation.load(Ordering::SeqCst);
        let alive = end.alive.load(Ordering::SeqCst);
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = session(end.port, &end.path, rng, deadline, tally, &mut 0).await {
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
}

/// A client of the sessions wsproxy, like a user with a console of their own: it reserves a
/// session, and then connects session after session with its token; after each one it keeps the
/// reservation (the next connection re-attaches within the linger) or, one time in four, leaves
/// it to linger out and reserves anew. A session that fails after its command was killed ended by
/// the kill; the client then reserves anew.
async fn on_demand_client(od: &OnDemand, rng: &mut XorShift, deadline: Instant, tally: &Tally) {
    // The reservation held, its index's kill count when it was made, and whether it launched.
    let mut held: Option<(Session, u64, bool)> = None;
    while Instant::now() < deadline {
        let (reserved, kills, launched) = match held.take() {
            Some(held) => held,
            // A connection of its own for each: the API closes keep-alive connections left idle
            // (its header read timeout), and a client holds its session for many seconds.
            None => match reserve::reserve_one(&mut Client::new(od.port, &od.bearer), ECHO).await {
                Ok(reserved) => {
                    tally.reserved.fetch_add(1, Ordering::Relaxed);
                    let kills = od.kills_of(reserved.index);
                    (reserved, kills, false)
                }
                Err(e) => {
                    tally
                        .failures
                        .lock()
                        .await
                        .push(format!("the sessions API on 127.0.0.1:{}: {e}", od.port));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        let mut trips = 0;
        let outcome = session(od.port, &reserved.path(), rng, deadline, tally, &mut trips).await;
        if !launched && trips > 0 {
            tally.launched.fetch_add(1, Ordering::Relaxed);
        }
        let launched = launched || trips > 0;
        match outcome {
            Ok(()) => {
                if rng.next_u64() % 4 != 0 {
                    held = Some((reserved, kills, launched));
                }
            }
            Err(e) => {
                if od.kills_of(reserved.index) != kills {
                    tally.ended_by_kill.fetch_add(1, Ordering::Relaxed);
                    tally.session_ends_by_kill.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.failures.lock().await.push(format!(
                        "on-demand session {} (index {}) on 127.0.0.1:{}: {e}",
                        reserved.id, reserved.index, od.port
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One session: 10-100 round trips of random bytes (counted in `trips`), then a clean close.
async fn session(
    port: u16,
    path: &str,
    rng: &mut XorShift,
    deadline: Instant,
    tally: &Tally,
    trips: &mut u64,
) -> Result<(), String> {
    let mut conn = tokio::time::timeout(STEP_WAIT, Conn::open(port, path, None, 65536))
        .await
        .map_err(|_| "no upgrade in time".to_string())??;
    let planned = 10 + rng.next_u64() % 91;
    let mut payload = Vec::new();
    for _ in 0..planned {
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
        *trips += 1;
        tally.round_trips.fetch_add(1, Ordering::Relaxed);
        tally.bytes.fetch_add(len as u64, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50 + rng.next_u64() % 200)).await;
    }
    conn.close().await;
    Ok(())
}

/// Every `every`, SIGKILLs a random target (and starts it again) or a wrapped command (wsproxy
/// respawns it; each at most once per 5 s, its respawn throttle allows 3 starts in 10 s), or a
/// random running session command (`SESSION_PICKS` picks in the draw; its session ends). A
/// target or wrapped endpoint counts as down from the kill until a round trip through it works
/// again; a session's kill is marked on its index just before the signal.
async fn kill_at_random(
    exe: PathBuf,
    mut targets: Vec<(u16, Child)>,
    wrapped: Vec<u32>,
    endpoints: Vec<Arc<Endpoint>>,
    ondemand: Option<Arc<OnDemand>>,
    every: Duration,
    control: Arc<Control>,
) -> Result<Vec<(u16, Child)>, String> {
    let mut rng = XorShift::new(4242);
    let mut last_wrapped_kill = vec![Instant::now(); wrapped.len()];
    let session_picks = if ondemand.is_some() { SESSION_PICKS } else { 0 };
    while !control.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        if control.paused.load(Ordering::SeqCst) {
            continue;
        }
        let pick = (rng.next_u64() % (targets.len() + wrapped.len() + session_picks) as u64) as usize;
        if pick >= endpoints.len() {
            if let Some(od) = &ondemand
                && kill_a_session(od, &mut rng)
            {
                control.kills.fetch_add(1, Ordering::Relaxed);
                control.session_kills.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
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

/// SIGKILLs a random running session command of the sessions wsproxy, after marking the kill on
/// its index; false if none runs.
fn kill_a_session(od: &OnDemand, rng: &mut XorShift) -> bool {
    let commands = session_commands(od.pid);
    if commands.is_empty() {
        return false;
    }
    let (pid, port) = commands[(rng.next_u64() % commands.len() as u64) as usize];
    let Some(kills) = port.checked_sub(od.base).and_then(|i| od.kills.get(usize::from(i))) else {
        return false; // not one of the echo service's ports
    };
    kills.fetch_add(1, Ordering::SeqCst);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok()
}

/// The session commands the sessions wsproxy `parent` runs (its children `... echo-server PORT`;
/// not the guards, `sh -c ...`), with their ports.
fn session_commands(parent: u32) -> Vec<(i32, u16)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(ppid, state)| ppid == parent && state != 'Z'))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let mut args = cmdline.split(|&b| b == 0).skip(1);
            (args.next()? == b"echo-server").then_some(())?;
            let port = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            Some((pid, port))
        })
        .collect()
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
    Ok((fds, status_field(pid, "VmRSS:")?))
}

/// A number from /proc/PID/status (`VmRSS:` in KiB, `Threads:`).
fn status_field(pid: u32, name: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
}

/// After a load: waits (bounded) until the sessions' lingering closes are done, wsproxy runs no
/// more threads than before any load (`idle_threads`: tokio ends the threads blocking work
/// started after 10 s idle, and each keeps a stack and an allocator heap while it lives), and the
/// counts have not fallen (by more than 1 %) for `STEADY` seconds, or, given a baseline, are back
/// within 5 % of it (memory: within `memory_allowance`). Meanwhile one short session a second goes through `probe`, as a server in use
/// sees: mimalloc returns freed pages when it is next called, so a process left entirely idle
/// after the load could keep them for as long as it stays idle, which no server does.
async fn settle(
    pid: u32,
    baseline: Option<(usize, u64)>,
    probe: &Endpoint,
    idle_threads: u64,
) -> Result<(usize, u64), String> {
    const STEADY: usize = 5;
    let deadline = Instant::now() + SETTLE_WAIT;
    // wsproxy reads a closed client for up to 2 s (its lingering close).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut seen = vec![counts(pid)?];
    loop {
        // The probe's own descriptors are closed a moment after it (the count waits a second).
        let _ = probe_once(probe).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counts(pid)?;
        let threads = status_field(pid, "Threads:")?;
        let threads_gone = threads <= idle_threads;
        seen.push(now);
        let done = threads_gone
            && match baseline {
                Some((fds, rss)) => now.0 as f64 <= fds as f64 * 1.05 && now.1 <= rss + memory_allowance(rss),
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
                    "{SETTLE_WAIT:?} after the load wsproxy holds {} fds and {} KiB in {threads} threads (baseline {fds} fds, \
                     5 % allowed; {rss} KiB, {} KiB allowed)",
                    now.0,
                    now.1,
                    memory_allowance(rss)
                )),
                None => Ok(now),
            };
        }
    }
}

/// How much more resident memory than the baseline is not growth: 5 %, but at least 1 MiB, the
/// spread measured between identical 60 s runs (after-load sizes of 8.8-11.0 MiB from baselines
/// of 8.9-10.0 MiB: the allocator keeps a 64 KiB page for as long as one object on it lives, and
/// which do varies from run to run). A leak of 100 bytes per session still shows in 60 s
/// (about 10,000 sessions), of 10 bytes in `make soak`'s 10 minutes.
fn memory_allowance(baseline_kib: u64) -> u64 {
    (baseline_kib / 20).max(1024)
}

/// After the load: waits (bounded) until the sessions wsproxy's descriptors are back within 5 %
/// of `baseline` (its sessions linger out and are stopped).
async fn settle_fds(pid: u32, baseline: usize) -> Result<usize, String> {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let fds = counts(pid)?.0;
        if fds as f64 <= baseline as f64 * 1.05 {
            return Ok(fds);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{SETTLE_WAIT:?} after the load the sessions wsproxy holds {fds} fds ({}; baseline {baseline}, 5 % \
                 allowed) and runs {} session commands",
                fd_kinds(pid),
                session_commands(pid).len()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the descriptors of `pid` are: "N socket, N pipe, ...".
fn fd_kinds(pid: u32) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let link = std::fs::read_link(entry.path())
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let kind = link.split([':', '[']).next().unwrap_or_default().to_string();
        *kinds.entry(kind).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    kinds.join(", ")
}

/// Starts the sessions wsproxy: its services file (the sessions benchmark's, with room for two
/// sessions per client: one held, one lingering out) and a probe session that launches.
async fn sessions_wsproxy(
    args: &Soak,
    exe: &Path,
    scratch: &Scratch,
    clients: u32,
) -> Result<(Proc, OnDemand), String> {
    let count = clients.saturating_mul(2).saturating_add(16);
    let bearer = format!("soak-{:016x}", XorShift::from_entropy().next_u64());
    let base = free_port_range(count)?;
    let services = Services {
        exe,
        bearer: &bearer,
        port: base,
        count,
        linger: LINGER_SECS,
        bulk: 1,
    };
    let file = scratch.services("sessions", &services)?;
    let (proc, port) = wsproxy(
        &args.wsproxy,
        &["--sessions", file.to_str().unwrap_or_default(), "127.0.0.1:0"],
    )
    .await?;
    let pid = proc.child.id().ok_or("the sessions wsproxy exited at once")?;
    let mut api = Client::new(port, &bearer);
    let probe = reserve::reserve_one(&mut api, ECHO)
        .await
        .map_err(|e| format!("the sessions wsproxy on 127.0.0.1:{port}: {e}"))?;
    tokio::time::timeout(START_WAIT, first_echo(port, &probe.path()))
        .await
        .map_err(|_| format!("no echo through a session of 127.0.0.1:{port} within {START_WAIT:?}"))?
        .map_err(|e| format!("a session of 127.0.0.1:{port}: {e}"))?;
    let ondemand = OnDemand {
        port,
        pid,
        bearer,
        base,
        kills: (0..count).map(|_| AtomicU64::new(0)).collect(),
    };
    Ok((proc, ondemand))
}

/// The first of `count` consecutive ports of 127.0.0.1 that are free now, below the kernel's
/// ephemeral range: the clients' own ports come from that range, so none can take a session's
/// port between its commands.
fn free_port_range(count: u32) -> Result<u16, String> {
    const FLOOR: u32 = 10_000;
    let ephemeral: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let room = ephemeral.saturating_sub(FLOOR).saturating_sub(count);
    if room == 0 {
        return Err(format!(
            "no room for {count} session ports between {FLOOR} and the ephemeral range ({ephemeral}): \
             use fewer --session-clients"
        ));
    }
    let mut rng = XorShift::from_entropy();
    for _ in 0..100 {
        let base = FLOOR + (rng.next_u64() % u64::from(room)) as u32;
        let free = (base..base + count)
            .all(|port| u16::try_from(port).is_ok_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()));
        if free && let Ok(base) = u16::try_from(base) {
            return Ok(base);
        }
    }
    Err(format!(
        "found no {count} consecutive free ports between {FLOOR} and {ephemeral}"
    ))
}

fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}
