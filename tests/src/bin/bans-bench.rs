//! `cargo xtask bench bans`: the real daemon with a million bans, in a network namespace of its
//! own, with a temporary state directory and pin directory (all removed at the end).
//!
//! Measures the daemon's RSS idle, the time of `guard ban import` of 1,000,000 random IPv4
//! addresses (deterministic seed), the RSS after it, the state directory's size on disk, the time
//! of `guard ban ls --json --limit 10`, then a restart: the time until `guard status` answers and
//! the RSS after it, while a banned address pings through the restart (it must never get a
//! reply). Each figure comes with a baseline measured in the same run, since the machine is
//! noisy: the import against writing the same records into a bare sled tree from this process,
//! `ban ls` against an idle `guard status` round trip, the restart against the first start with
//! an empty state, and the memory against the idle daemon.
//!
//! `--bans N` changes the count (default 1,000,000). The run fails if the bans are not all there
//! after the restart, or if the banned address got a reply during it.
use std::collections::HashSet;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use guard_tests::{Daemon, Link, ping_ok, skip_reason};

const DEFAULT_BANS: usize = 1_000_000;
const SEED: u64 = 0x6775_6172_6431_4d00;

#[expect(
    clippy::too_many_lines,
    reason = "one measurement after the other, in the order the table shows them"
)]
fn main() -> anyhow::Result<()> {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return Ok(());
    }
    let mut count = DEFAULT_BANS;
    let mut breakdown = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bans" => {
                count = args
                    .next()
                    .context("--bans needs a number")?
                    .replace('_', "")
                    .parse()
                    .context("--bans needs a number")?;
            }
            "--breakdown" => breakdown = true,
            other => bail!("unknown argument {other:?}: expected --bans N or --breakdown"),
        }
    }
    let scratch = Scratch::new()?;
    let addrs = random_addrs(count, SEED);
    let file = scratch.0.join("bans.txt");
    write_list(&file, &addrs)?;

    let mut rows = Vec::new();
    // The bare-store baseline first, before any daemon runs (same machine state for both).
    let bare = bare_sled(&scratch.0.join("bare-sled"), &addrs)?;

    let link = Link::exclusive()?;
    let mut daemon = Daemon::prepare(&link.near, &link.near_if, "")?;
    let t = Instant::now();
    daemon.spawn()?;
    let first_start = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let pid = daemon_pid(&daemon)?;
    let rss_idle = rss_kib(pid)?;
    if breakdown {
        print_smaps("idle", pid)?;
    }
    let status_rtt = best_of(5, || timed(|| daemon.cli(&["status"])))?;

    // A banned neighbour: its pings must stay unanswered through the restart below.
    daemon
        .cli(&["ban", "add", &link.far_v4.to_string(), "--ttl", "permanent"])
        .map_err(|e| anyhow::anyhow!("ban add: {e}"))?;
    ensure!(
        !ping_ok(&link.far, link.near_v4),
        "the banned neighbour's ping was answered before the restart"
    );

    let file_arg = file.to_string_lossy().into_owned();
    let (import, out) = timed_out(|| daemon.cli(&["ban", "import", &file_arg]))?;
    let wanted = format!("imported {count} of {count} bans");
    ensure!(out.contains(&wanted), "import said {out:?}, not {wanted:?}");
    std::thread::sleep(Duration::from_secs(1));
    let rss_loaded = rss_kib(pid)?;
    if breakdown {
        print_smaps("after the import", pid)?;
    }
    let peak_import = hwm_kib(pid)?;
    let disk = dir_bytes(&daemon.state_dir)?;

    let (ls, out) = timed_out(|| daemon.cli(&["ban", "ls", "--json", "--limit", "10"]))?;
    let listed: serde_json::Value = serde_json::from_str(&out).context("ban ls --json")?;
    ensure!(
        listed.as_array().map(Vec::len) == Some(10),
        "ban ls --limit 10 listed {}",
        listed.as_array().map_or(0, Vec::len)
    );
    let status_loaded = best_of(3, || timed(|| daemon.cli(&["status"])))?;

    // Restart while a banned address keeps pinging.
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (answered, sent, stop) = (answered.clone(), sent.clone(), stop.clone());
        let (far, dst) = (link.far.path(), link.near_v4);
        std::thread::spawn(move || -> anyhow::Result<()> {
            guard_tests::enter(&far)?;
            while !stop.load(Ordering::Relaxed) {
                let ok = std::process::Command::new("ping")
                    .args(["-c", "1", "-W", "1", "-q", &dst.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()?;
                sent.fetch_add(1, Ordering::Relaxed);
                if ok.success() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let t = Instant::now();
    daemon.stop()?;
    let stop_time = t.elapsed();
    let t = Instant::now();
    daemon.spawn_within(Duration::from_mins(3))?;
    let restart = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    pinger
        .join()
        .map_err(|_| anyhow::anyhow!("the pinger panicked"))??;
    let pid = daemon_pid(&daemon)?;
    let rss_restart = rss_kib(pid)?;
    if breakdown {
        print_smaps("after the restart", pid)?;
        let log = daemon.log_text();
        let lines: Vec<&str> = log.lines().collect();
        println!("the daemon's log of the restart:");
        for line in &lines[lines.len().saturating_sub(25)..] {
            println!("  {line}");
        }
    }
    let peak_restart = hwm_kib(pid)?;
    let status: serde_json::Value = daemon.json(&["status"])?;
    let bans_after = status["bans"].as_u64().unwrap_or(0);
    ensure!(
        bans_after == count as u64 + 1,
        "after the restart the daemon has {bans_after} bans, not {}",
        count + 1
    );

    let mb = |kib: u64| kib as f64 / 1024.0;
    let secs = |d: Duration| d.as_secs_f64();
    rows.push(Row::new(
        "daemon RSS, idle",
        format!("{:.0} MB", mb(rss_idle)),
        "-".into(),
        None,
        "<= 40 MB",
    ));
    rows.push(Row::new(
        &format!("daemon RSS, {count} bans"),
        format!("{:.0} MB", mb(rss_loaded)),
        format!("idle {:.0} MB", mb(rss_idle)),
        Some(rss_loaded as f64 / rss_idle.max(1) as f64),
        "<= 150 MB",
    ));
    rows.push(Row::new(
        "  peak RSS during import",
        format!("{:.0} MB", mb(peak_import)),
        format!("idle {:.0} MB", mb(rss_idle)),
        Some(peak_import as f64 / rss_idle.max(1) as f64),
        "",
    ));
    rows.push(Row::new(
        &format!("ban import of {count}"),
        format!("{:.2} s", secs(import)),
        format!("bare sled {:.2} s", secs(bare.time)),
        Some(secs(import) / secs(bare.time).max(1e-6)),
        "<= 10 s",
    ));
    rows.push(Row::new(
        "state on disk",
        format!(
            "{:.0} MB ({} B/ban)",
            disk as f64 / 1e6,
            disk / count.max(1) as u64
        ),
        format!("bare sled {:.0} MB", bare.disk as f64 / 1e6),
        Some(disk as f64 / bare.disk.max(1) as f64),
        "say it",
    ));
    rows.push(Row::new(
        "ban ls --json --limit 10",
        format!("{:.3} s", secs(ls)),
        format!("status idle {:.3} s", secs(status_rtt)),
        Some(secs(ls) / secs(status_rtt).max(1e-6)),
        "<= 0.2 s",
    ));
    rows.push(Row::new(
        "  status with the bans",
        format!("{:.3} s", secs(status_loaded)),
        format!("status idle {:.3} s", secs(status_rtt)),
        Some(secs(status_loaded) / secs(status_rtt).max(1e-6)),
        "",
    ));
    rows.push(Row::new(
        "restart until the socket answers",
        format!("{:.2} s", secs(restart)),
        format!("first start {:.2} s", secs(first_start)),
        Some(secs(restart) / secs(first_start).max(1e-6)),
        "<= 3 s",
    ));
    rows.push(Row::new(
        "  stop (SIGTERM until exit)",
        format!("{:.2} s", secs(stop_time)),
        "-".into(),
        None,
        "",
    ));
    rows.push(Row::new(
        "daemon RSS after the restart",
        format!("{:.0} MB", mb(rss_restart)),
        format!("idle {:.0} MB", mb(rss_idle)),
        Some(rss_restart as f64 / rss_idle.max(1) as f64),
        "<= 150 MB",
    ));
    rows.push(Row::new(
        "  of it sled alone (records read back, 16 MiB cache)",
        format!("{:.0} MB", mb(bare.memory_kib)),
        "-".into(),
        None,
        "",
    ));
    rows.push(Row::new(
        "  peak RSS during the start",
        format!("{:.0} MB", mb(peak_restart)),
        format!("idle {:.0} MB", mb(rss_idle)),
        Some(peak_restart as f64 / rss_idle.max(1) as f64),
        "",
    ));
    let (sent, answered) = (
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    rows.push(Row::new(
        "banned pings answered in the restart",
        format!("{answered} of {sent}"),
        "-".into(),
        None,
        "0",
    ));
    print_table(count, &rows);
    ensure!(
        answered == 0,
        "a banned address got {answered} ping replies during the restart: enforcement stopped"
    );
    Ok(())
}

/// A temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("guard-bans-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n` distinct public-looking IPv4 addresses from a fixed seed (splitmix64), outside
/// 0/8, 10/8, 127/8 and 224/3, so none is the test link's own or a protected one.
fn random_addrs(n: usize, seed: u64) -> Vec<Ipv4Addr> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut taken = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = Ipv4Addr::from((next() >> 32) as u32);
        let first = a.octets()[0];
        if first == 0 || first == 10 || first == 127 || first >= 224 {
            continue;
        }
        if taken.insert(a) {
            out.push(a);
        }
    }
    out
}

fn write_list(path: &Path, addrs: &[Ipv4Addr]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for a in addrs {
        writeln!(f, "{a}")?;
    }
    f.flush()?;
    Ok(())
}

struct Bare {
    time: Duration,
    disk: u64,
    /// RSS growth of reading the records back with a 16 MiB page cache.
    memory_kib: u64,
}

/// Writes the same bans into a bare sled tree (the key layout of guard's store, a JSON value
/// like the one `ban import` stores), then flushes: what the disk and sled alone cost.
fn bare_sled(dir: &Path, addrs: &[Ipv4Addr]) -> anyhow::Result<Bare> {
    let t = Instant::now();
    let db = sled::Config::new().path(dir).open()?;
    let tree = db.open_tree("bans")?;
    let now = 1_764_000_000_000_u64;
    for a in addrs {
        let mut key = Vec::with_capacity(6);
        key.push(4);
        key.extend_from_slice(&a.octets());
        key.push(32);
        let value = format!(
            r#"{{"target":"{a}","reason":"imported","origin":"import","created_at":{now},"expires_at":{}}}"#,
            now + 4 * 3_600_000
        );
        tree.insert(key, value.as_bytes())?;
    }
    db.flush()?;
    let time = t.elapsed();
    drop(tree);
    drop(db);
    let disk = dir_bytes(dir)?;
    // What sled alone keeps in memory for these records once they are read back with guard's
    // page cache (as a restart does): this process's RSS before and after.
    let before = rss_kib(std::process::id())?;
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(16 << 20)
        .open()?;
    let tree = db.open_tree("bans")?;
    let mut read = 0usize;
    for kv in &tree {
        kv?;
        read += 1;
    }
    ensure!(read == addrs.len(), "bare sled read back {read} records");
    let memory_kib = rss_kib(std::process::id())?.saturating_sub(before);
    drop(tree);
    drop(db);
    Ok(Bare {
        time,
        disk,
        memory_kib,
    })
}

/// The daemon's pid, as `guard status` reports it.
fn daemon_pid(d: &Daemon) -> anyhow::Result<u32> {
    let s = d.json(&["status"])?;
    let pid = s["pid"].as_u64().context("status has no pid")?;
    Ok(u32::try_from(pid)?)
}

fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Resident memory now, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident memory so far, KiB.
fn hwm_kib(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// Prints the daemon's resident memory by mapping (heap, anonymous, BPF maps, files), largest
/// first, from `/proc/PID/smaps`.
fn print_smaps(when: &str, pid: u32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let mut by_name = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut name = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            // A mapping's header: range perms offset dev inode [name].
            let rest: Vec<&str> = words.collect();
            name = rest.get(4..).map(|n| n.join(" ")).unwrap_or_default();
            if name.is_empty() {
                name = "[anonymous]".into();
            }
            by_name.entry(name.clone()).or_default().1 += 1;
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            by_name.entry(name.clone()).or_default().0 += kib;
        }
    }
    let mut rows: Vec<_> = by_name
        .into_iter()
        .filter(|(_, (kib, _))| *kib >= 512)
        .collect();
    rows.sort_by_key(|(_, (kib, _))| std::cmp::Reverse(*kib));
    println!("resident memory {when} (mappings with >= 0.5 MB):");
    for (name, (kib, maps)) in rows {
        println!(
            "  {:>8.1} MB  {maps:>4} mappings  {name}",
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du` counts them).
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

fn timed_out(f: impl FnOnce() -> Result<String, String>) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let out = f().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((t.elapsed(), out))
}

fn timed(f: impl FnOnce() -> Result<String, String>) -> anyhow::Result<Duration> {
    timed_out(f).map(|(d, _)| d)
}

fn best_of(n: usize, mut f: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..n {
        best = best.min(f()?);
    }
    Ok(best)
}

struct Row {
    what: String,
    value: String,
    baseline: String,
    ratio: Option<f64>,
    goal: &'static str,
}

impl Row {
    fn new(
        what: &str,
        value: String,
        baseline: String,
        ratio: Option<f64>,
        goal: &'static str,
    ) -> Self {
        Self {
            what: what.to_owned(),
            value,
            baseline,
            ratio,
            goal,
        }
    }
}

fn print_table(count: usize, rows: &[Row]) {
    println!("\nguard with {count} bans (random IPv4, seed {SEED:#x})\n");
    println!(
        "{:<38} {:>22} {:>22} {:>8}  goal",
        "measure", "value", "baseline (same run)", "ratio"
    );
    for r in rows {
        let ratio = r
            .ratio
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"));
        println!(
            "{:<38} {:>22} {:>22} {:>8}  {}",
            r.what, r.value, r.baseline, ratio, r.goal
        );
    }
}
