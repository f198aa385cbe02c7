//! `xdp-bench`: how fast `xdp_guard` drops banned sources, as ratios to baselines measured in
//! the same run (absolute rates drift ±15 % between runs on a shared machine).
//!
//! Part 1 runs the program with `BPF_PROG_TEST_RUN` on a crafted 64-byte frame and compares
//! ns/packet with a drop-everything program. Part 2 pushes live frames through a veth pair
//! between two namespaces and compares packets/s with a drop-everything XDP program and an
//! nftables netdev-ingress set drop. Needs root; everything it creates (namespaces, veth,
//! nftables tables inside them, bpffs pins) is removed when it ends, also on error.
//!
//! Usage: `xdp-bench [--json] [--only micro|live] [--cycles N] [--batch FRAMES] [--napi softirq|threaded|both]
//! [--guard-object PATH]`. `--cycles` sets how often part 2 goes through each group of cases (default 12);
//! `--napi` where the receiver's NAPI runs: in softirq on the generator's CPU (veth's default), in a kernel
//! thread on a CPU of its own, or both one after the other (the default with two CPUs or more);
//! `--guard-object` benchmarks another build of `guard-ebpf` (same program and map names).
use std::sync::OnceLock;
use std::time::Instant;

/// Prints a progress line on stderr with the seconds since start (stdout stays the report).
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[{:6.1} s] {}", $crate::started().elapsed().as_secs_f64(), format_args!($($arg)*))
    };
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

mod live;
mod live_report;
mod micro;
mod nft;
mod progs;
mod report;
mod veth;

use anyhow::{Context, bail, ensure};

use report::Report;

fn main() -> anyhow::Result<()> {
    let mut json = false;
    let (mut micro, mut live) = (true, true);
    let mut live_opts = live::Options {
        cycles: 12,
        napi: Vec::new(),
        batch: live::DEFAULT_BATCH,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--only" => match args.next().as_deref() {
                Some("micro") => live = false,
                Some("live") => micro = false,
                other => bail!("--only takes `micro` or `live`, not {other:?}"),
            },
            "--cycles" => {
                live_opts.cycles = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--cycles takes a positive number")?;
            }
            "--napi" => {
                live_opts.napi = match args.next().as_deref() {
                    Some("softirq") => vec![live::Napi::Softirq],
                    Some("threaded") => vec![live::Napi::Threaded],
                    Some("both") => vec![live::Napi::Softirq, live::Napi::Threaded],
                    other => bail!("--napi takes `softirq`, `threaded` or `both`, not {other:?}"),
                };
            }
            "--batch" => {
                live_opts.batch = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=256).contains(n))
                    .context("--batch takes a number of frames from 1 to 256")?;
            }
            "--guard-object" => {
                let path =
                    std::path::PathBuf::from(args.next().context("--guard-object takes a path")?);
                ensure!(
                    path.is_file(),
                    "--guard-object {} is not a file",
                    path.display()
                );
                let _ = progs::GUARD_OBJECT.set(path);
            }
            "-h" | "--help" => {
                println!(
                    "usage: xdp-bench [--json] [--only micro|live] [--cycles N] [--batch FRAMES] [--napi softirq|threaded|both] [--guard-object PATH]   (as root)"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if live_opts.napi.is_empty() {
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        live_opts.napi = if cpus >= 2 {
            vec![live::Napi::Softirq, live::Napi::Threaded]
        } else {
            eprintln!("one CPU: part 2 runs with the receiver's NAPI in softirq only");
            vec![live::Napi::Softirq]
        };
    }
    if let Some(why) = guard_tests::skip_reason() {
        bail!("cannot run: {why}");
    }
    started();
    let mut report = Report::default();
    if micro {
        micro::run(&mut report).context("part 1 (BPF_PROG_TEST_RUN)")?;
    }
    if live {
        live::run(&mut report, &live_opts).context("part 2 (live frames on veth)")?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        report.print();
    }
    Ok(())
}
