//! End to end: lock-out safety. guard never bans what keeps the operator in (its own addresses,
//! gateways, resolvers, trusted proxies, `bans.protect`), whether the CLI or the engine asks,
//! and `guard ban add` refuses bans that would cut off everybody or the caller's own session.
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use guard_tests::http::{Client, start_server};
use guard_tests::{Daemon, Link, guard_bin, require_root, tcp_ok, wait_until};

const PORT: u16 = 8080;
const PORT6: u16 = 8086;

/// Bans in `guard ban ls` covering `addr` (its own and every CIDR containing it).
fn bans_covering(d: &Daemon, addr: IpAddr) -> Vec<serde_json::Value> {
    let list = d
        .json(&["ban", "ls", "--ip", &addr.to_string()])
        .unwrap_or_else(|e| panic!("guard ban ls: {e:#}"));
    list.as_array().cloned().unwrap_or_default()
}

#[test]
fn the_cli_cannot_ban_a_protected_address_everything_or_its_own_session() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    // A far address standing for the operator's gateway.
    let gateway = link.add_far_v4(60)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n[bans]\nprotect = [\"{gateway}\"]\n"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    let g = gateway.to_string();

    // The protected address itself: refused with its reason, --force or not.
    for args in [vec!["ban", "add", &g], vec!["ban", "add", &g, "--force"]] {
        let e = d.cli(&args).expect_err("a protected address was banned");
        assert!(
            e.contains("is protected") && e.contains("bans.protect"),
            "{args:?}: {e}"
        );
    }
    // Everything, and a range wider than /8: refused by the CLI, naming the flag.
    for (target, why) in [
        ("0.0.0.0/0", "every address"),
        ("::/0", "every address"),
        ("10.0.0.0/7", "shorter than /8"),
        ("2001:db8::/31", "shorter than /32"),
    ] {
        let e = d.cli(&["ban", "add", target]).expect_err(target);
        assert!(e.contains(why) && e.contains("--force"), "{target}: {e}");
    }
    // The caller's own SSH session.
    let out = Command::new(guard_bin()?)
        .arg("--socket")
        .arg(&d.socket)
        .args(["ban", "add", &link.far_v4.to_string()])
        .env("SSH_CLIENT", format!("{} 50022 22", link.far_v4))
        .output()?;
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "banned the caller's own session");
    assert!(e.contains("SSH_CLIENT") && e.contains("--force"), "{e}");
    // A range containing the protected address (and the host's own): refused without --force.
    let subnet = link.v4_subnet();
    let e = d.cli(&["ban", "add", &subnet]).expect_err("range banned");
    assert!(e.contains("contains") && e.contains("--force"), "{e}");
    assert!(bans_covering(&d, gateway).is_empty());
    assert!(tcp_ok(
        &link.far,
        Some(gateway),
        dst,
        Duration::from_secs(1)
    ));

    // Forced, the range is banned, and the protected address still gets through while its
    // neighbour does not.
    d.cli(&["ban", "add", &subnet, "--force"])
        .map_err(anyhow::Error::msg)?;
    assert!(
        wait_until(Duration::from_secs(3), || !tcp_ok(
            &link.far,
            Some(link.far_v4),
            dst,
            Duration::from_millis(200)
        ))
        .is_some(),
        "the forced range does not drop its other addresses"
    );
    assert!(
        tcp_ok(&link.far, Some(gateway), dst, Duration::from_secs(1)),
        "the protected address was cut off by a range ban"
    );

    // `guard status` lists what is protected and counts the refusals.
    let st = d.json(&["status"])?;
    let protected = st["protected"].as_array().cloned().unwrap_or_default();
    let entry = |net: &str| protected.iter().find(|p| p["net"] == net).cloned();
    let g_entry = entry(&g).unwrap_or_else(|| panic!("{g} not listed: {st}"));
    assert_eq!(g_entry["why"], "configured");
    let own = entry(&link.near_v4.to_string()).unwrap_or_else(|| panic!("own not listed: {st}"));
    assert_eq!(own["why"], "own_address");
    assert!(st["protect_refusals"].as_u64() >= Some(3), "{st}");
    let human = d.cli(&["status"]).map_err(anyhow::Error::msg)?;
    assert!(human.contains("protected") && human.contains(&g), "{human}");
    assert!(d.log_text().contains("ban refused"), "refusals not logged");
    Ok(())
}

/// Two backdoor probes a connection each from `src`; returns how many were answered.
fn probe(link: &Link, src: IpAddr, dst: SocketAddr) -> usize {
    let ns = link.far.path();
    std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let mut answered = 0;
        for path in ["/shell.php", "/wso.php", "/c99.php", "/r57.php"] {
            let Some(s) = guard_tests::connect_from(src, dst, Duration::from_secs(1)) else {
                break;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut c = Client { stream: s };
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: curl/8\r\n\r\n");
            if c.send(req.as_bytes())
                .and_then(|()| c.responses(1))
                .is_err()
            {
                break;
            }
            answered += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        answered
    })
    .join()
    .unwrap_or(0)
}

