//! A Fenwick (binary indexed) tree over sequence numbers: O(log n) "how many waiting tokens have
//! a sequence number at or below mine", so a place in line is found without scanning the line.

/// Counts of present sequence numbers, 1-based.
#[derive(Debug, Default)]
pub(super) struct Fenwick {
    tree: Vec<i64>,
}

impl Fenwick {
    /// Marks `seq` (>= 1) present (`delta` 1) or absent (`delta` -1).
    pub(super) fn add(&mut self, seq: u64, delta: i64) {
        let Ok(mut i) = usize::try_from(seq) else { return };
        if i == 0 {
            return;
        }
        self.grow_to(i);
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// How many present sequence numbers are at or below `seq`.
    pub(super) fn prefix(&self, seq: u64) -> u64 {
        let mut i = usize::try_from(seq).unwrap_or(usize::MAX).min(self.tree.len().saturating_sub(1));
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        u64::try_from(sum).unwrap_or(0)
    }

    /// Doubles the tree until index `i` fits, rebuilding the partial sums of the new part.
    fn grow_to(&mut self, i: usize) {
        if i < self.tree.len() {
            return;
        }
        let old_len = self.tree.len().max(1);
        let mut new_len = old_len.max(1024);
        while new_len <= i {
            new_len *= 2;
        }
        // Recover the point counts, then rebuild: O(n), paid once per doubling.
        let mut counts: Vec<i64> = (0..self.tree.len())
            .map(|j| if j == 0 { 0 } else { self.prefix_exact(j) - self.prefix_exact(j - 1) })
            .collect();
        counts.resize(new_len, 0);
        self.tree = vec![0; new_len];
        for (j, count) in counts.into_iter().enumerate().skip(1) {
            if count != 0 {
                let mut k = j;
                while k < new_len {
                    self.tree[k] += count;
                    k += k & k.wrapping_neg();
                }
            }
        }
    }

    fn prefix_exact(&self, mut i: usize) -> i64 {
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::Fenwick;

    #[test]
    fn prefix_counts_present_numbers_across_growth() {
        let mut tree = Fenwick::default();
        for seq in [1, 2, 3, 5, 2_000, 70_000] {
            tree.add(seq, 1);
        }
        tree.add(2, -1);
        assert_eq!(tree.prefix(0), 0);
        assert_eq!(tree.prefix(1), 1);
        assert_eq!(tree.prefix(4), 2);
        assert_eq!(tree.prefix(5), 3);
        assert_eq!(tree.prefix(1_999), 3);
        assert_eq!(tree.prefix(2_000), 4);
        assert_eq!(tree.prefix(1_000_000), 5);
    }
}
