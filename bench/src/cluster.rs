//! Scenario "cluster": wsproxy instances sharing one pool of sessions through Redis
//! (`[sessions] store`), the two numbers of the scale-out issue, side by side in one run.
//!
//! - Reservations: through one instance, then through `instances` instances started with the
//!   same services file, `conns` keep-alive API clients spread evenly over them (`reserve`) for
//!   `secs` seconds. Each client deletes each reservation right after its 201 (the rate counts the
//!   201s), so at most one per client is live: the Redis store claims the lowest free index by
//!   trying each from 0, so a pool that only grew would make each claim slower than the last.
//!   Afterwards every index must be free again (GET /api/v1/services), else it is noted. The CPU
//!   time per reservation of the instances together and of redis-server comes with it.
//! - Relay latency: with the bigger set, before its reservations, a session of `wsproxy-bench
//!   echo-server 0 --announce` (a loopback port the kernel chooses, announced on stdout) is
//!   reserved and launched by the first instance, the owner, through a first connection that
//!   stays open. Then `connects` times, through the owner and through the second instance (which
//!   forwards the client whole to the owner: the target is loopback there), alternately: connect,
//!   upgrade, 32 bytes, timed to the first echoed byte. Then one connection through each and
//!   `round_trips` 32-byte round trips on each, alternately, one at a time, so both paths see the
//!   same machine. Per path and round p50 and p99, and the forwarded path's extra (its p50 minus
//!   the owner's, its p99 minus the owner's). The owner's output must show the forwarded clients.
//!
//! One redis-server is started for the run, on a free port. Each set of instances starts afresh
//! with a services file of its own, on a namespace of its own; after it stops, the database is
//! emptied (FLUSHDB). Ended sessions stay in the store for 10 minutes and every instance reads
//! every record every 2 s (to find lost instances), so the store's work grows with what a run
//! reserved: each measurement starts from an empty store, and rounds compare like with like.
//! Rounds alternate: one instance, then the bigger set, for each proxy in the order given.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::time::timeout;

use crate::cli;
use crate::echo_server::ANNOUNCE;
use crate::http_client::Client;
use crate::peer::Peer;
use crate::plan;
use crate::procfs;
use crate::proxy::{Proxy, ProxySpec};
use crate::redis_server::RedisServer;
use crate::report::{self, Kind, Report};
use crate::reserve;
use crate::rng::XorShift;
use crate::rtt;
use crate::sessions::{Scratch, first_echo};
use crate::stats::Latency;

/// The service whose session's clients are timed, and the one only reserved.
const ECHO: &str = "echo";
const BULK: &str = "bulk";
/// The reserve_timeout of the services file: longer than any run.
const RESERVE_TIMEOUT_SECS: u64 = 3600;
/// A launch (the first connection's upgrade and echo) that takes longer fails the round.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);
/// What the owner logs for a client another instance forwarded to it.
const FORWARDED: &str = "forwarded client";

pub struct Options {
    pub rounds: u32,
    pub instances: usize,
    pub conns: usize,
    pub secs: Duration,
    pub connects: usize,
    pub round_trips: usize,
    /// `Authorization: Bearer` for the API, random per run.
    bearer: String,
    /// This very binary: it is the command (`echo-server`).
    exe: PathBuf,
}

impl Options {
    /// The bulk service's count: every client's live reservation, twice over.
    fn bulk_count(&self) -> usize {
        (2 * self.conns).max(16)
    }
}

/// What one measurement needs besides its proxy: the run's options, scratch directory and Redis.
struct Context<'a> {
    options: &'a Options,
    scratch: &'a Scratch,
    redis: &'a RedisServer,
}

/// The rows of the reservations through one set of instances.
struct SetRows {
    rate: Kind,
    cpu_instances: Kind,
    cpu_redis: Kind,
}

const ONE: SetRows = SetRows {
    rate: report::CLUSTER_RESERVATIONS_ONE,
    cpu_instances: report::CLUSTER_CPU_INSTANCES_ONE,
    cpu_redis: report::CLUSTER_CPU_REDIS_ONE,
};
const MANY: SetRows = SetRows {
    rate: report::CLUSTER_RESERVATIONS_MANY,
    cpu_instances: report::CLUSTER_CPU_INSTANCES_MANY,
    cpu_redis: report::CLUSTER_CPU_REDIS_MANY,
};

