//! Who sent a request: the client address (the peer, or what a trusted proxy says in
//! X-Forwarded-For / Forwarded) and the user (a configured header, or the `sub` claim of a bearer
//! JWT, verified only when an HS256 key is configured and the signature checks).
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::net::Net;

/// Longest JWT we decode; longer tokens are ignored (no user id).
const MAX_JWT: usize = 8192;

/// Where a user id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    /// The configured user header.
    Header,
    /// The `sub` claim of a bearer JWT.
    Jwt,
}

/// A user id with how much it can be believed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserId {
    pub id: String,
    /// Header: the peer is a trusted proxy. JWT: the HS256 signature checked with the configured
    /// key. Otherwise the id is only a claim of the client.
    pub verified: bool,
    pub source: UserSource,
}

fn trusted(ip: IpAddr, proxies: &[Net]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client address: the peer itself, unless the peer is a trusted proxy, in which case the
/// forwarding chain is walked from the right, skipping trusted proxies, to the first other hop.
#[must_use]
pub fn client_ip(
    peer: IpAddr,
    xff: Option<&str>,
    forwarded: Option<&str>,
    proxies: &[Net],
) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if let Some(xff) = xff {
        xff.split(',').map(parse_hop).collect()
    } else if let Some(fwd) = forwarded {
        fwd.split(',')
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_hop(v.trim().trim_matches('"')))
            })
            .collect()
    } else {
        return peer;
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        // An unparsable hop ("unknown", obfuscated): stop at the last one we could read.
        let Some(ip) = hop else { break };
        client = ip;
        if !trusted(ip, proxies) {
            break;
        }
    }
    client
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// The user of a request: the configured header wins, then a bearer JWT's `sub`.
#[must_use]
pub fn user_id(
    header: Option<&str>,
    peer_trusted: bool,
    authorization: Option<&str>,
    key: Option<&[u8]>,
) -> Option<UserId> {
    if let Some(h) = header.filter(|h| !h.is_empty()) {
        return Some(UserId {
            id: h.to_owned(),
            verified: peer_trusted,
            source: UserSource::Header,
        });
    }
    let auth = authorization?.trim();
    let (scheme, token) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (id, verified) = jwt_sub(token.trim(), key)?;
    Some(UserId {
        id,
        verified,
        source: UserSource::Jwt,
    })
}

fn b64(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}

/// The `sub` claim of a compact JWS, and whether its HS256 signature checks with `key`.
#[must_use]
pub fn jwt_sub(token: &str, key: Option<&[u8]>) -> Option<(String, bool)> {
    if token.len() > MAX_JWT {
        return None;
    }
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: serde_json::Value = serde_json::from_slice(&b64(payload)?).ok()?;
    let sub = match claims.get("sub")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let verified = key.is_some_and(|key| {
        let alg_ok = b64(header)
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .is_some_and(|h| h.get("alg").and_then(|a| a.as_str()) == Some("HS256"));
        let Some(sig) = b64(signature) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return false;
        };
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        alg_ok && mac.verify_slice(&sig).is_ok()
    });
    Some((sub, verified))
}
