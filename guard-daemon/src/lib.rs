//! guard's daemon and CLI as a library: `main.rs` only parses arguments and calls in here.
pub mod ai;
pub mod bans;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod inline;
pub mod inspect;
pub mod judge;
pub mod jwt;
pub mod memory;
pub mod metrics;
pub mod perms;
pub mod pipeline;
pub mod protect;
pub mod proxy;
pub mod quota;
pub mod store;
pub mod verified;
pub mod xdp;

// The pure core's modules under their old paths, so `crate::tap` and friends read as before.
pub use guard_core::{engine, net, tap, validate};
