//! guard's pure core: everything that decides, as plain Rust over plain data with the clock
//! passed in. Packets and HTTP are parsed, reassembled and paired here ([`tap`]), requests are
//! judged ([`validate`]) and clients scored ([`engine`]), plan quotas counted ([`quota`]), a
//! day of log records summed up ([`report`]);
//! addresses and CIDR blocks are [`net`].
//! No crate that does I/O (aya, sled, tokio, reqwest, libc) is in this crate's dependency tree,
//! so the compiler, not discipline, keeps it pure: it builds and tests with stable Rust alone.
pub mod engine;
pub mod expiry;
pub mod net;
pub mod quota;
pub mod report;
pub mod tap;
pub mod text;
pub mod time;
pub mod validate;
