//! The expiry rules against an injected clock: both clocks are plain numbers the test moves.
use std::time::Duration;

use super::*;

const HOUR_MS: u64 = 3_600_000;
const MIN: Duration = Duration::from_mins(1);

/// A wall clock and a monotonic clock the test moves by hand.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_ms: u64,
    mono_ns: u64,
}

impl Clock {
    fn new() -> Self {
        // 2026-01-01T00:00:00Z and a monotonic clock some hours after boot.
        Self {
            wall_ms: 1_767_225_600_000,
            mono_ns: 5 * 3_600 * 1_000_000_000,
        }
    }

    /// Time passes: both clocks move.
    fn advance(&mut self, d: Duration) {
        self.wall_ms += d.as_millis() as u64;
        self.mono_ns += d.as_nanos() as u64;
    }

    /// The wall clock is stepped (an operator, a bad NTP server); the monotonic one is not.
    fn step_wall(&mut self, by_ms: i64) {
        self.wall_ms = shift(self.wall_ms, by_ms);
    }
}

/// What the ban owner does with one timed ban: the record keeps the wall-clock end, and one
/// monotonic deadline goes both to the XDP map and to the schedule that removes the record.
struct Keeper {
    schedule: LazySchedule<u32>,
    /// Key → (stored wall-clock end, deadline handed to the XDP map).
    records: std::collections::BTreeMap<u32, (u64, u64)>,
}

impl Keeper {
    fn new() -> Self {
        Self {
            schedule: LazySchedule::new(),
            records: std::collections::BTreeMap::new(),
        }
    }

    fn ban(&mut self, key: u32, ttl: Duration, c: Clock) {
        let expires_ms = c.wall_ms + ttl.as_millis() as u64;
        let deadline = mono_deadline(expires_ms, c.wall_ms, c.mono_ns).expect("in the future");
        self.records.insert(key, (expires_ms, deadline));
        let records = &self.records;
        self.schedule
            .insert(key, deadline, |k| records.get(k).map(|r| r.1));
    }

    /// The sweep: removes from the store what the schedule says is due.
    fn sweep(&mut self, c: Clock) -> Vec<u32> {
        let records = &self.records;
        let due: Vec<u32> = self
            .schedule
            .pop_due(c.mono_ns, |k| records.get(k).map(|r| r.1))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in &due {
            self.records.remove(k);
        }
        due
    }

    /// Whether the XDP program still drops the source (it compares the deadline with the
    /// monotonic clock).
    fn xdp_enforces(&self, key: u32, c: Clock) -> bool {
        self.records.get(&key).is_some_and(|(_, d)| *d > c.mono_ns)
    }
}

#[test]
fn a_forward_wall_jump_does_not_end_bans_early() {
    let mut c = Clock::new();
    let mut k = Keeper::new();
    let mut watch = ClockWatch::new(c.wall_ms, c.mono_ns);
    k.ban(1, Duration::from_hours(1), c);
    c.advance(MIN);
    c.step_wall(2 * HOUR_MS as i64);
    assert_eq!(
        watch.observe(c.wall_ms, c.mono_ns),
        Some(Jump::Forward(Duration::from_hours(2)))
    );
    // The stored end is two hours in the past by the wall clock; the ban still holds.
    assert!(k.records[&1].0 < c.wall_ms);
    assert!(k.sweep(c).is_empty(), "the wall-clock jump ended the ban");
    assert!(k.xdp_enforces(1, c));
    c.advance(Duration::from_mins(58));
    assert!(k.sweep(c).is_empty());
    c.advance(MIN);
    assert_eq!(k.sweep(c), [1], "the ban lasts its hour, no more");
}

#[test]
fn a_backward_wall_jump_ends_store_and_xdp_together() {
    let mut c = Clock::new();
    let mut k = Keeper::new();
    k.ban(7, Duration::from_hours(1), c);
    c.advance(MIN);
    c.step_wall(-2 * HOUR_MS as i64);
    // One nanosecond before the deadline both still hold the ban.
    c.advance(Duration::from_mins(59) - Duration::from_nanos(1));
    assert!(k.xdp_enforces(7, c));
    assert!(k.sweep(c).is_empty());
    // At the deadline XDP stops enforcing and the store lets go in the same sweep, although
    // the wall clock says the ban has three hours left.
    c.advance(Duration::from_nanos(1));
    assert!(!k.xdp_enforces(7, c));
    assert!(k.records[&7].0 > c.wall_ms + 2 * HOUR_MS);
    assert_eq!(k.sweep(c), [7]);
    assert!(
        k.records.is_empty(),
        "the store still says banned after XDP expired it"
    );
}

