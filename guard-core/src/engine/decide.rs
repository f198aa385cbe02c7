//! The rules themselves: scenarios that ban, BLACK rules and validator blocks that block (and
//! strike), the grace period, the GREY score that triages or blocks, and how bans are made
//! (escalating duration, evidence, shadow mode).
use std::borrow::Cow;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Duration;

use super::offenders::{PendingTriage, secs};
use super::patterns::{any_prefix, is_static, is_traversal, normalise, trailing_id};
use super::state::{ClientState, Entry, HAS_ID, Order, PROBE};
use super::table::ClientKey;
use super::{
    BanTicket, ClientBehaviour, Core, Counts, Decision, Details, Evidence, Mode, ORDER_TIMEOUT,
    Rule, ValidatorHint,
};
use crate::net::Net;
use crate::tap::RequestEvent;
use crate::text::truncate as cut;

/// Seconds of the seed's one-minute windows (distinct paths, sequential ids, recent paths).
pub(super) const MINUTE: u32 = 60;
/// Longest validator category put in a reason.
const MAX_CATEGORY: usize = 64;

/// What the rules read from one request, computed once.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one request"
)]
pub(super) struct Facts<'a> {
    /// Decoded, slash-folded, lower-case path.
    pub(super) path: Cow<'a, str>,
    pub(super) is_static: bool,
    pub(super) authenticated: bool,
    pub(super) empty_user_agent: bool,
    pub(super) error: bool,
    /// Answered 401 or 403.
    pub(super) auth_failure: bool,
    /// Not static and answered 400, 403 or 404.
    pub(super) probe: bool,
    /// The path names a known web shell or backdoor.
    pub(super) backdoor: bool,
    /// The path names a file that must never be served.
    pub(super) sensitive_file: bool,
    /// Traversal in the path or query.
    pub(super) traversal: bool,
}

/// What a strike or ban is about.
pub(super) struct Finding {
    pub(super) rule: Rule,
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) details: Details,
}

impl Core {
    pub(super) fn allowlisted(&self, ip: IpAddr) -> bool {
        self.allowlist.iter().any(|n| n.contains(ip))
    }

    pub(super) fn protected(&self, ip: IpAddr) -> bool {
        self.protected.iter().any(|n| n.contains(ip))
    }

    pub(super) fn hit(&mut self, rule: Rule) {
        self.rule_hits[rule as usize] += 1;
    }

    pub(super) fn count(&mut self, d: &Decision) {
        let s = &mut self.stats;
        match d {
            Decision::Allow => s.allowed += 1,
            Decision::Block { .. } => s.blocked += 1,
            Decision::Ban { shadow, retry, .. } => {
                if *shadow {
                    s.shadow_bans += 1;
                } else if *retry {
                    s.ban_retries += 1;
                } else {
                    s.bans += 1;
                }
            }
            Decision::Triage { .. } => s.triages += 1,
        }
    }

