//! Persistent state in sled, one tree per entity.
pub mod logs;
