//! Results: every run of every metric, medians, ratios to the no-proxy baseline, the issue's
//! targets checked, as a plain table and as JSON.
//!
//! The table has one row per metric and one column per peer; a cell is the median over the
//! rounds, followed by its ratio to the baseline's median in parentheses (in the rows with a
//! token plugin, to the same proxy's median without tokens). Below it, each target from issue 5
//! and from the token issue that the peers present allow to judge is marked met or missed. The
//! sessions scenario's table has no baseline (its cells are medians over launches and rounds, and
//! p90s) and judges the sessions issue's targets.

use serde_json::{Map, Value, json};

use crate::peer::Peer;
use crate::stats::median;

/// What a metric is; the runs are kept by `Report`.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    /// Name in the JSON file and in the checks.
    pub key: &'static str,
    /// Row heading in the table.
    pub label: &'static str,
    pub unit: &'static str,
    pub decimals: usize,
    /// What the table's ratio is to.
    pub ratio: Ratio,
}

/// What a cell's ratio is to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ratio {
    /// No ratio (proxy memory and CPU: the baseline has no proxy).
    None,
    /// The baseline's median of the same metric.
    Baseline,
    /// The same peer's median of the metric with this key (with tokens: the one without).
    Metric(&'static str),
}

const fn kind(key: &'static str, label: &'static str, unit: &'static str, decimals: usize, ratio: Ratio) -> Kind {
    Kind {
        key,
        label,
        unit,
        decimals,
        ratio,
    }
}

