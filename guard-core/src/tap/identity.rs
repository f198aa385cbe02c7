//! Who sent a request: the client address (the peer, or what a trusted proxy says in
//! X-Forwarded-For / Forwarded) and the user (a configured header, or the `sub` claim of a bearer
//! JWT, verified only when an HS256 key is configured and the signature checks).
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::ClientHeader;
use crate::net::Net;

/// Longest JWT we decode; longer tokens are ignored (no user id).
const MAX_JWT: usize = 8192;

/// Longest user id guard bans or stores, in bytes. Ids come from the network (headers, JWT
/// claims) and from operators: a longer one is refused, never cut (a cut id could name
/// someone else).
pub const MAX_USER_ID: usize = 256;

/// Why a user id cannot be banned or stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("the user id is empty")]
    Empty,
    #[error("the user id is {len} bytes long; at most {MAX_USER_ID} are accepted")]
    TooLong { len: usize },
    #[error("the user id contains a control character (U+{code:04X})")]
    Control { code: u32 },
}

/// Checks that `id` can be a user ban's key: not empty, at most [`MAX_USER_ID`] bytes, no
/// control characters (they would forge lines in logs and tables).
pub fn check_user_id(id: &str) -> Result<(), UserIdError> {
    if id.is_empty() {
        return Err(UserIdError::Empty);
    }
    if id.len() > MAX_USER_ID {
        return Err(UserIdError::TooLong { len: id.len() });
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(UserIdError::Control { code: u32::from(c) });
    }
    Ok(())
}

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

/// True when `ip` is one of the trusted proxies.
#[must_use]
pub fn trusted(ip: IpAddr, proxies: &[Net]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// Hops kept from the right of a forwarding header; a chain of more trusted proxies than this
/// names no client.
pub const MAX_HOPS: usize = 16;

/// The rightmost hops of the configured forwarding header (every line of it, in order), parsed
/// from the whole header value (never a truncated copy): the hop the nearest proxy wrote first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardChain {
    /// Nearest hop first; `None` for a hop that is not an address (`unknown`, an obfuscated
    /// identifier, an empty element, garbage).
    hops: Vec<Option<IpAddr>>,
}

impl ForwardChain {
    /// Parses the values of every line of `header`, in the order they were sent, from the right.
    /// Only the rightmost [`MAX_HOPS`] hops are kept: nothing further left can matter.
    #[must_use]
    pub fn parse<'a>(
        header: ClientHeader,
        values: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> Self {
        let mut hops = Vec::new();
        'lines: for value in values.rev() {
            for element in value.rsplit(|&b| b == b',') {
                if hops.len() == MAX_HOPS {
                    break 'lines;
                }
                let element = std::str::from_utf8(element).ok();
                hops.push(element.and_then(|e| match header {
                    ClientHeader::XForwardedFor => parse_hop(e),
                    ClientHeader::Forwarded => forwarded_for(e),
                }));
            }
        }
        Self { hops }
    }

    /// The hops, nearest first.
    #[must_use]
    pub fn hops(&self) -> &[Option<IpAddr>] {
        &self.hops
    }
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.1;proto=http`,
/// `for="[2001:db8::1]:80"`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let (_, v) = element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))?;
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    parse_hop(v)
}

/// The client of a request from `peer`: the peer itself, unless the peer is a trusted proxy.
/// Then the forwarding chain is walked from the right, skipping trusted proxies, to the first
/// other hop. `None` — nobody to hold responsible — when that hop is not an address
/// (`unknown`, obfuscated, unparsable), when the header is missing, or when every hop kept is a
/// trusted proxy: a request is never attributed to a trusted proxy.
#[must_use]
pub fn client_of(peer: IpAddr, chain: Option<&ForwardChain>, proxies: &[Net]) -> Option<IpAddr> {
    if !trusted(peer, proxies) {
        return Some(peer);
    }
    for hop in chain?.hops() {
        match *hop {
            None => return None,
            Some(ip) if trusted(ip, proxies) => {}
            Some(ip) => return Some(ip),
        }
    }
    None
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
