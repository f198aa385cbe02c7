//! End to end for the rate limiter's bans (`xdp.rate_ban`): a rate event names a packet's source
//! address, which anyone can forge. A flood under a forged source is dropped but bans nobody; a
//! flooder whose handshake the tap saw is banned.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use guard_tests::http::{Client, start_server};
use guard_tests::rawtcp::Forger;
use guard_tests::{Daemon, Link, require_root, wait_until};

const PORT: u16 = 8080;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

fn rate_banned(d: &Daemon, addr: IpAddr) -> bool {
    d.json(&["ban", "ls"]).ok().is_some_and(|v| {
        v.as_array().is_some_and(|bans| {
            bans.iter()
                .any(|b| b["addr"] == addr.to_string() && b["origin"] == "rate-limit")
        })
    })
}

fn daemon_counter(d: &Daemon, name: &str) -> u64 {
    d.json(&["stats"])
        .ok()
        .and_then(|s| s["daemon"][name].as_u64())
        .unwrap_or(0)
}

/// About a second of UDP at ~20,000 packets/s from `src` (one of the namespace's addresses).
fn udp_flood(link: &Link, src: IpAddr, dst: SocketAddr) -> anyhow::Result<u64> {
    let sent = link.far.run(move || {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(src, 0)).ok()?;
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
    Ok(sent.unwrap_or(0))
}

#[test]
fn a_forged_flood_bans_nobody_while_a_connected_flooder_is_banned() -> anyhow::Result<()> {
    require_root!();
    let link = Link::exclusive()?;
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!(
            "[tap]\nhttp_ports = [{PORT}]\n[xdp]\nrate_limit_pps = 200\nrate_limit_burst = 100\n\
             rate_ban = \"1m\"\n"
        ),
    )?;
    let server = v4(link.near_v4);
    // An off-path forger floods TCP segments "from" a victim that never talks to the server.
    let victim = v4(link.add_far_v4(77)?);
    link.far.run(move || -> anyhow::Result<()> {
        let f = Forger::new()?;
        let start = Instant::now();
        let mut i = 0u32;
        while start.elapsed() < Duration::from_secs(1) {
            for _ in 0..200 {
                i += 1;
                let sport = 20_000 + (i % 20_000) as u16;
                f.send(victim, sport, server, PORT, i, 0x1234, PSH | ACK, b"x")?;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    })??;
    assert!(
        wait_until(Duration::from_secs(5), || {
            daemon_counter(&d, "rate_bans_unverified") >= 1
        })
        .is_some(),
        "the forged flood raised no rate event: {}",
        d.json(&["stats"])?
    );
    assert!(
        d.xdp_stat("dropped_rate")? >= 1,
        "the forged flood's excess was not dropped"
    );
    assert!(
        !rate_banned(&d, IpAddr::V4(victim)),
        "the forged victim was banned"
    );
    assert_eq!(daemon_counter(&d, "rate_bans"), 0);
    assert!(d.log_text().contains("may be forged"), "{}", d.log_text());

    // A real client completes a handshake on the protected port (one request), then floods.
    let flooder = link.far_v4;
    let dst = SocketAddr::new(link.near_v4, PORT);
    let statuses = Client::with_from(&link.far, Some(flooder), dst, |c| {
        c.send(b"GET / HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: test\r\n\r\n")?;
        c.responses(1)
    })?;
    assert_eq!(statuses.len(), 1);
    // The tap hands verified sources over after each ring poll (100 ms at most).
    std::thread::sleep(Duration::from_millis(500));
    let sent = udp_flood(&link, flooder, SocketAddr::new(link.near_v4, 7070))?;
    assert!(sent > 5000, "the flood sent only {sent} packets");
    assert!(
        wait_until(Duration::from_secs(5), || rate_banned(&d, flooder)).is_some(),
        "the connected flooder was not banned: {}",
        d.log_text()
    );
    assert_eq!(daemon_counter(&d, "rate_bans"), 1);
    assert!(!rate_banned(&d, IpAddr::V4(victim)));
    Ok(())
}

/// Without the tap no source is ever proven: `rate_ban` bans nobody (the excess is still
/// dropped) unless `xdp.rate_ban_unverified` is set.
#[test]
fn without_the_tap_rate_events_ban_nobody() -> anyhow::Result<()> {
    require_root!();
    let link = Link::exclusive()?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        "[tap]\nhttp_ports = []\n[xdp]\nrate_limit_pps = 200\nrate_limit_burst = 100\n\
         rate_ban = \"1m\"\n",
    )?;
    let sent = udp_flood(&link, link.far_v4, SocketAddr::new(link.near_v4, 7070))?;
    assert!(sent > 5000, "the flood sent only {sent} packets");
    assert!(
        wait_until(Duration::from_secs(5), || {
            daemon_counter(&d, "rate_bans_unverified") >= 1
        })
        .is_some(),
        "no rate event was refused: {}",
        d.json(&["stats"])?
    );
    assert!(
        d.xdp_stat("dropped_rate")? >= 1,
        "the excess was not dropped"
    );
    assert!(!rate_banned(&d, link.far_v4), "banned without proof");
    assert_eq!(daemon_counter(&d, "rate_bans"), 0);
    Ok(())
}
