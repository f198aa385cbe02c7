//! End to end: guard attached to one end of a veth pair between two namespaces, real TCP, UDP
//! and ICMP from the far side, everything driven through the `guard` CLI.
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use guard_tests::{
    Daemon, Link, Netns, Tmpfs, ping_ok, require_root, start_servers, tcp_ok, udp_ok, wait_until,
};

const PORT: u16 = 7070;
const QUICK: Duration = Duration::from_millis(100);
const SLOW: Duration = Duration::from_millis(800);

/// The daemon is declared first so that it stops before the namespaces go.
struct Setup {
    daemon: Daemon,
    link: Link,
}

/// A test beside the other shared ones.
fn setup(extra: &str) -> anyhow::Result<Setup> {
    setup_on(Link::new()?, extra)
}

/// A test that runs alone: it floods, or it measures a time that a neighbour's load would
/// stretch.
fn setup_alone(extra: &str) -> anyhow::Result<Setup> {
    setup_on(Link::exclusive()?, extra)
}

fn setup_on(link: Link, extra: &str) -> anyhow::Result<Setup> {
    start_servers(&link.near, PORT)?;
    let daemon = Daemon::start(&link.near, &link.near_if, extra)?;
    Ok(Setup { daemon, link })
}

fn all_ok(ns: &Netns, dst: IpAddr) -> bool {
    tcp_ok(ns, None, SocketAddr::new(dst, PORT), SLOW)
        && udp_ok(ns, SocketAddr::new(dst, PORT), SLOW)
        && ping_ok(ns, dst)
}

fn none_ok(ns: &Netns, dst: IpAddr) -> bool {
    !tcp_ok(ns, None, SocketAddr::new(dst, PORT), QUICK)
        && !udp_ok(ns, SocketAddr::new(dst, PORT), QUICK)
        && !ping_ok(ns, dst)
}

fn ban_packets(d: &Daemon, addr: &str) -> anyhow::Result<u64> {
    let list = d.json(&["ban", "ls"])?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["addr"] == addr)
        .and_then(|b| b["packets"].as_u64())
        .unwrap_or(0))
}

#[test]
fn exact_ban_drops_tcp_udp_icmp_within_100ms_and_rm_restores() -> anyhow::Result<()> {
    require_root!();
    let s = setup_alone("")?;
    let (far, near) = (&s.link.far, s.link.near_v4);
    assert!(all_ok(far, near), "traffic must flow before any ban");
    let far_addr = s.link.far_v4.to_string();
    s.daemon
        .cli(&["ban", "add", &far_addr, "--ttl", "10m", "--reason", "e2e"])
        .map_err(anyhow::Error::msg)?;
    let returned = Instant::now();
    // The very first attempt after the CLI returns must already be dropped. What is timed is
    // when its SYN left (not the probe's own timeout): within 100 ms of the CLI's return.
    let dst = SocketAddr::new(near, PORT);
    let (sent, tcp) = far.run(move || {
        let sent = Instant::now();
        (
            sent,
            std::net::TcpStream::connect_timeout(&dst, QUICK).is_ok(),
        )
    })?;
    assert!(!tcp, "TCP connect got through a ban");
    let sent_after = sent - returned;
    assert!(
        sent_after < Duration::from_millis(100),
        "the probe left {sent_after:?} after the CLI returned"
    );
    assert!(none_ok(far, near), "UDP or ICMP got through a ban");
    let dropped = ban_packets(&s.daemon, &far_addr)?;
    assert!(
        dropped >= 3,
        "the ban's counter shows {dropped} dropped packets"
    );
    assert!(s.daemon.xdp_stat("dropped_ban_exact")? >= dropped);
    let ls = s.daemon.json(&["ban", "ls"])?;
    let entry = &ls[0];
    for field in [
        "addr",
        "reason",
        "created_at",
        "expires_at",
        "packets",
        "bytes",
    ] {
        assert!(
            !entry[field].is_null(),
            "ban ls --json lacks {field}: {entry}"
        );
    }
    assert_eq!(entry["reason"], "e2e");
    s.daemon
        .cli(&["ban", "rm", &far_addr])
        .map_err(anyhow::Error::msg)?;
    assert!(all_ok(far, near), "traffic must flow again after ban rm");
    Ok(())
}

