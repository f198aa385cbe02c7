//! Plan quotas: per-plan, per-path request limits over UTC-aligned windows (second, minute,
//! hour, day, calendar month, lifetime), as the pure part of the inline mode's quota check.
//!
//! - [`PathPattern`]: exact, prefix (`/api/v1/*`) and template (`/api/v1/users/{id}`) paths.
//! - [`Rule`] (pattern, optional method, [`Limits`]) and [`PlanSet`] (named plans of ordered
//!   rules, first match applies, a default plan for clients without one).
//! - [`QuotaTable`]: the in-memory counters keyed by [`PartitionKey`] and rule, with an atomic
//!   check-and-charge across all windows of a rule ([`QuotaTable::check`]).
//! - [`headers`]: `RateLimit-Policy`, `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11) and
//!   `Retry-After` values of a [`QuotaDecision`].
//!
//! Windows are aligned to UTC, so a window's reset time is exact and the same for every client;
//! the price is the boundary burst: a client may spend a whole window's quota in its last second
//! and the next window's in the following one (2 × the limit within two seconds).
//!
//! Time comes in as an argument (seconds since the epoch); nothing here reads a clock.
use std::net::IpAddr;

pub mod headers;
mod pattern;
mod slots;
mod table;
mod window;

pub use pattern::{PathPattern, PatternError};
pub use table::{QuotaDecision, QuotaTable, SHARDS, WindowState};
pub use window::{WINDOWS, Window, days_from_civil};

#[cfg(test)]
mod tests;

/// A rule's limits, one per window; `None` = that window is not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits(pub [Option<u32>; 6]);

impl Limits {
    /// Sets the limit of one window.
    #[must_use]
    pub fn with(mut self, window: Window, limit: u32) -> Self {
        self.0[window.index()] = Some(limit);
        self
    }

    /// The limit of one window.
    #[must_use]
    pub fn get(&self, window: Window) -> Option<u32> {
        self.0[window.index()]
    }

    /// Whether no window is limited.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The limited windows, shortest first, with their limits.
    pub fn iter(&self) -> impl Iterator<Item = (Window, u32)> + '_ {
        WINDOWS
            .iter()
            .zip(self.0)
            .filter_map(|(w, l)| l.map(|l| (*w, l)))
    }
}

/// Why a rule or plan set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("bad path pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: PatternError,
    },
    #[error(
        "a rule limits at least one of per_second, per_minute, per_hour, per_day, per_month, lifetime"
    )]
    EmptyRule,
    #[error("a limit of 0 refuses everything: remove the rule's path or use a ban")]
    ZeroLimit,
    #[error("bad method {0:?}: an HTTP method token such as GET")]
    BadMethod(String),
    #[error("the default plan {0:?} is not defined")]
    UnknownDefault(String),
    #[error("more than 65535 rules")]
    TooManyRules,
}

/// One rule of a plan: requests matching `pattern` (and `method`, if set) are counted against
/// `limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique across a [`PlanSet`]: the counters' key, so two plans never share counters.
    pub id: u16,
    pub pattern: PathPattern,
    /// Upper-case method; `None` = any method.
    pub method: Option<String>,
    pub limits: Limits,
}

impl Rule {
    /// Checks and builds a rule (its `id` is set by [`PlanSet::new`]).
    pub fn new(pattern: &str, method: Option<&str>, limits: Limits) -> Result<Self, QuotaError> {
        let pattern = PathPattern::parse(pattern).map_err(|source| QuotaError::Pattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        if limits.is_empty() {
            return Err(QuotaError::EmptyRule);
        }
        if limits.iter().any(|(_, l)| l == 0) {
            return Err(QuotaError::ZeroLimit);
        }
        let method = match method {
            None => None,
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(m.to_ascii_uppercase())
            }
            Some(m) => return Err(QuotaError::BadMethod(m.to_owned())),
        };
        Ok(Self {
            id: 0,
            pattern,
            method,
            limits,
        })
    }

    /// Whether this rule applies to a request.
    #[must_use]
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.pattern.matches(path)
    }
}

/// A named plan: ordered rules, the first match applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub rules: Vec<Rule>,
}

impl Plan {
    /// The first rule matching the request.
    #[must_use]
    pub fn rule_for(&self, method: &str, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(method, path))
    }
}

/// The configured plans and the default plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSet {
    plans: Vec<Plan>,
    default: Option<usize>,
}

