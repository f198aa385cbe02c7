//! End to end: a ban the maps cannot hold is refused with a clear error, and a restart with more
//! stored bans than fit skips (and counts) the excess instead of failing.
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Instant;

use guard_tests::{Daemon, Link, guard_bin, require_root};

/// `guard_common::CIDR_CAPACITY`.
const CIDR_CAPACITY: u64 = 131_072;

fn ok(r: Result<String, String>) -> anyhow::Result<String> {
    r.map_err(anyhow::Error::msg)
}

fn cidr_fill(d: &Daemon) -> anyhow::Result<(u64, u64, serde_json::Value)> {
    let status = d.json(&["status"])?;
    let m = status["maps"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["map"] == "IPv4 CIDR bans"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no CIDR map in {status}"))?;
    Ok((
        m["entries"].as_u64().unwrap_or(0),
        m["capacity"].as_u64().unwrap_or(0),
        status,
    ))
}

#[test]
fn a_full_cidr_map_refuses_the_next_ban_and_a_restart_still_works() -> anyhow::Result<()> {
    require_root!();
    let t = Instant::now();
    let link = Link::new()?;
    println!("machine lock: {:.1} s", t.elapsed().as_secs_f64());
    let mut d = Daemon::start(&link.near, &link.near_if, "")?;
    // CIDR_CAPACITY + 1 distinct /30s in 240.0.0.0/4 (reserved: nothing guard protects is there).
    let mut text = String::new();
    for i in 0..=CIDR_CAPACITY as u32 {
        writeln!(text, "{}/30", Ipv4Addr::from(0xF000_0000 + i * 4))?;
    }
    let file = d.state_dir.with_file_name("cidrs.txt");
    std::fs::write(&file, text)?;
    let t = Instant::now();
    // The line that does not fit is refused on its own (with the map's error), the others are
    // saved: one full map never stops an import half-way, and nothing is stored half-way.
    let out = Command::new(guard_bin()?)
        .arg("--socket")
        .arg(&d.socket)
        .args(["ban", "import", &file.to_string_lossy()])
        .output()?;
    println!(
        "import of {} CIDR bans: {:.1} s",
        CIDR_CAPACITY + 1,
        t.elapsed().as_secs_f64()
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains(&format!(
            "imported {CIDR_CAPACITY} of {}",
            CIDR_CAPACITY + 1
        )),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("IPv4 CIDR bans full: 131072"), "{stderr}");
    assert_eq!(
        stderr.matches("refused: ").count(),
        1,
        "exactly the last line is refused: {stderr}"
    );
    let stored = d.json(&["status"])?["bans"].as_u64().unwrap_or(0);
    assert_eq!(stored, CIDR_CAPACITY, "the refused line was stored");
    let (entries, capacity, _) = cidr_fill(&d)?;
    assert_eq!((entries, capacity), (CIDR_CAPACITY, CIDR_CAPACITY));
    assert!(
        d.log_text().contains("map 80% full"),
        "no warning at 80 %: {}",
        d.log_text()
    );
    // One more, asked for alone: the same clear refusal. Exact bans have a map of their own.
    let e = d
        .cli(&["ban", "add", "241.0.0.0/30", "--ttl", "1h"])
        .expect_err("a full CIDR map refuses a single ban too");
    assert!(e.contains("IPv4 CIDR bans full: 131072"), "{e}");
    ok(d.cli(&["ban", "add", "241.0.0.1", "--ttl", "1h"]))?;

    // A restart never fails because of capacity: what does not fit is skipped and counted.
    let t = Instant::now();
    d.stop()?;
    println!("stop: {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    d.spawn()?;
    println!(
        "restart with a full CIDR map: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (entries, _, status) = cidr_fill(&d)?;
    assert_eq!(entries, CIDR_CAPACITY, "{status}");
    let stored = status["bans"].as_u64().unwrap_or(0);
    let skipped = status["skipped_at_start"].as_u64().unwrap_or(0);
    println!("stored bans {stored}, skipped at start {skipped}");
    // Nothing the maps could not hold was stored: the CIDR bans and one exact ban, none skipped.
    assert_eq!(stored, CIDR_CAPACITY + 1, "{status}");
    assert_eq!(skipped, 0, "{status}");
    if skipped > 0 {
        assert!(
            d.log_text().contains("ban not enforced"),
            "{}",
            d.log_text()
        );
    }
    let human = ok(d.cli(&["status"]))?;
    assert!(human.contains("IPv4 CIDR bans"), "{human}");
    assert!(human.contains("131072 / 131072"), "{human}");
    let t = Instant::now();
    drop(d);
    println!(
        "stop and remove the pins: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
