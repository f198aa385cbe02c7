//! Answers to the control socket's requests, on the daemon's shared state.
use std::sync::atomic::Ordering;
use std::time::Duration;

use guard_common::STAT_NAMES;
use tracing::info;

use super::Shared;
use crate::bans::{BanError, BanFilter, BanRequest, Origin, UserBanRequest};
use crate::control::proto::{MapFill, error_chain};
use crate::control::{
    DaemonCounters, Imported, Interface, LogCounters, LogsRequest, Removed, Request, Response,
    Stats, Status,
};
use crate::net::Net;
use crate::pipeline::Pipeline;
use crate::store::logs::LogQuery;

pub(super) fn handle(shared: &Shared, req: Request) -> Response {
    let result = match req {
        Request::BanAdd {
            target,
            ttl_secs,
            reason,
            force,
            extend,
        } => super::readd::ban_add(
            shared,
            BanRequest {
                target: target.unmapped(),
                ttl: ttl_secs.map(Duration::from_secs),
                reason: reason.unwrap_or_default(),
                origin: Origin::Cli,
                force,
                evidence: None,
                user: None,
            },
            extend,
        ),
        Request::BanRm {
            target,
            keep_history,
        } => unban(shared, target.unmapped(), keep_history),
        Request::BanRmMatching {
            filter,
            keep_history,
        } => unban_matching(shared, filter, keep_history),
        Request::BanLs { filter } => shared.bans.list(unmapped(filter)).map(Response::ok),
        Request::BanImport { entries, force } => {
            let reqs = entries
                .into_iter()
                .map(|e| BanRequest {
                    target: e.target.unmapped(),
                    ttl: e.ttl_secs.map(Duration::from_secs),
                    reason: e.reason.unwrap_or_else(|| "imported".into()),
                    origin: Origin::Import,
                    force,
                    evidence: None,
                    user: None,
                })
                .collect();
            shared.bans.import(reqs).map(|results| {
                let banned = results.iter().filter(|r| r.is_ok()).count();
                let refused: Vec<String> = results
                    .into_iter()
                    .filter_map(Result::err)
                    .map(|e| error_chain(&e))
                    .collect();
                Response::ok(Imported { banned, refused })
            })
        }
        Request::AllowAdd { target, reason } => {
            let r = super::readd::allow_add(shared, target.unmapped(), reason.unwrap_or_default());
            sync_allowlist(shared);
            r
        }
        Request::AllowRm { target } => {
            let r = shared.bans.disallow(target.unmapped()).map(Response::ok);
            sync_allowlist(shared);
            r
        }
        Request::AllowLs => shared.bans.allows().map(Response::ok),
        Request::UserBanAdd {
            id,
            ttl_secs,
            reason,
        } => shared
            .bans
            .ban_user(UserBanRequest {
                id,
                ttl: ttl_secs.map(Duration::from_secs),
                reason: reason.unwrap_or_else(|| "manual".into()),
                origin: Origin::Cli,
                addr: None,
            })
            .map(Response::ok),
        Request::UserBanRm { id } => shared.bans.unban_user(id).map(|removed| {
            shared.judge.unbanned_user(&removed.id);
            Response::ok(removed)
        }),
        Request::UserBanLs => shared.bans.list_users().map(Response::ok),
        Request::Stats => Ok(stats(shared)),
        Request::Status => Ok(status(shared)),
        Request::Logs(q) => return logs(shared, q, false),
        Request::LogPage(q) => return logs(shared, q, true),
        Request::TapPorts { ports } => return tap_ports(shared, ports),
        req @ (Request::PlanSet { .. }
        | Request::PlanRm { .. }
        | Request::PlanLs
        | Request::QuotaShow { .. }
        | Request::QuotaReset { .. }) => return super::quotas::handle(shared, req),
        req @ (Request::Reload | Request::Mode { .. }) => {
            return super::reload::handle(shared, req);
        }
    };
    result.unwrap_or_else(|e| Response::failed(&e))
}

fn unban(shared: &Shared, target: Net, keep_history: bool) -> Result<Response, BanError> {
    shared.bans.unban(target, !keep_history).map(|removed| {
        lifted(shared, &removed, keep_history);
        Response::ok(removed)
    })
}

