//! Whole requests through `Validator::inspect` (extraction, normalisation, protocol checks,
//! multipart, JSON, XML, the rules). The input is a control byte, then a request head as text
//! (`METHOD target VERSION` and `Name: value` lines), a NUL byte, and the body. The control byte
//! picks the paranoia level, default or tiny bounds (so every truncation path runs, on any
//! character boundary), and whether the version is known. Invariants: the score is the sum of the
//! findings, the action follows the thresholds, fragments stay within their bound.
#![no_main]

use std::sync::LazyLock;

use guard_core::validate::{Action, Request, Validator, ValidatorConfig, Verdict};
use libfuzzer_sys::fuzz_target;

/// Paranoia 1–4 with default bounds, then the same with tiny ones.
static VALIDATORS: LazyLock<Vec<Validator>> = LazyLock::new(|| {
    let mut all = Vec::new();
    for tiny in [false, true] {
        for paranoia in 1..=4 {
            let mut config = ValidatorConfig {
                paranoia,
                ..ValidatorConfig::default()
            };
            if tiny {
                config.max_body_bytes = 61;
                config.max_value_bytes = 7;
                config.max_values = 5;
                config.max_decode_passes = 2;
                config.max_fragment_chars = 3;
            }
            all.push(Validator::new(&config).expect("a valid config"));
        }
    }
    all
});

fn check(v: &Validator, verdict: &Verdict) {
    let config = v.config();
    let sum: u32 = verdict.findings.iter().map(|f| f.weight).sum();
    assert_eq!(verdict.score, sum);
    let expected = if sum >= config.block_threshold {
        Action::Block
    } else if sum >= config.triage_threshold {
        Action::Triage
    } else {
        Action::Allow
    };
    assert_eq!(verdict.action, expected);
    for f in &verdict.findings {
        assert!(f.fragment.chars().count() <= config.max_fragment_chars + 1);
    }
}

// The rules compile once, before the clock of the first input starts.
fuzz_target!(init: LazyLock::force(&VALIDATORS), |data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let validator = &VALIDATORS[usize::from(ctl & 7)];
    let (head, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let mut words = first.splitn(3, ' ');
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("");
    let version = match (words.next(), ctl & 8 == 8) {
        (Some(v), _) => Some(v),
        (None, true) => None,
        (None, false) => Some(""),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n, v.trim()))
        .collect();
    let content_type = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| *v);
    let verdict = validator.inspect(&Request {
        method,
        version,
        path,
        query,
        headers: &headers,
        body,
        content_type,
    });
    check(validator, &verdict);
});
