//! The engine: decides, request by request, what to do about each client. Pure and synchronous:
//! a [`RequestEvent`] (and the validator's finding on it) and the time go in, a [`Decision`]
//! comes out, and the daemon's shell applies it (log, block in inline mode, ban, AI triage).
//!
//! It ports the seed's anomaly detector (BLACK rules that block, a GREY score that asks the AI
//! between `threshold` and `hard_block` and blocks above, a grace period for new clients) over
//! in-memory sliding windows instead of database queries, and adds probing scenarios of the
//! `CrowdSec` kind that ban directly (404 probing, sensitive files, backdoors, path traversal,
//! login brute force). Blocks are strikes: enough of them in a short time make a ban. Bans
//! escalate for repeat offenders, carry their evidence, are never made against the allowlist,
//! and in shadow mode are marked and not meant to be pushed. Every bound is in
//! [`EngineConfig`] and every overflow is counted in [`EngineStats`].
use std::collections::BTreeMap;
use std::hash::RandomState;
use std::net::IpAddr;
use std::time::Duration;

mod config;
mod decide;
mod evidence;
mod offenders;
pub mod patterns;
mod score;
mod state;
mod table;

#[cfg(test)]
mod tests;

pub use config::{
    BlackConfig, EngineBansConfig, EngineConfig, GreyConfig, Mode, RateProfile, ScenarioConfig,
    Weights,
};
pub use decide::ban_target;
pub use evidence::{Counts, Details, Evidence, deserialize_stored};

use crate::net::Net;
use crate::tap::RequestEvent;
use offenders::{Offenders, Pending, secs};
use patterns::Matcher;
use state::ClientState;
use table::{ClientKey, Table};

/// Errors of the engine's configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("invalid setting `{key}`: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
}

/// What the request validator (another module) found in a request, as the engine needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidatorHint {
    /// The request is hostile by the validator's rules: a strike against the client.
    pub block: bool,
    /// The request is borderline: adds the `validator` weight to the client's grey score.
    pub triage: bool,
    /// The validator's own score, for reasons and evidence.
    pub score: u32,
    /// The validator's category (guard's own identifier, not client text).
    pub category: String,
}

/// What the shell should do about a request or a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    /// Refuse this request (inline mode) with this status; in tap mode, log it.
    Block {
        status: u16,
        reason: String,
    },
    /// Ban the client's address for `ttl`, and its user when `user` is set. With `shadow`, only
    /// log and count it.
    Ban {
        target: Net,
        /// The client's user, when the engine keyed the client by a user id the tap verified
        /// (a signed JWT, or the user header of a trusted proxy) on every request it judged:
        /// banned with the address. Never an unverified claim, which could name anyone.
        user: Option<String>,
        ttl: Duration,
        reason: String,
        /// Rule, offence count, window counts, sample paths and the rule's details, stored
        /// with the ban and shown by `guard ban ls`.
        evidence: Box<Evidence>,
        shadow: bool,
        /// Hand it back with the outcome ([`Engine::ban_settled`]): the client counts as banned
        /// only once the shell confirms the ban is enforced.
        ticket: BanTicket,
        /// The same ban ordered again: the first order was dropped, failed or got no answer.
        retry: bool,
    },
    /// Let the request through and ask the AI about the client (off the request path); pass its
    /// [`SecondOpinion`] back to [`Engine::ai_verdict`]. The score and rules are for the log only:
    /// the model sees the raw behaviour, as in the seed.
    Triage {
        behaviour: ClientBehaviour,
        score: u32,
        rules: Vec<Rule>,
    },
}

/// Names a ban order when the shell reports its outcome to [`Engine::ban_settled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanTicket {
    key: ClientKey,
    /// When the order was given (seconds): an outcome for an older order is ignored.
    at: u32,
}

