//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the cargo-fuzz targets of `fuzz/` for a bounded
//! time each and prints, per target, the executions and whether it crashed. It needs a rustup
//! nightly (libFuzzer's instrumentation) and cargo-fuzz; cargo-fuzz is installed when missing.
//! The seed corpus in `fuzz/corpus/TARGET` is only read: what the fuzzer finds goes to
//! `fuzz/target/corpus/TARGET`, crash inputs and the run's log to `fuzz/artifacts/TARGET/` (both
//! ignored by git, like cargo-fuzz's own build directory `fuzz/target`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{root, step};

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Only this target (default: every target in `fuzz/Cargo.toml`).
    target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop a target after this many executions, if that comes before `--seconds`.
    #[arg(long)]
    runs: Option<u64>,
    /// Sanitizer: `address` (cargo-fuzz's default; finds memory errors in C code and `unsafe`)
    /// or `none` (faster, and guard-core has no `unsafe`; panics, overflows with
    /// `--debug-assertions`, timeouts and memory bounds are still found). Each choice is a
    /// separate full build.
    #[arg(long, default_value = "address")]
    sanitizer: String,
    /// Build with debug assertions (integer overflow checks): slower, catches more.
    #[arg(long)]
    debug_assertions: bool,
    /// Seconds one input may take before it counts as a crash (a request that stalls the tap).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// The toolchain cargo-fuzz builds with.
const NIGHTLY: &str = "+nightly";

/// What one target's run gave.
struct Outcome {
    target: String,
    executions: u64,
    seconds: f64,
    crash: Option<String>,
    /// Inputs slower than libFuzzer's `-report_slow_units` (10 s): reported, not a failure.
    slow: Vec<String>,
}

