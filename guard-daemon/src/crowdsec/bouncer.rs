//! The bouncer: polls the LAPI's decision stream and makes its decisions bans through the ban
//! owner. The first poll after start, and the first after any failure, asks for the whole list
//! (`startup=true`) and brings the bans of origin `crowdsec` in line with it (lifting those the
//! LAPI no longer holds, deleted while guard or the LAPI was down); the others ask for what
//! changed (`startup=false`). A target keeps its ban while any decision for it is live.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::decision::{self, Ban, Read, Stream, Target, Widest};
use super::{CrowdsecConfig, CrowdsecError, CrowdsecStats, Secret, body_within, http_client};
use crate::bans::{
    BanError, BanFilter, BanHandle, BanRequest, Command, Lift, Ordered, Origin, UserBanRequest,
};
use crate::clock::now_ms;

/// Largest stream answer read: a full list of a LAPI fed by the central API holds tens of
/// thousands of decisions, about 200 bytes each.
const MAX_STREAM: usize = 64 * 1024 * 1024;

/// The live decisions by target, as the stream has told them (a target may have several).
#[derive(Debug, Default)]
pub struct Live {
    by_target: HashMap<Target, BTreeSet<i64>>,
}

impl Live {
    /// Records decision `id` for `target`.
    pub fn add(&mut self, target: &Target, id: i64) {
        self.by_target.entry(target.clone()).or_default().insert(id);
    }

