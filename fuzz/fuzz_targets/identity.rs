//! Who sent a request: the configured forwarding header (X-Forwarded-For or Forwarded, every
//! line of it) walked from the right behind trusted proxies, the user header, bearer JWTs
//! (decoded, HS256 checked, the `exp`/`nbf` and `alg` rules), and PEM public keys. The input is
//! a control byte and newline-separated fields: the forwarding header's lines (up to three), the
//! user header and the Authorization value (the whole text is also read as PEM).
//! Invariants: an untrusted peer is its own client; a trusted proxy is never the client; at most
//! `MAX_HOPS` hops are kept; a token is verified only with a key.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use guard_core::net::Net;
use guard_core::tap::ClientHeader;
use guard_core::tap::identity::{ForwardChain, MAX_HOPS, client_of, jwt_sub, trusted, user_id};
use guard_core::tap::jwt::JwtKeys;
use guard_core::tap::pem::parse_public_keys;
use libfuzzer_sys::fuzz_target;

static PROXIES: LazyLock<Vec<Net>> = LazyLock::new(|| {
    ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32"]
        .iter()
        .map(|c| c.parse().expect("a CIDR"))
        .collect()
});

const PEERS: [&str; 4] = ["10.0.0.1", "2001:db8::9", "198.51.100.7", "192.0.2.1"];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.split('\n');
    let mut field = |on: bool| fields.next().filter(|_| on);
    let kind = if ctl & 4 == 4 {
        ClientHeader::Forwarded
    } else {
        ClientHeader::XForwardedFor
    };
    let lines: Vec<&str> = (0..usize::from(ctl >> 6))
        .filter_map(|_| field(true))
        .collect();
    let header = field(ctl & 16 == 16);
    let authorization = field(true);
    let peer: IpAddr = PEERS[usize::from(ctl & 3)].parse().expect("an address");
    let peer_trusted = trusted(peer, &PROXIES);
    let chain =
        (ctl & 8 == 8).then(|| ForwardChain::parse(kind, lines.iter().map(|l| l.as_bytes())));
    if let Some(chain) = &chain {
        assert!(chain.hops().len() <= MAX_HOPS);
    }
    let client = client_of(peer, chain.as_ref(), &PROXIES);
    if !peer_trusted {
        assert_eq!(client, Some(peer));
    }
    if let Some(client) = client {
        assert!(
            client == peer || !trusted(client, &PROXIES),
            "a trusted proxy named"
        );
    }
    let key = (ctl & 32 == 32).then_some(&b"secret"[..]);
    if let Some(user) = user_id(header, peer_trusted, authorization, key) {
        assert!(!user.id.is_empty() || user.source == guard_core::tap::UserSource::Jwt);
        if user.source == guard_core::tap::UserSource::Jwt && key.is_none() {
            assert!(!user.verified);
        }
    }
    if let Some(token) = authorization
        && let Some((_, verified)) = jwt_sub(token, None)
    {
        assert!(!verified);
    }
    // With every check (times, alg) and no key, nothing verifies; with the HS256 key only, an
    // RS256/ES256 token never does.
    if let Some(token) = authorization {
        let now = u64::from(ctl) << 24;
        assert!(!JwtKeys::default().check(token, now).is_some_and(|(_, v)| v));
        if let Some((_, true)) = JwtKeys::new(key, None).check(token, now) {
            assert!(key.is_some());
        }
    }
    // PEM public keys: any text is parsed without panicking.
    let _ = parse_public_keys(&text);
});
