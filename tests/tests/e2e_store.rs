//! End to end: the state database as a daemon meets it at start. A ban record that cannot be
//! decoded (damaged on disk, or written by a newer version) costs only itself: the daemon
//! starts, enforces the other bans (one of them written by an earlier version, as JSON), and
//! shows the skipped records in `guard status`; a new ban of the same target replaces it.
use std::net::IpAddr;
use std::time::Duration;

use guard_tests::{Daemon, Link, ping_ok, require_root};

fn key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => {
            let mut k = vec![4];
            k.extend_from_slice(&a.octets());
            k.push(32);
            k
        }
        IpAddr::V6(a) => {
            let mut k = vec![6];
            k.extend_from_slice(&a.octets());
            k.push(128);
            k
        }
    }
}

#[test]
fn a_damaged_ban_record_is_skipped_and_counted_and_the_others_are_enforced() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let mut d = Daemon::prepare(&link.near, &link.near_if, "")?;
    let damaged: IpAddr = "203.0.113.7".parse()?;
    let newer: IpAddr = "2001:db8::8".parse()?;
    {
        let db = sled::Config::new().path(&d.state_dir).open()?;
        let bans = db.open_tree("bans")?;
        // The far side, banned by an earlier version (a JSON record).
        let json = format!(
            r#"{{"target":"{}","reason":"earlier version","origin":"cli","created_at":1,"expires_at":null}}"#,
            link.far_v4
        );
        bans.insert(key(link.far_v4), json.as_bytes())?;
        // A version-1 record cut short, and one of a version this guard does not know.
        bans.insert(key(damaged), &[1u8, 0, 0][..])?;
        bans.insert(key(newer), &[200u8, 1, 2][..])?;
        db.flush()?;
    }
    // sled's flusher thread lets go of the database's file lock a moment after the handle.
    std::thread::sleep(Duration::from_secs(1));
    d.spawn()?;

    let status = d.json(&["status"])?;
    assert_eq!(status["bad_ban_records"], 2, "{status}");
    assert_eq!(
        status["bans"], 3,
        "stored records, the skipped ones included"
    );
    let listed = d.json(&["ban", "ls"])?;
    let addrs: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["addr"].as_str())
        .collect();
    assert_eq!(addrs, [link.far_v4.to_string()]);
    let log = d.log_text();
    assert!(
        log.contains("04cb00710720") && log.contains("undecodable"),
        "the skipped record is logged with its key: {log}"
    );
    assert!(
        !ping_ok(&link.far, link.near_v4),
        "the earlier version's ban is enforced"
    );
    assert!(
        d.cli(&["status"])
            .is_ok_and(|s| s.contains("2 undecodable ban records")),
        "the human status says so"
    );

    // A new ban of the damaged target replaces the record.
    d.cli(&["ban", "add", &damaged.to_string()])
        .map_err(|e| anyhow::anyhow!("ban add: {e}"))?;
    let status = d.json(&["status"])?;
    assert_eq!(status["bad_ban_records"], 1, "{status}");
    assert_eq!(status["bans"], 3);
    // And the drop was the ban's: lifted, the far side is answered.
    d.cli(&["ban", "rm", &link.far_v4.to_string()])
        .map_err(|e| anyhow::anyhow!("ban rm: {e}"))?;
    assert!(
        ping_ok(&link.far, link.near_v4),
        "answered once the ban is lifted"
    );
    Ok(())
}