#[test]
fn cidr_ban_drops_every_address_inside() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let second = s.link.add_far_v4(77)?;
    let dst = SocketAddr::new(s.link.near_v4, PORT);
    assert!(tcp_ok(&s.link.far, Some(second), dst, SLOW));
    let net = s.link.v4_subnet().replace(".0/24", ".0/25");
    // The /25 holds the host's own .1: refused unless forced, and then .1 stays protected.
    let e = s
        .daemon
        .cli(&["ban", "add", &net])
        .expect_err("range with the host's address");
    assert!(e.contains("--force"), "{e}");
    s.daemon
        .cli(&["ban", "add", &net, "--force"])
        .map_err(anyhow::Error::msg)?;
    assert!(
        !tcp_ok(&s.link.far, None, dst, QUICK),
        ".2 is inside the /25"
    );
    assert!(
        !tcp_ok(&s.link.far, Some(second), dst, QUICK),
        ".77 is inside the /25"
    );
    assert!(s.daemon.xdp_stat("dropped_ban_cidr")? >= 2);
    // `ban ls` filters: an exact ban inside the /25 beside it.
    let second_s = second.to_string();
    s.daemon
        .cli(&["ban", "add", &second_s, "--reason", "Noisy neighbour"])
        .map_err(anyhow::Error::msg)?;
    let addrs = |args: &[&str]| -> anyhow::Result<Vec<String>> {
        let mut a = vec!["ban", "ls"];
        a.extend_from_slice(args);
        Ok(s.daemon
            .json(&a)?
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|b| b["addr"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default())
    };
    assert_eq!(
        addrs(&["--ip", &second_s])?,
        [net.as_str(), second_s.as_str()]
    );
    assert_eq!(
        addrs(&["--ip", &s.link.far_v4.to_string()])?,
        [net.as_str()]
    );
    assert_eq!(addrs(&["--reason", "noisy"])?, [second_s.as_str()]);
    assert_eq!(addrs(&["--range", &s.link.v4_subnet()])?.len(), 2);
    assert_eq!(addrs(&["--origin", "cli", "--limit", "1"])?.len(), 1);
    assert!(addrs(&["--origin", "engine"])?.is_empty());
    let err = s
        .daemon
        .cli(&["ban", "ls", "--range", "nonsense"])
        .expect_err("a bad --range is an error");
    assert!(err.contains("--range"), "{err}");
    // Lifting by filter: both bans at once; a bare `ban rm` or a target with filters is refused.
    for bad in [
        &["ban", "rm"][..],
        &["ban", "rm", &second_s, "--origin", "cli"][..],
    ] {
        let err = s.daemon.cli(bad).expect_err("refused");
        assert!(err.contains("--origin"), "{err}");
    }
    let out = s
        .daemon
        .cli(&["ban", "rm", "--range", &s.link.v4_subnet()])
        .map_err(anyhow::Error::msg)?;
    assert!(out.contains("unbanned 2 bans"), "{out}");
    assert!(addrs(&[])?.is_empty(), "bans left after rm --range");
    assert!(tcp_ok(&s.link.far, Some(second), dst, SLOW));
    Ok(())
}

