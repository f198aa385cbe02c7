//! The plan table (`guard plan set USER PLAN`, `guard plan rm USER`, `guard plan ls`): which
//! plan a user is on, kept in the state database's tree [`TREE_PLANS`] (key: the user id's
//! UTF-8 bytes, value: the plan name's) and mirrored in memory, where the quota check reads it
//! (the `table` source of `quotas.lookup`) without touching the disk.
//!
//! A change is written and flushed to the tree first, then made in memory: a change the store
//! refused is never in force, and one in force survives a crash. Only the control socket's
//! handler changes the table; the lock is never held across the disk write.
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::PlanTable;

/// The plan table's tree in the state database.
pub const TREE_PLANS: &str = "quota_plans";

/// One row of `guard plan ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub user: String,
    pub plan: String,
    /// Whether `[quotas.plans]` defines the plan (an unknown one is answered with the default
    /// plan, and counted).
    pub known: bool,
    /// `plan set`: the plan the user was on before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

/// The plan table: the tree and its copy in memory.
pub struct PlanStore {
    tree: sled::Tree,
    map: RwLock<HashMap<String, String>>,
}

impl PlanStore {
    /// Reads `tree` into memory. Records that are not UTF-8 are skipped (and logged).
    ///
    /// # Errors
    /// The tree cannot be read.
    pub fn open(tree: sled::Tree) -> Result<Self, sled::Error> {
        let mut map = HashMap::new();
        for item in &tree {
            let (k, v) = item?;
            if let (Ok(user), Ok(plan)) = (std::str::from_utf8(&k), std::str::from_utf8(&v)) {
                map.insert(user.to_owned(), plan.to_owned());
            } else {
                tracing::warn!(key = ?k, "a plan table record is not UTF-8: skipped");
            }
        }
        Ok(Self {
            tree,
            map: RwLock::new(map),
        })
    }

    /// Puts `user` on `plan`; the plan it was on before, if any.
    ///
    /// # Errors
    /// The store refused the write (nothing changed).
    pub fn set(&self, user: &str, plan: &str) -> Result<Option<String>, sled::Error> {
        self.tree.insert(user.as_bytes(), plan.as_bytes())?;
        self.tree.flush()?;
        Ok(self
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user.to_owned(), plan.to_owned()))
    }

    /// Takes `user` off the table; the plan it was on, `None` if it had none.
    ///
    /// # Errors
    /// The store refused the write (nothing changed).
    pub fn remove(&self, user: &str) -> Result<Option<String>, sled::Error> {
        self.tree.remove(user.as_bytes())?;
        self.tree.flush()?;
        Ok(self
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(user))
    }

    /// Every (user, plan), by user.
    #[must_use]
    pub fn list(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(u, p)| (u.clone(), p.clone()))
            .collect();
        rows.sort();
        rows
    }
}

impl PlanTable for PlanStore {
    fn plan_of(&self, user: &str) -> Option<String> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_kept_in_its_tree_and_read_back() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = PlanStore::open(db.open_tree(TREE_PLANS).unwrap()).unwrap();
        assert_eq!(store.set("alice", "pro").unwrap(), None);
        assert_eq!(store.set("bob", "free").unwrap(), None);
        assert_eq!(
            store.set("alice", "enterprise").unwrap().as_deref(),
            Some("pro")
        );
        assert_eq!(store.plan_of("alice").as_deref(), Some("enterprise"));
        assert_eq!(store.remove("bob").unwrap().as_deref(), Some("free"));
        assert_eq!(store.remove("bob").unwrap(), None);
        drop(store);
        let again = PlanStore::open(db.open_tree(TREE_PLANS).unwrap()).unwrap();
        assert_eq!(
            again.list(),
            [("alice".to_owned(), "enterprise".to_owned())]
        );
        assert_eq!(again.plan_of("bob"), None);
    }
}
