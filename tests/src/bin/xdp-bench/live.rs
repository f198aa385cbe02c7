//! Part 2: packets per second through a veth pair between two namespaces.
//!
//! The sender side runs `xdp_gen` with `BPF_PROG_RUN` in live-frame mode: each frame it
//! returns `XDP_TX` for leaves through the sender veth into the receiver veth (this kernel has
//! no pktgen). On the receiver, the program under test is attached in native mode, or — for
//! the nftables baseline — no XDP program at all and a netdev ingress chain with a set of the
//! banned sources. The rate is the receiver's own count of dropped packets (the program's
//! counter; for nftables the veth's rx count, checked against the rule counter afterwards)
//! over a fixed window while the generator runs.
//!
//! By default the receiver's NAPI runs as veth does by default: in softirq right after each
//! generated batch, on the generator's CPU. Every frame then costs generator + receiver on one
//! core and nothing is lost in the veth ring; the generator's share is the same in every case,
//! so a ratio between cases understates the receiver's own difference (it is pulled towards 1).
//! `--threaded-napi` moves the receiver into a kernel thread pinned to the second CPU, with the
//! generator pinned to the first: each side then has a core of its own and a rate is the
//! slower side's (on a machine busy with other work it also measures the scheduler).
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use guard_common::{PROG_XDP_GUARD, STAT_DROP_BAN_EXACT};
use guard_tests::{Link, Netns, enter, sh};

use crate::micro::{BAN_BASE, MILLION};
use crate::nft::Nft;
use crate::progs::{Bench, Guard, PROG_DROP_ALL, PROG_GEN, udp_frame, xdp, xdp_mut};
use crate::report::Report;

/// Generator warm-up before the window opens.
const WARMUP: Duration = Duration::from_millis(400);
/// Measurement window per case.
const WINDOW: Duration = Duration::from_millis(1500);
/// Frames per live-frame batch by default (the kernel's default; its maximum is 256).
pub const DEFAULT_BATCH: u32 = 64;
/// Frames per `BPF_PROG_RUN` call: far more than a window needs; the call is interrupted.
const GEN_REPEAT: u32 = 1 << 30;
/// nftables table made in the receiver namespace.
pub const NFT_TABLE: &str = "guard_bench";

// Case names (also the keys of the goals).
const DROP1: &str = "baseline: xdp_drop_all, 1 source";
const DROPM: &str = "baseline: xdp_drop_all, 1,000,000 sources";
const NFT1: &str = "baseline: nftables set drop, 1 banned source";
const NFTM: &str = "baseline: nftables set drop, 1,000,000 banned sources";
const G1: &str = "guard, 1 ban, 1 banned source";
const GM1: &str = "guard, 1,000,000 bans, 1 banned source";
const GMM: &str = "guard, 1,000,000 bans, 1,000,000 banned sources";
const DROPS: &str = "baseline: xdp_drop_all, 1,000,000 scattered sources";
const GSS: &str = "guard, 1,000,000 scattered bans and sources";
/// Step between the scattered sources: odd, so `BAN_BASE + i * SCATTER` visits a million
/// distinct addresses spread over the whole IPv4 space (almost never two in one /24).
const SCATTER: u32 = 2_654_435_761;

/// Interface facts read with `ip -j link`.
struct Iface {
    index: u32,
    mac: [u8; 6],
}

fn iface(ns: &Netns, name: &str) -> anyhow::Result<Iface> {
    let out = ns.ip(&["-j", "link", "show", "dev", name])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing ip -j link")?;
    let index = v[0]["ifindex"].as_u64().context("no ifindex")? as u32;
    let mac_text = v[0]["address"].as_str().context("no address")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(mac_text.split(':')) {
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {mac_text}"))?;
    }
    Ok(Iface { index, mac })
}

/// Packets the interface received (`ip -s`: for veth this counts frames arriving as XDP
/// frames too, before the stack sees them).
pub fn rx_packets(ns: &Netns, name: &str) -> anyhow::Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", name])?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing ip -s -j link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("no rx packet count")
}

/// Runs `f` on a scoped thread inside the namespace at `path` (XDP attach resolves interface
/// names and indices in the calling thread's namespace).
fn in_ns<T: Send>(path: &Path, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(path)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    })
}