#[test]
fn a_start_more_than_a_day_past_the_heartbeat_keeps_timed_bans() {
    let mut c = Clock::new();
    let heartbeat = c.wall_ms;
    let expires = heartbeat + 30 * 60_000;
    // The daemon stops; the machine comes back with its clock three days ahead.
    c.advance(Duration::from_secs(20));
    c.step_wall(3 * 24 * HOUR_MS as i64);
    let naive = mono_deadline(expires, c.wall_ms, c.mono_ns);
    assert_eq!(
        naive, None,
        "measured from the wall clock, the ban would be deleted"
    );
    let start = start_reference(c.wall_ms, Some(heartbeat), MAX_JUMP);
    assert_eq!(start.wall_ms, heartbeat);
    let jump = start.refused.expect("the jump is reported");
    assert!(jump.too_big() && matches!(jump, Jump::Forward(_)), "{jump}");
    // The ban keeps the 30 minutes it had at the heartbeat, on the monotonic clock.
    let deadline = mono_deadline(expires, start.wall_ms, c.mono_ns).expect("kept");
    assert_eq!(deadline - c.mono_ns, 30 * 60 * 1_000_000_000);
    // Its stored end is moved onto the clock of now, so the next start agrees.
    let moved = shift(expires, start.shift_ms(c.wall_ms));
    assert_eq!(moved, c.wall_ms + 30 * 60_000);
    assert_eq!(wall_of(deadline, c.mono_ns, c.wall_ms), moved);
}

#[test]
fn an_ordinary_restart_counts_the_time_away() {
    let mut c = Clock::new();
    let heartbeat = c.wall_ms;
    let expires = heartbeat + 30 * 60_000;
    c.advance(Duration::from_mins(10));
    let start = start_reference(c.wall_ms, Some(heartbeat), MAX_JUMP);
    assert_eq!(
        start,
        StartReference {
            wall_ms: c.wall_ms,
            refused: None
        }
    );
    assert_eq!(start.shift_ms(c.wall_ms), 0);
    let deadline = mono_deadline(expires, start.wall_ms, c.mono_ns).expect("kept");
    assert_eq!(deadline - c.mono_ns, 20 * 60 * 1_000_000_000);
    // Away for longer than the ban: it is over.
    c.advance(Duration::from_hours(5));
    let start = start_reference(c.wall_ms, Some(heartbeat), MAX_JUMP);
    assert_eq!(mono_deadline(expires, start.wall_ms, c.mono_ns), None);
    // A first start has no heartbeat: the wall clock is all there is.
    assert_eq!(
        start_reference(c.wall_ms, None, MAX_JUMP).wall_ms,
        c.wall_ms
    );
}

#[test]
fn a_start_with_the_clock_behind_the_heartbeat_does_not_lengthen_bans() {
    let mut c = Clock::new();
    let heartbeat = c.wall_ms;
    let expires = heartbeat + HOUR_MS;
    c.step_wall(-5 * HOUR_MS as i64);
    let start = start_reference(c.wall_ms, Some(heartbeat), MAX_JUMP);
    assert_eq!(start.wall_ms, heartbeat);
    assert_eq!(start.refused, Some(Jump::Backward(Duration::from_hours(5))));
    let deadline = mono_deadline(expires, start.wall_ms, c.mono_ns).expect("kept");
    assert_eq!(
        deadline - c.mono_ns,
        3_600 * 1_000_000_000,
        "one hour, not six"
    );
}

#[test]
fn retention_refuses_to_act_on_a_jump_of_more_than_a_day() {
    let mut c = Clock::new();
    let mut watch = ClockWatch::new(c.wall_ms, c.mono_ns);
    c.advance(MIN);
    assert_eq!(watch.trusted_now(c.wall_ms, c.mono_ns), (c.wall_ms, None));
    // A small step is acted on (reported, trusted).
    c.step_wall(HOUR_MS as i64);
    let (now, jump) = watch.trusted_now(c.wall_ms, c.mono_ns);
    assert_eq!(
        (now, jump),
        (c.wall_ms, Some(Jump::Forward(Duration::from_hours(1))))
    );
    // A year forward is not: time goes on from before the jump.
    let before = c.wall_ms;
    c.advance(MIN);
    c.step_wall(365 * 24 * HOUR_MS as i64);
    let (now, jump) = watch.trusted_now(c.wall_ms, c.mono_ns);
    assert!(jump.is_some_and(Jump::too_big));
    assert_eq!(now, before + 60_000);
    // ... and stays so: later readings are not measured from the jumped clock either.
    c.advance(MIN);
    let (now, jump) = watch.trusted_now(c.wall_ms, c.mono_ns);
    assert_eq!(now, before + 120_000);
    assert!(jump.is_some_and(Jump::too_big));
}

#[test]
fn deadline_arithmetic() {
    assert_eq!(mono_deadline(100, 100, 7), None, "ending now is ended");
    assert_eq!(wall_of(3_000_000, 1_000_000, 50), 52);
    assert_eq!(shift(10, -20), 0);
}
