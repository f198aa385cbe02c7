use std::net::IpAddr;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, Ordering};

use super::headers::{policy, ratelimit, ratelimit_exceeded, retry_after};
use super::*;

/// Seconds since the epoch of a UTC date and time.
fn at(y: i64, mo: u32, d: u32, h: u64, mi: u64, s: u64) -> u64 {
    days_from_civil(y, mo, d) as u64 * 86_400 + h * 3600 + mi * 60 + s
}

fn rule(pattern: &str, limits: Limits) -> Rule {
    Rule::new(pattern, None, limits).unwrap()
}

fn user(n: u32) -> PartitionKey {
    PartitionKey::user(&format!("user-{n}"), b"salt")
}

#[test]
fn days_round_trip() {
    for z in [-800_000i64, -1, 0, 1, 11_016, 19_782, 2_932_896] {
        let (y, m, d) = crate::time::civil_from_days(z);
        assert_eq!(days_from_civil(y, m, d), z);
    }
    assert_eq!(at(1970, 1, 1, 0, 0, 0), 0);
    assert_eq!(at(2000, 3, 1, 0, 0, 0), 951_868_800);
}

#[test]
fn window_edges() {
    let t = at(2026, 12, 2, 18, 59, 59);
    assert_eq!(Window::Second.reset_in(t), Some(1));
    assert_eq!(Window::Minute.reset_in(t), Some(1));
    assert_eq!(Window::Hour.reset_in(t), Some(1));
    assert_eq!(Window::Day.reset_in(t), Some(5 * 3600 + 1));
    assert_eq!(Window::Lifetime.reset_in(t), None);
    // One second later a new minute and hour begin, the day does not.
    assert_ne!(Window::Minute.epoch(t), Window::Minute.epoch(t + 1));
    assert_ne!(Window::Hour.epoch(t), Window::Hour.epoch(t + 1));
    assert_eq!(Window::Day.epoch(t), Window::Day.epoch(t + 1));
    assert_eq!(Window::Minute.reset_in(t + 1), Some(60));
    assert_eq!(
        Window::Minute.reset_in(at(2026, 12, 2, 19, 0, 43)),
        Some(17)
    );
    // Midnight UTC starts a day.
    let midnight = at(2026, 12, 3, 0, 0, 0);
    assert_ne!(Window::Day.epoch(midnight - 1), Window::Day.epoch(midnight));
    assert_eq!(Window::Day.reset_in(midnight), Some(86_400));
}

#[test]
fn month_lengths() {
    let len = |y, m| Window::Month.length(at(y, m, 15, 12, 0, 0)).unwrap() / 86_400;
    assert_eq!(len(2024, 2), 29, "leap year");
    assert_eq!(len(2026, 2), 28);
    assert_eq!(len(2000, 2), 29, "divisible by 400");
    assert_eq!(len(2100, 2), 28, "divisible by 100");
    assert_eq!(len(2026, 1), 31);
    assert_eq!(len(2026, 4), 30);
    assert_eq!(len(2026, 7), 31);
    assert_eq!(len(2026, 8), 31);
    assert_eq!(len(2026, 12), 31);
    // December → January: the month resets at the new year's first second.
    let newyear = at(2027, 1, 1, 0, 0, 0);
    assert_eq!(Window::Month.reset_in(newyear - 1), Some(1));
    assert_eq!(
        Window::Month.epoch(newyear),
        Window::Month.epoch(newyear - 1) + 1
    );
    assert_eq!(
        Window::Month.bounds(newyear),
        Some((newyear, at(2027, 2, 1, 0, 0, 0)))
    );
    // The last second of February in a leap year is still February.
    let feb29 = at(2024, 2, 29, 23, 59, 59);
    assert_eq!(Window::Month.reset_in(feb29), Some(1));
}

#[test]
fn month_window_counts_across_days_and_resets() {
    let table = QuotaTable::new(7);
    let r = rule("/x", Limits::default().with(Window::Month, 2));
    let k = user(1);
    assert!(table.check(k, &r, at(2026, 1, 1, 0, 0, 0)).admitted);
    assert!(table.check(k, &r, at(2026, 1, 31, 23, 59, 59)).admitted);
    let d = table.check(k, &r, at(2026, 1, 31, 23, 59, 59));
    assert!(!d.admitted);
    assert_eq!(d.retry_after(), Some(1));
    assert!(table.check(k, &r, at(2026, 2, 1, 0, 0, 0)).admitted);
}