/// An XDP program attached to the receiver, detached on drop.
struct Attached<'a> {
    prog: &'a mut Xdp,
    id: Option<XdpLinkId>,
    ns: &'a Path,
}

impl<'a> Attached<'a> {
    fn new(prog: &'a mut Xdp, ns: &'a Path, iface: &str) -> anyhow::Result<Self> {
        let (prog, id) = in_ns(ns, move || {
            let id = prog
                .attach(iface, XdpMode::Driver)
                .with_context(|| format!("attaching XDP (native) to {iface}"))?;
            Ok((prog, id))
        })?;
        Ok(Self {
            prog,
            id: Some(id),
            ns,
        })
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let prog = &mut *self.prog;
            let _ = in_ns(self.ns, move || Ok(prog.detach(id)?));
        }
    }
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Installs a no-op SIGUSR1 handler without `SA_RESTART`: the signal then ends a running
/// `BPF_PROG_RUN` with EINTR, which is how a generator run is stopped.
fn install_stop_signal() -> anyhow::Result<()> {
    // SAFETY: a zeroed sigaction with a valid handler; the handler does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&raw mut sa.sa_mask);
        ensure!(
            libc::sigaction(libc::SIGUSR1, &raw const sa, std::ptr::null_mut()) == 0,
            "sigaction: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn is_eintr(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EINTR))
    })
}

/// Everything a generator run needs.
struct Generator<'a> {
    prog: &'a Xdp,
    frame: Vec<u8>,
    /// Sender veth index: live frames sent with `XDP_TX` leave through it.
    ifindex: u32,
    ns: &'a Path,
    batch: u32,
}

impl<'a> Generator<'a> {
    /// The live-frame generator of `bench`, sending `frame` out of the veth `ifindex` in `ns`.
    fn new(
        bench: &'a Bench,
        frame: &[u8],
        ifindex: u32,
        ns: &'a Path,
        batch: u32,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            prog: xdp(&bench.ebpf, PROG_GEN)?,
            frame: frame.to_vec(),
            ifindex,
            ns,
            batch,
        })
    }
}

/// Receiver packets per second over `WINDOW` while the generator runs; `count` reads the
/// receiver's counter. Returns (pps, packets counted in the window).
fn measure(
    g: &Generator<'_>,
    mut count: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<(f64, u64)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, g.frame.len() as u32, 0, g.ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    if let Some(dev) = PIN_NAPI.get() {
        ensure!(
            pin_napi_threads(dev, 1)? > 0,
            "no NAPI thread of {dev} found to pin"
        );
    }
    std::thread::scope(|s| -> anyhow::Result<(f64, u64)> {
        let (stop, ctx) = (&stop, &ctx);
        let gen_thread = s.spawn(move || -> anyhow::Result<()> {
            // SAFETY: pthread_self has no preconditions.
            let _ = tx.send(unsafe { libc::pthread_self() });
            if PIN_NAPI.get().is_some() {
                pin(0, 0)?;
            }
            enter(g.ns)?;
            while !stop.load(Ordering::Relaxed) {
                let opts = TestRunOptions {
                    data_in: Some(&g.frame),
                    ctx_in: Some(ctx),
                    repeat: GEN_REPEAT,
                    attrs: TestRunAttrs::new().xdp_live_frames(g.batch),
                    ..TestRunOptions::default()
                };
                if let Err(e) = g.prog.test_run(opts) {
                    let e = anyhow::Error::from(e);
                    if !is_eintr(&e) {
                        return Err(e.context("live-frame BPF_PROG_RUN of xdp_gen"));
                    }
                }
            }
            Ok(())
        });
        let thread = rx.recv().context("generator thread did not start")?;
        let result = (|| {
            std::thread::sleep(WARMUP);
            ensure!(!gen_thread.is_finished(), "generator stopped early");
            let t0 = Instant::now();
            let c0 = count()?;
            let t0 = t0 + t0.elapsed() / 2;
            std::thread::sleep(WINDOW);
            let t1 = Instant::now();
            let c1 = count()?;
            let t1 = t1 + t1.elapsed() / 2;
            ensure!(
                !gen_thread.is_finished(),
                "generator stopped during the window"
            );
            let n = c1.saturating_sub(c0);
            Ok((n as f64 / (t1 - t0).as_secs_f64(), n))
        })();
        stop.store(true, Ordering::Relaxed);
        while !gen_thread.is_finished() {
            // SAFETY: the thread is alive (not finished, and joined only below).
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(5));
        }
        let generated = gen_thread
            .join()
            .map_err(|_| anyhow::anyhow!("generator thread panicked"))?;
        let (pps, n) = result?;
        generated?;
        ensure!(
            n > 0,
            "the receiver counted no packets: frames are not arriving"
        );
        Ok((pps, n))
    })
}

