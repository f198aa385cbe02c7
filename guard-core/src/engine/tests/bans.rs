//! Bans: the allowlist, escalation for repeat offenders, evidence, shadow mode, users, the
//! bounded client table and expiry.
use std::net::IpAddr;
use std::time::Duration;

use super::super::table::ClientKey;
use super::super::{BanOutcome, Decision, EngineConfig, Mode, SecondOpinion};
use super::{Sim, ban_rule, is_ban, req};
use crate::net::Net;

/// Two backdoor probes: a ban.
fn probe_backdoors(sim: &mut Sim, client: &str) -> Decision {
    sim.send(&req(client, "/shell.php").status(404));
    sim.advance(Duration::from_secs(1));
    sim.send(&req(client, "/wso.php").status(404))
}

#[test]
fn the_allowlist_is_never_banned() {
    let mut sim = Sim::default();
    sim.engine.set_allowlist(vec![
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8:1::/48".parse().unwrap(),
    ]);
    for client in ["10.9.8.7", "2001:db8:1::5"] {
        let mut ds = vec![probe_backdoors(&mut sim, client)];
        ds.extend(sim.send_n(&req(client, "/").ua(None), 100, Duration::from_millis(10)));
        let probes: Vec<_> = (0..20)
            .map(|i| sim.send(&req(client, &format!("/x{i}/.git/config")).status(404)))
            .collect();
        ds.extend(probes);
        assert!(ds.iter().all(|d| *d == Decision::Allow), "{client}");
        let ip: IpAddr = client.parse().unwrap();
        assert_eq!(
            sim.engine.ai_verdict(sim.now, ip, SecondOpinion::Block),
            Decision::Allow
        );
    }
    // Outside the allowlist the same probes ban.
    assert!(is_ban(&probe_backdoors(&mut sim, "11.0.0.1")));
    let stats = sim.engine.stats();
    assert_eq!(stats.allowlist_refusals, 2);
    assert_eq!(stats.bans, 1);
    assert_eq!(stats.clients, 1, "allowlisted clients keep no state");
}

fn ttl_of(d: &Decision) -> Duration {
    match d {
        Decision::Ban { ttl, .. } => *ttl,
        other => panic!("not a ban: {other:?}"),
    }
}

#[test]
fn repeat_offenders_get_longer_bans_up_to_the_maximum() {
    let mut sim = Sim::default();
    let c = "192.0.2.77";
    let mut ttls = Vec::new();
    for offence in 1..=6 {
        let d = probe_backdoors(&mut sim, c);
        let Decision::Ban { evidence, .. } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(evidence.offence, Some(offence));
        ttls.push(ttl_of(&d));
        // While banned, the engine does not ban again.
        sim.advance(Duration::from_secs(1));
        assert_eq!(
            sim.send(&req(c, "/shell.php")),
            Decision::Block {
                status: 403,
                reason: "banned".into()
            }
        );
        sim.advance(ttl_of(&d));
    }
    let h = Duration::from_hours;
    assert_eq!(ttls, vec![h(1), h(4), h(16), h(64), h(168), h(168)]);
    // After the offender memory (30 days) the count starts again.
    sim.advance(Duration::from_hours(31 * 24));
    assert_eq!(ttl_of(&probe_backdoors(&mut sim, c)), h(1));
}