    /// Forgets decision `id`; `true` when no decision for `target` is left (its ban is lifted).
    pub fn remove(&mut self, target: &Target, id: i64) -> bool {
        match self.by_target.get_mut(target) {
            Some(ids) => {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_target.remove(target);
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    /// Whether any decision for `target` is live.
    #[must_use]
    pub fn holds(&self, target: &Target) -> bool {
        self.by_target.contains_key(target)
    }
}

/// Polls the LAPI and applies its decisions until the task is aborted.
pub struct Bouncer {
    cfg: CrowdsecConfig,
    key: Secret,
    http: reqwest::Client,
    bans: BanHandle,
    stats: Arc<CrowdsecStats>,
    live: Live,
}

impl Bouncer {
    pub fn new(
        cfg: CrowdsecConfig,
        key: Secret,
        bans: BanHandle,
        stats: Arc<CrowdsecStats>,
    ) -> Result<Self, CrowdsecError> {
        Ok(Self {
            http: http_client(&cfg)?,
            cfg,
            key,
            bans,
            stats,
            live: Live::default(),
        })
    }

    fn widest(&self) -> Widest {
        Widest {
            v4: self.cfg.min_prefix_v4,
            v6: self.cfg.min_prefix_v6,
        }
    }

    /// Polls until aborted: every `poll_interval`, or with a doubling wait (up to `retry_max`)
    /// while the LAPI fails.
    pub async fn run(mut self) {
        let mut full = true;
        let mut failures = 0u32;
        let mut wait = Duration::ZERO;
        let url = self.cfg.lapi_url.clone().unwrap_or_default();
        info!(lapi = %url, every = ?self.cfg.poll_interval, "CrowdSec bouncer started");
        loop {
            tokio::time::sleep(wait).await;
            self.stats.polls.fetch_add(1, Ordering::Relaxed);
            match self.poll(full).await {
                Ok(stream) => {
                    let (bans, stats) = (self.bans.clone(), Arc::clone(&self.stats));
                    let mut live = std::mem::take(&mut self.live);
                    let applied = tokio::task::spawn_blocking(move || {
                        apply(&mut live, &bans, &stats, stream, full);
                        live
                    })
                    .await;
                    match applied {
                        Ok(live) => self.live = live,
                        Err(e) => {
                            warn!("applying CrowdSec decisions failed: {e}; resyncing");
                            full = true;
                            wait = self.cfg.poll_interval;
                            continue;
                        }
                    }
                    if failures > 0 {
                        info!(lapi = %url, failures, "the LAPI answers again: resynced");
                    }
                    if full {
                        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    self.stats.synced(now_ms());
                    full = false;
                    failures = 0;
                    wait = self.cfg.poll_interval;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    wait = self
                        .cfg
                        .poll_interval
                        .saturating_mul(1 << failures.min(16).saturating_sub(1))
                        .min(self.cfg.retry_max);
                    if failures == 1 {
                        warn!(lapi = %url, "CrowdSec LAPI poll failed (bans stay enforced; retrying with backoff): {e}");
                    } else {
                        debug!(lapi = %url, failures, "CrowdSec LAPI poll failed again: {e}");
                    }
                    self.stats.failed(e.to_string());
                    full = true;
                }
            }
        }
    }

    async fn poll(&self, startup: bool) -> Result<Stream, CrowdsecError> {
        let url = self.cfg.url("/v1/decisions/stream");
        let resp = self
            .http
            .get(&url)
            .query(&[
                ("startup", if startup { "true" } else { "false" }),
                ("scopes", "ip,range,username"),
            ])
            .header("X-Api-Key", self.key.expose())
            .send()
            .await
            .map_err(|source| CrowdsecError::Unreachable { source })?;
        if !resp.status().is_success() {
            return Err(CrowdsecError::Status {
                what: "the decision stream",
                status: resp.status().as_u16(),
            });
        }
        let body = body_within(resp, "the decision stream", MAX_STREAM).await?;
        Ok(decision::parse_stream(&body, self.widest())?)
    }
}

/// What the LAPI holds for a target, across its decisions: the longest.
fn longest(bans: Vec<Ban>) -> BTreeMap<Target, Ban> {
    let mut out: BTreeMap<Target, Ban> = BTreeMap::new();
    for b in bans {
        match out.get(&b.target) {
            Some(have) if have.ttl >= b.ttl => {}
            _ => {
                out.insert(b.target.clone(), b);
            }
        }
    }
    out
}

/// Sorts decisions read into bans to make and counts the rest.
fn usable(reads: Vec<Read>, stats: &CrowdsecStats) -> Vec<Ban> {
    let mut out = Vec::with_capacity(reads.len());
    for r in reads {
        match r {
            Read::Ban(b) if b.ttl.is_zero() => {
                stats.refused_invalid.fetch_add(1, Ordering::Relaxed);
                debug!(target = %b.target, id = b.id, "CrowdSec decision already over: ignored");
            }
            Read::Ban(b) => out.push(b),
            Read::OtherType(kind) => {
                stats.ignored_type.fetch_add(1, Ordering::Relaxed);
                debug!(kind = %kind.escape_debug(), "CrowdSec decision of another type than ban: ignored");
            }
            Read::Invalid(why) => {
                stats.refused_invalid.fetch_add(1, Ordering::Relaxed);
                warn!("CrowdSec decision refused: {}", why.escape_debug());
            }
        }
    }
    out
}

/// Applies one stream answer (blocking: it waits for the owner). A full answer
/// (`startup=true`) replaces what is live and lifts the `crowdsec` bans it no longer holds.
fn apply(live: &mut Live, bans: &BanHandle, stats: &CrowdsecStats, stream: Stream, full: bool) {
    let new = usable(stream.new, stats);
    if full {
        *live = Live::default();
        for b in &new {
            live.add(&b.target, b.id);
        }
        let want = longest(new);
        enforce(bans, stats, want.values());
        lift_stale(live, bans, stats);
        return;
    }
    // Deletions first: a decision replaced by a new one in the same answer stays enforced.
    for gone in stream.deleted {
        let Read::Ban(b) = gone else { continue };
        if live.remove(&b.target, b.id) {
            lift(bans, stats, &b.target);
        }
    }
    for b in &new {
        live.add(&b.target, b.id);
    }
    let want = longest(new);
    enforce(bans, stats, want.values());
}

fn lift(bans: &BanHandle, stats: &CrowdsecStats, target: &Target) {
    let what = match target {
        Target::Net(n) => Lift::Net(*n),
        Target::User(u) => Lift::User(u.clone()),
    };
    match bans.lift_from(what, Origin::Crowdsec) {
        Ok(true) => {
            stats.bans_lifted.fetch_add(1, Ordering::Relaxed);
            info!(%target, "CrowdSec decision deleted: ban lifted");
        }
        Ok(false) => {}
        Err(e) => warn!(%target, "lifting the ban of a deleted CrowdSec decision: {e}"),
    }
}

/// After a full list: lifts every `crowdsec` ban (address or user) the LAPI no longer holds.
fn lift_stale(live: &Live, bans: &BanHandle, stats: &CrowdsecStats) {
    let filter = BanFilter {
        origin: Some(Origin::Crowdsec),
        ..BanFilter::default()
    };
    match bans.list(filter) {
        Ok(views) => {
            for v in views {
                let t = Target::Net(v.addr);
                if !live.holds(&t) {
                    lift(bans, stats, &t);
                }
            }
        }
        Err(e) => warn!("listing the CrowdSec bans to resync: {e}"),
    }
    match bans.list_users() {
        Ok(users) => {
            for u in users.into_iter().filter(|u| u.origin == Origin::Crowdsec) {
                let t = Target::User(u.id);
                if !live.holds(&t) {
                    lift(bans, stats, &t);
                }
            }
        }
        Err(e) => warn!("listing the CrowdSec user bans to resync: {e}"),
    }
}

/// Orders the bans: every address ban is sent first, then the answers are read, so a long
/// list shares the owner's flushes.
fn enforce<'a>(bans: &BanHandle, stats: &CrowdsecStats, want: impl Iterator<Item = &'a Ban>) {
    let mut waiting = Vec::new();
    for b in want {
        let reason = if b.scenario.is_empty() {
            "crowdsec".to_owned()
        } else {
            format!("crowdsec: {}", b.scenario)
        };
        match &b.target {
            Target::Net(net) => {
                let req = BanRequest {
                    target: *net,
                    ttl: Some(b.ttl),
                    reason,
                    origin: Origin::Crowdsec,
                    force: false,
                    evidence: None,
                    user: None,
                };
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                if bans.send(Command::Order(req, tx)) {
                    waiting.push((*net, rx));
                } else {
                    stats.ban_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            Target::User(id) => {
                let req = UserBanRequest {
                    id: id.clone(),
                    ttl: Some(b.ttl),
                    reason,
                    origin: Origin::Crowdsec,
                    addr: None,
                };
                match bans.order_user(req) {
                    Ok(Some(_)) => {
                        stats.user_bans_added.fetch_add(1, Ordering::Relaxed);
                        info!(user = %id.escape_debug(), ttl = ?b.ttl, "user banned by a CrowdSec decision");
                    }
                    Ok(None) => {
                        stats.already_banned.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.ban_failures.fetch_add(1, Ordering::Relaxed);
                        warn!(user = %id.escape_debug(), "CrowdSec user ban failed: {e}");
                    }
                }
            }
        }
    }
    for (net, rx) in waiting {
        match rx.recv().unwrap_or(Err(BanError::OwnerGone)) {
            Ok(Ordered::Banned(v)) => {
                stats.bans_added.fetch_add(1, Ordering::Relaxed);
                info!(target = %net, expires_at = ?v.expires_at, "banned by a CrowdSec decision");
            }
            Ok(Ordered::Already(_)) => {
                stats.already_banned.fetch_add(1, Ordering::Relaxed);
            }
            Err(BanError::Allowlisted { allow, .. }) => {
                stats.refused_allowlisted.fetch_add(1, Ordering::Relaxed);
                info!(target = %net, %allow, "CrowdSec decision not enforced: allowlisted");
            }
            // Logged with its reason by the owner.
            Err(BanError::Protected(_)) => {
                stats.refused_allowlisted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.ban_failures.fetch_add(1, Ordering::Relaxed);
                warn!(target = %net, "CrowdSec ban failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::Net(s.parse().unwrap())
    }

    #[test]
    fn a_target_stays_live_while_any_of_its_decisions_is() {
        let mut live = Live::default();
        live.add(&t("192.0.2.7"), 1);
        live.add(&t("192.0.2.7"), 2);
        assert!(
            !live.remove(&t("192.0.2.7"), 1),
            "decision 2 still holds it"
        );
        assert!(live.holds(&t("192.0.2.7")));
        assert!(live.remove(&t("192.0.2.7"), 2));
        assert!(!live.holds(&t("192.0.2.7")));
        assert!(
            live.remove(&t("192.0.2.8"), 9),
            "unknown: lifted (origin is checked)"
        );
    }

    #[test]
    fn the_longest_decision_of_a_target_wins() {
        let b = |id, secs| Ban {
            id,
            target: t("192.0.2.7"),
            ttl: Duration::from_secs(secs),
            scenario: String::new(),
        };
        let m = longest(vec![b(1, 10), b(2, 99), b(3, 5)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.values().next().map(|b| b.id), Some(2));
    }
}
