//! [`InlineGate`]: the inline mode's per-request decision behind the [`Gate`] seam, shared by
//! the reverse proxy and the forward-auth endpoint. Per request, in this order:
//!
//! 1. the client and the user, named by the tap's identity code ([`super::event`]);
//! 2. a banned address → `proxy.deny_status` (the XDP maps, [`AddrLookup`]);
//! 3. the user checks ([`UserCheck`]: user bans) — **the seam** where the user-ban lookup plugs
//!    in;
//! 4. the validator and the engine, through the [`Judge`] exactly as for a tapped request (same
//!    engine input, same strikes and ban orders): a block → `deny_status`, a flood →
//!    `limit_status`;
//! 5. the plan quotas ([`InlineGate::with_quotas`]), only for a request the bans and the judge
//!    admitted (a refused request is never charged), anonymous clients included (the default
//!    plan, keyed by address): a spent quota → `limit_status` with the `RateLimit` headers;
//! 6. one log record, as the tap writes it, with `mode: inline` and the request id.
//!
//! With `proxy.mode = "shadow"` every request passes; the record says what would have been
//! answered.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tracing::debug;

use super::answer::{self, Extra};
use super::event::{Identity, request_event};
use super::pending::{self, Pending};
use super::{Gate, Seen, Verdict};
use crate::bans::lookup::AddrLookup;
use crate::config::{InlineMode, ProxyConfig};
use crate::judge::{Judge, Refuse};
use crate::quota::QuotaCheck;
use crate::store::logs::{LogRecord, LogWriter, Mode};
use crate::tap::{RequestEvent, Trust, UserId};
use crate::xdp::BanHit;

/// Why the inline mode refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client's address is banned (an exact or a CIDR ban in the XDP maps).
    BannedAddress(BanHit),
    /// The user is banned (user bans: answered through [`UserCheck`]).
    BannedUser,
    /// The validator or the engine refused it.
    Judged(Refuse),
    /// A plan quota is spent (issue 16): `limit_status` with the `RateLimit` headers
    /// (answered by `quota::QuotaCheck`).
    Quota {
        /// The limit of the exceeded window that resets last.
        limit: u64,
        remaining: u64,
        /// `Retry-After`: until every exceeded window has reset; `None` when a lifetime limit
        /// is spent (it never resets).
        reset: Option<Duration>,
        /// The `RateLimit-Policy` and `RateLimit` values
        /// (draft-ietf-httpapi-ratelimit-headers-11).
        policy: String,
        ratelimit: String,
        /// The names of the exceeded policies (`minute`, `lifetime`, ...), for the
        /// `application/problem+json` body.
        violated: Vec<&'static str>,
    },
    /// The quota store is failing and `quotas.on_store_error = "deny"`: 503 with
    /// `Retry-After: 1` (the store is tried again every second).
    QuotaUnavailable,
}

impl Refusal {
    /// The status of the answer.
    #[must_use]
    pub fn status(&self, cfg: &Statuses) -> u16 {
        match self {
            Self::BannedAddress(_) | Self::BannedUser | Self::Judged(Refuse::Deny) => cfg.deny,
            Self::Judged(Refuse::Limit) | Self::Quota { .. } => cfg.limit,
            Self::QuotaUnavailable => 503,
        }
    }

    /// What the answer carries beyond its status.
    #[must_use]
    pub fn extra(&self) -> Extra {
        match self {
            Self::Judged(Refuse::Limit) => Extra {
                // The engine's flood windows are 10 s long.
                retry_after: Some(10),
                ..Extra::default()
            },
            Self::Quota {
                reset,
                policy,
                ratelimit,
                violated,
                ..
            } => Extra {
                retry_after: reset.map(|r| r.as_secs().max(1)),
                headers: vec![
                    ("ratelimit-policy", policy.clone()),
                    ("ratelimit", ratelimit.clone()),
                ],
                violated: Some(violated.clone()),
            },
            Self::QuotaUnavailable => Extra {
                retry_after: Some(1),
                ..Extra::default()
            },
            _ => Extra::default(),
        }
    }

