//! Wall-clock jumps. The wall clock can be stepped (by hand, by NTP after a boot with a bad RTC);
//! the monotonic clock cannot. Comparing how far each moved between two readings tells a jump
//! from elapsed time ([`ClockJump::check`]), and [`WallGate`] decides when housekeeping that acts
//! on the wall clock (pruning by age, expiry) may act: not on a jump of more than
//! [`MAX_CLOCK_JUMP`] until the new wall clock has run in step with the monotonic clock for that
//! long. Pure: both clocks are read by the caller and passed in.
use std::fmt;
use std::time::Duration;

use super::format_duration;

/// The largest disagreement between the wall and monotonic clocks over one interval that is
/// taken as ordinary drift or an NTP correction: one day. Past it the wall clock has jumped.
pub const MAX_CLOCK_JUMP: Duration = Duration::from_hours(24);

/// Both clocks read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// Wall clock, ms since the Unix epoch.
    pub wall_ms: u64,
    /// Monotonic clock (`CLOCK_MONOTONIC`), ns since an arbitrary start (the boot on Linux).
    pub mono_ns: u64,
}

impl ClockReading {
    #[must_use]
    pub fn new(wall_ms: u64, mono_ns: u64) -> Self {
        Self { wall_ms, mono_ns }
    }
}

/// How the wall clock moved between two readings, against the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockJump {
    /// Within the limit of the monotonic clock's elapsed time.
    Steady,
    /// The wall clock moved this much further than the monotonic clock.
    Forward(Duration),
    /// The wall clock moved this much less (or back).
    Backward(Duration),
}

impl ClockJump {
    /// Compares the wall clock's move from `prev_wall_ms` to `now_wall_ms` with the monotonic
    /// clock's from `prev_mono_ns` to `now_mono_ns`: a disagreement of more than
    /// [`MAX_CLOCK_JUMP`] is a jump. A monotonic clock that went back (readings of two boots)
    /// counts as no time elapsed.
    #[must_use]
    pub fn check(prev_wall_ms: u64, now_wall_ms: u64, prev_mono_ns: u64, now_mono_ns: u64) -> Self {
        Self::check_within(
            ClockReading::new(prev_wall_ms, prev_mono_ns),
            ClockReading::new(now_wall_ms, now_mono_ns),
            MAX_CLOCK_JUMP,
        )
    }

    /// [`ClockJump::check`] between two readings, with the limit `limit`.
    #[must_use]
    pub fn check_within(prev: ClockReading, now: ClockReading, limit: Duration) -> Self {
        let wall_ms = i128::from(now.wall_ms) - i128::from(prev.wall_ms);
        let mono_ms = i128::from(now.mono_ns.saturating_sub(prev.mono_ns) / 1_000_000);
        let off_ms = wall_ms - mono_ms;
        let size = Duration::from_millis(u64::try_from(off_ms.unsigned_abs()).unwrap_or(u64::MAX));
        if size <= limit {
            Self::Steady
        } else if off_ms > 0 {
            Self::Forward(size)
        } else {
            Self::Backward(size)
        }
    }

    /// True when the clocks agreed.
    #[must_use]
    pub fn is_steady(self) -> bool {
        self == Self::Steady
    }
}

impl fmt::Display for ClockJump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Steady => f.write_str("steady"),
            Self::Forward(d) => write!(f, "forward by {}", format_duration(*d)),
            Self::Backward(d) => write!(f, "backward by {}", format_duration(*d)),
        }
    }
}

/// What [`WallGate::observe`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The wall clock is trusted: act on it.
    Act,
    /// The wall clock jumped: do not act on it now. `first` is true for the first refusal of
    /// this jump (log it then, once).
    Refuse { jump: ClockJump, first: bool },
    /// The wall clock that jumped has run in step with the monotonic clock for
    /// [`MAX_CLOCK_JUMP`]: it is now trusted, act on it (and say so once).
    Accepted(ClockJump),
}

