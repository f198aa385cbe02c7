//! Clocks read by the daemon: wall-clock milliseconds for storage and display, `CLOCK_MONOTONIC`
//! nanoseconds for the XDP maps (what `bpf_ktime_get_ns` reads). The pure helpers (durations,
//! UTC dates, deadline conversion) live in `guard_core::time` and are re-exported here.
use std::time::{SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};

pub use guard_core::time::*;

/// Wall-clock time now, in milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
#[must_use]
pub fn mono_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux (a valid clock id, a valid pointer); 0 if it did.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// An expiry (ms since the epoch, `None` for never) as a log line or a person reads it:
/// RFC 3339 UTC, or `never`.
#[must_use]
pub fn format_expiry(expires_at: Option<u64>) -> String {
    expires_at.map_or_else(|| "never".to_owned(), format_utc)
}
