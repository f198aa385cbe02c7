//! Probing scenarios that ban directly, whatever the grace period: 404 probing, sensitive
//! files, backdoors, path traversal, login brute force (whatever the login form answers).
use std::time::Duration;

use super::super::Decision;
use super::{Sim, ban_rule, is_ban, req};
use crate::tap::RequestEvent;

const C: &str = "192.0.2.50";

fn paths(sim: &mut Sim, paths: &[&str], status: u16, gap: Duration) -> Vec<Decision> {
    paths
        .iter()
        .map(|p| {
            sim.advance(gap);
            let (path, query) = p.split_once('?').unwrap_or((p, ""));
            let mut r = req(C, path).status(status);
            if !query.is_empty() {
                r = r.query(query);
            }
            sim.send(&r)
        })
        .collect()
}

#[test]
fn probing_ten_distinct_missing_paths_bans() {
    let mut sim = Sim::default();
    let probes: Vec<String> = (0..10).map(|i| format!("/old-{i}/index.php")).collect();
    let probes: Vec<&str> = probes.iter().map(String::as_str).collect();
    let ds = paths(&mut sim, &probes, 404, Duration::from_secs(3));
    assert!(ds[..9].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(ban_rule(&ds[9]).as_deref(), Some("probing"));
    let Decision::Ban { evidence, .. } = &ds[9] else {
        unreachable!()
    };
    assert_eq!(evidence.details.distinct_probe_paths, Some(10));
    assert_eq!(evidence.sample_paths.len(), 8);
}

#[test]
fn missing_static_files_and_slow_probing_do_not_ban() {
    let mut sim = Sim::default();
    let assets: Vec<String> = (0..40).map(|i| format!("/static/img/{i}.png")).collect();
    let assets: Vec<&str> = assets.iter().map(String::as_str).collect();
    let ds = paths(&mut sim, &assets, 404, Duration::from_millis(300));
    assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
    // One miss every ten minutes, among normal pages.
    for i in 0..20 {
        sim.advance(Duration::from_mins(10));
        assert_eq!(
            sim.send(&req(C, &format!("/missing-{i}")).status(404)),
            Decision::Allow
        );
        for _ in 0..3 {
            sim.advance(Duration::from_secs(20));
            assert_eq!(sim.send(&req(C, "/catalogue")), Decision::Allow);
        }
    }
}

#[test]
fn sensitive_files_ban_on_the_third() {
    let mut sim = Sim::default();
    let ds = paths(
        &mut sim,
        &["/.env", "/%2Egit/config", "/wp-admin/install.php"],
        404,
        Duration::from_secs(2),
    );
    assert_eq!(&ds[..2], &[Decision::Allow, Decision::Allow]);
    assert_eq!(ban_rule(&ds[2]).as_deref(), Some("sensitive_files"));
    let Decision::Ban { reason, .. } = &ds[2] else {
        unreachable!()
    };
    assert!(reason.starts_with("sensitive_files:"), "{reason}");
}

#[test]
fn sensitive_files_leak_away_when_rare() {
    let mut sim = Sim::default();
    let ds = paths(
        &mut sim,
        &["/.env", "/.env", "/.env", "/.env"],
        404,
        Duration::from_mins(3),
    );
    assert!(!ds.iter().any(is_ban), "{ds:?}");
}

#[test]
fn backdoor_probes_ban_on_the_second() {
    let mut sim = Sim::default();
    let ds = paths(
        &mut sim,
        &["/wp-content/plugins/x/shell.php", "/uploads/C99.php"],
        404,
        Duration::from_secs(20),
    );
    assert_eq!(ds[0], Decision::Allow);
    assert_eq!(ban_rule(&ds[1]).as_deref(), Some("backdoor"));
}

#[test]
fn path_traversal_probes_ban_on_the_third() {
    let mut sim = Sim::default();
    let ds = paths(
        &mut sim,
        &[
            "/static/..%252f..%252fetc/passwd",
            "/download?file=..%2F..%2F..%2Fetc%2Fshadow",
            "/cgi-bin/.%2e/.%2e/bin/sh",
        ],
        400,
        Duration::from_secs(5),
    );
    assert_eq!(&ds[..2], &[Decision::Allow, Decision::Allow]);
    assert_eq!(ban_rule(&ds[2]).as_deref(), Some("traversal"));
}

#[test]
fn login_brute_force_bans() {
    let mut sim = Sim::default();
    let r = req(C, "/login").post().status(401);
    let ds = sim.send_n(&r, 10, Duration::from_secs(2));
    assert!(ds[..9].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(ban_rule(&ds[9]).as_deref(), Some("brute_force"));
    // 403 on an API token endpoint counts as well.
    let mut sim = Sim::default();
    let r = req(C, "/api/token").post().status(403);
    let ds = sim.send_n(&r, 10, Duration::from_secs(2));
    assert_eq!(ban_rule(&ds[9]).as_deref(), Some("brute_force"));
}

#[test]
fn a_user_mistyping_a_password_is_not_brute_force() {
    let mut sim = Sim::default();
    // Three failures and a success, once an hour, for a day.
    for _ in 0..24 {
        let ds = sim.send_n(
            &req(C, "/login").post().status(401),
            3,
            Duration::from_secs(15),
        );
        assert!(ds.iter().all(|d| *d == Decision::Allow));
        sim.advance(Duration::from_secs(15));
        assert_eq!(
            sim.send(&req(C, "/login").post().status(302)),
            Decision::Allow
        );
        sim.advance(Duration::from_hours(1));
    }
}

/// A credential POST of `body` to `path`, answered `status` with `size` bytes.
fn login_post(path: &str, body: &str, status: u16, size: u64) -> RequestEvent {
    let mut ev = req(C, path).post().status(status).event(Duration::ZERO);
    ev.body = body.as_bytes().to_vec();
    ev.body_len = body.len() as u64;
    ev.bytes_out = size;
    ev
}

/// Sends events built by `make(i)` `n` times, `gap` apart; returns the decisions.
fn send_events(
    sim: &mut Sim,
    n: usize,
    gap: Duration,
    make: impl Fn(usize) -> RequestEvent,
) -> Vec<Decision> {
    (0..n)
        .map(|i| {
            if i > 0 {
                sim.advance(gap);
            }
            let mut ev = make(i);
            ev.ts = sim.now;
            let d = sim.engine.observe(sim.now, &ev, None);
            sim.settle(&d);
            d
        })
        .collect()
}

#[test]
fn brute_force_on_a_form_that_answers_200_is_banned() {
    // Django's LoginView: every wrong guess gets the same 200 page of the same size.
    let mut sim = Sim::default();
    let ds = send_events(&mut sim, 10, Duration::from_millis(100), |i| {
        login_post(
            "/accounts/login/",
            &format!("username=admin&password=guess{i:04}"),
            200,
            2311,
        )
    });
    // 1 + 2 + 2 + 2 + 2 = 9, then 11: banned on the sixth guess.
    assert!(ds[..5].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(ban_rule(&ds[5]).as_deref(), Some("brute_force"));
}

#[test]
fn login_attempts_count_whatever_the_answer() {
    // Answers that differ each time (a page echoing the user name, a JSON error with the
    // attempt count): one hit each, banned on the tenth.
    let mut sim = Sim::default();
    let ds = send_events(&mut sim, 10, Duration::from_millis(300), |i| {
        login_post(
            "/api/v2/auth/signin.json",
            &format!("{{\"user\":\"u{i}\",\"password\":\"p\"}}"),
            200,
            400 + 100 * i as u64,
        )
    });
    assert!(ds[..9].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(ban_rule(&ds[9]).as_deref(), Some("brute_force"));
    // Spring Security answers every failure with a redirect: still one hit each.
    let mut sim = Sim::default();
    let ds = send_events(&mut sim, 10, Duration::from_millis(300), |i| {
        login_post("/login", &format!("username=a&password={i}"), 302, 300)
    });
    assert_eq!(ban_rule(&ds[9]).as_deref(), Some("brute_force"));
}

#[test]
fn people_logging_in_are_not_brute_force() {
    let mut sim = Sim::default();
    // Someone who mistypes twice, then gets in (a redirect), every ten minutes all day.
    for _ in 0..48 {
        let ds = send_events(&mut sim, 3, Duration::from_secs(8), |i| {
            let status = if i == 2 { 302 } else { 200 };
            login_post(
                "/accounts/login/",
                &format!("username=carol&password=try{i}"),
                status,
                2311,
            )
        });
        assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
        sim.advance(Duration::from_mins(10));
    }
    // An office behind one address: ten people log in within five minutes, each answered
    // with a redirect of the same size. (Logins are counted whatever the answer, so a steady
    // two or more a minute from one address for five minutes would be taken for guessing.)
    let ds = send_events(&mut sim, 10, Duration::from_secs(30), |i| {
        login_post(
            "/accounts/login/",
            &format!("username=user{i:02}&password=correct-horse-{i}"),
            302,
            512,
        )
    });
    assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
    // Posts elsewhere (comments, searches) and the same body again (a double submit) are not
    // repeated answers.
    let ds = send_events(&mut sim, 30, Duration::from_secs(2), |i| {
        if matches!(i, 5 | 6) {
            login_post("/login", "username=dave&password=same", 200, 2311)
        } else {
            login_post("/comments", &format!("text=hello {i}"), 200, 2311)
        }
    });
    assert!(ds.iter().all(|d| *d == Decision::Allow), "{ds:?}");
}

#[test]
fn login_words_name_login_endpoints_anywhere_in_the_path() {
    use super::super::patterns::any_segment;
    let words = super::super::EngineConfig::default().scenarios.login_words;
    for p in [
        "/accounts/login/",
        "/api/v2/auth/signin.json",
        "/en/user/log-in",
        "/wp-login.php",
        "/sso/authenticate",
    ] {
        assert!(any_segment(p, &words), "{p}");
    }
    for p in ["/blog/logins-are-hard", "/catalog/", "/loginhelp", "/"] {
        assert!(!any_segment(p, &words), "{p}");
    }
}

#[test]
fn head_requests_for_missing_paths_are_enumeration() {
    let mut sim = Sim::default();
    let mut ds = Vec::new();
    for p in [
        "/wordpress/",
        "/wiki/",
        "/cgi-bin/test.cgi",
        "/manager/html",
        "/phpbb/",
    ] {
        let mut r = req(C, p).status(404);
        "HEAD".clone_into(&mut r.method);
        ds.push(sim.send(&r));
        sim.advance(Duration::from_millis(20));
    }
    assert!(ds[..3].iter().all(|d| *d == Decision::Allow), "{ds:?}");
    assert_eq!(ban_rule(&ds[3]).as_deref(), Some("enumeration"));
}

#[test]
fn head_requests_that_find_their_pages_are_not_enumeration() {
    let mut sim = Sim::default();
    // An uptime monitor and a link checker: HEAD for pages that exist, and one dead link.
    let mut ds = Vec::new();
    for i in 0..60 {
        let (p, status) = match i % 6 {
            0 => ("/".to_owned(), 200),
            5 if i == 5 => ("/old-post".to_owned(), 404),
            _ => (format!("/posts/{i}"), 200),
        };
        let mut r = req(C, &p).status(status);
        "HEAD".clone_into(&mut r.method);
        ds.push(sim.send(&r));
        sim.advance(Duration::from_secs(1));
    }
    assert!(!ds.iter().any(is_ban), "{ds:?}");
}
