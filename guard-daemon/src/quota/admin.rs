//! What the control socket asks of the plan quotas: the plan table (`guard plan set|rm|ls`),
//! a client's usage (`guard quota show USER|ADDR`) and forgetting it (`guard quota reset`).
//! The answers are the typed replies the CLI prints as tables or JSON.
use std::net::IpAddr;

use guard_core::quota::{PartitionKey, Plan, PlanChoice, Rule};
use guard_core::tap::identity::check_user_id;
use serde::{Deserialize, Serialize};

use super::QuotaCheck;
use super::plans::PlanEntry;

/// Why a plan or quota command was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("plan quotas are off: [quotas.plans] defines no plan")]
    Off,
    #[error("no plan named {plan:?} under [quotas.plans] (defined: {known})")]
    UnknownPlan { plan: String, known: String },
    #[error("user {user:?} has no plan in the plan table")]
    NoPlan { user: String },
    #[error("no rule of any plan has the path {rule:?} (see `guard quota show`)")]
    UnknownRule { rule: String },
    #[error("bad user id: {0}")]
    BadUser(#[from] guard_core::tap::identity::UserIdError),
    #[error("the plan table could not be written: {0}")]
    Store(#[source] sled::Error),
}

/// Whose quota `guard quota show|reset` means: an address (counted as anonymous clients are,
/// IPv6 by its /64), or else a user id (counted as that user on a plan of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(IpAddr),
    User(String),
}

impl Target {
    /// An IP address if `text` is one, else a user id.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        match text.parse::<IpAddr>() {
            Ok(ip) => Self::Addr(ip),
            Err(_) => Self::User(text.to_owned()),
        }
    }
}

/// One window of a rule in `guard quota show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowUsage {
    /// `second`, `minute`, `hour`, `day`, `month` or `lifetime`.
    pub window: String,
    pub limit: u32,
    pub used: u32,
    pub remaining: u32,
    /// Seconds until the window resets; `None` for lifetime (never).
    pub reset_secs: Option<u64>,
    /// When it resets, in seconds since the epoch (UTC); `None` for lifetime.
    pub resets_at: Option<u64>,
}

/// One rule's usage in `guard quota show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleUsage {
    pub plan: String,
    /// The rule's path pattern, as configured (what `guard quota reset --rule` takes).
    pub rule: String,
    pub method: Option<String>,
    pub windows: Vec<WindowUsage>,
}

/// The answer to `guard quota show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// What was asked about (a user id or an address).
    pub target: String,
    /// The counters' partition key in hex (a user's is a keyed hash: it never shows the id).
    pub key: String,
    /// The plan the target is on as far as the daemon knows without a request: the plan
    /// table's for a user, the default plan for an address.
    pub plan: Option<String>,
    /// The rules of that plan, and any other rule holding counters for the target.
    pub rules: Vec<RuleUsage>,
}

/// The answer to `guard quota reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReset {
    pub target: String,
    /// Rules whose counters were dropped (in memory and in the store).
    pub rules: Vec<String>,
}

impl QuotaCheck {
    fn store(&self) -> Result<&super::plans::PlanStore, AdminError> {
        self.plan_store.as_deref().ok_or(AdminError::Off)
    }

    fn known_plans(&self) -> String {
        let names: Vec<&str> = self.plans.plans().iter().map(|p| p.name.as_str()).collect();
        names.join(", ")
    }

    /// `guard plan set USER PLAN`: takes effect with the user's next request.
    ///
    /// # Errors
    /// A bad user id, a plan `[quotas.plans]` does not define, a failed write.
    pub fn plan_set(&self, user: &str, plan: &str) -> Result<PlanEntry, AdminError> {
        check_user_id(user)?;
        if self.plans.get(plan).is_none() {
            return Err(AdminError::UnknownPlan {
                plan: plan.to_owned(),
                known: self.known_plans(),
            });
        }
        let replaced = self.store()?.set(user, plan).map_err(AdminError::Store)?;
        tracing::info!(user, plan, ?replaced, "plan table: plan set");
        Ok(PlanEntry {
            user: user.to_owned(),
            plan: plan.to_owned(),
            known: true,
            replaced,
        })
    }

