//! End to end: a restart, and starts that fail, never change what the pinned program enforces.
//! Two pingers run every 10 ms from the far side throughout: one from a source inside a banned
//! CIDR (it must never get a single reply) and one from an allowlisted address inside that CIDR
//! that also carries a forced exact ban (every echo must be answered), and a third from an
//! address guard has no opinion on, which a failed start's rate limit must not reach.
use std::net::IpAddr;

use std::time::Duration;

use guard_tests::ping::{Pinger, ping_from};
use guard_tests::{Daemon, Link, require_root};

/// Time the pingers run between two steps, so that each step is seen under traffic.
const SETTLE: Duration = Duration::from_millis(300);

fn ok(r: Result<String, String>) -> anyhow::Result<String> {
    r.map_err(anyhow::Error::msg)
}

#[test]
fn restarts_and_failed_starts_never_open_a_gap() -> anyhow::Result<()> {
    require_root!();
    let link = Link::exclusive()?;
    let banned = link.add_far_v4_in(77, 10)?;
    let allowed = link.add_far_v4_in(77, 20)?;
    let IpAddr::V4(b) = banned else {
        anyhow::bail!("not IPv4")
    };
    let net = format!("{}.{}.{}.0/24", b.octets()[0], b.octets()[1], b.octets()[2]);
    let near = link.near_v4;
    let mut d = Daemon::start(&link.near, &link.near_if, "")?;
    ok(d.cli(&["allow", "add", &allowed.to_string()]))?;
    ok(d.cli(&["ban", "add", &net, "--ttl", "1h", "--force"]))?;
    // An exact ban the allowlist overrides: the program must consult the allowlist for it.
    ok(d.cli(&["ban", "add", &allowed.to_string(), "--ttl", "1h", "--force"]))?;
    assert!(
        !ping_from(&link.far, banned, near),
        "the CIDR ban must drop"
    );
    assert!(
        ping_from(&link.far, allowed, near),
        "the allowlist must win"
    );

    let bad = Pinger::start(&link.far, banned, near)?;
    let good = Pinger::start(&link.far, allowed, near)?;
    let plain = Pinger::start(&link.far, link.far_v4, near)?;
    std::thread::sleep(SETTLE);

    // 1. A clean restart against the pins.
    d.stop()?;
    std::thread::sleep(SETTLE);
    d.spawn()?;
    std::thread::sleep(SETTLE);
    d.stop()?;

    // 2. A config file that does not parse.
    let config = std::fs::read_to_string(&d.config)?;
    std::fs::write(&d.config, "[xdp\nnot toml")?;
    assert!(d.spawn().is_err(), "a broken config must not start");
    std::fs::write(&d.config, &config)?;
    std::thread::sleep(SETTLE);

    // 3. A control socket that cannot be bound (its directory is a file): fails last of all,
    // after the maps are rebuilt and the program attached. Its config sets a rate limit of
    // 5 packets/s, which must never reach the running program.
    std::fs::write(&d.config, "[xdp]\nrate_limit_pps = 5\n")?;
    let socket = d.socket.clone();
    let blocker = d.state_dir.with_file_name("not-a-directory");
    std::fs::write(&blocker, "")?;
    d.socket = blocker.join("guard.sock");
    let e = d
        .spawn()
        .expect_err("a socket under a regular file must not start");
    assert!(e.to_string().contains("control socket"), "{e}");
    d.socket = socket;
    std::fs::write(&d.config, &config)?;
    std::thread::sleep(SETTLE);

    // 4. An interface that does not exist after the real one: the new program has taken over
    // the real interface's pinned link when the start fails.
    d.args = vec!["--interface".into(), "nosuch0".into()];
    let e = d.spawn().expect_err("an unknown interface must not start");
    assert!(e.to_string().contains("nosuch0"), "{e}");
    d.args.clear();
    std::thread::sleep(SETTLE);

    // 5. A store that fails once XDP is loaded: the request log's directory is a file.
    let logs = d.state_dir.join("logs");
    let aside = d.state_dir.join("logs.aside");
    std::fs::rename(&logs, &aside)?;
    std::fs::write(&logs, "not a directory")?;
    let e = d
        .spawn()
        .expect_err("an unusable request log must not start");
    assert!(e.to_string().contains("request log"), "{e}");
    std::fs::remove_file(&logs)?;
    std::fs::rename(&aside, &logs)?;
    std::thread::sleep(SETTLE);

    // 6. Started again for good.
    d.spawn()?;
    std::thread::sleep(SETTLE);

    let bad = bad.stop()?;
    let good = good.stop()?;
    let plain = plain.stop()?;
    println!(
        "banned source: {} sent, {} answered; allowlisted: {} sent, {} answered; unlisted: {} \
         sent, {} answered",
        bad.transmitted,
        bad.replies.len(),
        good.transmitted,
        good.replies.len(),
        plain.transmitted,
        plain.replies.len()
    );
    assert!(
        bad.transmitted > 100 && good.transmitted > 100,
        "the pingers did not run"
    );
    assert!(
        bad.replies.is_empty(),
        "the banned source got answers to echo {:?}",
        bad.replies
    );
    // Every echo answered; only the last one may have been in flight when ping was stopped.
    for (who, seen) in [("allowlisted", &good), ("unlisted", &plain)] {
        let missing: Vec<u32> = (1..seen.transmitted)
            .filter(|s| !seen.replies.contains(s))
            .collect();
        assert!(
            missing.is_empty(),
            "the {who} source lost {} echoes: {missing:?}",
            missing.len()
        );
    }
    assert!(ping_from(&link.far, allowed, near));
    assert!(!ping_from(&link.far, banned, near));
    Ok(())
}
