//! Who sent a request: forwarding headers (X-Forwarded-For, Forwarded) walked behind trusted
//! proxies, the user header, and bearer JWTs (decoded, HS256 checked). The input is a control
//! byte and four newline-separated fields: X-Forwarded-For, Forwarded, the user header and the
//! Authorization value. Invariants: an untrusted peer is its own client; a token is verified
//! only with a key.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use guard_core::tap::Cidr;
use guard_core::tap::identity::{client_ip, jwt_sub, user_id};
use libfuzzer_sys::fuzz_target;

static PROXIES: LazyLock<Vec<Cidr>> = LazyLock::new(|| {
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
    let xff = field(ctl & 4 == 4);
    let forwarded = field(ctl & 8 == 8);
    let header = field(ctl & 16 == 16);
    let authorization = field(true);
    let peer: IpAddr = PEERS[usize::from(ctl & 3)].parse().expect("an address");
    let peer_trusted = PROXIES.iter().any(|c| c.contains(peer));
    let client = client_ip(peer, xff, forwarded, &PROXIES);
    if !peer_trusted || (xff.is_none() && forwarded.is_none()) {
        assert_eq!(client, peer);
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
});
