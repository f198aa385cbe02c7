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

/// The columns of `guard logs`'s table.
const HEADER: [&str; 10] = [
    "TIME", "CLIENT", "USER", "METHOD", "STATUS", "LATENCY", "IN", "OUT", "PATH", "BLOCKED",
];

/// The widths `guard logs --follow` starts from, so that the rows still to come line up with
/// the header: an RFC 3339 time, an IPv4 address, a short user, `OPTIONS`, a status, a latency,
/// byte counts, a path. A longer cell widens only its own row.
const FOLLOW_WIDTHS: [usize; 10] = [24, 15, 8, 7, 6, 9, 6, 8, 24, 0];

/// The human table of `guard logs`. A request that was not judged says why in its CLIENT cell:
/// `(unverified)` after an address that may be forged, `- (no client)` when a trusted proxy
/// named nobody.
#[must_use]
pub fn format_table(records: &[LogRecord]) -> String {
    let t = Table::fit(records);
    let mut out = t.header();
    out.push_str(&t.rows(records));
    out
}

/// Column widths, fixed once: the header and every later batch of rows are laid out with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    widths: [usize; 10],
}

impl Table {
    /// Widths fitting the header and `records`.
    #[must_use]
    pub fn fit(records: &[LogRecord]) -> Self {
        Self::fit_from(HEADER.map(str::len), records)
    }

    /// Widths for `--follow`: fitting `records` (the first batch) and at least
    /// [`FOLLOW_WIDTHS`], so the rows that come later line up too.
    #[must_use]
    pub fn follow(records: &[LogRecord]) -> Self {
        let mut w = HEADER.map(str::len);
        for (w, min) in w.iter_mut().zip(FOLLOW_WIDTHS) {
            *w = (*w).max(min);
        }
        Self::fit_from(w, records)
    }

    fn fit_from(mut widths: [usize; 10], records: &[LogRecord]) -> Self {
        for r in records {
            for (w, cell) in widths.iter_mut().zip(cells(r)) {
                *w = (*w).max(cell.chars().count());
            }
        }
        Self { widths }
    }

    /// The header line.
    #[must_use]
    pub fn header(&self) -> String {
        self.line(HEADER.iter().copied())
    }

    /// One line per record.
    #[must_use]
    pub fn rows(&self, records: &[LogRecord]) -> String {
        records
            .iter()
            .map(|r| self.line(cells(r).iter().map(String::as_str)))
            .collect()
    }

    fn line<'a>(&self, cells: impl Iterator<Item = &'a str>) -> String {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(self.widths).enumerate() {
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
        let mut l = l.trim_end().to_owned();
        l.push('\n');
        l
    }
}

/// The cells of one record's row.
fn cells(r: &LogRecord) -> [String; 10] {
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
}
