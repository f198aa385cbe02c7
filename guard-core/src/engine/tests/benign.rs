//! Ordinary traffic that must never be blocked, banned or sent to the AI with default settings.
use std::time::Duration;

use super::super::Decision;
use super::{BROWSER, Sim, req};

fn assert_all_allowed(ds: &[Decision], what: &str) {
    for (i, d) in ds.iter().enumerate() {
        assert_eq!(*d, Decision::Allow, "{what}: request {i}");
    }
}

#[test]
fn browser_fetching_pages_and_their_assets() {
    let mut sim = Sim::default();
    let c = "198.51.100.20";
    let mut ds = Vec::new();
    for page in 0..60 {
        ds.push(sim.send(&req(c, &format!("/products/blue-shoe-{page}x"))));
        for a in 0..25 {
            sim.advance(Duration::from_millis(20));
            let path = match a % 3 {
                0 => format!("/static/js/chunk-{a}.js"),
                1 => format!("/static/css/site-{a}.css"),
                _ => format!("/media/p{page}/{a}.webp"),
            };
            ds.push(sim.send(&req(c, &path)));
        }
        ds.push(sim.send(&req(c, "/favicon.ico").status(404)));
        ds.push(sim.send(&req(c, "/api/cart")));
        sim.advance(Duration::from_secs(30));
    }
    assert_all_allowed(&ds, "browser");
}

#[test]
fn steady_api_clients() {
    let mut sim = Sim::default();
    // An authenticated integration with a script user agent, one call a second for 10 min.
    let r = req("198.51.100.21", "/api/v1/orders")
        .query("page=2")
        .ua(Some("python-requests/2.32"))
        .user("svc-billing", true);
    assert_all_allowed(&sim.send_n(&r, 600, Duration::from_secs(1)), "service");
    // An anonymous one (unverified token): user agent 2 + unauthenticated 1 < 4.
    let r = req("198.51.100.22", "/api/v1/status")
        .ua(Some("okhttp/4.12"))
        .user("claimed", false);
    assert_all_allowed(&sim.send_n(&r, 600, Duration::from_secs(1)), "anonymous");
}

#[test]
fn user_paging_slowly_through_items() {
    let mut sim = Sim::default();
    let c = "198.51.100.23";
    sim.warm(c, None);
    let ds: Vec<_> = (1..=20)
        .map(|i| {
            sim.advance(Duration::from_secs(20));
            sim.send(&req(c, &format!("/items/{i}")))
        })
        .collect();
    assert_all_allowed(&ds, "paging");
}

#[test]
fn a_few_typos_while_browsing() {
    let mut sim = Sim::default();
    let c = "198.51.100.24";
    let mut ds = Vec::new();
    for i in 0..60 {
        sim.advance(Duration::from_secs(10));
        let r = match i {
            10 => req(c, "/prodcuts").status(404),
            25 => req(c, "/abuot").status(404),
            40 => req(c, "/contcat").status(404),
            _ => req(c, &format!("/blog/post-{}x", i % 7)),
        };
        ds.push(sim.send(&r.ua(Some(BROWSER))));
    }
    assert_all_allowed(&ds, "typos");
}
