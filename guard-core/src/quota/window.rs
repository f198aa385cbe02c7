//! Quota windows aligned to UTC: the second, minute, hour, day and calendar month a moment falls
//! in, when each ends, and lifetime, which never does. A window is named by its *epoch*: the
//! number of whole windows since 1970-01-01 00:00 UTC (months counted as calendar months).
use crate::time::civil_from_days;

/// One kind of quota window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    #[default]
    Second,
    Minute,
    Hour,
    Day,
    /// The calendar month in UTC: 28 to 31 days.
    Month,
    /// Never resets.
    Lifetime,
}

/// Every window, shortest first: the order of a rule's limits and of rendered headers.
pub const WINDOWS: [Window; 6] = [
    Window::Second,
    Window::Minute,
    Window::Hour,
    Window::Day,
    Window::Month,
    Window::Lifetime,
];

impl Window {
    /// The policy name in `RateLimit-Policy` and the config key's stem.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
            Self::Lifetime => "lifetime",
        }
    }

    /// Its position in [`WINDOWS`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The epoch of the window holding `now_s` (seconds since the epoch, UTC). Lifetime is 0.
    #[must_use]
    pub fn epoch(self, now_s: u64) -> u32 {
        let e = match self {
            Self::Second => now_s,
            Self::Minute => now_s / 60,
            Self::Hour => now_s / 3600,
            Self::Day => now_s / 86_400,
            Self::Month => {
                let (y, m, _) = civil_from_days((now_s / 86_400) as i64);
                ((y - 1970) * 12 + i64::from(m) - 1) as u64
            }
            Self::Lifetime => 0,
        };
        e as u32
    }

    /// Start and end (exclusive), in seconds since the epoch, of the window holding `now_s`;
    /// `None` for lifetime.
    #[must_use]
    pub fn bounds(self, now_s: u64) -> Option<(u64, u64)> {
        let fixed = |len: u64| Some((now_s - now_s % len, now_s - now_s % len + len));
        match self {
            Self::Second => fixed(1),
            Self::Minute => fixed(60),
            Self::Hour => fixed(3600),
            Self::Day => fixed(86_400),
            Self::Month => {
                let (y, m, _) = civil_from_days((now_s / 86_400) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let start = days_from_civil(y, m, 1) as u64 * 86_400;
                let end = days_from_civil(ny, nm, 1) as u64 * 86_400;
                Some((start, end))
            }
            Self::Lifetime => None,
        }
    }

    /// Whole seconds from `now_s` until the window resets (at least 1); `None` for lifetime.
    #[must_use]
    pub fn reset_in(self, now_s: u64) -> Option<u64> {
        self.bounds(now_s).map(|(_, end)| end - now_s)
    }

    /// The window's length in seconds for `RateLimit-Policy`'s `w` (the current month's length
    /// for a month); `None` for lifetime.
    #[must_use]
    pub fn length(self, now_s: u64) -> Option<u64> {
        self.bounds(now_s).map(|(start, end)| end - start)
    }
}

/// Days since 1970-01-01 of a (year, month, day) civil date (proleptic Gregorian); the inverse
/// of [`civil_from_days`].
#[must_use]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
