//! The seed's GREY score: each weight, their sum, the grace period, the triage band, the hard
//! block, and the AI verdict.
use std::time::Duration;

use super::super::{Decision, EngineConfig, Rule, SecondOpinion, ValidatorHint};
use super::{Sim, ban_rule, is_ban, is_block, req, scoring_config, seed_config, triage_of};

const C: &str = "203.0.113.10";
const USER: &str = "alice";

/// A warmed-up, authenticated client, scored from 1.
fn scored() -> Sim {
    let mut sim = Sim::new(&scoring_config());
    sim.warm(C, Some(USER));
    sim
}

fn alice(path: &str) -> super::Req {
    req(C, path).user(USER, true)
}

#[test]
fn a_quiet_authenticated_browser_scores_nothing() {
    let mut sim = scored();
    assert_eq!(sim.send(&alice("/home")), Decision::Allow);
}

#[test]
fn unauthenticated_weighs_one() {
    let mut sim = Sim::new(&scoring_config());
    sim.warm(C, None);
    let d = sim.send(&req(C, "/home"));
    assert_eq!(triage_of(&d), Some((1, vec![Rule::Unauthenticated])));
}

#[test]
fn suspicious_user_agent_weighs_two() {
    let mut sim = scored();
    for ua in [
        "curl/8.5.0",
        "Python-Requests/2.31",
        "Mozilla/5.0 HeadlessChrome/120",
    ] {
        let d = sim.send(&alice("/home").ua(Some(ua)));
        assert_eq!(
            triage_of(&d),
            Some((2, vec![Rule::SuspiciousUserAgent])),
            "{ua}"
        );
        sim.advance(Duration::from_secs(30));
    }
}

