//! One shard's counters: an open-addressing hash table (linear probing) of 64-byte slots, each a
//! whole cache line holding its key and its counters, so a lookup costs one cache miss where a
//! general map costs two (control bytes, then the entry). The key 0 marks an empty slot (a
//! partition key always has a tag in its top bits, so no real key is 0). At most 3/4 full;
//! removal shifts the following run back (no tombstones).
use super::table::{Entry, Seeded};

/// A key and its counters in one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Slot {
    pub key: u128,
    pub entry: Entry,
}

const _: () = assert!(size_of::<Slot>() == 64);

/// The smallest table allocated.
const MIN_SLOTS: usize = 16;

#[derive(Debug)]
pub(super) struct Slots {
    table: Vec<Slot>,
    len: usize,
    hasher: Seeded,
}

impl Slots {
    pub fn new(hasher: Seeded) -> Self {
        Self {
            table: Vec::new(),
            len: 0,
            hasher,
        }
    }

    fn home(&self, key: u128) -> usize {
        self.hasher.hash(key) as usize & (self.table.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.table.len() * size_of::<Slot>()
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// The slot holding `key` (hashed to `hash`), if any.
    pub fn get_mut(&mut self, key: u128) -> Option<&mut Entry> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let k = self.table[i].key;
            if k == key {
                return Some(&mut self.table[i].entry);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts `key`, which must not be present.
    pub fn insert(&mut self, key: u128, entry: Entry) {
        debug_assert!(key != 0);
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.rebuild((self.table.len() * 2).max(MIN_SLOTS), |_| true);
        }
        self.place(key, entry);
        self.len += 1;
    }

    fn place(&mut self, key: u128, entry: Entry) {
        let mask = self.mask();
        let mut i = self.home(key);
        while self.table[i].key != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = Slot { key, entry };
    }

    /// Rebuilds the table with `n` slots (a power of two), keeping the entries `keep` accepts.
    fn rebuild(&mut self, n: usize, keep: impl Fn(&Entry) -> bool) {
        let old = std::mem::replace(&mut self.table, vec![Slot::default(); n]);
        self.len = 0;
        for s in old.into_iter().filter(|s| s.key != 0 && keep(&s.entry)) {
            self.place(s.key, s.entry);
            self.len += 1;
        }
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: u128) -> bool {
        if self.table.is_empty() {
            return false;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.table[i].key {
                0 => return false,
                k if k == key => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward shift: move each following entry of the run into the hole if its home slot
        // does not lie (cyclically) between the hole and its position.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.table[j].key != 0 {
            let wanted = self.home(self.table[j].key);
            let from_wanted = j.wrapping_sub(wanted) & mask;
            let from_hole = j.wrapping_sub(hole) & mask;
            if from_wanted >= from_hole {
                self.table[hole] = self.table[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.table[hole] = Slot::default();
        self.len -= 1;
        true
    }

    /// Keeps the entries `keep` accepts, shrinking the table to fit them; how many were dropped.
    pub fn retain(&mut self, keep: impl Fn(&Entry) -> bool) -> usize {
        let before = self.len;
        let survivors = self
            .table
            .iter()
            .filter(|s| s.key != 0 && keep(&s.entry))
            .count();
        if survivors == 0 {
            self.table = Vec::new();
            self.len = 0;
            return before;
        }
        let n = (survivors * 4 / 3 + 1).next_power_of_two().max(MIN_SLOTS);
        self.rebuild(n, keep);
        before - self.len
    }
}