#[test]
fn a_minute_ends_on_the_clock_not_on_the_last_hit() {
    // The reference limiter restarted the window at each hit; here a busy client's minute ends.
    let table = QuotaTable::new(7);
    let r = rule("/x", Limits::default().with(Window::Minute, 3));
    let k = user(1);
    let t0 = at(2026, 5, 5, 10, 0, 0);
    for s in 0..3 {
        assert!(table.check(k, &r, t0 + s * 20).admitted);
    }
    let d = table.check(k, &r, t0 + 59);
    assert!(!d.admitted);
    assert_eq!(d.retry_after(), Some(1));
    assert!(table.check(k, &r, t0 + 60).admitted);
}

#[test]
fn refusal_charges_nothing() {
    let table = QuotaTable::new(7);
    let limits = Limits::default()
        .with(Window::Minute, 2)
        .with(Window::Day, 5)
        .with(Window::Lifetime, 100);
    let r = rule("/api", limits);
    let k = user(1);
    let t0 = at(2026, 5, 5, 10, 0, 0);
    assert!(table.check(k, &r, t0).admitted);
    assert!(table.check(k, &r, t0).admitted);
    for _ in 0..10 {
        let d = table.check(k, &r, t0 + 30);
        assert!(!d.admitted);
        let ex: Vec<_> = d.exceeded().map(|w| w.window).collect();
        assert_eq!(ex, [Window::Minute]);
    }
    let p = table.peek(k, &r, t0 + 30);
    let rem: Vec<_> = p.windows().iter().map(|w| w.remaining).collect();
    assert_eq!(
        rem,
        [0, 3, 98],
        "the ten refusals charged neither the day nor lifetime"
    );
    // A refused first request leaves no entry at all.
    let one = rule("/y", Limits::default().with(Window::Lifetime, 1));
    assert!(table.check(user(2), &one, t0).admitted);
    let before = table.len();
    assert!(!table.check(user(2), &one, t0).admitted);
    assert_eq!(table.len(), before);
}

#[test]
fn lifetime_never_resets_and_has_no_retry_after() {
    let table = QuotaTable::new(7);
    let r = rule(
        "/x",
        Limits::default()
            .with(Window::Lifetime, 1)
            .with(Window::Hour, 10),
    );
    let k = PartitionKey::addr("192.0.2.1".parse().unwrap());
    assert!(table.check(k, &r, 1_000).admitted);
    let d = table.check(k, &r, 1_000 + 10 * 365 * 86_400);
    assert!(!d.admitted);
    assert_eq!(d.retry_after(), None);
    assert_eq!(retry_after(&d), None);
    assert_eq!(ratelimit_exceeded(&d), "\"lifetime\";r=0");
    assert_eq!(table.sweep(u64::MAX / 2), 0, "lifetime counters are kept");
}

#[test]
fn templates_prefixes_and_exact_paths() {
    let t = PathPattern::parse("/api/v1/users/{id}").unwrap();
    assert!(t.matches("/api/v1/users/42"));
    assert!(t.matches("/api/v1/users/alice"));
    assert!(!t.matches("/api/v1/users/"));
    assert!(!t.matches("/api/v1/users"));
    assert!(!t.matches("/api/v1/users/42/posts"));
    assert!(!t.matches("/api/v2/users/42"));
    let two = PathPattern::parse("/orgs/{org}/repos/{repo}").unwrap();
    assert!(two.matches("/orgs/a/repos/b"));
    assert!(!two.matches("/orgs/a/repos"));
    let p = PathPattern::parse("/api/v1/*").unwrap();
    assert!(p.matches("/api/v1"));
    assert!(p.matches("/api/v1/"));
    assert!(p.matches("/api/v1/users/42/posts"));
    assert!(!p.matches("/api/v10"));
    assert!(!p.matches("/api"));
    let open = PathPattern::parse("/u/{id}/*").unwrap();
    assert!(open.matches("/u/1/files/a"));
    assert!(open.matches("/u/1"));
    assert!(!open.matches("/u/"));
    let all = PathPattern::parse("/*").unwrap();
    assert!(all.matches("/") && all.matches("/anything/at/all"));
    let e = PathPattern::parse("/api/v1/users/1").unwrap();
    assert!(e.matches("/api/v1/users/1"));
    assert!(!e.matches("/api/v1/users/1/"));
    assert!(!e.matches("/api/v1/users/12"));
    for (bad, err) in [
        ("api", PatternError::NoLeadingSlash),
        ("/a/*/b", PatternError::MisplacedStar),
        ("/a*", PatternError::MisplacedStar),
        ("/a/{}", PatternError::BadVariable),
        ("/a/{id", PatternError::BadVariable),
        ("/a/x{id}", PatternError::BadVariable),
        ("/a?b=1", PatternError::BadCharacter),
        ("/a b", PatternError::BadCharacter),
    ] {
        assert_eq!(PathPattern::parse(bad), Err(err), "{bad}");
    }
}

