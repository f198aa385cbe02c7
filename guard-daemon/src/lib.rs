//! guard's daemon and CLI as a library: `main.rs` only parses arguments and calls in here.
pub mod cli;
pub mod validate;
