//! Benchmark-only XDP programs, never loaded by guard itself:
//! - `xdp_drop_all`: the baseline, drops every frame and counts it;
//! - `xdp_gen`: run with `BPF_PROG_RUN` in live-frame mode, rewrites the IPv4 source of the
//!   test frame to cycle through `GEN.count` addresses `GEN.base + i * GEN.stride` and
//!   transmits it.
// The programs only run in the kernel (`--target bpfel-unknown-none`, built by `cargo xtask
// build`). On the host the crate still compiles as an ordinary binary with an empty `main`, so
// `cargo check --workspace` and `cargo clippy --workspace` cover it with stable Rust alone.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use guard_ebpf::net::{ETH_HLEN, ptr_at_mut};

/// Packets dropped by `xdp_drop_all`.
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Generator settings: index 0 = number of distinct sources, 1 = first source (host order),
/// 2 = step between sources (0 or 1: consecutive; an odd step scatters them over the space).
#[map]
static GEN: Array<u32> = Array::with_max_entries(3, 0);

/// Per-CPU position in the source cycle.
#[map]
static GEN_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn xdp_drop_all(_ctx: XdpContext) -> u32 {
    if let Some(n) = DROPPED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array, valid for the run, no reference to it.
        unsafe { *n += 1 };
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    let (Some(count), Some(base), Some(stride), Some(seq)) =
        (GEN.get(0), GEN.get(1), GEN.get(2), GEN_SEQ.get_ptr_mut(0))
    else {
        return xdp_action::XDP_TX;
    };
    if *count > 1 {
        let Some(src) = ptr_at_mut::<u32>(&ctx, ETH_HLEN + 12) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: `seq` is this CPU's slot of a per-CPU array (no other reference); `src` was
        // bounds-checked by `ptr_at_mut` and the packet stays mapped (and writable: XDP) for the
        // run; written unaligned, as a frame may start anywhere.
        unsafe {
            let mut next = *seq + 1;
            if next >= *count {
                next = 0;
            }
            *seq = next;
            let step = if *stride == 0 { 1 } else { *stride };
            src.write_unaligned(base.wrapping_add(next.wrapping_mul(step)).to_be());
        }
    }
    xdp_action::XDP_TX
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("guard's eBPF programs run in the kernel: build them with `cargo xtask build`");
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
