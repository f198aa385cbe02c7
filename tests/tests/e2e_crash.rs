//! End to end: `kill -9` of the daemon in the middle of `guard ban import` of 100,000 addresses.
//! The CLI says on stderr what each piece saved as the daemon answers it; once one piece is
//! reported, the test waits until the daemon has begun putting the next piece into the pinned
//! maps (not flushed, not answered) and kills it (SIGKILL, the XDP link kept pinned as by
//! default), then restarts it on the same state directory and pins. Every ban of every piece
//! reported saved is then in `ban ls --json` and in the pinned XDP maps, sled and the maps hold
//! exactly the same bans (none half-stored: what the maps held of the piece in flight is either
//! stored or taken out of the maps again), and a pinger from a saved address on
//! the far side never gets a reply — not while the daemon is dead, not through the restart —
//! while one from an address not banned gets every reply. The whole import then runs to its end
//! on the restarted daemon.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{HashMap, Map};
use guard_common::{BanEntry, MAP_BANS_V4};
use guard_tests::ping::{Pinger, ping_from};
use guard_tests::{Daemon, Link, guard_bin, maps, require_root, unique};

/// Addresses imported.
const N: u32 = 100_000;

/// Time the pingers run with the daemon dead, and again after it is back.
const SETTLE: Duration = Duration::from_millis(500);

/// The import: `first` (an address of the far side, so that it can ping) on the first line,
/// then `N - 1` addresses of 198.18.0.0/15 (benchmarking, used by nothing here).
fn import_list(first: IpAddr) -> Vec<String> {
    std::iter::once(first.to_string())
        .chain((0..N - 1).map(|i| Ipv4Addr::from(0xc612_0000 + i).to_string()))
        .collect()
}

/// One progress line of the CLI: `piece 2/6 saved: 16667 of entries 16668-33334 (… so far)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    saved: usize,
    /// Entry numbers, from 1, both included.
    first: usize,
    last: usize,
}

fn parse_piece(line: &str) -> Option<Piece> {
    let rest = line.strip_prefix("piece ")?;
    let (_, rest) = rest.split_once(" saved: ")?;
    let (saved, rest) = rest.split_once(" of entries ")?;
    let (range, _) = rest.split_once(' ')?;
    let (first, last) = range.split_once('-')?;
    Some(Piece {
        saved: saved.parse().ok()?,
        first: first.parse().ok()?,
        last: last.parse().ok()?,
    })
}

/// The `addr` of every ban `guard ban ls --json` lists (read from sled by the owner).
fn stored(d: &Daemon) -> anyhow::Result<BTreeSet<String>> {
    let list = d.json(&["ban", "ls"])?;
    let list = list.as_array().context("ban ls --json: not a list")?;
    list.iter()
        .map(|b| {
            b["addr"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("ban ls entry without addr: {b}"))
        })
        .collect()
}

/// Sled and the maps hold the same bans; returns them.
fn assert_same(d: &Daemon, when: &str) -> anyhow::Result<BTreeSet<String>> {
    let bans = stored(d)?;
    let maps = maps::bans(&d.pin_dir)?;
    let only_sled: Vec<_> = bans.difference(&maps).take(5).collect();
    let only_maps: Vec<_> = maps.difference(&bans).take(5).collect();
    assert!(
        only_sled.is_empty() && only_maps.is_empty(),
        "{when}: {} bans in sled, {} in the maps; only in sled: {only_sled:?}…, only in the \
         maps: {only_maps:?}…",
        bans.len(),
        maps.len()
    );
    let status = d.json(&["status"])?;
    assert_eq!(
        status["bans"].as_u64(),
        Some(bans.len() as u64),
        "{when}: {status}"
    );
    Ok(bans)
}

/// `guard ban import FILE` against `d`, not waited for; stdout and stderr piped.
fn start_import(d: &Daemon, file: &Path) -> anyhow::Result<Child> {
    Command::new(guard_bin()?)
        .arg("--socket")
        .arg(&d.socket)
        .args(["ban", "import"])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning guard ban import")
}

