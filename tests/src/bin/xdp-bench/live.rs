//! Part 2: packets per second through a veth pair between two namespaces.
//!
//! The sender side runs `xdp_gen` with `BPF_PROG_RUN` in live-frame mode: each frame it
//! returns `XDP_TX` for leaves through the sender veth into the receiver veth (this kernel has
//! no pktgen). On the receiver, the program under test is attached in native mode, or — for
//! the nftables baseline — no XDP program at all and a netdev ingress chain with a set of the
//! banned sources. A rate is the receiver's own count of dropped packets (the program's
//! counter; for nftables the veth's rx count, checked against the rule counter afterwards)
//! over a slice of time while the generator runs.
//!
//! The cases that share a generator setting (1 source, 1M sources, 1M scattered sources) form
//! a group. The generator runs without a break through a group while the receiver switches
//! between the group's cases in short slices, cycle after cycle: the program is replaced in
//! place on one XDP link (`bpf_link_update`), or the link is dropped for nftables. A case and
//! its baseline are thus measured a fraction of a second apart, and a ratio is the median of
//! the per-cycle ratios: the machine's drift, which is slow, cancels out.
//!
//! Everything runs in two NAPI modes (`Napi`). In softirq mode the receiver's NAPI runs as veth
//! does by default: in softirq right after each generated batch, on the generator's CPU. Every
//! frame then costs generator + receiver on one core and nothing is lost in the veth ring; the
//! generator's share is the same in every case, so a ratio between cases understates the
//! receiver's own difference (it is pulled towards 1). Threaded mode moves the receiver into a
//! kernel thread pinned to the second CPU, with the generator pinned to the first: each side
//! then has a core of its own, as with traffic from another host, and a rate is the slower
//! side's. The receiver thread's CPU time per frame is then measured too.
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::veth::{iface, in_ns, pin, pin_napi_threads, run_time_ns, set_gro, set_threaded_napi};
use anyhow::{Context, bail, ensure};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::xdp::XdpLink;
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use guard_common::{PROG_XDP_GUARD, STAT_DROP_BAN_EXACT};
use guard_tests::{Link, enter};

use crate::live_report::report_mode;
use crate::micro::{BAN_BASE, MILLION};
use crate::nft::Nft;
use crate::progs::{Bench, Guard, PROG_DROP_ALL, PROG_GEN, udp_frame, xdp, xdp_mut};
use crate::report::Report;

/// Generator warm-up before a group's first slice.
const WARMUP: Duration = Duration::from_millis(400);
/// Time after a switch before the slice opens (frames queued for the previous case drain).
const SETTLE: Duration = Duration::from_millis(50);
/// Measurement slice per case and cycle.
const SLICE: Duration = Duration::from_millis(250);
/// Frames per live-frame batch by default (the kernel's default; its maximum is 256).
pub const DEFAULT_BATCH: u32 = 64;
/// Frames per `BPF_PROG_RUN` call: far more than a group needs; the call is interrupted.
const GEN_REPEAT: u32 = 1 << 30;
/// nftables table made in the receiver namespace.
pub const NFT_TABLE: &str = "guard_bench";

// Case names (also the keys of the goals).
pub const DROP1: &str = "baseline: xdp_drop_all, 1 source";
pub const DROPM: &str = "baseline: xdp_drop_all, 1,000,000 sources";
pub const DROPS: &str = "baseline: xdp_drop_all, 1,000,000 scattered sources";
pub const NFT1: &str = "baseline: nftables set drop, 1 banned source";
pub const NFTM: &str = "baseline: nftables set drop, 1,000,000 banned sources";
pub const G1: &str = "guard, 1 ban, 1 banned source";
pub const GM1: &str = "guard, 1,000,000 bans, 1 banned source";
pub const GMM: &str = "guard, 1,000,000 bans, 1,000,000 banned sources";
pub const GSS: &str = "guard, 1,000,000 scattered bans and sources";
/// Step between the scattered sources: odd, so `BAN_BASE + i * SCATTER` visits a million
/// distinct addresses spread over the whole IPv4 space (almost never two in one /24).
const SCATTER: u32 = 2_654_435_761;

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
    /// Pin the generator to CPU 0 (the receiver's NAPI thread gets CPU 1).
    pinned: bool,
}

