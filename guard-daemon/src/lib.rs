//! guard's daemon and CLI as a library: `main.rs` only parses arguments and calls in here.
pub mod ai;
pub mod cli;