/// Which plan applied to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanChoice<'a> {
    /// The plan the client named.
    Named(&'a Plan),
    /// The client named no plan: the default plan.
    Default(&'a Plan),
    /// The client named a plan that does not exist: the default plan (count these).
    Unknown(&'a Plan),
    /// No plan applies (none named, or unknown, and no default plan): not limited.
    None,
}

impl PlanChoice<'_> {
    /// The plan, if any.
    #[must_use]
    pub fn plan(&self) -> Option<&Plan> {
        match *self {
            Self::Named(p) | Self::Default(p) | Self::Unknown(p) => Some(p),
            Self::None => None,
        }
    }
}

impl PlanSet {
    /// Builds the set, numbering rules across plans in order.
    pub fn new(mut plans: Vec<Plan>, default: Option<&str>) -> Result<Self, QuotaError> {
        let mut id = 0u16;
        for rule in plans.iter_mut().flat_map(|p| p.rules.iter_mut()) {
            rule.id = id;
            id = id.checked_add(1).ok_or(QuotaError::TooManyRules)?;
        }
        let default = match default {
            None => None,
            Some(d) => Some(
                plans
                    .iter()
                    .position(|p| p.name == d)
                    .ok_or_else(|| QuotaError::UnknownDefault(d.to_owned()))?,
            ),
        };
        Ok(Self { plans, default })
    }

    /// A plan by name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// The plans, in order.
    #[must_use]
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// The plan for a client that named `plan` (or none).
    #[must_use]
    pub fn choose(&self, plan: Option<&str>) -> PlanChoice<'_> {
        let default = self.default.map(|i| &self.plans[i]);
        match (plan.map(|n| self.get(n)), default) {
            (Some(Some(p)), _) => PlanChoice::Named(p),
            (None, Some(d)) => PlanChoice::Default(d),
            (Some(None), Some(d)) => PlanChoice::Unknown(d),
            (_, None) => PlanChoice::None,
        }
    }

    /// A rule by id.
    #[must_use]
    pub fn rule(&self, id: u16) -> Option<&Rule> {
        self.plans
            .iter()
            .flat_map(|p| p.rules.iter())
            .find(|r| r.id == id)
    }
}

/// Whose counters a request is charged to: a user, or an address for clients without a user
/// (IPv6 by its /64, as one host usually holds a whole /64). A user id is kept only as a keyed
/// 120-bit hash, so the counters (and anything rendered from the key) never reveal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey(u128);

const TAG_V4: u128 = 1 << 120;
const TAG_V6: u128 = 2 << 120;
const TAG_USER: u128 = 3 << 120;
const TAG_MASK: u128 = 0xff << 120;

impl PartitionKey {
    /// The key of a user id: SHA-256 of `salt` (a per-installation secret, so the hash cannot be
    /// reversed by trying likely ids) and the id, cut to 120 bits. Stable across versions, so
    /// stored counters keep their keys.
    #[must_use]
    pub fn user(id: &str, salt: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update((salt.len() as u64).to_be_bytes());
        h.update(salt);
        h.update(id.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Self((u128::from_be_bytes(b) & !TAG_MASK) | TAG_USER)
    }

    /// The key of a client address: an IPv4 address, or an IPv6 /64 (IPv4-mapped IPv6 counts as
    /// IPv4).
    #[must_use]
    pub fn addr(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(TAG_V4 | u128::from(v4.to_bits())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::addr(IpAddr::V4(v4)),
                None => Self(TAG_V6 | (v6.to_bits() >> 64)),
            },
        }
    }

    /// The raw key (for stores and display as hex).
    #[must_use]
    pub fn to_bits(self) -> u128 {
        self.0
    }

    /// A key from [`Self::to_bits`].
    #[must_use]
    pub fn from_bits(bits: u128) -> Self {
        Self(bits)
    }
}

/// The string (or integer) claim `claim` of a compact JWT's payload, **decoded without checking
/// anything**: call it only on a token whose signature and times were already checked (a
/// verified [`UserId`](crate::tap::UserId) from a bearer JWT). `None` when the token is not
/// three base64url parts with a JSON object payload, or the claim is missing, empty or of
/// another type.
#[must_use]
pub fn jwt_claim(token: &str, claim: &str) -> Option<String> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match json.as_object()?.get(claim)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}
