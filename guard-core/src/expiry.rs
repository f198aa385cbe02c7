//! When timed bans end, on the monotonic clock, and what to do when the wall clock jumps.
//!
//! A ban's end is stored as wall-clock time (for display, and so that it survives a restart),
//! but it is *enforced* on the monotonic clock: the XDP program compares its deadline with
//! `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`), and the daemon removes the stored record at that same
//! monotonic deadline, so the maps and the store always end a ban together. A wall-clock jump
//! while the daemon runs changes nothing about when a ban ends; only the wall-clock times shown
//! are rebased ([`ClockWatch`]). At start, the wall clock is all there is to measure how long the
//! daemon was away: a clock more than [`MAX_JUMP`] past the last time the daemon saw (its
//! heartbeat) is not trusted, and remaining durations are kept as they were at the heartbeat
//! ([`start_reference`]).
//!
//! Nothing here reads a clock: callers pass wall-clock milliseconds since the Unix epoch and
//! monotonic nanoseconds in.
mod lazy;
pub use lazy::LazySchedule;

use std::time::Duration;

/// The largest wall-clock step guard acts on; a larger one is logged and not acted on.
pub const MAX_JUMP: Duration = Duration::from_hours(24);

/// Drift between the two clocks below this is ordinary (NTP slewing, scheduling): ignored.
pub const DRIFT_TOLERANCE: Duration = Duration::from_secs(2);

/// The monotonic deadline of something that ends at wall time `expires_ms`, measured from
/// `reference_ms` (the wall time trusted as "now") with the monotonic clock at `now_ns`.
/// `None` when it has already ended.
#[must_use]
pub fn mono_deadline(expires_ms: u64, reference_ms: u64, now_ns: u64) -> Option<u64> {
    let left_ms = expires_ms.checked_sub(reference_ms).filter(|ms| *ms > 0)?;
    Some(now_ns.saturating_add(left_ms.saturating_mul(1_000_000)))
}

/// The wall time (ms) at which a monotonic deadline falls, as the wall clock reads now.
#[must_use]
pub fn wall_of(deadline_ns: u64, mono_now_ns: u64, wall_now_ms: u64) -> u64 {
    wall_now_ms.saturating_add(deadline_ns.saturating_sub(mono_now_ns) / 1_000_000)
}

/// A step of the wall clock against the monotonic one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jump {
    Forward(Duration),
    Backward(Duration),
}

impl Jump {
    /// How far the wall clock stepped.
    #[must_use]
    pub fn size(self) -> Duration {
        match self {
            Self::Forward(d) | Self::Backward(d) => d,
        }
    }

    /// The step in signed milliseconds (forward is positive).
    #[must_use]
    pub fn signed_ms(self) -> i64 {
        match self {
            Self::Forward(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Self::Backward(d) => -i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Whether guard refuses to act on it (more than [`MAX_JUMP`]).
    #[must_use]
    pub fn too_big(self) -> bool {
        self.size() > MAX_JUMP
    }
}

impl std::fmt::Display for Jump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (dir, d) = match self {
            Self::Forward(d) => ("forward", d),
            Self::Backward(d) => ("backward", d),
        };
        write!(f, "{} {dir}", crate::time::format_duration(*d))
    }
}

/// Watches the wall clock against the monotonic one between two readings, to see steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockWatch {
    wall_ms: u64,
    mono_ns: u64,
}

impl ClockWatch {
    /// Starts watching from these readings.
    #[must_use]
    pub fn new(wall_ms: u64, mono_ns: u64) -> Self {
        Self { wall_ms, mono_ns }
    }

    /// Takes new readings; returns the wall clock's step since the last ones beyond
    /// [`DRIFT_TOLERANCE`], if any.
    pub fn observe(&mut self, wall_ms: u64, mono_ns: u64) -> Option<Jump> {
        let elapsed_ms = mono_ns.saturating_sub(self.mono_ns) / 1_000_000;
        let expected = self.wall_ms.saturating_add(elapsed_ms);
        *self = Self { wall_ms, mono_ns };
        let jump = if wall_ms >= expected {
            Jump::Forward(Duration::from_millis(wall_ms - expected))
        } else {
            Jump::Backward(Duration::from_millis(expected - wall_ms))
        };
        (jump.size() > DRIFT_TOLERANCE).then_some(jump)
    }

    /// The wall time the last readings trust: the wall clock, unless it stepped by more than
    /// [`MAX_JUMP`] since the previous readings, in which case the previous wall time carried
    /// forward by the monotonic clock (and the step is returned). For retention that must not
    /// act on a jump (log pruning).
    pub fn trusted_now(&mut self, wall_ms: u64, mono_ns: u64) -> (u64, Option<Jump>) {
        let carried = self
            .wall_ms
            .saturating_add(mono_ns.saturating_sub(self.mono_ns) / 1_000_000);
        match self.observe(wall_ms, mono_ns) {
            Some(jump) if jump.too_big() => {
                // Keep measuring from the carried time, so the jump is never acted on later.
                self.wall_ms = carried;
                (carried, Some(jump))
            }
            jump => (wall_ms, jump),
        }
    }
}

/// How the daemon measures what is left of its timed bans at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartReference {
    /// The wall time (ms) remaining durations are measured from.
    pub wall_ms: u64,
    /// The clock's step since the heartbeat that guard refused to act on, if any.
    pub refused: Option<Jump>,
}

impl StartReference {
    /// How much to add to a stored wall-clock time so that it reads on the wall clock of now
    /// (non-zero only after a refused jump).
    #[must_use]
    pub fn shift_ms(&self, now_ms: u64) -> i64 {
        let now = i128::from(now_ms);
        i64::try_from(now - i128::from(self.wall_ms)).unwrap_or(0)
    }
}

/// Where to measure remaining durations from at start, given the wall clock now and the last
/// heartbeat the daemon stored (`None` on a first start). A clock more than `max_jump` past the
/// heartbeat, or behind it, is not trusted: bans keep what they had left at the heartbeat.
#[must_use]
pub fn start_reference(
    now_ms: u64,
    heartbeat_ms: Option<u64>,
    max_jump: Duration,
) -> StartReference {
    let Some(hb) = heartbeat_ms else {
        return StartReference {
            wall_ms: now_ms,
            refused: None,
        };
    };
    if now_ms < hb {
        let back = Duration::from_millis(hb - now_ms);
        return StartReference {
            wall_ms: hb,
            refused: (back > DRIFT_TOLERANCE).then_some(Jump::Backward(back)),
        };
    }
    let gap = Duration::from_millis(now_ms - hb);
    if gap > max_jump {
        StartReference {
            wall_ms: hb,
            refused: Some(Jump::Forward(gap)),
        }
    } else {
        StartReference {
            wall_ms: now_ms,
            refused: None,
        }
    }
}

/// Adds a signed number of milliseconds to a wall-clock time, saturating.
#[must_use]
pub fn shift(ms: u64, by_ms: i64) -> u64 {
    if by_ms >= 0 {
        ms.saturating_add(by_ms.unsigned_abs())
    } else {
        ms.saturating_sub(by_ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests;
