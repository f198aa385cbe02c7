//! `cargo xtask …`: what cargo cannot do alone — set up the eBPF toolchain, build the eBPF
//! objects into a known place, run guard as root, run every test (unit, `BPF_PROG_TEST_RUN`,
//! namespace end-to-end) and the benchmarks.
mod eval;
mod fuzz;
mod setup;

use setup::{is_root, run};

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check and install the toolchain and test tools, then stop.
    Setup,
    /// Build the eBPF objects and the guard binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build guard (release) and start the daemon as root; arguments after `--` go to `guard run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything and run every test: unit, `BPF_PROG_TEST_RUN` and namespace end-to-end.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
        /// Pass even when root-only tests were skipped (as root, a skip fails the run).
        #[arg(long)]
        allow_skips: bool,
    },
    /// Measure the request validator on the CRS corpus and the benign set.
    Eval(eval::EvalArgs),
    /// Fuzz the parsers (nightly + cargo-fuzz): each target for a bounded time, then the
    /// executions and crashes per target.
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks: `xdp` (XDP ns/packet and packets/s), `tap` (HTTP tap throughput and load),
    /// `bans` (the daemon with a million bans: memory, import, listing, restart, disk),
    /// `proxy` (wrk against the test app directly, through guard's reverse proxy and through
    /// nginx: throughput ratios, p50/p99, and the added p99 at half of nginx's rate),
    /// `metrics` (a `/metrics` scrape with a million bans against one with none).
    /// Arguments after `xdp` go to the benchmark (`--cycles N`, `--batch FRAMES`, `--napi
    /// softirq|threaded|both`, `--only micro|live`, `--json`); after `bans`, `--bans N`; after
    /// `metrics`, `--bans N` and `--scrapes N`.
    Bench {
        what: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn step(msg: &str) {
    eprintln!("[xtask] {msg}");
}

fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root());
    c
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Directory the eBPF objects are copied to; `.cargo/config.toml` points `GUARD_EBPF_DIR` here.
fn ebpf_dir() -> PathBuf {
    root().join("target/guard-ebpf")
}

/// Builds guard-ebpf for bpfel and copies its objects to `target/guard-ebpf/`.
fn build_ebpf() -> anyhow::Result<()> {
    let chain = setup::bpf_toolchain()?;
    step("building the eBPF programs (guard-ebpf, bpfel-unknown-none)");
    let mut c = chain.cargo();
    c.current_dir(root())
        .args([
            "build",
            "-p",
            "guard-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(chain.build_args());
    run(&mut c, "building guard-ebpf")?;
    let out = target_dir().join("bpfel-unknown-none/release");
    std::fs::create_dir_all(ebpf_dir())?;
    for name in ["guard-ebpf", "guard-bench-ebpf"] {
        let src = out.join(name);
        if !src.exists() {
            bail!("the eBPF build produced no {}", src.display());
        }
        // Copy only when changed, so an unchanged object does not force a daemon rebuild.
        let dst = ebpf_dir().join(name);
        if std::fs::read(&src)? == std::fs::read(&dst).unwrap_or_default() {
            // Same bytes from newer sources (cargo rebuilt nothing, or rebuilt to the same
            // object): mark the copy as fresh for guard-daemon's build.rs, which compares it
            // with every source file, including ones the BPF build does not compile.
            let built = std::fs::metadata(&src)?
                .modified()?
                .max(newest(&root().join("guard-ebpf/src")))
                .max(newest(&root().join("guard-common/src")));
            // Marked with the time of now, not of the sources: cargo reruns guard-daemon's
            // build.rs only for a change newer than its last run, which may have seen the copy
            // stale and embedded the stub.
            let file = std::fs::File::options().write(true).open(&dst)?;
            if file.metadata()?.modified()? < built {
                file.set_modified(std::time::SystemTime::now())?;
            }
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// The newest modification time under `dir` (the epoch if none).
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut best = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).unwrap_or(best)
        };
        best = best.max(t);
    }
    best
}

fn build(release: bool) -> anyhow::Result<()> {
    build_ebpf()?;
    step(&format!(
        "building guard ({})",
        if release { "release" } else { "debug" }
    ));
    let mut c = cargo();
    c.args(["build", "-p", "guard-daemon"]);
    if release {
        c.arg("--release");
    }
    run(&mut c, "building guard")
}

/// Re-runs this xtask command under sudo when not root.
fn as_root(args: &[&str]) -> anyhow::Result<bool> {
    if is_root() {
        return Ok(false);
    }
    step("root is needed (XDP, bpffs, network namespaces): re-running under sudo");
    let exe = std::env::current_exe()?;
    run(Command::new("sudo").arg("-E").arg(exe).args(args), "sudo")?;
    Ok(true)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => {
            setup::bpf_toolchain()?;
            setup::test_tools()
        }
        Task::Build { release } => build(release),
        Task::Run { args } => {
            build(true)?;
            let mut full = vec!["run"];
            full.extend(args.iter().map(String::as_str));
            let bin = target_dir().join("release/guard");
            let mut c = if is_root() {
                Command::new(&bin)
            } else {
                let mut s = Command::new("sudo");
                s.arg(&bin);
                s
            };
            if !args.iter().any(|a| a == "--config" || a == "-c")
                && Path::new("/etc/guard/guard.toml").exists()
            {
                full.extend(["--config", "/etc/guard/guard.toml"]);
            }
            step(&format!("starting: guard {}", full.join(" ")));
            run(c.args(&full), "guard run")
        }
        Task::Test {
            filter,
            allow_skips,
        } => test(filter.as_deref(), allow_skips),
        Task::Eval(args) => {
            // guard embeds the eBPF object: build it before eval builds guard.
            build_ebpf()?;
            eval::run(&args)
        }
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Bench { what, args } => match what.as_str() {
            "xdp" => bench_xdp(&args),
            "tap" if args.is_empty() => bench_tap(),
            "tap" => bail!("`bench tap` takes no arguments"),
            "bans" => bench_bans(&args),
            "proxy" => bench_proxy(&args),
            "metrics" => bench_metrics(&args),
            other => {
                bail!("unknown benchmark {other:?}: try `xdp`, `tap`, `bans`, `proxy` or `metrics`")
            }
        },
    }
}