#[test]
fn ipv6_ban_and_ipv6_cidr() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let (far, near) = (&s.link.far, s.link.near_v6);
    assert!(all_ok(far, near), "IPv6 traffic must flow before any ban");
    let far6 = s.link.far_v6.to_string();
    s.daemon
        .cli(&["ban", "add", &far6])
        .map_err(anyhow::Error::msg)?;
    assert!(none_ok(far, near));
    assert!(
        ping_ok(far, s.link.near_v4),
        "IPv4 from the same host is not banned"
    );
    s.daemon
        .cli(&["ban", "rm", &far6])
        .map_err(anyhow::Error::msg)?;
    assert!(all_ok(far, near));
    let net = format!("{}/64", s.link.far_v6.to_string().trim_end_matches('2'));
    // The /64 holds the host's own address: it takes --force.
    s.daemon
        .cli(&["ban", "add", &net, "--force"])
        .map_err(anyhow::Error::msg)?;
    assert!(none_ok(far, near), "{net} covers the far address");
    Ok(())
}

#[test]
fn allowlist_beats_a_ban_and_bans_of_allowlisted_need_force() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let (far, near) = (&s.link.far, s.link.near_v4);
    let far_addr = s.link.far_v4.to_string();
    s.daemon
        .cli(&["allow", "add", &s.link.v4_subnet(), "--reason", "office"])
        .map_err(anyhow::Error::msg)?;
    let refused = s
        .daemon
        .cli(&["ban", "add", &far_addr])
        .expect_err("banning an allowlisted address must be refused");
    assert!(
        refused.contains("allowlist") && refused.contains("--force"),
        "{refused}"
    );
    s.daemon
        .cli(&["ban", "add", &far_addr, "--force"])
        .map_err(anyhow::Error::msg)?;
    assert!(all_ok(far, near), "the allowlist wins over a forced ban");
    assert!(s.daemon.xdp_stat("allowlisted")? >= 3);
    s.daemon
        .cli(&["allow", "rm", &s.link.v4_subnet()])
        .map_err(anyhow::Error::msg)?;
    assert!(
        none_ok(far, near),
        "without the allowlist entry the ban applies"
    );
    let allow = s.daemon.json(&["allow", "ls"])?;
    assert_eq!(allow.as_array().map(Vec::len), Some(0));
    // The other order: banned first, allowlisted afterwards.
    s.daemon
        .cli(&["allow", "add", &far_addr])
        .map_err(anyhow::Error::msg)?;
    assert!(
        all_ok(far, near),
        "an allowlist entry added after the ban wins too"
    );
    Ok(())
}

#[test]
fn ttl_expiry_restores_traffic_within_a_second() -> anyhow::Result<()> {
    require_root!();
    let s = setup_alone("")?;
    let (far, near) = (&s.link.far, s.link.near_v4);
    let far_addr = s.link.far_v4.to_string();
    // The deadline is set between these two instants: "early" is measured from the first,
    // "late" from the second, so a slow CLI round trip cannot fail either.
    let asked = Instant::now();
    s.daemon
        .cli(&["ban", "add", &far_addr, "--ttl", "2s"])
        .map_err(anyhow::Error::msg)?;
    let banned_at = Instant::now();
    assert!(!ping_ok(far, near));
    let restored = wait_until(Duration::from_secs(5), || {
        tcp_ok(far, None, SocketAddr::new(near, PORT), QUICK)
    })
    .map(|_| Instant::now());
    let restored =
        restored.ok_or_else(|| anyhow::anyhow!("traffic did not come back after the TTL"))?;
    let early = restored - asked;
    assert!(
        early >= Duration::from_millis(1900),
        "ban lifted early: {early:?} after it was asked for"
    );
    let late = restored - banned_at;
    assert!(
        late <= Duration::from_millis(3200),
        "ban lifted late: {late:?} after it was made"
    );
    // The program ignores an expired ban at once; the sweeper removes it from the maps and the
    // store within a second.
    let swept = wait_until(Duration::from_secs(1), || {
        s.daemon
            .json(&["ban", "ls"])
            .is_ok_and(|l| l.as_array().is_some_and(Vec::is_empty))
    });
    assert!(
        swept.is_some(),
        "expired ban still in the store a second later"
    );
    Ok(())
}