impl SetRows {
    fn of(size: usize) -> &'static SetRows {
        match size {
            1 => &ONE,
            _ => &MANY,
        }
    }
}

pub async fn run(args: cli::Cluster) -> Result<(), String> {
    let specs = &args.proxies;
    crate::sessions::check_templates(specs, "cluster")?;
    let options = Options {
        rounds: args.rounds,
        instances: args.instances as usize,
        conns: args.reserve_conns as usize,
        secs: Duration::from_secs(args.reserve_secs),
        connects: args.connects as usize,
        round_trips: args.round_trips as usize,
        bearer: format!("bench-{:016x}", XorShift::from_entropy().next_u64()),
        exe: std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?,
    };
    let scratch = Scratch::new("cluster")?;
    let redis = RedisServer::start(scratch.path()).await?;
    let context = Context {
        options: &options,
        scratch: &scratch,
        redis: &redis,
    };
    let peers: Vec<Peer<'_>> = specs.iter().map(Peer::Proxy).collect();
    let (title, settings) = describe(&options);
    let mut report = Report::new(title.clone(), &peers, settings);
    rows(&options, &mut report);
    eprintln!("{title}\neach line is one run");
    for round in 1..=options.rounds {
        for (index, spec) in specs.iter().enumerate() {
            for size in [1, options.instances] {
                let outcome = measure_set(spec, index, size, &context, &mut report, round).await;
                if let Err(e) = outcome {
                    let set = instances_label(size);
                    eprintln!("  {} {set}: FAILED: {e}", spec.name);
                    let first = e.lines().next().unwrap_or_default();
                    report.note(format!("{} {set}, round {round}, failed: {first}", spec.name));
                }
            }
        }
    }
    redis.stop().await;
    plan::finish(&report, args.json.as_deref())
}

fn rows(options: &Options, report: &mut Report) {
    let (conns, many) = (options.conns, options.instances);
    report.metric_as(ONE.rate, format!("reservations, {conns} keep-alive conns, 1 instance"));
    report.metric_as(
        MANY.rate,
        format!("reservations, {conns} keep-alive conns, {many} instances"),
    );
    report.metric_as(ONE.cpu_instances, "wsproxy CPU per reservation, 1 instance".into());
    report.metric_as(
        MANY.cpu_instances,
        format!("wsproxy CPU per reservation, {many} instances"),
    );
    report.metric_as(ONE.cpu_redis, "redis-server CPU per reservation, 1 instance".into());
    report.metric_as(
        MANY.cpu_redis,
        format!("redis-server CPU per reservation, {many} instances"),
    );
    for kind in [
        report::CLUSTER_RTT_OWNER_P50,
        report::CLUSTER_RTT_OTHER_P50,
        report::CLUSTER_RTT_EXTRA_P50,
        report::CLUSTER_RTT_OWNER_P99,
        report::CLUSTER_RTT_OTHER_P99,
        report::CLUSTER_RTT_EXTRA_P99,
        report::CLUSTER_CONNECT_OWNER_P50,
        report::CLUSTER_CONNECT_OTHER_P50,
        report::CLUSTER_CONNECT_EXTRA_P50,
        report::CLUSTER_CONNECT_OWNER_P99,
        report::CLUSTER_CONNECT_OTHER_P99,
        report::CLUSTER_CONNECT_EXTRA_P99,
    ] {
        report.metric(kind);
    }
    report.goals("the scale-out issue", report::cluster_goals(options.instances as u64));
    report.explain(
        "medians over the rounds; (ratio) = median / the same proxy's median of the row for 1 instance, or via the\n\
         owner; each reservation is deleted right after its 201 (the rate counts the 201s); CPU per reservation:\n\
         the wsproxy instances together, and redis-server; the owner is the instance that launched the session,\n\
         the other forwards its clients to it; extra = the other's p50 (p99) − the owner's, per round",
    );
}

fn instances_label(size: usize) -> String {
    match size {
        1 => "1 instance".into(),
        n => format!("{n} instances"),
    }
}

/// The namespace of one set of instances: a fresh pool for each measurement.
fn namespace(spec: usize, round: u32, size: usize) -> String {
    format!("bench{}-p{spec}-r{round}-n{size}", std::process::id())
}

