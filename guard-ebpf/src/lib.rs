//! Shared pieces of guard's eBPF programs: bounds-checked packet access and the per-layer
//! header parsers. Every parser works on the packet in place and returns `None` when the
//! frame is too short; callers fail open on `None`.
#![no_std]
#![expect(
    clippy::inline_always,
    reason = "BPF programs are verified as one function: every helper is inlined on purpose"
)]

pub mod net;