#[test]
fn restart_keeps_every_ban_and_enforces_while_down() -> anyhow::Result<()> {
    require_root!();
    let mut s = setup("")?;
    let (far, near) = (&s.link.far, s.link.near_v4);
    let far_addr = s.link.far_v4.to_string();
    let import = "value,duration,reason\n203.0.113.0/24,1h,list\n2001:db8:dead::/48,,list\n198.51.100.9,0,forever\n";
    let file = std::env::temp_dir().join(format!("guard-import-{}.csv", std::process::id()));
    std::fs::write(&file, import)?;
    let out = s
        .daemon
        .cli(&["ban", "import", file.to_str().unwrap_or_default()])
        .map_err(anyhow::Error::msg)?;
    std::fs::remove_file(&file)?;
    assert!(out.contains("imported 3 of 3"), "{out}");
    s.daemon
        .cli(&["ban", "add", &far_addr, "--reason", "kept"])
        .map_err(anyhow::Error::msg)?;
    let before = s.daemon.json(&["ban", "ls"])?;
    assert_eq!(before.as_array().map(Vec::len), Some(4));

    s.daemon.stop()?;
    assert!(
        !ping_ok(far, near),
        "the pinned program must keep dropping while guard is down"
    );
    s.daemon.spawn()?;
    let after = s.daemon.json(&["ban", "ls"])?;
    let addrs = |v: &serde_json::Value| -> Vec<String> {
        let mut a: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b["addr"].as_str().unwrap_or_default().to_owned())
            .collect();
        a.sort();
        a
    };
    assert_eq!(addrs(&before), addrs(&after));
    assert!(
        ban_packets(&s.daemon, &far_addr)? >= 1,
        "the drop while down was counted"
    );
    assert!(none_ok(far, near));
    let neighbour = s.link.add_far_v4(77)?;
    assert!(
        tcp_ok(far, Some(neighbour), SocketAddr::new(near, PORT), SLOW),
        "an unbanned neighbour is dropped after the restart"
    );
    Ok(())
}

/// Whether an XDP program is attached to `iface` in `ns`.
fn xdp_attached(ns: &Netns, iface: &str) -> anyhow::Result<bool> {
    let out = ns.ip(&["-d", "link", "show", "dev", iface])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("prog/xdp"))
}

/// The addresses `guard <what> ls --json` lists, sorted.
fn listed(d: &Daemon, what: &str) -> anyhow::Result<Vec<String>> {
    let mut a: Vec<String> = d
        .json(&[what, "ls"])?
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b["addr"].as_str().unwrap_or_default().to_owned())
        .collect();
    a.sort();
    Ok(a)
}

