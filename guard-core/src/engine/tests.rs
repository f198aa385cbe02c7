//! Tests of the engine with synthetic requests and an explicit clock: helpers and the pure parts
//! here, the rules in `tests/`.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::patterns::{Matcher, has_prefix, is_static, is_traversal, normalise, trailing_id};
use super::{Decision, Engine, EngineConfig, EngineError, Mode, Rule};
use crate::tap::{RequestEvent, RequestHeaders, UserId, UserSource};

mod bans;
mod benign;
mod black;
mod grey;
mod rates;
mod scenarios;
mod users;

/// A Thursday in 2027, well inside `u32` seconds.
pub(super) const T0: u64 = 1_800_000_000;
pub(super) const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// One synthetic request.
#[derive(Debug, Clone)]
pub(super) struct Req {
    client: IpAddr,
    method: String,
    path: String,
    query: Option<String>,
    status: u16,
    ua: Option<String>,
    user: Option<UserId>,
}

pub(super) fn req(client: &str, path: &str) -> Req {
    Req {
        client: client.parse().expect("test address"),
        method: "GET".to_owned(),
        path: path.to_owned(),
        query: None,
        status: 200,
        ua: Some(BROWSER.to_owned()),
        user: None,
    }
}

impl Req {
    pub(super) fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub(super) fn ua(mut self, ua: Option<&str>) -> Self {
        self.ua = ua.map(str::to_owned);
        self
    }

    pub(super) fn query(mut self, q: &str) -> Self {
        self.query = Some(q.to_owned());
        self
    }

    pub(super) fn post(mut self) -> Self {
        "POST".clone_into(&mut self.method);
        self
    }

    pub(super) fn user(mut self, id: &str, verified: bool) -> Self {
        self.user = Some(UserId {
            id: id.to_owned(),
            verified,
            source: UserSource::Header,
        });
        self
    }

    pub(super) fn event(&self, now: Duration) -> RequestEvent {
        RequestEvent {
            conn_id: 1,
            ts: now,
            client: self.client,
            trust: crate::tap::Trust::Verified,
            peer: SocketAddr::new(self.client, 40_000),
            server: "192.0.2.1:80".parse().expect("test address"),
            user: self.user.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            http_minor: 1,
            headers: RequestHeaders {
                user_agent: self.ua.clone(),
                ..RequestHeaders::default()
            },
            all_headers: crate::tap::http::HeaderList::default(),
            body: Vec::new(),
            body_len: 0,
            status: Some(self.status),
            latency: Some(Duration::from_millis(5)),
            bytes_in: 100,
            bytes_out: 1000,
            response_content_type: None,
        }
    }
}

/// An engine and its clock, and the shell's answer to ban orders.
pub(super) struct Sim {
    pub(super) engine: Engine,
    pub(super) now: Duration,
    /// How every ban order ends (a shell that enforces them all, unless a test says otherwise);
    /// `None` = no answer.
    pub(super) outcome: Option<super::BanOutcome>,
}

impl Sim {
    pub(super) fn new(cfg: &EngineConfig) -> Self {
        cfg.validate().expect("test config is valid");
        Self {
            engine: Engine::new(cfg),
            now: Duration::from_secs(T0),
            outcome: Some(super::BanOutcome::Enforced),
        }
    }

    pub(super) fn default() -> Self {
        Self::new(&EngineConfig::default())
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    pub(super) fn send(&mut self, r: &Req) -> Decision {
        let ev = r.event(self.now);
        let d = self.engine.observe(self.now, &ev, None);
        self.settle(&d);
        d
    }

    /// Answers a ban order as `outcome` says.
    pub(super) fn settle(&mut self, d: &Decision) {
        if let Some(outcome) = self.outcome {
            self.settle_as(d, outcome);
        }
    }

    /// Answers a ban order with `outcome`.
    pub(super) fn settle_as(&mut self, d: &Decision, outcome: super::BanOutcome) {
        if let Decision::Ban {
            ticket,
            shadow: false,
            ..
        } = d
        {
            self.engine.ban_settled(ticket, outcome);
        }
    }

    /// Sends `r` `n` times, `gap` apart (the first now), returning every decision.
    pub(super) fn send_n(&mut self, r: &Req, n: usize, gap: Duration) -> Vec<Decision> {
        (0..n)
            .map(|i| {
                if i > 0 {
                    self.advance(gap);
                }
                self.send(r)
            })
            .collect()
    }

    /// Takes the client past the grace period with quiet browsing (one page a minute for 20
    /// minutes), then lets a minute pass so no window holds the warm-up.
    pub(super) fn warm(&mut self, client: &str, user: Option<&str>) {
        for i in 0..20 {
            let mut r = req(client, &format!("/article/{}", i * 7));
            if let Some(u) = user {
                r = r.user(u, true);
            }
            let d = self.send(&r);
            assert!(
                matches!(d, Decision::Allow | Decision::Triage { .. }),
                "warm-up {i}: {d:?}"
            );
            self.advance(Duration::from_mins(1));
        }
        self.advance(Duration::from_mins(2));
    }
}

/// The defaults with the seed's rate profile: a rate alone counts, as in the seed.
pub(super) fn seed_config() -> EngineConfig {
    EngineConfig {
        rate_profile: super::RateProfile::Seed,
        ..EngineConfig::default()
    }
}

/// Scores are visible: every score from 1 is triaged, no interval, nothing hard-blocked; the
/// rate points are given as the seed gave them.
pub(super) fn scoring_config() -> EngineConfig {
    let mut cfg = seed_config();
    cfg.grey.threshold = 1;
    cfg.grey.hard_block = 1000;
    cfg.triage_interval = Duration::ZERO;
    cfg
}

/// The score and rules of a triage, `None` for anything else.
pub(super) fn triage_of(d: &Decision) -> Option<(u32, Vec<Rule>)> {
    match d {
        Decision::Triage { score, rules, .. } => Some((*score, rules.clone())),
        _ => None,
    }
}

pub(super) fn is_ban(d: &Decision) -> bool {
    matches!(d, Decision::Ban { .. })
}

pub(super) fn is_block(d: &Decision) -> bool {
    matches!(d, Decision::Block { .. })
}

/// The rule recorded in a ban's evidence.
pub(super) fn ban_rule(d: &Decision) -> Option<String> {
    match d {
        Decision::Ban { evidence, .. } => Some(evidence.rule.clone()),
        _ => None,
    }
}

#[test]
fn default_config_is_valid_and_seeded() {
    let cfg = EngineConfig::default();
    cfg.validate().unwrap();
    assert_eq!(cfg.mode, Mode::Enforce);
    assert_eq!(cfg.black.requests_10s, 50);
    assert_eq!(cfg.black.error_percent, 75);
    assert_eq!(cfg.grey.threshold, 4);
    assert_eq!(cfg.grey.hard_block, 8);
    assert_eq!(cfg.grey.grace_requests_24h, 20);
    assert_eq!(cfg.grey.weights.sequential_ids, 5);
}

/// The `[engine]` table of a config file, as the daemon's config reads it.
#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    engine: EngineConfig,
}

