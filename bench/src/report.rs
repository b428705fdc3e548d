//! Results: medians and ratios to the no-proxy baseline, as a plain table and as JSON.

use serde_json::{Value, json};

use crate::throughput::Direction;

/// Every run of one peer (the first series is always the no-proxy baseline).
pub struct Series {
    pub name: String,
    /// The command template; `None` for the baseline.
    pub command: Option<String>,
    /// MiB/s of each run, indexed by `Direction as usize`.
    pub runs: [Vec<f64>; 2],
}

pub struct Report {
    pub size_mib: u64,
    pub message_bytes: usize,
    pub rounds: u32,
    pub client: &'static str,
    pub directions: Vec<Direction>,
    pub series: Vec<Series>,
}

impl Report {
    /// The median of `series` in `direction`, and its ratio to the baseline's.
    fn summary(&self, series: &Series, direction: Direction) -> (Option<f64>, Option<f64>) {
        let median = median(&series.runs[direction as usize]);
        let base = self.series.first().and_then(|base| median_of(base, direction));
        let ratio = median.zip(base).map(|(m, b)| m / b);
        (median, ratio)
    }

    pub fn table(&self) -> String {
        let width = self
            .series
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max("proxy".len());
        let mut out = format!(
            "\nthroughput: 1 connection, {} MiB per run, median of {} round(s), {} client\n",
            self.size_mib, self.rounds, self.client
        );
        out += &format!("{:<width$}", "proxy");
        for direction in &self.directions {
            out += &format!("  {:>10}  {:>8}", format!("{} MiB/s", direction.name()), "ratio");
        }
        out += "\n";
        for series in &self.series {
            out += &format!("{:<width$}", series.name);
            for &direction in &self.directions {
                let (median, ratio) = self.summary(series, direction);
                out += &format!("  {:>10}  {:>8}", fixed(median, 1), fixed(ratio, 2));
            }
            out += "\n";
        }
        out += &format!(
            "down = target → browser, up = browser → target ({} KiB masked messages); ratio = median / {}'s\n",
            self.message_bytes / 1024,
            crate::proxy::NO_PROXY
        );
        out
    }

    pub fn json(&self) -> Value {
        let peers: Vec<Value> = self
            .series
            .iter()
            .map(|series| {
                let mut peer = json!({ "name": series.name, "command": series.command });
                for &direction in &self.directions {
                    let (median, ratio) = self.summary(series, direction);
                    peer[direction.name()] = json!({
                        "runs_mib_s": series.runs[direction as usize],
                        "median_mib_s": median,
                        "ratio_to_no_proxy": ratio,
                    });
                }
                peer
            })
            .collect();
        json!({
            "scenario": "throughput",
            "connections": 1,
            "size_bytes": self.size_mib << 20,
            "message_bytes": self.message_bytes,
            "rounds": self.rounds,
            "client": self.client,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "peers": peers,
        })
    }
}

fn median_of(series: &Series, direction: Direction) -> Option<f64> {
    median(&series.runs[direction as usize])
}

/// The median; the mean of the middle two for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_are_to_the_first_series() {
        let series = |name: &str, down: f64| Series {
            name: name.into(),
            command: None,
            runs: [vec![down], vec![]],
        };
        let report = Report {
            size_mib: 1,
            message_bytes: 65536,
            rounds: 1,
            client: "raw",
            directions: vec![Direction::Down, Direction::Up],
            series: vec![series("no-proxy", 200.0), series("p", 50.0)],
        };
        let json = report.json();
        assert_eq!(json["peers"][1]["down"]["ratio_to_no_proxy"], 0.25);
        assert_eq!(json["peers"][1]["up"]["median_mib_s"], Value::Null);
        let table = report.table();
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("p "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(row, ["p", "50.0", "0.25", "-", "-"], "{table}");
    }
}