/// After a reboot the pins are gone and the program is detached: everything is rebuilt from
/// the store. Exact IPv4 and IPv6 bans (one timed), IPv4 and IPv6 CIDR bans, an allowlisted
/// address inside a banned CIDR and a dense block of twenty bans are all enforced again, and
/// `guard ban ls` / `guard stats` agree with what the packets show. Traffic that flowed
/// through the gap proves that nothing of the earlier run was left in the kernel.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: every kind of state, then the same checks before and after"
)]
fn reboot_rebuilds_every_ban_cidr_allowlist_and_dense_block_from_the_store() -> anyhow::Result<()> {
    require_root!();
    let mut s = setup("")?;
    let link = &s.link;
    let (v4, v6) = (
        SocketAddr::new(link.near_v4, PORT),
        SocketAddr::new(link.near_v6, PORT),
    );
    let prefix = link.v4_subnet().replace(".0/24", "");
    let v6_prefix = link.v6_prefix();
    // IPv4: the main far address banned exactly (for an hour); a /25 banned with one address
    // inside it dropped and one allowlisted; a bystander outside the /25.
    let exact4 = link.far_v4;
    let cidr4 = format!("{prefix}.128/25");
    let in_cidr4 = link.add_far_v4(130)?;
    let allowed = link.add_far_v4(140)?;
    let bystander4 = link.add_far_v4(77)?;
    // IPv6: the main far address banned exactly; a /112 with one address inside; a bystander.
    let exact6 = link.far_v6;
    let cidr6 = format!("{v6_prefix}1:0/112");
    let in_cidr6 = link.add_far_v6("1:5")?;
    let bystander6 = link.add_far_v6("2:7")?;
    // A dense block: twenty exact bans in another /24, one of them a far address, and an
    // address of the block without a ban.
    let dense = link.add_far_v4_in(202, 20)?;
    let dense_free = link.add_far_v4_in(202, 77)?;
    let dense_prefix = dense
        .to_string()
        .rsplit_once('.')
        .map_or(String::new(), |(p, _)| p.to_owned());
    // A ban that expires while the host is down: it must not come back.
    let short = link.add_far_v4(61)?;
    let short_ttl = Duration::from_secs(8);

    let d = &s.daemon;
    let cli = |args: &[&str]| d.cli(args).map(drop).map_err(anyhow::Error::msg);
    cli(&[
        "ban",
        "add",
        &exact4.to_string(),
        "--ttl",
        "1h",
        "--reason",
        "exact v4",
    ])?;
    cli(&["ban", "add", &exact6.to_string(), "--reason", "exact v6"])?;
    cli(&["ban", "add", &cidr4, "--reason", "cidr v4"])?;
    cli(&["ban", "add", &cidr6, "--ttl", "1h", "--reason", "cidr v6"])?;
    cli(&[
        "allow",
        "add",
        &format!("{allowed}/32"),
        "--reason",
        "inside the /25",
    ])?;
    let list = (10..30)
        .map(|h| format!("{dense_prefix}.{h}"))
        .collect::<Vec<_>>()
        .join("\n");
    let file = std::env::temp_dir().join(format!("guard-reboot-{}.txt", std::process::id()));
    std::fs::write(&file, list)?;
    let out = d.cli(&["ban", "import", file.to_str().unwrap_or_default()]);
    std::fs::remove_file(&file)?;
    assert!(
        out.map_err(anyhow::Error::msg)?
            .contains("imported 20 of 20")
    );
    let short_asked = Instant::now();
    cli(&["ban", "add", &short.to_string(), "--ttl", "8s"])?;
    let bans_before = listed(d, "ban")?;
    assert_eq!(bans_before.len(), 25, "{bans_before:?}");

    let far = &link.far;
    let passes = |src: IpAddr, to: SocketAddr| tcp_ok(far, Some(src), to, SLOW);
    let dropped = |src: IpAddr, to: SocketAddr| !tcp_ok(far, Some(src), to, QUICK);
    // What must hold in both runs (each drop beside a pass of the same kind from a neighbour,
    // so a broken link cannot pass for a ban).
    let enforced = |when: &str| {
        for (src, to, what) in [
            (bystander4, v4, "an unbanned IPv4 address"),
            (allowed, v4, "an allowlisted address inside a banned /25"),
            (bystander6, v6, "an unbanned IPv6 address"),
            (dense_free, v4, "an unbanned address of the dense block"),
        ] {
            assert!(passes(src, to), "{when}: {what} ({src}) was dropped");
        }
        for (src, to, what) in [
            (exact4, v4, "the exact IPv4 ban"),
            (in_cidr4, v4, "the IPv4 CIDR ban"),
            (exact6, v6, "the exact IPv6 ban"),
            (in_cidr6, v6, "the IPv6 CIDR ban"),
            (dense, v4, "a ban of the dense block"),
        ] {
            assert!(
                dropped(src, to),
                "{when}: {what} ({src}) let traffic through"
            );
        }
    };
    enforced("before the reboot");
    assert!(
        dropped(short, v4),
        "the short ban is enforced before the reboot"
    );
    assert_eq!(d.xdp_stat("dense_blocks")?, 1);
    let allows_before = listed(d, "allow")?;

    // The "reboot": the daemon stops, its pins go (the link pin with them, which detaches the
    // program), and the short ban's deadline passes meanwhile.
    s.daemon.stop()?;
    assert!(
        short_asked.elapsed() < short_ttl,
        "the daemon stopped after the short ban expired: the test needs a longer TTL"
    );
    std::fs::remove_dir_all(&s.daemon.pin_dir)?;
    if xdp_attached(&link.near, &link.near_if)? {
        // A program attached without a link (netlink) outlives its pins; detach it by hand.
        println!("the program outlived its pins (no bpf_link): detaching it by hand");
        for mode in ["xdpgeneric", "xdpdrv"] {
            let _ = link
                .near
                .ip(&["link", "set", "dev", &link.near_if, mode, "off"]);
        }
    }
    assert!(
        !xdp_attached(&link.near, &link.near_if)?,
        "the program is still attached"
    );
    assert!(
        passes(exact4, v4) && passes(in_cidr4, v4) && passes(dense, v4) && passes(exact6, v6),
        "with no program and no pins nothing is dropped: nothing of the last run is left"
    );
    // Down until the short ban's deadline has passed.
    std::thread::sleep(
        (short_ttl + Duration::from_millis(500)).saturating_sub(short_asked.elapsed()),
    );
    s.daemon.spawn()?;
    let d = &s.daemon;
    assert!(xdp_attached(&link.near, &link.near_if)?, "attached again");

    enforced("after the reboot");
    let mut expected = bans_before.clone();
    expected.retain(|a| *a != short.to_string());
    assert_eq!(
        listed(d, "ban")?,
        expected,
        "the store's bans, less the one that expired"
    );
    assert!(
        passes(short, v4),
        "the ban that expired while down is enforced"
    );
    assert_eq!(listed(d, "allow")?, allows_before);
    // The counters start again from the fresh maps and match the drops just made.
    assert_eq!(d.xdp_stat("dense_blocks")?, 1, "the dense block is rebuilt");
    for target in [
        exact4.to_string(),
        exact6.to_string(),
        cidr4.clone(),
        cidr6.clone(),
        dense.to_string(),
    ] {
        assert!(
            ban_packets(d, &target)? >= 1,
            "no drop counted for {target} after the reboot"
        );
    }
    assert!(
        d.xdp_stat("dropped_ban_exact")? >= 3,
        "exact v4, v6 and dense"
    );
    assert!(d.xdp_stat("dropped_ban_cidr")? >= 2, "v4 and v6 CIDR");
    assert!(
        d.xdp_stat("allowlisted")? >= 1,
        "the allowlisted address was let through by the allowlist"
    );
    Ok(())
}

