//! Unit tests of the validator: helpers here, every category in `categories` (positive and
//! negative, the seed's false positives and the bypasses it missed), extraction, configuration,
//! bounds and random input in `engine`, request-line and header checks and the paranoia
//! setting in `protocol`, and the rules for evasive payloads in `rules`.

use super::*;

mod categories;
mod engine;
mod protocol;
mod rules;

fn validator() -> Validator {
    Validator::new(&ValidatorConfig::default()).expect("default config builds")
}

/// Inspects a request given as method, URI, headers and body; a `Host` is added when the
/// headers have none (every HTTP/1.1 request carries one).
fn check(v: &Validator, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Verdict {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !all.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        all.insert(0, ("Host", "shop.example.com"));
    }
    let headers = all.as_slice();
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| *v);
    v.inspect(&Request {
        method,
        version: Some("HTTP/1.1"),
        path,
        query,
        headers,
        body: body.as_bytes(),
        content_type,
    })
}

fn get(uri: &str) -> Verdict {
    check(
        &validator(),
        "GET",
        uri,
        &[("User-Agent", "Mozilla/5.0")],
        "",
    )
}

fn post_form(body: &str) -> Verdict {
    check(
        &validator(),
        "POST",
        "/post",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    )
}

fn post_json(body: &str) -> Verdict {
    check(
        &validator(),
        "POST",
        "/api",
        &[("Content-Type", "application/json")],
        body,
    )
}

#[track_caller]
fn assert_blocked(v: &Verdict, category: Category) {
    assert_eq!(v.action, Action::Block, "expected block: {v:#?}");
    assert!(
        v.findings.iter().any(|f| f.category == category),
        "expected a {category:?} finding: {v:#?}"
    );
}

#[track_caller]
fn assert_flagged(v: &Verdict, category: Category) {
    assert_ne!(v.action, Action::Allow, "expected block or triage: {v:#?}");
    assert!(
        v.findings.iter().any(|f| f.category == category),
        "expected a {category:?} finding: {v:#?}"
    );
}

#[track_caller]
fn assert_fired(v: &Verdict, rule: &str) {
    assert!(
        v.findings.iter().any(|f| f.rule == rule),
        "expected {rule}: {v:#?}"
    );
}

#[track_caller]
fn assert_not_fired(v: &Verdict, rule: &str) {
    assert!(
        !v.findings.iter().any(|f| f.rule == rule),
        "unexpected {rule}: {v:#?}"
    );
}

#[track_caller]
fn assert_allowed(v: &Verdict) {
    assert_eq!(v.action, Action::Allow, "expected allow: {v:#?}");
}

#[test]
fn validator_is_send_sync_and_rules_compile() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Validator>();
    let _ = validator();
}
