//! Scenario "sessions": wsproxy's on-demand sessions (`--sessions`), the two numbers of the
//! sessions issue, measured side by side in one run.
//!
//! - Launch: a session is reserved through the API (not timed); then the time from the client's
//!   connect and WebSocket upgrade with its token to the first byte of a 32-byte echo: wsproxy
//!   launches the service's command (`wsproxy-bench echo-server PORT`), waits until it listens,
//!   connects and relays. Just before each launch the same command is started alone, here, and
//!   timed from exec to the first connect it accepts (polled every 200 µs from a blocking thread,
//!   so no timer wheel rounds it to milliseconds). The overhead is each launch minus the start just
//!   before it. Each session is then closed and deleted (204 once its command is stopped), so the
//!   next one gets the same index and port. One of each comes first, untimed (page cache, the
//!   proxy's first allocations).
//! - Reservations: `conns` HTTP/1.1 keep-alive clients post `{"service": "bulk"}` one request
//!   after the other for `secs` seconds (`reserve`). The service's count is more than any run can
//!   reserve and its reserve_timeout longer than the run, so nothing launches, expires or is
//!   refused; the rate counts the 201s over the time until the last answer, and any other answer
//!   is an error.
//!
//! Each round starts every proxy afresh with a services file of its own (the echo service's port
//! is found free for that start), written in a scratch directory under target/ that is removed
//! at the end. The proxy stops with SIGTERM, and stops whatever sessions it still has.
//!
//! wsproxy sees a local command listen by reading the kernel's socket tables (/proc/net/tcp and
//! tcp6) at each check, so a launch takes longer when the tables are long: after `all`, the
//! connects scenario's sockets sit in TIME_WAIT for a minute. The size of the tables when the
//! launches begin is therefore printed under the table.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::time::timeout;

use crate::cli;
use crate::client::raw::Conn;
use crate::http_client::Client;
use crate::pattern::pattern;
use crate::peer::Peer;
use crate::plan;
use crate::procfs::CpuMark;
use crate::proxy::{Proxy, ProxySpec, SERVICES, Upstream, free_port};
use crate::report::{self, Report};
use crate::reserve;
use crate::rng::XorShift;
use crate::rtt;
use crate::stats::percentile;
use crate::tokens;
use crate::ws::Event;

/// The service launched on connect, and the one only reserved.
pub(crate) const ECHO: &str = "echo";
const BULK: &str = "bulk";
/// The reserve_timeout of the services file: longer than any run.
const RESERVE_TIMEOUT_SECS: u64 = 3600;
/// The bulk service's count per second of reservations: more than any run reaches.
const BULK_PER_SEC: u64 = 100_000;
/// A launch (upgrade to echo), or a start of the command alone, that takes longer fails the round.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the command started alone is tried.
const ALONE_POLL: Duration = Duration::from_micros(200);
/// A rate that falls below this share of the first second's by the last second is noted.
const FALL_NOTED: f64 = 0.8;

pub struct Options {
    pub rounds: u32,
    pub launches: usize,
    pub conns: usize,
    pub secs: Duration,
    /// `Authorization: Bearer` for the API, random per run.
    bearer: String,
    /// This very binary: it is the command (`echo-server`).
    exe: PathBuf,
}

impl Options {
    fn bulk_count(&self) -> u64 {
        (self.secs.as_secs() * BULK_PER_SEC).min(u64::from(u32::MAX))
    }
}

/// One launch through the proxy and the start of the command alone just before it, in ms.
#[derive(Clone, Copy)]
struct Pair {
    through: f64,
    alone: f64,
}

/// A proxy's launches over the rounds, and the TCP sockets in the tables as each round's began.
#[derive(Clone, Default)]
struct Launches {
    pairs: Vec<Pair>,
    sockets: Vec<usize>,
}

