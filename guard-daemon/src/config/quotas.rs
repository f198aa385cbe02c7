//! `[quotas]`: plan quotas, enforced by the inline mode (the reverse proxy and the forward-auth
//! endpoint) and logged by the tap (`tap_overrun_ban` turns repeated overruns into bans). Plans hold ordered rules (the first matching rule applies), each a path pattern,
//! an optional method and limits per second, minute, hour, day, calendar month and lifetime.
//! Off while no plan is defined. [`QuotasConfig::plan_set`] turns the section into the core's
//! [`PlanSet`](guard_core::quota::PlanSet), with errors that name the key.
use std::collections::BTreeMap;

use guard_core::quota::{Limits, Plan, PlanSet, QuotaError, Rule, Window};
use serde::Deserialize;

/// Where a client's plan name is looked for, in `lookup` order; the first found wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanSource {
    /// The `plan_claim` claim of the client's verified JWT.
    Claim,
    /// The `plan_header` request header, set by a trusted proxy (skipped if `plan_header` is
    /// unset).
    Header,
    /// The plan table kept by `guard plan set` (in the store).
    Table,
}

/// What a quota check does when the quota store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Admit the request, count it, log once a minute (fail open).
    Admit,
    /// Refuse it (fail closed).
    Deny,
}

/// `[quotas]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// The JWT claim naming the client's plan. Default `"plan"`.
    pub plan_claim: String,
    /// A request header naming the plan, set by a trusted proxy. Default: none.
    pub plan_header: Option<String>,
    /// The plan of clients that name none (keyed by address, IPv6 by /64), and of clients that
    /// name an unknown plan. Default: none (such clients are not limited).
    pub default_plan: Option<String>,
    /// Where the plan is looked for, in order. Default `["claim", "header", "table"]`.
    pub lookup: Vec<PlanSource>,
    /// `admit` (default) or `deny` when the quota store fails.
    pub on_store_error: OnStoreError,
    /// Admitted responses carry the `RateLimit` header too. Default true.
    pub headers_on_admit: bool,
    /// The plans by name: `[[quotas.plans.NAME.rules]]`. Default: none (quotas off).
    pub plans: BTreeMap<String, PlanConfig>,
    /// Tap mode: after this many quota overruns of one address within `within`, the address is
    /// banned (`{ after = 5, within = "10m", ttl = "1h" }`). Default: none (overruns are only
    /// logged and counted).
    pub tap_overrun_ban: Option<TapOverrunBan>,
}

/// `quotas.tap_overrun_ban`: the tap cannot answer a request, so a client that keeps
/// overrunning its quota is banned by address instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapOverrunBan {
    /// Overruns within `within` that ban the address (at least 1).
    pub after: u32,
    /// The window the overruns are counted in. Default 10 minutes.
    #[serde(
        default = "default_overrun_within",
        deserialize_with = "guard_core::time::de_duration"
    )]
    pub within: std::time::Duration,
    /// How long the ban lasts. Default 1 hour.
    #[serde(
        default = "default_overrun_ttl",
        deserialize_with = "guard_core::time::de_duration"
    )]
    pub ttl: std::time::Duration,
}

fn default_overrun_within() -> std::time::Duration {
    std::time::Duration::from_mins(10)
}

fn default_overrun_ttl() -> std::time::Duration {
    std::time::Duration::from_hours(1)
}

/// `[quotas.plans.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// In order; the first rule matching a request applies. A plan without rules limits
    /// nothing.
    pub rules: Vec<RuleConfig>,
}

/// `[[quotas.plans.NAME.rules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Exact (`/login`), prefix (`/api/v1/*`) or template (`/api/v1/users/{id}`).
    pub path: String,
    /// Only this method (e.g. `"POST"`); any method when unset.
    pub method: Option<String>,
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    pub per_day: Option<u32>,
    /// The calendar month in UTC.
    pub per_month: Option<u32>,
    /// Never resets.
    pub lifetime: Option<u32>,
}

impl RuleConfig {
    fn limits(&self) -> [(&'static str, Window, Option<u32>); 6] {
        [
            ("per_second", Window::Second, self.per_second),
            ("per_minute", Window::Minute, self.per_minute),
            ("per_hour", Window::Hour, self.per_hour),
            ("per_day", Window::Day, self.per_day),
            ("per_month", Window::Month, self.per_month),
            ("lifetime", Window::Lifetime, self.lifetime),
        ]
    }
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            plan_claim: "plan".to_owned(),
            plan_header: None,
            default_plan: None,
            lookup: vec![PlanSource::Claim, PlanSource::Header, PlanSource::Table],
            on_store_error: OnStoreError::Admit,
            headers_on_admit: true,
            plans: BTreeMap::new(),
            tap_overrun_ban: None,
        }
    }
}

/// A problem in `[quotas]`: the full key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotasProblem {
    pub key: String,
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> QuotasProblem {
    QuotasProblem {
        key: key.into(),
        message: message.into(),
    }
}