impl Gate {
    /// True unless refused.
    #[must_use]
    pub fn acts(self) -> bool {
        !matches!(self, Self::Refuse { .. })
    }
}

/// Whether wall-clock housekeeping may act, reading after reading. Refuses from a jump of more
/// than [`MAX_CLOCK_JUMP`] against the last trusted reading until either the wall clock comes
/// back in step with it, or the new wall clock has run steadily for [`MAX_CLOCK_JUMP`] of
/// monotonic time (a correction that stays is accepted, a day late).
///
/// Across a restart only the last wall time seen is known ([`WallGate::resume`]), not how much
/// time passed: a gap of more than [`MAX_CLOCK_JUMP`] then cannot be told from a clock far ahead,
/// and is treated as a jump (its housekeeping waits a day; a guard down for weeks prunes a day
/// late, a guard started with its clock a year ahead does not delete a year of records).
#[derive(Debug, Clone, Default)]
pub struct WallGate {
    /// The last reading in step with its predecessor.
    trusted: Option<ClockReading>,
    /// The last wall time seen before a restart (the monotonic clock of then is unknown).
    resumed_ms: Option<u64>,
    /// The reading at which a jump was seen, and the jump; cleared when it is accepted or undone.
    suspect: Option<(ClockReading, ClockJump)>,
}

impl WallGate {
    /// A gate with nothing known: the first reading is trusted.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A gate after a restart: `last_wall_ms` is the last wall time seen before it (e.g. the
    /// newest record's time); a first reading more than [`MAX_CLOCK_JUMP`] from it is a jump.
    #[must_use]
    pub fn resume(last_wall_ms: u64) -> Self {
        Self {
            resumed_ms: Some(last_wall_ms),
            ..Self::default()
        }
    }

    /// True while a jump is being refused.
    #[must_use]
    pub fn refusing(&self) -> bool {
        self.suspect.is_some()
    }