/// How a ban order ended, as the shell reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanOutcome {
    /// Enforced (in the maps, whether or not the store took it): the client is banned.
    Enforced,
    /// Refused for good (allowlisted, protected): not banned, and not ordered again.
    Refused,
    /// Dropped (queue full) or failed (the maps refused it): ordered again on the client's next
    /// request.
    Failed,
}

/// Seconds an order may go unanswered before the client's next request orders it again.
pub const ORDER_TIMEOUT: u32 = 60;

/// The raw behaviour of a grey client: counts guard measured plus what the client sent. No
/// score and no labels, as in the seed, so the model judges the behaviour itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientBehaviour {
    /// The client address, charged against its daily budget; never put in the prompt.
    pub client: IpAddr,
    pub user_agent: String,
    pub authenticated: bool,
    pub current_path: String,
    /// Paths of the last minute, oldest first.
    pub recent_paths: Vec<String>,
    pub requests_10s: u32,
    pub distinct_paths_1min: u32,
    pub requests_2min: u32,
    /// Share of 4xx/5xx answers in the last two minutes, in per cent.
    pub error_rate_2min_percent: u8,
}

/// The AI's answer about a triaged client, as the engine takes it. Only `Block` changes
/// anything (it can only raise a decision, never lower one); the AI client maps its own answers
/// to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondOpinion {
    /// The model judged the client hostile.
    Block,
    /// The model saw no reason to block: not a reason to lower, unban or allowlist.
    Allow,
    /// No answer (disabled, budget, breaker, timeout, unusable reply).
    Unsure,
}

/// Decisions from least to most severe (an AI answer may only raise one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Allow,
    Triage,
    Block,
    Ban,
}

impl Decision {
    #[must_use]
    pub fn severity(&self) -> Severity {
        match self {
            Self::Allow => Severity::Allow,
            Self::Triage { .. } => Severity::Triage,
            Self::Block { .. } => Severity::Block,
            Self::Ban { .. } => Severity::Ban,
        }
    }
}

macro_rules! rules {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// The engine's rules, named in reasons, evidence and counters.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum Rule { $($(#[$doc])* $name,)* }

        impl Rule {
            pub const ALL: &[Rule] = &[$(Rule::$name,)*];

            #[must_use]
            pub fn name(self) -> &'static str {
                match self { $(Rule::$name => $text,)* }
            }
        }
    };
}

rules! {
    /// Black: no `User-Agent`.
    EmptyUserAgent = "empty_user_agent",
    /// Black: too many requests in 10 s.
    RequestRate = "request_rate",
    /// Black: too many requests of any kind (static included) in 10 s.
    Flood = "flood",
    /// Black: too many errors in 2 min.
    ErrorRate = "error_rate",
    SuspiciousUserAgent = "suspicious_user_agent",
    ElevatedRate = "elevated_rate",
    ModerateErrorRate = "moderate_error_rate",
    SensitivePath = "sensitive_path",
    EndpointScanning = "endpoint_scanning",
    SequentialIds = "sequential_ids",
    IdleBurst = "idle_burst",
    Unauthenticated = "unauthenticated",
    /// Grey: the validator asked for a look.
    ValidatorSuspicious = "validator_suspicious",
    /// The grey score reached `hard_block`.
    HardBlock = "hard_block",
    /// The validator blocked the request.
    ValidatorBlock = "validator_block",
    /// Scenario: 400/403/404 on many distinct paths.
    Probing = "probing",
    /// Scenario: HEAD requests for many distinct missing paths (an enumeration script).
    Enumeration = "enumeration",
    SensitiveFiles = "sensitive_files",
    Backdoor = "backdoor",
    Traversal = "traversal",
    BruteForce = "brute_force",
    /// Enough blocked requests in a short time.
    RepeatedBlocks = "repeated_blocks",
    /// The AI judged a triaged client hostile.
    AiVerdict = "ai_verdict",
    /// The tap saw the client overrun its plan quota too often (`quotas.tap_overrun_ban`).
    QuotaOverrun = "quota_overrun",
}

