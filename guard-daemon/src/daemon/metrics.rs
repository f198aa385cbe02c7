//! `guard run`'s part of `/metrics`: binds `[metrics] listen` and gathers each scrape's
//! [`Snapshot`] from the counters the daemon keeps anyway (those `guard stats` shows).
//!
//! A scrape asks the ban owner for one short read (the XDP program's per-CPU counters, summed;
//! the maps' fill; the ban counts by kind), each O(1) in the number of bans: the counts are kept
//! as bans are written, never counted per scrape. Everything else is relaxed atomics or a lock
//! held to copy a few numbers.
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use guard_common::{STAT_COUNT, STAT_NAMES};
use prometheus_client::registry::Unit;
use tokio::task::JoinHandle;
use tracing::warn;

use super::Shared;
use crate::metrics::{Family, Gather, HistogramFamily, Labels, Snapshot, label};
use crate::pipeline::Pipeline;
use crate::store::codec::{BAN_KIND_ORIGINS, BAN_KINDS, BAN_SCOPES};
use crate::validate::Category;

/// Binds `metrics.listen` and serves `/metrics` until `stop` turns true (an address that cannot
/// be bound fails the start).
pub(super) async fn start(
    shared: &Arc<Shared>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(addr) = shared.config.metrics.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint (metrics.listen) on {addr}"))?;
    let gather: Gather = {
        let shared = Arc::clone(shared);
        Arc::new(move || snapshot(&shared))
    };
    let mut stop = stop.clone();
    Ok(Some(tokio::spawn(crate::metrics::serve(
        listener,
        gather,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ))))
}

/// What the XDP program and the ban owner hold, read in one visit to the owner.
struct OwnerRead {
    packets: [u64; STAT_COUNT as usize],
    dense_blocks: usize,
    dense_refused: u64,
    fill: Vec<crate::xdp::MapFill>,
    kinds: [u64; BAN_KINDS],
}

/// The labels of each XDP statistic slot: (action, reason); `None` for a slot that is not a
/// packet verdict.
fn xdp_labels(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "passed" => ("pass", "clean"),
        "dropped_ban_exact" => ("drop", "ban_address"),
        "dropped_ban_cidr" => ("drop", "ban_range"),
        "dropped_rate" => ("drop", "rate"),
        "malformed" => ("pass", "malformed"),
        "non_ip" => ("pass", "non_ip"),
        "allowlisted" => ("pass", "allowlisted"),
        _ => return None,
    })
}