/// What [`import_and_kill`] saw.
struct KillRun {
    /// The pieces the CLI reported saved.
    pieces: Vec<Piece>,
    /// Bans they saved.
    reported: usize,
    /// From the start of the import to the first piece reported, and to the kill's end.
    first_saved: Duration,
    killed_at: Duration,
    pid: u32,
}

/// Runs `guard ban import FILE` (the entries of `list`), reads its progress as it comes and,
/// at the first piece reported saved, waits until the daemon has put the next piece's first
/// entry into the pinned exact-ban map (it is then applying a piece it has not flushed) and
/// kills it with SIGKILL; checks that the CLI then fails, saying how many bans it had seen
/// saved.
fn import_and_kill(d: &mut Daemon, list: &[String], file: &Path) -> anyhow::Result<KillRun> {
    let exact: HashMap<_, u32, BanEntry> =
        HashMap::try_from(Map::HashMap(maps::open(&d.pin_dir, MAP_BANS_V4)?))?;
    let started = Instant::now();
    let mut cli = start_import(d, file)?;
    let stderr = cli.stderr.take().context("no stderr")?;
    let (mut pieces, mut other) = (Vec::new(), Vec::new());
    let mut killed = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        match parse_piece(&line) {
            Some(p) => {
                pieces.push(p);
                if killed.is_none() {
                    let first = started.elapsed();
                    let next: Ipv4Addr = list
                        .get(p.last)
                        .context("the first piece was the last")?
                        .parse()?;
                    let key = u32::from_ne_bytes(next.octets());
                    let in_flight = guard_tests::wait_until(Duration::from_secs(20), || {
                        exact.get(&key, 0).is_ok()
                    })
                    .is_some();
                    let pid = d.kill()?;
                    killed = Some((first, started.elapsed(), pid, in_flight));
                }
            }
            None => other.push(line),
        }
    }
    let out = cli.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors = other.join("\n");
    let (first_saved, killed_at, pid, in_flight) =
        killed.with_context(|| format!("the CLI reported no piece saved: {stdout} {errors}"))?;
    // Killed before the end: the CLI fails, saying how many it had seen saved.
    assert!(
        !out.status.success(),
        "the import ended before the kill: {stdout} {errors}"
    );
    assert!(in_flight, "the next piece never reached the maps");
    let reported: usize = pieces.iter().map(|p| p.saved).sum();
    assert!(
        reported > 0 && reported < N as usize,
        "{reported} reported saved"
    );
    assert!(
        errors.contains(&format!("{reported} of {N} bans were imported (and saved)")),
        "{errors}"
    );
    Ok(KillRun {
        pieces,
        reported,
        first_saved,
        killed_at,
        pid,
    })
}

/// The whole import on `d`, to its end: every piece reported, all `N` stored and in the maps.
fn full_import(d: &Daemon, list: &[String], file: &Path) -> anyhow::Result<()> {
    std::fs::write(file, list.join("\n") + "\n")?;
    let t = Instant::now();
    let full = start_import(d, file)?.wait_with_output()?;
    let took = t.elapsed();
    let _ = std::fs::remove_file(file);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&full.stdout),
        String::from_utf8_lossy(&full.stderr),
    );
    assert!(full.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("imported {N} of {N} bans"));
    let lines: Vec<Piece> = stderr.lines().filter_map(parse_piece).collect();
    assert!(lines.len() > 1, "{stderr}");
    assert_eq!(lines.iter().map(|p| p.saved).sum::<usize>(), N as usize);
    assert_eq!(lines.last().map(|p| p.last), Some(N as usize));
    let bans = assert_same(d, "after the whole import")?;
    assert_eq!(bans.len(), N as usize);
    println!(
        "whole import of {N} after the restart: {took:?} in {} pieces",
        lines.len()
    );
    Ok(())
}