    /// For the log record.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Self::BannedAddress(BanHit::Exact) => "banned address".to_owned(),
            Self::BannedAddress(BanHit::Cidr) => "banned address (CIDR)".to_owned(),
            Self::BannedUser => "banned user".to_owned(),
            Self::Judged(_) => String::new(),
            Self::Quota {
                limit, violated, ..
            } => format!("quota: {} ({limit} requests) spent", violated.join(", ")),
            Self::QuotaUnavailable => {
                "quota store failing (quotas.on_store_error = deny)".to_owned()
            }
        }
    }
}

/// **The seam for per-user checks** (user bans; plan quotas are a later step of their own, see
/// [`InlineGate::with_quotas`]): asked for every
/// request that names a user, after the address-ban lookup and before the validator and the
/// engine. It must answer from memory, quickly, and never panic. The user-ban lookup
/// (`bans::UserLookup`) implements it; the daemon hands it to [`InlineGate::with_user_check`].
pub trait UserCheck: Send + Sync + 'static {
    /// `Some` to refuse the request: [`Refusal::BannedUser`], or [`Refusal::Quota`].
    fn check(&self, user: &UserId, event: &RequestEvent) -> Option<Refusal>;
}

/// User bans: a request that names a banned user is refused. A claim that is not verified is
/// refused too: saying one is a banned user harms no one else, and without a JWT key no user
/// is ever verified.
impl UserCheck for crate::bans::UserLookup {
    fn check(&self, user: &UserId, _: &RequestEvent) -> Option<Refusal> {
        self.is_banned(&user.id).map(|_| Refusal::BannedUser)
    }
}

/// The statuses of the answers (`proxy.deny_status`, `proxy.limit_status`).
#[derive(Debug, Clone, Copy)]
pub struct Statuses {
    pub deny: u16,
    pub limit: u16,
}

/// Counters of the inline decision.
#[derive(Debug, Default, Serialize)]
pub struct InlineStats {
    pub requests: AtomicU64,
    pub passed: AtomicU64,
    /// Refused (answered with `deny_status` or `limit_status`, or would have been in shadow
    /// mode), of which: `limited` with `limit_status`, `banned_address` and `banned_user`
    /// before judging.
    pub refused: AtomicU64,
    pub limited: AtomicU64,
    pub banned_address: AtomicU64,
    pub banned_user: AtomicU64,
    /// Refused by a plan quota (`limit_status`; also counted in `limited`).
    pub quota_refused: AtomicU64,
    /// Shadow mode: would have been refused, passed.
    pub shadow_refusals: AtomicU64,
    /// Judging panicked (the request passed, logged unjudged).
    pub judge_panics: AtomicU64,
    /// Log records the full log queue did not take.
    pub log_dropped: AtomicU64,
}

/// The inline mode's decision (see the module doc).
pub struct InlineGate {
    judge: Arc<Judge>,
    writer: Arc<LogWriter>,
    addrs: Arc<dyn AddrLookup>,
    users: Option<Arc<dyn UserCheck>>,
    quotas: Option<Arc<QuotaCheck>>,
    identity: Identity,
    mode: InlineMode,
    statuses: Statuses,
    /// Request ids are `<start>-<seq>` in hex: the start in ms keeps them apart across runs.
    start_ms: u64,
    /// Shared by the gates made with [`InlineGate::for_proxy`], so ids stay unique.
    seq: Arc<AtomicU64>,
    /// The records of passed requests waiting for [`Gate::finished`] (the proxy's gate); `None`:
    /// written at once (the forward-auth endpoint never learns the upstream's answer).
    pending: Option<Arc<Pending>>,
    pub stats: Arc<InlineStats>,
}

impl InlineGate {
    /// The decision for `proxy` with the tap's identity settings (see [`Identity`]).
    #[must_use]
    pub fn new(
        judge: Arc<Judge>,
        writer: Arc<LogWriter>,
        addrs: Arc<dyn AddrLookup>,
        identity: Identity,
        proxy: &ProxyConfig,
    ) -> Self {
        Self {
            judge,
            writer,
            addrs,
            users: None,
            quotas: None,
            identity,
            mode: proxy.mode,
            statuses: Statuses {
                deny: proxy.deny_status,
                limit: proxy.limit_status,
            },
            start_ms: crate::clock::now_ms(),
            seq: Arc::new(AtomicU64::new(0)),
            pending: None,
            stats: Arc::new(InlineStats::default()),
        }
    }

