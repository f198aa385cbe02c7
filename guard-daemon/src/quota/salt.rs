//! The salt of the quotas' user partition keys: 32 random bytes kept in the state database's
//! `meta` tree, so a user keeps its key (and, once counters persist, its counts) across
//! restarts, while the key never reveals the user id to anyone without the database.
use ring::rand::{SecureRandom, SystemRandom};

use crate::bans::TREE_META;

/// The salt's key in the `meta` tree.
pub const KEY_QUOTA_SALT: &[u8] = b"quota_salt";
/// The salt's length in bytes.
pub const SALT_LEN: usize = 32;

/// The stored salt, or a new random one stored (and flushed) before it is used.
///
/// # Errors
/// The database cannot be read or written, or the system has no randomness.
pub fn load_or_create(db: &sled::Db) -> anyhow::Result<Vec<u8>> {
    let meta = db.open_tree(TREE_META)?;
    if let Some(v) = meta.get(KEY_QUOTA_SALT)?
        && v.len() == SALT_LEN
    {
        return Ok(v.to_vec());
    }
    let mut salt = vec![0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("no system randomness for the quota salt"))?;
    meta.insert(KEY_QUOTA_SALT, salt.as_slice())?;
    meta.flush()?;
    Ok(salt)
}

/// A random seed for the counter tables' hashes.
#[must_use]
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // Without randomness the tables still work, only with a guessable hash seed.
    let _ = SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_salt_is_made_once_and_kept_across_reopening() {
        let dir = std::env::temp_dir().join(format!("guard-quota-salt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = {
            let db = sled::open(&dir).unwrap();
            load_or_create(&db).unwrap()
        };
        assert_eq!(first.len(), SALT_LEN);
        assert!(first.iter().any(|&b| b != 0));
        let db = sled::open(&dir).unwrap();
        assert_eq!(load_or_create(&db).unwrap(), first);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
        let other = sled::Config::new().temporary(true).open().unwrap();
        assert_ne!(load_or_create(&other).unwrap(), first);
    }
}