#[test]
fn the_engine_never_bans_a_protected_attacker() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let protected = link.add_far_v4(61)?;
    let other = link.add_far_v4(62)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n[bans]\nprotect = [\"{protected}\"]\n"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);

    // The same attack from an unprotected address is banned.
    let start = Instant::now();
    probe(&link, other, dst);
    let t = wait_until(Duration::from_secs(10), || {
        !bans_covering(&d, other).is_empty()
    });
    assert!(t.is_some(), "the attacker was not banned: {}", d.log_text());
    println!(
        "unprotected attacker banned after {} ms",
        start.elapsed().as_millis()
    );

    // From the protected address: every probe answered (the tap only watches), judged hostile
    // (engine blocks counted), never banned, still connects.
    let blocks = |d: &Daemon| -> anyhow::Result<u64> {
        Ok(d.json(&["stats"])?["engine"]["engine_block"]
            .as_u64()
            .unwrap_or(0))
    };
    let before = blocks(&d)?;
    let answered = probe(&link, protected, dst);
    assert_eq!(answered, 4, "the protected client was cut off");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        bans_covering(&d, protected).is_empty(),
        "a protected address was banned"
    );
    assert!(tcp_ok(
        &link.far,
        Some(protected),
        dst,
        Duration::from_secs(1)
    ));
    assert!(
        wait_until(Duration::from_secs(3), || blocks(&d)
            .is_ok_and(|n| n > before))
        .is_some(),
        "the protected client's probes were not judged"
    );
    Ok(())
}

/// A minimal IPv6 HTTP server on `port` in the near namespace: every request gets a 404.
fn start_v6_server(link: &Link, port: u16) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    link.near.spawn(move || {
        let listener = std::net::TcpListener::bind(("::", port));
        let _ = tx.send(listener.is_ok());
        let Ok(listener) = listener else { return };
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = stream;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            });
        }
    });
    anyhow::ensure!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false),
        "IPv6 HTTP server did not start"
    );
    Ok(())
}

#[test]
fn an_engine_ban_of_an_ipv6_client_covers_its_64_but_never_the_hosts_own() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_v6_server(&link, PORT6)?;
    // A /64 of its own on the far side, routed from the near side.
    let other64 = link.v6_prefix().replacen("fd20:", "fd21:", 1);
    let (attacker, neighbour): (IpAddr, IpAddr) = (
        format!("{other64}5").parse()?,
        format!("{other64}6").parse()?,
    );
    for a in [attacker, neighbour] {
        link.far.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/64"),
            "dev",
            &link.far_if,
            "nodad",
        ])?;
    }
    link.near.ip(&[
        "-6",
        "route",
        "replace",
        &format!("{other64}/64"),
        "dev",
        &link.near_if,
    ])?;
    // And one more far address inside the host's own /64.
    let inside_own = link.add_far_v6("7")?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT6}]\n"),
    )?;
    let dst = SocketAddr::new(link.near_v6, PORT6);
    let connects = |src: IpAddr| tcp_ok(&link.far, Some(src), dst, Duration::from_millis(500));
    assert!(connects(attacker) && connects(neighbour) && connects(link.far_v6));

    probe(&link, attacker, dst);
    let net64 = format!("{other64}/64");
    assert!(
        wait_until(Duration::from_secs(10), || bans_covering(&d, attacker)
            .iter()
            .any(|b| b["addr"] == net64.as_str()))
        .is_some(),
        "no /64 ban for {attacker}: {}",
        d.log_text()
    );
    // The neighbour in the same /64 is dropped; the host's own /64 is not.
    assert!(
        wait_until(Duration::from_secs(3), || !connects(neighbour)).is_some(),
        "the neighbour in the banned /64 still connects"
    );
    assert!(
        connects(link.far_v6),
        "an address outside the /64 was cut off"
    );

    // A client inside the host's own /64 is banned alone: the /64 holds the host's address.
    probe(&link, inside_own, dst);
    assert!(
        wait_until(Duration::from_secs(10), || bans_covering(&d, inside_own)
            .iter()
            .any(|b| b["addr"] == inside_own.to_string()))
        .is_some(),
        "{inside_own} not banned alone: {}",
        d.log_text()
    );
    assert!(
        bans_covering(&d, link.near_v6).is_empty(),
        "the host's own /64 was banned"
    );
    assert!(
        connects(link.far_v6),
        "a neighbour in the host's /64 was cut off"
    );
    Ok(())
}

/// The host's addresses are read again every `bans.protect_refresh`: an address added to an
/// interface after start becomes protected (listed by `guard status`, its ban refused).
#[test]
fn an_address_added_after_start_is_protected() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        "[tap]\nhttp_ports = []\n[bans]\nprotect_refresh = \"1s\"\n",
    )?;
    let added = "198.51.100.7";
    let listed = |d: &Daemon| {
        d.json(&["status"]).ok().is_some_and(|s| {
            s["protected"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["net"] == added || p["net"] == format!("{added}/32"))
        })
    };
    assert!(!listed(&d), "protected before it exists");
    link.near
        .ip(&["addr", "add", &format!("{added}/32"), "dev", &link.near_if])?;
    assert!(
        wait_until(Duration::from_secs(5), || listed(&d)).is_some(),
        "the new address was not protected: {}",
        d.json(&["status"])?
    );
    let e = d
        .cli(&["ban", "add", added])
        .expect_err("an address of the host added after start was banned");
    assert!(
        e.contains("is protected") && e.contains("an address of this host"),
        "{e}"
    );
    assert!(d.log_text().contains("protected: never banned"));
    // Removed again: no longer protected, and a ban of it is accepted.
    link.near
        .ip(&["addr", "del", &format!("{added}/32"), "dev", &link.near_if])?;
    assert!(
        wait_until(Duration::from_secs(5), || !listed(&d)).is_some(),
        "the removed address stayed protected"
    );
    d.cli(&["ban", "add", added]).map_err(anyhow::Error::msg)?;
    Ok(())
}
