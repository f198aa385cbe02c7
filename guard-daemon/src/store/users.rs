//! The `user_bans` tree: user id → ban record, in the same versioned compact style as the
//! `bans` tree (see [`super::codec`]).
//!
//! The key is the user id's UTF-8 bytes (at most `guard_core::tap::identity::MAX_USER_ID`, no
//! control characters: checked before anything is stored). The value:
//!
//! ```text
//! 0        1       2      3          11              19 (or 11 without a deadline)
//! [ver=1][origin][flags][created_at][expires_at?]    [reason len varint][reason utf-8]
//!                                                      [address len varint][address key]?
//! ```
//!
//! Integers are little-endian ms since the epoch; `flags` bit 0 = a deadline follows, bit 1 =
//! the address banned with the user follows, as its `bans` key ([`super::net_key`]). A value
//! that fits no known layout is skipped (logged once with its key), never fatal.
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::codec::{DecodeError, Reader, origin_code, origin_of, put_bytes};
use super::{Origin, Store, StoreError, key_net, net_key};
use crate::net::Net;

/// Name of the user bans tree.
pub const TREE_USER_BANS: &str = "user_bans";

/// The schema version byte of the user ban layout.
pub const USER_BAN_V1: u8 = 1;

const HAS_DEADLINE: u8 = 1;
const HAS_ADDR: u8 = 2;

/// A user ban as stored: who, why, since when, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBanRecord {
    /// The banned user id (a verified JWT `sub`, or a trusted proxy's user header).
    pub id: String,
    /// Free text shown in `guard ban ls --user`.
    pub reason: String,
    /// Who made the ban.
    pub origin: Origin,
    /// Wall-clock ms since the epoch.
    pub created_at: u64,
    /// Wall-clock ms since the epoch; `None` = permanent.
    pub expires_at: Option<u64>,
    /// The address (or network) the engine banned together with the user, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Net>,
}

/// The value of `ban` in the `user_bans` tree (the id is the key).
#[must_use]
pub fn encode_user_ban(ban: &UserBanRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + ban.reason.len());
    let mut flags = 0;
    if ban.expires_at.is_some() {
        flags |= HAS_DEADLINE;
    }
    if ban.addr.is_some() {
        flags |= HAS_ADDR;
    }
    out.extend_from_slice(&[USER_BAN_V1, origin_code(ban.origin), flags]);
    out.extend_from_slice(&ban.created_at.to_le_bytes());
    if let Some(t) = ban.expires_at {
        out.extend_from_slice(&t.to_le_bytes());
    }
    put_bytes(&mut out, ban.reason.as_bytes());
    if let Some(addr) = &ban.addr {
        put_bytes(&mut out, &net_key(addr));
    }
    out
}