/// Starts `size` instances of `spec` on a namespace of their own, measures through them, stops
/// them and empties the store.
async fn measure_set(
    spec: &ProxySpec,
    index: usize,
    size: usize,
    context: &Context<'_>,
    report: &mut Report,
    round: u32,
) -> Result<(), String> {
    let options = context.options;
    let namespace = namespace(index, round, size);
    let text = services_text(options, context.redis.addr().port(), &namespace);
    let file = context.scratch.write(&format!("{namespace}.toml"), &text)?;
    let file = file.display().to_string();
    let mut instances = Vec::with_capacity(size);
    let mut outcome = Ok(());
    for _ in 0..size {
        match Proxy::start(spec, &file).await {
            Ok(instance) => instances.push(instance),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_ok() {
        outcome = measure_on(&instances, spec, context, report, round).await;
    }
    let notes: String = match &outcome {
        Ok(()) => String::new(),
        Err(_) => instances.iter().map(Proxy::output_note).collect(),
    };
    let mut stopped = Ok(());
    for instance in instances {
        let stop = instance.stop().await;
        stopped = stopped.and(stop);
    }
    let flushed = context.redis.flush().await;
    outcome.map_err(|e| format!("{e}{notes}"))?;
    stopped?;
    flushed
}

/// The relay latency (with more than one instance), then the reservations.
async fn measure_on(
    instances: &[Proxy],
    spec: &ProxySpec,
    context: &Context<'_>,
    report: &mut Report,
    round: u32,
) -> Result<(), String> {
    let options = context.options;
    let (name, rounds) = (spec.name.as_str(), options.rounds);
    let set = SetRows::of(instances.len());
    if let [owner, other, ..] = instances {
        let times = relay_latency(owner, other, options)
            .await
            .map_err(|e| format!("relay latency: {e}"))?;
        let summary = times.summary().ok_or("relay latency: no samples")?;
        summary.record(report, name);
        eprintln!(
            "  round {round}/{rounds}  {name:<12} round trip p50 {:.1} µs via the owner, {:.1} µs via another (+{:.1}); \
             p99 {:.1} / {:.1} µs (+{:.1})",
            summary.rtt.owner.p50,
            summary.rtt.other.p50,
            summary.rtt.extra_p50(),
            summary.rtt.owner.p99,
            summary.rtt.other.p99,
            summary.rtt.extra_p99()
        );
        eprintln!(
            "  round {round}/{rounds}  {name:<12} connect → first echo p50 {:.3} ms via the owner, {:.3} ms via another \
             (+{:.3}); p99 {:.3} / {:.3} ms (+{:.3})",
            summary.connect.owner.p50,
            summary.connect.other.p50,
            summary.connect.extra_p50(),
            summary.connect.owner.p99,
            summary.connect.other.p99,
            summary.connect.extra_p99()
        );
    }

    let ports: Vec<u16> = instances.iter().map(Proxy::port).collect();
    let cpu = || {
        let instances: Duration = instances.iter().map(|p| procfs::cpu(Some(p.group()))).sum();
        let redis = context.redis.pid().map(procfs::process_cpu).unwrap_or_default();
        (instances, redis)
    };
    let load = reserve::Load {
        ports: &ports,
        bearer: &options.bearer,
        service: BULK,
        conns: options.conns,
        secs: options.secs,
        free: true,
    };
    let before = cpu();
    let reserved = reserve::run(&load).await.map_err(|e| format!("reservations: {e}"))?;
    let after = cpu();
    let rate = reserved.rate();
    let per = |spent: Duration| spent.as_secs_f64() * 1e6 / reserved.done.max(1) as f64;
    let (cpu_instances, cpu_redis) = (
        per(after.0.saturating_sub(before.0)),
        per(after.1.saturating_sub(before.1)),
    );
    report.record(set.rate, name, rate);
    report.record(set.cpu_instances, name, cpu_instances);
    report.record(set.cpu_redis, name, cpu_redis);
    let by_second: Vec<String> = reserved.by_second.iter().map(|n| n.to_string()).collect();
    let label = instances_label(instances.len());
    eprintln!(
        "  round {round}/{rounds}  {name:<12} reservations, {label:<11} {rate:>7.0} /s  ({} in {:.2} s, {} failed; \
         each second: {}; CPU per reservation: wsproxy {cpu_instances:.1} µs, redis-server {cpu_redis:.1} µs)",
        reserved.done,
        reserved.elapsed.as_secs_f64(),
        reserved.failed,
        by_second.join(" ")
    );
    if let Some(e) = &reserved.first_error {
        report.note(format!(
            "{name} reservations through {label}, round {round}: {} calls failed; the first: {e}",
            reserved.failed
        ));
    }
    if reserved.reconnects > 0 {
        report.note(format!(
            "{name} reservations through {label}, round {round}: {} reconnections (the API closed keep-alive \
             connections)",
            reserved.reconnects
        ));
    }
    let free = free_indexes(ports[0], &options.bearer).await?;
    if free != options.bulk_count() {
        report.note(format!(
            "{name} reservations through {label}, round {round}: {} of {} indexes still taken after the run",
            options.bulk_count().saturating_sub(free),
            options.bulk_count()
        ));
    }
    Ok(())
}

/// The bulk service's free indexes, as the API counts them.
async fn free_indexes(port: u16, bearer: &str) -> Result<usize, String> {
    let mut api = Client::new(port, bearer);
    let request = api.request("GET", "/api/v1/services", None);
    let response = api
        .call(&request)
        .await
        .map_err(|e| format!("GET /api/v1/services: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "GET /api/v1/services was answered {}: {}",
            response.status,
            response.excerpt()
        ));
    }
    let services: serde_json::Value =
        serde_json::from_slice(&response.body).map_err(|e| format!("GET /api/v1/services: not JSON: {e}"))?;
    services
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == BULK))
        .and_then(|bulk| bulk["free"].as_u64())
        .map(|free| free as usize)
        .ok_or_else(|| format!("GET /api/v1/services has no free count for {BULK}: {services}"))
}

