//! End to end for detection that generalises, through the real tap and real XDP in front of a
//! small web application: three busy but ordinary clients behind one address (an office behind
//! NAT) are never banned while a flood and a path scanner beside them are; under the seed's
//! rate profile the same office is banned. A login brute force against a form that answers 200
//! "Invalid credentials" (Debian's `hydra` with a proper Host header, and a scripted client with
//! a browser's headers) is banned as a brute force within 2 s, at most 20 guesses answered.
//! Nmap's http-enum (Debian's `nmap`), with a browser's user agent, is banned within 2 s, from
//! its first fingerprints (directory walks) or, with only its CMS fingerprints, from its shape.
//! Prints the time from each attacker's first request to its ban and how many of its requests
//! were answered.
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guard_tests::http::{Client, served, start_app};
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

/// A tool started in its own process group (it forks workers), killed with all of them on drop.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// True if `program` runs here; otherwise prints why the test is skipped.
fn have(program: &str) -> bool {
    let ok = std::process::Command::new(program)
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !ok {
        println!("SKIP: `{program}` is not installed (cargo xtask test installs it on Debian)");
    }
    ok
}

/// Waits for `src`'s ban: (time since `start`, the ban's reason), or None after 10 s.
fn ban_of(d: &Daemon, src: IpAddr, start: Instant) -> Option<(Duration, String)> {
    wait_until(Duration::from_secs(10), || banned(d, src).is_some())?;
    let t = start.elapsed();
    let reason = banned(d, src)?["reason"].as_str()?.to_owned();
    Some((t, reason))
}

#[test]
fn hydra_against_a_form_answering_200_is_banned_as_a_brute_force() -> anyhow::Result<()> {
    require_root!();
    if !have("hydra") {
        return Ok(());
    }
    let (link, d, dst) = setup("")?;
    let dir = std::env::temp_dir().join(guard_tests::unique("hydra"));
    std::fs::create_dir_all(&dir)?;
    let words = dir.join("passwords.txt");
    let list: Vec<String> = (0..500).map(|i| format!("guess-{i:03}")).collect();
    std::fs::write(&words, list.join("\n"))?;
    let src = link.far_v4;
    let start = Instant::now();
    // A proper Host header and a browser's user agent: the brute force must be recognised as
    // one, not by hydra's name or protocol tells.
    let hydra = link
        .far
        .command("hydra")
        .args(["-l", "admin", "-P"])
        .arg(&words)
        .args(["-t", "4", "-I", "-f", "-s", &PORT.to_string()])
        .arg(dst.ip().to_string())
        .arg("http-post-form")
        .arg(
            "/accounts/login/:username=^USER^&password=^PASS^:H=Host\\: app.test:H=User-Agent\\: Mozilla/5.0 (X11; Linux x86_64; rv\\:140.0) Gecko/20100101 Firefox/140.0:F=Invalid credentials",
        )
        .stdout(std::fs::File::create(dir.join("hydra.log"))?)
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    let hydra = Group(hydra);
    let ban = ban_of(&d, src, start);
    let answered = served(src);
    drop(hydra);
    let out = std::fs::read_to_string(dir.join("hydra.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let (t, reason) = ban.ok_or_else(|| {
        let logs = d.cli(&["logs", "--json"]).unwrap_or_default();
        anyhow::anyhow!(
            "hydra was not banned; {answered} answered; hydra said:\n{out}\nrequest log:\n{}",
            logs.lines().take(12).collect::<Vec<_>>().join("\n")
        )
    })?;
    println!(
        "hydra: banned {} ms after it started, {answered} requests answered ({reason})",
        t.as_millis()
    );
    assert!(reason.starts_with("brute_force"), "{reason}");
    assert!(t <= Duration::from_secs(2), "{t:?}");
    assert!(answered <= 20, "{answered} requests answered");
    assert!(!tcp_ok(
        &link.far,
        Some(src),
        dst,
        Duration::from_millis(300)
    ));
    Ok(())
}

