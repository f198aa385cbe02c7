//! End to end for detection that generalises, through the real tap and real XDP in front of a
//! small web application: three busy but ordinary clients behind one address (an office behind
//! NAT) are never banned while a flood and a path scanner beside them are; under the seed's
//! rate profile the same office is banned. Prints the time from each attacker's first request
//! to its ban and how many of its requests were answered.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guard_tests::http::{Client, start_app};
use guard_tests::{Daemon, Link, require_root, tcp_ok, wait_until};

const PORT: u16 = 8080;

fn setup(extra: &str) -> anyhow::Result<(Link, Daemon, SocketAddr)> {
    // Alone: the office's pacing and the flood must not stretch a neighbour's timeouts.
    let link = Link::exclusive()?;
    start_app(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n{extra}"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    Ok((link, d, dst))
}

/// The ban of `addr` in `guard ban ls`, if any (a failing CLI fails the test).
fn banned(d: &Daemon, addr: IpAddr) -> Option<serde_json::Value> {
    let list = d
        .json(&["ban", "ls"])
        .unwrap_or_else(|e| panic!("guard ban ls: {e:#}"));
    list.as_array()
        .unwrap_or_else(|| panic!("ban ls is not a list: {list}"))
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .cloned()
}

/// One request on its own connection from `src`; its status, `None` when cut off.
fn ask(src: IpAddr, dst: SocketAddr, req: &str) -> Option<u16> {
    let s = guard_tests::connect_from(src, dst, Duration::from_secs(1))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut c = Client { stream: s };
    c.send(req.as_bytes()).ok()?;
    c.responses(1).ok()?.first().copied()
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// One of the office's clients: every `every`, the requests `next(i)` gives for step `i`, until
/// `stop`. Returns (answered, sent).
fn office_client(
    link: &Link,
    src: IpAddr,
    dst: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
    next: impl Fn(u64) -> Vec<String> + Send + 'static,
) -> std::thread::JoinHandle<(usize, usize)> {
    let ns = link.far.path();
    std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let (mut ok, mut sent) = (0, 0);
        let start = Instant::now();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for req in next(i) {
                sent += 1;
                if ask(src, dst, &req).is_some_and(|s| s < 400) {
                    ok += 1;
                }
            }
            i += 1;
            let due = every * u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        (ok, sent)
    })
}

/// Three ordinary clients behind `src` for `span`: a browser opening a page every 2 s with six
/// assets, an API client polling a job's status with a bearer token four times a second (a new
/// token each minute), a polite crawler fetching a distinct page a second after robots.txt.
/// About 8 requests a second together, 5.5 of them pages. Returns (answered, sent).
fn nat_office(link: &Link, src: IpAddr, dst: SocketAddr, span: Duration) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let browser = office_client(link, src, dst, Duration::from_secs(2), stop.clone(), |i| {
        let mut reqs = vec![format!(
            "GET /news/{}-story HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {FIREFOX}\r\nCookie: session=c0ffee\r\n\r\n",
            i % 40
        )];
        for a in 0..6 {
            let path = if a % 2 == 0 {
                format!("/static/app-{a}.js")
            } else {
                format!("/media/{i}/{a}.webp")
            };
            reqs.push(format!(
                "GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {FIREFOX}\r\nReferer: http://guard.test/news/\r\n\r\n"
            ));
        }
        reqs
    });
    let api = office_client(
        link,
        src,
        dst,
        Duration::from_millis(250),
        stop.clone(),
        |i| {
            let agent = "python-requests/2.31.0";
            let mut reqs = Vec::new();
            if i % 240 == 0 {
                let body =
                    "grant_type=client_credentials&client_id=reports&client_secret=s3cr3t-value";
                reqs.push(format!(
                "POST /api/token HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {agent}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
            }
            reqs.push(format!(
            "GET /api/v1/jobs/8812/status HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {agent}\r\nAuthorization: Bearer tok-{}\r\nAccept: application/json\r\n\r\n",
            i / 240
        ));
            reqs
        },
    );
    let crawler = office_client(link, src, dst, Duration::from_secs(1), stop.clone(), |i| {
        let agent = "ExampleBot/2.1 (+https://bot.example.org/about)";
        let path = if i == 0 {
            "/robots.txt".to_owned()
        } else {
            format!("/archive/{}/{i}", i % 12)
        };
        vec![format!(
            "GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {agent}\r\n\r\n"
        )]
    });
    std::thread::sleep(span);
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0);
    for h in [browser, api, crawler] {
        let (ok, sent) = h.join().expect("an office client panicked");
        total.0 += ok;
        total.1 += sent;
    }
    total
}