impl QuotasConfig {
    /// Whether any plan is defined.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.plans.is_empty()
    }

    /// The validated plans (plans in name order, rules in file order).
    pub fn plan_set(&self) -> Result<PlanSet, QuotasProblem> {
        if let Some(b) = &self.tap_overrun_ban {
            if b.after == 0 {
                return Err(problem(
                    "quotas.tap_overrun_ban.after",
                    "0 would ban without an overrun: use at least 1",
                ));
            }
            if b.within.is_zero() || b.ttl.is_zero() {
                return Err(problem(
                    "quotas.tap_overrun_ban",
                    "`within` and `ttl` must be longer than 0 seconds",
                ));
            }
        }
        if self.plan_claim.is_empty() {
            return Err(problem("quotas.plan_claim", "a claim name, e.g. \"plan\""));
        }
        if let Some(h) = &self.plan_header
            && (h.is_empty() || !h.bytes().all(is_token_byte))
        {
            return Err(problem(
                "quotas.plan_header",
                format!("{h:?} is not a header name"),
            ));
        }
        if self.lookup.is_empty() {
            return Err(problem(
                "quotas.lookup",
                "at least one of \"claim\", \"header\", \"table\"",
            ));
        }
        for (i, s) in self.lookup.iter().enumerate() {
            if self.lookup[..i].contains(s) {
                return Err(problem("quotas.lookup", format!("{s:?} is listed twice")));
            }
        }
        let mut plans = Vec::with_capacity(self.plans.len());
        for (name, plan) in &self.plans {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(problem(
                    format!("quotas.plans.{name}"),
                    "a plan name is letters, digits, `_` and `-`",
                ));
            }
            let mut rules = Vec::with_capacity(plan.rules.len());
            for (i, r) in plan.rules.iter().enumerate() {
                let at = format!("quotas.plans.{name}.rules[{i}]");
                let mut limits = Limits::default();
                for (key, window, limit) in r.limits() {
                    match limit {
                        Some(0) => {
                            return Err(problem(
                                format!("{at}.{key}"),
                                "0 refuses every request: use at least 1, or remove the key",
                            ));
                        }
                        Some(l) => limits = limits.with(window, l),
                        None => {}
                    }
                }
                let rule = Rule::new(&r.path, r.method.as_deref(), limits).map_err(|e| {
                    let key = match e {
                        QuotaError::Pattern { .. } => format!("{at}.path"),
                        QuotaError::BadMethod(_) => format!("{at}.method"),
                        _ => at.clone(),
                    };
                    problem(key, e.to_string())
                })?;
                rules.push(rule);
            }
            plans.push(Plan {
                name: name.clone(),
                rules,
            });
        }
        if let Some(d) = &self.default_plan
            && !self.plans.contains_key(d)
        {
            return Err(problem(
                "quotas.default_plan",
                format!("no plan named {d:?} under [quotas.plans]"),
            ));
        }
        PlanSet::new(plans, self.default_plan.as_deref())
            .map_err(|e| problem("quotas.plans", e.to_string()))
    }
}

