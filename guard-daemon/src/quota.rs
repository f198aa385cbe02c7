//! Plan quotas: [`QuotaCheck`] finds a request's plan (in the configured
//! `lookup` order), its first matching rule, and checks and charges the rule's windows in the
//! core's [`QuotaTable`]; a spent quota becomes [`Refusal::Quota`] with the `RateLimit-Policy`,
//! `RateLimit` and `Retry-After` values. `guard run` installs it with
//! `InlineGate::with_quotas`: the gate calls [`QuotaCheck::check_event`] only for requests the
//! bans and the judge admitted, anonymous ones included. (It also implements the
//! [`UserCheck`] seam, which runs before the judge and only for requests naming a user; the
//! daemon does not use that.) The tap charges the same check for the requests it sees (see
//! [`tap`]): it cannot refuse, so overruns are logged and may become bans.
//!
//! Second, minute and hour counters live in memory; under `guard run` the day, month and
//! lifetime ones are also kept in the state database ([`persist`]). Only a **verified** user is counted as a user
//! (a claimed one could otherwise spend someone else's quota); any other request is counted
//! under its client's address (IPv6 by /64) and the default plan.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use guard_core::net::Net;
use guard_core::quota::{
    PartitionKey, PlanChoice, PlanSet, QuotaDecision, QuotaTable, headers, jwt_claim,
};
use guard_core::tap::identity::{UserSource, trusted};
use serde::Serialize;

use crate::config::{OnStoreError, PlanSource, QuotasConfig, QuotasProblem};
use crate::inline::gate::{Refusal, UserCheck};
use crate::tap::{RequestEvent, UserId};

/// The plan table (`guard plan set USER PLAN`): user id → plan name.
pub trait PlanTable: Send + Sync + 'static {
    fn plan_of(&self, user: &str) -> Option<String>;
}

/// A plan table held in memory.
impl<S: std::hash::BuildHasher + Send + Sync + 'static> PlanTable for HashMap<String, String, S> {
    fn plan_of(&self, user: &str) -> Option<String> {
        self.get(user).cloned()
    }
}

/// Counters of the quota check.
#[derive(Debug, Default, Serialize)]
pub struct QuotaStats {
    /// Requests a rule applied to.
    pub checked: AtomicU64,
    pub refused: AtomicU64,
    /// The client named a plan that does not exist (the default plan applied, if any).
    pub unknown_plan: AtomicU64,
    /// No plan applied (none named and no default plan) or no rule matched.
    pub unlimited: AtomicU64,
    /// Counters of passed windows dropped by the sweep.
    pub swept: AtomicU64,
    /// Requests checked while the store was failing (its last write failed) under a rule
    /// with a day, month or lifetime limit: admitted and charged in memory
    /// (`on_store_error = "admit"`) …
    pub store_error_admitted: AtomicU64,
    /// … or refused with 503 (`on_store_error = "deny"`).
    pub store_error_denied: AtomicU64,
    /// Refusals by plan name (names come from the config, so the map stays small).
    pub refused_by_plan: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl QuotaStats {
    /// The refusals by plan now.
    #[must_use]
    pub fn refusals(&self) -> Vec<(String, u64)> {
        self.refused_by_plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// What a request's quota check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaOutcome {
    /// The plan that applied, if any.
    pub plan: Option<String>,
    /// The check of the matched rule; `None` when no plan or no rule applied, or when the
    /// store is failing and `on_store_error = "deny"` refused the request unchecked.
    pub decision: Option<QuotaDecision>,
    /// Refused because the store is failing (`on_store_error = "deny"`): nothing was charged.
    pub unavailable: bool,
}

/// The plan quotas of the inline mode.
pub struct QuotaCheck {
    plans: PlanSet,
    table: QuotaTable,
    lookup: Vec<PlanSource>,
    plan_claim: String,
    plan_header: Option<String>,
    trusted_proxies: Vec<Net>,
    plan_table: Option<Arc<dyn PlanTable>>,
    /// The plan table kept in the store (`guard plan set`), also `plan_table`.
    plan_store: Option<Arc<plans::PlanStore>>,
    salt: Vec<u8>,
    /// The day, month and lifetime counters' store (`guard run`); `None`: memory only.
    persist: Option<persist::Persist>,
    /// `quotas.headers_on_admit`: admitted requests' responses carry the headers too.
    headers_on_admit: bool,
    /// `quotas.on_store_error`.
    on_store_error: OnStoreError,
    /// When a request under a failing store was last logged (seconds since the epoch).
    store_warned_s: AtomicU64,
    pub stats: QuotaStats,
}

impl QuotaCheck {
    /// From `[quotas]`. `trusted_proxies` (`tap.trusted_proxies`) are believed for
    /// `plan_header`; `salt` keys the user ids' hashes and `seed` the tables' (pass random
    /// values, the salt kept across restarts once counters persist).
    pub fn new(
        cfg: &QuotasConfig,
        trusted_proxies: Vec<Net>,
        salt: Vec<u8>,
        seed: u64,
    ) -> Result<Self, QuotasProblem> {
        Ok(Self {
            plans: cfg.plan_set()?,
            table: QuotaTable::new(seed),
            lookup: cfg.lookup.clone(),
            plan_claim: cfg.plan_claim.clone(),
            plan_header: cfg.plan_header.clone(),
            trusted_proxies,
            plan_table: None,
            plan_store: None,
            salt,
            persist: None,
            headers_on_admit: cfg.headers_on_admit,
            on_store_error: cfg.on_store_error,
            store_warned_s: AtomicU64::new(0),
            stats: QuotaStats::default(),
        })
    }

    /// Keeps the day, month and lifetime counters in `tree` (see [`persist`]), reading back
    /// what it holds for the configured rules first; how many records were restored.
    ///
    /// # Errors
    /// The tree cannot be read.
    pub fn with_store(
        mut self,
        tree: sled::Tree,
        cfg: &QuotasConfig,
    ) -> Result<(Self, usize), sled::Error> {
        let p = persist::Persist::new(tree, cfg, &self.plans);
        let n = p.load(&self.table)?;
        self.persist = Some(p);
        Ok((self, n))
    }

    /// Writes the counters marked since the last write (see [`persist`]); how many.
    pub fn persist_now(&self) -> usize {
        self.persist.as_ref().map_or(0, |p| p.write(&self.table))
    }

    /// The counters for `guard stats --json` (`inline.quotas`).
    #[must_use]
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.stats).unwrap_or_default();
        if let (Some(map), Some(p)) = (v.as_object_mut(), &self.persist) {
            map.insert(
                "persist".into(),
                serde_json::to_value(&p.stats).unwrap_or_default(),
            );
        }
        v
    }

