//! Summary statistics of timed samples.

use std::time::Duration;

/// Timed samples, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The `q` quantile (0..=1) by nearest rank, in µs.
    pub fn quantile(&self, q: f64) -> f64 {
        let v = self.sorted();
        assert!(!v.is_empty(), "no samples");
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// Adds a plain number (in whatever unit the caller keeps).
    pub fn push_value(&mut self, x: f64) {
        self.0.push(x);
    }

    /// The samples, in the order they were added.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// How many samples there are.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        assert!(!v.is_empty(), "no samples");
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    pub fn p99(&self) -> f64 {
        self.quantile(0.99)
    }
}

/// The median of plain numbers.
pub fn median(values: &[f64]) -> f64 {
    let mut s = Samples(values.to_vec());
    s.0.sort_by(f64::total_cmp);
    s.median()
}

/// A number with about three significant digits, for tables.
pub fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A ratio, e.g. `1.23×`.
pub fn ratio(x: f64, baseline: f64) -> String {
    format!("{}×", fmt(x / baseline))
}

/// A large count with thousands separators (`1,234,567`).
pub fn count(x: f64) -> String {
    let digits = format!("{:.0}", x.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Resident memory of this process from `/proc/self/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// VmRSS: everything resident.
    pub total_kib: f64,
    /// RssAnon: heap, stacks, anonymous mappings (Wasm linear memories among them).
    pub anon_kib: f64,
    /// RssFile: resident file-backed pages (the binary, LMDB's memory map).
    pub file_kib: f64,
}

impl Rss {
    pub fn now() -> Rss {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        Rss {
            total_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
        }
    }

    /// `self − earlier`, field by field.
    pub fn since(&self, earlier: &Rss) -> Rss {
        Rss {
            total_kib: self.total_kib - earlier.total_kib,
            anon_kib: self.anon_kib - earlier.anon_kib,
            file_kib: self.file_kib - earlier.file_kib,
        }
    }
}

/// The order in which `n` interleaved configurations run in round `round`: a shuffle that
/// differs from round to round (the same in every run), so that over the rounds each
/// configuration follows each other about equally often. Rotating a fixed order instead
/// always put the same one after a durable commit's fsync, whose aftermath (the file
/// system's journal, cold caches) then counted against it.
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = (round as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_micros(i));
        }
        assert_eq!(s.median(), 50.5);
        assert_eq!(s.p99(), 99.0);
        assert_eq!(count(1234567.0), "1,234,567");
    }
}