/// An HTTP token byte (RFC 9110 `tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PlanSet, QuotasProblem> {
        #[derive(Deserialize)]
        struct File {
            quotas: QuotasConfig,
        }
        let f: File = toml::from_str(text).expect("valid TOML of the right shape");
        f.quotas.plan_set()
    }

    fn key_of(text: &str) -> String {
        parse(text).expect_err("a problem").key
    }

    /// `tap_overrun_ban`: defaults for `within` and `ttl`, and a 0 named by its key.
    #[test]
    fn tap_overrun_ban_parses_and_checks() {
        #[derive(Deserialize)]
        struct File {
            quotas: QuotasConfig,
        }
        let plan = "[[quotas.plans.a.rules]]\npath = \"/x\"\nper_minute = 1\n";
        let f: File = toml::from_str(&format!(
            "[quotas]\ntap_overrun_ban = {{ after = 3 }}\n{plan}"
        ))
        .expect("parses");
        assert_eq!(
            f.quotas.tap_overrun_ban,
            Some(TapOverrunBan {
                after: 3,
                within: std::time::Duration::from_mins(10),
                ttl: std::time::Duration::from_hours(1),
            })
        );
        assert!(f.quotas.plan_set().is_ok());
        assert_eq!(
            key_of(&format!(
                "[quotas]\ntap_overrun_ban = {{ after = 0, ttl = \"5m\" }}\n{plan}"
            )),
            "quotas.tap_overrun_ban.after"
        );
        assert_eq!(
            key_of(&format!(
                "[quotas]\ntap_overrun_ban = {{ after = 2, within = 0 }}\n{plan}"
            )),
            "quotas.tap_overrun_ban"
        );
    }

    #[test]
    fn the_issue_example_parses() {
        let set = parse(
            r#"
            [quotas]
            plan_claim = "plan"
            default_plan = "anonymous"
            [[quotas.plans.anonymous.rules]]
            path = "/api/*"
            per_minute = 5
            [[quotas.plans.free.rules]]
            path = "/api/v1/users/{id}"
            per_minute = 10
            per_hour = 100
            per_day = 1000
            lifetime = 10000
            [[quotas.plans.free.rules]]
            path = "/api/*"
            method = "post"
            per_second = 2
            per_month = 50000
            [quotas.plans.enterprise]
            "#,
        )
        .unwrap();
        let free = set.get("free").unwrap();
        assert_eq!(free.rules.len(), 2);
        let r = free.rule_for("GET", "/api/v1/users/42").unwrap();
        assert_eq!(
            r.limits.iter().collect::<Vec<_>>(),
            [
                (Window::Minute, 10),
                (Window::Hour, 100),
                (Window::Day, 1000),
                (Window::Lifetime, 10_000)
            ]
        );
        assert_eq!(
            free.rule_for("POST", "/api/v1/orders")
                .and_then(|r| r.limits.get(Window::Month)),
            Some(50_000)
        );
        assert!(free.rule_for("GET", "/api/v1/orders").is_none());
        assert!(set.get("enterprise").unwrap().rules.is_empty());
        assert_eq!(
            set.choose(None).plan().map(|p| p.name.as_str()),
            Some("anonymous")
        );
    }

    #[test]
    fn defaults() {
        let c = QuotasConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.plan_claim, "plan");
        assert_eq!(c.on_store_error, OnStoreError::Admit);
        assert!(c.headers_on_admit);
        assert!(c.plan_set().unwrap().plans().is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let rule = |body: &str| format!("[[quotas.plans.free.rules]]\n{body}\n");
        assert_eq!(
            key_of(&format!(
                "[quotas]\ndefault_plan = \"gold\"\n{}",
                rule("path = \"/a\"\nper_day = 1")
            )),
            "quotas.default_plan"
        );
        assert_eq!(key_of(&rule("path = \"/a\"")), "quotas.plans.free.rules[0]");
        assert_eq!(
            key_of(&format!(
                "{}{}",
                rule("path = \"/a\"\nper_day = 1"),
                rule("path = \"/b\"\nper_hour = 0")
            )),
            "quotas.plans.free.rules[1].per_hour"
        );
        assert_eq!(
            key_of(&rule("path = \"/a/*/b\"\nper_day = 1")),
            "quotas.plans.free.rules[0].path"
        );
        assert_eq!(
            key_of(&rule("path = \"api\"\nper_day = 1")),
            "quotas.plans.free.rules[0].path"
        );
        assert_eq!(
            key_of(&rule("path = \"/a\"\nmethod = \"G T\"\nper_day = 1")),
            "quotas.plans.free.rules[0].method"
        );
        assert_eq!(key_of("[quotas]\nlookup = []\n"), "quotas.lookup");
        assert_eq!(
            key_of("[quotas]\nlookup = [\"claim\", \"claim\"]\n"),
            "quotas.lookup"
        );
        assert_eq!(
            key_of("[quotas]\nplan_header = \"X Plan\"\n"),
            "quotas.plan_header"
        );
        assert_eq!(
            key_of("[[quotas.plans.\"a b\".rules]]\npath = \"/\"\nper_day = 1\n"),
            "quotas.plans.a b"
        );
        let e = parse(&rule("path = \"/a/{}\"\nper_day = 1")).unwrap_err();
        assert!(e.message.contains("variable"), "{}", e.message);
    }

    #[test]
    fn the_whole_file_names_the_key_and_the_file() {
        let e = crate::config::Config::parse(
            "[[quotas.plans.free.rules]]\npath = \"/a\"\nper_minute = 0\n",
            std::path::Path::new("/etc/guard.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "/etc/guard.toml: key `quotas.plans.free.rules[0].per_minute`: 0 refuses"
            ),
            "{e}"
        );
        let e = crate::config::Config::parse(
            "[quotas]\non_store_error = \"maybe\"\n",
            std::path::Path::new("g.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("on_store_error") || e.contains("admit"), "{e}");
        let c = crate::config::Config::parse(
            "[quotas]\non_store_error = \"deny\"\nheaders_on_admit = false\nlookup = [\"table\"]\n",
            std::path::Path::new("g.toml"),
        )
        .unwrap();
        assert_eq!(c.quotas.on_store_error, OnStoreError::Deny);
        assert!(!c.quotas.headers_on_admit);
        assert_eq!(c.quotas.lookup, [PlanSource::Table]);
    }

    #[test]
    fn the_commented_example_plans_parse() {
        let text = include_str!("../../../guard.example.toml");
        let section = &text[text.find("\n[quotas]\n").unwrap()..];
        let section = &section[..section.find("\n[ai]\n").unwrap()];
        let mut toml = String::from("[quotas]\ndefault_plan = \"anonymous\"\n");
        for line in section.lines().filter_map(|l| l.strip_prefix("#   ")) {
            toml.push_str(line);
            toml.push('\n');
        }
        let set = parse(&toml).unwrap();
        let names: Vec<_> = set.plans().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["anonymous", "enterprise", "free"]);
        assert_eq!(set.get("free").unwrap().rules.len(), 2);
    }
}
