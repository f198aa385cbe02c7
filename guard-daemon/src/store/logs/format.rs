//! How `guard logs` shows records to a person: RFC 3339 times and an aligned table.
use std::fmt::Write as _;
use std::time::Duration;

use super::LogRecord;
use crate::tap::Trust;

/// `time` as RFC 3339 UTC with milliseconds, e.g. `2026-11-24T15:04:05.123Z`.
#[must_use]
pub fn rfc3339(time: Duration) -> String {
    let secs = time.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        time.subsec_millis()
    )
}

/// The human table of `guard logs`. A request that was not judged says why in its CLIENT cell:
/// `(unverified)` after an address that may be forged, `- (no client)` when a trusted proxy
/// named nobody.
#[must_use]
pub fn format_table(records: &[LogRecord]) -> String {
    let header = [
        "TIME", "CLIENT", "USER", "METHOD", "STATUS", "LATENCY", "IN", "OUT", "PATH", "BLOCKED",
    ];
    let rows: Vec<[String; 10]> = records
        .iter()
        .map(|r| {
            let mut path = r.path.clone();
            if let Some(q) = &r.query {
                let _ = write!(path, "?{q}");
            }
            [
                rfc3339(r.time),
                match r.trust {
                    Trust::Verified => r.client.to_string(),
                    // Not judged: the source may be forged, or no client was named.
                    Trust::Unverified => format!("{} (unverified)", r.client),
                    Trust::NoClient => "- (no client)".into(),
                },
                r.user.clone().unwrap_or_else(|| "-".into()),
                match r.mode {
                    super::Mode::Tap => r.method.clone(),
                    // Judged in the request path: the method carries the mark.
                    super::Mode::Inline => format!("{} (inline)", r.method),
                },
                r.status.map_or_else(|| "-".into(), |s| s.to_string()),
                r.latency_ms
                    .map_or_else(|| "-".into(), |l| format!("{l:.1}ms")),
                r.bytes_in.to_string(),
                r.bytes_out.to_string(),
                path,
                match (&r.blocked, &r.reason) {
                    (true, Some(reason)) => format!("yes: {reason}"),
                    (true, None) => "yes".into(),
                    (false, _) => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            // Right-align numbers, left-align text.
            if (4..=7).contains(&i) {
                let _ = write!(l, "{cell:>w$}");
            } else {
                let _ = write!(l, "{cell:<w$}");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}