#[test]
fn config_section_parses_and_names_bad_keys() {
    let text = "[engine]\nmode = \"shadow\"\nmax_clients = 10\n[engine.bans]\nttl = \"30m\"\n\
                max_ttl = 86400\n[engine.grey.weights]\nsensitive_path = 6\n";
    let c: File = toml::from_str(text).unwrap();
    assert_eq!(c.engine.mode, Mode::Shadow);
    assert_eq!(c.engine.max_clients, 10);
    assert_eq!(c.engine.bans.ttl, Duration::from_mins(30));
    assert_eq!(c.engine.bans.max_ttl, Duration::from_hours(24));
    assert_eq!(c.engine.grey.weights.sensitive_path, 6);
    assert_eq!(c.engine.grey.weights.unauthenticated, 1);

    let e = toml::from_str::<File>("[engine]\nbogus = 1\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bogus"), "{e}");
    let mut cfg = EngineConfig::default();
    cfg.grey.hard_block = 2;
    assert!(matches!(
        cfg.validate(),
        Err(EngineError::InvalidConfig {
            key: "engine.grey.hard_block",
            ..
        })
    ));
    let mut cfg = EngineConfig::default();
    cfg.bans.max_ttl = Duration::from_mins(1);
    assert!(matches!(
        cfg.validate(),
        Err(EngineError::InvalidConfig {
            key: "engine.bans.max_ttl",
            ..
        })
    ));
}

#[test]
fn paths_are_decoded_like_a_server_would() {
    assert_eq!(normalise("/A%2541dmin//x"), "/aadmin/x");
    assert_eq!(normalise("/%252e%252e%252fetc"), "/../etc");
    assert_eq!(normalise("\\..\\windows"), "/../windows");
    assert!(has_prefix("/admin", "/admin"));
    assert!(has_prefix("/admin/users", "/admin"));
    assert!(has_prefix("/admin.php", "/admin"));
    assert!(!has_prefix("/administrators", "/admin"));
    assert!(has_prefix("/wp-admin/x", "/wp-admin/"));
    assert_eq!(trailing_id("/users/42"), Some(("/users/", 42)));
    assert_eq!(trailing_id("/users/42/"), Some(("/users/", 42)));
    assert_eq!(trailing_id("/users/me"), None);
    assert_eq!(trailing_id("/n/1234567890123456789"), None);
    let ext = EngineConfig::default().static_extensions;
    assert!(is_static("/static/app.min.js", &ext));
    assert!(is_static("/img/logo.PNG", &ext));
    assert!(!is_static("/.env", &ext));
    assert!(!is_static("/js/", &ext));
    assert!(is_traversal(
        &normalise("/static/..%252f..%252fetc/passwd"),
        ""
    ));
    assert!(is_traversal(
        "/download",
        &normalise("file=..%2F..%2Fsecret")
    ));
    assert!(is_traversal(&normalise("/a/..%c0%af..%c0%afetc"), ""));
    assert!(is_traversal("/x/..;/admin", ""));
    assert!(!is_traversal("/docs/v1.2/..notes", "q=a.b"));
}

#[test]
fn the_example_file_documents_the_defaults() {
    let text = include_str!("../../../guard.example.toml");
    let c: File = toml::from_str(text).unwrap();
    assert_eq!(c.engine, EngineConfig::default());
}

#[test]
fn matcher_finds_any_needle_in_one_pass() {
    let m = Matcher::new(&["shell.php", "/.git/", "x", "", "b374k"], false);
    assert!(m.is_match("/uploads/shell.php"));
    assert!(m.is_match("/a/.git/config"));
    assert!(m.is_match("/box"));
    assert!(m.is_match("b374k"));
    assert!(!m.is_match("/shell.ph"));
    assert!(!m.is_match(""));
    assert!(!m.is_match("/b374"));
    let ua = Matcher::new(&["Python-Requests", "curl"], true);
    assert!(ua.is_match("python-requests/2.31"));
    assert!(ua.is_match("CURL/8"));
    assert!(!ua.is_match("Mozilla/5.0 (X11; Linux x86_64)"));
    assert!(!ua.is_match("cur"));
}