pub const DOWN: Kind = kind("down", "target → browser, 1 conn", "MiB/s", 0, Ratio::Baseline);
pub const UP: Kind = kind("up", "browser → target, 1 conn", "MiB/s", 0, Ratio::Baseline);
pub const RTT_P50: Kind = kind("rtt_p50", "round trip p50, 1 conn", "µs", 1, Ratio::Baseline);
pub const RTT_P99: Kind = kind("rtt_p99", "round trip p99, 1 conn", "µs", 1, Ratio::Baseline);
pub const RTT_MAX: Kind = kind("rtt_max", "round trip max, 1 conn", "µs", 0, Ratio::Baseline);
pub const RTT64: Kind = kind("rtt64", "round trips, 64 conns", "/s", 0, Ratio::Baseline);
pub const CONNECTS: Kind = kind("connects", "connects, 32 at a time", "/s", 0, Ratio::Baseline);
pub const CPU_DOWN: Kind = kind("cpu_down", "CPU per GiB down, all processes", "ms", 0, Ratio::Baseline);
pub const CPU_DOWN_PROXY: Kind = kind("cpu_down_proxy", "CPU per GiB down, proxy", "ms", 0, Ratio::None);
pub const CPU_UP: Kind = kind("cpu_up", "CPU per GiB up, all processes", "ms", 0, Ratio::Baseline);
pub const CPU_UP_PROXY: Kind = kind("cpu_up_proxy", "CPU per GiB up, proxy", "ms", 0, Ratio::None);
pub const CPU_RTT64: Kind = kind(
    "cpu_rtt64",
    "CPU per round trip (64 conns), all",
    "µs",
    1,
    Ratio::Baseline,
);
pub const CPU_RTT64_PROXY: Kind = kind(
    "cpu_rtt64_proxy",
    "CPU per round trip (64 conns), proxy",
    "µs",
    1,
    Ratio::None,
);
pub const CPU_CONNECT: Kind = kind(
    "cpu_connect",
    "CPU per connect, all processes",
    "µs",
    0,
    Ratio::Baseline,
);
pub const CPU_CONNECT_PROXY: Kind = kind("cpu_connect_proxy", "CPU per connect, proxy", "µs", 0, Ratio::None);
/// Connects with a token plugin (the labels name the token count), as ratios to without.
pub const CONNECTS_TOKEN_FILE: Kind = kind(
    "connects_token_file",
    "connects, TokenFile",
    "/s",
    0,
    Ratio::Metric(CONNECTS.key),
);
pub const CONNECTS_TOKEN_REDIS: Kind = kind(
    "connects_token_redis",
    "connects, TokenRedis",
    "/s",
    0,
    Ratio::Metric(CONNECTS.key),
);
pub const CPU_CONNECT_TOKEN_FILE_PROXY: Kind = kind(
    "cpu_connect_token_file_proxy",
    "CPU per connect, TokenFile, proxy",
    "µs",
    0,
    Ratio::Metric(CPU_CONNECT_PROXY.key),
);
pub const CPU_CONNECT_TOKEN_REDIS_PROXY: Kind = kind(
    "cpu_connect_token_redis_proxy",
    "CPU per connect, TokenRedis, proxy",
    "µs",
    0,
    Ratio::Metric(CPU_CONNECT_PROXY.key),
);
/// The sessions scenario (`sessions`): one sample per launch, so the cell is the median over the
/// launches; the p90 rows are recorded once, over every launch of every round.
pub const LAUNCH: Kind = kind(
    "launch",
    "launch through the proxy, upgrade → first echo",
    "ms",
    2,
    Ratio::None,
);
pub const LAUNCH_P90: Kind = kind(
    "launch_p90",
    "launch through the proxy, upgrade → first echo, p90",
    "ms",
    2,
    Ratio::None,
);
pub const LAUNCH_ALONE: Kind = kind(
    "launch_alone",
    "the command alone, exec → listening",
    "ms",
    2,
    Ratio::None,
);
pub const LAUNCH_ALONE_P90: Kind = kind(
    "launch_alone_p90",
    "the command alone, exec → listening, p90",
    "ms",
    2,
    Ratio::None,
);
pub const LAUNCH_OVERHEAD: Kind = kind(
    "launch_overhead",
    "launch overhead (each launch − the start before it)",
    "ms",
    2,
    Ratio::None,
);
pub const LAUNCH_OVERHEAD_P90: Kind = kind("launch_overhead_p90", "launch overhead, p90", "ms", 2, Ratio::None);
pub const RESERVATIONS: Kind = kind("reservations", "reservations, keep-alive", "/s", 0, Ratio::None);
pub const CPU_RESERVATION_PROXY: Kind = kind(
    "cpu_reservation_proxy",
    "CPU per reservation, proxy",
    "µs",
    1,
    Ratio::None,
);
/// The cluster scenario (`cluster`): reservations through one instance and through several
/// sharing a Redis store (the bigger set's rows are ratios to one instance's), with the CPU time
/// of the wsproxy instances and of redis-server per reservation.
pub const CLUSTER_RESERVATIONS_ONE: Kind = kind(
    "cluster_reservations_one",
    "reservations, 1 instance",
    "/s",
    0,
    Ratio::None,
);
pub const CLUSTER_RESERVATIONS_MANY: Kind = kind(
    "cluster_reservations_many",
    "reservations, more instances",
    "/s",
    0,
    Ratio::Metric(CLUSTER_RESERVATIONS_ONE.key),
);
pub const CLUSTER_CPU_INSTANCES_ONE: Kind = kind(
    "cluster_cpu_instances_one",
    "wsproxy CPU per reservation, 1 instance",
    "µs",
    1,
    Ratio::None,
);
pub const CLUSTER_CPU_INSTANCES_MANY: Kind = kind(
    "cluster_cpu_instances_many",
    "wsproxy CPU per reservation, more instances",
    "µs",
    1,
    Ratio::Metric(CLUSTER_CPU_INSTANCES_ONE.key),
);
pub const CLUSTER_CPU_REDIS_ONE: Kind = kind(
    "cluster_cpu_redis_one",
    "redis-server CPU per reservation, 1 instance",
    "µs",
    1,
    Ratio::None,
);
pub const CLUSTER_CPU_REDIS_MANY: Kind = kind(
    "cluster_cpu_redis_many",
    "redis-server CPU per reservation, more instances",
    "µs",
    1,
    Ratio::Metric(CLUSTER_CPU_REDIS_ONE.key),
);
/// A running session's clients through the instance that launched it (the owner) and through
/// another one (forwarded to the owner); `extra` is the other's minus the owner's, per round.
pub const CLUSTER_RTT_OWNER_P50: Kind = kind(
    "cluster_rtt_owner_p50",
    "round trip via the owner, p50",
    "µs",
    1,
    Ratio::None,
);
pub const CLUSTER_RTT_OWNER_P99: Kind = kind(
    "cluster_rtt_owner_p99",
    "round trip via the owner, p99",
    "µs",
    1,
    Ratio::None,
);
pub const CLUSTER_RTT_OTHER_P50: Kind = kind(
    "cluster_rtt_other_p50",
    "round trip via another instance, p50",
    "µs",
    1,
    Ratio::Metric(CLUSTER_RTT_OWNER_P50.key),
);
pub const CLUSTER_RTT_OTHER_P99: Kind = kind(
    "cluster_rtt_other_p99",
    "round trip via another instance, p99",
    "µs",
    1,
    Ratio::Metric(CLUSTER_RTT_OWNER_P99.key),
);
pub const CLUSTER_RTT_EXTRA_P50: Kind = kind(
    "cluster_rtt_extra_p50",
    "round trip, extra when forwarded, p50",
    "µs",
    1,
    Ratio::None,
);
pub const CLUSTER_RTT_EXTRA_P99: Kind = kind(
    "cluster_rtt_extra_p99",
    "round trip, extra when forwarded, p99",
    "µs",
    1,
    Ratio::None,
);
pub const CLUSTER_CONNECT_OWNER_P50: Kind = kind(
    "cluster_connect_owner_p50",
    "connect → first echo via the owner, p50",
    "ms",
    3,
    Ratio::None,
);
pub const CLUSTER_CONNECT_OWNER_P99: Kind = kind(
    "cluster_connect_owner_p99",
    "connect → first echo via the owner, p99",
    "ms",
    3,
    Ratio::None,
);
pub const CLUSTER_CONNECT_OTHER_P50: Kind = kind(
    "cluster_connect_other_p50",
    "connect → first echo via another instance, p50",
    "ms",
    3,
    Ratio::Metric(CLUSTER_CONNECT_OWNER_P50.key),
);
pub const CLUSTER_CONNECT_OTHER_P99: Kind = kind(
    "cluster_connect_other_p99",
    "connect → first echo via another instance, p99",
    "ms",
    3,
    Ratio::Metric(CLUSTER_CONNECT_OWNER_P99.key),
);
pub const CLUSTER_CONNECT_EXTRA_P50: Kind = kind(
    "cluster_connect_extra_p50",
    "connect → first echo, extra when forwarded, p50",
    "ms",
    3,
    Ratio::None,
);
pub const CLUSTER_CONNECT_EXTRA_P99: Kind = kind(
    "cluster_connect_extra_p99",
    "connect → first echo, extra when forwarded, p99",
    "ms",
    3,
    Ratio::None,
);
pub const IDLE_TRIED: Kind = kind("idle_tried", "idle conns the fd limit allowed", "conns", 0, Ratio::None);
pub const IDLE_HELD: Kind = kind("idle_held", "idle conns held", "conns", 0, Ratio::None);
pub const IDLE_RSS: Kind = kind("idle_rss", "proxy RSS per idle conn", "KiB", 2, Ratio::None);
pub const IDLE_PSS: Kind = kind("idle_pss", "proxy PSS per idle conn", "KiB", 2, Ratio::None);