fn unban_matching(
    shared: &Shared,
    filter: BanFilter,
    keep_history: bool,
) -> Result<Response, BanError> {
    shared
        .bans
        .unban_matching(unmapped(filter), !keep_history)
        .map(|views| {
            for view in &views {
                lifted(shared, view, keep_history);
            }
            Response::ok(Removed {
                removed: views.len(),
            })
        })
}

/// The filter with IPv4-mapped IPv6 addresses written as IPv4 (see [`Net::unmapped`]).
fn unmapped(mut filter: BanFilter) -> BanFilter {
    filter.ip = filter.ip.map(|ip| Net::host(ip).unmapped().addr());
    filter.range = filter.range.map(Net::unmapped);
    filter
}

/// Tells the engine a ban was lifted: the client starts afresh and an engine ban's offence is
/// forgotten, unless the operator keeps the history.
fn lifted(shared: &Shared, view: &crate::bans::BanView, keep_history: bool) {
    let offender = (view.origin == Origin::Engine)
        .then(|| view.evidence.as_ref().and_then(|e| e.client))
        .flatten();
    shared.judge.lifted(&view.addr, offender, keep_history);
}

fn sync_allowlist(shared: &Shared) {
    if let Ok(allows) = shared.bans.allows() {
        shared
            .judge
            .set_allowlist(allows.into_iter().map(|a| a.target).collect());
    }
}

fn tap_ports(shared: &Shared, ports: Option<Vec<u16>>) -> Response {
    // The pipeline's lock is let go at once: nothing here holds a lock while the owner works.
    let Some(p) = shared.pipeline() else {
        return Response::err(
            "the HTTP tap is not running (tap.http_ports was empty at start, or capture failed)",
        );
    };
    if let Some(ports) = ports {
        if ports.is_empty() || ports.contains(&0) {
            return Response::err("give at least one port, none of them 0");
        }
        let pipeline = std::sync::Arc::clone(&p);
        let changed = shared
            .bans
            .with_xdp(move |xdp| pipeline.set_ports(xdp, &ports).map(|()| ports));
        match changed {
            Ok(Ok(ports)) => info!(?ports, "HTTP tap ports changed"),
            Ok(Err(e)) => return Response::failed(&e),
            Err(e) => return Response::failed(&e),
        }
    }
    Response::ok(p.ports())
}

/// `logs`: the records, or with `page` a [`crate::store::logs::LogPage`] that also counts the
/// older matches.
fn logs(shared: &Shared, q: LogsRequest, page: bool) -> Response {
    let status = match q.status.as_deref().map(str::parse).transpose() {
        Ok(s) => s,
        Err(e) => return Response::failed(&e),
    };
    let query = LogQuery {
        since: q.since_ns.map(Duration::from_nanos),
        until: q.until_ns.map(Duration::from_nanos),
        ip: q.ip.map(Net::unmapped),
        path_prefix: q.path_prefix,
        status,
        blocked: q.blocked.then_some(true),
        limit: q.limit,
    };
    let answer = if page {
        shared.logs.query_page(&query).map(Response::ok)
    } else {
        shared.logs.query(&query).map(Response::ok)
    };
    answer.unwrap_or_else(|e| Response::failed(&e))
}