    /// The same decision for the reverse proxy (same judge, log, lookups, counters and id
    /// sequence): the record of a passed request is written when the proxy reports the
    /// upstream's status ([`Gate::finished`]), with the time the upstream took, or after
    /// `max_age` without it (say `proxy.upstream_timeout` and a margin). The client's address
    /// is never taken from `X-Real-IP` here (as in the tap).
    #[must_use]
    pub fn for_proxy(&self, max_age: Duration) -> Self {
        let mut identity = self.identity.clone();
        identity.real_ip_fallback = false;
        Self {
            judge: Arc::clone(&self.judge),
            writer: Arc::clone(&self.writer),
            addrs: Arc::clone(&self.addrs),
            users: self.users.clone(),
            quotas: self.quotas.clone(),
            identity,
            mode: self.mode,
            statuses: self.statuses,
            start_ms: self.start_ms,
            seq: Arc::clone(&self.seq),
            pending: Some(Arc::new(Pending::new(pending::CAP, max_age))),
            stats: Arc::clone(&self.stats),
        }
    }

    /// Writes the records still waiting for their status (at shutdown).
    pub fn flush_pending(&self) {
        if let Some(p) = &self.pending {
            for r in p.drain() {
                self.log(r);
            }
        }
    }

    fn log(&self, record: LogRecord) {
        if !self.writer.try_log(record) {
            self.stats.log_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds the per-user checks (user bans, quotas): see [`UserCheck`].
    #[must_use]
    pub fn with_user_check(mut self, users: Arc<dyn UserCheck>) -> Self {
        self.users = Some(users);
        self
    }

    /// Adds the plan quotas: checked and charged after the bans and the judge admitted a
    /// request (see the module doc).
    #[must_use]
    pub fn with_quotas(mut self, quotas: Arc<QuotaCheck>) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// The plan quotas, if any.
    #[must_use]
    pub fn quotas(&self) -> Option<&Arc<QuotaCheck>> {
        self.quotas.as_ref()
    }

    /// The counters for `guard stats --json` (with the ban lookup's errors).
    #[must_use]
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&*self.stats).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("lookup_errors".into(), self.addrs.errors().into());
            if let Some(q) = &self.quotas {
                map.insert("quotas".into(), q.stats_json());
            }
        }
        v
    }

    fn next_id(&self) -> (u64, String) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        (seq, format!("{:x}-{seq:x}", self.start_ms))
    }

    /// Why `ev` is refused before the validator and the engine see it: its address or its user
    /// is banned. Only a client the request names counts; a trusted proxy is never refused for
    /// itself.
    fn banned(&self, ev: &RequestEvent) -> Option<Refusal> {
        if ev.trust != Trust::Verified {
            return None;
        }
        if let Some(hit) = self.addrs.banned(ev.client) {
            return Some(Refusal::BannedAddress(hit));
        }
        // SEAM: user bans (see `UserCheck`).
        let users = self.users.as_ref()?;
        users.check(ev.user.as_ref()?, ev)
    }

    /// The plan quota's answer for a request the bans and the judge admitted (which it charges
    /// when it passes): its refusal, or the headers the admitted request's response carries
    /// (see `quota::admit_headers`).
    fn quota(&self, ev: &RequestEvent) -> Result<Vec<(&'static str, String)>, Refusal> {
        let Some(q) = self.quotas.as_ref() else {
            return Ok(Vec::new());
        };
        let out = q.check_event(ev.user.as_ref(), ev);
        if out.unavailable {
            return Err(Refusal::QuotaUnavailable);
        }
        let Some(d) = out.decision else {
            return Ok(Vec::new());
        };
        match crate::quota::refusal(&d) {
            Some(r) => Err(r),
            None => Ok(crate::quota::admit_headers(q, &d)),
        }
    }

    /// Decides `seen`: the refusal, if any, the headers of an admitted request's response, and
    /// the record for the log.
    fn decide(&self, seen: &Seen<'_>, id: &str, seq: u64) -> Decided {
        let now = Duration::from_millis(crate::clock::now_ms());
        let ev = request_event(seen, &self.identity, seq, now);
        let mut headers = Vec::new();
        let (refusal, blocked, reason) = if let Some(r) = self.banned(&ev) {
            let reason = r.reason();
            (Some(r), true, Some(reason))
        } else if let Some(j) = self.judge.judgement_contained(&ev) {
            match j.refuse.map(Refusal::Judged) {
                Some(r) => (Some(r), true, j.reason),
                // Admitted by the bans and the judge: now, and only now, the quota is charged.
                None => match self.quota(&ev) {
                    Err(r) => {
                        let reason = r.reason();
                        (Some(r), true, Some(reason))
                    }
                    Ok(h) => {
                        headers = h;
                        (None, false, j.reason)
                    }
                },
            }
        } else {
            self.stats.judge_panics.fetch_add(1, Ordering::Relaxed);
            (
                None,
                false,
                Some("not judged: the judge panicked".to_owned()),
            )
        };
        let mut record = LogRecord::from_event(&ev, blocked, reason);
        record.mode = Mode::Inline;
        record.request_id = Some(id.to_owned());
        (refusal, headers, record)
    }
}