    /// Adds the plan table (the `table` lookup source; skipped without one).
    #[must_use]
    pub fn with_plan_table(mut self, table: Arc<dyn PlanTable>) -> Self {
        self.plan_table = Some(table);
        self
    }

    /// Adds the plan table kept in the store: the `table` lookup source, changed by
    /// `guard plan set|rm` (see [`admin`]).
    #[must_use]
    pub fn with_plan_store(mut self, store: Arc<plans::PlanStore>) -> Self {
        self.plan_table = Some(Arc::clone(&store) as Arc<dyn PlanTable>);
        self.plan_store = Some(store);
        self
    }

    /// The counters, for `guard quota show` and the sweep.
    #[must_use]
    pub fn table(&self) -> &QuotaTable {
        &self.table
    }

    /// The plan a request names, in `lookup` order; `None` when no source names one.
    fn plan_name(&self, user: Option<&UserId>, ev: &RequestEvent) -> Option<String> {
        let verified = user.filter(|u| u.verified);
        self.lookup.iter().find_map(|source| match source {
            PlanSource::Claim => {
                if !verified.is_some_and(|u| u.source == UserSource::Jwt) {
                    return None;
                }
                let (scheme, token) = header(ev, "authorization")?.trim().split_once(' ')?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                jwt_claim(token.trim(), &self.plan_claim)
            }
            PlanSource::Header => {
                let name = self.plan_header.as_deref()?;
                if !trusted(ev.peer.ip(), &self.trusted_proxies) {
                    return None;
                }
                header(ev, name)
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            }
            PlanSource::Table => self.plan_table.as_ref()?.plan_of(&verified?.id),
        })
    }

    /// Checks and charges one request: its plan, the plan's first matching rule, the rule's
    /// windows. `user` is the request's user, if any.
    pub fn check_event(&self, user: Option<&UserId>, ev: &RequestEvent) -> QuotaOutcome {
        let named = self.plan_name(user, ev);
        let choice = self.plans.choose(named.as_deref());
        if matches!(choice, PlanChoice::Unknown(_))
            || (named.is_some() && choice == PlanChoice::None)
        {
            self.stats.unknown_plan.fetch_add(1, Ordering::Relaxed);
        }
        // A verified user on a plan of its own is counted as that user; every other request
        // (the default plan, a claimed user, a plan named by a trusted proxy's header without
        // a verified user) by its client's address.
        let key = match (&choice, user.filter(|u| u.verified)) {
            (PlanChoice::Named(_), Some(u)) => PartitionKey::user(&u.id, &self.salt),
            _ => PartitionKey::addr(ev.client),
        };
        let Some(plan) = choice.plan() else {
            self.stats.unlimited.fetch_add(1, Ordering::Relaxed);
            return QuotaOutcome {
                plan: None,
                decision: None,
                unavailable: false,
            };
        };
        let Some(rule) = plan.rule_for(&ev.method, &ev.path) else {
            self.stats.unlimited.fetch_add(1, Ordering::Relaxed);
            return QuotaOutcome {
                plan: Some(plan.name.clone()),
                decision: None,
                unavailable: false,
            };
        };
        self.stats.checked.fetch_add(1, Ordering::Relaxed);
        if self
            .persist
            .as_ref()
            .is_some_and(|p| p.failing() && p.persists(rule.id))
            && self.store_failing(ev.ts.as_secs())
        {
            return QuotaOutcome {
                plan: Some(plan.name.clone()),
                decision: None,
                unavailable: true,
            };
        }
        let decision = self.table.check(key, rule, ev.ts.as_secs());
        if !decision.admitted {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            *self
                .stats
                .refused_by_plan
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(plan.name.clone())
                .or_default() += 1;
        } else if let Some(p) = &self.persist {
            p.mark(key, rule.id);
        }
        QuotaOutcome {
            plan: Some(plan.name.clone()),
            decision: Some(decision),
            unavailable: false,
        }
    }