/// With `--threaded-napi`: the receiver veth whose NAPI thread is pinned to CPU 1 (the
/// generator pins itself to CPU 0).
static PIN_NAPI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn pin(pid: libc::pid_t, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        ensure!(
            libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &raw const set) == 0,
            "sched_setaffinity({pid}, cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Pins the NAPI kernel threads of `dev` (named `napi/<dev>-<id>`, cut to 15 bytes) to `cpu`.
fn pin_napi_threads(dev: &str, cpu: usize) -> anyhow::Result<usize> {
    let want: String = format!("napi/{dev}-").chars().take(15).collect();
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&want) {
            pin(pid, cpu)?;
            pinned += 1;
        }
    }
    Ok(pinned)
}

fn set_gro(ns: &Netns, dev: &str, on: bool) -> anyhow::Result<()> {
    let out = ns
        .command("ethtool")
        .args(["-K", dev, "gro", if on { "on" } else { "off" }])
        .output()?;
    ensure!(
        out.status.success(),
        "ethtool -K {dev} gro: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Processes the receiver veth's NAPI in a kernel thread (`threaded`) so that it can run on the
/// other core than the generator, which then no longer shares the receiver's CPU time.
fn set_threaded_napi(ns: &Netns, dev: &str, on: bool) -> anyhow::Result<()> {
    // sysfs shows the namespace it was mounted in: `ip netns exec` remounts it.
    let cmd = format!("echo {} > /sys/class/net/{dev}/threaded", u8::from(on));
    sh("ip", &["netns", "exec", &ns.name, "sh", "-c", &cmd])?;
    Ok(())
}

pub struct Options {
    pub rounds: usize,
    pub threaded_napi: bool,
    /// Frames per live-frame batch, 1..=256.
    pub batch: u32,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[expect(
    clippy::too_many_lines,
    reason = "the case sequence reads best in one place"
)]
pub fn run(report: &mut Report, opts: &Options) -> anyhow::Result<()> {
    install_stop_signal()?;
    progress!("part 2: creating namespaces and the veth pair");
    let link = Link::new()?;
    let (near, far) = (
        iface(&link.near, &link.near_if)?,
        iface(&link.far, &link.far_if)?,
    );
    let IpAddr::V4(dst) = link.near_v4 else {
        bail!("receiver has no IPv4 address")
    };
    // GRO on from the start, for every case: without an XDP program veth only accepts XDP
    // frames with GRO on (nftables case), it makes the veth NAPI exist so it can be switched to
    // threaded, and it does not touch frames an XDP program drops.
    set_gro(&link.near, &link.near_if, true)?;
    if opts.threaded_napi {
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        ensure!(
            cpus >= 2,
            "--threaded-napi needs two CPUs, this machine has {cpus}"
        );
        set_threaded_napi(&link.near, &link.near_if, true)?;
        let _ = PIN_NAPI.set(link.near_if.clone());
    }
    let near_ns = link.near.path();
    let far_ns = link.far.path();

    // Two copies of the helper object: one generates, the other drops (attached to the receiver).
    let mut bench = Bench::load()?;
    let mut drop_obj = Bench::load()?;
    let mut guard_one = Guard::load()?;
    guard_one.set_flags(0)?;
    guard_one.ban_range(BAN_BASE, 1)?;
    progress!("part 2: loading 1,000,000 bans");
    let mut guard_million = Guard::load()?;
    guard_million.set_flags(0)?;
    guard_million.ban_range(BAN_BASE, MILLION)?;
    progress!("part 2: loading 1,000,000 scattered bans");
    let mut guard_scatter = Guard::load()?;
    guard_scatter.set_flags(0)?;
    guard_scatter.ban_spread(BAN_BASE, MILLION, SCATTER)?;
    let dense_blocks = (guard_million.dense_blocks(), guard_scatter.dense_blocks());

    // The generator's frame: sender MAC -> receiver MAC, BAN_BASE (rewritten by xdp_gen when
    // it cycles through more sources) -> the receiver's address.
    let frame = udp_frame(near.mac, far.mac, BAN_BASE, dst);
    let mut samples: Vec<(&str, Vec<f64>)> = [DROP1, DROPM, DROPS, G1, GM1, GMM, GSS, NFT1, NFTM]
        .iter()
        .map(|c| (*c, Vec::new()))
        .collect();
    let mut push = |case: &str, pps: f64| {
        progress!("{case}: {:.3} Mpps", pps / 1e6);
        if let Some((_, v)) = samples.iter_mut().find(|(c, _)| *c == case) {
            v.push(pps);
        }
    };
    let mut nft_fill = Duration::ZERO;
    for _ in 0..opts.rounds {
        {
            let dropped = &drop_obj.dropped;
            let attached = Attached::new(
                xdp_mut(&mut drop_obj.ebpf, PROG_DROP_ALL)?,
                &near_ns,
                &link.near_if,
            )?;
            for (case, sources, stride) in [
                (DROP1, 1, 1),
                (DROPM, MILLION, 1),
                (DROPS, MILLION, SCATTER),
            ] {
                bench.set_sources(BAN_BASE, sources, stride)?;
                let g = Generator::new(&bench, &frame, far.index, &far_ns, opts.batch)?;
                push(
                    case,
                    measure(&g, || Ok(dropped.get(&0, 0)?.iter().sum()))?.0,
                );
            }
            drop(attached);
        }
        for (guard, cases) in [
            (&mut guard_one, &[(G1, 1, 1)][..]),
            (&mut guard_million, &[(GM1, 1, 1), (GMM, MILLION, 1)][..]),
            (&mut guard_scatter, &[(GSS, MILLION, SCATTER)][..]),
        ] {
            let stats = &guard.stats;
            let prog = xdp_mut(&mut guard.ebpf, PROG_XDP_GUARD)?;
            let attached = Attached::new(prog, &near_ns, &link.near_if)?;
            for &(case, sources, stride) in cases {
                bench.set_sources(BAN_BASE, sources, stride)?;
                let g = Generator::new(&bench, &frame, far.index, &far_ns, opts.batch)?;
                let count = || Ok(stats.get(&STAT_DROP_BAN_EXACT, 0)?.iter().sum());
                push(case, measure(&g, count)?.0);
            }
            drop(attached);
        }
        // nftables: no XDP program on the receiver.
        let nft = Nft::new(&link.near, &link.near_if)?;
        nft.ban_range(BAN_BASE, 1)?;
        bench.set_sources(BAN_BASE, 1, 1)?;
        let g = Generator::new(&bench, &frame, far.index, &far_ns, opts.batch)?;
        push(NFT1, measure(&g, || nft.received())?.0);
        progress!("loading the 1,000,000-element nftables set");
        let t = Instant::now();
        nft.ban_range(Ipv4Addr::from(u32::from(BAN_BASE) + 1), MILLION - 1)?;
        nft_fill = t.elapsed();
        bench.set_sources(BAN_BASE, MILLION, 1)?;
        let g = Generator::new(&bench, &frame, far.index, &far_ns, opts.batch)?;
        push(NFTM, measure(&g, || nft.received())?.0);
        nft.verify()?;
        drop(nft);
        progress!("nftables table deleted");
    }
    progress!("part 2: cleaning up");

    report.setup.push(format!(
        "part 2: {} round(s) of all cases, median per case; {:.1} s window after {:.1} s warm-up; generator batch {}; \
         receiver NAPI {}; 1,000,000-element nft set loaded in {:.1} s; dense tier: {} /24 blocks for \
         the consecutive million, {} for the scattered one",
        opts.rounds,
        WINDOW.as_secs_f64(),
        WARMUP.as_secs_f64(),
        opts.batch,
        if opts.threaded_napi { "threaded on CPU 1, generator on CPU 0" } else { "in softirq (shares the generator's CPU)" },
        nft_fill.as_secs_f64(),
        dense_blocks.0,
        dense_blocks.1,
    ));
    // Rates drift between rounds on a shared machine: each ratio is the median of the
    // per-round ratios (both rates of a round were measured seconds apart).
    let rates = |case: &str| {
        samples
            .iter()
            .find(|(c, _)| *c == case)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mpps = |case: &str| median(&mut rates(case)) / 1e6;
    let ratio = |case: &str, base: &str| {
        let mut r: Vec<f64> = rates(case)
            .iter()
            .zip(rates(base))
            .map(|(c, b)| c / b)
            .collect();
        median(&mut r)
    };
    let spread = |case: &str| {
        let r: Vec<String> = rates(case)
            .iter()
            .map(|v| format!("{:.2}", v / 1e6))
            .collect();
        format!("rounds {}", r.join(" / "))
    };
    for (case, what) in [
        (DROP1, "drop-everything XDP program"),
        (DROPM, "generator cycling 1M sources"),
        (DROPS, "generator cycling 1M scattered sources"),
        (NFT1, "netdev ingress, set of 1"),
        (NFTM, "netdev ingress, set of 1M"),
    ] {
        report.row(
            "live",
            case,
            mpps(case),
            "Mpps",
            &format!("{what}; {}", spread(case)),
        );
    }
    let rows = [
        (G1, G1, DROP1),
        (GM1, GM1, DROP1),
        (GMM, GMM, DROPM),
        (GSS, GSS, DROPS),
        ("guard, 1 ban, 1 banned source (vs nft)", G1, NFT1),
        ("guard, 1M bans, 1M banned sources (vs nft)", GMM, NFTM),
        ("ceiling: xdp_drop_all vs nft, 1 source", DROP1, NFT1),
        ("ceiling: xdp_drop_all vs nft, 1M sources", DROPM, NFTM),
    ];
    for (label, case, base) in rows {
        let note = if label == case {
            spread(case)
        } else {
            String::new()
        };
        report.row_ratio(
            "live",
            label,
            mpps(case),
            "Mpps",
            base,
            ratio(case, base),
            &note,
        );
    }
    // Each frame costs the generator, the veth and the receiver; a ratio of rates therefore
    // mixes the generator's share in. The time a receiver adds to each frame over the
    // drop-everything program isolates it (median of per-round differences).
    let extra_ns = |case: &str, base: &str| {
        let mut d: Vec<f64> = rates(case)
            .iter()
            .zip(rates(base))
            .map(|(c, b)| 1e9 / c - 1e9 / b)
            .collect();
        median(&mut d)
    };
    for (guard_case, nft_case, base, what) in [
        (G1, NFT1, DROP1, "1 banned source"),
        (GMM, NFTM, DROPM, "1,000,000 banned sources"),
    ] {
        let (g, n) = (extra_ns(guard_case, base), extra_ns(nft_case, base));
        let guard_label = format!("ns per frame over drop-all: guard, {what}");
        report.row("live", &guard_label, g, "ns", "");
        report.row_ratio(
            "live",
            &format!("ns per frame over drop-all: nftables, {what}"),
            n,
            "ns",
            &guard_label,
            n / g,
            "",
        );
    }
    let goals = [
        (
            "ban drop >= 85 % of drop-all, 1 source (1 ban)",
            G1,
            DROP1,
            0.85,
        ),
        (
            "ban drop >= 85 % of drop-all, 1 source (1M bans)",
            GM1,
            DROP1,
            0.85,
        ),
        (
            "ban drop >= 85 % of drop-all, 1M sources (1M bans)",
            GMM,
            DROPM,
            0.85,
        ),
        (">= 5x nftables, 1 banned source", G1, NFT1, 5.0),
        (
            ">= 3x nftables, 1,000,000 distinct banned sources",
            GMM,
            NFTM,
            3.0,
        ),
        (
            "no slowdown 1 -> 1,000,000 bans (1 source; 1M/1 rate, within 10 %)",
            GM1,
            G1,
            0.9,
        ),
    ];
    for (what, case, base, target) in goals {
        report.goal_ratio(what, ratio(case, base), target);
    }
    Ok(())
}
