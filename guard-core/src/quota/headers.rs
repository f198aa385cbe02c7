//! The response header values of a [`QuotaDecision`], as in draft-ietf-httpapi-ratelimit-headers-11:
//! `RateLimit-Policy` (each limited window as a policy: `"minute";q=60;w=60`), `RateLimit` (its
//! state: `"minute";r=0;t=17`) and `Retry-After` (delta-seconds).
//!
//! Policy names are the windows' names (`second`, `minute`, `hour`, `day`, `month`,
//! `lifetime`). A month's `w` is the current calendar month's length. A lifetime policy has no
//! `w` and its state no `t`: it never resets.
use std::fmt::Write as _;

use super::{QuotaDecision, WindowState};

/// `RateLimit-Policy`: every limited window of the rule, shortest first.
#[must_use]
pub fn policy(d: &QuotaDecision) -> String {
    let mut out = String::new();
    for w in d.windows() {
        sep(&mut out);
        let _ = write!(out, "\"{}\";q={}", w.window.name(), w.limit);
        if let Some(len) = w.length {
            let _ = write!(out, ";w={len}");
        }
    }
    out
}

/// `RateLimit` for an admitted request: every window's remaining quota and reset.
#[must_use]
pub fn ratelimit(d: &QuotaDecision) -> String {
    render_states(d.windows().iter())
}

/// `RateLimit` for a refused request: the exceeded windows only (`r=0`).
#[must_use]
pub fn ratelimit_exceeded(d: &QuotaDecision) -> String {
    render_states(d.exceeded())
}

/// `Retry-After` for a refused request, in seconds; `None` when admitted or when only the end of
/// time would do (a lifetime limit is spent).
#[must_use]
pub fn retry_after(d: &QuotaDecision) -> Option<String> {
    d.retry_after().map(|s| s.to_string())
}

fn render_states<'a>(states: impl Iterator<Item = &'a WindowState>) -> String {
    let mut out = String::new();
    for w in states {
        sep(&mut out);
        let _ = write!(out, "\"{}\";r={}", w.window.name(), w.remaining);
        if let Some(t) = w.reset {
            let _ = write!(out, ";t={t}");
        }
    }
    out
}

fn sep(out: &mut String) {
    if !out.is_empty() {
        out.push_str(", ");
    }
}