/// One scrape's numbers.
#[expect(
    clippy::too_many_lines,
    reason = "one block per family, in the order of the README's list"
)]
fn snapshot(shared: &Shared) -> Snapshot {
    let mut families = Vec::new();
    let read = shared.bans.read(|bans| {
        let x = bans.xdp();
        let (dense_blocks, dense_refused) = x.dense();
        Ok::<_, crate::bans::BanError>(OwnerRead {
            packets: x.stats()?,
            dense_blocks,
            dense_refused,
            fill: x.fill(),
            kinds: bans.store().ban_kinds()?,
        })
    });
    match read {
        Ok(Ok(r)) => {
            let mut packets = Family::counter(
                "xdp_packets",
                "Packets the XDP program saw, by what it did (pass, drop) and why.",
            );
            let mut other = Family::counter(
                "xdp_rate_events_lost",
                "Over-rate events the XDP program could not report (its ring buffer was full).",
            );
            for (name, v) in STAT_NAMES.iter().zip(r.packets) {
                match xdp_labels(name) {
                    Some((action, reason)) => {
                        packets.push(vec![label("action", action), label("reason", reason)], v);
                    }
                    None => other.push(Vec::new(), v),
                }
            }
            families.push(packets);
            families.push(other);
            families.push(
                Family::gauge(
                    "xdp_dense_blocks",
                    "Dense blocks (ranges held as one bitmap) in the XDP maps.",
                )
                .value(r.dense_blocks as u64),
            );
            families.push(
                Family::counter(
                    "xdp_dense_blocks_refused",
                    "Dense blocks refused because their map was full.",
                )
                .value(r.dense_refused),
            );
            let mut entries = Family::gauge(
                "map_entries",
                "Entries in each ban and allowlist map of the XDP program.",
            );
            let mut capacity = Family::gauge(
                "map_capacity",
                "Capacity of each ban and allowlist map of the XDP program.",
            );
            for f in &r.fill {
                let map: Cow<'static, str> = f.map.to_ascii_lowercase().replace(' ', "_").into();
                entries.push(vec![("map", map.clone())], u64::from(f.entries));
                capacity.push(vec![("map", map)], u64::from(f.capacity));
            }
            families.push(entries);
            families.push(capacity);
            let mut active = Family::gauge(
                "bans_active",
                "Bans in force, by scope (address, range, user) and by who made them.",
            );
            for (i, n) in r.kinds.iter().enumerate() {
                let scope = BAN_SCOPES[i / BAN_KIND_ORIGINS.len()];
                let origin = BAN_KIND_ORIGINS[i % BAN_KIND_ORIGINS.len()].name();
                active.push(vec![label("scope", scope), label("origin", origin)], *n);
            }
            // User bans have no origin in the lookup the requests read.
            active.push(
                vec![label("scope", "user"), label("origin", "any")],
                shared.bans.users().len() as u64,
            );
            families.push(active);
        }
        Ok(Err(e)) => warn!("metrics: reading the XDP counters: {e}"),
        Err(e) => warn!("metrics: asking the ban owner: {e}"),
    }
    families.push(
        Family::counter("bans_expired", "Bans ended by expiry since start.")
            .value(shared.bans.expired()),
    );
    let c = &shared.counters;
    families.push(
        Family::counter(
            "xdp_rate_events",
            "Over-rate events read from the XDP program.",
        )
        .value(c.rate_events.load(Ordering::Relaxed)),
    );
    let mut rate_bans = Family::counter(
        "rate_bans",
        "Over-rate sources banned, and those not banned because no handshake proved them.",
    );
    rate_bans.push(
        vec![label("outcome", "banned")],
        c.rate_bans.load(Ordering::Relaxed),
    );
    rate_bans.push(
        vec![label("outcome", "unverified")],
        c.rate_bans_unverified.load(Ordering::Relaxed),
    );
    families.push(rate_bans);

    tap_families(shared, &mut families);
    request_families(shared, &mut families);
    judge_families(shared, &mut families);

    let w = shared.writer.counters();
    let mut logs = Family::counter(
        "log_records",
        "Request log records written, and those dropped because the writer's queue was full.",
    );
    logs.push(
        vec![label("outcome", "written")],
        w.written.load(Ordering::Relaxed),
    );
    logs.push(
        vec![label("outcome", "dropped")],
        w.dropped.load(Ordering::Relaxed),
    );
    families.push(logs);
    families.push(
        Family::counter("control_requests", "Requests served on the control socket.")
            .value(c.control_requests.load(Ordering::Relaxed)),
    );

    let mut histograms = Vec::new();
    if let Some(p) = shared.proxy.as_deref() {
        histograms.push(HistogramFamily {
            name: "proxy_request_duration",
            help: "Time from a request's head to its response's head in the reverse proxy.",
            unit: Some(Unit::Seconds),
            value: p.latency.snapshot(),
        });
    }
    Snapshot {
        families,
        histograms,
    }
}

/// The tap's fields that hold a level now (gauges); every other numeric field counts up.
const TAP_GAUGES: [&str; 3] = ["flows_open", "ooo_buffered", "held_bytes"];

/// The capture and tap counters of each interface; every numeric field of the tap's counters
/// under its own name (`guard_tap_<field>`).
fn tap_families(shared: &Shared, families: &mut Vec<Family>) {
    let stats = shared
        .pipeline()
        .as_deref()
        .map(Pipeline::stats)
        .unwrap_or_default();
    let iface = |s: &crate::pipeline::PipelineStats| -> Labels {
        vec![("interface", Cow::Owned(s.interface.clone()))]
    };
    let mut captured = Family::counter(
        "capture_packets",
        "Packets the capture socket's filter passed to guard.",
    );
    let mut drops = Family::counter(
        "capture_drops",
        "Packets the kernel dropped because the capture ring was full.",
    );
    let mut restarts = Family::counter(
        "capture_restarts",
        "Times a capture thread panicked and was restarted.",
    );
    let mut tap: std::collections::BTreeMap<String, Family> = std::collections::BTreeMap::new();
    for s in &stats {
        captured.push(iface(s), s.capture.packets);
        drops.push(iface(s), s.capture.drops);
        restarts.push(iface(s), s.capture_restarts);
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&s.tap) else {
            continue;
        };
        for (field, v) in fields {
            let Some(v) = v.as_u64() else { continue };
            let family = tap.entry(field.clone()).or_insert_with(|| {
                let help = format!("The HTTP tap's `{field}` (see `guard stats --json`).");
                if TAP_GAUGES.contains(&field.as_str()) {
                    Family::gauge(format!("tap_{field}"), help)
                } else {
                    Family::counter(format!("tap_{field}"), help)
                }
            });
            family.push(iface(s), v);
        }
    }
    families.extend([captured, drops, restarts]);
    families.extend(tap.into_values());
}