fn test(filter: Option<&str>, allow_skips: bool) -> anyhow::Result<()> {
    let mut args = vec!["test"];
    if let Some(f) = filter {
        args.push(f);
    }
    if allow_skips {
        args.push("--allow-skips");
    }
    if as_root(&args)? {
        return Ok(());
    }
    setup::test_tools()?;
    core_is_pure()?;
    build(false)?;
    fuzz_targets_compile()?;
    let mut total = Tally::default();
    // A filter naming a test file of guard-tests (`e2e_bans`, `prog_test_run`) runs that file.
    let file = filter.filter(|f| root().join(format!("tests/tests/{f}.rs")).is_file());
    let unit = if file.is_some() {
        Ok(())
    } else {
        step("unit tests (no root needed)");
        let mut c = cargo();
        c.args([
            "test",
            "--workspace",
            "--exclude",
            "guard-ebpf",
            "--exclude",
            "guard-tests",
            "--no-fail-fast",
        ]);
        if let Some(f) = filter {
            c.arg(f);
        }
        run_tests(&mut c, &mut total)
    };
    step("BPF_PROG_TEST_RUN and namespace end-to-end tests (guard-tests, as root)");
    let mut c = cargo();
    c.args(["test", "-p", "guard-tests", "--no-fail-fast"])
        .env("GUARD_BIN", target_dir().join("debug/guard"));
    match (file, filter) {
        (Some(f), _) => c.args(["--test", f]),
        (None, Some(f)) => c.arg(f),
        (None, None) => &mut c,
    };
    c.args(["--", "--show-output"]);
    let e2e = run_tests(&mut c, &mut total);
    let skipped = total.skipped;
    println!(
        "\nsummary: {} passed, {} failed, {skipped} skipped",
        total.passed.saturating_sub(skipped),
        total.failed
    );
    unit.context("unit tests")?;
    e2e.context("end-to-end tests")?;
    if let Some(f) = filter
        && total.passed + total.failed == 0
    {
        bail!("no test matched {f:?}: nothing was tested");
    }
    if skipped > 0 && !allow_skips {
        bail!(
            "{skipped} test(s) skipped as root (see their SKIPPED: lines): a root-only test that \
             cannot run here is a failure, not a pass; `--allow-skips` accepts it"
        );
    }
    Ok(())
}

/// Crates that do I/O, which must never enter `guard-core`'s dependency tree.
const IO_CRATES: &[&str] = &["aya", "sled", "tokio", "reqwest", "libc"];