    pub(super) fn facts<'a>(&self, ev: &'a RequestEvent) -> Facts<'a> {
        let path = normalise(&ev.path);
        let is_static = is_static(&path, &self.cfg.static_extensions);
        let status = ev.status.unwrap_or(0);
        let query = ev.query.as_deref().map(normalise).unwrap_or_default();
        Facts {
            is_static,
            authenticated: ev
                .user
                .as_ref()
                .is_some_and(|u| u.verified || self.cfg.trust_unverified_users),
            // A health checker (no user agent) from a protected address is not a suspect.
            empty_user_agent: ev
                .headers
                .user_agent
                .as_deref()
                .is_none_or(|ua| ua.trim().is_empty())
                && !self.protected(ev.client),
            error: (400..500).contains(&status) || (self.cfg.count_server_errors && status >= 500),
            auth_failure: matches!(status, 401 | 403),
            probe: !is_static && matches!(status, 400 | 403 | 404),
            backdoor: self.backdoors.is_match(&path),
            sensitive_file: self.sensitive_files.is_match(&path),
            traversal: is_traversal(&path, &query),
            path,
        }
    }

    fn entry(&self, t: u32, f: &Facts) -> Entry {
        let mut entry = Entry {
            t,
            path: self.hasher.hash_one(&*f.path) as u32,
            ..Entry::default()
        };
        if let Some((prefix, id)) = trailing_id(&f.path) {
            entry.id = id as u32;
            entry.prefix = self.hasher.hash_one(prefix) as u16;
            entry.flags |= HAS_ID;
        }
        if f.probe {
            entry.flags |= PROBE;
        }

        entry
    }

    /// Records the request in the client's state and decides.
    pub(super) fn decide(
        &mut self,
        t: u32,
        ev: &RequestEvent,
        f: &Facts,
        key: &ClientKey,
        st: &mut ClientState,
        hint: Option<&ValidatorHint>,
    ) -> Decision {
        let entry = (!f.is_static).then(|| self.entry(t, f));
        st.record(t, secs(self.cfg.grey.idle_gap), entry, f.error);
        let probes = self.cfg.black.harm_probe_paths;
        if f.backdoor
            || f.sensitive_file
            || f.traversal
            || (f.probe && probes > 0 && st.ring.distinct(t, MINUTE, PROBE) >= probes)
        {
            st.harm_at = t;
        }
        if !f.is_static {
            st.sample(
                t,
                cut(&ev.path, self.cfg.sample_path_max),
                self.cfg.sample_paths,
            );
        }
        if st.banned_until > t {
            self.stats.banned_requests += 1;
            return Decision::Block {
                status: 403,
                reason: "banned".to_owned(),
            };
        }
        if let Some(d) = self.ordered(t, key, st) {
            return d;
        }
        if let Some(found) = self.scenarios(t, f, st) {
            self.hit(found.rule);
            return self.ban(
                t,
                ev.client,
                key,
                st,
                found.rule,
                &found.reason,
                found.details,
            );
        }
        let block = hint
            .filter(|h| h.block)
            .map(|h| Finding {
                rule: Rule::ValidatorBlock,
                status: 403,
                reason: format!(
                    "validator: {} (score {})",
                    cut(&h.category, MAX_CATEGORY),
                    h.score
                ),
                details: Details {
                    validator_category: Some(cut(&h.category, MAX_CATEGORY).to_owned()),
                    validator_score: Some(h.score),
                    ..Details::default()
                },
            })
            .or_else(|| self.black(t, f, st));
        if let Some(found) = block {
            if found.rule == Rule::RequestRate && !self.rate_counts(t, st) {
                // A rate limit: answered 429 inline, no strike toward a ban.
                self.hit(found.rule);
                return Decision::Block {
                    status: found.status,
                    reason: found.reason,
                };
            }
            return self.strike(t, ev.client, key, st, found);
        }
        if st.req_24h.sum(t / 3600) < self.cfg.grey.grace_requests_24h {
            return Decision::Allow;
        }
        let (score, rules) = self.grey(t, ev, f, st, hint.is_some_and(|h| h.triage));
        for r in &rules {
            self.hit(*r);
        }
        if score >= self.cfg.grey.hard_block {
            let found = Finding {
                rule: Rule::HardBlock,
                status: 403,
                reason: format!("suspicion score {score}"),
                details: Details {
                    score: Some(score),
                    score_rules: Some(rules),
                    ..Details::default()
                },
            };
            return self.strike(t, ev.client, key, st, found);
        }
        if score >= self.cfg.grey.threshold {
            return self.triage(t, ev, f, key, st, score, rules);
        }
        Decision::Allow
    }

    /// The probing scenarios; each matching one is charged, the first that overflows bans.
    fn scenarios(&mut self, t: u32, f: &Facts, st: &mut ClientState) -> Option<Finding> {
        let s = &self.cfg.scenarios;
        let mut found = None;
        let mut charge = |bucket: &mut super::state::Leaky, hits: u32, leak: Duration, rule| {
            if hits == 0 {
                return;
            }
            let level = bucket.hit(t, secs(leak));
            if level >= hits && found.is_none() {
                bucket.reset();
                found = Some(Finding {
                    rule,
                    status: 403,
                    // The rule's name is put before it by `ban`.
                    reason: format!("{hits} hits"),
                    details: Details {
                        hits: Some(hits),
                        leak_secs: Some(leak.as_secs()),
                        ..Details::default()
                    },
                });
            }
        };
        if f.backdoor {
            charge(
                &mut st.backdoor,
                s.backdoor_hits,
                s.backdoor_leak,
                Rule::Backdoor,
            );
        }
        if f.traversal {
            charge(
                &mut st.traversal,
                s.traversal_hits,
                s.traversal_leak,
                Rule::Traversal,
            );
        }
        if f.sensitive_file {
            charge(
                &mut st.sensitive,
                s.sensitive_file_hits,
                s.sensitive_file_leak,
                Rule::SensitiveFiles,
            );
        }
        if f.auth_failure && any_prefix(&f.path, &s.login_paths) {
            charge(
                &mut st.brute_force,
                s.brute_force_hits,
                s.brute_force_leak,
                Rule::BruteForce,
            );
        }
        if found.is_none() && f.probe && s.probing_distinct_paths > 0 {
            let n = st.ring.distinct(t, secs(s.probing_window), PROBE);
            if n >= s.probing_distinct_paths {
                found = Some(Finding {
                    rule: Rule::Probing,
                    status: 404,
                    reason: format!(
                        "{n} distinct paths answered 400/403/404 in {} s",
                        s.probing_window.as_secs()
                    ),
                    details: Details {
                        distinct_probe_paths: Some(n),
                        ..Details::default()
                    },
                });
            }
        }
        found
    }

    /// A blocked request: a strike against the client; enough strikes make a ban.
    fn strike(
        &mut self,
        t: u32,
        client: IpAddr,
        key: &ClientKey,
        st: &mut ClientState,
        found: Finding,
    ) -> Decision {
        self.hit(found.rule);
        let strikes = self.cfg.bans.block_strikes;
        if strikes > 0 {
            let level = st.strikes.hit(t, secs(self.cfg.bans.strike_leak));
            if level >= strikes {
                self.hit(Rule::RepeatedBlocks);
                let reason = format!("{strikes} blocked requests, the last: {}", found.reason);
                let details = Details {
                    last_block_rule: Some(found.rule),
                    last_block_details: (!found.details.is_empty())
                        .then(|| Box::new(found.details)),
                    ..Details::default()
                };
                return self.ban(t, client, key, st, Rule::RepeatedBlocks, &reason, details);
            }
        }
        Decision::Block {
            status: found.status,
            reason: found.reason,
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one decision, kept apart for the borrow checker"
    )]
    fn triage(
        &mut self,
        t: u32,
        ev: &RequestEvent,
        f: &Facts,
        key: &ClientKey,
        st: &mut ClientState,
        score: u32,
        rules: Vec<Rule>,
    ) -> Decision {
        let interval = secs(self.cfg.triage_interval);
        if st.last_triage != 0 && t.saturating_sub(st.last_triage) < interval {
            self.stats.triages_suppressed += 1;
            return Decision::Allow;
        }
        st.last_triage = t;
        let total = st.req_2min.sum(t / 10);
        let errors = st.err_2min.sum(t / 10);
        let behaviour = ClientBehaviour {
            client: ev.client,
            user_agent: ev.headers.user_agent.clone().unwrap_or_default(),
            authenticated: f.authenticated,
            current_path: ev.path.clone(),
            recent_paths: st.recent_paths(t, MINUTE),
            requests_10s: st.req_10s.sum(t),
            distinct_paths_1min: st.ring.distinct(t, MINUTE, 0),
            requests_2min: total,
            error_rate_2min_percent: (errors * 100).checked_div(total).unwrap_or(0).min(100) as u8,
        };
        let pending = PendingTriage {
            at: t,
            key: key.clone(),
            score,
            rules: rules.clone(),
            counts: counts(t, st),
        };
        self.pending.insert(ev.client, pending);
        Decision::Triage {
            behaviour,
            score,
            rules,
        }
    }

    /// A client whose ban is ordered: its requests are blocked while the order is on its way,
    /// and an order that failed (or got no answer within [`ORDER_TIMEOUT`] seconds) is given
    /// again.
    fn ordered(&mut self, t: u32, key: &ClientKey, st: &mut ClientState) -> Option<Decision> {
        let order = st.order.as_mut()?;
        if !order.failed && t.saturating_sub(order.at) < ORDER_TIMEOUT {
            self.stats.banned_requests += 1;
            return Some(Decision::Block {
                status: 403,
                reason: "banned".to_owned(),
            });
        }
        order.failed = false;
        order.at = t;
        Some(Decision::Ban {
            target: order.target,
            user: order.user.clone(),
            ttl: order.ttl,
            reason: order.reason.clone(),
            evidence: order.evidence.clone(),
            shadow: false,
            ticket: BanTicket {
                key: key.clone(),
                at: t,
            },
            retry: true,
        })
    }

    /// Bans `client`: duration escalated by its past bans, evidence attached, shadow per mode.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one decision, kept apart for the borrow checker"
    )]
    pub(super) fn ban(
        &mut self,
        t: u32,
        client: IpAddr,
        key: &ClientKey,
        st: &mut ClientState,
        rule: Rule,
        reason: &str,
        details: Details,
    ) -> Decision {
        if self.allowlisted(client) {
            self.stats.allowlist_refusals += 1;
            return Decision::Allow;
        }
        if self.protected(client) {
            // Never banned, whatever the rule: this request is blocked, nothing more.
            self.stats.protected_refusals += 1;
            st.strikes.reset();
            return Decision::Block {
                status: 403,
                reason: format!("{}: {reason} (protected address: not banned)", rule.name()),
            };
        }
        let before = self.offenders.record(client, t);
        let ttl = escalated_ttl(&self.cfg.bans, before);
        st.strikes.reset();
        let shadow = self.cfg.mode == Mode::Shadow;
        let evidence = Box::new(Evidence {
            rule: rule.name().to_owned(),
            client: Some(client),
            user: match key {
                ClientKey::User(u) => Some(u.to_string()),
                ClientKey::Addr(_) => None,
            },
            offence: Some(before.saturating_add(1)),
            ttl_secs: Some(ttl.as_secs()),
            shadow,
            counts: Some(counts(t, st)),
            sample_paths: st.recent_paths(t, u32::MAX),
            details,
            extra: serde_json::Map::new(),
        });
        let target = ban_target(client, self.cfg.bans.ipv6_prefix);
        let user = match key {
            ClientKey::User(u)
                if !st.unverified_user_seen && crate::tap::identity::check_user_id(u).is_ok() =>
            {
                Some(u.to_string())
            }
            _ => None,
        };
        let reason = format!("{}: {reason}", rule.name());
        if shadow {
            // Nothing is pushed: the engine's word is the ban.
            st.banned_until = t.saturating_add(secs(ttl));
        } else {
            // Banned once the shell confirms it (`Engine::ban_settled`).
            st.order = Some(Box::new(Order {
                at: t,
                failed: false,
                target,
                ttl,
                reason: reason.clone(),
                evidence: evidence.clone(),
                user: user.clone(),
            }));
        }
        Decision::Ban {
            target,
            user,
            ttl,
            reason,
            evidence,
            shadow,
            ticket: BanTicket {
                key: key.clone(),
                at: t,
            },
            retry: false,
        }
    }
}

