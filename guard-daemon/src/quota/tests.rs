use base64::Engine as _;

use super::*;
use crate::tap::{RequestHeaders, Trust, UserSource};

const T0: u64 = 1_800_000_000; // 2027-01-15 08:00:00 UTC

pub(super) fn config(text: &str) -> QuotasConfig {
    #[derive(serde::Deserialize)]
    struct File {
        quotas: QuotasConfig,
    }
    toml::from_str::<File>(text).expect("config").quotas
}

const PLANS: &str = r#"
[quotas]
default_plan = "anonymous"
plan_header = "X-Plan"
[[quotas.plans.anonymous.rules]]
path = "/api/*"
per_minute = 2
[[quotas.plans.pro.rules]]
path = "/api/v1/users/{id}"
per_minute = 3
per_day = 1000
[[quotas.plans.pro.rules]]
path = "/api/*"
lifetime = 2
[quotas.plans.enterprise]
"#;

fn check(text: &str) -> QuotaCheck {
    QuotaCheck::new(
        &config(text),
        vec!["192.0.2.7".parse().unwrap()],
        b"salt".to_vec(),
        1,
    )
    .unwrap()
}

fn token(payload: &str) -> String {
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", b(r#"{"alg":"HS256"}"#), b(payload))
}

/// A request from `client` (through the trusted proxy 192.0.2.7 unless `peer` says otherwise).
pub(super) fn event(client: &str, path: &str, headers: &[(&str, &str)], secs: u64) -> RequestEvent {
    let mut all = crate::tap::http::HeaderList::default();
    for (name, value) in headers {
        all.push(name, value.as_bytes());
    }
    RequestEvent {
        conn_id: 1,
        ts: Duration::from_secs(secs),
        client: client.parse().unwrap(),
        trust: Trust::Verified,
        peer: "192.0.2.7:40000".parse().unwrap(),
        server: "192.0.2.1:80".parse().unwrap(),
        user: None,
        method: "GET".into(),
        path: path.into(),
        query: None,
        http_minor: 1,
        headers: RequestHeaders::default(),
        all_headers: all,
        body: Vec::new(),
        body_len: 0,
        status: None,
        latency: None,
        bytes_in: 0,
        bytes_out: 0,
        response_content_type: None,
    }
}

pub(super) fn jwt_user(id: &str, verified: bool) -> UserId {
    UserId {
        id: id.into(),
        verified,
        source: UserSource::Jwt,
    }
}

