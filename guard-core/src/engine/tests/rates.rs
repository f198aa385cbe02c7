//! Rate rules weighed by what the requests do: busy benign clients (alone or behind one
//! address) are rate-limited at most, never banned; fast clients that also err, probe or reach
//! for sensitive files still are; and the seed's profile keeps the seed's behaviour.
use std::time::Duration;

use super::super::{Decision, EngineConfig, RateProfile, Rule};
use super::{Req, Sim, ban_rule, is_ban, is_block, req};

const MS100: Duration = Duration::from_millis(100);
const OFFICE: &str = "198.51.100.60";

fn seed() -> EngineConfig {
    super::seed_config()
}

/// Three ordinary clients behind one address for `minutes`: a browser opening a page every
/// 2 s with six assets, an API client polling a job's status with a bearer token four times a
/// second and renewing its token each minute, and a polite crawler fetching one distinct page
/// a second (robots.txt first). About 5 non-static and 8 requests in all a second. Events
/// are sent in time order; returns every decision.
fn nat_office(sim: &mut Sim, minutes: u64) -> Vec<Decision> {
    let mut events: Vec<(u64, Req)> = Vec::new();
    let span = minutes * 60_000;
    let crawler = "ExampleBot/2.1 (+https://bot.example.org/about)";
    let api = "python-requests/2.31.0";
    events.push((0, req(OFFICE, "/robots.txt").ua(Some(crawler))));
    let mut ms = 0;
    let mut page = 0;
    while ms < span {
        // Browser: a page and its assets every 2 s.
        if ms % 2000 == 0 {
            page += 1;
            events.push((ms, req(OFFICE, &format!("/news/{}-story", page % 40))));
            for a in 0..6u64 {
                let path = if a % 2 == 0 {
                    format!("/static/app-{a}.js")
                } else {
                    format!("/media/{page}/{a}.webp")
                };
                events.push((ms + 50 + a * 10, req(OFFICE, &path)));
            }
        }
        // API client: status every 250 ms, a new token each minute.
        if ms % 250 == 0 {
            events.push((
                ms + 7,
                req(OFFICE, "/api/v1/jobs/8812/status").ua(Some(api)),
            ));
        }
        if ms % 60_000 == 0 {
            events.push((ms + 9, req(OFFICE, "/api/token").post().ua(Some(api))));
        }
        // Crawler: one distinct page a second.
        if ms % 1000 == 500 {
            let n = ms / 1000;
            events.push((
                ms,
                req(OFFICE, &format!("/archive/{}/{n}", n % 12)).ua(Some(crawler)),
            ));
        }
        ms += 50;
    }
    events.sort_by_key(|(t, _)| *t);
    let mut last = 0;
    events
        .into_iter()
        .map(|(t, r)| {
            sim.advance(Duration::from_millis(t - last));
            last = t;
            sim.send(&r)
        })
        .collect()
}

#[test]
fn a_busy_office_behind_one_address_is_never_banned() {
    let mut sim = Sim::default();
    let ds = nat_office(&mut sim, 10);
    assert!(ds.len() > 4000, "{} requests", ds.len());
    assert!(
        !ds.iter().any(is_ban),
        "{:?}",
        ds.iter().find(|d| is_ban(d))
    );
    assert_eq!(sim.engine.stats().bans, 0);
    // At most rate-limited: no block other than the 429 of the rate rule.
    for d in &ds {
        if let Decision::Block { status, reason } = d {
            assert_eq!(*status, 429, "{reason}");
        }
    }
}

#[test]
fn the_seed_profile_bans_the_same_office() {
    let mut sim = Sim::new(&seed());
    let ds = nat_office(&mut sim, 10);
    let ban = ds
        .iter()
        .find(|d| is_ban(d))
        .expect("the seed's rules ban the office");
    assert_eq!(ban_rule(ban).as_deref(), Some("repeated_blocks"));
}

#[test]
fn a_fast_harmless_client_is_rate_limited_not_banned() {
    let mut sim = Sim::default();
    let r = req("198.51.100.61", "/api/search");
    let ds = sim.send_n(&r, 120, MS100);
    assert!(!ds.iter().any(is_ban), "{ds:?}");
    assert!(
        matches!(&ds[49], Decision::Block { status: 429, reason } if reason == "50 requests in 10 s"),
        "{:?}",
        ds[49]
    );
    let hits = sim.engine.stats().rules;
    assert_eq!(hits.get(Rule::RequestRate.name()), Some(&71), "{hits:?}");
    // Under the seed's profile the same client is banned on its third blocked request.
    let mut sim = Sim::new(&seed());
    let ds = sim.send_n(&r, 60, MS100);
    assert_eq!(ds.iter().position(is_ban), Some(51));
}

#[test]
fn a_fast_client_with_many_errors_is_banned() {
    let mut sim = Sim::default();
    // Half its requests fail: its rate counts, three blocks make a ban.
    let ok = req("198.51.100.62", "/api/item");
    let bad = ok.clone().status(400);
    let mut ds = Vec::new();
    for i in 0..60 {
        ds.push(sim.send(if i % 2 == 0 { &ok } else { &bad }));
        sim.advance(MS100);
    }
    let first = ds.iter().position(is_ban).expect("banned");
    assert_eq!(ban_rule(&ds[first]).as_deref(), Some("repeated_blocks"));
    assert!(first <= 52, "banned at {first}");
}

#[test]
fn a_fast_client_reaching_for_sensitive_files_is_banned() {
    let mut sim = Sim::default();
    let c = "198.51.100.63";
    let mut ds = sim.send_n(&req(c, "/catalog"), 45, MS100);
    // One look at a file that must never be served makes its rate count.
    ds.push(sim.send(&req(c, "/.env").status(404)));
    ds.extend(sim.send_n(&req(c, "/catalog"), 10, MS100));
    assert!(ds.iter().any(is_ban), "{ds:?}");
}

#[test]
fn a_few_probes_make_a_fast_clients_rate_count() {
    let mut sim = Sim::default();
    let c = "198.51.100.64";
    let mut ds = Vec::new();
    for p in ["/old", "/test", "/dev"] {
        ds.push(sim.send(&req(c, p).status(404)));
        sim.advance(MS100);
    }
    ds.extend(sim.send_n(&req(c, "/"), 55, MS100));
    assert!(ds.iter().any(is_ban), "{ds:?}");
}

#[test]
fn a_flood_is_banned_whatever_it_asks_for() {
    let mut sim = Sim::default();
    // Static assets, all answered 200: only the flood bound (500 in 10 s) sees them.
    let r = req("198.51.100.65", "/static/app.js");
    let ds = sim.send_n(&r, 520, Duration::from_millis(10));
    let first = ds.iter().position(is_ban).expect("banned");
    assert_eq!(first, 501, "500th, 501st blocked, 502nd banned");
    assert!(ds[..499].iter().all(|d| !is_block(d)));
}

#[test]
fn the_rate_profile_is_read_from_the_config() {
    #[derive(serde::Deserialize)]
    struct File {
        engine: EngineConfig,
    }
    let c: File = toml::from_str("[engine]\nrate_profile = \"seed\"\n").unwrap();
    assert_eq!(c.engine.rate_profile, RateProfile::Seed);
    assert_eq!(EngineConfig::default().rate_profile, RateProfile::Weighted);
    let e = toml::from_str::<File>("[engine]\nrate_profile = \"strict\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("weighted") && e.contains("seed"), "{e}");
}