/// Twenty bans in one /24 put the block in the dense tier: its bans drop through it and are
/// counted per ban across a restart, a neighbour in the block is untouched, and falling below
/// the threshold takes the block out without losing a count.
#[test]
fn dense_block_of_bans_drops_counts_survives_restart_and_leaves() -> anyhow::Result<()> {
    require_root!();
    let mut s = setup("")?;
    let (far, near) = (&s.link.far, s.link.near_v4);
    let far_addr = s.link.far_v4.to_string();
    let neighbour = s.link.add_far_v4(77)?;
    let prefix = far_addr.rsplit_once('.').map_or("", |(p, _)| p).to_owned();
    let others: Vec<String> = (100..119).map(|h| format!("{prefix}.{h}")).collect();
    let list = std::iter::once(far_addr.clone())
        .chain(others.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n");
    let file = std::env::temp_dir().join(format!("guard-dense-{}.txt", std::process::id()));
    std::fs::write(&file, list)?;
    let out = s
        .daemon
        .cli(&["ban", "import", file.to_str().unwrap_or_default()])
        .map_err(anyhow::Error::msg);
    std::fs::remove_file(&file)?;
    assert!(out?.contains("imported 20 of 20"));
    assert_eq!(s.daemon.xdp_stat("dense_blocks")?, 1);
    assert!(
        none_ok(far, near),
        "a ban in a dense block let traffic through"
    );
    let to = SocketAddr::new(near, PORT);
    assert!(
        tcp_ok(far, Some(neighbour), to, SLOW),
        "an address of the block without a ban was dropped"
    );
    let dropped = ban_packets(&s.daemon, &far_addr)?;
    assert!(dropped >= 3, "the ban shows {dropped} dropped packets");

    s.daemon.stop()?;
    assert!(!ping_ok(far, near), "dropped while guard is down");
    s.daemon.spawn()?;
    assert_eq!(
        s.daemon.xdp_stat("dense_blocks")?,
        1,
        "block kept on restart"
    );
    let after_restart = ban_packets(&s.daemon, &far_addr)?;
    assert!(
        after_restart > dropped,
        "counts kept over the restart: {dropped} then {after_restart}"
    );
    assert!(none_ok(far, near));
    assert!(tcp_ok(far, Some(neighbour), to, SLOW));

    // Down to seven bans: the block leaves the tier, the exact map keeps dropping, and the
    // ban's count includes what the tier counted.
    for addr in &others[..13] {
        s.daemon
            .cli(&["ban", "rm", addr])
            .map_err(anyhow::Error::msg)?;
    }
    assert_eq!(s.daemon.xdp_stat("dense_blocks")?, 0);
    let before = ban_packets(&s.daemon, &far_addr)?;
    assert!(before >= after_restart, "{before} < {after_restart}");
    assert!(none_ok(far, near));
    assert!(ban_packets(&s.daemon, &far_addr)? > before);
    s.daemon
        .cli(&["ban", "rm", &far_addr])
        .map_err(anyhow::Error::msg)?;
    assert!(all_ok(far, near), "traffic back after ban rm");
    Ok(())
}

/// A full disk: guard keeps running and enforcing every ban, enforces new bans while saying
/// clearly that they are not saved, lets other traffic through, and after space is freed and a
/// restart every ban saved before the disk filled is back.
#[test]
fn full_disk_keeps_enforcing_and_says_what_is_not_saved() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_servers(&link.near, PORT)?;
    let mut d = Daemon::prepare(&link.near, &link.near_if, "")?;
    let disk = Tmpfs::mount(&d.state_dir, "4m")?;
    d.spawn()?;
    let (far, near) = (&link.far, link.near_v4);
    let saved = link.far_v4.to_string();
    d.cli(&["ban", "add", &saved, "--reason", "before the disk filled"])
        .map_err(anyhow::Error::msg)?;
    let late = link.add_far_v4(60)?;
    let bystander = link.add_far_v4(61)?;

    let filler = disk.fill()?;
    // Far more than the store has room for, the last line from an address we can test.
    let prefix = saved.rsplit_once('.').map_or("", |(p, _)| p).to_owned();
    let mut csv = String::new();
    let reason = "r".repeat(300);
    for i in 0..6000u32 {
        let (a, b, c) = (64 + i / 65536, (i / 256) % 256, i % 256);
        writeln!(csv, "100.{a}.{b}.{c},1h,{reason}")?;
    }
    writeln!(csv, "{prefix}.60,1h,late")?;
    let file = std::env::temp_dir().join(format!("guard-full-{}.csv", std::process::id()));
    std::fs::write(&file, csv)?;
    let out = d.cli(&["ban", "import", file.to_str().unwrap_or_default()]);
    std::fs::remove_file(&file)?;
    let err = out.expect_err("an import onto a full disk must report an error");
    // The import goes as several requests; every one is enforced, none saved.
    assert!(
        err.contains("6001 of 6001 bans were not saved")
            && err.contains("bans are enforced in XDP now")
            && err.contains("No space left on device")
            && err.contains("lost when guard restarts"),
        "unclear error: {err}"
    );
    println!("import onto a full disk: {}", err.trim());
    let err = d
        .cli(&["ban", "add", "192.0.2.200"])
        .expect_err("a ban onto a full disk must report an error");
    assert!(
        err.contains("banned in XDP now") && err.contains("No space left on device"),
        "unclear error: {err}"
    );
    println!("ban add onto a full disk: {}", err.trim());
    // Still running, still enforcing the saved ban and the unsaved ones, and other traffic
    // passes.
    d.cli(&["status"]).map_err(anyhow::Error::msg)?;
    assert!(none_ok(far, near), "the saved ban stopped being enforced");
    let to = SocketAddr::new(near, PORT);
    assert!(
        !tcp_ok(far, Some(late), to, QUICK),
        "a ban made while the disk was full is not enforced"
    );
    assert!(
        tcp_ok(far, Some(bystander), to, SLOW),
        "other traffic is dropped"
    );

    // Space back, restart: the saved ban is there and enforced.
    std::fs::remove_file(filler)?;
    d.stop()?;
    d.spawn()?;
    let list = d.json(&["ban", "ls"])?;
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|b| b["addr"] == saved.as_str())),
        "the ban saved before the disk filled is gone: {list}"
    );
    assert!(none_ok(far, near));
    assert!(
        tcp_ok(far, Some(bystander), to, SLOW),
        "other traffic is dropped after the restart"
    );
    assert!(
        !d.log_text().contains("panicked"),
        "guard panicked: {}",
        d.log_text()
    );
    d.cli(&["ban", "add", "192.0.2.201"])
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn flood_from_one_source_is_rate_limited_while_another_gets_through() -> anyhow::Result<()> {
    require_root!();
    let s =
        setup_alone("[xdp]\nrate_limit_pps = 200\nrate_limit_burst = 100\nrate_ban = \"1m\"\n")?;
    let near = s.link.near_v4;
    let second = s.link.add_far_v4(99)?;
    let dst = SocketAddr::new(near, PORT);
    // One second of UDP at ~20,000 packets/s from the far side's main address.
    let flood = s.link.far.run(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            for _ in 0..200 {
                if sock.send_to(&[0u8; 32], dst).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(sent)
    })?;
    let sent = flood.unwrap_or(0);
    assert!(sent > 5000, "flood sent only {sent} packets");
    // Over-rate packets are dropped by the token bucket until the rate event turns into a ban,
    // then by the ban: together they must be nearly the whole flood.
    let by_rate = s.daemon.xdp_stat("dropped_rate")?;
    let by_ban = s.daemon.xdp_stat("dropped_ban_exact")?;
    assert!(by_rate >= 1, "the token bucket never dropped");
    assert!(
        by_rate + by_ban > sent * 9 / 10,
        "only {by_rate}+{by_ban} of {sent} flood packets dropped"
    );
    // The second source, well under the rate, is untouched.
    assert!(
        tcp_ok(&s.link.far, Some(second), dst, SLOW),
        "a quiet neighbour must get through"
    );
    // The event became a timed ban of the flooder (rate_ban = 1m).
    let banned = wait_until(Duration::from_secs(3), || {
        s.daemon.json(&["ban", "ls"]).is_ok_and(|l| {
            l.as_array()
                .into_iter()
                .flatten()
                .any(|b| b["addr"] == s.link.far_v4.to_string() && b["origin"] == "rate-limit")
        })
    });
    assert!(
        banned.is_some(),
        "no rate-limit ban: {}",
        s.daemon.log_text()
    );
    let stats = s.daemon.json(&["stats"])?;
    assert!(stats["daemon"]["rate_events"].as_u64() >= Some(1));
    Ok(())
}

#[test]
fn cli_reports_clear_errors() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let e = s
        .daemon
        .cli(&["ban", "add", "300.1.2.3"])
        .expect_err("invalid address accepted");
    assert!(e.contains("invalid address"), "{e}");
    let e = s
        .daemon
        .cli(&["ban", "rm", "192.0.2.99"])
        .expect_err("removing a missing ban succeeded");
    assert!(e.contains("not banned"), "{e}");
    let bin = guard_tests::guard_bin()?;
    let out = std::process::Command::new(bin)
        .args(["--socket", "/nonexistent/guard.sock", "status"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    Ok(())
}
