//! The engine's shell in the capture pipeline: every request the tap finishes is inspected by
//! the validator, scored by the engine, logged with the verdict, and a ban decision is queued
//! for the ban owner to push into the XDP maps and store in sled. Nothing here waits: the ban
//! queue is bounded and a full queue drops (and counts) the order. The engine counts the client
//! as banned only when the owner confirms the ban ([`Judge::settle`]); an order that was
//! dropped or failed is given again on the client's next request.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{error, info, warn};

use crate::bans::{BanRequest, Origin};
use crate::engine::{
    BanOutcome, BanTicket, Decision, Engine, EngineConfig, EngineError, ValidatorHint,
};
use crate::net::Net;
use crate::tap::{Evasion, RequestEvent, Trust};
use crate::validate::{Action, Category, Request, Validator, ValidatorConfig};

/// Errors building the judge.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("validator")]
    Validator(#[from] crate::validate::Error),
    #[error("engine")]
    Engine(#[from] EngineError),
}

/// Counters of the judge, shown by `guard stats`.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct JudgeStats {
    pub inspected: AtomicU64,
    pub validator_block: AtomicU64,
    pub validator_triage: AtomicU64,
    pub engine_block: AtomicU64,
    pub bans_ordered: AtomicU64,
    pub bans_shadow: AtomicU64,
    /// Orders dropped because the ban queue was full (given again on the client's next request).
    pub bans_dropped: AtomicU64,
    /// Orders the owner confirmed enforced.
    pub bans_confirmed: AtomicU64,
    /// Orders the owner could not carry out (the maps refused them, the owner was gone).
    pub bans_failed: AtomicU64,
    /// Orders given again after being dropped, failing or getting no answer.
    pub bans_retried: AtomicU64,
    /// Orders the owner refused for good (allowlisted, protected).
    pub bans_refused: AtomicU64,
    pub triage: AtomicU64,
    /// AI judgements asked for, and what came back.
    pub ai_asked: AtomicU64,
    pub ai_block: AtomicU64,
    pub ai_allow: AtomicU64,
    pub ai_unsure: AtomicU64,
    /// Requests inspected but not judged: an unverified flow (the source may be forged) or a
    /// trusted proxy that named no client. Nothing counts against anyone for them.
    pub not_judged: AtomicU64,
    /// Requests whose judging panicked: each was skipped (logged unjudged), the thread went on.
    pub judge_panics: AtomicU64,
    /// Requests the tap marked with evasion signs (too many headers, conflicting overlapping
    /// segments, IP fragments), judged as a protocol finding.
    pub evasion: AtomicU64,
    /// Sweeps of the engine's idle clients (every `engine.sweep_interval`), and how long the
    /// last one took, in microseconds (the engine's lock is held a slice of it at a time).
    pub engine_sweeps: AtomicU64,
    pub engine_sweep_micros: AtomicU64,
}

/// Requests the validator blocked or sent to triage, by the category of their strongest
/// finding (indexed by [`Category::index`]), for `/metrics`.
#[derive(Debug, Default)]
pub struct FindingCounts {
    pub block: [AtomicU64; Category::ALL.len()],
    pub triage: [AtomicU64; Category::ALL.len()],
}

/// Validator and engine, shared by the capture threads.
pub struct Judge {
    /// Replaced whole by a reload; a request holds the one it started with.
    validator: std::sync::RwLock<Arc<Validator>>,
    engine: Arc<Mutex<Engine>>,
    /// Boxed orders: the bounded channel initialises every slot up front.
    bans: SyncSender<Box<BanOrder>>,
    pub stats: Arc<JudgeStats>,
    /// The validator's blocks and triages by category.
    pub findings: FindingCounts,
    /// The AI second opinion for grey clients, if enabled: its calls run on the daemon's runtime.
    ai: Option<crate::ai::AiClient>,
    /// The engine's sweep cadence, and when the next sweep is due, in ms since `epoch` (the
    /// monotonic clock): whichever capture thread finds it due first sweeps, the others go on.
    sweep_every: Duration,
    next_sweep_ms: AtomicU64,
    epoch: Instant,
    /// Shadow-mode bans are offered here to be pushed to a CrowdSec LAPI as simulated.
    feed: Arc<std::sync::OnceLock<crate::crowdsec::machine::Feed>>,
}

