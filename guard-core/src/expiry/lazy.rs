//! Deadlines on the monotonic clock, soonest first, in a heap with lazy removal: an entry costs
//! 8 bytes of deadline and the key, with no index by key. Replacing or removing a key's deadline
//! leaves its old entry in the heap; the caller's own record (for the ban owner, the XDP map
//! entry) says which deadline is current, and stale entries are dropped when they come up or
//! when the heap has grown well past what it held after its last compaction.
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Entries above this many plus twice the live count at the last compaction trigger another.
const SLACK: usize = 65_536;

/// A monotonic deadline (ns) split in two words, so that with a `u32` key an entry is 12 bytes.
type Entry<K> = Reverse<(u32, u32, K)>;

fn entry<K>(deadline_ns: u64, key: K) -> Entry<K> {
    #[expect(clippy::cast_possible_truncation, reason = "the two halves of a u64")]
    Reverse(((deadline_ns >> 32) as u32, deadline_ns as u32, key))
}

fn deadline_of<K>(e: &Entry<K>) -> u64 {
    (u64::from(e.0.0) << 32) | u64::from(e.0.1)
}

/// See the module documentation. `current(key)` answers with the key's deadline as the caller
/// holds it: `None` or `Some(0)` when it has none (lifted, or made permanent).
#[derive(Debug, Clone)]
pub struct LazySchedule<K> {
    heap: BinaryHeap<Entry<K>>,
    /// The heap's length after its last compaction.
    compacted: usize,
}

impl<K> Default for LazySchedule<K>
where
    K: Ord,
{
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            compacted: 0,
        }
    }
}

impl<K: Copy + Ord> LazySchedule<K> {
    /// An empty schedule.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A schedule of `entries` (key, deadline), taken as current.
    pub fn from_entries(entries: impl IntoIterator<Item = (K, u64)>) -> Self {
        let heap: BinaryHeap<Entry<K>> = entries.into_iter().map(|(k, d)| entry(d, k)).collect();
        Self {
            compacted: heap.len(),
            heap,
        }
    }

    /// Notes `key`'s new deadline (an earlier one for the same key becomes stale). Compacts
    /// the heap when it has grown past its bound, asking `current` about each entry.
    pub fn insert(&mut self, key: K, deadline_ns: u64, current: impl FnMut(&K) -> Option<u64>) {
        self.heap.push(entry(deadline_ns, key));
        if self.heap.len() > self.compacted.saturating_mul(2).saturating_add(SLACK) {
            self.compact(current);
        }
    }

    /// The soonest deadline in the heap (it may be stale: a sweep then finds nothing due).
    #[must_use]
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(deadline_of)
    }

    /// Removes and returns every key whose current deadline is at or before `now_ns`, with that
    /// deadline, soonest first; stale entries on the way are dropped.
    pub fn pop_due(
        &mut self,
        now_ns: u64,
        mut current: impl FnMut(&K) -> Option<u64>,
    ) -> Vec<(K, u64)> {
        let mut due = Vec::new();
        while let Some(top) = self.heap.peek() {
            let deadline = deadline_of(top);
            if deadline > now_ns {
                break;
            }
            let key = top.0.2;
            self.heap.pop();
            if current(&key) == Some(deadline) {
                due.push((key, deadline));
            }
        }
        due
    }

    /// Drops every stale entry (and duplicates of a current one).
    pub fn compact(&mut self, mut current: impl FnMut(&K) -> Option<u64>) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|e| current(&e.0.2) == Some(deadline_of(e)));
        entries.sort_unstable();
        entries.dedup();
        entries.shrink_to_fit();
        self.heap = BinaryHeap::from(entries);
        self.compacted = self.heap.len();
    }

    /// Every key with its current deadline, once each, in no particular order.
    pub fn current(&self, mut current: impl FnMut(&K) -> Option<u64>) -> Vec<(K, u64)> {
        let mut out: Vec<(K, u64)> = self
            .heap
            .iter()
            .map(|e| (e.0.2, deadline_of(e)))
            .filter(|(k, d)| current(k) == Some(*d))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Entries in the heap, stale ones included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether the heap is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Forgets everything and gives the memory back.
    pub fn clear(&mut self) {
        self.heap = BinaryHeap::new();
        self.compacted = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The caller's records: key → deadline (0 = permanent).
    struct Owner {
        schedule: LazySchedule<u32>,
        records: BTreeMap<u32, u64>,
    }

    impl Owner {
        fn ban(&mut self, key: u32, deadline: u64) {
            self.records.insert(key, deadline);
            let records = &self.records;
            self.schedule
                .insert(key, deadline, |k| records.get(k).copied());
        }

        fn sweep(&mut self, now: u64) -> Vec<u32> {
            let records = &self.records;
            let due: Vec<u32> = self
                .schedule
                .pop_due(now, |k| records.get(k).copied())
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            for k in &due {
                self.records.remove(k);
            }
            due
        }
    }

    fn owner() -> Owner {
        Owner {
            schedule: LazySchedule::new(),
            records: BTreeMap::new(),
        }
    }

    #[test]
    fn replaced_and_lifted_deadlines_never_fire() {
        let mut o = owner();
        o.ban(1, 30);
        o.ban(2, 10);
        o.ban(1, 5); // re-banned sooner
        o.ban(3, 20);
        o.records.remove(&3); // lifted
        o.ban(4, 15);
        o.records.insert(4, 0); // made permanent
        assert_eq!(o.schedule.next(), Some(5));
        assert_eq!(o.sweep(4), Vec::<u32>::new());
        assert_eq!(o.sweep(5), [1]);
        assert_eq!(o.sweep(25), [2], "3 was lifted, 4 made permanent");
        assert_eq!(o.sweep(30), Vec::<u32>::new(), "1's old deadline is stale");
        assert!(o.schedule.is_empty());
        assert_eq!(o.records.get(&4), Some(&0));
    }

    #[test]
    fn a_deadline_fires_at_its_nanosecond() {
        let mut o = owner();
        let d = (7u64 << 32) + 3; // both halves matter
        o.ban(9, d);
        assert!(o.sweep(d - 1).is_empty());
        assert_eq!(o.sweep(d), [9]);
    }

    #[test]
    fn stale_entries_are_compacted_and_the_heap_stays_bounded() {
        let mut o = owner();
        // One live ban re-banned many times: the heap must not grow without bound.
        for i in 0..(4 * SLACK as u64) {
            o.ban(1, 1_000 + i);
        }
        assert!(o.schedule.len() <= SLACK + 1, "{}", o.schedule.len());
        let records = &o.records;
        assert_eq!(
            o.schedule.current(|k| records.get(k).copied()),
            [(1, 1_000 + 4 * SLACK as u64 - 1)]
        );
        o.schedule.compact(|k| records.get(k).copied());
        assert_eq!(o.schedule.len(), 1);
    }

    #[test]
    fn a_large_schedule_built_at_once_is_not_compacted_away() {
        let mut o = owner();
        let n = 3 * SLACK as u32;
        o.records = (0..n).map(|k| (k, 10 + u64::from(k))).collect();
        o.schedule = LazySchedule::from_entries(o.records.iter().map(|(k, d)| (*k, *d)));
        o.ban(n, 5);
        assert_eq!(o.schedule.len(), n as usize + 1);
        assert_eq!(o.sweep(10 + u64::from(n)).len(), n as usize + 1);
    }

    #[test]
    fn an_entry_with_a_u32_key_is_twelve_bytes() {
        assert_eq!(size_of::<Entry<u32>>(), 12);
    }
}
