//! `xdp-bench`: how fast `xdp_guard` drops banned sources, as ratios to baselines measured in
//! the same run (absolute rates drift ±15 % between runs on a shared machine).
//!
//! Part 1 runs the program with `BPF_PROG_TEST_RUN` on a crafted 64-byte frame and compares
//! ns/packet with a drop-everything program. Part 2 pushes live frames through a veth pair
//! between two namespaces and compares packets/s with a drop-everything XDP program and an
//! nftables netdev-ingress set drop. Needs root; everything it creates (namespaces, veth,
//! nftables tables inside them, bpffs pins) is removed when it ends, also on error.
//!
//! Usage: `xdp-bench [--json] [--only micro|live] [--rounds N] [--batch FRAMES] [--threaded-napi] [--guard-object PATH]`.
//! `--rounds` repeats part 2's cases (median per case, default 5); `--threaded-napi` moves the
//! receiver's NAPI from softirq context on the generator's CPU (the veth default) into a kernel thread;
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
mod micro;
mod nft;
mod progs;
mod report;

use anyhow::{Context, bail, ensure};

use report::Report;

fn main() -> anyhow::Result<()> {
    let mut json = false;
    let (mut micro, mut live) = (true, true);
    let mut live_opts = live::Options {
        rounds: 5,
        threaded_napi: false,
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
            "--rounds" => {
                live_opts.rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--rounds takes a positive number")?;
            }
            "--threaded-napi" => live_opts.threaded_napi = true,
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
                    "usage: xdp-bench [--json] [--only micro|live] [--rounds N] [--batch FRAMES] [--threaded-napi] [--guard-object PATH]   (as root)"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
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