fn stats(shared: &Shared) -> Response {
    // Read on the owner thread; no lock is held here while it answers.
    let read = shared.bans.read(|bans| {
        let x = bans.xdp();
        x.stats().map(|values| (values, x.dense()))
    });
    let mut xdp = std::collections::BTreeMap::new();
    match read {
        Ok(Ok((values, (blocks, full)))) => {
            for (name, v) in STAT_NAMES.iter().zip(values) {
                xdp.insert((*name).to_owned(), v);
            }
            xdp.insert("dense_blocks".into(), blocks as u64);
            xdp.insert("dense_blocks_refused".into(), full);
        }
        Ok(Err(e)) => return Response::failed(&e),
        Err(e) => return Response::failed(&e),
    }
    let c = &shared.counters;
    let tap = shared
        .pipeline()
        .as_deref()
        .map(Pipeline::stats)
        .unwrap_or_default();
    let w = shared.writer.counters();
    Response::ok(Box::new(Stats {
        xdp,
        tap: serde_json::to_value(tap).unwrap_or_default(),
        engine: shared.judge.stats.snapshot(),
        engine_core: serde_json::to_value(shared.judge.engine_stats()).unwrap_or_default(),
        ai: shared.judge.ai_stats(),
        logs: LogCounters {
            written: w.written.load(Ordering::Relaxed),
            dropped: w.dropped.load(Ordering::Relaxed),
            failed_batches: w.failed_batches.load(Ordering::Relaxed),
            stored: shared.logs.len(),
            truncated: w.truncated.load(Ordering::Relaxed),
            size_on_disk: shared.logs.size_on_disk().unwrap_or(0),
            live_bytes: shared.logs.live_bytes(),
            pruned: shared.logs.pruned_records(),
            expired: shared.logs.expired_records(),
            rebuilds: shared.logs.rebuilds(),
        },
        daemon: DaemonCounters {
            rate_events: c.rate_events.load(Ordering::Relaxed),
            rate_bans: c.rate_bans.load(Ordering::Relaxed),
            rate_bans_unverified: c.rate_bans_unverified.load(Ordering::Relaxed),
            bans_expired: shared.bans.expired(),
            control_requests: c.control_requests.load(Ordering::Relaxed),
        },
        inline: shared.inline.as_ref().map(|g| g.stats_json()),
        quotas: shared.quotas.as_ref().map(|q| {
            let mut v = q.stats_json();
            if let (Some(map), Some(t)) = (v.as_object_mut(), &shared.tap_quotas) {
                map.insert(
                    "tap".into(),
                    serde_json::to_value(&t.stats).unwrap_or_default(),
                );
            }
            v
        }),
        proxy: shared
            .proxy
            .as_deref()
            .map(crate::proxy::ProxyStats::snapshot),
    }))
}

fn status(shared: &Shared) -> Response {
    let cfg = &shared.config;
    let mut status = Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_secs: shared.started.elapsed().as_secs(),
        state_dir: cfg.daemon.state_dir.clone(),
        socket: cfg.daemon.socket.clone(),
        rate_limit_pps: cfg.xdp.rate_limit_pps,
        keep_attached: cfg.xdp.keep_attached,
        mode: super::reload::mode_name(shared.judge.mode()).to_owned(),
        mode_set_by_command: matches!(shared.store.mode_override(), Ok(Some(_))),
        inline_mode: shared.inline.as_ref().map(|_| {
            match cfg.proxy.mode {
                crate::config::InlineMode::Enforce => "enforce",
                crate::config::InlineMode::Shadow => "shadow",
            }
            .to_owned()
        }),
        crowdsec: shared.crowdsec.as_ref().map(|c| {
            c.status(
                cfg.crowdsec.lapi_url.as_deref().unwrap_or(""),
                cfg.crowdsec.machine_id.as_deref(),
            )
        }),
        ..Status::default()
    };
    // What the ban owner holds is read on its thread, into the reply.
    let read = shared.bans.read(move |bans| {
        let x = bans.xdp();
        status.interfaces = x
            .interfaces()
            .iter()
            .map(|(name, mode)| Interface {
                name: name.clone(),
                mode: (*mode).to_owned(),
            })
            .collect();
        x.pin_dir().clone_into(&mut status.pin_dir);
        status.bans = bans.count().unwrap_or(0);
        status.allowlist = bans.allows().map_or(0, |l| l.len());
        status.user_bans = bans.store().user_ban_count();
        status.protected = bans.protected().entries().to_vec();
        status.protect_refusals = bans.protect_refusals();
        status.maps = x
            .fill()
            .into_iter()
            .map(|f| MapFill {
                map: f.map.to_owned(),
                entries: f.entries,
                capacity: f.capacity,
            })
            .collect();
        status.skipped_at_start = x.skipped();
        status.bad_ban_records = bans.store().bad_records();
        status
    });
    match read {
        Ok(status) => Response::ok(Box::new(status)),
        Err(e) => Response::failed(&e),
    }
}
