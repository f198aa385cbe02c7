//! The forward-auth endpoint's input: a front end's description of a request (nginx
//! `X-Original-URI`/`-Method`, Traefik `X-Forwarded-Uri`/`-Method`/`-Host`, or Envoy's request
//! line) turned back into the original head, then into the tap's request event. The input is a
//! control byte, the auth request's target, and `name: value` header lines (any bytes; lines
//! that are not a valid header are skipped, as hyper would refuse them). Invariants: no panic;
//! the descriptive headers never reach the event; the client is never a trusted proxy; a
//! target taken from a header keeps its path and query (encoded, never dropped).
#![no_main]

use std::sync::LazyLock;

use guard_daemon::inline::event::{Identity, request_event};
use guard_daemon::inline::front::{FrontEnd, original};
use guard_daemon::net::Net;
use guard_daemon::tap::ClientHeader;
use guard_daemon::tap::jwt::JwtKeys;
use libfuzzer_sys::fuzz_target;

static IDENTITY: LazyLock<Identity> = LazyLock::new(|| Identity {
    trusted_proxies: vec!["127.0.0.1/32".parse::<Net>().expect("a CIDR")],
    client_header: Some(ClientHeader::XForwardedFor),
    user_header: Some("x-user".into()),
    jwt: JwtKeys::new(Some(b"secret"), None),
    real_ip_fallback: true,
});

const PEERS: [&str; 2] = ["127.0.0.1:40000", "198.51.100.7:40000"];
const METHODS: [&str; 4] = ["GET", "POST", "HEAD", "DELETE"];
const DESCRIPTIVE: [&str; 6] = [
    "x-original-uri",
    "x-original-method",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-host",
    "x-forwarded-proto",
];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let mut b = http::Request::builder().method(METHODS[usize::from(ctl & 3)]);
    b = b.uri(http::Uri::try_from(target).unwrap_or_else(|_| http::Uri::from_static("/")));
    for line in lines.take(64) {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        b = b.header(name, value);
    }
    let Ok(request) = b.body(()) else { return };
    let (auth, ()) = request.into_parts();
    let Ok((front, head)) = original(&auth) else {
        return;
    };
    for name in DESCRIPTIVE {
        assert!(!head.headers.contains_key(name), "{name} reached the event");
    }
    let described = match front {
        FrontEnd::Nginx => auth.headers.get("x-original-uri"),
        FrontEnd::Traefik => auth.headers.get("x-forwarded-uri"),
        FrontEnd::Envoy => None,
    };
    if let Some(raw) = described
        && raw.as_bytes().contains(&b'?')
    {
        assert!(head.uri.query().is_some(), "the query was lost");
    }
    let peer = PEERS[usize::from(ctl >> 7)].parse().expect("an address");
    let seen = guard_daemon::inline::Seen {
        peer,
        tls: false,
        head: &head,
        body: &[],
        body_complete: false,
    };
    let ev = request_event(&seen, &IDENTITY, 1, std::time::Duration::from_secs(1));
    assert!(
        !IDENTITY.trusted_proxies.iter().any(|n| n.contains(ev.client)),
        "a trusted proxy named as the client"
    );
});