    /// Takes a reading of both clocks and says whether to act on the wall clock now.
    pub fn observe(&mut self, now: ClockReading) -> Gate {
        let against_trusted = self
            .trusted
            .map(|t| ClockJump::check_within(t, now, MAX_CLOCK_JUMP));
        if against_trusted == Some(ClockJump::Steady) {
            // In step with the trusted timeline (also: a jump undone).
            self.trusted = Some(now);
            self.suspect = None;
            return Gate::Act;
        }
        if let Some((seen, jump)) = self.suspect {
            let since = ClockJump::check_within(seen, now, MAX_CLOCK_JUMP);
            if !since.is_steady() {
                // Another jump while refusing: the wait starts again.
                let jump = against_trusted.unwrap_or(since);
                self.suspect = Some((now, jump));
                return Gate::Refuse { jump, first: true };
            }
            let ran = Duration::from_nanos(now.mono_ns.saturating_sub(seen.mono_ns));
            if ran >= MAX_CLOCK_JUMP {
                self.trusted = Some(now);
                self.suspect = None;
                return Gate::Accepted(jump);
            }
            return Gate::Refuse { jump, first: false };
        }
        let jump = match (against_trusted, self.resumed_ms.take()) {
            (Some(jump), _) => jump,
            (None, Some(last_ms)) => {
                let gap_ms = i128::from(now.wall_ms) - i128::from(last_ms);
                let size =
                    Duration::from_millis(u64::try_from(gap_ms.unsigned_abs()).unwrap_or(u64::MAX));
                if size <= MAX_CLOCK_JUMP {
                    ClockJump::Steady
                } else if gap_ms > 0 {
                    ClockJump::Forward(size)
                } else {
                    ClockJump::Backward(size)
                }
            }
            (None, None) => ClockJump::Steady,
        };
        if jump.is_steady() {
            self.trusted = Some(now);
            return Gate::Act;
        }
        self.suspect = Some((now, jump));
        Gate::Refuse { jump, first: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;
    const HOUR_NS: u64 = 3_600_000_000_000;
    const DAY_MS: u64 = 24 * HOUR_MS;
    const DAY_NS: u64 = 24 * HOUR_NS;
    /// 2026-11-18, an ordinary wall time.
    const T0: u64 = 1_795_000_000_000;

    #[test]
    fn steady_time_is_not_a_jump() {
        // An hour on both clocks; a minute of NTP correction; 23 h of skew is still in bounds.
        assert_eq!(
            ClockJump::check(T0, T0 + HOUR_MS, 5, 5 + HOUR_NS),
            ClockJump::Steady
        );
        assert!(ClockJump::check(T0, T0 + HOUR_MS + 60_000, 0, HOUR_NS).is_steady());
        assert!(ClockJump::check(T0, T0 + 23 * HOUR_MS, 0, 0).is_steady());
        assert!(
            ClockJump::check(T0, T0 + DAY_MS, 0, 0).is_steady(),
            "the limit is inclusive"
        );
    }

    #[test]
    fn jumps_both_ways_are_measured_against_monotonic_time() {
        // Ten minutes of monotonic time, the wall clock a year ahead.
        let year = 365 * DAY_MS;
        let j = ClockJump::check(T0, T0 + year, 0, 600_000_000_000);
        assert_eq!(j, ClockJump::Forward(Duration::from_millis(year - 600_000)));
        assert_eq!(j.to_string(), "forward by 364d23h50m");
        // Two days of monotonic time, the wall clock did not move: backward by two days.
        let j = ClockJump::check(T0, T0, 0, 2 * DAY_NS);
        assert_eq!(j, ClockJump::Backward(Duration::from_millis(2 * DAY_MS)));
        // Stepped back before its previous reading.
        assert!(matches!(
            ClockJump::check(T0, T0 - 3 * DAY_MS, 0, HOUR_NS),
            ClockJump::Backward(_)
        ));
        // A monotonic clock that went back (another boot) counts as no time: a wall gap of two
        // days is then a jump, never a panic or an overflow.
        assert!(matches!(
            ClockJump::check(T0, T0 + 2 * DAY_MS, 10 * DAY_NS, 1),
            ClockJump::Forward(_)
        ));
        assert!(matches!(
            ClockJump::check(0, u64::MAX, u64::MAX, 0),
            ClockJump::Forward(_)
        ));
        assert!(matches!(
            ClockJump::check(u64::MAX, 0, 0, u64::MAX),
            ClockJump::Backward(_)
        ));
        // A custom limit.
        let (a, b) = (ClockReading::new(T0, 0), ClockReading::new(T0 + 2000, 0));
        assert!(ClockJump::check_within(a, b, Duration::from_secs(1)) != ClockJump::Steady);
        assert!(ClockJump::check_within(a, b, Duration::from_secs(2)).is_steady());
    }

    #[test]
    fn the_gate_acts_on_steady_time() {
        let mut g = WallGate::new();
        for i in 0..48 {
            let gate = g.observe(ClockReading::new(T0 + i * HOUR_MS, i * HOUR_NS));
            assert_eq!(gate, Gate::Act, "hour {i}");
        }
        assert!(!g.refusing());
    }

    #[test]
    fn a_forward_jump_is_refused_until_it_has_run_for_a_day() {
        let mut g = WallGate::new();
        assert_eq!(g.observe(ClockReading::new(T0, 0)), Gate::Act);
        // Ten minutes later the wall clock is a year ahead: refused, said once.
        let year = 365 * DAY_MS;
        let jumped = |h: u64| ClockReading::new(T0 + year + h * HOUR_MS, HOUR_NS / 6 + h * HOUR_NS);
        let first = g.observe(jumped(0));
        assert!(
            matches!(
                first,
                Gate::Refuse {
                    jump: ClockJump::Forward(_),
                    first: true
                }
            ),
            "{first:?}"
        );
        assert!(!first.acts());
        for h in 1..24 {
            assert!(
                matches!(g.observe(jumped(h)), Gate::Refuse { first: false, .. }),
                "hour {h}"
            );
        }
        // A day of steady running on the new wall clock: accepted, then trusted.
        let accepted = g.observe(jumped(24));
        assert!(
            matches!(accepted, Gate::Accepted(ClockJump::Forward(_))),
            "{accepted:?}"
        );
        assert!(accepted.acts());
        assert_eq!(g.observe(jumped(25)), Gate::Act);
    }

    #[test]
    fn a_jump_undone_is_trusted_again_at_once() {
        let mut g = WallGate::new();
        assert_eq!(g.observe(ClockReading::new(T0, 0)), Gate::Act);
        let gate = g.observe(ClockReading::new(T0 + 30 * DAY_MS, HOUR_NS));
        assert!(matches!(gate, Gate::Refuse { first: true, .. }));
        // NTP steps it back: in step with the trusted timeline again.
        assert_eq!(
            g.observe(ClockReading::new(T0 + 2 * HOUR_MS, 2 * HOUR_NS)),
            Gate::Act
        );
        assert!(!g.refusing());
        // A backward jump of two days is refused the same way.
        let gate = g.observe(ClockReading::new(T0 - DAY_MS, 3 * HOUR_NS));
        assert!(matches!(
            gate,
            Gate::Refuse {
                jump: ClockJump::Backward(_),
                first: true
            }
        ));
    }

    #[test]
    fn a_second_jump_while_refusing_restarts_the_wait() {
        let mut g = WallGate::new();
        g.observe(ClockReading::new(T0, 0));
        assert!(
            !g.observe(ClockReading::new(T0 + 10 * DAY_MS, HOUR_NS))
                .acts()
        );
        // 20 h on the jumped clock, then another jump: said again, and a full day is needed
        // from there.
        assert!(
            !g.observe(ClockReading::new(
                T0 + 10 * DAY_MS + 20 * HOUR_MS,
                21 * HOUR_NS
            ))
            .acts()
        );
        let again = g.observe(ClockReading::new(T0 + 40 * DAY_MS, 22 * HOUR_NS));
        assert!(
            matches!(again, Gate::Refuse { first: true, .. }),
            "{again:?}"
        );
        assert!(
            !g.observe(ClockReading::new(
                T0 + 40 * DAY_MS + 23 * HOUR_MS,
                45 * HOUR_NS
            ))
            .acts()
        );
        let accepted = g.observe(ClockReading::new(T0 + 41 * DAY_MS, 46 * HOUR_NS));
        assert!(matches!(accepted, Gate::Accepted(_)), "{accepted:?}");
    }

    #[test]
    fn after_a_restart_a_gap_of_more_than_a_day_waits() {
        // The newest record is an hour old: act at once.
        let mut g = WallGate::resume(T0 - HOUR_MS);
        assert_eq!(g.observe(ClockReading::new(T0, 7)), Gate::Act);
        // The clock is a year past the newest record (or guard was down a year): refused.
        let mut g = WallGate::resume(T0);
        let year = 365 * DAY_MS;
        let gate = g.observe(ClockReading::new(T0 + year, 0));
        assert!(matches!(
            gate,
            Gate::Refuse {
                jump: ClockJump::Forward(_),
                first: true
            }
        ));
        assert!(
            !g.observe(ClockReading::new(T0 + year + HOUR_MS, HOUR_NS))
                .acts()
        );
        assert!(
            g.observe(ClockReading::new(T0 + year + DAY_MS, DAY_NS))
                .acts()
        );
        // A clock far behind the newest record is refused as well.
        let mut g = WallGate::resume(T0);
        assert!(!g.observe(ClockReading::new(T0 - 5 * DAY_MS, 0)).acts());
    }
}
