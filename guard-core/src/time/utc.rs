//! Points in time as an operator writes them on the command line (`--since`, `--until`): a
//! duration ago (`10m`, `2h`, `7d`), an RFC 3339 time (`2026-11-18T11:06:40Z`, or with an
//! offset such as `+01:00`), a plain date (`2026-11-18`, its midnight UTC) or `now`. "Now" is
//! passed in; nothing here reads a clock.
use super::parse_duration;
use crate::quota::days_from_civil;

/// Why a point in time did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error(
        "invalid time {text:?}: expected a duration ago (10m, 2h, 7d), an RFC 3339 time \
         (2026-11-18T11:06:40Z) or a date (2026-11-18)"
    )]
    Syntax { text: String },
    #[error("invalid time {text:?}: {why}")]
    Invalid { text: String, why: &'static str },
}

/// Parses `text` into milliseconds since the Unix epoch, UTC. A duration is that long before
/// `now_ms` (at the epoch at the earliest); a date is its midnight UTC; a time without a zone
/// is refused rather than guessed.
///
/// # Errors
/// [`TimeError`] naming the text and what is wrong with it.
pub fn parse_utc(text: &str, now_ms: u64) -> Result<u64, TimeError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Ok(d) = parse_duration(t) {
        return Ok(now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    }
    let syntax = || TimeError::Syntax {
        text: text.to_owned(),
    };
    let invalid = |why| TimeError::Invalid {
        text: text.to_owned(),
        why,
    };
    let b = t.as_bytes();
    if b.len() < 10 || !b[4..5].eq(b"-") || !b[7..8].eq(b"-") {
        return Err(syntax());
    }
    let year = digits(&b[0..4]).ok_or_else(syntax)?;
    let month = digits(&b[5..7]).ok_or_else(syntax)?;
    let day = digits(&b[8..10]).ok_or_else(syntax)?;
    if !(1..=12).contains(&month) {
        return Err(invalid("there is no such month"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(invalid("there is no such day in that month"));
    }
    let date_ms = |y: u64| -> Option<i64> {
        days_from_civil(y as i64, month as u32, day as u32).checked_mul(86_400_000)
    };
    let midnight = date_ms(year).ok_or_else(syntax)?;
    let rest = &b[10..];
    if rest.is_empty() {
        return to_epoch_ms(midnight).ok_or_else(|| invalid("it is before 1970"));
    }
    // `T` (or a space, as people write it) then HH:MM:SS, an optional fraction, and the zone.
    if !matches!(rest[0], b'T' | b't' | b' ') || rest.len() < 9 || rest[3] != b':' {
        return Err(syntax());
    }
    let hour = digits(&rest[1..3]).ok_or_else(syntax)?;
    let minute = digits(&rest[4..6]).ok_or_else(syntax)?;
    if rest[6] != b':' {
        return Err(syntax());
    }
    let second = digits(&rest[7..9]).ok_or_else(syntax)?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(invalid("hours go to 23, minutes and seconds to 59"));
    }
    let mut zone = &rest[9..];
    let mut millis = 0;
    if let Some(frac) = zone.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(syntax());
        }
        // Milliseconds: the first three digits, padded.
        for i in 0..3 {
            millis = millis * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |c| u64::from(c - b'0'));
        }
        zone = &frac[n..];
    }
    let offset_min: i64 = match zone {
        b"Z" | b"z" => 0,
        [] => {
            return Err(invalid(
                "it has no time zone: add Z for UTC, or an offset like +01:00",
            ));
        }
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2]).ok_or_else(syntax)?;
            let m = digits(&[*m1, *m2]).ok_or_else(syntax)?;
            if h > 23 || m > 59 {
                return Err(invalid("an offset goes to 23:59"));
            }
            let total = (h * 60 + m) as i64;
            if *sign == b'-' { -total } else { total }
        }
        _ => return Err(syntax()),
    };
    // A leap second is the last millisecond of its minute.
    let second_ms = if second == 60 {
        59_999
    } else {
        second * 1000 + millis
    };
    let local = midnight + ((hour * 60 + minute) * 60_000 + second_ms) as i64;
    to_epoch_ms(local - offset_min * 60_000).ok_or_else(|| invalid("it is before 1970"))
}

