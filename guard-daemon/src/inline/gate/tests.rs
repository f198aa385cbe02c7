//! The inline decision on its own: requests in, verdicts and log records out, with a real
//! judge (default validator and engine) and a real request log in a temporary database.
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::bans::lookup::NoBans;
use crate::engine::EngineConfig;
use crate::net::Net;
use crate::quota::QuotaCheck;
use crate::store::logs::{LogQuery, LogStore};
use crate::validate::ValidatorConfig;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0";

/// Bans by exact address.
struct Banned(HashSet<IpAddr>);

impl AddrLookup for Banned {
    fn banned(&self, ip: IpAddr) -> Option<BanHit> {
        self.0.contains(&ip).then_some(BanHit::Exact)
    }
}

/// Refuses one user (the seam's stand-in for the user-ban lookup).
struct BanUser(&'static str);

impl UserCheck for BanUser {
    fn check(&self, user: &UserId, _: &RequestEvent) -> Option<Refusal> {
        (user.id == self.0).then_some(Refusal::BannedUser)
    }
}

struct Setup {
    gate: InlineGate,
    logs: LogStore,
}

fn setup(addrs: Arc<dyn AddrLookup>, proxy: &ProxyConfig, engine: &EngineConfig) -> Setup {
    let (judge, _queue) =
        Judge::new(&ValidatorConfig::default(), engine, Vec::new(), 64, None).expect("judge");
    // The queue's receiver is dropped: ban orders fail and are counted, which these tests
    // do not look at.
    let logs = LogStore::temporary().expect("log store");
    let writer = LogWriter::spawn(
        logs.clone(),
        1024,
        64,
        crate::store::logs::Limits::default(),
    )
    .expect("writer");
    let identity = Identity {
        trusted_proxies: vec![Net::host("10.0.0.2".parse().unwrap())],
        client_header: Some(crate::tap::ClientHeader::XForwardedFor),
        user_header: Some("x-user".into()),
        jwt: crate::tap::jwt::JwtKeys::default(),
        real_ip_fallback: false,
    };
    Setup {
        gate: InlineGate::new(Arc::new(judge), Arc::new(writer), addrs, identity, proxy),
        logs,
    }
}

fn head(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder()
        .uri(uri)
        .header("user-agent", UA)
        .header("host", "shop.test");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn check(gate: &InlineGate, peer: &str, head: &http::request::Parts) -> Verdict {
    let peer: SocketAddr = peer.parse().unwrap();
    gate.check(&Seen {
        peer,
        tls: false,
        head,
        body: &[],
        body_complete: true,
    })
}

/// The log record with request id `id`, waiting for the writer thread.
fn record(logs: &LogStore, id: &str) -> LogRecord {
    let start = Instant::now();
    loop {
        let all = logs.query(&LogQuery::default()).unwrap();
        if let Some(r) = all
            .into_iter()
            .find(|r| r.request_id.as_deref() == Some(id))
        {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no log record for {id}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pass_id(v: Verdict) -> String {
    match v {
        Verdict::Pass { id, .. } => id,
        Verdict::Answer { response, .. } => panic!("refused: {}", response.status()),
    }
}

fn answered(v: Verdict) -> (String, http::Response<Bytes>) {
    match v {
        Verdict::Answer { id, response } => (id, response),
        Verdict::Pass { id, .. } => panic!("passed: {id}"),
    }
}

fn enforce() -> ProxyConfig {
    ProxyConfig::default()
}

#[test]
fn a_benign_request_passes_and_is_logged_inline() {
    let s = setup(Arc::new(NoBans), &enforce(), &EngineConfig::default());
    let id = pass_id(check(
        &s.gate,
        "192.0.2.10:5000",
        &head("/products?page=2", &[]),
    ));
    let r = record(&s.logs, &id);
    assert_eq!(r.mode, Mode::Inline);
    assert_eq!(r.client, "192.0.2.10".parse::<IpAddr>().unwrap());
    assert_eq!(r.trust, Trust::Verified);
    assert_eq!(
        (r.path.as_str(), r.query.as_deref()),
        ("/products", Some("page=2"))
    );
    assert!(!r.blocked);
    assert_eq!(s.gate.stats.passed.load(Ordering::Relaxed), 1);
}

#[test]
fn a_sql_injection_is_answered_403_with_the_logged_request_id() {
    let s = setup(Arc::new(NoBans), &enforce(), &EngineConfig::default());
    let h = head(
        "/items?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
        &[("accept", "application/json")],
    );
    let (id, response) = answered(check(&s.gate, "192.0.2.11:5000", &h));
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()[answer::REQUEST_ID], id.as_str());
    let page: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(page["request_id"], id.as_str());
    let r = record(&s.logs, &id);
    assert!(r.blocked);
    assert_eq!(r.status, Some(403));
    assert!(
        r.reason.as_deref().unwrap_or("").contains("validator"),
        "{r:?}"
    );
}

#[test]
fn a_banned_address_is_refused_before_judging() {
    let banned = Banned(["192.0.2.66".parse().unwrap()].into());
    let s = setup(Arc::new(banned), &enforce(), &EngineConfig::default());
    let (id, response) = answered(check(&s.gate, "192.0.2.66:4000", &head("/", &[])));
    assert_eq!(response.status(), 403);
    assert_eq!(
        record(&s.logs, &id).reason.as_deref(),
        Some("banned address")
    );
    assert_eq!(s.gate.stats.banned_address.load(Ordering::Relaxed), 1);
    // Another address passes.
    pass_id(check(&s.gate, "192.0.2.67:4000", &head("/", &[])));
}

#[test]
fn behind_a_trusted_proxy_the_client_comes_from_the_forwarding_chain() {
    let banned = Banned(["203.0.113.5".parse().unwrap()].into());
    let s = setup(Arc::new(banned), &enforce(), &EngineConfig::default());
    // The chain is walked from the right: the client's own claim on the left is not believed.
    let h = head("/", &[("x-forwarded-for", "192.0.2.99, 203.0.113.5")]);
    let (id, _) = answered(check(&s.gate, "10.0.0.2:3000", &h));
    assert_eq!(
        record(&s.logs, &id).client,
        "203.0.113.5".parse::<IpAddr>().unwrap()
    );
    let h = head("/", &[("x-forwarded-for", "203.0.113.5, 198.51.100.1")]);
    let id = pass_id(check(&s.gate, "10.0.0.2:3000", &h));
    assert_eq!(
        record(&s.logs, &id).client,
        "198.51.100.1".parse::<IpAddr>().unwrap()
    );
    // An untrusted peer's header is ignored: the peer is the client.
    let h = head("/", &[("x-forwarded-for", "203.0.113.5")]);
    let id = pass_id(check(&s.gate, "192.0.2.50:3000", &h));
    assert_eq!(
        record(&s.logs, &id).client,
        "192.0.2.50".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn a_trusted_proxy_that_names_nobody_is_never_held_responsible() {
    // Even with the proxy's own address in the ban maps.
    let banned = Banned(["10.0.0.2".parse().unwrap()].into());
    let s = setup(Arc::new(banned), &enforce(), &EngineConfig::default());
    let id = pass_id(check(&s.gate, "10.0.0.2:3000", &head("/", &[])));
    let r = record(&s.logs, &id);
    assert_eq!(r.trust, Trust::NoClient);
    assert!(r.client.is_unspecified());
    // A hostile request from nobody in particular is refused, and nobody gets a strike.
    let h = head(
        "/a?q=%3Cscript%3Ealert(1)%3C/script%3E",
        &[("x-forwarded-for", "unknown")],
    );
    let (id, response) = answered(check(&s.gate, "10.0.0.2:3000", &h));
    assert_eq!(response.status(), 403);
    let r = record(&s.logs, &id);
    assert_eq!(r.trust, Trust::NoClient);
    assert!(
        r.reason
            .unwrap_or_default()
            .starts_with("not judged: no client")
    );
}

#[test]
fn shadow_mode_passes_and_logs_the_would_be_answer() {
    let proxy = ProxyConfig {
        mode: InlineMode::Shadow,
        ..ProxyConfig::default()
    };
    let s = setup(Arc::new(NoBans), &proxy, &EngineConfig::default());
    let h = head("/items?id=1%27%20OR%20%271%27=%271", &[]);
    let id = pass_id(check(&s.gate, "192.0.2.12:5000", &h));
    let r = record(&s.logs, &id);
    assert!(!r.blocked);
    let reason = r.reason.unwrap_or_default();
    assert!(
        reason.starts_with("shadow: would answer 403: validator"),
        "{reason}"
    );
    assert_eq!(s.gate.stats.shadow_refusals.load(Ordering::Relaxed), 1);
}

#[test]
fn the_user_seam_refuses_a_banned_user() {
    let s = setup(Arc::new(NoBans), &enforce(), &EngineConfig::default());
    let gate = s.gate.with_user_check(Arc::new(BanUser("mallory")));
    // The user header is believed from the trusted proxy.
    let h = head(
        "/",
        &[("x-forwarded-for", "198.51.100.20"), ("x-user", "mallory")],
    );
    let (id, response) = answered(check(&gate, "10.0.0.2:3000", &h));
    assert_eq!(response.status(), 403);
    assert_eq!(record(&s.logs, &id).reason.as_deref(), Some("banned user"));
    let h = head(
        "/",
        &[("x-forwarded-for", "198.51.100.20"), ("x-user", "alice")],
    );
    pass_id(check(&gate, "10.0.0.2:3000", &h));
}

#[test]
fn a_flood_is_answered_with_the_limit_status_and_retry_after() {
    let mut engine = EngineConfig::default();
    engine.black.requests_10s = 5;
    engine.black.flood_requests_10s = 1000;
    let proxy = ProxyConfig {
        limit_status: 429,
        ..ProxyConfig::default()
    };
    let s = setup(Arc::new(NoBans), &proxy, &engine);
    let mut statuses = Vec::new();
    for i in 0..8 {
        match check(
            &s.gate,
            "192.0.2.13:5000",
            &head(&format!("/page/{i}"), &[]),
        ) {
            Verdict::Pass { .. } => statuses.push(200),
            Verdict::Answer { response, .. } => {
                if response.status() == 429 {
                    assert_eq!(response.headers()[http::header::RETRY_AFTER], "10");
                }
                statuses.push(response.status().as_u16());
            }
        }
    }
    assert_eq!(&statuses[..4], &[200, 200, 200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn request_ids_are_unique() {
    let s = setup(Arc::new(NoBans), &enforce(), &EngineConfig::default());
    // One request per client: a hundred from one would be a flood.
    let ids: HashSet<String> = (1..=100)
        .map(|i| {
            let v = check(&s.gate, &format!("192.0.2.{i}:5000"), &head("/", &[]));
            match v {
                Verdict::Pass { id, .. } | Verdict::Answer { id, .. } => id,
            }
        })
        .collect();
    assert_eq!(ids.len(), 100);
}

#[test]
fn the_proxys_gate_logs_a_passed_request_with_the_upstreams_status() {
    let s = setup(Arc::new(NoBans), &enforce(), &EngineConfig::default());
    let proxy = s.gate.for_proxy(Duration::from_mins(1));
    let id = pass_id(check(&proxy, "192.0.2.30:5000", &head("/orders", &[])));
    // Nothing is written before the upstream answers.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.logs
            .query(&LogQuery::default())
            .unwrap()
            .iter()
            .all(|r| r.request_id.as_deref() != Some(id.as_str()))
    );
    proxy.finished(&id, 502);
    let r = record(&s.logs, &id);
    assert_eq!(r.status, Some(502));
    assert!(r.latency_ms.is_some());
    assert_eq!(r.mode, Mode::Inline);
    // A refusal is written at once; ids never repeat between the two gates.
    let (id2, _) = answered(check(
        &proxy,
        "192.0.2.31:5000",
        &head("/a?q=1%20UNION%20SELECT%20pw%20FROM%20users", &[]),
    ));
    assert_eq!(record(&s.logs, &id2).status, Some(403));
    let id3 = pass_id(check(&s.gate, "192.0.2.32:5000", &head("/", &[])));
    assert!(id3 != id && id3 != id2);
    // What never finished is written at shutdown, without a status.
    let id4 = pass_id(check(&proxy, "192.0.2.33:5000", &head("/slow", &[])));
    proxy.flush_pending();
    assert_eq!(record(&s.logs, &id4).status, None);
    // The forward-auth gate ignores `finished`.
    s.gate.finished(&id3, 200);
    assert_eq!(record(&s.logs, &id3).status, None);
}

fn quotas(text: &str) -> Arc<QuotaCheck> {
    #[derive(serde::Deserialize)]
    struct File {
        quotas: crate::config::QuotasConfig,
    }
    let cfg = toml::from_str::<File>(text).expect("config").quotas;
    Arc::new(QuotaCheck::new(&cfg, Vec::new(), b"salt".to_vec(), 1).expect("quotas"))
}

#[test]
fn quotas_charge_only_what_the_bans_and_the_judge_admitted() {
    let banned = Banned(["192.0.2.66".parse().unwrap()].into());
    let s = setup(Arc::new(banned), &enforce(), &EngineConfig::default());
    let q = quotas(
        r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/items"
lifetime = 2
"#,
    );
    let gate = s
        .gate
        .with_user_check(Arc::new(BanUser("mallory")))
        .with_quotas(Arc::clone(&q));
    // A banned address, a banned user and a SQL injection: refused, and nothing is charged.
    let (_, r) = answered(check(&gate, "192.0.2.66:4000", &head("/items", &[])));
    assert_eq!(r.status(), 403);
    let mallory = head(
        "/items",
        &[("x-forwarded-for", "198.51.100.20"), ("x-user", "mallory")],
    );
    for _ in 0..3 {
        let (_, r) = answered(check(&gate, "10.0.0.2:3000", &mallory));
        assert_eq!(r.status(), 403);
    }
    let sqli = head(
        "/items?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
        &[],
    );
    let (_, r) = answered(check(&gate, "192.0.2.11:5000", &sqli));
    assert_eq!(r.status(), 403);
    assert_eq!(q.stats.checked.load(Ordering::Relaxed), 0);
    // Each of those clients still has its whole quota (anonymous: keyed by address).
    let alice = head(
        "/items",
        &[("x-forwarded-for", "198.51.100.20"), ("x-user", "alice")],
    );
    for _ in 0..2 {
        pass_id(check(&gate, "10.0.0.2:3000", &alice));
        pass_id(check(&gate, "192.0.2.11:5000", &head("/items", &[])));
    }
    // The third is refused with the quota's answer.
    let h = head("/items", &[("accept", "application/json")]);
    let (id, r) = answered(check(&gate, "192.0.2.11:5000", &h));
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"lifetime\";q=2");
    assert_eq!(r.headers()["ratelimit"], "\"lifetime\";r=0");
    // A lifetime limit never resets: no Retry-After.
    assert!(r.headers().get(http::header::RETRY_AFTER).is_none());
    assert_eq!(
        r.headers()[http::header::CONTENT_TYPE],
        "application/problem+json"
    );
    let page: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(page["violated_policies"], serde_json::json!(["lifetime"]));
    assert_eq!(page["request_id"], id.as_str());
    let rec = record(&s.logs, &id);
    assert!(rec.blocked);
    assert_eq!(rec.status, Some(429));
    assert_eq!(
        rec.reason.as_deref(),
        Some("quota: lifetime (2 requests) spent")
    );
    // Another path is not limited.
    pass_id(check(&gate, "192.0.2.11:5000", &head("/other", &[])));
    let stats = gate.stats_json();
    assert_eq!(stats["quota_refused"], 1);
    assert_eq!(stats["limited"], 1);
    assert_eq!(stats["quotas"]["checked"], 5);
    assert_eq!(stats["quotas"]["refused"], 1);
}

/// An admitted request's verdict carries `RateLimit-Policy` and `RateLimit` with what is left
/// after its charge (`quotas.headers_on_admit`, on by default); off, none; a path no rule
/// limits, none.
#[test]
fn admitted_requests_carry_ratelimit_unless_headers_on_admit_is_off() {
    const PLANS: &str = r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/items"
per_minute = 3
lifetime = 10
"#;
    let headers_of = |v: Verdict| match v {
        Verdict::Pass { headers, .. } => headers,
        Verdict::Answer { response, .. } => panic!("refused: {}", response.status()),
    };
    let s = setup(Arc::new(NoBans), &enforce(), &EngineConfig::default());
    let gate = s.gate.with_quotas(quotas(PLANS));
    for left in [2, 1, 0] {
        let h = headers_of(check(&gate, "192.0.2.21:5000", &head("/items", &[])));
        assert_eq!(
            h["ratelimit-policy"],
            "\"minute\";q=3;w=60, \"lifetime\";q=10"
        );
        let v = h["ratelimit"].to_str().unwrap();
        let t: u64 = v
            .strip_prefix(&format!("\"minute\";r={left};t="))
            .and_then(|rest| rest.strip_suffix(&format!(", \"lifetime\";r={}", 7 + left)))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("RateLimit: {v}"));
        assert!((1..=60).contains(&t), "{v}");
    }
    assert!(headers_of(check(&gate, "192.0.2.21:5000", &head("/other", &[]))).is_empty());

    let s = setup(Arc::new(NoBans), &enforce(), &EngineConfig::default());
    let off = PLANS.replace("[quotas]\n", "[quotas]\nheaders_on_admit = false\n");
    let gate = s.gate.with_quotas(quotas(&off));
    assert!(headers_of(check(&gate, "192.0.2.22:5000", &head("/items", &[]))).is_empty());
}
