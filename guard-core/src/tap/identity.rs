//! Who sent a request: the client address (the peer, or what a trusted proxy says in
//! X-Forwarded-For / Forwarded) and the user (a configured header, or the `sub` claim of a bearer
//! JWT, verified only when a configured key checks its signature: see [`super::jwt`]).
use std::net::{IpAddr, SocketAddr};

use super::config::ClientHeader;
use super::jwt::JwtKeys;
use crate::net::Net;

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
    /// Header: the peer is a trusted proxy (its assertion is believed as its forwarding header
    /// is). JWT: the signature checks with a configured key of the token's `alg` (HS256, RS256,
    /// ES256) and `exp`/`nbf` hold. Otherwise the id is only a claim of the client. Only a
    /// verified user is ever banned (see `engine`).
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

/// The user of a request: the configured header wins, then a bearer JWT's `sub`, verified with
/// `keys` at `now_secs` (Unix seconds; see [`super::jwt`]).
#[must_use]
pub fn user_id_at(
    header: Option<&str>,
    peer_trusted: bool,
    authorization: Option<&str>,
    keys: &JwtKeys,
    now_secs: u64,
) -> Option<UserId> {
    user_of(header, peer_trusted, authorization, keys, Some(now_secs))
}

/// The user of a request, a bearer JWT checked with an HS256 `key` only and without its
/// `exp`/`nbf` (no clock): prefer [`user_id_at`].
#[must_use]
pub fn user_id(
    header: Option<&str>,
    peer_trusted: bool,
    authorization: Option<&str>,
    key: Option<&[u8]>,
) -> Option<UserId> {
    user_of(
        header,
        peer_trusted,
        authorization,
        &JwtKeys::new(key, None),
        None,
    )
}

fn user_of(
    header: Option<&str>,
    peer_trusted: bool,
    authorization: Option<&str>,
    keys: &JwtKeys,
    now_secs: Option<u64>,
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
    let (id, verified) = keys.check_at(token.trim(), now_secs)?;
    Some(UserId {
        id,
        verified,
        source: UserSource::Jwt,
    })
}

/// The `sub` claim of a compact JWS, and whether its HS256 signature checks with `key` (no
/// `exp`/`nbf` check: see [`JwtKeys::check`] for every key type and the times).
#[must_use]
pub fn jwt_sub(token: &str, key: Option<&[u8]>) -> Option<(String, bool)> {
    JwtKeys::new(key, None).check_at(token, None)
}
