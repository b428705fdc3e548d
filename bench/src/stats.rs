//! Medians and percentiles.

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

/// The `p`-th percentile (0 < p ≤ 100) of `sorted` (ascending), by the nearest-rank method: the
/// smallest sample that at least `p` % of the samples do not exceed. Always one of the samples,
/// so p100 is the maximum and a p99 of 100 samples is the second largest.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Latency samples, summarised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// `None` without samples.
    pub fn of(mut samples: Vec<f64>) -> Option<Latency> {
        samples.sort_by(f64::total_cmp);
        Some(Latency {
            p50: percentile(&samples, 50.0)?,
            p99: percentile(&samples, 99.0)?,
            max: *samples.last()?,
        })
    }
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
    fn percentiles_are_nearest_rank() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(50.0));
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&hundred, 100.0), Some(100.0));
        assert_eq!(percentile(&hundred, 0.5), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&hundred, 0.0), None);
        assert_eq!(percentile(&hundred, 101.0), None);
    }

    #[test]
    fn latency_summary_sorts_first() {
        let mut samples: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        samples.push(5000.0);
        let latency = Latency::of(samples).unwrap();
        assert_eq!(latency.p50, 501.0);
        assert_eq!(latency.p99, 991.0);
        assert_eq!(latency.max, 5000.0);
        assert_eq!(Latency::of(Vec::new()), None);
    }
}
