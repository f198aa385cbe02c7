//! How a ban is laid out in the `bans` tree's values.
//!
//! The first byte of a value is its schema version, so that a later layout can be told apart
//! and migrated:
//!
//! - `{` (0x7b): version 0, the JSON of [`BanRecord`] that earlier versions wrote. Still read.
//! - [`BAN_V1`]: the compact layout written now, ~20 bytes for a ban without evidence instead of
//!   ~130 in JSON. The target is not repeated: it is the key (see [`super::net_key`]).
//!
//! ```text
//! 0        1       2      3          11              19 (or 11 without a deadline)
//! [ver=1][origin][flags][created_at][expires_at?]    [reason len varint][reason utf-8]
//!                                                      [evidence len varint][evidence JSON]?
//! ```
//!
//! Integers are little-endian ms since the epoch; `flags` bit 0 = a deadline follows, bit 1 =
//! evidence follows (as the JSON `Evidence` stores, read back with [`Evidence::from_stored`]).
//! A value that fits neither layout is an error of its own, so a caller can skip one bad record
//! and keep every other ban.
use crate::engine::Evidence;
use crate::net::Net;

use super::records::{BanRecord, Origin};

/// The schema version byte of the compact layout.
pub const BAN_V1: u8 = 1;
/// The first byte of a version-0 (JSON) record.
const JSON_V0: u8 = b'{';

const HAS_DEADLINE: u8 = 1;
const HAS_EVIDENCE: u8 = 2;

/// Why a stored ban could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty value")]
    Empty,
    #[error("unknown schema version {0} (written by a newer guard?)")]
    Version(u8),
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("the reason is not UTF-8")]
    Reason,
    #[error("{0} bytes after the end of the record")]
    Trailing(usize),
    #[error("the key is not a ban key")]
    Key,
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub(super) fn origin_code(o: Origin) -> u8 {
    match o {
        Origin::Cli => 0,
        Origin::Import => 1,
        Origin::RateLimit => 2,
        Origin::Engine => 3,
        Origin::Crowdsec => 4,
        Origin::Unknown => 255,
    }
}

pub(super) fn origin_of(code: u8) -> Origin {
    match code {
        0 => Origin::Cli,
        1 => Origin::Import,
        2 => Origin::RateLimit,
        3 => Origin::Engine,
        4 => Origin::Crowdsec,
        // A later version's origin: the ban is kept, shown as `unknown` (as with JSON).
        _ => Origin::Unknown,
    }
}

/// How many ban kinds [`ban_kind`] tells apart: two scopes times the five origins.
pub const BAN_KINDS: usize = 2 * 5;

/// The scope names of [`ban_kind`]'s index, in order: a single address, a range.
pub const BAN_SCOPES: [&str; 2] = ["address", "range"];

/// The origins of [`ban_kind`]'s index, in order.
pub const BAN_KIND_ORIGINS: [Origin; 5] = [
    Origin::Cli,
    Origin::Import,
    Origin::RateLimit,
    Origin::Engine,
    Origin::Unknown,
];

/// The kind of a stored ban, as an index below [`BAN_KINDS`]: `scope * 5 + origin` in the
/// orders of [`BAN_SCOPES`] and [`BAN_KIND_ORIGINS`]. Read from the key and the record's head
/// only (a JSON record is parsed for its origin); `None` for a record that cannot be read.
#[must_use]
pub fn ban_kind(key: &[u8], value: &[u8]) -> Option<usize> {
    let scope = match key {
        [4, .., 32] if key.len() == 6 => 0,
        [6, .., 128] if key.len() == 18 => 0,
        [4, ..] if key.len() == 6 => 1,
        [6, ..] if key.len() == 18 => 1,
        _ => return None,
    };
    let origin = match value.first() {
        Some(&BAN_V1) => origin_of(*value.get(1)?),
        Some(&JSON_V0) => {
            #[derive(serde::Deserialize)]
            struct OriginOnly {
                origin: Origin,
            }
            serde_json::from_slice::<OriginOnly>(value).ok()?.origin
        }
        _ => return None,
    };
    let o = BAN_KIND_ORIGINS.iter().position(|k| *k == origin)?;
    Some(scope * BAN_KIND_ORIGINS.len() + o)
}

/// The compact (version 1) value of `ban`.
#[must_use]
pub fn encode_ban(ban: &BanRecord) -> Vec<u8> {
    let evidence = ban
        .evidence
        .as_ref()
        // Serialising plain data cannot fail; on the impossible failure the evidence is left out.
        .and_then(|e| serde_json::to_vec(e).ok());
    let mut out =
        Vec::with_capacity(20 + ban.reason.len() + evidence.as_ref().map_or(0, |e| e.len() + 5));
    let mut flags = 0;
    if ban.expires_at.is_some() {
        flags |= HAS_DEADLINE;
    }
    if evidence.is_some() {
        flags |= HAS_EVIDENCE;
    }
    out.extend_from_slice(&[BAN_V1, origin_code(ban.origin), flags]);
    out.extend_from_slice(&ban.created_at.to_le_bytes());
    if let Some(t) = ban.expires_at {
        out.extend_from_slice(&t.to_le_bytes());
    }
    put_bytes(&mut out, ban.reason.as_bytes());
    if let Some(e) = &evidence {
        put_bytes(&mut out, e);
    }
    out
}

