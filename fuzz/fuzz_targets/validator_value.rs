//! One attacker-chosen value through the normaliser and the rules, placed where requests carry
//! values: a query parameter, the path, a plain header, a cookie, a URL header (Referer), Basic
//! and Bearer credentials, a form field. The control byte picks the place and the paranoia level,
//! and tiny or default bounds; the rest (lossy UTF-8) is the value, still encoded.
#![no_main]

use std::sync::LazyLock;

use guard_core::validate::{Request, Validator, ValidatorConfig};
use libfuzzer_sys::fuzz_target;

static VALIDATORS: LazyLock<Vec<Validator>> = LazyLock::new(|| {
    [(1, false), (4, false), (2, true), (4, true)]
        .into_iter()
        .map(|(paranoia, tiny)| {
            let mut config = ValidatorConfig {
                paranoia,
                ..ValidatorConfig::default()
            };
            if tiny {
                config.max_value_bytes = 9;
                config.max_decode_passes = 1;
                config.max_fragment_chars = 1;
            }
            Validator::new(&config).expect("a valid config")
        })
        .collect()
});

// The rules compile once, before the clock of the first input starts.
fuzz_target!(init: LazyLock::force(&VALIDATORS), |data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let validator = &VALIDATORS[usize::from(ctl >> 4) % VALIDATORS.len()];
    let value = String::from_utf8_lossy(rest);
    let value = value.as_ref();
    let query = format!("q={value}");
    let path = format!("/{value}");
    let cookie = format!("session=1; pref={value}");
    let bearer = format!("Bearer {value}");
    let basic = format!("Basic {value}");
    let mut headers = vec![("Host", "shop.example.com"), ("User-Agent", "Mozilla/5.0")];
    let mut req = Request {
        method: "GET",
        version: Some("HTTP/1.1"),
        path: "/search",
        ..Request::default()
    };
    let form = query.as_bytes();
    match ctl & 7 {
        0 => req.query = &query,
        1 => req.path = &path,
        2 => headers.push(("X-Api-Version", value)),
        3 => headers.push(("Cookie", &cookie)),
        4 => headers.push(("Referer", value)),
        5 => headers.push(("Authorization", &bearer)),
        6 => headers.push(("Authorization", &basic)),
        _ => {
            req.method = "POST";
            req.body = form;
            req.content_type = Some("application/x-www-form-urlencoded");
        }
    }
    req.headers = &headers;
    let verdict = validator.inspect(&req);
    assert_eq!(
        verdict.score,
        verdict.findings.iter().map(|f| f.weight).sum::<u32>()
    );
});
