//! Pruning by age (`logs.retention`), guarded against wall-clock jumps. Records are keyed by
//! wall time, so a clock stepped a year ahead would make one prune delete the whole log. Each
//! prune reads both clocks and asks a [`WallGate`] (`guard_core::time`) first: on a jump of more
//! than a day (against the previous prune, or, at start, against the newest record) it prunes
//! nothing by age, says so once, and waits until the clock comes back or has run steadily for a
//! day. The byte cap (`logs.max_bytes`) is kept meanwhile: it does not read the clock.
use std::time::Duration;

use guard_core::time::{ClockReading, Gate, WallGate};

use super::{LogError, LogStore};

/// Pruning by age of one log, with its clock-jump gate.
#[derive(Debug)]
pub struct Retention {
    gate: WallGate,
}

impl Retention {
    /// Starts from `store`'s newest record: the first prune trusts a wall clock within a day of
    /// it (an empty log trusts the first reading).
    #[must_use]
    pub fn new(store: &LogStore) -> Self {
        let gate = match store.newest_time() {
            Some(t) => WallGate::resume(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            None => WallGate::new(),
        };
        Self { gate }
    }

    /// Removes the records older than `retention` at `now`, unless the wall clock jumped (see
    /// the module's doc): `Ok(None)` then.
    pub fn prune(
        &mut self,
        store: &LogStore,
        retention: Duration,
        now: ClockReading,
    ) -> Result<Option<usize>, LogError> {
        match self.gate.observe(now) {
            Gate::Refuse { jump, first } => {
                if first {
                    tracing::warn!(
                        wall_clock = %guard_core::time::format_utc(now.wall_ms),
                        %jump,
                        "the wall clock jumped by more than a day (against the last prune, or the \
                         newest log record at start): the request log is not pruned by age until \
                         the clock is back or has run steadily for a day (logs.max_bytes still \
                         applies)"
                    );
                }
                return Ok(None);
            }
            Gate::Accepted(jump) => tracing::info!(
                %jump,
                "the wall clock has run steadily for a day since it jumped: pruning the request \
                 log by age again"
            ),
            Gate::Act => {}
        }
        let cutoff = Duration::from_millis(now.wall_ms).saturating_sub(retention);
        store.prune_older_than(cutoff).map(Some)
    }
}