    /// `guard plan rm USER`: the entry removed.
    ///
    /// # Errors
    /// The user has no plan in the table, or the write failed.
    pub fn plan_rm(&self, user: &str) -> Result<PlanEntry, AdminError> {
        let plan = self
            .store()?
            .remove(user)
            .map_err(AdminError::Store)?
            .ok_or_else(|| AdminError::NoPlan {
                user: user.to_owned(),
            })?;
        tracing::info!(user, plan, "plan table: plan removed");
        Ok(PlanEntry {
            user: user.to_owned(),
            known: self.plans.get(&plan).is_some(),
            plan,
            replaced: None,
        })
    }

    /// `guard plan ls`.
    ///
    /// # Errors
    /// Quotas are off.
    pub fn plan_ls(&self) -> Result<Vec<PlanEntry>, AdminError> {
        Ok(self
            .store()?
            .list()
            .into_iter()
            .map(|(user, plan)| PlanEntry {
                known: self.plans.get(&plan).is_some(),
                user,
                plan,
                replaced: None,
            })
            .collect())
    }

    /// The partition key and the plan of `target` (see [`QuotaUsage::plan`]).
    fn key_of(&self, target: &Target) -> (PartitionKey, Option<&Plan>) {
        match target {
            Target::Addr(ip) => {
                let default = match self.plans.choose(None) {
                    PlanChoice::Default(p) => Some(p),
                    _ => None,
                };
                (PartitionKey::addr(*ip), default)
            }
            Target::User(id) => {
                let named = self
                    .plan_table
                    .as_ref()
                    .and_then(|t| t.plan_of(id))
                    .and_then(|p| self.plans.get(&p));
                (PartitionKey::user(id, &self.salt), named)
            }
        }
    }

    /// Every rule of every plan, with its plan.
    fn rules(&self) -> impl Iterator<Item = (&Plan, &Rule)> {
        self.plans
            .plans()
            .iter()
            .flat_map(|p| p.rules.iter().map(move |r| (p, r)))
    }

    /// `guard quota show USER|ADDR` at `now_s` (seconds since the epoch).
    #[must_use]
    pub fn usage(&self, text: &str, now_s: u64) -> QuotaUsage {
        let target = Target::parse(text);
        let (key, plan) = self.key_of(&target);
        let rules = self
            .rules()
            .filter(|(p, r)| {
                plan.is_some_and(|plan| plan.name == p.name)
                    || self.table.counters(key, r.id).is_some()
            })
            .map(|(p, r)| {
                let d = self.table.peek(key, r, now_s);
                RuleUsage {
                    plan: p.name.clone(),
                    rule: r.pattern.as_str().to_owned(),
                    method: r.method.clone(),
                    windows: d
                        .windows()
                        .iter()
                        .map(|w| WindowUsage {
                            window: w.window.name().to_owned(),
                            limit: w.limit,
                            used: w.limit - w.remaining,
                            remaining: w.remaining,
                            reset_secs: w.reset,
                            resets_at: w.reset.map(|r| now_s + r),
                        })
                        .collect(),
                }
            })
            .collect();
        QuotaUsage {
            target: text.to_owned(),
            key: format!("{:032x}", key.to_bits()),
            plan: plan.map(|p| p.name.clone()),
            rules,
        }
    }

    /// `guard quota reset USER|ADDR [--rule PATH]`: drops the target's counters of every rule
    /// (or of the rules with that path), in memory and in the store, so its next request
    /// starts every window afresh.
    ///
    /// # Errors
    /// `rule` names no rule.
    pub fn reset(&self, text: &str, rule: Option<&str>) -> Result<QuotaReset, AdminError> {
        let target = Target::parse(text);
        let (key, _) = self.key_of(&target);
        let chosen: Vec<(&Plan, &Rule)> = self
            .rules()
            .filter(|(_, r)| rule.is_none_or(|path| r.pattern.as_str() == path))
            .collect();
        if let (Some(path), true) = (rule, chosen.is_empty()) {
            return Err(AdminError::UnknownRule {
                rule: path.to_owned(),
            });
        }
        let mut rules = Vec::new();
        for (p, r) in chosen {
            let in_memory = self.table.reset(key, r.id);
            let stored = self.persist.as_ref().is_some_and(|s| s.forget(key, r.id));
            if in_memory || stored {
                rules.push(format!("{}: {}", p.name, r.pattern.as_str()));
            }
        }
        tracing::info!(client = text, ?rules, "quota counters reset");
        Ok(QuotaReset {
            target: text.to_owned(),
            rules,
        })
    }
}

#[cfg(test)]
mod tests;