#[test]
fn elevated_rate_weighs_three() {
    let mut sim = scored();
    let ds = sim.send_n(&alice("/feed"), 20, Duration::from_millis(200));
    assert!(ds[..19].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(triage_of(&ds[19]), Some((3, vec![Rule::ElevatedRate])));
}

#[test]
fn moderate_error_rate_weighs_two() {
    let mut sim = scored();
    let gap = Duration::from_secs(10);
    sim.send_n(&alice("/api/x"), 5, gap);
    sim.advance(gap);
    let ds = sim.send_n(&alice("/api/x").status(400), 5, gap);
    assert!(ds[..4].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(triage_of(&ds[4]), Some((2, vec![Rule::ModerateErrorRate])));
}

#[test]
fn sensitive_path_weighs_four() {
    let mut sim = scored();
    for path in ["/admin", "/admin/users", "/API/Login", "/.env"] {
        let d = sim.send(&alice(path));
        assert_eq!(
            triage_of(&d),
            Some((4, vec![Rule::SensitivePath])),
            "{path}"
        );
        sim.advance(Duration::from_secs(30));
    }
    assert_eq!(sim.send(&alice("/administrators-guide")), Decision::Allow);
}

#[test]
fn fifteen_distinct_paths_in_a_minute_weigh_two() {
    let mut sim = scored();
    let ds: Vec<_> = (0..15)
        .map(|i| {
            sim.advance(Duration::from_secs(3));
            sim.send(&alice(&format!("/section/{i}x")))
        })
        .collect();
    assert!(ds[..14].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(triage_of(&ds[14]), Some((2, vec![Rule::EndpointScanning])));
}

fn ids(sim: &mut Sim, ids: &[u32]) -> Vec<Decision> {
    ids.iter()
        .map(|i| {
            sim.advance(Duration::from_secs(5));
            sim.send(&alice(&format!("/users/{i}")))
        })
        .collect()
}

#[test]
fn sequential_ids_in_time_order_weigh_five() {
    let mut sim = scored();
    let ds = ids(&mut sim, &[1, 2, 3, 4, 5]);
    assert!(ds[..4].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(triage_of(&ds[4]), Some((5, vec![Rule::SequentialIds])));
    // Downwards too, and a reload does not break the run.
    let mut sim = scored();
    let ds = ids(&mut sim, &[90, 89, 89, 88, 87, 86]);
    assert_eq!(triage_of(&ds[5]), Some((5, vec![Rule::SequentialIds])));
}

#[test]
fn shuffled_or_sparse_ids_are_not_sequential() {
    // The seed sorted the ids, so any five consecutive numbers in any order counted.
    let mut sim = scored();
    let ds = ids(&mut sim, &[3, 1, 5, 2, 4, 7, 6]);
    assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
    let ds = ids(&mut sim, &[4, 89, 247, 1001, 5]);
    assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
    // Consecutive ids under different prefixes are different resources.
    let ds: Vec<_> = ["/users/1", "/posts/2", "/users/3", "/posts/4", "/users/5"]
        .iter()
        .map(|p| {
            sim.advance(Duration::from_secs(5));
            sim.send(&alice(p))
        })
        .collect();
    assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
}

#[test]
fn burst_after_half_an_hour_idle_weighs_two() {
    let mut sim = scored();
    sim.advance(Duration::from_mins(31));
    let ds = sim.send_n(&alice("/api/poll"), 15, Duration::from_millis(300));
    assert!(ds[..14].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(triage_of(&ds[14]), Some((2, vec![Rule::IdleBurst])));
    // The same burst without the silence before it is nothing.
    let mut sim = scored();
    sim.advance(Duration::from_mins(5));
    let ds = sim.send_n(&alice("/api/poll"), 15, Duration::from_millis(300));
    assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
}

#[test]
fn validator_suspicion_weighs_two() {
    let mut sim = scored();
    let hint = ValidatorHint {
        triage: true,
        score: 1,
        category: "xss".into(),
        ..ValidatorHint::default()
    };
    let ev = alice("/search").event(sim.now);
    let d = sim.engine.observe(sim.now, &ev, Some(&hint));
    assert_eq!(triage_of(&d), Some((2, vec![Rule::ValidatorSuspicious])));
}

#[test]
fn weights_add_up() {
    let mut sim = Sim::new(&scoring_config());
    sim.warm(C, None);
    let d = sim.send(&req(C, "/admin").ua(Some("curl/8")));
    assert_eq!(
        triage_of(&d),
        Some((
            7,
            vec![
                Rule::SuspiciousUserAgent,
                Rule::SensitivePath,
                Rule::Unauthenticated
            ]
        ))
    );
}

#[test]
fn new_clients_have_a_grace_period() {
    let mut sim = Sim::default();
    let r = req(C, "/admin").ua(Some("curl/8"));
    let ds = sim.send_n(&r, 20, Duration::from_secs(2));
    assert!(ds[..19].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(triage_of(&ds[19]).map(|t| t.0), Some(7));
}

#[test]
fn hard_block_at_eight_without_the_ai() {
    let mut sim = Sim::new(&seed_config());
    sim.warm(C, None);
    // curl (2) + sensitive (4) + unauthenticated (1) = 7: triage, then suppressed for a minute;
    // the 20th request in 10 s adds the elevated rate (3): 10, blocked.
    let ds = sim.send_n(
        &req(C, "/admin").ua(Some("curl/8")),
        22,
        Duration::from_millis(200),
    );
    assert_eq!(triage_of(&ds[0]).map(|t| t.0), Some(7));
    assert!(ds[1..19].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(
        ds[19],
        Decision::Block {
            status: 403,
            reason: "suspicion score 10".into()
        }
    );
    assert!(is_block(&ds[20]));
    assert_eq!(ban_rule(&ds[21]).as_deref(), Some("repeated_blocks"));
    assert_eq!(sim.engine.stats().triages_suppressed, 18);
}

fn block_verdict() -> SecondOpinion {
    SecondOpinion::Block
}

#[test]
fn triage_band_asks_the_ai_and_only_block_bans() {
    let mut sim = Sim::new(&EngineConfig::default());
    sim.warm(C, None);
    let d = sim.send(&req(C, "/admin").ua(Some("curl/8")));
    let Decision::Triage {
        behaviour, score, ..
    } = &d
    else {
        panic!("{d:?}")
    };
    assert_eq!(*score, 7);
    assert_eq!(behaviour.client.to_string(), C);
    assert!(!behaviour.authenticated);
    assert_eq!(behaviour.current_path, "/admin");
    assert_eq!(behaviour.recent_paths, vec!["/admin".to_owned()]);
    assert_eq!(behaviour.requests_10s, 1);
    assert_eq!(behaviour.user_agent, "curl/8");
    // Within the triage interval: no second triage.
    sim.advance(Duration::from_secs(5));
    assert_eq!(
        sim.send(&req(C, "/admin").ua(Some("curl/8"))),
        Decision::Allow
    );

    let ip = C.parse().unwrap();
    assert_eq!(
        sim.engine.ai_verdict(sim.now, ip, SecondOpinion::Allow),
        Decision::Allow
    );
    assert_eq!(
        sim.engine.ai_verdict(sim.now, ip, SecondOpinion::Unsure),
        Decision::Allow
    );
    let d = sim.engine.ai_verdict(sim.now, ip, block_verdict());
    assert_eq!(ban_rule(&d).as_deref(), Some("ai_verdict"));
    let Decision::Ban {
        ttl,
        evidence,
        shadow,
        ..
    } = &d
    else {
        unreachable!()
    };
    assert_eq!(*ttl, Duration::from_hours(1));
    assert!(!shadow);
    assert_eq!(evidence.details.triage_score, Some(7));
    assert_eq!(
        evidence
            .details
            .triage_rules
            .as_ref()
            .and_then(|r| r.get(1)),
        Some(&Rule::SensitivePath)
    );
    // Already banned: a second verdict changes nothing.
    assert_eq!(
        sim.engine.ai_verdict(sim.now, ip, block_verdict()),
        Decision::Allow
    );
    let stats = sim.engine.stats();
    assert_eq!((stats.ai_bans, stats.bans, stats.triages), (1, 1, 1));
}

#[test]
fn scores_below_the_threshold_are_allowed() {
    let mut sim = Sim::default();
    sim.warm(C, None);
    // curl (2) + unauthenticated (1) = 3 < 4.
    let ds = sim.send_n(
        &req(C, "/home").ua(Some("curl/8")),
        30,
        Duration::from_secs(2),
    );
    assert!(ds.iter().all(|d| *d == Decision::Allow && !is_ban(d)));
}