/// Fails if `cargo tree -p guard-core` lists one of [`IO_CRATES`] (the pure core stays pure
/// because the build says so, not by discipline).
fn core_is_pure() -> anyhow::Result<()> {
    step("checking that guard-core depends on no I/O crate");
    let out = cargo()
        .args([
            "tree",
            "-p",
            "guard-core",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p guard-core failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let found = impure(&tree);
    if !found.is_empty() {
        bail!(
            "guard-core must not depend on I/O crates, but its tree has: {}",
            found.join(", ")
        );
    }
    Ok(())
}

/// The [`IO_CRATES`] named in a `cargo tree --prefix none` listing.
fn impure(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| IO_CRATES.contains(name))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Compiles the fuzz targets (stable Rust, without linking libFuzzer) so they never rot.
fn fuzz_targets_compile() -> anyhow::Result<()> {
    step("compiling the fuzz targets (fuzz/, without libFuzzer)");
    run(
        cargo()
            .args([
                "check",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--no-default-features",
                "--bins",
                "--target-dir",
            ])
            .arg(target_dir()),
        "compiling the fuzz targets",
    )
}

/// Test counts summed over every `cargo test` binary.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// Runs `cargo test`, echoing its output, adding its results to `tally`.
fn run_tests(cmd: &mut Command, tally: &mut Tally) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cargo test: cannot start")?;
    let out = child.stdout.take().context("cargo test: no stdout")?;
    for line in std::io::BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| {
                rest.split(';').find_map(|part| {
                    part.trim()
                        .strip_suffix(word)
                        .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                })
            };
            tally.passed += num(" passed").unwrap_or(0);
            tally.failed += num(" failed").unwrap_or(0);
        }
        if line.starts_with("SKIPPED:") {
            tally.skipped += 1;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// Builds a benchmark binary of guard-tests in release and runs it as root, with `GUARD_BIN`
/// pointing at the release guard.
fn run_bench_bin(name: &str, args: &[String]) -> anyhow::Result<()> {
    step(&format!("building {name} (release)"));
    run(
        cargo().args(["build", "--release", "-p", "guard-tests", "--bin", name]),
        &format!("building {name}"),
    )?;
    run(
        Command::new(target_dir().join("release").join(name))
            .args(args)
            .env("GUARD_BIN", target_dir().join("release/guard")),
        name,
    )
}

fn bench_xdp(args: &[String]) -> anyhow::Result<()> {
    let mut again = vec!["bench", "xdp"];
    again.extend(args.iter().map(String::as_str));
    if as_root(&again)? {
        return Ok(());
    }
    setup::test_tools()?;
    build_ebpf()?;
    run_bench_bin("xdp-bench", args)
}

fn bench_tap() -> anyhow::Result<()> {
    if as_root(&["bench", "tap"])? {
        return Ok(());
    }
    setup::test_tools()?;
    build(true)?;
    step("tap throughput per core against plain httparse (release)");
    run(
        cargo().args(["bench", "-p", "guard-core", "--bench", "tap"]),
        "tap throughput benchmark",
    )?;
    step("tap under 10,000 requests/s across namespaces");
    run_bench_bin("tap-load", &[])
}

fn bench_proxy(args: &[String]) -> anyhow::Result<()> {
    let mut again = vec!["bench", "proxy"];
    again.extend(args.iter().map(String::as_str));
    if as_root(&again)? {
        return Ok(());
    }
    setup::test_tools()?;
    setup::proxy_bench_tools()?;
    build(true)?;
    run_bench_bin("proxy-bench", args)
}

fn bench_bans(args: &[String]) -> anyhow::Result<()> {
    let mut again = vec!["bench", "bans"];
    again.extend(args.iter().map(String::as_str));
    if as_root(&again)? {
        return Ok(());
    }
    setup::test_tools()?;
    build(true)?;
    run_bench_bin("bans-bench", args)
}

fn bench_metrics(args: &[String]) -> anyhow::Result<()> {
    let mut again = vec!["bench", "metrics"];
    again.extend(args.iter().map(String::as_str));
    if as_root(&again)? {
        return Ok(());
    }
    setup::test_tools()?;
    build(true)?;
    run_bench_bin("metrics-bench", args)
}

#[cfg(test)]
mod tests {
    use super::impure;

    #[test]
    fn the_purity_check_names_io_crates_only() {
        let tree = "guard-core v0.1.0 (/w/guard-core)\nregex v1.12.2\ntokio v1.48.0\n\
                    libc v0.2.177\nlibc v0.2.177\nserde v1.0.228\n";
        assert_eq!(impure(tree), ["libc", "tokio"]);
        assert!(impure("guard-core v0.1.0\nthiserror v2.0.17\n").is_empty());
    }
}