pub async fn run(args: cli::Sessions) -> Result<(), String> {
    let specs = &args.proxies;
    check_templates(specs, "sessions")?;
    let options = Options {
        rounds: args.rounds,
        launches: args.launches as usize,
        conns: args.reserve_conns as usize,
        secs: Duration::from_secs(args.reserve_secs),
        bearer: format!("bench-{:016x}", XorShift::from_entropy().next_u64()),
        exe: std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?,
    };
    let scratch = Scratch::new("sessions")?;
    let peers: Vec<Peer<'_>> = specs.iter().map(Peer::Proxy).collect();
    let (title, settings) = describe(&options);
    let mut report = Report::new(title.clone(), &peers, settings);
    for kind in [
        report::LAUNCH,
        report::LAUNCH_P90,
        report::LAUNCH_ALONE,
        report::LAUNCH_ALONE_P90,
        report::LAUNCH_OVERHEAD,
        report::LAUNCH_OVERHEAD_P90,
    ] {
        report.metric(kind);
    }
    report.metric_as(
        report::RESERVATIONS,
        format!("reservations, {} keep-alive conns", options.conns),
    );
    report.metric(report::CPU_RESERVATION_PROXY);
    report.goals("the sessions issue", report::sessions_goals());
    report.explain(
        "launch rows: median (and p90) over every launch of every round; each launch is paired with a start of\n\
         the command alone just before it, and the overhead is their difference; reservations: median over the rounds",
    );
    eprintln!("{title}\neach line is one run");

    let mut launches: Vec<Launches> = vec![Launches::default(); specs.len()];
    for round in 1..=options.rounds {
        for (spec, launches) in specs.iter().zip(&mut launches) {
            let outcome = measure_round(spec, &options, &scratch, &mut report, launches, round).await;
            if let Err(e) = outcome {
                eprintln!("  {} sessions: FAILED: {e}", spec.name);
                let first = e.lines().next().unwrap_or_default();
                report.note(format!("{} sessions, round {round}, failed: {first}", spec.name));
            }
        }
    }
    for (spec, launches) in specs.iter().zip(&launches) {
        let p90 = |value: fn(&Pair) -> f64| {
            let mut values: Vec<f64> = launches.pairs.iter().map(value).collect();
            values.sort_by(f64::total_cmp);
            percentile(&values, 90.0)
        };
        let rows = [
            (report::LAUNCH_P90, p90(|p| p.through)),
            (report::LAUNCH_ALONE_P90, p90(|p| p.alone)),
            (report::LAUNCH_OVERHEAD_P90, p90(|p| p.through - p.alone)),
        ];
        for (kind, value) in rows {
            if let Some(value) = value {
                report.record(kind, &spec.name, value);
            }
        }
        if let (Some(fewest), Some(most)) = (launches.sockets.iter().min(), launches.sockets.iter().max()) {
            let range = if fewest == most {
                fewest.to_string()
            } else {
                format!("{fewest} to {most}")
            };
            report.note(format!(
                "{} launches began with {range} TCP sockets in /proc/net/tcp and tcp6 (TIME_WAIT included), \
                 which wsproxy reads at each check that a command listens",
                spec.name
            ));
        }
    }
    plan::finish(&report, args.json.as_deref())
}