/// What the store kept from an earlier run: the next ban continues the escalation.
#[test]
fn restored_offenders_continue_their_escalation() {
    let mut sim = Sim::default();
    let c = "192.0.2.78";
    sim.engine.restore_offender(
        c.parse().unwrap(),
        2,
        sim.now.saturating_sub(Duration::from_hours(3)),
    );
    let d = probe_backdoors(&mut sim, c);
    let Decision::Ban { evidence, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(evidence.offence, Some(3));
    assert_eq!(ttl_of(&d), Duration::from_hours(16));
    // A record older than the offender memory counts for nothing.
    let stale = "192.0.2.79";
    sim.engine.restore_offender(
        stale.parse().unwrap(),
        5,
        sim.now.saturating_sub(Duration::from_hours(31 * 24)),
    );
    assert_eq!(
        ttl_of(&probe_backdoors(&mut sim, stale)),
        Duration::from_hours(1)
    );
}

#[test]
fn bans_carry_their_evidence_and_target_the_client() {
    let mut sim = Sim::default();
    let d = probe_backdoors(&mut sim, "2001:db8::42");
    let Decision::Ban {
        target,
        reason,
        evidence,
        shadow,
        ..
    } = &d
    else {
        panic!("{d:?}")
    };
    // An IPv6 client's ban is its /64 (`bans.ipv6_prefix`); the evidence names the address.
    assert_eq!(*target, "2001:db8::/64".parse::<Net>().unwrap());
    assert!(!shadow);
    assert!(reason.starts_with("backdoor:"), "{reason}");
    assert_eq!(evidence.rule, "backdoor");
    assert_eq!(evidence.client, Some("2001:db8::42".parse().unwrap()));
    assert_eq!(evidence.sample_paths, ["/shell.php", "/wso.php"]);
    assert_eq!(evidence.counts.map(|c| c.probe_paths_1min), Some(2));
    assert_eq!(evidence.details.hits, Some(2));
    assert_eq!(evidence.offence, Some(1));
    assert_eq!(evidence.ttl_secs, Some(3600));
    // As `guard ban ls --json` shows it: the same keys as ever, the rule's details inline.
    let json = serde_json::to_value(evidence).unwrap();
    assert_eq!(json["rule"], "backdoor");
    assert_eq!(json["client"], "2001:db8::42");
    assert_eq!(json["sample_paths"][1], "/wso.php");
    assert_eq!(json["counts"]["probe_paths_1min"], 2);
    assert_eq!(json["hits"], 2);
    assert_eq!(json["offence"], 1);
    let d = probe_backdoors(&mut sim, "192.0.2.9");
    let Decision::Ban { target, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(target.to_string(), "192.0.2.9");
    assert_eq!(target.prefix(), 32);
}

#[test]
fn shadow_mode_marks_bans_and_counts_them() {
    let cfg = EngineConfig {
        mode: Mode::Shadow,
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(&cfg);
    let d = probe_backdoors(&mut sim, "192.0.2.78");
    assert!(matches!(&d, Decision::Ban { shadow: true, .. }), "{d:?}");
    assert_eq!(ban_rule(&d).as_deref(), Some("backdoor"));
    sim.advance(Duration::from_secs(1));
    // Its next requests were never refused: they would have been.
    assert_eq!(
        sim.send(&req("192.0.2.78", "/")),
        Decision::Block {
            status: 403,
            reason: "would be banned (shadow mode)".into()
        }
    );
    let stats = sim.engine.stats();
    assert_eq!(
        (stats.shadow_bans, stats.bans, stats.banned_requests),
        (1, 0, 1)
    );
    assert_eq!(stats.rules.get("backdoor"), Some(&1));
}

#[test]
fn unbanning_clears_the_engines_ban() {
    let mut sim = Sim::default();
    assert!(is_ban(&probe_backdoors(&mut sim, "192.0.2.79")));
    sim.engine.unbanned("192.0.2.79".parse().unwrap());
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.send(&req("192.0.2.79", "/")), Decision::Allow);
}

#[test]
fn lifting_a_network_ban_clears_the_engines_bans_inside_it() {
    let mut sim = Sim::default();
    let d = probe_backdoors(&mut sim, "2001:db8:7::9");
    assert!(is_ban(&d));
    sim.advance(Duration::from_secs(1));
    assert!(matches!(
        sim.send(&req("2001:db8:7::9", "/")),
        Decision::Block { .. }
    ));
    sim.engine.unbanned_net(&target_of(&d));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.send(&req("2001:db8:7::9", "/")), Decision::Allow);
}

#[test]
fn verified_users_are_one_client_across_addresses() {
    let mut sim = Sim::default();
    let ds: Vec<_> = (0..50)
        .map(|i| {
            sim.advance(Duration::from_millis(100));
            let ip = format!("192.0.2.{}", 100 + i % 5);
            sim.send(&req(&ip, "/api/feed").user("mallory", true))
        })
        .collect();
    assert!(ds[..49].iter().all(|d| *d == Decision::Allow));
    assert!(
        matches!(ds[49], Decision::Block { status: 429, .. }),
        "{:?}",
        ds[49]
    );
    // Unverified ids are only claims: counted per address.
    let mut sim = Sim::default();
    let ds: Vec<_> = (0..50)
        .map(|i| {
            sim.advance(Duration::from_millis(100));
            let ip = format!("192.0.2.{}", 100 + i % 5);
            sim.send(&req(&ip, "/api/feed").user("mallory", false))
        })
        .collect();
    assert!(ds.iter().all(|d| *d == Decision::Allow));
    // The ban of a user names the address the request came from, and the user.
    let mut sim = Sim::default();
    sim.send(&req("192.0.2.1", "/shell.php").user("eve", true));
    let d = sim.send(&req("192.0.2.2", "/c99.php").user("eve", true));
    let Decision::Ban {
        target, evidence, ..
    } = &d
    else {
        panic!("{d:?}")
    };
    assert_eq!(target.to_string(), "192.0.2.2");
    assert_eq!(evidence.user.as_deref(), Some("eve"));
}

#[test]
fn the_client_table_is_bounded() {
    let cfg = EngineConfig {
        max_clients: 100,
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(&cfg);
    let hot = "203.0.113.1";
    for i in 0..1000u32 {
        sim.advance(Duration::from_millis(10));
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        sim.send(&req(&ip, "/"));
        sim.send(&req(hot, "/"));
    }
    let stats = sim.engine.stats();
    assert_eq!(stats.clients, 100);
    assert_eq!(stats.clients_evicted, 901);
    // The client used all along survived every sweep.
    let key = ClientKey::Addr(hot.parse().unwrap());
    assert!(sim.engine.table.get_mut(&key).is_some());
}

#[test]
fn idle_clients_expire_but_banned_ones_stay() {
    let mut sim = Sim::default();
    sim.send(&req("192.0.2.30", "/"));
    assert!(is_ban(&probe_backdoors(&mut sim, "192.0.2.31")));
    sim.advance(Duration::from_hours(25));
    sim.send(&req("192.0.2.32", "/"));
    // The ban (1 h) is over too: both idle clients go, the fresh one stays.
    drop(sim.engine.expire(sim.now));
    let stats = sim.engine.stats();
    assert_eq!((stats.clients, stats.clients_expired), (1, 2));
    let mut cfg = EngineConfig::default();
    cfg.bans.ttl = Duration::from_hours(48);
    cfg.bans.max_ttl = Duration::from_hours(48);
    let mut sim = Sim::new(&cfg);
    assert!(is_ban(&probe_backdoors(&mut sim, "192.0.2.31")));
    sim.advance(Duration::from_hours(25));
    drop(sim.engine.expire(sim.now));
    assert_eq!(sim.engine.stats().clients, 1, "still banned: kept");
}

/// A sweep in slices drops the same clients as one pass, each slice visiting at most its share
/// of the table, and hands the dropped clients back to be freed by the caller.
#[test]
fn a_sweep_in_slices_drops_every_idle_client() {
    let mut sim = Sim::default();
    for i in 0..10 {
        sim.send(&req(&format!("192.0.2.{}", 40 + i), "/"));
    }
    sim.advance(Duration::from_hours(25));
    sim.send(&req("192.0.2.99", "/"));
    let (mut from, mut slices, mut gone) = (Some(0), 0, 0);
    while let Some(at) = from {
        let (expired, next) = sim.engine.expire_slice(sim.now, at, 3);
        assert!(expired.len() <= 3);
        gone += expired.len();
        slices += 1;
        from = next;
    }
    assert_eq!((gone, slices), (10, 4), "11 slots in slices of 3");
    let stats = sim.engine.stats();
    assert_eq!((stats.clients, stats.clients_expired), (1, 10));
}

#[test]
fn offender_memory_is_bounded() {
    let cfg = EngineConfig {
        bans: super::super::EngineBansConfig {
            max_offenders: 3,
            ..super::super::EngineBansConfig::default()
        },
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(&cfg);
    for i in 1..=5 {
        assert!(is_ban(&probe_backdoors(&mut sim, &format!("192.0.2.{i}"))));
    }
    let stats = sim.engine.stats();
    assert_eq!((stats.offenders, stats.offenders_evicted), (3, 2));
    sim.advance(Duration::from_hours(2));
    // The first two were forgotten: a first offence again. The fifth is remembered.
    assert_eq!(
        ttl_of(&probe_backdoors(&mut sim, "192.0.2.1")),
        Duration::from_hours(1)
    );
    assert_eq!(
        ttl_of(&probe_backdoors(&mut sim, "192.0.2.5")),
        Duration::from_hours(4)
    );
}

fn target_of(d: &Decision) -> Net {
    match d {
        Decision::Ban { target, .. } => *target,
        other => panic!("not a ban: {other:?}"),
    }
}

#[test]
fn an_ipv6_client_is_banned_with_its_configured_prefix() {
    let mut sim = Sim::default();
    let d = probe_backdoors(&mut sim, "2001:db8:5:6:a:b:c:d");
    let target = target_of(&d);
    assert_eq!(target, "2001:db8:5:6::/64".parse::<Net>().unwrap());
    // A neighbour in the same /64 is inside the ban; the next /64 is not.
    assert!(target.contains("2001:db8:5:6:ffff::1".parse().unwrap()));
    assert!(!target.contains("2001:db8:5:7::1".parse().unwrap()));
    // IPv4 clients, and IPv4-mapped ones, are banned alone.
    assert_eq!(
        target_of(&probe_backdoors(&mut sim, "192.0.2.40")),
        Net::host("192.0.2.40".parse().unwrap())
    );
    assert_eq!(
        target_of(&probe_backdoors(&mut sim, "::ffff:192.0.2.41")),
        Net::host("::ffff:192.0.2.41".parse().unwrap())
    );

    let mut cfg = EngineConfig::default();
    cfg.bans.ipv6_prefix = 128;
    let mut sim = Sim::new(&cfg);
    let d = probe_backdoors(&mut sim, "2001:db8::7");
    assert_eq!(target_of(&d), Net::host("2001:db8::7".parse().unwrap()));
    cfg.bans.ipv6_prefix = 56;
    let mut sim = Sim::new(&cfg);
    let d = probe_backdoors(&mut sim, "2001:db8:0:42::7");
    assert_eq!(target_of(&d), "2001:db8::/56".parse::<Net>().unwrap());
}

#[test]
fn the_ipv6_prefix_is_validated() {
    for (prefix, ok) in [
        (31, false),
        (32, true),
        (64, true),
        (128, true),
        (129, false),
    ] {
        let mut cfg = EngineConfig::default();
        cfg.bans.ipv6_prefix = prefix;
        assert_eq!(cfg.validate().is_ok(), ok, "/{prefix}");
    }
}

#[test]
fn a_protected_client_is_blocked_but_never_banned() {
    let mut sim = Sim::default();
    sim.engine.set_protected(vec![
        "10.0.0.1".parse().unwrap(),
        "2001:db8:9::/48".parse().unwrap(),
    ]);
    for client in ["10.0.0.1", "2001:db8:9::5"] {
        let mut ds = vec![probe_backdoors(&mut sim, client)];
        ds.extend(
            (0..20).map(|i| sim.send(&req(client, &format!("/x{i}/.git/config")).status(404))),
        );
        assert!(!ds.iter().any(is_ban), "{client}: {ds:?}");
        assert!(
            ds.iter().any(|d| matches!(d, Decision::Block { .. })),
            "{client}"
        );
        let ip: IpAddr = client.parse().unwrap();
        assert!(!is_ban(&sim.engine.ai_verdict(
            sim.now,
            ip,
            SecondOpinion::Block
        )));
    }
    // The same attack from next door bans.
    assert!(is_ban(&probe_backdoors(&mut sim, "10.0.0.2")));
    let stats = sim.engine.stats();
    assert!(stats.protected_refusals >= 3, "{stats:?}");
    assert_eq!(stats.bans, 1);
}

#[test]
fn health_checkers_from_protected_or_allowlisted_ranges_are_never_blocked() {
    let mut sim = Sim::default();
    sim.engine
        .set_protected(vec!["10.0.0.0/24".parse().unwrap()]);
    sim.engine
        .set_allowlist(vec!["10.1.0.0/24".parse().unwrap()]);
    for client in ["10.0.0.9", "10.1.0.9"] {
        let ds = sim.send_n(
            &req(client, "/healthz").ua(None),
            200,
            Duration::from_secs(1),
        );
        assert!(ds.iter().all(|d| *d == Decision::Allow), "{client}: {ds:?}");
    }
    // Elsewhere the empty user agent is struck and, repeated, banned.
    let ds = sim.send_n(
        &req("10.2.0.9", "/healthz").ua(None),
        10,
        Duration::from_secs(1),
    );
    assert!(ds.iter().any(is_ban));
}

/// A ban order the shell could not carry out (queue full, maps full) is not a ban: the client's
/// next request orders it again, with the same target, reason and evidence, and the offence is
/// not counted twice. Once enforced, the client is banned for the ban's time.
#[test]
fn a_failed_ban_order_is_given_again_on_the_next_request() {
    let mut sim = Sim::default();
    sim.outcome = Some(BanOutcome::Failed);
    let c = "192.0.2.90";
    let first = probe_backdoors(&mut sim, c);
    assert!(is_ban(&first));
    sim.advance(Duration::from_secs(1));
    sim.outcome = Some(BanOutcome::Enforced);
    let again = sim.send(&req(c, "/"));
    let (
        Decision::Ban {
            target: t1,
            reason: r1,
            evidence: e1,
            retry: false,
            ..
        },
        Decision::Ban {
            target: t2,
            reason: r2,
            evidence: e2,
            retry: true,
            ..
        },
    ) = (&first, &again)
    else {
        panic!("{first:?} then {again:?}");
    };
    assert_eq!((t1, r1, e1.offence), (t2, r2, e2.offence));
    let stats = sim.engine.stats();
    assert_eq!(
        (stats.bans, stats.ban_failures, stats.ban_retries),
        (1, 1, 1)
    );
    // Enforced now: blocked as banned, not ordered a third time, until the ban ends.
    sim.advance(Duration::from_secs(1));
    assert!(matches!(sim.send(&req(c, "/")), Decision::Block { .. }));
    sim.advance(Duration::from_hours(1));
    assert_eq!(sim.send(&req(c, "/")), Decision::Allow);
    assert_eq!(sim.engine.stats().ban_retries, 1);
}

/// Until the shell answers, the client's requests are blocked and nothing is ordered twice; an
/// order that gets no answer at all is given again after `ORDER_TIMEOUT`.
#[test]
fn an_unanswered_ban_order_is_given_again_after_its_timeout() {
    let mut sim = Sim::default();
    sim.outcome = None;
    let c = "192.0.2.91";
    let d = probe_backdoors(&mut sim, c);
    assert!(is_ban(&d));
    for _ in 0..3 {
        sim.advance(Duration::from_secs(10));
        assert!(matches!(sim.send(&req(c, "/")), Decision::Block { .. }));
    }
    // An AI verdict for a client whose ban is on its way changes nothing.
    let ip: IpAddr = c.parse().unwrap();
    assert_eq!(
        sim.engine.ai_verdict(sim.now, ip, SecondOpinion::Block),
        Decision::Allow
    );
    sim.advance(Duration::from_secs(u64::from(super::super::ORDER_TIMEOUT)));
    let d2 = sim.send(&req(c, "/"));
    assert!(matches!(d2, Decision::Ban { retry: true, .. }), "{d2:?}");
    // The late answer to the first order is ignored; the answer to the second counts.
    sim.engine.ban_settled(
        match &d {
            Decision::Ban { ticket, .. } => ticket,
            _ => unreachable!(),
        },
        BanOutcome::Refused,
    );
    sim.settle_as(&d2, BanOutcome::Enforced);
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        sim.send(&req(c, "/")),
        Decision::Block {
            status: 403,
            reason: "banned".into()
        }
    );
}

/// A ban the shell refuses for good (allowlisted or protected there) is neither a ban nor
/// ordered again.
#[test]
fn a_refused_ban_order_is_not_given_again() {
    let mut sim = Sim::default();
    sim.outcome = Some(BanOutcome::Refused);
    let c = "192.0.2.92";
    assert!(is_ban(&probe_backdoors(&mut sim, c)));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.send(&req(c, "/")), Decision::Allow);
    assert_eq!(sim.engine.stats().ban_retries, 0);
}

fn offence_of(d: &Decision) -> Option<u32> {
    match d {
        Decision::Ban { evidence, .. } => evidence.offence,
        other => panic!("not a ban: {other:?}"),
    }
}

/// `guard ban rm`: the client starts afresh and the lifted ban is no offence, so its next ban
/// is a first one again (1 h, not 4 h).
#[test]
fn a_lifted_ban_is_forgotten_with_the_clients_state() {
    let mut sim = Sim::default();
    let c = "192.0.2.81";
    let ip: IpAddr = c.parse().unwrap();
    let d = probe_backdoors(&mut sim, c);
    assert_eq!(offence_of(&d), Some(1));
    assert_eq!(sim.engine.lifted(&target_of(&d), Some(ip), false), 0);
    sim.advance(Duration::from_secs(1));
    // Its state is gone: one more 404 is a fresh client's first, not a ban.
    assert_eq!(
        sim.send(&req(c, "/missing").status(404)),
        Decision::Allow,
        "a lifted client must start afresh"
    );
    sim.advance(Duration::from_mins(1));
    let again = probe_backdoors(&mut sim, c);
    assert_eq!(offence_of(&again), Some(1), "the lifted ban still counted");
    assert_eq!(ttl_of(&again), Duration::from_hours(1));
}

/// `guard ban rm --keep-history`: the ban is lifted, the offence stays and the next ban
/// escalates.
#[test]
fn a_lifted_ban_kept_in_history_still_escalates() {
    let mut sim = Sim::default();
    let c = "192.0.2.82";
    let ip: IpAddr = c.parse().unwrap();
    let d = probe_backdoors(&mut sim, c);
    sim.engine.lifted(&target_of(&d), Some(ip), true);
    sim.advance(Duration::from_mins(1));
    let again = probe_backdoors(&mut sim, c);
    assert_eq!(offence_of(&again), Some(2));
    assert_eq!(ttl_of(&again), Duration::from_hours(4));
    // A second offence lifted without history leaves the first one.
    assert_eq!(sim.engine.lifted(&target_of(&again), Some(ip), false), 1);
    sim.advance(Duration::from_mins(1));
    assert_eq!(offence_of(&probe_backdoors(&mut sim, c)), Some(2));
}

fn reason_of(d: &Decision) -> &str {
    match d {
        Decision::Ban { reason, .. } => reason,
        other => panic!("not a ban: {other:?}"),
    }
}

/// A ban's reason names its rule once: `backdoor: 2 hits`, not `backdoor: backdoor: 2 hits`.
#[test]
fn ban_reasons_name_their_rule_once() {
    let mut sim = Sim::default();
    assert_eq!(
        reason_of(&probe_backdoors(&mut sim, "192.0.2.83")),
        "backdoor: 2 hits"
    );
    let c = "192.0.2.84";
    let mut last = Decision::Allow;
    for i in 0..40 {
        last = sim.send(&req(c, &format!("/missing/{i}")).status(404));
        if is_ban(&last) {
            break;
        }
        sim.advance(Duration::from_millis(500));
    }
    let reason = reason_of(&last);
    assert!(
        reason.starts_with("probing: ") && !reason.starts_with("probing: probing"),
        "{reason}"
    );
    assert!(
        reason.contains("distinct paths answered 400/403/404"),
        "{reason}"
    );
}