#[test]
fn first_matching_rule_applies_and_methods_filter() {
    let m = Limits::default().with(Window::Minute, 1);
    let plan = Plan {
        name: "free".into(),
        rules: vec![
            Rule::new("/api/v1/users/{id}", Some("post"), m).unwrap(),
            Rule::new("/api/v1/users/{id}", None, m.with(Window::Minute, 2)).unwrap(),
            Rule::new("/api/v1/*", None, m.with(Window::Minute, 3)).unwrap(),
        ],
    };
    let set = PlanSet::new(vec![plan], Some("free")).unwrap();
    let p = set.get("free").unwrap();
    let lim = |method, path| {
        p.rule_for(method, path)
            .map(|r| (r.id, r.limits.get(Window::Minute)))
    };
    assert_eq!(lim("POST", "/api/v1/users/7"), Some((0, Some(1))));
    assert_eq!(lim("post", "/api/v1/users/7"), Some((0, Some(1))));
    assert_eq!(lim("GET", "/api/v1/users/7"), Some((1, Some(2))));
    assert_eq!(lim("GET", "/api/v1/orders"), Some((2, Some(3))));
    assert_eq!(lim("GET", "/static/app.js"), None);
}

#[test]
fn plan_choice_and_rule_ids() {
    let r = |n| Rule::new("/x", None, Limits::default().with(Window::Day, n)).unwrap();
    let plans = vec![
        Plan {
            name: "anonymous".into(),
            rules: vec![r(1)],
        },
        Plan {
            name: "pro".into(),
            rules: vec![r(2), r(3)],
        },
    ];
    let set = PlanSet::new(plans.clone(), Some("anonymous")).unwrap();
    assert_eq!(set.plans()[1].rules[1].id, 2, "ids run across plans");
    assert!(matches!(set.choose(Some("pro")), PlanChoice::Named(p) if p.name == "pro"));
    assert!(matches!(set.choose(None), PlanChoice::Default(p) if p.name == "anonymous"));
    assert!(matches!(set.choose(Some("gold")), PlanChoice::Unknown(p) if p.name == "anonymous"));
    let open = PlanSet::new(plans.clone(), None).unwrap();
    assert_eq!(open.choose(None), PlanChoice::None);
    assert_eq!(open.choose(Some("gold")), PlanChoice::None);
    assert_eq!(
        PlanSet::new(plans, Some("gold")),
        Err(QuotaError::UnknownDefault("gold".into()))
    );
}

#[test]
fn bad_rules_are_refused() {
    assert_eq!(
        Rule::new("/x", None, Limits::default()),
        Err(QuotaError::EmptyRule)
    );
    assert_eq!(
        Rule::new("/x", None, Limits::default().with(Window::Hour, 0)),
        Err(QuotaError::ZeroLimit)
    );
    assert!(matches!(
        Rule::new("x", None, Limits::default().with(Window::Hour, 1)),
        Err(QuotaError::Pattern { .. })
    ));
    assert!(matches!(
        Rule::new("/x", Some("G T"), Limits::default().with(Window::Hour, 1)),
        Err(QuotaError::BadMethod(_))
    ));
}

