//! End to end: a capture thread that panics is restarted, counted and logged, and the tap goes
//! on judging: a 404 prober is still banned. The panic is injected through the daemon's
//! debug-build hook `GUARD_FAULT_PANIC_PATH` (compiled out of release builds): the capture
//! thread panics inside the ring's packet handler when the tap finishes a request for that path.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use guard_tests::http::{Client, start_server};
use guard_tests::{Daemon, Link, require_root, wait_until};

const PORT: u16 = 8080;
const FAULT: &str = "/__guard_injected_fault__";

fn banned(d: &Daemon, addr: IpAddr) -> bool {
    d.json(&["ban", "ls"]).ok().is_some_and(|v| {
        v.as_array()
            .is_some_and(|bans| bans.iter().any(|b| b["addr"] == addr.to_string()))
    })
}

fn restarts(d: &Daemon) -> u64 {
    d.json(&["stats"])
        .ok()
        .and_then(|s| s["tap"][0]["capture_restarts"].as_u64())
        .unwrap_or(0)
}

/// One request for `path` from `src` on a connection of its own; its status.
fn get(link: &Link, src: IpAddr, dst: SocketAddr, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0\r\n\r\n");
    Client::with_from(&link.far, Some(src), dst, move |c| {
        c.send(req.as_bytes())?;
        c.responses(1)
    })
    .ok()
    .and_then(|s| s.first().copied())
}

#[test]
fn a_capture_thread_that_panics_is_restarted_and_a_prober_is_still_banned() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let mut d = Daemon::prepare(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    d.env
        .push(("GUARD_FAULT_PANIC_PATH".to_owned(), FAULT.to_owned()));
    d.spawn()?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    let (faulty, prober) = (link.add_far_v4(20)?, link.add_far_v4(30)?);

    // Two panics in a row (the second after the first restart's backoff): both counted.
    for n in 1..=2 {
        assert!(get(&link, faulty, dst, FAULT).is_some(), "no answer");
        let restarted = wait_until(Duration::from_secs(10), || restarts(&d) >= n);
        assert!(
            restarted.is_some(),
            "panic {n} not counted as a restart: {} / {}",
            d.json(&["stats"])?,
            d.log_text()
        );
    }
    let log = d.log_text();
    assert!(
        log.contains("the capture thread panicked") && log.contains("injected fault"),
        "the panic and its message are not logged: {log}"
    );
    let stats = d.json(&["stats"])?;
    assert!(
        stats["tap"][0]["last_capture_panic"]
            .as_str()
            .is_some_and(|m| m.contains(FAULT)),
        "{stats}"
    );

    // A 404 prober afterwards: one path per connection until it is cut off.
    let link_ns = link.far.path();
    let prober_thread = std::thread::spawn(move || {
        let _ = guard_tests::enter(&link_ns);
        for i in 0..300 {
            let Some(s) = guard_tests::connect_from(prober, dst, Duration::from_secs(1)) else {
                break;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut c = Client { stream: s };
            let p = format!(
                "GET /scan/{i}/index.html HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0\r\n\r\n"
            );
            if c.send(p.as_bytes()).and_then(|()| c.responses(1)).is_err() {
                break;
            }
        }
    });
    let t = wait_until(Duration::from_secs(20), || banned(&d, prober));
    let _ = prober_thread.join();
    assert!(
        t.is_some(),
        "the 404 prober was not banned after the capture thread restarted: {}",
        d.log_text()
    );
    println!(
        "capture thread restarted twice; 404 prober banned {} ms after its first probe",
        t.unwrap_or_default().as_millis()
    );
    assert_eq!(restarts(&d), 2, "restarted more often than it panicked");
    assert!(
        !banned(&d, faulty),
        "the faulty client's requests were 200s"
    );
    Ok(())
}
