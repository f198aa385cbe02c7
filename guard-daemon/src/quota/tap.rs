//! Plan quotas in tap mode. The tap sees a request only as it passes: it cannot answer 429.
//! A request the judge did not block, on a **verified** flow (the client's address is proven,
//! see `Trust`), is checked and charged against the same counters as the inline mode's; an
//! overrun is written into the request's log record and counted. With
//! `quotas.tap_overrun_ban`, an address that overruns `after` times within `within` is banned
//! by address for `ttl`, through the engine (allowlisted and protected addresses never are) and
//! the ban owner, like the engine's own bans. Requests on unverified flows are never charged.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::QuotaCheck;
use crate::config::TapOverrunBan;
use crate::engine::Rule;
use crate::judge::Judge;
use crate::tap::RequestEvent;

/// Addresses whose overruns are counted at once; past it, stale ones are dropped first and a
/// new address is not counted while the table stays full.
const MAX_TRACKED: usize = 65_536;

/// Counters of the tap's quota checks (`guard stats --json`: `quotas.tap`).
#[derive(Debug, Default, Serialize)]
pub struct TapQuotaStats {
    /// Requests checked (verified flows the judge did not block).
    pub checked: AtomicU64,
    /// Of those, requests over their quota (served anyway: logged, counted).
    pub overruns: AtomicU64,
    /// Bans ordered for repeated overruns (`quotas.tap_overrun_ban`).
    pub bans_ordered: AtomicU64,
    /// Requests on unverified flows, never charged.
    pub unverified_skipped: AtomicU64,
}

/// What the tap made of one request's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOverrun {
    /// For the log record's reason: `quota: minute (10 requests) spent, plan free (served: …)`.
    pub reason: String,
    /// The ban ordered for it, if this overrun reached `tap_overrun_ban.after`.
    pub ban: Option<String>,
}

/// The plan quotas as the tap applies them.
pub struct TapQuotas {
    check: Arc<QuotaCheck>,
    ban: Option<TapOverrunBan>,
    /// Address → (start of its counting window, overruns in it), seconds since the epoch.
    overruns: Mutex<HashMap<IpAddr, (u64, u32)>>,
    pub stats: TapQuotaStats,
}

impl TapQuotas {
    #[must_use]
    pub fn new(check: Arc<QuotaCheck>, ban: Option<TapOverrunBan>) -> Self {
        Self {
            check,
            ban,
            overruns: Mutex::new(HashMap::new()),
            stats: TapQuotaStats::default(),
        }
    }

    /// Checks and charges `ev`, a request the judge did not block. `Some` when it overran its
    /// quota (and maybe got its address banned, through `judge`).
    pub fn observe(&self, ev: &RequestEvent, judge: &Judge) -> Option<TapOverrun> {
        if !ev.trust.counts() {
            self.stats
                .unverified_skipped
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.stats.checked.fetch_add(1, Ordering::Relaxed);
        let out = self.check.check_event(ev.user.as_ref(), ev);
        let refusal = super::refusal(out.decision.as_ref()?)?;
        self.stats.overruns.fetch_add(1, Ordering::Relaxed);
        let plan = out.plan.unwrap_or_default();
        let spent = refusal.reason();
        let reason = format!("{spent}, plan {plan} (served: the tap cannot refuse)");
        let ban = self
            .ban
            .and_then(|b| self.count(ev, judge, b, &plan, &spent));
        Some(TapOverrun { reason, ban })
    }

    /// Counts an overrun of `ev`'s address; orders the ban once there are `b.after` of them
    /// within `b.within`.
    fn count(
        &self,
        ev: &RequestEvent,
        judge: &Judge,
        b: TapOverrunBan,
        plan: &str,
        spent: &str,
    ) -> Option<String> {
        let now_s = ev.ts.as_secs();
        let within = b.within.as_secs();
        let n = {
            let mut map = self.overruns.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= MAX_TRACKED && !map.contains_key(&ev.client) {
                map.retain(|_, (start, _)| now_s < start.saturating_add(within));
                if map.len() >= MAX_TRACKED {
                    return None;
                }
            }
            let entry = map.entry(ev.client).or_insert((now_s, 0));
            if now_s >= entry.0.saturating_add(within) {
                *entry = (now_s, 0);
            }
            entry.1 += 1;
            let n = entry.1;
            if n >= b.after {
                map.remove(&ev.client);
            }
            n
        };
        if n < b.after {
            return None;
        }
        let reason = format!(
            "plan {plan}: {n} quota overruns within {} ({spent})",
            crate::clock::format_duration(b.within)
        );
        let ordered = judge.order_shell_ban(ev.ts, ev.client, Rule::QuotaOverrun, &reason, b.ttl);
        if ordered.is_some() {
            self.stats.bans_ordered.fetch_add(1, Ordering::Relaxed);
        }
        ordered
    }
}

/// Joins the judge's reason and the quota's for the log record.
#[must_use]
pub fn join_reasons(judged: Option<String>, quota: &TapOverrun) -> String {
    let mut r = judged.map(|j| format!("{j}; ")).unwrap_or_default();
    r.push_str(&quota.reason);
    if let Some(b) = &quota.ban {
        r.push_str("; ");
        r.push_str(b);
    }
    r
}