/// Requests by mode (tap, inline) and verdict (allowed, blocked, limited).
fn request_families(shared: &Shared, families: &mut Vec<Family>) {
    let mut requests = Family::counter(
        "requests",
        "HTTP requests judged, by mode (tap: seen on the wire; inline: proxy and forward-auth) \
         and verdict. A tap verdict is what guard would have answered.",
    );
    let stats = shared
        .pipeline()
        .as_deref()
        .map(Pipeline::stats)
        .unwrap_or_default();
    let (seen, blocked) = stats
        .iter()
        .fold((0, 0), |(r, b), s| (r + s.requests, b + s.blocked));
    requests.push(
        vec![label("mode", "tap"), label("verdict", "allowed")],
        seen.saturating_sub(blocked),
    );
    requests.push(
        vec![label("mode", "tap"), label("verdict", "blocked")],
        blocked,
    );
    let mut quota = Family::counter(
        "quota_refusals",
        "Requests refused by a plan quota, by plan.",
    );
    if let Some(g) = shared.inline.as_deref() {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (refused, limited) = (r(&g.stats.refused), r(&g.stats.limited));
        requests.push(
            vec![label("mode", "inline"), label("verdict", "allowed")],
            r(&g.stats.passed),
        );
        requests.push(
            vec![label("mode", "inline"), label("verdict", "blocked")],
            refused.saturating_sub(limited),
        );
        requests.push(
            vec![label("mode", "inline"), label("verdict", "limited")],
            limited,
        );
        if let Some(q) = g.quotas() {
            for (plan, n) in q.stats.refusals() {
                quota.push(vec![("plan", Cow::Owned(plan))], n);
            }
        }
    }
    families.push(requests);
    families.push(quota);
}

/// The validator's findings, the engine's decisions, ban orders and the AI's calls.
fn judge_families(shared: &Shared, families: &mut Vec<Family>) {
    let judge = &shared.judge;
    let mut findings = Family::counter(
        "validator_findings",
        "Requests the validator blocked or sent to triage, by the category of their strongest \
         finding.",
    );
    for c in Category::ALL {
        let f = &judge.findings;
        findings.push(
            vec![label("category", c.name()), label("action", "block")],
            f.block[c.index()].load(Ordering::Relaxed),
        );
        findings.push(
            vec![label("category", c.name()), label("action", "triage")],
            f.triage[c.index()].load(Ordering::Relaxed),
        );
    }
    families.push(findings);

    let e = judge.engine_stats();
    let mut decisions = Family::counter(
        "engine_decisions",
        "The behaviour engine's decisions on requests and clients.",
    );
    for (decision, v) in [
        ("allow", e.allowed),
        ("block", e.blocked),
        ("ban", e.bans),
        ("shadow_ban", e.shadow_bans),
        ("triage", e.triages),
        ("triage_suppressed", e.triages_suppressed),
        ("already_banned", e.banned_requests),
        ("allowlisted", e.allowlisted),
    ] {
        families_push(&mut decisions, "decision", decision, v);
    }
    families.push(decisions);
    let mut rules = Family::counter("engine_rules", "Times each engine rule fired.");
    for (rule, v) in &e.rules {
        rules.push(vec![label("rule", rule)], *v);
    }
    families.push(rules);
    families.push(
        Family::gauge("engine_clients", "Clients the engine holds state for.").value(e.clients),
    );

    let s = &judge.stats;
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut orders = Family::counter(
        "ban_orders",
        "Ban orders of the engine, by what became of them.",
    );
    for (outcome, v) in [
        ("ordered", r(&s.bans_ordered)),
        ("confirmed", r(&s.bans_confirmed)),
        ("failed", r(&s.bans_failed)),
        ("refused", r(&s.bans_refused)),
        ("dropped", r(&s.bans_dropped)),
        ("retried", r(&s.bans_retried)),
        ("shadow", r(&s.bans_shadow)),
    ] {
        families_push(&mut orders, "outcome", outcome, v);
    }
    families.push(orders);

    let mut ai = Family::counter(
        "ai_calls",
        "AI triage requests by outcome: answered, failed (timeout, error, unusable answer), \
         served from the cache, or skipped (queue full, budget spent, breaker open).",
    );
    if let Some(a) = judge.ai_stats() {
        for (outcome, v) in [
            ("answered", a.answered),
            ("failed", a.failed),
            ("cache_hit", a.cache_hits),
            ("skipped_queue_full", a.skipped_queue_full),
            ("skipped_budget", a.skipped_budget),
            ("skipped_breaker", a.skipped_breaker),
        ] {
            families_push(&mut ai, "outcome", outcome, v);
        }
    }
    families.push(ai);
    let mut verdicts = Family::counter("ai_verdicts", "The AI's verdicts on triaged clients.");
    for (verdict, v) in [
        ("block", r(&s.ai_block)),
        ("allow", r(&s.ai_allow)),
        ("unsure", r(&s.ai_unsure)),
    ] {
        families_push(&mut verdicts, "verdict", verdict, v);
    }
    families.push(verdicts);
}

fn families_push(f: &mut Family, name: &'static str, value: &'static str, v: u64) {
    f.push(vec![label(name, value)], v);
}