/// Starts `spec` afresh, measures launches then reservations, and stops it.
async fn measure_round(
    spec: &ProxySpec,
    options: &Options,
    scratch: &Scratch,
    report: &mut Report,
    launched_so_far: &mut Launches,
    round: u32,
) -> Result<(), String> {
    let rounds = options.rounds;
    let services = Services {
        exe: &options.exe,
        bearer: &options.bearer,
        port: free_port()?,
        // One at a time, always on the same port; each session ends by DELETE (204 once its
        // command is stopped), not when its client leaves.
        count: 1,
        linger: 60,
        bulk: options.bulk_count(),
    };
    let file = scratch.services(&format!("{}-{round}", spec.name), &services)?;
    let proxy = Proxy::start(spec, &file.display().to_string()).await?;
    let name = spec.name.as_str();
    let outcome = async {
        let sockets = tcp_sockets();
        launched_so_far.sockets.push(sockets);
        let launched = launches(proxy.port(), options)
            .await
            .map_err(|e| format!("launches: {e}"))?;
        for pair in &launched {
            report.record(report::LAUNCH, name, pair.through);
            report.record(report::LAUNCH_ALONE, name, pair.alone);
            report.record(report::LAUNCH_OVERHEAD, name, pair.through - pair.alone);
        }
        let median = |value: fn(&Pair) -> f64| {
            crate::stats::median(&launched.iter().map(value).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        eprintln!(
            "  round {round}/{rounds}  {name:<12} launch  {:>6.2} ms median  (the command alone {:.2} ms; {} launches; \
             {sockets} TCP sockets)",
            median(|p| p.through),
            median(|p| p.alone),
            launched.len()
        );
        launched_so_far.pairs.extend(launched);

        let mark = CpuMark::now(Some(proxy.group()));
        let load = reserve::Load {
            ports: &[proxy.port()],
            bearer: &options.bearer,
            service: BULK,
            conns: options.conns,
            secs: options.secs,
            free: false,
        };
        let reserved = reserve::run(&load).await.map_err(|e| format!("reservations: {e}"))?;
        let proxy_cpu = mark.since().proxy;
        let rate = reserved.rate();
        let by_second: Vec<String> = reserved.by_second.iter().map(|n| n.to_string()).collect();
        eprintln!(
            "  round {round}/{rounds}  {name:<12} reservations  {rate:>8.0} /s  ({} in {:.2} s, {} failed; each second: {})",
            reserved.done,
            reserved.elapsed.as_secs_f64(),
            reserved.failed,
            by_second.join(" ")
        );
        report.record(report::RESERVATIONS, name, rate);
        let cpu_us = proxy_cpu.as_secs_f64() * 1e6 / reserved.done.max(1) as f64;
        report.record(report::CPU_RESERVATION_PROXY, name, cpu_us);
        if let Some(e) = &reserved.first_error {
            report.note(format!(
                "{name} reservations, round {round}: {} of {} failed; the first: {e}",
                reserved.failed,
                reserved.done + reserved.failed
            ));
        }
        if reserved.reconnects > 0 {
            report.note(format!(
                "{name} reservations, round {round}: {} reconnections (the API closed keep-alive connections)",
                reserved.reconnects
            ));
        }
        if let (Some(&first), Some(&last)) = (reserved.by_second.first(), reserved.by_second.last())
            && (last as f64) < FALL_NOTED * first as f64
        {
            report.note(format!(
                "{name} reservations, round {round}: {first}/s in the first second, {last}/s in the last, with {} \
                 reservations live",
                reserved.done
            ));
        }
        Ok::<_, String>(())
    }
    .await;
    match outcome {
        Ok(()) => proxy.stop().await,
        Err(e) => {
            let note = proxy.output_note();
            let _ = proxy.stop().await;
            Err(format!("{e}{note}"))
        }
    }
}

/// `options.launches` pairs (after one untimed pair): the command alone, then a launch through
/// the proxy listening on `port`.
async fn launches(port: u16, options: &Options) -> Result<Vec<Pair>, String> {
    let mut api = Client::new(port, &options.bearer);
    start_alone(&options.exe).await?;
    launch(port, &mut api).await?;
    let mut pairs = Vec::with_capacity(options.launches);
    for _ in 0..options.launches {
        let alone = start_alone(&options.exe).await?;
        let through = launch(port, &mut api).await?;
        pairs.push(Pair {
            through: through.as_secs_f64() * 1e3,
            alone: alone.as_secs_f64() * 1e3,
        });
    }
    Ok(pairs)
}

/// Reserves an echo session, times its launch (upgrade to the first echoed byte), closes it and
/// deletes it, waiting for the 204 (the command stopped).
async fn launch(port: u16, api: &mut Client) -> Result<Duration, String> {
    let session = reserve::reserve_one(api, ECHO).await?;
    let id = &session.id;
    let timed = timeout(LAUNCH_TIMEOUT, first_echo(port, &session.path())).await;
    // Whatever happened, stop the session: the next one needs its index and its port.
    let request = api.request("DELETE", &format!("/api/v1/sessions/{id}"), None);
    let deleted = api.call(&request).await;
    let elapsed = timed.map_err(|_| format!("no echo within {} s of the upgrade", LAUNCH_TIMEOUT.as_secs()))??;
    match deleted {
        Ok(response) if response.status == 204 => Ok(elapsed),
        Ok(response) => Err(format!(
            "DELETE of session {id} was answered {}: {}",
            response.status,
            response.excerpt()
        )),
        Err(e) => Err(format!("DELETE of session {id}: {e}")),
    }
}

/// Connects to `path` (a session's token), sends 32 bytes as soon as the upgrade is answered, and
/// returns the time from connecting to the first echoed byte; then checks the rest and closes.
pub async fn first_echo(port: u16, path: &str) -> Result<Duration, String> {
    let payload = pattern().window(0, rtt::PAYLOAD);
    let start = Instant::now();
    let mut conn = Conn::open(port, path, None, rtt::SMALL_READ).await?;
    conn.send(payload).await?;
    let (elapsed, got) = match conn.frames.next().await? {
        Event::Data(data) if payload.starts_with(data) => (start.elapsed(), data.len()),
        Event::Data(_) => return Err("the echo differs from what was sent".into()),
        Event::Close => return Err("closed before the first echo: the launch failed (see the proxy's output)".into()),
        Event::Eof => return Err("the connection ended before the first echo".into()),
    };
    conn.expect(&payload[got..]).await?;
    conn.close().await;
    Ok(elapsed)
}

/// Starts the command alone on a free port and times it from exec to the first connect it
/// accepts; then kills it.
async fn start_alone(exe: &Path) -> Result<Duration, String> {
    let exe = exe.to_path_buf();
    tokio::task::spawn_blocking(move || start_alone_blocking(&exe))
        .await
        .map_err(|e| format!("the start of the command alone failed: {e}"))?
}

fn start_alone_blocking(exe: &Path) -> Result<Duration, String> {
    let port = free_port()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    // As wsproxy starts it: its own process group, no stdin.
    let child = std::process::Command::new(exe)
        .args(["echo-server", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let mut child = Killed(child);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(start.elapsed());
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!("`{} echo-server {port}` exited ({status})", exe.display()));
        }
        if start.elapsed() > LAUNCH_TIMEOUT {
            return Err(format!(
                "`{} echo-server {port}` did not listen within {} s",
                exe.display(),
                LAUNCH_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(ALONE_POLL);
    }
}

/// The TCP sockets in this network namespace's tables, as wsproxy reads them.
fn tcp_sockets() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|text| text.lines().count().saturating_sub(1))
        .sum()
}

/// A child that is killed and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The table's title and the settings for the JSON file.
fn describe(options: &Options) -> (String, serde_json::Value) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let title = format!(
        "wsproxy-bench sessions: {} round(s) on {cpus} CPUs, 127.0.0.1; {} launches per round of `wsproxy-bench \
         echo-server`, each after a start of it alone; reservations {} keep-alive conns × {} s",
        options.rounds,
        options.launches,
        options.conns,
        options.secs.as_secs()
    );
    let settings = json!({
        "rounds": options.rounds,
        "sessions": {
            "launches": options.launches,
            "untimed_launches": 1,
            "command": [options.exe.display().to_string(), "echo-server", "{port}"],
            "payload_bytes": rtt::PAYLOAD,
            "alone_poll_us": ALONE_POLL.as_micros() as u64,
            "reserve_conns": options.conns,
            "reserve_secs": options.secs.as_secs(),
            "bulk_count": options.bulk_count(),
            "reserve_timeout_secs": RESERVE_TIMEOUT_SECS,
        },
    });
    (title, settings)
}

/// A scratch directory (target/bench-NAME.PID) for services files and the like; removed when
/// dropped.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Result<Scratch, String> {
        let dir = tokens::scratch_dir().join(format!("bench-{name}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Scratch { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` to the file `name` in it.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Writes the services file `NAME.toml` for one start.
    pub(crate) fn services(&self, name: &str, services: &Services<'_>) -> Result<PathBuf, String> {
        self.write(&format!("{name}.toml"), &services_text(services))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a services file of the benchmarks holds: the API token, the echo service and the bulk one.
pub(crate) struct Services<'a> {
    /// This very binary: the echo service's command (`echo-server`).
    pub exe: &'a Path,
    /// The API's bearer token (scope "sessions").
    pub bearer: &'a str,
    /// The echo service's first port: session `index` listens on `port + index`.
    pub port: u16,
    /// Echo sessions at once.
    pub count: u32,
    /// Seconds a session waits after its last client leaves before its command is stopped.
    pub linger: u64,
    /// The bulk service's count.
    pub bulk: u64,
}

/// The services file of `services`.
pub(crate) fn services_text(services: &Services<'_>) -> String {
    // A JSON string is a TOML basic string: quotes and backslashes in the path are escaped alike.
    let exe = serde_json::Value::from(services.exe.display().to_string()).to_string();
    let Services {
        bearer,
        port,
        count,
        linger,
        bulk,
        ..
    } = services;
    format!(
        r#"# Written by wsproxy-bench for one start of the proxy; removed when it ends.
[sessions]
# Longer than any run: reservations neither expire nor launch while they are counted.
reserve_timeout = {RESERVE_TIMEOUT_SECS}
start_timeout = 10
# After its last client leaves, a session waits this long for another, then its command is stopped.
linger = {linger}
stop_grace = 2

[[api.token]]
token = "{bearer}"
scopes = ["sessions"]
user = "bench"

# Launched on each first connect, {count} at once at most: index i on port {port}+i, found free for this start.
[[service]]
name = "{ECHO}"
count = {count}
command = [{exe}, "echo-server", "{{port}}"]
port = "{port}+{{index}}"
target = "127.0.0.1:{{port}}"

# Reserved only: nothing connects with its tokens, so it never launches.
[[service]]
name = "{BULK}"
count = {bulk}
command = [{exe}, "echo-server", "0"]
target = "unix:{{runtime_dir}}/never.sock"
"#
    )
}

/// Each --proxy of `what` (sessions, cluster) takes the services file, and no two share a name.
pub fn check_templates(specs: &[ProxySpec], what: &str) -> Result<(), String> {
    for (i, spec) in specs.iter().enumerate() {
        if spec.upstream != Upstream::Services {
            return Err(format!(
                "--proxy {}: a {what} template has {SERVICES} (the services file) instead of a target",
                spec.name
            ));
        }
        if specs[..i].iter().any(|other| other.name == spec.name) {
            return Err(format!("two proxies are named `{}`", spec.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_file_escapes_the_path_and_keeps_the_placeholders() {
        let options = Options {
            rounds: 1,
            launches: 1,
            conns: 1,
            secs: Duration::from_secs(2),
            bearer: "bench-1".into(),
            exe: PathBuf::from("/t/a \"b\"/wsproxy-bench"),
        };
        let services = Services {
            exe: &options.exe,
            bearer: &options.bearer,
            port: 40001,
            count: 1,
            linger: 60,
            bulk: options.bulk_count(),
        };
        let text = services_text(&services);
        assert!(
            text.contains(r#"command = ["/t/a \"b\"/wsproxy-bench", "echo-server", "{port}"]"#),
            "{text}"
        );
        assert!(
            text.contains("port = \"40001+{index}\"\ntarget = \"127.0.0.1:{port}\""),
            "{text}"
        );
        assert!(text.contains("count = 200000\n"), "{text}");
        assert!(text.contains("token = \"bench-1\""), "{text}");
    }
}