#[test]
fn partition_keys() {
    let a = |s: &str| PartitionKey::addr(s.parse::<IpAddr>().unwrap());
    assert_eq!(a("2001:db8:1:2::1"), a("2001:db8:1:2:ffff::9"), "one /64");
    assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
    assert_eq!(a("::ffff:192.0.2.1"), a("192.0.2.1"));
    assert_ne!(a("192.0.2.1"), a("192.0.2.2"));
    assert_eq!(
        PartitionKey::user("alice", b"s"),
        PartitionKey::user("alice", b"s")
    );
    assert_ne!(
        PartitionKey::user("alice", b"s"),
        PartitionKey::user("alice", b"t")
    );
    assert_ne!(
        PartitionKey::user("alice", b"s"),
        PartitionKey::user("bob", b"s")
    );
    let hex = format!("{:032x}", PartitionKey::user("alice", b"s").to_bits());
    assert!(!hex.contains("616c696365"), "the id is not in the key");
}

#[test]
fn headers_render_as_in_the_draft() {
    let table = QuotaTable::new(7);
    let r = rule(
        "/api/*",
        Limits::default()
            .with(Window::Minute, 60)
            .with(Window::Day, 10_000),
    );
    let k = user(1);
    let t = at(2026, 12, 2, 19, 0, 43);
    let d = table.check(k, &r, t);
    assert!(d.admitted);
    assert_eq!(policy(&d), "\"minute\";q=60;w=60, \"day\";q=10000;w=86400");
    assert_eq!(
        ratelimit(&d),
        "\"minute\";r=59;t=17, \"day\";r=9999;t=17957"
    );
    assert_eq!(retry_after(&d), None);
    for _ in 0..59 {
        assert!(table.check(k, &r, t).admitted);
    }
    let d = table.check(k, &r, t);
    assert!(!d.admitted);
    assert_eq!(ratelimit_exceeded(&d), "\"minute\";r=0;t=17");
    assert_eq!(retry_after(&d).as_deref(), Some("17"));
    // Month and lifetime policies.
    let r = rule(
        "/m",
        Limits::default()
            .with(Window::Month, 5)
            .with(Window::Lifetime, 9),
    );
    let d = table.check(k, &r, at(2024, 2, 10, 0, 0, 0));
    assert_eq!(policy(&d), "\"month\";q=5;w=2505600, \"lifetime\";q=9");
    assert_eq!(ratelimit(&d), "\"month\";r=4;t=1728000, \"lifetime\";r=8");
}

#[test]
fn retry_after_is_the_latest_exceeded_reset() {
    let table = QuotaTable::new(7);
    let r = rule(
        "/x",
        Limits::default()
            .with(Window::Minute, 1)
            .with(Window::Hour, 1),
    );
    let k = user(3);
    let t = at(2026, 1, 1, 10, 30, 50);
    assert!(table.check(k, &r, t).admitted);
    let d = table.check(k, &r, t);
    assert_eq!(d.exceeded().count(), 2);
    assert_eq!(
        d.retry_after(),
        Some(29 * 60 + 10),
        "the hour, not the minute"
    );
}

#[test]
fn sweep_drops_only_spent_windows() {
    let table = QuotaTable::new(7);
    let r = rule("/x", Limits::default().with(Window::Minute, 5));
    let t = at(2026, 1, 1, 10, 0, 0);
    for n in 0..10 {
        assert!(table.check(user(n), &r, t).admitted);
    }
    assert_eq!(table.sweep(t + 59), 0);
    assert_eq!(table.sweep(t + 60), 10);
    assert!(table.is_empty());
    assert!(table.check(user(1), &r, t + 60).admitted);
    assert!(table.reset(user(1), r.id));
    assert!(!table.reset(user(1), r.id));
}

