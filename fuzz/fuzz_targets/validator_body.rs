//! Request bodies through `Validator::inspect`: multipart (the boundary fuzzed too), JSON, forms,
//! XML and untyped bodies. The control byte picks the content type (or takes the body's first
//! line as the Content-Type value) and the paranoia level; the rest is the body. Bounds are tiny
//! half of the time, so the body cut and the value cuts land anywhere, inside characters too.
#![no_main]

use std::sync::LazyLock;

use guard_core::validate::{Request, Validator, ValidatorConfig};
use libfuzzer_sys::fuzz_target;

static VALIDATORS: LazyLock<Vec<Validator>> = LazyLock::new(|| {
    [(1, false), (4, false), (1, true), (4, true)]
        .into_iter()
        .map(|(paranoia, tiny)| {
            let mut config = ValidatorConfig {
                paranoia,
                ..ValidatorConfig::default()
            };
            if tiny {
                config.max_body_bytes = 163;
                config.max_value_bytes = 5;
                config.max_values = 7;
                config.max_fragment_chars = 2;
            }
            Validator::new(&config).expect("a valid config")
        })
        .collect()
});

const TYPES: [&str; 7] = [
    "multipart/form-data; boundary=b",
    "multipart/related; type=\"application/xop+xml\"; boundary=\"b\"",
    "application/json",
    "application/x-www-form-urlencoded",
    "text/xml; charset=utf-8",
    "application/json; charset=utf-7",
    "text/plain",
];

// The rules compile once, before the clock of the first input starts.
fuzz_target!(init: LazyLock::force(&VALIDATORS), |data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let validator = &VALIDATORS[usize::from(ctl >> 4) % VALIDATORS.len()];
    let pick = usize::from(ctl & 15);
    let (content_type, body): (Option<String>, &[u8]) = if pick < TYPES.len() {
        (Some(TYPES[pick].to_owned()), rest)
    } else if pick == 15 {
        (None, rest)
    } else {
        let at = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let ct = String::from_utf8_lossy(&rest[..at]).into_owned();
        (Some(ct), rest.get(at + 1..).unwrap_or(&[]))
    };
    let headers = [
        ("Host", "shop.example.com"),
        ("Content-Type", content_type.as_deref().unwrap_or("")),
    ];
    let verdict = validator.inspect(&Request {
        method: "POST",
        version: Some("HTTP/1.1"),
        path: "/upload",
        query: "",
        headers: &headers[..if content_type.is_some() { 2 } else { 1 }],
        body,
        content_type: content_type.as_deref(),
    });
    assert_eq!(
        verdict.score,
        verdict.findings.iter().map(|f| f.weight).sum::<u32>()
    );
});