/// The value of ASCII decimal digits, `None` if one is not a digit.
fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

fn to_epoch_ms(ms: i64) -> Option<u64> {
    u64::try_from(ms).ok()
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_utc;

    const NOW: u64 = 1_795_000_000_000; // 2026-11-18T11:06:40Z

    #[test]
    fn durations_are_before_now() {
        assert_eq!(parse_utc("10m", NOW), Ok(NOW - 600_000));
        assert_eq!(parse_utc("1h30m", NOW), Ok(NOW - 5_400_000));
        assert_eq!(parse_utc(" now ", NOW), Ok(NOW));
        assert_eq!(
            parse_utc("100000w", NOW),
            Ok(0),
            "at the epoch at the earliest"
        );
    }

    #[test]
    fn rfc3339_times_and_dates() {
        assert_eq!(parse_utc("2026-11-18T11:06:40Z", 0), Ok(NOW));
        assert_eq!(parse_utc("2026-11-18t11:06:40z", 0), Ok(NOW));
        assert_eq!(parse_utc("2026-11-18 11:06:40Z", 0), Ok(NOW));
        assert_eq!(parse_utc("2026-11-18T11:06:40.5Z", 0), Ok(NOW + 500));
        assert_eq!(parse_utc("2026-11-18T11:06:40.123456Z", 0), Ok(NOW + 123));
        assert_eq!(parse_utc("2026-11-18T12:06:40+01:00", 0), Ok(NOW));
        assert_eq!(parse_utc("2026-11-18T05:36:40-05:30", 0), Ok(NOW));
        assert_eq!(
            parse_utc("2026-11-18", NOW),
            Ok(NOW - (11 * 3600 + 6 * 60 + 40) * 1000)
        );
        assert_eq!(parse_utc("1970-01-01", NOW), Ok(0));
        assert_eq!(parse_utc("2024-02-29", 0), Ok(1_709_164_800_000));
        // What `format_utc` prints reads back.
        assert_eq!(parse_utc(&format_utc(NOW), 0), Ok(NOW));
    }

    #[test]
    fn mistakes_are_sentences() {
        let why = |t: &str| parse_utc(t, NOW).unwrap_err().to_string();
        assert_eq!(
            why("yesterday"),
            "invalid time \"yesterday\": expected a duration ago (10m, 2h, 7d), an RFC 3339 \
             time (2026-11-18T11:06:40Z) or a date (2026-11-18)"
        );
        assert_eq!(
            why("2026-11-18T11:06:40"),
            "invalid time \"2026-11-18T11:06:40\": it has no time zone: add Z for UTC, or an \
             offset like +01:00"
        );
        assert_eq!(
            why("2026-13-01"),
            "invalid time \"2026-13-01\": there is no such month"
        );
        assert_eq!(
            why("2025-02-29"),
            "invalid time \"2025-02-29\": there is no such day in that month"
        );
        assert_eq!(
            why("1969-12-31"),
            "invalid time \"1969-12-31\": it is before 1970"
        );
        for bad in [
            "",
            "2026-11",
            "2026/11/18",
            "2026-11-18T",
            "2026-11-18T11:06Z",
            "2026-11-18T24:00:00Z",
            "2026-11-18T11:06:40.Z",
            "2026-11-18T11:06:40+1:00",
            "2026-11-18T11:06:40+24:00",
            "2026-11-18T11:06:40Zjunk",
            "+026-11-18",
        ] {
            assert!(parse_utc(bad, NOW).is_err(), "{bad:?}");
        }
    }
}