#[test]
fn concurrent_requests_never_overshoot() {
    let table = QuotaTable::new(7);
    let r = rule(
        "/api/*",
        Limits::default()
            .with(Window::Lifetime, 50)
            .with(Window::Day, 1000),
    );
    let k = user(9);
    let admitted = AtomicU32::new(0);
    let barrier = Barrier::new(200);
    std::thread::scope(|s| {
        for _ in 0..200 {
            s.spawn(|| {
                barrier.wait();
                if table.check(k, &r, 1_800_000_000).admitted {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 50);
    let p = table.peek(k, &r, 1_800_000_000);
    let rem: Vec<_> = p.windows().iter().map(|w| w.remaining).collect();
    assert_eq!(rem, [950, 0], "the day was charged exactly 50 times");
}

#[test]
fn entries_are_compact() {
    assert_eq!(QuotaTable::entry_bytes(), 64);
}

#[test]
fn removals_and_growth_keep_every_other_entry_findable() {
    let table = QuotaTable::new(11);
    let r = rule("/x", Limits::default().with(Window::Lifetime, 5));
    let mut m = rule("/y", Limits::default().with(Window::Minute, 5));
    m.id = 1;
    let n = 20_000;
    for u in 0..n {
        assert!(table.check(user(u), &r, 0).admitted);
        if u % 2 == 0 {
            assert!(table.check(user(u), &m, 0).admitted);
        }
    }
    assert_eq!(table.len(), 30_000);
    for u in (0..n).filter(|u| u % 3 == 0) {
        assert!(table.reset(user(u), r.id));
    }
    for u in 0..n {
        let left = table.peek(user(u), &r, 0).windows()[0].remaining;
        assert_eq!(left, if u % 3 == 0 { 5 } else { 4 }, "user {u}");
    }
    // The minute entries expire; the lifetime ones survive the shrink and stay findable.
    assert_eq!(table.sweep(60), 10_000);
    for u in 0..n {
        let left = table.peek(user(u), &r, 60).windows()[0].remaining;
        assert_eq!(left, if u % 3 == 0 { 5 } else { 4 }, "user {u}");
        assert_eq!(table.peek(user(u), &m, 60).windows()[0].remaining, 5);
    }
    assert!(table.table_bytes() >= table.len() * QuotaTable::entry_bytes());
}

#[test]
fn plan_claims_of_a_jwt() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = |payload: &str| format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(payload));
    assert_eq!(
        jwt_claim(&token(r#"{"sub":"u1","plan":"pro"}"#), "plan").as_deref(),
        Some("pro")
    );
    assert_eq!(
        jwt_claim(&token(r#"{"tier":3}"#), "tier").as_deref(),
        Some("3")
    );
    assert_eq!(jwt_claim(&token(r#"{"plan":""}"#), "plan"), None);
    assert_eq!(jwt_claim(&token(r#"{"plan":["a"]}"#), "plan"), None);
    assert_eq!(jwt_claim(&token(r#"{"sub":"u1"}"#), "plan"), None);
    assert_eq!(jwt_claim(&token("[1]"), "plan"), None);
    assert_eq!(jwt_claim("a.b", "plan"), None);
    assert_eq!(jwt_claim("a.%%%.c", "plan"), None);
    assert_eq!(
        jwt_claim(&format!("{}.x", token(r#"{"plan":"p"}"#)), "plan"),
        None
    );
}

#[test]
fn counters_read_back_and_restored_give_the_same_decisions() {
    let rule = Rule::new(
        "/a",
        None,
        Limits::default()
            .with(Window::Day, 5)
            .with(Window::Lifetime, 3),
    )
    .unwrap();
    let t = 1_800_000_000;
    let a = QuotaTable::new(7);
    let key = PartitionKey::user("alice", b"salt");
    assert!(a.counters(key, rule.id).is_none());
    assert!(a.check(key, &rule, t).admitted);
    assert!(a.check(key, &rule, t).admitted);
    let stored = a.counters(key, rule.id).unwrap();
    assert_eq!(stored[Window::Lifetime.index()].1, 2);
    // Another table (a restart) restored from them: one more is admitted, then none.
    let b = QuotaTable::new(8);
    b.restore(key, rule.id, stored);
    assert!(b.check(key, &rule, t + 1).admitted);
    assert!(!b.check(key, &rule, t + 2).admitted);
    // Restoring older counts never lowers newer ones.
    b.restore(key, rule.id, stored);
    assert_eq!(
        b.counters(key, rule.id).unwrap()[Window::Lifetime.index()].1,
        3
    );
}
