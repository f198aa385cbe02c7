//! Cache of parsed answers keyed by a keyed 128-bit hash of the prompt, each kept for a fixed
//! time. The hash keys are random per process, so a client cannot craft a collision that would
//! hand its request the answer cached for another. Clock passed in.
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::time::{Duration, Instant};

/// A cache key: two independently keyed `SipHash` values of the same bytes.
pub(crate) type Key = (u64, u64);

#[derive(Debug)]
pub(crate) struct Cache<V> {
    ttl: Duration,
    max_entries: usize,
    hashers: (RandomState, RandomState),
    entries: HashMap<Key, (Instant, V)>,
}

impl<V: Clone> Cache<V> {
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            hashers: (RandomState::new(), RandomState::new()),
            entries: HashMap::new(),
        }
    }

    pub(crate) fn key(&self, parts: &[&str]) -> Key {
        let hash = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            for part in parts {
                part.hash(&mut hasher);
            }
            hasher.finish()
        };
        (hash(&self.hashers.0), hash(&self.hashers.1))
    }

    pub(crate) fn get(&mut self, key: Key, now: Instant) -> Option<V> {
        match self.entries.get(&key) {
            Some((expires, value)) if now < *expires => Some(value.clone()),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn insert(&mut self, key: Key, value: V, now: Instant) {
        if self.ttl.is_zero() || self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries {
            self.entries.retain(|_, (expires, _)| now < *expires);
        }
        if self.entries.len() >= self.max_entries {
            // Still full of live answers: drop the one closest to expiry.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (expires, _))| *expires)
                .map(|(key, _)| *key)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (now + self.ttl, value));
    }
}