/// Samples through the owner and through the other instance, in µs (round trips) or ms
/// (connects).
#[derive(Default)]
struct Paths {
    owner: Vec<f64>,
    other: Vec<f64>,
}

/// A path pair's percentiles.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Compared {
    owner: Latency,
    other: Latency,
}

impl Paths {
    fn compared(&self) -> Option<Compared> {
        Some(Compared {
            owner: Latency::of(self.owner.clone())?,
            other: Latency::of(self.other.clone())?,
        })
    }
}

impl Compared {
    fn extra_p50(&self) -> f64 {
        self.other.p50 - self.owner.p50
    }

    fn extra_p99(&self) -> f64 {
        self.other.p99 - self.owner.p99
    }
}

#[derive(Default)]
struct RelayTimes {
    rtt: Paths,
    connect: Paths,
}

struct Summary {
    rtt: Compared,
    connect: Compared,
}

impl RelayTimes {
    fn summary(&self) -> Option<Summary> {
        Some(Summary {
            rtt: self.rtt.compared()?,
            connect: self.connect.compared()?,
        })
    }
}

impl Summary {
    fn record(&self, report: &mut Report, name: &str) {
        let rows = [
            (report::CLUSTER_RTT_OWNER_P50, self.rtt.owner.p50),
            (report::CLUSTER_RTT_OTHER_P50, self.rtt.other.p50),
            (report::CLUSTER_RTT_EXTRA_P50, self.rtt.extra_p50()),
            (report::CLUSTER_RTT_OWNER_P99, self.rtt.owner.p99),
            (report::CLUSTER_RTT_OTHER_P99, self.rtt.other.p99),
            (report::CLUSTER_RTT_EXTRA_P99, self.rtt.extra_p99()),
            (report::CLUSTER_CONNECT_OWNER_P50, self.connect.owner.p50),
            (report::CLUSTER_CONNECT_OTHER_P50, self.connect.other.p50),
            (report::CLUSTER_CONNECT_EXTRA_P50, self.connect.extra_p50()),
            (report::CLUSTER_CONNECT_OWNER_P99, self.connect.owner.p99),
            (report::CLUSTER_CONNECT_OTHER_P99, self.connect.other.p99),
            (report::CLUSTER_CONNECT_EXTRA_P99, self.connect.extra_p99()),
        ];
        for (kind, value) in rows {
            report.record(kind, name, value);
        }
    }
}

