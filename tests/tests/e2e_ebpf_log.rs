//! End to end: `xdp.ebpf_log` (what `guard run --ebpf-log` sets) turns the eBPF programs' log on
//! in a running daemon, and its records reach the daemon's own log: a source sending over the
//! rate limit is named there once, by its address, under the target `guard::ebpf`.
use std::net::SocketAddr;
use std::time::Duration;

use guard_tests::{Daemon, Link, require_root, start_servers, wait_until};

const PORT: u16 = 7071;

#[test]
fn e2e_ebpf_log_names_the_first_over_rate_source_in_the_daemon_log() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_servers(&link.near, PORT)?;
    // The tap stays on (default ports): its program is loaded after the log reader opened the
    // ring, as in production.
    let daemon = Daemon::start(
        &link.near,
        &link.near_if,
        "[xdp]\nebpf_log = \"info\"\nrate_limit_pps = 10\nrate_limit_burst = 5\n",
    )?;
    assert!(
        daemon.log_text().contains("eBPF log on"),
        "{}",
        daemon.log_text()
    );
    let dst = SocketAddr::new(link.near_v4, PORT);
    // 50 datagrams at once: the burst lets 5 through, the rest are over the rate.
    let sent = link.far.run(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        Some(
            (0..50)
                .filter(|_| sock.send_to(&[0u8; 16], dst).is_ok())
                .count(),
        )
    })?;
    assert_eq!(sent, Some(50));
    let expected = format!("first drop from {}", link.far_v4);
    let logged = wait_until(Duration::from_secs(5), || {
        daemon.log_text().contains(&expected)
    });
    assert!(
        logged.is_some(),
        "no {expected:?} in: {}",
        daemon.log_text()
    );
    assert!(daemon.xdp_stat("dropped_rate")? >= 1);
    let text = daemon.log_text();
    assert_eq!(text.matches(&expected).count(), 1, "{text}");
    assert!(text.contains("guard::ebpf"), "{text}");
    Ok(())
}
