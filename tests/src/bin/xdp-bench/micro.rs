//! Part 1: ns per packet of `xdp_guard` under `BPF_PROG_TEST_RUN` against `xdp_drop_all`.
//!
//! Every case runs `ROUNDS` times, alternating with the baseline so both see the same machine
//! load; the median of each is reported. The return code of every run is checked, so a case
//! that is set up wrong fails instead of reporting a number for the wrong path.
use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::ensure;
use aya::programs::Xdp;
use guard_common::{CFG_HAVE_ALLOW_V4, CFG_HAVE_CIDR_V4};

use crate::progs::{Bench, Guard, PROG_DROP_ALL, XDP_DROP, XDP_PASS, test_run, udp_frame, xdp};
use crate::report::{Report, median};

/// Runs per case (odd: the median is one of them).
const ROUNDS: usize = 7;
/// Packets per run.
const REPEAT: u32 = 2_000_000;
/// Exact bans: `BAN_BASE + i`.
pub const BAN_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
pub const MILLION: u32 = 1_000_000;
/// CIDR bans: 10,000 consecutive /24s from here.
const CIDR_BASE: Ipv4Addr = Ipv4Addr::new(30, 0, 0, 0);
const CIDRS: u32 = 10_000;
/// Allowlist: 1,000 consecutive /24s from here (matching none of the test sources).
const ALLOW_BASE: Ipv4Addr = Ipv4Addr::new(40, 0, 0, 0);
const ALLOWS: u32 = 1_000;
/// A source that matches no ban, prefix or allowlist entry.
const CLEAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const DST: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const BASELINE: &str = "baseline: xdp_drop_all";

fn frame(src: Ipv4Addr) -> Vec<u8> {
    udp_frame([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2], src, DST)
}

struct Samples {
    base_kern: Vec<f64>,
}

/// Measures `prog` on a frame from `src`, interleaved with the baseline; returns the median
/// (kernel ns, wall ns).
fn measure(
    acc: &mut Samples,
    base: &Xdp,
    prog: &Xdp,
    src: Ipv4Addr,
    expect: u32,
) -> anyhow::Result<(f64, f64)> {
    let [r] = measure_side_by_side(acc, base, [prog], src, expect)?;
    Ok(r)
}

/// Like [`measure`] for several programs at once, interleaved round by round (baseline, then
/// each program), so a comparison between them sees the same machine load.
fn measure_side_by_side<const N: usize>(
    acc: &mut Samples,
    base: &Xdp,
    progs: [&Xdp; N],
    src: Ipv4Addr,
    expect: u32,
) -> anyhow::Result<[(f64, f64); N]> {
    let bytes = frame(src);
    let mut samples: [(Vec<f64>, Vec<f64>); N] = std::array::from_fn(|_| Default::default());
    for _ in 0..ROUNDS {
        let run = test_run(base, &bytes, REPEAT)?;
        ensure!(
            run.retval == XDP_DROP,
            "baseline returned {} instead of XDP_DROP",
            run.retval
        );
        acc.base_kern.push(run.kernel_ns);
        for (prog, (kern, wall)) in progs.into_iter().zip(samples.iter_mut()) {
            let run = test_run(prog, &bytes, REPEAT)?;
            ensure!(
                run.retval == expect,
                "xdp_guard returned {} for {src}, expected {expect}: case set up wrong",
                run.retval
            );
            kern.push(run.kernel_ns);
            wall.push(run.wall_ns);
        }
    }
    let out = samples.map(|(mut kern, mut wall)| (median(&mut kern), median(&mut wall)));
    let ns: Vec<String> = out.iter().map(|r| format!("{:.0}", r.0)).collect();
    progress!("part 1: {src}: {} ns/pkt", ns.join(" / "));
    Ok(out)
}