/// Reserves an echo session through `owner`, launches it there, times its clients through
/// `owner` and through `other`, and deletes it.
async fn relay_latency(owner: &Proxy, other: &Proxy, options: &Options) -> Result<RelayTimes, String> {
    let mut api = Client::new(owner.port(), &options.bearer);
    let session = reserve::reserve_one(&mut api, ECHO).await?;
    let (id, path) = (&session.id, session.path());
    let timed = time_clients(owner, other, &path, options).await;
    // Whatever happened, stop the session: its command must not outlive the set.
    let request = api.request("DELETE", &format!("/api/v1/sessions/{id}"), None);
    let deleted = api.call(&request).await;
    let times = timed?;
    match deleted {
        Ok(response) if response.status == 204 => Ok(times),
        Ok(response) => Err(format!(
            "DELETE of session {id} was answered {}: {}",
            response.status,
            response.excerpt()
        )),
        Err(e) => Err(format!("DELETE of session {id}: {e}")),
    }
}

async fn time_clients(owner: &Proxy, other: &Proxy, path: &str, options: &Options) -> Result<RelayTimes, String> {
    // The first connection launches the command on the owner; it stays open throughout.
    let mut holder = timeout(LAUNCH_TIMEOUT, async {
        let mut conn = rtt::open(owner.port(), path).await?;
        rtt::trip(&mut conn, 0).await?;
        Ok::<_, String>(conn)
    })
    .await
    .map_err(|_| format!("no echo within {} s of the launch", LAUNCH_TIMEOUT.as_secs()))?
    .map_err(|e| format!("the launch through the owner: {e}"))?;
    let connect = |port: u16| async move {
        let elapsed = timeout(rtt::TRIP_TIMEOUT, first_echo(port, path))
            .await
            .map_err(|_| format!("no echo within {} s of connecting", rtt::TRIP_TIMEOUT.as_secs()))??;
        Ok::<_, String>(elapsed.as_secs_f64() * 1e3)
    };
    let mut times = RelayTimes::default();
    // One of each first, untimed: the other instance's first forwarding call.
    connect(owner.port()).await?;
    connect(other.port()).await?;
    for i in 0..options.connects {
        // Alternating which goes first, so neither always follows the other's close.
        if i % 2 == 0 {
            times.connect.owner.push(connect(owner.port()).await?);
            times.connect.other.push(connect(other.port()).await?);
        } else {
            times.connect.other.push(connect(other.port()).await?);
            times.connect.owner.push(connect(owner.port()).await?);
        }
    }
    let mut direct = rtt::open(owner.port(), path).await?;
    let mut forwarded = rtt::open(other.port(), path).await?;
    for i in 0..rtt::WARMUP as u64 {
        rtt::trip(&mut direct, i).await?;
        rtt::trip(&mut forwarded, i).await?;
    }
    if !owner.said(FORWARDED) {
        return Err(format!(
            "the owner's output shows no `{FORWARDED}`: the other instance did not forward its clients"
        ));
    }
    for i in 0..options.round_trips as u64 {
        let start = Instant::now();
        rtt::trip(&mut direct, i).await?;
        times.rtt.owner.push(start.elapsed().as_secs_f64() * 1e6);
        let start = Instant::now();
        rtt::trip(&mut forwarded, i).await?;
        times.rtt.other.push(start.elapsed().as_secs_f64() * 1e6);
    }
    rtt::trip(&mut holder, 1).await?;
    direct.close().await;
    forwarded.close().await;
    holder.close().await;
    Ok(times)
}

/// The table's title and the settings for the JSON file.
fn describe(options: &Options) -> (String, serde_json::Value) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let title = format!(
        "wsproxy-bench cluster: {} round(s) on {cpus} CPUs, 127.0.0.1, one redis-server; reservations (each deleted \
         at once) from {} keep-alive conns × {} s through 1 and through {} instances; a session launched by one \
         instance: {} connects and {} × {} B round trips through it and through another",
        options.rounds,
        options.conns,
        options.secs.as_secs(),
        options.instances,
        options.connects,
        options.round_trips,
        rtt::PAYLOAD
    );
    let settings = json!({
        "rounds": options.rounds,
        "cluster": {
            "instances": options.instances,
            "reserve_conns": options.conns,
            "reserve_secs": options.secs.as_secs(),
            "reservations_deleted": true,
            "bulk_count": options.bulk_count(),
            "connects": options.connects,
            "untimed_connects": 1,
            "round_trips": options.round_trips,
            "untimed_round_trips": rtt::WARMUP,
            "payload_bytes": rtt::PAYLOAD,
            "command": [options.exe.display().to_string(), "echo-server", "0", "--announce"],
            "reserve_timeout_secs": RESERVE_TIMEOUT_SECS,
        },
    });
    (title, settings)
}