impl Generator<'_> {
    /// Generates until `stop` is set and the thread is interrupted with SIGUSR1.
    fn generate(&self, stop: &AtomicBool) -> anyhow::Result<()> {
        if self.pinned {
            pin(0, 0)?;
        }
        enter(self.ns)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, self.frame.len() as u32, 0, self.ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        while !stop.load(Ordering::Relaxed) {
            let opts = TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(&ctx),
                repeat: GEN_REPEAT,
                attrs: TestRunAttrs::new().xdp_live_frames(self.batch),
                ..TestRunOptions::default()
            };
            if let Err(e) = self.prog.test_run(opts) {
                let e = anyhow::Error::from(e);
                if !is_eintr(&e) {
                    return Err(e.context("live-frame BPF_PROG_RUN of xdp_gen"));
                }
            }
        }
        Ok(())
    }
}

/// What handles the receiver's frames during a case's slices.
enum Target<'a> {
    /// This XDP program, attached in native mode.
    Xdp(&'a mut Xdp),
    /// No XDP program: the frames go up to the stack (and its nftables ingress chain).
    Stack,
}

/// One case of a group: its target and the counter of the frames it dropped.
struct Member<'a> {
    case: &'static str,
    target: Target<'a>,
    count: Box<dyn FnMut() -> anyhow::Result<u64> + 'a>,
}

impl<'a> Member<'a> {
    fn new(
        case: &'static str,
        target: Target<'a>,
        count: impl FnMut() -> anyhow::Result<u64> + 'a,
    ) -> Self {
        Self {
            case,
            target,
            count: Box::new(count),
        }
    }
}

/// A case where the stack handles the frames: the nftables baseline, counted by `nft`.
fn stack_member<'a>(case: &'static str, nft: &'a Nft<'_>) -> Member<'a> {
    Member::new(case, Target::Stack, move || nft.received())
}

/// The receiver veth's XDP attachment: one link whose program is replaced in place, dropped
/// (detaching) for the stack and at the end.
struct Receiver<'a> {
    ns: &'a Path,
    dev: &'a str,
    link: Option<XdpLink>,
    /// With threaded NAPI: the receiver thread is pinned to CPU 1 and its CPU time measured.
    threaded: bool,
}

impl Receiver<'_> {
    fn switch(&mut self, target: &mut Target<'_>) -> anyhow::Result<()> {
        match target {
            Target::Stack => drop(self.link.take()),
            Target::Xdp(prog) => {
                let id = if let Some(link) = self.link.take() {
                    prog.attach_to_link(link)
                        .context("replacing the receiver's XDP program")?
                } else {
                    let dev = self.dev;
                    in_ns(self.ns, || {
                        prog.attach(dev, XdpMode::Driver)
                            .with_context(|| format!("attaching XDP (native) to {dev}"))
                    })?
                };
                self.link = Some(prog.take_link(id)?);
            }
        }
        Ok(())
    }
}

/// One case's slice.
pub struct Sample {
    /// Frames the receiver counted per second.
    pub pps: f64,
    /// Frames counted.
    pub frames: u64,
    /// With the receiver's NAPI in its own thread: that thread's CPU time per counted frame, ns.
    pub receiver_ns: Option<f64>,
}

/// Runs the generator `g` without a break while the receiver goes through `members` for
/// `cycles` cycles, one slice each (in reverse order every other cycle, so that no case always
/// follows the same one); hands each slice to `push`.
fn run_group(
    g: &Generator<'_>,
    rx: &mut Receiver<'_>,
    members: &mut [Member<'_>],
    cycles: usize,
    mut push: impl FnMut(&'static str, Sample),
) -> anyhow::Result<()> {
    rx.switch(&mut members[0].target)?;
    // Pinned before the generator starts, so that the warm-up already runs with the receiver
    // on its own core (a thread just switched to threaded mode starts anywhere).
    let napi = if rx.threaded {
        pin_napi_threads(rx.dev, 1)?
    } else {
        Vec::new()
    };
    let stop = AtomicBool::new(false);
    let (tx, thread_rx) = mpsc::channel();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let stop = &stop;
        let gen_thread = s.spawn(move || -> anyhow::Result<()> {
            // SAFETY: pthread_self has no preconditions.
            let _ = tx.send(unsafe { libc::pthread_self() });
            g.generate(stop)
        });
        let thread = thread_rx.recv().context("generator thread did not start")?;
        let result = (|| {
            std::thread::sleep(WARMUP);
            for cycle in 0..cycles {
                let n = members.len();
                for i in 0..n {
                    let m = &mut members[if cycle % 2 == 0 { i } else { n - 1 - i }];
                    rx.switch(&mut m.target)?;
                    std::thread::sleep(SETTLE);
                    let t0 = Instant::now();
                    let (c0, cpu0) = ((m.count)()?, run_time_ns(&napi)?);
                    let t0 = t0 + t0.elapsed() / 2;
                    std::thread::sleep(SLICE);
                    let t1 = Instant::now();
                    let (c1, cpu1) = ((m.count)()?, run_time_ns(&napi)?);
                    let t1 = t1 + t1.elapsed() / 2;
                    ensure!(
                        !gen_thread.is_finished(),
                        "the generator stopped during a slice"
                    );
                    let frames = c1.saturating_sub(c0);
                    ensure!(
                        frames > 0,
                        "{}: the receiver counted no packets: frames are not arriving",
                        m.case
                    );
                    let cpu = cpu1.saturating_sub(cpu0);
                    push(
                        m.case,
                        Sample {
                            pps: frames as f64 / (t1 - t0).as_secs_f64(),
                            frames,
                            receiver_ns: rx.threaded.then(|| cpu as f64 / frames as f64),
                        },
                    );
                }
            }
            Ok(())
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
        result?;
        generated
    })
}

/// How the receiver veth's NAPI runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Napi {
    /// In softirq on the generator's CPU (veth's default).
    Softirq,
    /// In a kernel thread pinned to CPU 1, the generator pinned to CPU 0.
    Threaded,
}

impl Napi {
    pub fn label(self) -> &'static str {
        match self {
            Napi::Softirq => "softirq",
            Napi::Threaded => "threaded",
        }
    }
}

