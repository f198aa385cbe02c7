//! The bounded table of client states. Slots live in one vector indexed from a hash map; when
//! the table is full, a clock hand sweeps the slots and evicts the first one not used since the
//! hand last passed (second chance), an O(1) amortised approximation of least recently used.
use std::collections::HashMap;
use std::net::IpAddr;

use super::state::ClientState;

/// Whom a state belongs to: a user when the tap knows one (like the seed), else the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Addr(IpAddr),
    User(Box<str>),
}

#[derive(Debug)]
struct Slot {
    key: ClientKey,
    /// Used since the clock hand last passed.
    referenced: bool,
    state: ClientState,
}

/// Client states, at most `max` of them.
#[derive(Debug)]
pub struct Table {
    index: HashMap<ClientKey, u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    hand: usize,
    max: usize,
}

impl Table {
    pub fn new(max: usize) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The state of `key`, if kept.
    pub fn get_mut(&mut self, key: &ClientKey) -> Option<&mut ClientState> {
        let i = *self.index.get(key)? as usize;
        let slot = self.slots[i].as_mut()?;
        slot.referenced = true;
        Some(&mut slot.state)
    }

    /// The state of `key`, made with `make` if new; the flag says whether another client was
    /// evicted to make room.
    pub fn get_or_insert(
        &mut self,
        key: ClientKey,
        make: impl FnOnce() -> ClientState,
    ) -> (&mut ClientState, bool) {
        if let Some(&i) = self.index.get(&key) {
            let slot = self.slots[i as usize]
                .as_mut()
                .expect("indexed slots are occupied");
            slot.referenced = true;
            return (&mut slot.state, false);
        }
        let evicted = self.index.len() >= self.max && self.evict_one();
        let slot = Slot {
            key: key.clone(),
            referenced: true,
            state: make(),
        };
        let i = if let Some(i) = self.free.pop() {
            self.slots[i as usize] = Some(slot);
            i
        } else {
            if self.slots.len() == self.slots.capacity() {
                // Grow by doubling, but never past the bound.
                let more = self.slots.len().max(1024).min(self.max - self.slots.len());
                self.slots.reserve_exact(more.max(1));
            }
            self.slots.push(Some(slot));
            (self.slots.len() - 1) as u32
        };
        self.index.insert(key, i);
        let slot = self.slots[i as usize].as_mut().expect("slot just filled");
        (&mut slot.state, evicted)
    }

    /// Evicts the first slot the hand finds unreferenced, clearing references on the way.
    fn evict_one(&mut self) -> bool {
        let n = self.slots.len();
        if n == 0 {
            return false;
        }
        // Two turns at most: the first clears every reference.
        for _ in 0..=2 * n {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            if let Some(slot) = &mut self.slots[i] {
                if slot.referenced {
                    slot.referenced = false;
                } else {
                    self.remove_at(i);
                    return true;
                }
            }
        }
        false
    }

    fn remove_at(&mut self, i: usize) {
        if let Some(slot) = self.slots[i].take() {
            self.index.remove(&slot.key);
            self.free.push(i as u32);
        }
    }

    /// Calls `f` on the state of every address key inside `net`.
    pub fn for_each_addr_in(&mut self, net: &crate::net::Net, mut f: impl FnMut(&mut ClientState)) {
        for slot in self.slots.iter_mut().flatten() {
            if let ClientKey::Addr(ip) = slot.key
                && net.contains(ip)
            {
                f(&mut slot.state);
            }
        }
    }

    /// Removes the state of every address key inside `net`; returns how many were removed.
    pub fn remove_addrs_in(&mut self, net: &crate::net::Net) -> usize {
        let found: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Some(Slot {
                    key: ClientKey::Addr(ip),
                    ..
                }) if net.contains(*ip) => Some(i),
                _ => None,
            })
            .collect();
        for &i in &found {
            self.remove_at(i);
        }
        found.len()
    }

    /// Removes the states for which `keep` is false among at most `max` slots from `from`, and
    /// hands them to `removed` (so that the caller can free them later, outside its lock).
    /// Returns the slot to go on from, or `None` past the last one.
    pub fn retain_slice(
        &mut self,
        from: usize,
        max: usize,
        mut keep: impl FnMut(&ClientState) -> bool,
        removed: &mut Vec<ClientState>,
    ) -> Option<usize> {
        let end = from.saturating_add(max).min(self.slots.len());
        for i in from..end {
            if self.slots[i].as_ref().is_some_and(|s| !keep(&s.state))
                && let Some(slot) = self.slots[i].take()
            {
                self.index.remove(&slot.key);
                self.free.push(i as u32);
                removed.push(slot.state);
            }
        }
        (end < self.slots.len()).then_some(end)
    }

    /// Heap bytes of the table's own structures and every state, for size accounting
    /// (the hash map's control bytes are estimated at one byte per bucket).
    pub fn approx_bytes(&self) -> usize {
        let map = self.index.capacity() * (size_of::<(ClientKey, u32)>() + 1);
        let slots = self.slots.capacity() * size_of::<Option<Slot>>();
        let heap: usize = self
            .slots
            .iter()
            .flatten()
            .map(|s| {
                s.state.heap_bytes()
                    + match &s.key {
                        ClientKey::User(u) => 2 * u.len(),
                        ClientKey::Addr(_) => 0,
                    }
            })
            .sum();
        map + slots + heap + self.free.capacity() * 4
    }
}