#[test]
fn a_verified_claim_picks_the_plan_and_the_quota_refuses_with_draft_headers() {
    let q = check(PLANS);
    let auth = format!("Bearer {}", token(r#"{"sub":"alice","plan":"pro"}"#));
    let alice = jwt_user("alice", true);
    let t = T0 + 43; // 08:00:43: the minute resets in 17 s
    for n in 0..3 {
        let ev = event(
            "198.51.100.1",
            "/api/v1/users/42",
            &[("Authorization", &auth)],
            t,
        );
        assert_eq!(q.check(&alice, &ev), None, "request {n}");
    }
    let ev = event(
        "198.51.100.1",
        "/api/v1/users/42",
        &[("Authorization", &auth)],
        t,
    );
    let refusal = q.check(&alice, &ev).expect("the fourth is refused");
    assert_eq!(
        refusal,
        Refusal::Quota {
            limit: 3,
            remaining: 0,
            reset: Some(Duration::from_secs(17)),
            policy: "\"minute\";q=3;w=60, \"day\";q=1000;w=86400".into(),
            ratelimit: "\"minute\";r=0;t=17".into(),
            violated: vec!["minute"],
        }
    );
    let extra = refusal.extra();
    assert_eq!(extra.retry_after, Some(17));
    assert_eq!(
        extra.headers,
        [
            (
                "ratelimit-policy",
                "\"minute\";q=3;w=60, \"day\";q=1000;w=86400".to_owned()
            ),
            ("ratelimit", "\"minute\";r=0;t=17".to_owned()),
        ]
    );
    // The next minute admits again; the refusal charged the day nothing.
    let ev = event(
        "198.51.100.1",
        "/api/v1/users/42",
        &[("Authorization", &auth)],
        t + 17,
    );
    let out = q.check_event(Some(&alice), &ev);
    assert_eq!(out.plan.as_deref(), Some("pro"));
    let d = out.decision.unwrap();
    assert!(d.admitted);
    assert_eq!(d.windows()[1].remaining, 1000 - 4);
    assert_eq!(q.stats.refused.load(Ordering::Relaxed), 1);
}

#[test]
fn a_spent_lifetime_has_no_retry_after() {
    let q = check(PLANS);
    let auth = format!("Bearer {}", token(r#"{"sub":"bob","plan":"pro"}"#));
    let bob = jwt_user("bob", true);
    let ev = event(
        "198.51.100.2",
        "/api/v1/orders",
        &[("Authorization", &auth)],
        T0,
    );
    assert_eq!(q.check(&bob, &ev), None);
    assert_eq!(q.check(&bob, &ev), None);
    let r = q.check(&bob, &ev).expect("lifetime spent");
    let extra = r.extra();
    assert_eq!(extra.retry_after, None);
    assert_eq!(extra.headers[1].1, "\"lifetime\";r=0");
}

#[test]
fn an_unverified_claim_is_counted_by_address_under_the_default_plan() {
    let q = check(PLANS);
    let auth = format!("Bearer {}", token(r#"{"sub":"mallory","plan":"pro"}"#));
    // Two claimed users from one address share the address's anonymous quota (2 a minute).
    for id in ["mallory", "alice"] {
        let ev = event("203.0.113.9", "/api/x", &[("Authorization", &auth)], T0);
        let out = q.check_event(Some(&jwt_user(id, false)), &ev);
        assert_eq!(out.plan.as_deref(), Some("anonymous"));
        assert!(out.decision.unwrap().admitted);
    }
    let ev = event("203.0.113.9", "/api/x", &[], T0);
    assert!(!q.check_event(None, &ev).decision.unwrap().admitted);
    // The verified alice on her own plan is untouched by that.
    let auth = format!("Bearer {}", token(r#"{"sub":"alice","plan":"pro"}"#));
    let ev = event(
        "203.0.113.9",
        "/api/v1/users/1",
        &[("Authorization", &auth)],
        T0,
    );
    assert_eq!(q.check(&jwt_user("alice", true), &ev), None);
    // IPv6 clients share their /64.
    for (client, admitted) in [
        ("2001:db8::1", true),
        ("2001:db8::2", true),
        ("2001:db8::3", false),
    ] {
        let ev = event(client, "/api/x", &[], T0);
        assert_eq!(
            q.check_event(None, &ev).decision.unwrap().admitted,
            admitted,
            "{client}"
        );
    }
    assert!(
        q.check_event(None, &event("2001:db8:0:1::1", "/api/x", &[], T0))
            .decision
            .unwrap()
            .admitted
    );
}

#[test]
fn unknown_plans_fall_back_and_are_counted_and_unlimited_plans_pass() {
    let q = check(PLANS);
    let alice = jwt_user("alice", true);
    let auth = format!("Bearer {}", token(r#"{"sub":"alice","plan":"gold"}"#));
    let ev = event("198.51.100.1", "/api/x", &[("Authorization", &auth)], T0);
    assert_eq!(
        q.check_event(Some(&alice), &ev).plan.as_deref(),
        Some("anonymous")
    );
    assert_eq!(q.stats.unknown_plan.load(Ordering::Relaxed), 1);
    let auth = format!("Bearer {}", token(r#"{"sub":"alice","plan":"enterprise"}"#));
    for _ in 0..10 {
        let ev = event("198.51.100.1", "/api/x", &[("Authorization", &auth)], T0);
        assert_eq!(q.check(&alice, &ev), None);
    }
    assert_eq!(q.stats.unlimited.load(Ordering::Relaxed), 10);
    // Without a default plan, clients naming none are not limited.
    let open = check(&PLANS.replace("default_plan = \"anonymous\"", ""));
    let out = open.check_event(None, &event("198.51.100.1", "/api/x", &[], T0));
    assert_eq!(
        out,
        QuotaOutcome {
            plan: None,
            decision: None,
            unavailable: false,
        }
    );
}

#[test]
fn the_plan_header_is_believed_only_from_a_trusted_proxy_and_lookup_order_holds() {
    let q = check(PLANS);
    let mut ev = event("198.51.100.1", "/api/x", &[("X-Plan", "enterprise")], T0);
    assert_eq!(q.check_event(None, &ev).plan.as_deref(), Some("enterprise"));
    ev.peer = "198.51.100.1:5555".parse().unwrap();
    assert_eq!(q.check_event(None, &ev).plan.as_deref(), Some("anonymous"));
    // The claim comes first in the default order; with lookup = ["header", "claim"] the header.
    let auth = format!("Bearer {}", token(r#"{"sub":"alice","plan":"pro"}"#));
    let both = [("Authorization", auth.as_str()), ("X-Plan", "enterprise")];
    let alice = jwt_user("alice", true);
    let ev = event("198.51.100.1", "/api/x", &both, T0);
    assert_eq!(
        q.check_event(Some(&alice), &ev).plan.as_deref(),
        Some("pro")
    );
    let q = check(&PLANS.replace("[quotas]\n", "[quotas]\nlookup = [\"header\", \"claim\"]\n"));
    assert_eq!(
        q.check_event(Some(&alice), &ev).plan.as_deref(),
        Some("enterprise")
    );
}

#[test]
fn the_plan_table_names_verified_users_plans() {
    let mut plans = HashMap::new();
    plans.insert("carol".to_owned(), "pro".to_owned());
    let q = check(PLANS).with_plan_table(Arc::new(plans));
    let carol = UserId {
        id: "carol".into(),
        verified: true,
        source: UserSource::Header,
    };
    let ev = event("198.51.100.1", "/api/x", &[], T0);
    assert_eq!(
        q.check_event(Some(&carol), &ev).plan.as_deref(),
        Some("pro")
    );
    let claimed = UserId {
        verified: false,
        ..carol
    };
    assert_eq!(
        q.check_event(Some(&claimed), &ev).plan.as_deref(),
        Some("anonymous")
    );
}

/// Refuses the users it lists: the shape of the user-ban lookup.
struct Refuses(&'static str);

impl UserCheck for Refuses {
    fn check(&self, user: &UserId, _: &RequestEvent) -> Option<Refusal> {
        (user.id == self.0).then_some(Refusal::BannedUser)
    }
}

#[test]
fn chained_checks_ask_quotas_only_after_bans_pass() {
    let q = Arc::new(check(PLANS));
    let chain = UserChecks(vec![
        Arc::new(Refuses("eve")),
        Arc::clone(&q) as Arc<dyn UserCheck>,
    ]);
    let auth = format!("Bearer {}", token(r#"{"plan":"pro"}"#));
    let eve = jwt_user("eve", true);
    for _ in 0..5 {
        let ev = event(
            "198.51.100.1",
            "/api/v1/orders",
            &[("Authorization", &auth)],
            T0,
        );
        assert_eq!(chain.check(&eve, &ev), Some(Refusal::BannedUser));
    }
    assert_eq!(
        q.stats.checked.load(Ordering::Relaxed),
        0,
        "a banned user is never charged"
    );
    let frank = jwt_user("frank", true);
    let ev = event(
        "198.51.100.1",
        "/api/v1/orders",
        &[("Authorization", &auth)],
        T0,
    );
    assert_eq!(chain.check(&frank, &ev), None);
    assert_eq!(chain.check(&frank, &ev), None);
    assert!(matches!(
        chain.check(&frank, &ev),
        Some(Refusal::Quota { .. })
    ));
}

#[test]
fn concurrent_requests_through_the_seam_never_overshoot() {
    let q = check(
        "[[quotas.plans.p.rules]]\npath = \"/*\"\nlifetime = 50\n[quotas]\ndefault_plan = \"p\"\n",
    );
    let admitted = AtomicU64::new(0);
    let barrier = std::sync::Barrier::new(200);
    std::thread::scope(|s| {
        for _ in 0..200 {
            s.spawn(|| {
                let ev = event("198.51.100.77", "/", &[], T0);
                barrier.wait();
                if q.check(&jwt_user("x", false), &ev).is_none() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 50);
}