pub struct Options {
    /// Cycles through each group's cases.
    pub cycles: usize,
    /// The NAPI modes to measure in, in order.
    pub napi: Vec<Napi>,
    /// Frames per live-frame batch, 1..=256.
    pub batch: u32,
}

/// Every slice of every case of one mode, in cycle order per case.
pub struct Samples(Vec<(&'static str, Vec<Sample>)>);

impl Samples {
    fn push(&mut self, case: &'static str, sample: Sample) {
        match sample.receiver_ns {
            Some(ns) => progress!(
                "{case}: {:.3} Mpps, receiver thread {ns:.1} ns/frame",
                sample.pps / 1e6
            ),
            None => progress!("{case}: {:.3} Mpps", sample.pps / 1e6),
        }
        match self.0.iter_mut().find(|(c, _)| *c == case) {
            Some((_, v)) => v.push(sample),
            None => self.0.push((case, vec![sample])),
        }
    }

    /// `f` of each slice of `case`, in cycle order.
    pub fn series(&self, case: &str, f: impl Fn(&Sample) -> Option<f64>) -> Vec<f64> {
        self.0
            .iter()
            .find(|(c, _)| *c == case)
            .map(|(_, v)| v.iter().filter_map(f).collect())
            .unwrap_or_default()
    }

    fn frames(&self, cases: &[&str]) -> u64 {
        self.0
            .iter()
            .filter(|(c, _)| cases.contains(c))
            .flat_map(|(_, v)| v.iter().map(|s| s.frames))
            .sum()
    }
}

/// A loaded program attached to the receiver in a slice, and how to read its drop count.
struct Dropper<'a> {
    prog: &'a mut Xdp,
    /// The per-CPU counter array and the index of the drops in it.
    stats: &'a PerCpuArray<MapData, u64>,
    index: u32,
}

impl<'a> Dropper<'a> {
    fn new(prog: &'a mut Xdp, stats: &'a PerCpuArray<MapData, u64>, index: u32) -> Self {
        Self { prog, stats, index }
    }

    fn member(&mut self, case: &'static str) -> Member<'_> {
        let (stats, index) = (self.stats, self.index);
        Member::new(case, Target::Xdp(&mut *self.prog), move || {
            Ok(stats.get(&index, 0)?.iter().sum())
        })
    }
}

/// Everything part 2 measures with, set up once for all modes.
struct Rig<'a> {
    link: &'a Link,
    near_ns: &'a Path,
    g: Generator<'a>,
    /// The generator's settings.
    gen_cfg: &'a mut Array<MapData, u32>,
    drop_all: Dropper<'a>,
    one: Dropper<'a>,
    million: Dropper<'a>,
    scatter: Dropper<'a>,
    cycles: usize,
}

impl Rig<'_> {
    /// Every group in one NAPI mode; also returns how long the million-element nft set took
    /// to load.
    fn measure(&mut self, napi: Napi) -> anyhow::Result<(Samples, Duration)> {
        let (link, cycles) = (self.link, self.cycles);
        let threaded = napi == Napi::Threaded;
        set_threaded_napi(&link.near, &link.near_if, threaded)?;
        self.g.pinned = threaded;
        let mut rx = Receiver {
            ns: self.near_ns,
            dev: &link.near_if,
            link: None,
            threaded,
        };
        let mut samples = Samples(Vec::new());
        let mut push = |case, sample| samples.push(case, sample);
        // The nftables table stays for the first two groups; it only sees frames while no
        // XDP program is attached.
        let nft = Nft::new(&link.near, &link.near_if)?;
        nft.ban_range(BAN_BASE, 1)?;
        progress!("part 2 ({}): 1 source, {cycles} cycles", napi.label());
        Bench::set_sources(self.gen_cfg, BAN_BASE, 1, 1)?;
        run_group(
            &self.g,
            &mut rx,
            &mut [
                self.drop_all.member(DROP1),
                self.one.member(G1),
                self.million.member(GM1),
                stack_member(NFT1, &nft),
            ],
            cycles,
            &mut push,
        )?;
        progress!(
            "part 2 ({}): loading the 1,000,000-element nftables set",
            napi.label()
        );
        let t = Instant::now();
        nft.ban_range(Ipv4Addr::from(u32::from(BAN_BASE) + 1), MILLION - 1)?;
        let nft_fill = t.elapsed();
        progress!(
            "part 2 ({}): 1,000,000 sources, {cycles} cycles",
            napi.label()
        );
        Bench::set_sources(self.gen_cfg, BAN_BASE, MILLION, 1)?;
        run_group(
            &self.g,
            &mut rx,
            &mut [
                self.drop_all.member(DROPM),
                self.million.member(GMM),
                stack_member(NFTM, &nft),
            ],
            cycles,
            &mut push,
        )?;
        progress!(
            "part 2 ({}): 1,000,000 scattered sources, {cycles} cycles",
            napi.label()
        );
        Bench::set_sources(self.gen_cfg, BAN_BASE, MILLION, SCATTER)?;
        run_group(
            &self.g,
            &mut rx,
            &mut [self.drop_all.member(DROPS), self.scatter.member(GSS)],
            cycles,
            &mut push,
        )?;
        drop(rx);
        nft.verify(samples.frames(&[NFT1, NFTM]))?;
        Ok((samples, nft_fill))
    }
}