struct Metric {
    kind: Kind,
    /// The row heading: the kind's, or one that names the scenario's settings.
    label: String,
    /// Runs per peer, in the order of `Report::peers`.
    runs: Vec<Vec<f64>>,
}

pub struct Report {
    title: String,
    /// Name and command template (`None` for the baseline, which is always first).
    peers: Vec<(String, Option<String>)>,
    metrics: Vec<Metric>,
    /// Failures and remarks, printed under the table.
    notes: Vec<String>,
    /// Options of the run, for the JSON file.
    settings: Value,
    goals: Vec<Goal>,
    /// Where the targets come from, in the heading above them.
    goals_from: String,
    /// What the cells are, under the table, instead of the line about rounds and ratios.
    explanation: Option<String>,
}

impl Report {
    pub fn new(title: impl Into<String>, peers: &[Peer<'_>], settings: Value) -> Report {
        Report {
            title: title.into(),
            peers: peers.iter().map(|p| (p.name().to_string(), p.command())).collect(),
            metrics: Vec::new(),
            notes: Vec::new(),
            settings,
            goals: Vec::new(),
            goals_from: String::new(),
            explanation: None,
        }
    }

    /// Adds a row (in the order added), unless it is there already.
    pub fn metric(&mut self, kind: Kind) {
        self.metric_as(kind, kind.label.to_string());
    }

    /// Adds a row with its own heading, unless it is there already.
    pub fn metric_as(&mut self, kind: Kind, label: String) {
        if self.find(kind.key).is_none() {
            let runs = vec![Vec::new(); self.peers.len()];
            self.metrics.push(Metric { kind, label, runs });
        }
    }

    /// Records one run of `kind` for the peer called `peer`.
    pub fn record(&mut self, kind: Kind, peer: &str, value: f64) {
        self.metric(kind);
        let Some(index) = self.peers.iter().position(|(name, _)| name == peer) else {
            return;
        };
        if let Some(metric) = self.metrics.iter_mut().find(|m| m.kind.key == kind.key) {
            metric.runs[index].push(value);
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Sets the targets to judge (see `issue_goals`), and where they come from.
    pub fn goals(&mut self, from: &str, goals: Vec<Goal>) {
        self.goals_from = from.to_string();
        self.goals = goals;
    }

    /// Says what the cells are, under the table, instead of "medians over the rounds; (ratio) ...".
    pub fn explain(&mut self, text: impl Into<String>) {
        self.explanation = Some(text.into());
    }

    fn find(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.kind.key == key)
    }

    /// The median of metric `key` for peer `peer`.
    pub fn median(&self, key: &str, peer: &str) -> Option<f64> {
        let index = self.peers.iter().position(|(name, _)| name == peer)?;
        median(&self.find(key)?.runs[index])
    }

    /// The median over the baseline's median, or over the same peer's median of another metric.
    fn ratio(&self, metric: &Metric, index: usize) -> Option<f64> {
        let base = match metric.kind.ratio {
            Ratio::None | Ratio::Baseline => median(&metric.runs[0])?,
            Ratio::Metric(key) => median(&self.find(key)?.runs[index])?,
        };
        let value = median(&metric.runs[index])?;
        (base != 0.0).then(|| value / base)
    }

    /// The JSON name of `metric`'s ratio.
    fn ratio_key(metric: &Metric) -> String {
        match metric.kind.ratio {
            Ratio::None | Ratio::Baseline => "ratio_to_baseline".into(),
            Ratio::Metric(key) => format!("ratio_to_{key}"),
        }
    }

    pub fn table(&self) -> String {
        let baseline = self.peers.first().map_or("", |(name, _)| name.as_str());
        let rows: Vec<(String, Vec<String>)> = self
            .metrics
            .iter()
            .map(|metric| {
                let heading = format!("{} ({})", metric.label, metric.kind.unit);
                let cells = (0..self.peers.len())
                    .map(|index| {
                        let Some(value) = median(&metric.runs[index]) else {
                            return "-".to_string();
                        };
                        let value = format!("{value:.*}", metric.kind.decimals);
                        let shown = match metric.kind.ratio {
                            Ratio::None => false,
                            Ratio::Baseline => index > 0,
                            Ratio::Metric(_) => true,
                        };
                        match self.ratio(metric, index) {
                            Some(ratio) if shown => format!("{value} ({ratio:.2})"),
                            _ => value,
                        }
                    })
                    .collect();
                (heading, cells)
            })
            .collect();
        let first = rows.iter().map(|(h, _)| h.chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                rows.iter()
                    .map(|(_, cells)| cells[i].chars().count())
                    .chain([name.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = format!("\n{}\n", self.title);
        out += &pad_right("", first);
        for ((name, _), width) in self.peers.iter().zip(&widths) {
            out += &format!("  {}", pad_left(name, *width));
        }
        out += "\n";
        for (heading, cells) in &rows {
            out += &pad_right(heading, first);
            for (cell, width) in cells.iter().zip(&widths) {
                out += &format!("  {}", pad_left(cell, *width));
            }
            out += "\n";
        }
        match &self.explanation {
            Some(text) => out += &format!("{text}\n"),
            None => out += &format!("medians over the rounds; (ratio) = median / {baseline}'s median\n"),
        }
        if self.metrics.iter().any(|m| m.kind.ratio == Ratio::Metric(CONNECTS.key)) {
            out += "  in the rows with a token plugin, (ratio) = median / the same proxy's median without tokens\n";
        }
        if self.metrics.iter().any(|m| m.kind.key.starts_with("cpu_")) {
            let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
            out += &format!(
                "CPU = CPU time of the benchmark (client and backend) plus the proxy's processes, per unit of \
                 work;\n      with {cpus} cores the rate cannot pass {cpus} s / (CPU per unit)\n"
            );
        }
        let checks = self.checks();
        if !checks.is_empty() {
            out += &format!("\ntargets ({}), judged on the medians above:\n", self.goals_from);
            for check in &checks {
                let verdict = match check.met {
                    Some(true) => "met   ",
                    Some(false) => "MISSED",
                    None => "n/a   ",
                };
                let value = check.value.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
                out += &format!("  {verdict}  {:<58} {value}\n", check.text);
            }
        }
        for note in &self.notes {
            out += &format!("note: {note}\n");
        }
        out
    }

    pub fn json(&self) -> Value {
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|metric| {
                let mut peers = Map::new();
                for (index, (name, _)) in self.peers.iter().enumerate() {
                    let mut peer = json!({
                        "runs": metric.runs[index],
                        "median": median(&metric.runs[index]),
                    });
                    peer[Self::ratio_key(metric)] = json!(self.ratio(metric, index));
                    peers.insert(name.clone(), peer);
                }
                json!({
                    "key": metric.kind.key,
                    "label": metric.label,
                    "unit": metric.kind.unit,
                    "peers": peers,
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks()
            .into_iter()
            .map(|c| json!({ "target": c.text, "value": c.value, "met": c.met }))
            .collect();
        json!({
            "title": self.title,
            "settings": self.settings,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "peers": self.peers.iter().map(|(name, command)| json!({ "name": name, "command": command })).collect::<Vec<_>>(),
            "metrics": metrics,
            "targets": checks,
            "notes": self.notes,
        })
    }

    /// The goals whose metric was measured.
    fn checks(&self) -> Vec<Check> {
        self.goals
            .iter()
            .filter(|goal| self.find(goal.metric).is_some())
            .map(|goal| {
                let value = self.median(goal.metric, &goal.peer);
                let other = match &goal.against {
                    Against::Fixed(_) => None,
                    Against::Peer(other) => Some(self.median(goal.metric, other)),
                    Against::Metric(key) => Some(self.median(key, &goal.peer)),
                };
                let value = match other {
                    None => value,
                    Some(other) => value.zip(other).and_then(|(v, o)| (o != 0.0).then(|| v / o)),
                };
                let bound = match goal.against {
                    Against::Fixed(bound) => bound,
                    Against::Peer(_) | Against::Metric(_) => goal.factor,
                };
                let met = value.map(|v| if goal.at_least { v >= bound } else { v <= bound });
                Check {
                    text: goal.text.clone(),
                    value,
                    met,
                }
            })
            .collect()
    }
}

/// A target: `peer`'s median of `metric`, compared with another peer's or another metric's (as a
/// ratio that must be at least, or at most, `factor`) or with a fixed bound.
pub struct Goal {
    pub text: String,
    pub peer: String,
    pub metric: &'static str,
    pub against: Against,
    pub factor: f64,
    pub at_least: bool,
}

pub enum Against {
    /// The same metric of another peer.
    Peer(String),
    /// Another metric of the same peer.
    Metric(&'static str),
    Fixed(f64),
}

struct Check {
    text: String,
    /// The ratio, or the value for a fixed bound.
    value: Option<f64>,
    /// `None` when a peer it needs is missing or failed.
    met: Option<bool>,
}

/// Issue 5's targets for the peer named `wsproxy`, against the peers named `no-proxy`,
/// `websocat`, `websockify` and `socat`, and the token issue's (connects with a token plugin
/// against connects without); `idle` is the number of idle connections requested.
pub fn issue_goals(idle: usize) -> Vec<Goal> {
    let ratio = |text: &str, metric: &'static str, other: &str, factor: f64, at_least: bool| Goal {
        text: text.to_string(),
        peer: "wsproxy".into(),
        metric,
        against: Against::Peer(other.into()),
        factor,
        at_least,
    };
    let fixed = |text: String, metric: &'static str, bound: f64, at_least: bool| Goal {
        text,
        peer: "wsproxy".into(),
        metric,
        against: Against::Fixed(bound),
        factor: 1.0,
        at_least,
    };
    let without_tokens = |text: &str, metric: &'static str, factor: f64| Goal {
        text: text.to_string(),
        peer: "wsproxy".into(),
        metric,
        against: Against::Metric(CONNECTS.key),
        factor,
        at_least: true,
    };
    let base = crate::proxy::NO_PROXY;
    vec![
        ratio("target → browser ≥ 0.85× no-proxy", DOWN.key, base, 0.85, true),
        ratio("target → browser ≥ 1.5× websocat", DOWN.key, "websocat", 1.5, true),
        ratio("browser → target ≥ 0.85× no-proxy", UP.key, base, 0.85, true),
        ratio("browser → target ≥ 4× websocat", UP.key, "websocat", 4.0, true),
        ratio("RTT p50 ≤ socat's (ratio ≤ 1)", RTT_P50.key, "socat", 1.0, false),
        ratio("RTT p99 ≤ socat's (ratio ≤ 1)", RTT_P99.key, "socat", 1.0, false),
        ratio("64-conn round trips ≥ 0.9× no-proxy", RTT64.key, base, 0.9, true),
        ratio("connects/s ≥ 0.85× no-proxy", CONNECTS.key, base, 0.85, true),
        ratio("connects/s ≥ 20× websockify", CONNECTS.key, "websockify", 20.0, true),
        Goal {
            text: format!("idle: all of {idle} that the fd limit allowed held (ratio)"),
            peer: "wsproxy".into(),
            metric: IDLE_HELD.key,
            against: Against::Metric(IDLE_TRIED.key),
            factor: 1.0,
            at_least: true,
        },
        fixed("idle: ≤ 4 KiB RSS per connection".into(), IDLE_RSS.key, 4.0, false),
        fixed("idle: ≤ 4 KiB PSS per connection".into(), IDLE_PSS.key, 4.0, false),
        without_tokens(
            "TokenFile connects/s ≥ 0.9× without tokens",
            CONNECTS_TOKEN_FILE.key,
            0.9,
        ),
        without_tokens(
            "TokenRedis connects/s ≥ 0.7× without tokens",
            CONNECTS_TOKEN_REDIS.key,
            0.7,
        ),
    ]
}

/// The sessions issue's targets for the peer named `wsproxy` (`sessions` scenario): a launch on
/// first connect adds at most 20 ms to the command's own start (the median of the paired
/// differences), and the API takes at least 5,000 reservations per second.
pub fn sessions_goals() -> Vec<Goal> {
    let fixed = |text: &str, metric: &'static str, bound: f64, at_least: bool| Goal {
        text: text.to_string(),
        peer: "wsproxy".into(),
        metric,
        against: Against::Fixed(bound),
        factor: 1.0,
        at_least,
    };
    vec![
        fixed("launch overhead ≤ 20 ms", LAUNCH_OVERHEAD.key, 20.0, false),
        fixed("reservations ≥ 5000/s", RESERVATIONS.key, 5000.0, true),
    ]
}

/// The scale-out issue's target for the peer named `wsproxy` (`cluster` scenario): reservations
/// through several instances sharing the store at least as many per second as through one.
pub fn cluster_goals(instances: u64) -> Vec<Goal> {
    vec![Goal {
        text: format!("reservations through {instances} instances ≥ through 1 (ratio)"),
        peer: "wsproxy".into(),
        metric: CLUSTER_RESERVATIONS_MANY.key,
        against: Against::Metric(CLUSTER_RESERVATIONS_ONE.key),
        factor: 1.0,
        at_least: true,
    }]
}

fn pad_left(text: &str, width: usize) -> String {
    let pad = width.saturating_sub(text.chars().count());
    format!("{}{text}", " ".repeat(pad))
}

fn pad_right(text: &str, width: usize) -> String {
    let pad = width.saturating_sub(text.chars().count());
    format!("{text}{}", " ".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxySpec;

    fn report() -> Report {
        let specs: Vec<ProxySpec> = ["wsproxy=p {listen} {target}", "websocat=q {listen} {target}"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let peers = Peer::all(&specs).unwrap();
        let mut report = Report::new("test", &peers, Value::Null);
        report.goals("issue 5 and the token issue", issue_goals(100));
        report
    }

    #[test]
    fn ratios_are_to_the_baseline_and_missing_runs_show_as_dashes() {
        let mut report = report();
        for (peer, value) in [
            ("no-proxy", 200.0),
            ("no-proxy", 100.0),
            ("no-proxy", 300.0),
            ("wsproxy", 50.0),
        ] {
            report.record(DOWN, peer, value);
        }
        report.record(IDLE_HELD, "wsproxy", 100.0);
        let json = report.json();
        assert_eq!(json["metrics"][0]["peers"]["wsproxy"]["ratio_to_baseline"], 0.25);
        assert_eq!(json["metrics"][0]["peers"]["websocat"]["median"], Value::Null);
        let table = report.table();
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("target → browser"))
            .unwrap()
            .split("  ")
            .filter(|cell| !cell.trim().is_empty())
            .map(str::trim)
            .collect();
        assert_eq!(
            row,
            ["target → browser, 1 conn (MiB/s)", "200", "50 (0.25)", "-"],
            "{table}"
        );
        // The memory rows have no ratio: the baseline runs no proxy.
        let idle = table.lines().find(|l| l.starts_with("idle conns held")).unwrap();
        assert!(idle.split_whitespace().rev().take(3).eq(["-", "100", "-"]), "{table}");
    }

    #[test]
    fn targets_are_judged_when_their_peers_ran() {
        let mut report = report();
        report.record(DOWN, "no-proxy", 100.0);
        report.record(DOWN, "wsproxy", 90.0);
        report.record(DOWN, "websocat", 80.0);
        report.record(IDLE_RSS, "wsproxy", 3.5);
        let checks = report.checks();
        let verdict = |text: &str| checks.iter().find(|c| c.text.starts_with(text)).map(|c| c.met);
        assert_eq!(verdict("target → browser ≥ 0.85× no-proxy"), Some(Some(true)));
        assert_eq!(verdict("target → browser ≥ 1.5× websocat"), Some(Some(false)));
        assert_eq!(verdict("idle: ≤ 4 KiB RSS"), Some(Some(true)));
        // Not measured: not listed.
        assert_eq!(verdict("connects/s"), None);
        assert!(report.table().contains("MISSED  target → browser ≥ 1.5× websocat"));
    }

    #[test]
    fn token_rows_are_ratios_to_the_same_proxy_without_tokens() {
        let mut report = report();
        report.metric(CONNECTS);
        report.metric_as(CONNECTS_TOKEN_FILE, "connects, TokenFile, 100 tokens".into());
        report.record(CONNECTS, "no-proxy", 1000.0);
        report.record(CONNECTS, "wsproxy", 400.0);
        report.record(CONNECTS, "websocat", 200.0);
        report.record(CONNECTS_TOKEN_FILE, "wsproxy", 380.0);
        report.record(CONNECTS_TOKEN_FILE, "websocat", 100.0);
        let table = report.table();
        let row = table.lines().find(|l| l.starts_with("connects, TokenFile")).unwrap();
        assert!(
            row.split_whitespace()
                .rev()
                .take(5)
                .eq(["(0.50)", "100", "(0.95)", "380", "-"]),
            "{table}"
        );
        assert!(
            table.contains("met     TokenFile connects/s ≥ 0.9× without tokens"),
            "{table}"
        );
        // Without a TokenRedis row its target is not listed.
        assert!(!table.contains("TokenRedis"), "{table}");
        let json = report.json();
        assert_eq!(json["metrics"][1]["peers"]["wsproxy"]["ratio_to_connects"], 0.95);
    }
}
