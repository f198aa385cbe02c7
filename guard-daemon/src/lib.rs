//! guard's daemon and CLI as a library: `main.rs` only parses arguments and calls in here.
pub mod ai;
pub mod bans;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod judge;
pub mod net;
pub mod pipeline;
pub mod store;
pub mod tap;
pub mod validate;
pub mod xdp;
