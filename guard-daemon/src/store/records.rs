//! The records the state database keeps, and the key layout of `bans` and `allow`.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::engine::Evidence;
use crate::net::Net;

/// What the store remembers of an address the engine banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenceRecord {
    /// Engine bans so far (within the engine's offender memory).
    pub count: u32,
    /// The last one, seconds since the Unix epoch.
    pub last: u64,
}

/// Who made a ban. Stored and sent as the lower-case names `cli`, `import`, `rate-limit`,
/// `engine` and `crowdsec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `guard ban add`.
    Cli,
    /// `guard ban import`.
    Import,
    /// The XDP packet-rate limit (`xdp.rate_ban`).
    RateLimit,
    /// The behaviour engine.
    Engine,
    /// A decision of a CrowdSec Local API (`[crowdsec]`): lifted when the LAPI deletes it.
    Crowdsec,
    /// A stored origin this version does not know: the record still loads (shown as
    /// `unknown`), so that its ban is kept.
    #[serde(other)]
    Unknown,
}

impl Origin {
    /// The origins a ban can be made with (not `Unknown`), for filters and messages.
    pub const KNOWN: [Origin; 5] = [
        Self::Cli,
        Self::Import,
        Self::RateLimit,
        Self::Engine,
        Self::Crowdsec,
    ];

    /// The name as stored, shown and typed after `--origin`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Import => "import",
            Self::RateLimit => "rate-limit",
            Self::Engine => "engine",
            Self::Crowdsec => "crowdsec",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An origin name that is none of [`Origin::KNOWN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown origin `{given}`: expected one of cli, import, rate-limit, engine, crowdsec")]
pub struct UnknownOrigin {
    pub given: String,
}

impl std::str::FromStr for Origin {
    type Err = UnknownOrigin;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::KNOWN
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| UnknownOrigin {
                given: s.to_owned(),
            })
    }
}

/// A ban as stored: what, why, since when, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned address or network.
    pub target: Net,
    /// Free text shown in `guard ban ls`.
    pub reason: String,
    /// Who made the ban.
    pub origin: Origin,
    /// Wall-clock ms since the epoch.
    pub created_at: u64,
    /// Wall-clock ms since the epoch; `None` = permanent.
    pub expires_at: Option<u64>,
    /// What led to the ban (rule, offence, counts, sample paths), if a detector made it.
    /// Evidence an earlier version stored in another shape still loads (see
    /// [`Evidence::from_stored`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::engine::deserialize_stored"
    )]
    pub evidence: Option<Evidence>,
}

impl BanRecord {
    /// True once the ban's deadline has passed at `now_ms`.
    #[must_use]
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_ms)
    }
}

/// An allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRecord {
    pub target: Net,
    pub reason: String,
    pub created_at: u64,
}

/// The key of a ban or allow entry (see the module doc).
#[must_use]
pub fn net_key(net: &Net) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    match net.addr() {
        std::net::IpAddr::V4(a) => {
            key.push(4);
            key.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            key.push(6);
            key.extend_from_slice(&a.octets());
        }
    }
    key.push(net.prefix());
    key
}

/// The network a [`net_key`] stands for; `None` for a key of another shape.
#[must_use]
pub fn key_net(key: &[u8]) -> Option<Net> {
    let (addr, prefix) = match key {
        [4, a, b, c, d, prefix] => (IpAddr::from([*a, *b, *c, *d]), *prefix),
        [6, rest @ ..] if rest.len() == 17 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            (IpAddr::from(octets), rest[16])
        }
        _ => return None,
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let net = Net::new(addr, prefix);
    // A key whose address has host bits set, or a prefix too long, is not one guard wrote.
    (prefix <= max && net.addr() == addr).then_some(net)
}