/// Sends `requests` one per connection from `src`, `pause` apart, until cut off, while
/// watching `guard ban ls`: (requests answered, time from the first request to the ban).
fn attack(
    link: &Link,
    d: &Daemon,
    src: IpAddr,
    dst: SocketAddr,
    requests: Vec<String>,
    pause: Duration,
) -> (usize, Option<Duration>) {
    let ns = link.far.path();
    let start = Instant::now();
    let client = std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let mut answered = 0;
        for req in requests {
            if ask(src, dst, &req).is_none() {
                break;
            }
            answered += 1;
            std::thread::sleep(pause);
        }
        answered
    });
    let t =
        wait_until(Duration::from_secs(15), || banned(d, src).is_some()).map(|_| start.elapsed());
    let answered = client.join().expect("the attacker thread panicked");
    (answered, t)
}

fn report(d: &Daemon, name: &str, addr: IpAddr, answered: usize, t: Option<Duration>) {
    let reason = banned(d, addr)
        .map(|b| b["reason"].to_string())
        .unwrap_or_default();
    println!(
        "{name}: {} after its first request, {answered} requests answered ({reason})",
        t.map_or("not banned".into(), |t| format!(
            "banned {} ms",
            t.as_millis()
        ))
    );
}

#[test]
fn a_busy_office_behind_one_address_is_not_banned_but_a_flood_and_a_scanner_are()
-> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup("")?;
    let office = link.add_far_v4(70)?;
    let flooder = link.add_far_v4(71)?;
    let scanner = link.add_far_v4(72)?;

    let ns_link = &link;
    let (office_result, flood, scan) = std::thread::scope(|s| {
        let o = s.spawn(move || nat_office(ns_link, office, dst, Duration::from_secs(35)));
        // Attackers start once the office is busy.
        std::thread::sleep(Duration::from_secs(12));
        // A flood: the same page as fast as one connection at a time allows.
        let flood: Vec<String> = (0..2000)
            .map(|_| format!("GET / HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {FIREFOX}\r\n\r\n"))
            .collect();
        let flood = attack(&link, &d, flooder, dst, flood, Duration::ZERO);
        // A path scanner: distinct paths, nearly all missing.
        let paths: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    "GET /{} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0 (compatible; dirscan)\r\n\r\n",
                    ["backup", "old", "test", "dev", "tmp", "private", "secret", "db"][i % 8]
                        .to_owned()
                        + &format!("-{i}")
                )
            })
            .collect();
        let scan = attack(&link, &d, scanner, dst, paths, Duration::ZERO);
        (o.join().expect("the office panicked"), flood, scan)
    });

    report(&d, "flood", flooder, flood.0, flood.1);
    report(&d, "path scanner", scanner, scan.0, scan.1);
    let (ok, sent) = office_result;
    println!("NAT office: {ok} of {sent} requests answered");
    assert!(flood.1.is_some(), "the flood was not banned");
    assert!(scan.1.is_some(), "the scanner was not banned");
    // Cut off long before its list ends (at full speed a few dozen requests are answered
    // while the ban travels from the tap through the store into XDP).
    assert!(scan.0 < 100, "the scanner got {} answers", scan.0);
    for addr in [flooder, scanner] {
        assert!(
            !tcp_ok(&link.far, Some(addr), dst, Duration::from_millis(300)),
            "{addr} still connects"
        );
    }
    assert!(sent >= 250, "the office sent only {sent} requests");
    assert_eq!(ok, sent, "every office request answered");
    assert!(
        banned(&d, office).is_none(),
        "the office was banned: {:?}",
        banned(&d, office)
    );
    assert!(tcp_ok(
        &link.far,
        Some(office),
        dst,
        Duration::from_millis(500)
    ));
    Ok(())
}

#[test]
fn the_seed_profile_bans_the_same_office() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup("[engine]\nrate_profile = \"seed\"\n")?;
    let office = link.add_far_v4(70)?;
    let (ok, sent) = nat_office(&link, office, dst, Duration::from_secs(20));
    println!("NAT office under the seed's profile: {ok} of {sent} requests answered");
    let ban = wait_until(Duration::from_secs(5), || banned(&d, office).is_some());
    assert!(ban.is_some(), "the seed's rules did not ban the office");
    let reason = banned(&d, office).map(|b| b["reason"].to_string());
    println!("ban: {reason:?}");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("requests in 10 s")),
        "{reason:?}"
    );
    Ok(())
}