/// Builds and runs the targets, then prints a table; fails if any target crashed.
pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    tools()?;
    let all = targets()?;
    let chosen: Vec<String> = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t:?}; the targets are: {}", all.join(", ")),
        None => all,
    };
    step(&format!(
        "building the fuzz targets (nightly, sanitizer {})",
        args.sanitizer
    ));
    let mut build = fuzz_command();
    build.arg("build").args(build_flags(args));
    if let [one] = chosen.as_slice() {
        build.arg(one);
    }
    crate::setup::run(&mut build, "building the fuzz targets")?;
    let mut outcomes = Vec::new();
    for target in &chosen {
        match args.runs {
            Some(runs) => step(&format!(
                "fuzzing {target} for {} s or {runs} executions",
                args.seconds
            )),
            None => step(&format!("fuzzing {target} for {} s", args.seconds)),
        }
        outcomes.push(fuzz_one(args, target)?);
    }
    println!(
        "{:<18} {:>8} {:>14} {:>10}  crashes",
        "target", "seconds", "executions", "exec/s"
    );
    for o in &outcomes {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a rate for people to read: f64's 52 bits are plenty"
        )]
        let rate = o.executions as f64 / o.seconds.max(0.001);
        println!(
            "{:<18} {:>8.0} {:>14} {:>10.0}  {}",
            o.target,
            o.seconds,
            o.executions,
            rate,
            o.crash
                .as_ref()
                .map_or_else(|| "0".to_owned(), |a| format!("1: {a}"))
        );
    }
    for o in &outcomes {
        for s in &o.slow {
            println!("{}: slow input (over 10 s, not a failure): {s}", o.target);
        }
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crash.is_some())
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashed: {} (reproduce with `cargo +nightly fuzz run TARGET ARTIFACT`)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// Checks for the nightly toolchain and cargo-fuzz, installing cargo-fuzz when missing.
fn tools() -> anyhow::Result<()> {
    let nightly = Command::new("cargo")
        .args([NIGHTLY, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        bail!(
            "no rustup nightly toolchain: libFuzzer's instrumentation needs one \
             (`rustup toolchain install nightly --profile minimal`)"
        );
    }
    let have_fuzz = || {
        Command::new("cargo")
            .args([NIGHTLY, "fuzz", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have_fuzz() {
        step("cargo-fuzz is missing: installing it (`cargo install cargo-fuzz --locked`)");
        crate::setup::run(
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
            "installing cargo-fuzz (a C++ compiler is needed for libFuzzer)",
        )?;
        if !have_fuzz() {
            bail!(
                "cargo-fuzz was installed but `cargo +nightly fuzz` does not run: is ~/.cargo/bin on PATH?"
            );
        }
    }
    Ok(())
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`, in file order.
fn targets() -> anyhow::Result<Vec<String>> {
    let manifest = root().join("fuzz/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin
            && let Some(v) = line.strip_prefix("name")
            && let Some(v) = v.trim_start().strip_prefix('=')
        {
            names.push(v.trim().trim_matches('"').to_owned());
        }
    }
    if names.is_empty() {
        bail!("{} declares no [[bin]] target", manifest.display());
    }
    Ok(names)
}

/// `cargo +nightly fuzz` in the workspace (it builds into `fuzz/target`).
fn fuzz_command() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root()).arg(NIGHTLY).arg("fuzz");
    c
}

fn build_flags(args: &FuzzArgs) -> Vec<String> {
    let mut flags = vec![
        "--release".to_owned(),
        "--sanitizer".to_owned(),
        args.sanitizer.clone(),
    ];
    if args.debug_assertions {
        flags.push("--debug-assertions".to_owned());
    }
    flags
}

/// Runs one target for `args.seconds`; counts its executions from libFuzzer's status lines.
fn fuzz_one(args: &FuzzArgs, target: &str) -> anyhow::Result<Outcome> {
    let work = grown_corpus(target);
    let artifacts = root().join("fuzz/artifacts").join(target);
    let seeds = root().join("fuzz/corpus").join(target);
    for dir in [&work, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut c = fuzz_command();
    c.arg("run").args(build_flags(args)).arg(target);
    // New inputs go to the first corpus directory only: the seeds in the repository stay as
    // they are.
    c.arg(&work);
    if seeds.is_dir() {
        c.arg(&seeds);
    }
    c.arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-timeout={}", args.timeout))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    if let Some(runs) = args.runs {
        c.arg(format!("-runs={runs}"));
    }
    let dict = root().join("fuzz/http.dict");
    if dict.exists() && !matches!(target, "config" | "control_request") {
        c.arg(format!("-dict={}", dict.display()));
    }
    c.stdout(Stdio::inherit()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = c
        .spawn()
        .with_context(|| format!("starting `cargo fuzz run {target}`"))?;
    let log_path = artifacts.join("last-run.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut executions = 0;
    let mut crash = None;
    let mut slow = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        use std::io::{BufRead, Write};
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.context("reading libFuzzer's output")?;
            let _ = writeln!(log, "{line}");
            if let Some(n) = executed(&line) {
                executions = executions.max(n);
            }
            if let Some(path) = line.split("Test unit written to ").nth(1) {
                let path = path.trim().to_owned();
                if path.contains("/slow-unit-") {
                    slow.push(path);
                } else {
                    crash = Some(path);
                }
            }
            if line.contains("ERROR: libFuzzer") || line.starts_with("thread '") {
                eprintln!("{line}");
            }
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    if !status.success() && crash.is_none() {
        crash = Some(format!(
            "exit {status}, no artifact written: see {}",
            log_path.display()
        ));
    }
    Ok(Outcome {
        target: target.to_owned(),
        executions,
        seconds: started.elapsed().as_secs_f64(),
        crash,
        slow,
    })
}

/// The execution count of a libFuzzer status line (`#123456\tpulse …`) or of its final stats
/// (`stat::number_of_executed_units: 123456`).
fn executed(line: &str) -> Option<u64> {
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        return n.trim().parse().ok();
    }
    let n = line.strip_prefix('#')?;
    let digits = n.bytes().take_while(u8::is_ascii_digit).count();
    n.get(..digits)?.parse().ok()
}

/// Where the corpus a target grows is kept between runs.
fn grown_corpus(target: &str) -> PathBuf {
    root().join("fuzz/target/corpus").join(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_executions_from_status_and_final_stats() {
        assert_eq!(
            executed("#1048576\tpulse  cov: 1 ft: 2 corp: 3/4b exec/s: 5 rss: 6Mb"),
            Some(1_048_576)
        );
        assert_eq!(
            executed("stat::number_of_executed_units: 9876543"),
            Some(9_876_543)
        );
        assert_eq!(executed("INFO: Seed: 1"), None);
        assert_eq!(executed("#"), None);
    }

    #[test]
    fn lists_the_targets_of_the_fuzz_manifest() {
        let t = targets().expect("fuzz/Cargo.toml");
        assert!(t.contains(&"tap_segments".to_owned()), "{t:?}");
        assert!(t.contains(&"validator".to_owned()), "{t:?}");
    }
}