/// Reads a stored user ban; `key` is the id.
pub fn decode_user_ban(key: &[u8], value: &[u8]) -> Result<UserBanRecord, DecodeError> {
    let id = std::str::from_utf8(key)
        .map_err(|_| DecodeError::Key)?
        .to_owned();
    match value.first() {
        None => return Err(DecodeError::Empty),
        Some(&USER_BAN_V1) => {}
        Some(&v) => return Err(DecodeError::Version(v)),
    }
    let mut r = Reader { buf: value, pos: 1 };
    let origin = origin_of(r.byte()?);
    let flags = r.byte()?;
    if flags & !(HAS_DEADLINE | HAS_ADDR) != 0 {
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
    let addr = if flags & HAS_ADDR == 0 {
        None
    } else {
        Some(key_net(r.bytes()?).ok_or(DecodeError::Key)?)
    };
    if r.pos != value.len() {
        return Err(DecodeError::Trailing(value.len() - r.pos));
    }
    Ok(UserBanRecord {
        id,
        reason,
        origin,
        created_at,
        expires_at,
        addr,
    })
}

impl Store {
    fn user_tree(&self) -> &sled::Tree {
        &self.users
    }

    /// Inserts or replaces a user ban; returns the previous record, if one decodes.
    pub fn put_user_ban(&self, ban: &UserBanRecord) -> Result<Option<UserBanRecord>, StoreError> {
        let old = self
            .user_tree()
            .insert(ban.id.as_bytes(), encode_user_ban(ban))?;
        Ok(old.and_then(|v| decode_user_ban(ban.id.as_bytes(), &v).ok()))
    }

    /// Removes a user ban; returns it if it existed (an undecodable record is removed too, and
    /// returned with only its id).
    pub fn remove_user_ban(&self, id: &str) -> Result<Option<UserBanRecord>, StoreError> {
        let Some(old) = self.user_tree().remove(id.as_bytes())? else {
            return Ok(None);
        };
        Ok(Some(decode_user_ban(id.as_bytes(), &old).unwrap_or_else(
            |_| UserBanRecord {
                id: id.to_owned(),
                reason: "(undecodable record)".into(),
                origin: Origin::Unknown,
                created_at: 0,
                expires_at: None,
                addr: None,
            },
        )))
    }

    /// One user ban (`None` also for an undecodable record, which is logged).
    pub fn user_ban(&self, id: &str) -> Result<Option<UserBanRecord>, StoreError> {
        let Some(value) = self.user_tree().get(id.as_bytes())? else {
            return Ok(None);
        };
        Ok(decode_or_skip(id.as_bytes(), &value))
    }

    /// Every user ban, in id byte order; undecodable records are skipped and logged.
    pub fn user_bans(&self) -> Result<Vec<UserBanRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.user_tree() {
            let (key, value) = entry?;
            out.extend(decode_or_skip(&key, &value));
        }
        Ok(out)
    }

    /// How many user ban records are stored.
    #[must_use]
    pub fn user_ban_count(&self) -> usize {
        self.user_tree().len()
    }
}

fn decode_or_skip(key: &[u8], value: &[u8]) -> Option<UserBanRecord> {
    match decode_user_ban(key, value) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(key = %String::from_utf8_lossy(key).escape_debug(), "skipping an undecodable user ban record (it stays stored, not enforced): {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, expires_at: Option<u64>, addr: Option<&str>) -> UserBanRecord {
        UserBanRecord {
            id: id.into(),
            reason: "sql-injection: 3 hits — ünïcode".into(),
            origin: Origin::Engine,
            created_at: 1_764_000_000_123,
            expires_at,
            addr: addr.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn user_ban_records_round_trip() {
        for r in [
            record("alice", None, None),
            record("user-42", Some(1_764_000_100_000), Some("192.0.2.7")),
            record("ü@example.org", Some(5), Some("2001:db8::/64")),
        ] {
            let bytes = encode_user_ban(&r);
            assert_eq!(bytes[0], USER_BAN_V1);
            assert_eq!(decode_user_ban(r.id.as_bytes(), &bytes).unwrap(), r);
        }
    }

    #[test]
    fn damaged_user_ban_values_are_errors() {
        let r = record("bob", Some(9), Some("192.0.2.7"));
        let good = encode_user_ban(&r);
        for cut in 0..good.len() {
            assert!(
                decode_user_ban(b"bob", &good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode_user_ban(b"bob", &long),
            Err(DecodeError::Trailing(1))
        ));
        assert!(matches!(
            decode_user_ban(b"bob", &[7, 0, 0]),
            Err(DecodeError::Version(7))
        ));
        assert!(matches!(
            decode_user_ban(&[0xff, 0xfe], &good),
            Err(DecodeError::Key)
        ));
    }

    #[test]
    fn user_bans_are_stored_listed_and_removed() {
        let store = Store::temporary().unwrap();
        store.put_user_ban(&record("bob", None, None)).unwrap();
        store
            .put_user_ban(&record("alice", Some(7), Some("192.0.2.1")))
            .unwrap();
        // A bad record is skipped, not fatal.
        store.users.insert(b"carol", &[9u8, 9, 9][..]).unwrap();
        let ids: Vec<String> = store
            .user_bans()
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["alice", "bob"]);
        assert_eq!(store.user_ban_count(), 3);
        assert_eq!(store.user_ban("carol").unwrap(), None);
        let gone = store.remove_user_ban("alice").unwrap().unwrap();
        assert_eq!(gone.addr, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(store.user_ban("alice").unwrap(), None);
        assert_eq!(store.remove_user_ban("alice").unwrap(), None);
    }
}