/// What a ban of `client` covers: the address itself (IPv4), or its IPv6 network of
/// `ipv6_prefix` bits (one host commonly owns a whole /64 and changes address within it).
#[must_use]
pub fn ban_target(client: IpAddr, ipv6_prefix: u8) -> Net {
    match client {
        IpAddr::V4(_) => Net::host(client),
        // An IPv4-mapped address is an IPv4 client: ban it alone.
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => Net::host(client),
        IpAddr::V6(_) => Net::new(client, ipv6_prefix),
    }
}

/// `base * factor^before`, at most `max_ttl`.
pub(super) fn escalated_ttl(b: &super::EngineBansConfig, before: u32) -> Duration {
    let mut ttl = b.ttl;
    for _ in 0..before {
        ttl = ttl.saturating_mul(b.factor);
        if ttl >= b.max_ttl {
            break;
        }
    }
    ttl.min(b.max_ttl)
}

/// The client's window counts, for evidence.
fn counts(t: u32, st: &mut ClientState) -> Counts {
    Counts {
        requests_10s: st.req_10s.sum(t),
        all_requests_10s: st.all_10s.sum(t),
        requests_2min: st.req_2min.sum(t / 10),
        errors_2min: st.err_2min.sum(t / 10),
        requests_24h: st.req_24h.sum(t / 3600),
        distinct_paths_1min: st.ring.distinct(t, MINUTE, 0),
        probe_paths_1min: st.ring.distinct(t, MINUTE, PROBE),
        sequential_ids_1min: st.ring.sequential_run(t, MINUTE),
    }
}
