//! The most frequent keys of a stream in bounded memory (the Space-Saving algorithm): at most
//! `capacity` keys are held; a new key past it takes the place of the least counted one and
//! inherits its count as its possible overcount. While fewer distinct keys than `capacity` have
//! come, every count is exact; past it, any key met more than `n / capacity` times is held, and
//! its count is off by at most its `error`.
use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

/// A key and its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Top {
    pub name: String,
    /// An upper bound of the key's count (exact when `error` is 0).
    pub count: u64,
    /// How much of `count` may belong to keys it replaced.
    pub error: u64,
}

/// The counter.
#[derive(Debug)]
pub struct SpaceSaving {
    capacity: usize,
    counts: HashMap<Box<str>, (u64, u64)>,
    /// (count, key), to find the least counted key.
    order: BTreeSet<(u64, Box<str>)>,
}

impl SpaceSaving {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            counts: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Counts `key` once.
    pub fn add(&mut self, key: &str) {
        if let Some((count, _)) = self.counts.get_mut(key) {
            self.order.remove(&(*count, Box::from(key)));
            *count += 1;
            self.order.insert((*count, Box::from(key)));
            return;
        }
        let (count, error) = if self.counts.len() < self.capacity {
            (1, 0)
        } else {
            let Some((least, gone)) = self.order.pop_first() else {
                return;
            };
            self.counts.remove(&gone);
            (least + 1, least)
        };
        self.counts.insert(Box::from(key), (count, error));
        self.order.insert((count, Box::from(key)));
    }

    /// The `n` most counted keys, most first (ties by key).
    #[must_use]
    pub fn top(&self, n: usize) -> Vec<Top> {
        let mut all: Vec<Top> = self
            .counts
            .iter()
            .map(|(k, (count, error))| Top {
                name: k.to_string(),
                count: *count,
                error: *error,
            })
            .collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_below_capacity_and_heavy_keys_survive_past_it() {
        let mut s = SpaceSaving::new(3);
        for k in ["a", "b", "a", "c", "a", "b"] {
            s.add(k);
        }
        let t = s.top(5);
        let names: Vec<(&str, u64, u64)> = t
            .iter()
            .map(|x| (x.name.as_str(), x.count, x.error))
            .collect();
        assert_eq!(names, [("a", 3, 0), ("b", 2, 0), ("c", 1, 0)]);
        // A flood of one-off keys never pushes out the heavy one.
        for i in 0..100 {
            s.add(&format!("junk{i}"));
            s.add("a");
        }
        let t = s.top(1);
        assert_eq!((t[0].name.as_str(), t[0].count, t[0].error), ("a", 103, 0));
        assert!(s.counts.len() <= 3 && s.order.len() == s.counts.len());
    }
}