/// What [`InlineGate::decide`] found: the refusal, if any; the headers of an admitted
/// request's response; the log record.
type Decided = (Option<Refusal>, Vec<(&'static str, String)>, LogRecord);

/// Response headers from (name, value) pairs; a value that is not a valid header is left out.
fn header_map(pairs: Vec<(&'static str, String)>) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = http::HeaderValue::try_from(value) {
            map.append(name, v);
        }
    }
    map
}

impl Gate for InlineGate {
    fn check(&self, seen: &Seen<'_>) -> Verdict {
        let s = &self.stats;
        s.requests.fetch_add(1, Ordering::Relaxed);
        let (seq, id) = self.next_id();
        let (refusal, headers, mut record) = self.decide(seen, &id, seq);
        let verdict = match refusal {
            None => {
                s.passed.fetch_add(1, Ordering::Relaxed);
                Verdict::Pass {
                    id,
                    headers: header_map(headers),
                }
            }
            Some(r) => {
                let status = r.status(&self.statuses);
                s.refused.fetch_add(1, Ordering::Relaxed);
                match &r {
                    Refusal::BannedAddress(_) => {
                        s.banned_address.fetch_add(1, Ordering::Relaxed);
                    }
                    Refusal::BannedUser => {
                        s.banned_user.fetch_add(1, Ordering::Relaxed);
                    }
                    Refusal::Quota { .. } | Refusal::QuotaUnavailable => {
                        s.quota_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Refusal::Judged(_) => {}
                }
                if status == self.statuses.limit {
                    s.limited.fetch_add(1, Ordering::Relaxed);
                }
                if self.mode == InlineMode::Shadow {
                    s.shadow_refusals.fetch_add(1, Ordering::Relaxed);
                    s.passed.fetch_add(1, Ordering::Relaxed);
                    let why = record.reason.take().unwrap_or_default();
                    record.reason = Some(format!("shadow: would answer {status}: {why}"));
                    record.blocked = false;
                    debug!(request_id = %id, status, "shadow mode: would refuse");
                    Verdict::Pass {
                        id,
                        headers: http::HeaderMap::new(),
                    }
                } else {
                    record.status = Some(status);
                    let response = answer::answer(
                        status,
                        &id,
                        seen.head.headers.get(http::header::ACCEPT),
                        &r.extra(),
                    );
                    Verdict::Answer { id, response }
                }
            }
        };
        match (&self.pending, &verdict) {
            (Some(pending), Verdict::Pass { id, .. }) => {
                for r in pending.hold(id.clone(), record, std::time::Instant::now()) {
                    self.log(r);
                }
            }
            _ => self.log(record),
        }
        verdict
    }

    fn finished(&self, id: &str, status: u16) {
        let Some(pending) = &self.pending else { return };
        if let Some(r) = pending.finish(id, status, std::time::Instant::now()) {
            self.log(r);
        }
    }
}

#[cfg(test)]
mod tests;