/// Counters of the engine's work; gauges say what is held now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    pub requests: u64,
    pub allowed: u64,
    pub blocked: u64,
    /// Requests of clients the engine already banned (shadow mode, or before XDP applied it).
    pub banned_requests: u64,
    pub bans: u64,
    /// Bans decided in shadow mode (not pushed).
    pub shadow_bans: u64,
    /// Ban orders given again because the first was dropped, failed or got no answer.
    pub ban_retries: u64,
    /// Ban orders the shell reported as failed (or dropped).
    pub ban_failures: u64,
    /// Bans (either mode) made on an AI verdict.
    pub ai_bans: u64,
    pub triages: u64,
    /// Triages skipped because the client was triaged less than `triage_interval` ago.
    pub triages_suppressed: u64,
    /// Requests of allowlisted clients (never judged).
    pub allowlisted: u64,
    /// Bans not made because the client is allowlisted (an AI verdict after allowlisting).
    pub allowlist_refusals: u64,
    /// Bans not made because the client is protected (the host, its gateways, resolvers,
    /// trusted proxies, `bans.protect`): the request is blocked, the client never banned.
    pub protected_refusals: u64,
    pub clients: u64,
    pub clients_evicted: u64,
    pub clients_expired: u64,
    pub offenders: u64,
    pub offenders_evicted: u64,
    pub pending_triage: u64,
    pub pending_evicted: u64,
    /// Times each rule fired.
    pub rules: BTreeMap<&'static str, u64>,
}

/// Client-table slots one slice of a sweep visits ([`Engine::expire_slice`]): a few
/// milliseconds under the engine's lock even when every client in the slice expires.
pub const SWEEP_SLICE: usize = 4096;

/// Client states an expiry sweep removed ([`Engine::expire`]), freed when this is dropped.
#[derive(Debug)]
#[must_use = "dropping it frees the expired clients: drop it outside any lock around the engine"]
pub struct Expired(Vec<ClientState>);

impl Expired {
    /// How many clients expired.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The engine's state apart from the client table.
#[derive(Debug)]
struct Core {
    cfg: EngineConfig,
    hasher: RandomState,
    allowlist: Vec<Net>,
    /// Never banned, and never struck by the empty user-agent rule (health checkers); still
    /// judged otherwise. Set by the shell from the host's own facts.
    protected: Vec<Net>,
    offenders: Offenders,
    pending: Pending,
    stats: EngineStats,
    rule_hits: Vec<u64>,
    /// `scenarios.backdoors`, `scenarios.sensitive_files`, `grey.suspicious_user_agents`.
    backdoors: Matcher,
    sensitive_files: Matcher,
    user_agents: Matcher,
}

/// The engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    core: Core,
    table: Table,
}