impl JudgeStats {
    /// A copy of the counters as they are now (through serde, so that a counter added to the
    /// struct is copied without a change here).
    #[must_use]
    pub fn snapshot(&self) -> Self {
        serde_json::to_value(self)
            .and_then(serde_json::from_value)
            .unwrap_or_default()
    }
}

/// What the judge made of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    /// For the log: the request was refused (tap: would have been), counted against its client.
    pub blocked: bool,
    /// For the log: why (blocked, triaged, not judged).
    pub reason: Option<String>,
    /// For the inline mode: the answer to give instead of passing the request on. Also set for
    /// a hostile request whose client cannot be named (refused, but nobody is struck).
    pub refuse: Option<Refuse>,
}

/// How the inline mode refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// Hostile (validator block, black rule, ban): `proxy.deny_status`, 403 by default.
    Deny,
    /// Too many requests (the engine's flood rules): `proxy.limit_status`, 429 by default.
    Limit,
}

/// A ban the engine ordered, and the ticket to report its outcome with.
#[derive(Debug)]
pub struct BanOrder {
    pub request: BanRequest,
    pub ticket: BanTicket,
}

/// Ban orders waiting for the daemon.
pub type BanQueue = Receiver<Box<BanOrder>>;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Judge {
    /// Builds the judge and the queue of ban orders it fills (bounded to `queue` orders).
    pub fn new(
        validator: &ValidatorConfig,
        engine: &EngineConfig,
        allowlist: Vec<Net>,
        queue: usize,
        ai: Option<crate::ai::AiClient>,
    ) -> Result<(Self, BanQueue), JudgeError> {
        engine.validate()?;
        let mut e = Engine::new(engine);
        e.set_allowlist(allowlist);
        let (tx, rx) = sync_channel(queue.max(1));
        Ok((
            Self {
                validator: std::sync::RwLock::new(Arc::new(Validator::new(validator)?)),
                engine: Arc::new(Mutex::new(e)),
                bans: tx,
                stats: Arc::new(JudgeStats::default()),
                findings: FindingCounts::default(),
                ai,
                sweep_every: engine.sweep_interval,
                next_sweep_ms: AtomicU64::new(millis(engine.sweep_interval)),
                epoch: Instant::now(),
                feed: Arc::default(),
            },
            rx,
        ))
    }

    /// Keeps the engine's allowlist in step with the store.
    pub fn set_allowlist(&self, nets: Vec<Net>) {
        self.engine().set_allowlist(nets);
    }

    /// Hands the engine the networks it must never ban (see `protect`).
    pub fn set_protected(&self, nets: Vec<Net>) {
        self.engine().set_protected(nets);
    }

    /// Applies a reloaded `[validator]` and `[engine]` (see [`Engine::reconfigure`]): both are
    /// checked first, and nothing changes unless both are good. `mode` is the engine mode in
    /// effect after the reload (`engine.mode`, or the operator's `guard mode`).
    pub fn reconfigure(
        &self,
        validator: &ValidatorConfig,
        engine: &EngineConfig,
        mode: crate::engine::Mode,
    ) -> Result<(), JudgeError> {
        engine.validate()?;
        let v = Arc::new(Validator::new(validator)?);
        *self
            .validator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = v;
        let mut e = self.engine();
        e.reconfigure(engine);
        e.set_mode(mode);
        Ok(())
    }

    /// Switches the engine between enforcing and shadow mode.
    pub fn set_mode(&self, mode: crate::engine::Mode) {
        self.engine().set_mode(mode);
    }

    /// The engine's mode in effect.
    pub fn mode(&self) -> crate::engine::Mode {
        self.engine().mode()
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The operator lifted the ban of `target` (made for `offender`, if the engine made it):
    /// see [`Engine::lifted`].
    pub fn lifted(&self, target: &Net, offender: Option<std::net::IpAddr>, keep_history: bool) {
        self.engine().lifted(target, offender, keep_history);
    }

    /// The operator lifted the ban of user `id`: the engine forgets it banned that user.
    pub fn unbanned_user(&self, id: &str) {
        self.engine().unbanned_user(id);
    }

    /// The owner's word on an order: the engine counts the client as banned only once it is
    /// enforced; a failed one is given again on the client's next request.
    pub fn settle(&self, ticket: &BanTicket, outcome: BanOutcome) {
        let counter = match outcome {
            BanOutcome::Enforced => &self.stats.bans_confirmed,
            BanOutcome::Refused => &self.stats.bans_refused,
            BanOutcome::Failed => &self.stats.bans_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.engine().ban_settled(ticket, outcome);
    }

    /// Restores the repeat offenders an earlier run stored.
    pub fn restore_offenders(&self, offenders: &[(std::net::IpAddr, crate::store::OffenceRecord)]) {
        let mut engine = self.engine();
        for (ip, r) in offenders {
            engine.restore_offender(*ip, r.count, Duration::from_secs(r.last));
        }
    }

    /// Forgets idle clients if a sweep is due (every `engine.sweep_interval`); `wall` is the
    /// wall clock since the Unix epoch, the engine's time. Cheap when none is due: one atomic
    /// load, no lock. Returns whether this call swept.
    pub fn sweep_if_due(&self, wall: Duration) -> bool {
        self.sweep_at(self.epoch.elapsed(), wall)
    }

    /// [`Judge::sweep_if_due`] at `mono` on the judge's monotonic clock (injected by tests).
    fn sweep_at(&self, mono: Duration, wall: Duration) -> bool {
        let now = millis(mono);
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        if now < due {
            return false;
        }
        // One caller wins the sweep; a late one (or a clock that jumped) never sweeps twice.
        let next = now.saturating_add(millis(self.sweep_every));
        if self
            .next_sweep_ms
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // Slice by slice, so that requests are judged in between however many clients expire;
        // each slice's clients are freed after the lock is released.
        let started = Instant::now();
        let mut from = Some(0);
        while let Some(at) = from {
            let (expired, next) = self
                .engine()
                .expire_slice(wall, at, crate::engine::SWEEP_SLICE);
            drop(expired);
            from = next;
        }
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.engine_sweeps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .engine_sweep_micros
            .store(took, Ordering::Relaxed);
        true
    }

    /// The engine's own counters and gauges (clients held, rules fired, bans decided).
    #[must_use]
    pub fn engine_stats(&self) -> crate::engine::EngineStats {
        self.engine().stats()
    }

    /// The AI client's counters, if the AI is enabled.
    #[must_use]
    pub fn ai_stats(&self) -> Option<crate::ai::AiStats> {
        self.ai.as_ref().map(crate::ai::AiClient::stats)
    }

    /// Judges one finished request like [`Judge::judge`], but a panic in the validator or the
    /// engine costs this request only: it is counted (`judge_panics`), logged with its
    /// connection and client, and `None` is returned; the caller's thread goes on.
    #[must_use]
    pub fn judge_contained(&self, ev: &RequestEvent) -> Option<(bool, Option<String>)> {
        self.contain(ev, || self.judge(ev))
    }

    /// Runs `f` (the judging of `ev`), catching a panic. The engine's lock is the only state
    /// shared beyond this request; a panic while it is held must not poison it for the next
    /// request (every user recovers a poisoned lock anyway; clearing it keeps that rare).
    fn contain<R>(&self, ev: &RequestEvent, f: impl FnOnce() -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(payload) => {
                self.engine.clear_poison();
                self.stats.judge_panics.fetch_add(1, Ordering::Relaxed);
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(
                    conn = ev.conn_id,
                    client = %ev.client,
                    peer = %ev.peer,
                    method = %guard_core::text::truncate(&ev.method, 16),
                    path = %guard_core::text::truncate(&ev.path, 128),
                    panic = %message,
                    "judging this request panicked: it is logged unjudged, the tap goes on"
                );
                None
            }
        }
    }

    /// Judges one finished request; returns the log's (blocked, reason).
    #[must_use]
    pub fn judge(&self, ev: &RequestEvent) -> (bool, Option<String>) {
        let j = self.judgement(ev);
        (j.blocked, j.reason)
    }

    /// Judges one request like [`Judge::judge`], but a panic in the validator or the engine
    /// costs this request only (see [`Judge::judge_contained`]): `None` then.
    #[must_use]
    pub fn judgement_contained(&self, ev: &RequestEvent) -> Option<Judgement> {
        self.contain(ev, || self.judgement(ev))
    }

    /// The validator's finding on `ev` (and the tap's evasion signs), counted.
    fn hint(&self, ev: &RequestEvent) -> Option<ValidatorHint> {
        let s = &self.stats;
        s.inspected.fetch_add(1, Ordering::Relaxed);
        let h = &ev.headers;
        let headers: Vec<(&str, &str)> = ev.all_headers.iter().collect();
        let validator = Arc::clone(
            &self
                .validator
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let verdict = validator.inspect(&Request {
            method: &ev.method,
            version: Some(if ev.http_minor == 0 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            }),
            path: &ev.path,
            query: ev.query.as_deref().unwrap_or(""),
            headers: &headers,
            body: &ev.body,
            content_type: h.content_type.as_deref(),
        });
        let hint = match verdict.action {
            Action::Allow => None,
            action => {
                let block = action == Action::Block;
                if block {
                    s.validator_block.fetch_add(1, Ordering::Relaxed);
                } else {
                    s.validator_triage.fetch_add(1, Ordering::Relaxed);
                }
                // The strongest finding names the reason, not the first one.
                let strongest = verdict.strongest();
                if let Some(c) = strongest {
                    let by = if block {
                        &self.findings.block
                    } else {
                        &self.findings.triage
                    };
                    by[c.index()].fetch_add(1, Ordering::Relaxed);
                }
                let category = strongest.map(|c| c.name().to_owned()).unwrap_or_default();
                Some(ValidatorHint {
                    block,
                    triage: !block,
                    score: verdict.score,
                    category,
                })
            }
        };
        if ev.headers.evasion.is_empty() {
            hint
        } else {
            s.evasion.fetch_add(1, Ordering::Relaxed);
            evasion_hint(ev.headers.evasion, hint)
        }
    }

    /// Judges one request: the log's verdict, and the answer the inline mode gives.
    #[must_use]
    pub fn judgement(&self, ev: &RequestEvent) -> Judgement {
        let s = &self.stats;
        let hint = self.hint(ev);
        if !ev.trust.counts() {
            // The address is not proven (see `Trust`): findings are logged, never a strike or a ban.
            s.not_judged.fetch_add(1, Ordering::Relaxed);
            let why = match ev.trust {
                Trust::NoClient => "no client",
                _ => "unverified flow",
            };
            let refuse = hint
                .as_ref()
                .is_some_and(|h| h.block)
                .then_some(Refuse::Deny);
            let reason = hint.map_or_else(
                || format!("not judged: {why}"),
                |h| {
                    format!(
                        "not judged: {why}; validator: {} (score {})",
                        h.category, h.score
                    )
                },
            );
            // The request itself is hostile whoever sent it: the inline mode refuses it, with
            // no strike against anyone.
            return Judgement {
                blocked: false,
                reason: Some(reason),
                refuse,
            };
        }
        let decision = self.engine().observe(ev.ts, ev, hint.as_ref());
        let refused = |refuse, reason| Judgement {
            blocked: true,
            reason: Some(reason),
            refuse: Some(refuse),
        };
        match decision {
            Decision::Allow => match hint {
                Some(h) if h.block => refused(
                    Refuse::Deny,
                    format!("validator: {} (score {})", h.category, h.score),
                ),
                _ => Judgement::default(),
            },
            Decision::Block { status, reason } => {
                s.engine_block.fetch_add(1, Ordering::Relaxed);
                // The engine answers floods (request rate) with 429, everything else with 403.
                let refuse = if status == 429 {
                    Refuse::Limit
                } else {
                    Refuse::Deny
                };
                refused(refuse, reason)
            }
            Decision::Triage {
                score, behaviour, ..
            } => {
                s.triage.fetch_add(1, Ordering::Relaxed);
                self.ask_ai(ev.client, &behaviour);
                Judgement {
                    reason: Some(format!("triage (grey score {score})")),
                    ..Judgement::default()
                }
            }
            ban @ Decision::Ban { .. } => refused(Refuse::Deny, self.order_ban(ban)),
        }
    }

    /// Asks the AI about a grey client without waiting: the answer arrives on the runtime and
    /// can only escalate (an AI BLOCK becomes a ban through the engine); Allow and Unsure change
    /// nothing but the counters.
    fn ask_ai(&self, client: std::net::IpAddr, behaviour: &crate::ai::ClientBehaviour) {
        let Some(ai) = &self.ai else { return };
        self.stats.ai_asked.fetch_add(1, Ordering::Relaxed);
        let pending = ai.try_submit_judgement(behaviour);
        let (engine, bans, stats, feed) = (
            Arc::clone(&self.engine),
            self.bans.clone(),
            Arc::clone(&self.stats),
            Arc::clone(&self.feed),
        );
        ai.runtime().spawn(async move {
            let judgement = pending.await;
            let counter = match &judgement {
                crate::ai::Judgement::Block(_) => &stats.ai_block,
                crate::ai::Judgement::Allow => &stats.ai_allow,
                crate::ai::Judgement::Unsure(_) => &stats.ai_unsure,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let decision = engine
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .ai_verdict(now, client, judgement.opinion());
            if matches!(decision, Decision::Ban { .. }) {
                let reason = order_ban(decision, &bans, &stats, &engine, feed.get());
                info!(%client, %reason, "the AI judged the client hostile");
            }
        });
    }
}

/// A request the tap marked with evasion signs is a protocol finding of its own (a block, so a
/// strike on a verified flow), unless the validator already blocks it.
fn evasion_hint(evasion: Evasion, hint: Option<ValidatorHint>) -> Option<ValidatorHint> {
    if evasion.is_empty() || hint.as_ref().is_some_and(|h| h.block) {
        return hint;
    }
    Some(ValidatorHint {
        block: true,
        triage: false,
        score: hint.map_or(0, |h| h.score),
        category: "protocol".to_owned(),
    })
}

impl Judge {
    /// Bans `client` by address for `ttl` on a rule the shell applies itself (the tap's quota
    /// overruns, [`crate::engine::Rule::QuotaOverrun`]), through the engine (allowlist,
    /// protected addresses, shadow mode) and the ban queue like its own bans. The reason for
    /// the log, or `None` when no ban was ordered (allowlisted, already banned, protected).
    pub fn order_shell_ban(
        &self,
        now: Duration,
        client: std::net::IpAddr,
        rule: crate::engine::Rule,
        reason: &str,
        ttl: Duration,
    ) -> Option<String> {
        let decision = self.engine().shell_ban(now, client, rule, reason, ttl);
        match decision {
            Decision::Ban { .. } => Some(self.order_ban(decision)),
            Decision::Block { reason, .. } => {
                info!(%client, %reason, "not banned");
                None
            }
            _ => None,
        }
    }

    fn order_ban(&self, decision: Decision) -> String {
        order_ban(
            decision,
            &self.bans,
            &self.stats,
            &self.engine,
            self.feed.get(),
        )
    }

    /// Offers shadow-mode bans to `feed` (pushed to the CrowdSec LAPI as simulated).
    pub fn set_feed(&self, feed: crate::crowdsec::machine::Feed) {
        let _ = self.feed.set(feed);
    }
}

/// Queues a ban decision for the daemon (or only counts it in shadow mode); returns the reason
/// for the log. Anything but a ban is ignored. An order the full queue cannot take is reported
/// to the engine as failed, so the client's next request orders it again.
fn order_ban(
    decision: Decision,
    bans: &SyncSender<Box<BanOrder>>,
    s: &JudgeStats,
    engine: &Mutex<Engine>,
    feed: Option<&crate::crowdsec::machine::Feed>,
) -> String {
    let Decision::Ban {
        target,
        user,
        ttl,
        reason,
        evidence,
        shadow,
        ticket,
        retry,
    } = decision
    else {
        return String::new();
    };
    if shadow {
        s.bans_shadow.fetch_add(1, Ordering::Relaxed);
        info!(%target, ttl = %crate::clock::format_duration(ttl), %reason, "shadow mode: would ban");
        if let Some(feed) = feed {
            feed.offer_pending(crate::crowdsec::machine::Pending {
                target,
                ends_at: Some(
                    crate::clock::now_ms()
                        .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
                ),
                reason: reason.clone(),
                origin: Origin::Engine,
                evidence: Some(*evidence),
                simulated: true,
                at_ms: crate::clock::now_ms(),
            });
        }
        return format!("would ban (shadow mode): {reason}");
    }
    if retry {
        s.bans_retried.fetch_add(1, Ordering::Relaxed);
        info!(%target, "ban ordered again: the last order was dropped, failed or not answered");
    }
    let order = Box::new(BanOrder {
        request: BanRequest {
            target,
            ttl: Some(ttl),
            reason: reason.clone(),
            origin: Origin::Engine,
            force: false,
            evidence: Some(*evidence),
            user,
        },
        ticket,
    });
    match bans.try_send(order) {
        Ok(()) => {
            s.bans_ordered.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(order) | TrySendError::Disconnected(order)) => {
            s.bans_dropped.fetch_add(1, Ordering::Relaxed);
            warn!(%target, "ban queue full: order dropped (given again on the client's next request)");
            engine
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .ban_settled(&order.ticket, BanOutcome::Failed);
        }
    }
    format!("banned: {reason}")
}

#[cfg(test)]
mod tests;