    /// A request under a rule with a stored window while the store is failing: counts it,
    /// logs at most once a minute, and says whether to refuse it (`on_store_error = "deny"`).
    fn store_failing(&self, now_s: u64) -> bool {
        let deny = self.on_store_error == OnStoreError::Deny;
        let counter = if deny {
            &self.stats.store_error_denied
        } else {
            &self.stats.store_error_admitted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let last = self.store_warned_s.load(Ordering::Relaxed);
        if (last == 0 || now_s >= last + 60)
            && self
                .store_warned_s
                .compare_exchange(last, now_s.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let (what, stat) = if deny {
                ("refused with 503", "store_error_denied")
            } else {
                ("admitted and counted in memory", "store_error_admitted")
            };
            tracing::warn!(
                "the quota store is failing: requests under day, month or lifetime limits are \
                 {what} (quotas.on_store_error = {}; counted in inline.quotas.{stat})",
                if deny { "deny" } else { "admit" }
            );
        }
        deny
    }
}

/// The headers an admitted request's response carries (`quotas.headers_on_admit`):
/// `RateLimit-Policy` and `RateLimit` with every window of the rule after this request's
/// charge (`"minute";r=4;t=17`). Empty when refused, or when the check says not to.
#[must_use]
pub fn admit_headers(check: &QuotaCheck, d: &QuotaDecision) -> Vec<(&'static str, String)> {
    if !d.admitted || !check.headers_on_admit {
        return Vec::new();
    }
    vec![
        ("ratelimit-policy", headers::policy(d)),
        ("ratelimit", headers::ratelimit(d)),
    ]
}

/// The refusal of a refused decision.
#[must_use]
pub fn refusal(d: &QuotaDecision) -> Option<Refusal> {
    if d.admitted {
        return None;
    }
    // The exceeded window that resets last decides when the request could pass.
    let last = d.exceeded().max_by_key(|w| w.reset.unwrap_or(u64::MAX))?;
    Some(Refusal::Quota {
        limit: u64::from(last.limit),
        remaining: u64::from(last.remaining),
        reset: d.retry_after().map(Duration::from_secs),
        policy: headers::policy(d),
        ratelimit: headers::ratelimit_exceeded(d),
        violated: d.exceeded().map(|w| w.window.name()).collect(),
    })
}

/// The inline gate asks this for requests that name a user.
impl UserCheck for QuotaCheck {
    fn check(&self, user: &UserId, ev: &RequestEvent) -> Option<Refusal> {
        let out = self.check_event(Some(user), ev);
        if out.unavailable {
            return Some(Refusal::QuotaUnavailable);
        }
        refusal(&out.decision?)
    }
}

/// Several user checks asked in order; the first refusal wins and the later ones are not asked
/// (user bans before quotas: a banned user's request charges nothing).
pub struct UserChecks(pub Vec<Arc<dyn UserCheck>>);

impl UserCheck for UserChecks {
    fn check(&self, user: &UserId, ev: &RequestEvent) -> Option<Refusal> {
        self.0.iter().find_map(|c| c.check(user, ev))
    }
}

/// A request header's value (first of its name).
fn header<'a>(ev: &'a RequestEvent, name: &str) -> Option<&'a str> {
    ev.all_headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

pub mod admin;
pub mod persist;
pub mod plans;
pub mod salt;
pub mod tap;

/// The last marked counters are written when the check goes (a clean stop).
impl Drop for QuotaCheck {
    fn drop(&mut self) {
        self.persist_now();
    }
}

/// How often the counters of passed windows are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// On a thread of its own: writes the marked counters every [`persist::PERSIST_EVERY`] and
/// drops the counters of passed windows every [`SWEEP_EVERY`]; it ends once `quotas` is
/// dropped (it holds only a weak reference between rounds).
///
/// # Errors
/// The thread cannot be started.
pub fn spawn_sweeper(quotas: &Arc<QuotaCheck>) -> std::io::Result<()> {
    let weak = Arc::downgrade(quotas);
    let rounds_per_sweep = (SWEEP_EVERY.as_millis() / persist::PERSIST_EVERY.as_millis()).max(1);
    std::thread::Builder::new()
        .name("guard-quota-sweep".into())
        .spawn(move || {
            for round in 1u128.. {
                std::thread::sleep(persist::PERSIST_EVERY);
                let Some(q) = weak.upgrade() else { return };
                q.persist_now();
                if round % rounds_per_sweep == 0 {
                    let now_s = crate::clock::now_ms() / 1000;
                    let dropped = q.table().sweep(now_s);
                    q.stats.swept.fetch_add(dropped as u64, Ordering::Relaxed);
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests;
