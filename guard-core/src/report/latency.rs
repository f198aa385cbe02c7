//! Latency percentiles in bounded memory: a log-linear histogram of microseconds (the layout of
//! an HDR histogram with 1024 sub-buckets): values below 1024 µs are kept exactly, larger ones
//! to within 1/512 of their value (each bucket's lowest value is reported). About 33,000
//! counters cover everything up to 2^42 µs (51 days), whatever the number of records.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 10;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two above the exact range that have buckets of their own.
const RANGES: u32 = 32;
/// Buckets in all.
const BUCKETS: usize = (SUB + (RANGES as u64) * (SUB / 2)) as usize;

/// Counts of latencies, in microseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    /// Sum of every value recorded (µs), for the mean.
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
        }
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    // v in [2^(k), 2^(k+1)) with k >= SUB_BITS: SUB/2 buckets of width 2^(k - SUB_BITS + 1).
    let k = v.ilog2();
    let range = k - SUB_BITS;
    if range >= RANGES {
        return BUCKETS - 1;
    }
    let shift = k - SUB_BITS + 1;
    let sub = (v >> shift) - SUB / 2;
    (SUB + u64::from(range) * (SUB / 2) + sub) as usize
}

/// The lowest value of bucket `i`.
fn lowest(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let range = (i - SUB) / (SUB / 2);
    let sub = (i - SUB) % (SUB / 2);
    let shift = range + 1;
    (SUB / 2 + sub) << shift
}

impl Histogram {
    /// Records one latency of `micros` µs.
    pub fn record(&mut self, micros: u64) {
        self.counts[index(micros)] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
    }

    /// Latencies recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The mean in µs (`None` without values).
    #[must_use]
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100) in µs: the lowest value of the bucket
    /// holding the `ceil(p/100 · n)`-th smallest latency (`None` without values).
    #[must_use]
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(lowest(i));
            }
        }
        Some(lowest(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact_and_large_ones_within_a_512th() {
        for v in [0, 1, 999, 1023] {
            assert_eq!(lowest(index(v)), v);
        }
        for v in [1024, 1500, 5000, 123_456, 10_000_000, 3_600_000_000] {
            let l = lowest(index(v));
            assert!(l <= v && v - l <= v / 512, "{v} -> {l}");
        }
        // Every bucket's lowest value maps back to it.
        for i in 0..BUCKETS {
            assert_eq!(index(lowest(i)), i);
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(95.0), Some(95));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.mean(), Some(50.5));
    }
}