#[test]
fn a_scripted_brute_force_with_browser_headers_is_banned() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup("")?;
    let src = link.add_far_v4(80)?;
    // One keep-alive connection, a browser's headers, a guess every 50 ms; every answer is the
    // same 200 page.
    let ns = link.far.path();
    let start = Instant::now();
    let client = std::thread::spawn(move || -> usize {
        let _ = guard_tests::enter(&ns);
        let Some(s) = guard_tests::connect_from(src, dst, Duration::from_secs(1)) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut c = Client { stream: s };
        let mut ok = 0;
        for i in 0..200 {
            let body = format!("csrfmiddlewaretoken=a1b2c3&username=admin&password=Winter{i}!");
            let req = format!(
                "POST /login HTTP/1.1\r\nHost: app.test\r\nUser-Agent: {FIREFOX}\r\nAccept: text/html\r\nReferer: http://app.test/login\r\nCookie: csrftoken=a1b2c3\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if c.send(req.as_bytes())
                .and_then(|()| c.responses(1))
                .is_err()
            {
                break;
            }
            ok += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    let ban = ban_of(&d, src, start);
    let answered = client.join().expect("the client panicked");
    let (t, reason) =
        ban.ok_or_else(|| anyhow::anyhow!("the scripted brute force was not banned"))?;
    println!(
        "scripted brute force: banned {} ms after its first request, {answered} requests answered ({reason})",
        t.as_millis()
    );
    assert!(reason.starts_with("brute_force"), "{reason}");
    assert!(t <= Duration::from_secs(2), "{t:?}");
    assert!(answered <= 20, "{answered} requests answered");
    Ok(())
}

/// Runs nmap's http-enum (all its fingerprints, or one category) with a browser's user agent
/// against the app: (time to ban, requests answered, the ban's reason).
fn nmap_enum(category: Option<&str>) -> anyhow::Result<(Duration, usize, String)> {
    let (link, d, dst) = setup("")?;
    let src = link.far_v4;
    let args = match category {
        Some(c) => format!("http.useragent={FIREFOX},http-enum.category={c}"),
        None => format!("http.useragent={FIREFOX}"),
    };
    let start = Instant::now();
    // A browser's user agent: the enumeration must be recognised from its shape, not from the
    // name nmap gives itself.
    let nmap = link
        .far
        .command("nmap")
        .args([
            "-n",
            "-Pn",
            "-sT",
            "-p",
            &PORT.to_string(),
            "--script",
            "http-enum",
        ])
        .arg(format!("--script-args={args}"))
        .arg(dst.ip().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    let nmap = Group(nmap);
    let ban = ban_of(&d, src, start);
    let answered = served(src);
    drop(nmap);
    let (t, reason) = ban.ok_or_else(|| {
        let logs = d.cli(&["logs", "--json"]).unwrap_or_default();
        anyhow::anyhow!(
            "nmap was not banned; {answered} answered; request log:\n{}",
            logs.lines().take(30).collect::<Vec<_>>().join("\n")
        )
    })?;
    println!(
        "nmap http-enum ({}): banned {} ms after it started, {answered} requests answered ({reason})",
        category.unwrap_or("all fingerprints"),
        t.as_millis()
    );
    assert!(!tcp_ok(
        &link.far,
        Some(src),
        dst,
        Duration::from_millis(300)
    ));
    Ok((t, answered, reason))
}

/// How many requests nmap may get answered: it pipelines its probes (dozens written at once on
/// each connection), so the server has read and answers a whole batch before any verdict, made
/// from the answers, can reach XDP. In tap mode that batch is served whatever the rules; this
/// bound says the scan was cut off long before its 1,000-odd fingerprints ran out.
const NMAP_ANSWERED: usize = 250;

#[test]
fn nmap_http_enum_is_banned_within_two_seconds() -> anyhow::Result<()> {
    require_root!();
    if !have("nmap") {
        return Ok(());
    }
    // All fingerprints: its first ones walk up directories (`/../../etc/passwd`).
    let (t, answered, _) = nmap_enum(None)?;
    assert!(t <= Duration::from_secs(2), "{t:?}");
    assert!(answered <= NMAP_ANSWERED, "{answered} requests answered");
    Ok(())
}

#[test]
fn nmap_http_enum_without_attacks_is_banned_from_its_shape() -> anyhow::Result<()> {
    require_root!();
    if !have("nmap") {
        return Ok(());
    }
    // Only the CMS fingerprints: GET and HEAD for well-known application paths, nothing hostile
    // in any one request; the ban comes from the shape (missing paths, errors, HEAD probes).
    let (t, answered, reason) = nmap_enum(Some("cms"))?;
    assert!(
        ["enumeration", "probing", "repeated_blocks"]
            .iter()
            .any(|r| reason.starts_with(r))
            && !reason.contains("validator"),
        "{reason}"
    );
    assert!(t <= Duration::from_secs(2), "{t:?}");
    assert!(answered <= NMAP_ANSWERED, "{answered} requests answered");
    Ok(())
}
