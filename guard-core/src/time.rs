//! Time as plain data: human durations like `1h30m` (parsed, formatted, and read from config
//! files), UTC dates, points in time as people type them ([`parse_utc`]), and the conversion of
//! a wall-clock deadline to the monotonic clock the XDP maps use; wall-clock jumps told from
//! elapsed time ([`ClockJump`], [`WallGate`]). Nothing here reads a clock: callers pass "now" in.
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod jump;
mod utc;
pub use jump::{ClockJump, ClockReading, Gate, MAX_CLOCK_JUMP, WallGate};
pub use utc::{TimeError, parse_utc};

/// Converts a wall-clock deadline (ms since the epoch) to `CLOCK_MONOTONIC` ns, given both
/// clocks' "now". A deadline already past maps to 1 (expired but non-zero: 0 means "never").
#[must_use]
pub fn wall_to_mono(deadline_ms: u64, now_ms: u64, now_mono_ns: u64) -> u64 {
    if deadline_ms <= now_ms {
        return 1;
    }
    now_mono_ns.saturating_add((deadline_ms - now_ms).saturating_mul(1_000_000))
}

/// Why a duration did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {text:?}: expected e.g. 90s, 10m, 1h30m, 7d, or a number of seconds")]
pub struct DurationError {
    text: String,
}

/// Parses `30s`, `10m`, `1h30m`, `7d`, `2w`, `500ms` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        text: text.to_owned(),
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(err)?),
            "w" => Duration::from_secs(n.checked_mul(604_800).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(unit).ok_or_else(err)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration as a number of seconds or text like `1h30m`, for config sections' serde.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Formats a duration compactly: `1h30m`, `45s`, `2d3h`.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            let _ = write!(out, "{}{unit}", s / len);
            s %= len;
        }
    }
    out
}

/// Formats ms since the epoch as RFC 3339 UTC to the second, `YYYY-MM-DDTHH:MM:SSZ`: the zone
/// is always written, and [`parse_utc`] reads it back.
#[must_use]
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian).
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_mins(90));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_hours(168));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "h", "1x", "1h-", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_mins(90)), "1h30m");
    }

    #[test]
    fn utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_795_000_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn wall_to_mono_maps_past_to_expired() {
        assert_eq!(wall_to_mono(5, 10, 1000), 1);
        assert_eq!(wall_to_mono(1010, 10, 1000), 1000 + 1_000_000_000);
    }
}
