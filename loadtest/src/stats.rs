//! Small statistics: percentiles and FIFO inversions.

use serde::Serialize;

/// A distribution summarised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Distribution {
    /// Summarises `values` (nearest-rank percentiles); `None` when empty.
    #[must_use]
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            // Nearest rank: the smallest value with at least p of the values at or below it.
            let index = (p * values.len() as f64).ceil() as usize;
            values[index.clamp(1, values.len()) - 1]
        };
        Some(Self {
            count: values.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: values[values.len() - 1],
        })
    }
}

/// Counts pairs served out of order: `items` are `(line number, admission time)`; a pair is an
/// inversion when the later number in line was admitted strictly earlier. Admissions in the same
/// tick share a time, so a batch never counts. O(n log n).
#[must_use]
pub fn fifo_inversions<T: Ord + Copy>(items: &[(u64, T)]) -> u64 {
    let mut sorted = items.to_vec();
    sorted.sort_by_key(|&(line, _)| line);
    let mut times: Vec<T> = sorted.into_iter().map(|(_, at)| at).collect();
    let mut scratch = times.clone();
    count_strict_inversions(&mut times, &mut scratch)
}

/// Merge sort counting pairs i < j with `v[j] < v[i]`.
fn count_strict_inversions<T: Ord + Copy>(v: &mut [T], scratch: &mut [T]) -> u64 {
    let n = v.len();
    if n < 2 {
        return 0;
    }
    let mid = n / 2;
    let mut count = {
        let (left, right) = v.split_at_mut(mid);
        let (sl, sr) = scratch.split_at_mut(mid);
        count_strict_inversions(left, sl) + count_strict_inversions(right, sr)
    };
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < mid && j < n {
        if v[j] < v[i] {
            // v[j] is earlier than every remaining left item.
            count += (mid - i) as u64;
            scratch[k] = v[j];
            j += 1;
        } else {
            scratch[k] = v[i];
            i += 1;
        }
        k += 1;
    }
    while i < mid {
        scratch[k] = v[i];
        i += 1;
        k += 1;
    }
    while j < n {
        scratch[k] = v[j];
        j += 1;
        k += 1;
    }
    v.copy_from_slice(&scratch[..n]);
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(items: &[(u64, u32)]) -> u64 {
        let mut count = 0;
        for a in items {
            for b in items {
                if a.0 < b.0 && b.1 < a.1 {
                    count += 1;
                }
            }
        }
        count
    }

    #[test]
    fn in_order_and_same_tick_admissions_are_not_inversions() {
        assert_eq!(fifo_inversions(&[(1, 10u32), (2, 10), (3, 10), (4, 20), (5, 30)]), 0);
        assert_eq!(fifo_inversions::<u32>(&[]), 0);
    }

    #[test]
    fn a_later_number_admitted_earlier_is_counted_once_per_pair() {
        assert_eq!(fifo_inversions(&[(1, 30u32), (2, 10), (3, 20)]), 2);
        assert_eq!(fifo_inversions(&[(5, 1u32), (4, 2), (3, 3), (2, 4), (1, 5)]), 10);
    }

    #[test]
    fn matches_the_quadratic_definition() {
        let mut seed = 7u64;
        for n in 0..60 {
            let items: Vec<(u64, u32)> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (i as u64 * 3 % 61, (seed >> 33) as u32 % 7)
                })
                .collect();
            assert_eq!(fifo_inversions(&items), brute(&items), "{items:?}");
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let d = Distribution::of((1..=100).map(f64::from).collect()).unwrap_or_else(|| unreachable!());
        assert_eq!((d.count, d.p50, d.p95, d.p99, d.max), (100, 50.0, 95.0, 99.0, 100.0));
        assert_eq!(Distribution::of(vec![3.0]).map(|d| (d.p50, d.p99)), Some((3.0, 3.0)));
        assert!(Distribution::of(Vec::new()).is_none());
    }
}
