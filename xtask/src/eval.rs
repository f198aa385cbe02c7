//! `cargo xtask eval`: measure the request validator's detection and speed.
//!
//! Builds `guard` in release, runs `guard inspect --cases` over the OWASP CRS regression corpus
//! (`corpus/crs-regression.jsonl`, response-side families 95x and 980 left out) and over
//! the realistic benign set (`corpus/benign.jsonl`), and prints per family and
//! overall the share of attacks blocked or sent to triage, the share of near-miss benign requests
//! blocked, the benign set's false-positive rate, and the throughput figures of `--bench`, all at
//! the default paranoia level; then the headline figures at each of the four levels.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Arguments of `cargo xtask eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The CRS corpus (default: corpus/crs-regression.jsonl).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// The realistic benign set (default: corpus/benign.jsonl).
    #[arg(long)]
    benign: Option<PathBuf>,
    /// Write the ids of missed attacks and blocked benign requests to this file.
    #[arg(long)]
    details: Option<PathBuf>,
    /// Skip the speed measurement.
    #[arg(long)]
    no_bench: bool,
}

/// Tallies for one family (or overall).
#[derive(Default, Clone, Copy)]
struct Tally {
    attacks: u32,
    attack_block: u32,
    attack_triage: u32,
    benign: u32,
    benign_block: u32,
    benign_triage: u32,
}

impl Tally {
    fn add(&mut self, attack: bool, action: &str) {
        let (n, b, t) = if attack {
            (
                &mut self.attacks,
                &mut self.attack_block,
                &mut self.attack_triage,
            )
        } else {
            (
                &mut self.benign,
                &mut self.benign_block,
                &mut self.benign_triage,
            )
        };
        *n += 1;
        match action {
            "block" => *b += 1,
            "triage" => *t += 1,
            _ => {}
        }
    }
}