impl Engine {
    /// An engine with `config` (validate it first with [`EngineConfig::validate`]) and an empty
    /// allowlist.
    #[must_use]
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            core: Core {
                cfg: config.clone(),
                hasher: RandomState::new(),
                allowlist: Vec::new(),
                protected: Vec::new(),
                offenders: Offenders::new(config.bans.offender_memory, config.bans.max_offenders),
                pending: Pending::new(config.max_pending_triage),
                stats: EngineStats::default(),
                rule_hits: vec![0; Rule::ALL.len()],
                backdoors: Matcher::new(&config.scenarios.backdoors, true),
                sensitive_files: Matcher::new(&config.scenarios.sensitive_files, true),
                user_agents: Matcher::new(&config.grey.suspicious_user_agents, true),
            },
            table: Table::new(config.max_clients),
        }
    }

    /// Applies a changed `[engine]` section at run time (validate it first): rules, weights,
    /// thresholds, the mode and the scenario lists. The clients' state, the offenders and the
    /// pending triages are kept; the bounds sized at start (`max_clients`,
    /// `bans.max_offenders`, `max_pending_triage`) keep their start values.
    pub fn reconfigure(&mut self, config: &EngineConfig) {
        let core = &mut self.core;
        core.backdoors = Matcher::new(&config.scenarios.backdoors, true);
        core.sensitive_files = Matcher::new(&config.scenarios.sensitive_files, true);
        core.user_agents = Matcher::new(&config.grey.suspicious_user_agents, true);
        let mut cfg = config.clone();
        cfg.max_clients = core.cfg.max_clients;
        cfg.bans.max_offenders = core.cfg.bans.max_offenders;
        cfg.max_pending_triage = core.cfg.max_pending_triage;
        core.cfg = cfg;
    }

    /// Switches between enforcing and shadow mode (`guard mode`).
    pub fn set_mode(&mut self, mode: Mode) {
        self.core.cfg.mode = mode;
    }

    /// The mode in effect.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.core.cfg.mode
    }

    /// Replaces the allowlist: clients inside these networks are never judged nor banned.
    pub fn set_allowlist(&mut self, nets: Vec<Net>) {
        self.core.allowlist = nets;
    }

    /// Replaces the protected networks: clients inside them are judged (a hostile request is
    /// blocked) but never banned, and requests without a user agent from them (health checkers)
    /// are not struck.
    pub fn set_protected(&mut self, nets: Vec<Net>) {
        self.core.protected = nets;
    }

    /// Whether `ip` is allowlisted.
    #[must_use]
    pub fn is_allowlisted(&self, ip: IpAddr) -> bool {
        self.core.allowlisted(ip)
    }

    /// Judges one request at `now` (wall clock since the Unix epoch) with the validator's
    /// finding on it, if any.
    pub fn observe(
        &mut self,
        now: Duration,
        ev: &RequestEvent,
        finding: Option<&ValidatorHint>,
    ) -> Decision {
        let t = secs(now);
        self.core.stats.requests += 1;
        if self.core.allowlisted(ev.client) {
            self.core.stats.allowlisted += 1;
            return Decision::Allow;
        }
        let facts = self.core.facts(ev);
        let key = match &ev.user {
            Some(u) if facts.authenticated => ClientKey::User(u.id.as_str().into()),
            _ => ClientKey::Addr(ev.client),
        };
        let history = self.core.cfg.history;
        let (state, evicted) = self
            .table
            .get_or_insert(key.clone(), || ClientState::new(history));
        if evicted {
            self.core.stats.clients_evicted += 1;
        }
        if matches!(key, ClientKey::User(_)) && !ev.user.as_ref().is_some_and(|u| u.verified) {
            state.unverified_user_seen = true;
        }
        let decision = self.core.decide(t, ev, &facts, &key, state, finding);
        self.core.count(&decision);
        decision
    }

    /// Turns the AI's judgement of a triaged client into a decision. Only a BLOCK does anything
    /// (a ban); ALLOW and unsure change nothing, and an allowlisted or already banned client is
    /// left alone.
    pub fn ai_verdict(
        &mut self,
        now: Duration,
        client: IpAddr,
        opinion: SecondOpinion,
    ) -> Decision {
        if opinion != SecondOpinion::Block {
            return Decision::Allow;
        }
        if self.core.allowlisted(client) {
            self.core.stats.allowlist_refusals += 1;
            return Decision::Allow;
        }
        let t = secs(now);
        let pending = self.core.pending.take(client, t);
        let key = pending
            .as_ref()
            .map_or(ClientKey::Addr(client), |p| p.key.clone());
        let history = self.core.cfg.history;
        let (state, evicted) = self
            .table
            .get_or_insert(key.clone(), || ClientState::new(history));
        if evicted {
            self.core.stats.clients_evicted += 1;
        }
        if state.banned_until > t || state.order.is_some() {
            return Decision::Allow;
        }
        let details = match pending {
            Some(p) => Details {
                triage_score: Some(p.score),
                triage_rules: Some(p.rules),
                triage_counts: Some(p.counts),
                triaged_secs_ago: Some(t.saturating_sub(p.at)),
                ..Details::default()
            },
            None => Details {
                triage: Some("no pending triage record (expired or evicted)".to_owned()),
                ..Details::default()
            },
        };
        let reason = "the AI judged the client's behaviour hostile";
        self.core.hit(Rule::AiVerdict);
        let decision = self
            .core
            .ban(t, client, &key, state, Rule::AiVerdict, reason, details);
        if matches!(decision, Decision::Ban { .. }) {
            self.core.stats.ai_bans += 1;
        }
        self.core.count(&decision);
        decision
    }

    /// A ban the shell decided on by a rule of its own (the tap's quota overruns): `client` is
    /// banned by address for `ttl`, through the same order, confirmation and refusals
    /// (allowlisted, protected) as the engine's own bans. [`Decision::Allow`] when the client
    /// is allowlisted, already banned or has an order outstanding; [`Decision::Block`] when it
    /// is protected.
    pub fn shell_ban(
        &mut self,
        now: Duration,
        client: IpAddr,
        rule: Rule,
        reason: &str,
        ttl: Duration,
    ) -> Decision {
        if self.core.allowlisted(client) {
            self.core.stats.allowlist_refusals += 1;
            return Decision::Allow;
        }
        let t = secs(now);
        let key = ClientKey::Addr(client);
        let history = self.core.cfg.history;
        let (state, evicted) = self
            .table
            .get_or_insert(key.clone(), || ClientState::new(history));
        if evicted {
            self.core.stats.clients_evicted += 1;
        }
        if state.banned_until > t || state.order.is_some() {
            return Decision::Allow;
        }
        self.core.hit(rule);
        let mut decision = self
            .core
            .ban(t, client, &key, state, rule, reason, Details::default());
        if let Decision::Ban {
            ttl: d_ttl,
            evidence,
            shadow,
            ..
        } = &mut decision
        {
            // The rule's own duration, not the engine's escalation.
            *d_ttl = ttl;
            evidence.ttl_secs = Some(ttl.as_secs());
            if *shadow {
                state.banned_until = t.saturating_add(secs(ttl));
            } else if let Some(o) = state.order.as_mut() {
                o.ttl = ttl;
                o.evidence.ttl_secs = Some(ttl.as_secs());
            }
        }
        self.core.count(&decision);
        decision
    }

    /// Restores a repeat offender an earlier run recorded: `count` bans, the last at `last`
    /// (wall clock since the Unix epoch). Its next ban is escalated as if guard had never
    /// restarted; records older than the offender memory are forgotten at the next expiry.
    pub fn restore_offender(&mut self, ip: IpAddr, count: u32, last: Duration) {
        self.core.offenders.restore(ip, secs(last), count);
    }

    /// The shell's word on a ban order: enforced (the client is banned until the order's time
    /// plus its ttl), refused for good, or failed (ordered again on the client's next request).
    /// An outcome for an order that was since given again, or lifted, is ignored.
    pub fn ban_settled(&mut self, ticket: &BanTicket, outcome: BanOutcome) {
        let Some(state) = self.table.get_mut(&ticket.key) else {
            return;
        };
        let Some(order) = state.order.as_mut().filter(|o| o.at == ticket.at) else {
            return;
        };
        match outcome {
            BanOutcome::Enforced => {
                state.banned_until = order.at.saturating_add(secs(order.ttl));
                state.order = None;
            }
            BanOutcome::Refused => state.order = None,
            BanOutcome::Failed => {
                order.failed = true;
                self.core.stats.ban_failures += 1;
            }
        }
    }

    /// The operator lifted the ban of user `id`: the engine forgets that it banned the client
    /// it keyed by that user.
    pub fn unbanned_user(&mut self, id: &str) {
        if let Some(state) = self.table.get_mut(&ClientKey::User(id.into())) {
            state.banned_until = 0;
            state.order = None;
            state.strikes.reset();
        }
    }

    /// The operator lifted the ban of `client`: the engine forgets that it banned it (by address;
    /// a client keyed by user keeps its state until it expires).
    pub fn unbanned(&mut self, client: IpAddr) {
        if let Some(state) = self.table.get_mut(&ClientKey::Addr(client)) {
            state.banned_until = 0;
            state.order = None;
            state.strikes.reset();
        }
    }

    /// Like [`Engine::unbanned`] for every client inside `net` (an IPv6 client's /64 ban, or an
    /// operator's range).
    pub fn unbanned_net(&mut self, net: &Net) {
        if net.is_host() {
            return self.unbanned(net.addr());
        }
        self.table.for_each_addr_in(net, |state| {
            state.banned_until = 0;
            state.order = None;
            state.strikes.reset();
        });
    }

    /// The operator lifted the ban of `net`, meaning it was a mistake: every client inside it
    /// starts afresh (windows, score, strikes: its state is dropped), and the ban of `offender`
    /// that was lifted no longer counts as an offence (its next ban is not escalated for it).
    /// With `keep_history`, only the ban is forgotten (as [`Engine::unbanned_net`]): the
    /// client's windows and the offence stay. Returns the offences `offender` still has.
    pub fn lifted(&mut self, net: &Net, offender: Option<IpAddr>, keep_history: bool) -> u32 {
        if keep_history {
            self.unbanned_net(net);
            return 0;
        }
        self.table.remove_addrs_in(net);
        offender.map_or(0, |ip| self.core.offenders.forget_one(ip))
    }

    /// Drops clients idle for `client_expiry` (unless banned), past offences older than
    /// `offender_memory` and triages that never got a verdict. Call it every `sweep_interval`
    /// (a minute by default): it is one pass over the client table. The clients dropped are
    /// returned, to be freed by the caller (see [`Engine::expire_slice`]).
    pub fn expire(&mut self, now: Duration) -> Expired {
        self.expire_slice(now, 0, usize::MAX).0
    }

    /// One slice of an expiry sweep: like [`Engine::expire`] over at most `max` slots of the
    /// client table from `from`; returns the clients dropped and where to go on (`None`: the
    /// sweep is over, and old offences and triages were dropped too). A caller holding a lock
    /// around the engine sweeps slice by slice (see [`SWEEP_SLICE`]), releasing it in between,
    /// and frees each [`Expired`] outside it: freeing a whole table of clients takes far longer
    /// than the pass that finds them (100,000 in about 0.3 s against 1 ms).
    pub fn expire_slice(
        &mut self,
        now: Duration,
        from: usize,
        max: usize,
    ) -> (Expired, Option<usize>) {
        let t = secs(now);
        let idle = secs(self.core.cfg.client_expiry);
        let mut removed = Vec::new();
        let next = self.table.retain_slice(
            from,
            max,
            |s| {
                t.saturating_sub(s.last_seen) < idle
                    || s.banned_until > t
                    || s.order
                        .as_ref()
                        .is_some_and(|o| o.at.saturating_add(secs(o.ttl)) > t)
            },
            &mut removed,
        );
        self.core.stats.clients_expired += removed.len() as u64;
        if next.is_none() {
            self.core.offenders.expire(t);
            self.core.pending.expire(t);
        }
        (Expired(removed), next)
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.core.stats.clone();
        stats.clients = self.table.len() as u64;
        stats.offenders = self.core.offenders.len() as u64;
        stats.offenders_evicted = self.core.offenders.evicted();
        stats.pending_triage = self.core.pending.len() as u64;
        stats.pending_evicted = self.core.pending.evicted();
        stats.rules = Rule::ALL
            .iter()
            .zip(&self.core.rule_hits)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.name(), *n))
            .collect();
        stats
    }

    /// Approximate heap bytes of the client table (slots, index, per-client buffers), for the
    /// benchmark and metrics.
    #[must_use]
    pub fn approx_table_bytes(&self) -> usize {
        self.table.approx_bytes()
    }
}