pub fn run(report: &mut Report) -> anyhow::Result<()> {
    let bench = Bench::load()?;
    let base = xdp(&bench.ebpf, PROG_DROP_ALL)?;
    let mut guard = Guard::load()?;
    let mut s = Samples {
        base_kern: Vec::new(),
    };
    // (case, kernel ns, wall ns)
    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    let note_fill =
        |what: &str, t: Instant| format!("{what} loaded in {:.1} s", t.elapsed().as_secs_f64());
    let mut fills = Vec::new();

    guard.set_flags(0)?;
    let r = measure(&mut s, base, guard.prog()?, CLEAN, XDP_PASS)?;
    results.push(("guard pass, empty maps", r.0, r.1));

    // 1 ban and 1M bans: two loaded copies, measured side by side.
    let mut one = Guard::load()?;
    one.set_flags(0)?;
    one.ban_range(BAN_BASE, 1)?;
    guard.ban_range(BAN_BASE, 1)?;
    let t = Instant::now();
    guard.ban_range(Ipv4Addr::from(u32::from(BAN_BASE) + 1), MILLION - 1)?;
    fills.push(note_fill("1,000,000 exact bans", t));
    let [r1, rm] = measure_side_by_side(
        &mut s,
        base,
        [one.prog()?, guard.prog()?],
        BAN_BASE,
        XDP_DROP,
    )?;
    drop(one);
    results.push(("guard exact-ban drop, 1 ban", r1.0, r1.1));
    results.push(("guard exact-ban drop, 1,000,000 bans", rm.0, rm.1));

    let t = Instant::now();
    guard.cidr_range(CIDR_BASE, 24, CIDRS)?;
    fills.push(note_fill("10,000 CIDR /24s", t));
    guard.set_flags(CFG_HAVE_CIDR_V4)?;
    let cidr_src = Ipv4Addr::from(u32::from(CIDR_BASE) + (CIDRS / 2) * 256 + 7);
    let r = measure(&mut s, base, guard.prog()?, cidr_src, XDP_DROP)?;
    results.push((
        "guard CIDR drop, 10,000 prefixes (+1M exact bans)",
        r.0,
        r.1,
    ));

    guard.allow_range(ALLOW_BASE, 24, ALLOWS)?;
    guard.set_flags(CFG_HAVE_CIDR_V4 | CFG_HAVE_ALLOW_V4)?;
    let r = measure(&mut s, base, guard.prog()?, CLEAN, XDP_PASS)?;
    results.push((
        "guard pass, maps full (1M bans, 10k CIDR, 1k allow)",
        r.0,
        r.1,
    ));

    // Diagnostic: a non-empty allowlist puts an LPM lookup on every ban drop.
    let r = measure(&mut s, base, guard.prog()?, BAN_BASE, XDP_DROP)?;
    results.push((
        "guard exact-ban drop, 1M bans, allowlist non-empty",
        r.0,
        r.1,
    ));

    let b = median(&mut s.base_kern);
    report.setup.push(format!(
        "part 1: {ROUNDS} runs x {REPEAT} packets per case, alternating with the baseline ({} baseline runs); {}",
        s.base_kern.len(),
        fills.join(", ")
    ));
    report.setup.push(
        "part 1 value = the kernel's BPF_PROG_TEST_RUN duration (whole ns per packet, time spent rescheduled excluded); \
         wall = syscall wall time / repeat, inflated by other load on the machine"
            .into(),
    );
    report.row(
        "micro",
        BASELINE,
        b,
        "ns/pkt",
        "minimal program: XDP_DROP + one per-CPU counter",
    );
    for (case, kern, wall) in results {
        report.row_vs(
            "micro",
            case,
            kern,
            "ns/pkt",
            BASELINE,
            &format!("wall {wall:.0} ns"),
        );
    }
    report.goal(
        "part 1: no slowdown 1 -> 1,000,000 bans (ns 1 ban / ns 1M bans)",
        "guard exact-ban drop, 1 ban",
        "guard exact-ban drop, 1,000,000 bans",
        0.9,
    );
    Ok(())
}