/// Reads a stored ban of any known version; `key` gives the target.
pub fn decode_ban(key: &[u8], value: &[u8]) -> Result<BanRecord, DecodeError> {
    match value.first() {
        None => Err(DecodeError::Empty),
        Some(&JSON_V0) => Ok(serde_json::from_slice(value)?),
        Some(&BAN_V1) => {
            let target = super::key_net(key).ok_or(DecodeError::Key)?;
            decode_v1(target, value)
        }
        Some(&v) => Err(DecodeError::Version(v)),
    }
}

/// The deadline of a stored ban, without decoding the rest (the reason, the evidence).
pub fn ban_deadline(value: &[u8]) -> Result<Option<u64>, DecodeError> {
    match value.first() {
        Some(&BAN_V1) => {
            let mut r = Reader { buf: value, pos: 1 };
            let _origin = r.byte()?;
            let flags = r.byte()?;
            let _created = r.u64()?;
            if flags & HAS_DEADLINE == 0 {
                Ok(None)
            } else {
                r.u64().map(Some)
            }
        }
        Some(&JSON_V0) => {
            #[derive(serde::Deserialize)]
            struct Deadline {
                expires_at: Option<u64>,
            }
            Ok(serde_json::from_slice::<Deadline>(value)?.expires_at)
        }
        Some(&v) => Err(DecodeError::Version(v)),
        None => Err(DecodeError::Empty),
    }
}

fn decode_v1(target: Net, value: &[u8]) -> Result<BanRecord, DecodeError> {
    let mut r = Reader { buf: value, pos: 1 };
    let origin = origin_of(r.byte()?);
    let flags = r.byte()?;
    if flags & !(HAS_DEADLINE | HAS_EVIDENCE) != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let created_at = r.u64()?;
    let expires_at = if flags & HAS_DEADLINE == 0 {
        None
    } else {
        Some(r.u64()?)
    };
    let reason = std::str::from_utf8(r.bytes()?)
        .map_err(|_| DecodeError::Reason)?
        .to_owned();
    let evidence = if flags & HAS_EVIDENCE == 0 {
        None
    } else {
        let json: serde_json::Value = serde_json::from_slice(r.bytes()?)?;
        Some(Evidence::from_stored(json))
    };
    if r.pos != value.len() {
        return Err(DecodeError::Trailing(value.len() - r.pos));
    }
    Ok(BanRecord {
        target,
        reason,
        origin,
        created_at,
        expires_at,
        evidence,
    })
}

/// A length (LEB128) and the bytes.
pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len();
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(bytes);
}

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(super) fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or(DecodeError::Truncated(self.pos))?;
            if b & 0x80 == 0 {
                return self.take(n);
            }
        }
        Err(DecodeError::Truncated(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::net_key;

    fn record(target: &str, expires_at: Option<u64>, evidence: Option<Evidence>) -> BanRecord {
        BanRecord {
            target: target.parse().unwrap(),
            reason: "SQL injection: 3 hits — ünïcode".into(),
            origin: Origin::Engine,
            created_at: 1_764_000_000_123,
            expires_at,
            evidence,
        }
    }

    #[test]
    fn compact_records_round_trip_and_are_small() {
        let evidence = Evidence {
            rule: "probing".into(),
            offence: Some(2),
            sample_paths: vec!["/.env".into()],
            ..Evidence::default()
        };
        for r in [
            record("192.0.2.7", None, None),
            record("198.51.100.0/24", Some(1_764_000_100_000), None),
            record("2001:db8::/48", Some(5), Some(evidence.clone())),
            BanRecord {
                reason: "x".repeat(300),
                origin: Origin::Unknown,
                ..record("2001:db8::1", None, Some(evidence.clone()))
            },
        ] {
            let bytes = encode_ban(&r);
            assert_eq!(bytes[0], BAN_V1);
            let back = decode_ban(&net_key(&r.target), &bytes).unwrap();
            assert_eq!(back, r);
            assert_eq!(ban_deadline(&bytes).unwrap(), r.expires_at);
        }
        let plain = BanRecord {
            reason: "imported".into(),
            origin: Origin::Import,
            ..record("203.0.113.9", Some(1), None)
        };
        assert_eq!(encode_ban(&plain).len(), 28, "a plain import is 28 bytes");
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let r = record("192.0.2.7", Some(9), None);
        let key = net_key(&r.target);
        let good = encode_ban(&r);
        for cut in 0..good.len() {
            assert!(decode_ban(&key, &good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode_ban(&key, &long),
            Err(DecodeError::Trailing(1))
        ));
        assert!(matches!(
            decode_ban(&key, &[9, 0, 0]),
            Err(DecodeError::Version(9))
        ));
        assert!(matches!(
            decode_ban(&[4, 1, 2], &good),
            Err(DecodeError::Key)
        ));
        // A huge length prefix.
        let mut huge = good[..19].to_vec();
        huge.extend_from_slice(&[0xff; 12]);
        assert!(decode_ban(&key, &huge).is_err());
        assert!(decode_ban(&key, b"{not json").is_err());
    }

    #[test]
    fn version_zero_json_records_read_as_before() {
        let json = br#"{"target":"192.0.2.7","reason":"manual","origin":"cli","created_at":8,"expires_at":99}"#;
        let r = decode_ban(&[0xde, 0xad], json).unwrap();
        assert_eq!(r.target, "192.0.2.7".parse().unwrap());
        assert_eq!((r.origin, r.expires_at), (Origin::Cli, Some(99)));
        assert_eq!(ban_deadline(json).unwrap(), Some(99));
    }
}