#[test]
fn e2e_crash_kill_9_during_an_import_keeps_every_ban_reported_saved() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    // Far-side sources in a /24 of their own: one imported, one never banned.
    let banned = link.add_far_v4_in(202, 7)?;
    let free = link.add_far_v4_in(202, 8)?;
    let near = link.near_v4;
    // Default configuration: the XDP link stays pinned when the daemon ends (keep_attached).
    let mut d = Daemon::start(&link.near, &link.near_if, "")?;
    assert!(ping_from(&link.far, banned, near), "no echo before the ban");
    assert!(
        ping_from(&link.far, free, near),
        "no echo from the free source"
    );

    let list = import_list(banned);
    let file = std::env::temp_dir().join(format!("guard-crash-{}.txt", unique("i")));
    std::fs::write(&file, list.join("\n") + "\n")?;

    let run = import_and_kill(&mut d, &list, &file)?;
    let (pieces, reported) = (&run.pieces, run.reported);

    // Dead daemon, then a restart on the same state and pins, under two pingers.
    let dead = Pinger::start(&link.far, banned, near)?;
    let alive = Pinger::start(&link.far, free, near)?;
    // The addresses of the pieces reported saved: all still in the pinned maps.
    let mut on_disk = BTreeSet::new();
    for p in pieces {
        assert_eq!(p.saved, p.last + 1 - p.first, "refusals in {p:?}");
        on_disk.extend(list[p.first - 1..p.last].iter().cloned());
    }
    assert_eq!(on_disk.len(), reported);
    let in_maps_dead = maps::bans(&d.pin_dir)?;
    assert!(
        on_disk.is_subset(&in_maps_dead),
        "saved bans left the maps with the daemon dead"
    );
    // ... and some of the piece in flight, which the restart must store or take out.
    assert!(
        in_maps_dead.len() > reported,
        "no ban of the piece in flight in the maps"
    );
    std::thread::sleep(SETTLE);
    let restart = Instant::now();
    d.spawn()?;
    let restarted = restart.elapsed();
    std::thread::sleep(SETTLE);
    let (dead, alive) = (dead.stop()?, alive.stop()?);
    let _ = std::fs::remove_file(&file);
    assert!(dead.transmitted >= 50, "{} echoes sent", dead.transmitted);
    assert_eq!(
        dead.replies.len(),
        0,
        "a saved ban let {} of {} echoes through after kill -9",
        dead.replies.len(),
        dead.transmitted
    );
    // The other source was answered all along (the last echo may be in flight at the stop).
    assert!(alive.transmitted >= 50, "{} echoes sent", alive.transmitted);
    assert!(
        alive.replies.len() + 1 >= alive.transmitted as usize,
        "the unbanned source got {} of {} answers",
        alive.replies.len(),
        alive.transmitted
    );

    // Every ban of every piece reported saved is stored and in the maps; nothing half-stored.
    let bans = assert_same(&d, "after kill -9 and a restart")?;
    let missing: Vec<_> = on_disk.difference(&bans).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {reported} bans reported saved are gone after kill -9: {missing:?}…",
        on_disk.difference(&bans).count()
    );
    assert!(bans.contains(&banned.to_string()));
    assert!(!ping_from(&link.far, banned, near));
    assert!(ping_from(&link.far, free, near));
    let KillRun {
        first_saved,
        killed_at,
        pid,
        ..
    } = run;
    println!(
        "kill -9 (pid {pid}) during an import of {N}: first piece saved after {first_saved:?}, \
         killed at {killed_at:?}; {} pieces ({reported} bans) reported saved, all {reported} \
         present and in the maps after the restart; {} in the maps with the daemon dead, {} \
         stored in all (any beyond those reported: from the piece in flight); restart until the socket answered: {restarted:?}; {} echoes from a saved \
         address through the crash and restart, none answered",
        pieces.len(),
        in_maps_dead.len(),
        bans.len(),
        dead.transmitted
    );

    // The restarted daemon takes the whole import to its end.
    full_import(&d, &list, &file)
}

#[test]
fn progress_lines_parse() {
    assert_eq!(
        parse_piece("piece 2/6 saved: 16667 of entries 16668-33334 (33334 of 100000 so far)"),
        Some(Piece {
            saved: 16667,
            first: 16668,
            last: 33334
        })
    );
    assert_eq!(parse_piece("refused: 10.0.0.1"), None);
}