/// The services file every instance of a set shares: the store (Redis on `redis_port`,
/// `namespace`), the API token, the echo service and the bulk one.
fn services_text(options: &Options, redis_port: u16, namespace: &str) -> String {
    // A JSON string is a TOML basic string: quotes and backslashes in the path are escaped alike.
    let exe = serde_json::Value::from(options.exe.display().to_string()).to_string();
    let bearer = &options.bearer;
    let count = options.bulk_count();
    format!(
        r#"# Written by wsproxy-bench cluster for one set of instances; removed when the run ends.
[sessions]
store = "redis://127.0.0.1:{redis_port}/0?namespace={namespace}"
# Longer than any run: reservations never expire while they are counted.
reserve_timeout = {RESERVE_TIMEOUT_SECS}
start_timeout = 10
# The echo session ends by DELETE, not when its timed clients leave.
linger = 60
stop_grace = 2

[[api.token]]
token = "{bearer}"
scopes = ["sessions"]
user = "bench"

# Launched by the instance that takes its first connection, on a loopback port the kernel
# chooses: only that instance reaches it, the others forward their clients to it.
[[service]]
name = "{ECHO}"
count = 1
command = [{exe}, "echo-server", "0", "--announce"]
target = {{ announce = '{ANNOUNCE} (?P<host>127\.0\.0\.1):(?P<port>\d+)' }}

# Reserved and deleted at once, over and over: at most one live reservation per client.
[[service]]
name = "{BULK}"
count = {count}
command = [{exe}, "echo-server", "0"]
target = "unix:{{runtime_dir}}/never.sock"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            rounds: 1,
            instances: 3,
            conns: 24,
            secs: Duration::from_secs(2),
            connects: 1,
            round_trips: 1,
            bearer: "bench-1".into(),
            exe: PathBuf::from("/t/a \"b\"/wsproxy-bench"),
        }
    }

    #[test]
    fn the_services_file_names_the_store_and_the_announced_echo() {
        let text = services_text(&options(), 6399, "bench7-p0-r2-n3");
        assert!(
            text.contains("store = \"redis://127.0.0.1:6399/0?namespace=bench7-p0-r2-n3\"\n"),
            "{text}"
        );
        assert!(
            text.contains(r#"command = ["/t/a \"b\"/wsproxy-bench", "echo-server", "0", "--announce"]"#),
            "{text}"
        );
        // A TOML literal string: the regex's backslashes stay as they are.
        assert!(
            text.contains(r"target = { announce = 'echo-server listening on (?P<host>127\.0\.0\.1):(?P<port>\d+)' }"),
            "{text}"
        );
        assert!(text.contains("name = \"bulk\"\ncount = 48\n"), "{text}");
        assert!(text.contains("token = \"bench-1\""), "{text}");
    }

    #[test]
    fn every_set_has_a_namespace_of_its_own_without_colons() {
        let names = [
            namespace(0, 1, 1),
            namespace(0, 1, 3),
            namespace(0, 2, 1),
            namespace(1, 1, 1),
        ];
        for (i, name) in names.iter().enumerate() {
            assert!(!name.contains(':') && !name.is_empty(), "{name}");
            assert!(!names[..i].contains(name), "{names:?}");
        }
    }

    #[test]
    fn the_extra_is_the_forwarded_paths_percentile_minus_the_owners() {
        let times = RelayTimes {
            rtt: Paths {
                owner: (1..=100).map(f64::from).collect(),
                other: (1..=100).rev().map(|v| f64::from(v) + 30.0).collect(),
            },
            connect: Paths {
                owner: vec![1.0, 2.0],
                other: vec![1.5, 4.0],
            },
        };
        let summary = times.summary().unwrap();
        assert_eq!((summary.rtt.owner.p50, summary.rtt.other.p50), (50.0, 80.0));
        assert_eq!((summary.rtt.extra_p50(), summary.rtt.extra_p99()), (30.0, 30.0));
        assert_eq!((summary.connect.extra_p50(), summary.connect.extra_p99()), (0.5, 2.0));
        let empty = RelayTimes::default();
        assert!(empty.summary().is_none());
    }

    #[test]
    fn the_bulk_count_covers_every_client_twice() {
        let mut options = options();
        assert_eq!(options.bulk_count(), 48);
        options.conns = 1;
        assert_eq!(options.bulk_count(), 16);
    }
}