fn pct(part: u32, whole: u32) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        let p = f64::from(part) * 100.0 / f64::from(whole);
        // Small rates (false positives) need the second decimal.
        if p > 0.0 && p < 1.0 {
            format!("{p:.2}%")
        } else {
            format!("{p:.1}%")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs `guard inspect --cases FILE` (at `paranoia`, or the default level) and returns
/// id → action.
fn verdicts(
    guard: &Path,
    cases: &Path,
    paranoia: Option<u8>,
) -> anyhow::Result<HashMap<String, String>> {
    let mut cmd = Command::new(guard);
    cmd.args(["inspect", "--cases"]).arg(cases);
    if let Some(level) = paranoia {
        cmd.arg("--paranoia").arg(level.to_string());
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", guard.display()))?;
    if !out.status.success() {
        bail!(
            "guard inspect failed on {}: {}",
            cases.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("parsing a verdict")?;
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        let action = v["action"].as_str().unwrap_or_default().to_owned();
        map.insert(id, action);
    }
    Ok(map)
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("parsing a case"))
        .collect()
}

/// Runs the evaluation and prints the report.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let root = root();
    let corpus = args
        .corpus
        .clone()
        .unwrap_or_else(|| root.join("corpus/crs-regression.jsonl"));
    let benign = args
        .benign
        .clone()
        .unwrap_or_else(|| root.join("corpus/benign.jsonl"));
    let guard = build_guard(&root)?;
    let mut details = String::new();
    corpus_report(&guard, &corpus, &mut details)?;
    benign_report(&guard, &benign, &mut details)?;
    levels_report(&guard, &corpus, &benign)?;
    if let Some(path) = &args.details {
        std::fs::write(path, details).with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.no_bench {
        bench_report(&guard, &corpus)?;
    }
    Ok(())
}

/// Builds `guard` in release and returns the binary's path.
fn build_guard(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "guard-daemon",
            "--bin",
            "guard",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building guard in release failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let guard = target.join("release/guard");
    if !guard.is_file() {
        bail!("{} is missing after the build", guard.display());
    }
    Ok(guard)
}

fn print_row(fam: &str, name: &str, t: &Tally) {
    println!(
        "{:<6} {:<36} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>9}",
        fam,
        name,
        t.attacks,
        pct(t.attack_block, t.attacks),
        pct(t.attack_triage, t.attacks),
        pct(t.attack_block + t.attack_triage, t.attacks),
        t.benign,
        pct(t.benign_block, t.benign),
        pct(t.benign_triage, t.benign),
    );
}

/// Per-family detection on the CRS corpus.
fn corpus_report(guard: &Path, corpus: &Path, details: &mut String) -> anyhow::Result<()> {
    let cases = read_jsonl(corpus)?;
    let actions = verdicts(guard, corpus, None)?;
    let mut families: BTreeMap<String, (String, Tally)> = BTreeMap::new();
    let mut overall = Tally::default();
    let mut pl1 = Tally::default();
    for c in &cases {
        let family = c["rule_family"].as_str().unwrap_or("?").to_owned();
        if family.starts_with("95") || family == "980" {
            continue;
        }
        let id = c["id"].as_str().unwrap_or_default();
        let attack = c["expect_attack"].as_bool().unwrap_or(false);
        let action = actions.get(id).map_or("missing", String::as_str);
        let entry = families.entry(family.clone()).or_insert_with(|| {
            (
                c["family_name"].as_str().unwrap_or("").to_owned(),
                Tally::default(),
            )
        });
        entry.1.add(attack, action);
        overall.add(attack, action);
        if c["paranoia_level"].as_u64() == Some(1) {
            pl1.add(attack, action);
        }
        if attack && action == "allow" {
            let _ = writeln!(details, "miss {family} {id}");
        } else if !attack && action != "allow" {
            let _ = writeln!(details, "near-miss-{action} {family} {id}");
        }
    }
    println!(
        "Detection on {} (request side; 95x and 980 left out)",
        corpus.display()
    );
    println!(
        "{:<6} {:<36} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>9}",
        "family",
        "name",
        "attacks",
        "block",
        "triage",
        "detected",
        "near-miss",
        "nm block",
        "nm triage"
    );
    for (fam, (name, t)) in &families {
        print_row(fam, name, t);
    }
    print_row("all", "overall", &overall);
    print_row("PL1", "rules at paranoia level 1", &pl1);
    Ok(())
}

/// False positives on the realistic benign set.
fn benign_report(guard: &Path, benign: &Path, details: &mut String) -> anyhow::Result<()> {
    let cases = read_jsonl(benign)?;
    let actions = verdicts(guard, benign, None)?;
    let mut b = Tally::default();
    for c in &cases {
        let id = c["id"].as_str().unwrap_or_default();
        let action = actions.get(id).map_or("missing", String::as_str);
        b.add(false, action);
        if action != "allow" {
            let _ = writeln!(details, "benign-{action} {id}");
        }
    }
    println!();
    println!(
        "Realistic benign set {}: {} requests, {} blocked ({}), {} to triage ({}), block or triage {}",
        benign.display(),
        b.benign,
        b.benign_block,
        pct(b.benign_block, b.benign),
        b.benign_triage,
        pct(b.benign_triage, b.benign),
        pct(b.benign_block + b.benign_triage, b.benign),
    );
    Ok(())
}

/// The headline figures at each paranoia level.
fn levels_report(guard: &Path, corpus: &Path, benign: &Path) -> anyhow::Result<()> {
    let cases = read_jsonl(corpus)?;
    let benign_cases = read_jsonl(benign)?;
    println!();
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "paranoia", "detected", "PL1 det.", "nm block", "benign bl", "benign tr"
    );
    for level in 1..=4u8 {
        let actions = verdicts(guard, corpus, Some(level))?;
        let mut overall = Tally::default();
        let mut pl1 = Tally::default();
        for c in &cases {
            let family = c["rule_family"].as_str().unwrap_or("?");
            if family.starts_with("95") || family == "980" {
                continue;
            }
            let id = c["id"].as_str().unwrap_or_default();
            let attack = c["expect_attack"].as_bool().unwrap_or(false);
            let action = actions.get(id).map_or("missing", String::as_str);
            overall.add(attack, action);
            if c["paranoia_level"].as_u64() == Some(1) {
                pl1.add(attack, action);
            }
        }
        let actions = verdicts(guard, benign, Some(level))?;
        let mut b = Tally::default();
        for c in &benign_cases {
            let id = c["id"].as_str().unwrap_or_default();
            b.add(false, actions.get(id).map_or("missing", String::as_str));
        }
        println!(
            "{:<9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            level,
            pct(
                overall.attack_block + overall.attack_triage,
                overall.attacks
            ),
            pct(pl1.attack_block + pl1.attack_triage, pl1.attacks),
            pct(overall.benign_block, overall.benign),
            pct(b.benign_block, b.benign),
            pct(b.benign_triage, b.benign),
        );
    }
    Ok(())
}

/// Throughput, the slowest request and the 1 MB body, measured in-process by `guard`.
fn bench_report(guard: &Path, corpus: &Path) -> anyhow::Result<()> {
    let out = Command::new(guard)
        .args(["inspect", "--bench", "--cases"])
        .arg(corpus)
        .output()
        .context("running guard inspect --bench")?;
    if !out.status.success() {
        bail!(
            "guard inspect --bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing the bench output")?;
    println!();
    println!(
        "Speed over the whole corpus ({} requests, {:.2} s CPU, {:.2} s wall, one thread): {:.0} requests/s per core ({:.0}/s wall clock)",
        s["requests"],
        s["cpu_seconds"].as_f64().unwrap_or(0.0),
        s["seconds"].as_f64().unwrap_or(0.0),
        s["req_per_sec_per_core"].as_f64().unwrap_or(0.0),
        s["req_per_sec_wall"].as_f64().unwrap_or(0.0),
    );
    println!(
        "Slowest single request: {:.1} µs ({}); 1 MB body: {:.1} µs, verdict {} (inspection cap {} bytes)",
        s["worst_request_us"].as_f64().unwrap_or(0.0),
        s["worst_request_id"].as_str().unwrap_or("?"),
        s["one_mb_body_us"].as_f64().unwrap_or(0.0),
        s["one_mb_body_action"],
        s["max_body_bytes"],
    );
    Ok(())
}