pub fn run(report: &mut Report, opts: &Options) -> anyhow::Result<()> {
    install_stop_signal()?;
    progress!("part 2: creating namespaces and the veth pair");
    let link = Link::exclusive()?;
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
    if opts.napi.contains(&Napi::Threaded) {
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        ensure!(
            cpus >= 2,
            "threaded NAPI needs two CPUs, this machine has {cpus}"
        );
    }
    let near_ns = link.near.path();
    let far_ns = link.far.path();

    // Two copies of the helper object: one generates, the other drops (attached to the receiver).
    let mut bench = Bench::load()?; // the generator
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
    let Bench {
        ebpf: gen_ebpf,
        gen_cfg,
        ..
    } = &mut bench;
    let g = Generator {
        prog: xdp(gen_ebpf, PROG_GEN)?,
        frame,
        ifindex: far.index,
        ns: &far_ns,
        batch: opts.batch,
        pinned: false,
    };
    let drop_all = Dropper::new(
        xdp_mut(&mut drop_obj.ebpf, PROG_DROP_ALL)?,
        &drop_obj.dropped,
        0,
    );
    let exact = STAT_DROP_BAN_EXACT;
    let one = Dropper::new(
        xdp_mut(&mut guard_one.ebpf, PROG_XDP_GUARD)?,
        &guard_one.stats,
        exact,
    );
    let million = Dropper::new(
        xdp_mut(&mut guard_million.ebpf, PROG_XDP_GUARD)?,
        &guard_million.stats,
        exact,
    );
    let scatter = Dropper::new(
        xdp_mut(&mut guard_scatter.ebpf, PROG_XDP_GUARD)?,
        &guard_scatter.stats,
        exact,
    );
    let mut rig = Rig {
        link: &link,
        near_ns: &near_ns,
        g,
        gen_cfg,
        drop_all,
        one,
        million,
        scatter,
        cycles: opts.cycles,
    };
    let mut nft_fill = Duration::ZERO;
    for &napi in &opts.napi {
        let samples;
        (samples, nft_fill) = rig.measure(napi)?;
        report_mode(report, napi, &samples);
    }
    progress!("part 2: cleaning up");
    report.setup.push(format!(
        "part 2: {} cycles per group of cases sharing a generator setting; each case gets a {} ms slice per \
         cycle after {} ms settling, the generator running throughout; generator batch {}; 1,000,000-element \
         nft set loaded in {:.1} s; dense tier: {} /24 blocks for the consecutive million, {} for the scattered one",
        opts.cycles,
        SLICE.as_millis(),
        SETTLE.as_millis(),
        opts.batch,
        nft_fill.as_secs_f64(),
        dense_blocks.0,
        dense_blocks.1,
    ));
    Ok(())
}
