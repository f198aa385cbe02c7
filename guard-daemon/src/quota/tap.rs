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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::judge::BanQueue;
    use crate::tap::Trust;
    use crate::validate::ValidatorConfig;
    use std::time::Duration;

    const PLANS: &str = r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/api/*"
per_minute = 2
"#;
    const T0: u64 = 1_800_000_000;

    fn judge(protected: &[&str]) -> (Judge, BanQueue) {
        let (j, q) = Judge::new(
            &ValidatorConfig::default(),
            &EngineConfig::default(),
            Vec::new(),
            16,
            None,
        )
        .expect("judge");
        j.set_protected(protected.iter().map(|p| p.parse().unwrap()).collect());
        (j, q)
    }

    fn tap(ban: Option<TapOverrunBan>) -> TapQuotas {
        let cfg = super::super::tests::config(PLANS);
        let check = QuotaCheck::new(&cfg, Vec::new(), b"salt".to_vec(), 1).expect("quotas");
        TapQuotas::new(Arc::new(check), ban)
    }

    fn ban(after: u32) -> TapOverrunBan {
        TapOverrunBan {
            after,
            within: Duration::from_mins(10),
            ttl: Duration::from_mins(30),
        }
    }

    fn event(client: &str, trust: Trust, secs: u64) -> RequestEvent {
        let mut e = super::super::tests::event(client, "/api/x", &[], secs);
        e.trust = trust;
        e
    }

    /// Unverified requests are never charged: a verified client's quota is whole after them.
    #[test]
    fn unverified_requests_charge_nothing() {
        let (j, queue) = judge(&[]);
        let t = tap(Some(ban(1)));
        for _ in 0..10 {
            assert_eq!(
                t.observe(&event("198.51.100.4", Trust::Unverified, T0), &j),
                None
            );
        }
        assert_eq!(t.stats.unverified_skipped.load(Ordering::Relaxed), 10);
        for _ in 0..2 {
            assert_eq!(
                t.observe(&event("198.51.100.4", Trust::Verified, T0), &j),
                None
            );
        }
        assert!(queue.try_recv().is_err(), "a ban was ordered");
    }

    /// The overruns past the quota are reported; the `after`-th bans the address with the
    /// configured ttl, origin engine, a reason naming the plan.
    #[test]
    fn repeated_overruns_order_one_ban() {
        let (j, queue) = judge(&[]);
        let t = tap(Some(ban(2)));
        let ev = event("198.51.100.5", Trust::Verified, T0);
        assert_eq!(t.observe(&ev, &j), None);
        assert_eq!(t.observe(&ev, &j), None);
        let first = t.observe(&ev, &j).expect("an overrun");
        assert!(
            first
                .reason
                .starts_with("quota: minute (2 requests) spent, plan anonymous")
        );
        assert_eq!(first.ban, None);
        let second = t.observe(&ev, &j).expect("an overrun");
        let banned = second.ban.expect("a ban");
        assert!(
            banned.contains("quota_overrun: plan anonymous: 2 quota overruns"),
            "{banned}"
        );
        let order = queue.try_recv().expect("an order");
        assert_eq!(order.request.ttl, Some(Duration::from_mins(30)));
        assert_eq!(order.request.origin, crate::bans::Origin::Engine);
        assert_eq!(order.request.user, None);
        assert_eq!(t.stats.overruns.load(Ordering::Relaxed), 2);
        assert_eq!(t.stats.bans_ordered.load(Ordering::Relaxed), 1);
    }

    /// A protected address overruns and is logged, never banned; without the option nobody is.
    #[test]
    fn protected_addresses_and_no_option_never_ban() {
        let (j, queue) = judge(&["198.51.100.6/32"]);
        let t = tap(Some(ban(1)));
        let ev = event("198.51.100.6", Trust::Verified, T0);
        for _ in 0..2 {
            t.observe(&ev, &j);
        }
        let o = t.observe(&ev, &j).expect("an overrun");
        assert_eq!(o.ban, None);
        let t = tap(None);
        let ev = event("198.51.100.7", Trust::Verified, T0);
        for _ in 0..5 {
            t.observe(&ev, &j);
        }
        assert!(queue.try_recv().is_err(), "a ban was ordered");
        assert_eq!(t.stats.overruns.load(Ordering::Relaxed), 3);
    }
}
