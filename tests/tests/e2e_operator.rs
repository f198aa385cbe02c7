//! End to end for the operator's view: what `guard ban rm`, `ban add` and `allow add` do and
//! say, and what a signal does to the daemon, on a real daemon watching a veth pair.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use guard_tests::http::{Client, start_server};
use guard_tests::{Daemon, Link, require_root, tcp_ok, wait_until};

const PORT: u16 = 8080;

/// The daemon is declared first so that it stops before the namespaces go.
struct Setup {
    d: Daemon,
    link: Link,
    dst: SocketAddr,
}

/// A veth pair with the test HTTP server on the near side and guard tapping it.
fn setup(extra: &str) -> anyhow::Result<Setup> {
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n{extra}"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    Ok(Setup { d, link, dst })
}

/// The ban of `addr` in `guard ban ls`, if any (a CLI failure fails the test).
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

/// Sends GET `paths` from `src`, one connection each, stopping at the first that gets no
/// answer (the client was banned); returns how many were answered.
fn get(s: &Setup, src: IpAddr, paths: &[&str]) -> usize {
    get_at(s, src, s.dst, paths)
}

/// [`get`] to `dst`.
fn get_at(s: &Setup, src: IpAddr, dst: SocketAddr, paths: &[&str]) -> usize {
    let ns = s.link.far.path();
    let reqs: Vec<String> = paths
        .iter()
        .map(|p| format!("GET {p} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: curl/8.0\r\n\r\n"))
        .collect();
    std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let mut answered = 0;
        for req in reqs {
            let Some(stream) = guard_tests::connect_from(src, dst, Duration::from_secs(1)) else {
                break;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut c = Client { stream };
            if c.send(req.as_bytes())
                .and_then(|()| c.responses(1))
                .is_err()
            {
                break;
            }
            answered += 1;
        }
        answered
    })
    .join()
    .expect("the client thread panicked")
}

/// Sends GET `path` `n` times from `src` to `dst` on one keep-alive connection, each request
/// after the answer to the one before (fewer connections than [`get`], for many requests);
/// returns how many were answered.
fn get_many(s: &Setup, src: IpAddr, dst: SocketAddr, path: &str, n: usize) -> usize {
    let ns = s.link.far.path();
    let req = format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: curl/8.0\r\n\r\n");
    std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let Some(stream) = guard_tests::connect_from(src, dst, Duration::from_secs(5)) else {
            return 0;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut c = Client { stream };
        (0..n)
            .take_while(|_| c.send(req.as_bytes()).and_then(|()| c.responses(1)).is_ok())
            .count()
    })
    .join()
    .expect("the client thread panicked")
}

/// Sensitive-file probes: the engine bans a client that sends them.
const PROBES: [&str; 8] = [
    "/.env",
    "/.git/config",
    "/wp-admin/",
    "/backup.sql",
    "/.aws/credentials",
    "/config.php.bak",
    "/.htpasswd",
    "/phpinfo.php",
];

/// Probes from `src` until the engine bans it; returns the ban's offence count.
fn get_banned(s: &Setup, src: IpAddr) -> u64 {
    get(s, src, &PROBES);
    wait_until(Duration::from_secs(10), || banned(&s.d, src).is_some())
        .unwrap_or_else(|| panic!("{src} was not banned: {}", s.d.log_text()));
    let ban = banned(&s.d, src).expect("banned");
    assert_eq!(ban["origin"], "engine", "{ban}");
    ban["evidence"]["offence"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offence in {ban}"))
}

/// Issue 20, item 1: `ban rm` of an engine ban means "that was a mistake": the client starts
/// afresh, its next 404s do not ban it, and its next ban is a first offence again. With
/// `--keep-history` the offence stays and the next ban escalates. An address inside a banned
/// network is not banned itself: `ban rm` names the network.
#[test]
fn ban_rm_resets_the_engine_unless_history_is_kept() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let src = s.link.add_far_v4(50)?;
    assert_eq!(get_banned(&s, src), 1);
    s.d.cli(&["ban", "rm", &src.to_string()])
        .map_err(anyhow::Error::msg)?;
    assert!(tcp_ok(
        &s.link.far,
        Some(src),
        s.dst,
        Duration::from_millis(500)
    ));
    // Its next requests, 404s among them, are answered and do not ban it again.
    let answered = get(&s, src, &["/", "/missing-page", "/another-missing-page"]);
    assert_eq!(answered, 3, "the lifted client was cut off again");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        banned(&s.d, src).is_none(),
        "the lifted client was banned again by its next requests: {:?}",
        banned(&s.d, src)
    );
    // Misbehaving again, it is banned as a first offender (1 h, not 4 h).
    assert_eq!(
        get_banned(&s, src),
        1,
        "the lifted ban counted as an offence"
    );
    // Lifted with --keep-history: the offence stays, the next ban is the second.
    s.d.cli(&["ban", "rm", &src.to_string(), "--keep-history"])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(get_banned(&s, src), 2, "--keep-history lost the offence");
    let ttl = banned(&s.d, src).expect("banned")["evidence"]["ttl_secs"].clone();
    assert_eq!(ttl, 4 * 3600, "the second offence escalates");

    // An address inside a banned network: `ban rm` names the network that covers it.
    let (net, inside) = ("198.51.100.0/24", "198.51.100.77");
    s.d.cli(&["ban", "add", net, "--ttl", "10m"])
        .map_err(anyhow::Error::msg)?;
    let err =
        s.d.cli(&["ban", "rm", inside])
            .expect_err("an address that is not banned itself cannot be lifted");
    assert!(
        err.contains(&format!(
            "{inside} is not banned itself, but {net} covers it"
        )),
        "{err}"
    );
    let err =
        s.d.cli(&["ban", "rm", "192.0.2.1"])
            .expect_err("not banned");
    assert!(err.contains("192.0.2.1 is not banned"), "{err}");
    Ok(())
}

/// `ban ls --json` entry of `addr` (as guard prints it).
fn ban_of(d: &Daemon, addr: &str) -> Option<serde_json::Value> {
    d.json(&["ban", "ls"])
        .ok()?
        .as_array()?
        .iter()
        .find(|b| b["addr"] == addr)
        .cloned()
}

/// Issue 20, item 6: no silent surprises. A CIDR with host bits is refused naming the network
/// it would mean; an IPv4-mapped IPv6 address is the IPv4 one (and is enforced for IPv4
/// traffic); a re-ban says what it replaced and `--extend` keeps the later end; a bad
/// `--origin` is an error listing the valid ones; a second `allow add` says which reason it
/// replaced.
#[test]
fn no_silent_surprises_in_ban_and_allow() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let d = &s.d;
    let cli = |args: &[&str]| d.cli(args).map_err(anyhow::Error::msg);

    // Host bits: refused, naming the network; --force bans that network.
    let err = d
        .cli(&["ban", "add", "10.88.0.5/24"])
        .expect_err("a CIDR with host bits must be refused");
    assert!(
        err.contains("it means the whole network 10.88.0.0/24"),
        "{err}"
    );
    assert!(ban_of(d, "10.88.0.0/24").is_none(), "banned anyway");
    let out = cli(&["ban", "add", "10.88.0.5/24", "--force", "--ttl", "10m"])?;
    assert!(out.starts_with("banned 10.88.0.0/24 until "), "{out}");

    // IPv4-mapped IPv6: banned as IPv4, so IPv4 traffic from it is dropped; lifted the same way.
    let src = s.link.add_far_v4(60)?;
    let mapped = format!("::ffff:{src}");
    let out = cli(&["ban", "add", &mapped, "--ttl", "10m"])?;
    assert!(out.starts_with(&format!("banned {src} until ")), "{out}");
    assert!(ban_of(d, &src.to_string()).is_some());
    assert!(
        !tcp_ok(&s.link.far, Some(src), s.dst, Duration::from_millis(300)),
        "a ban given as ::ffff:{src} must drop {src}"
    );
    let listed = d.json(&["ban", "ls", "--ip", &mapped])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    cli(&["ban", "rm", &mapped])?;
    assert!(tcp_ok(
        &s.link.far,
        Some(src),
        s.dst,
        Duration::from_millis(500)
    ));

    // Re-ban: what changed is said; a shorter one replaces unless --extend.
    let x = "192.0.2.50";
    cli(&["ban", "add", x, "--ttl", "4h", "--reason", "first"])?;
    let four_h = ban_of(d, x).expect("banned")["expires_at"]
        .as_u64()
        .unwrap();
    let out = cli(&[
        "ban", "add", x, "--ttl", "1h", "--reason", "second", "--extend",
    ])?;
    assert!(
        out.contains("it was already banned (cli ban); replaced: end unchanged"),
        "{out}"
    );
    assert!(out.contains(r#"reason "first" -> "second""#), "{out}");
    let kept = ban_of(d, x).expect("banned")["expires_at"]
        .as_u64()
        .unwrap();
    assert!(
        four_h.abs_diff(kept) < 1000,
        "--extend lost the later end: {four_h} -> {kept}"
    );
    let out = cli(&["ban", "add", x, "--ttl", "1h"])?;
    assert!(
        out.contains("(shorter: --extend keeps the later end)"),
        "{out}"
    );
    // No reason given: the earlier one stays.
    assert!(out.contains(r#"reason unchanged ("second")"#), "{out}");
    let now = ban_of(d, x).expect("banned");
    assert!(
        now["expires_at"].as_u64().unwrap() + 2 * 3_600_000 < four_h + 1000,
        "{now}"
    );
    assert_eq!(now["reason"], "second");
    // A first ban says nothing more.
    let out = cli(&["ban", "add", "192.0.2.51", "--ttl", "1h"])?;
    assert_eq!(out.lines().count(), 1, "{out}");

    // A bad origin is an error listing the valid ones, not an empty list.
    let err = d
        .cli(&["ban", "ls", "--origin", "bogus"])
        .expect_err("--origin bogus must fail");
    assert!(
        err.contains("unknown origin `bogus`: expected one of cli, import, rate-limit, engine"),
        "{err}"
    );

    // allow add: a replaced reason is said; an IPv4-mapped address is the IPv4 one.
    let out = cli(&["allow", "add", "192.0.2.0/28", "--reason", "office"])?;
    assert_eq!(out.trim(), "allowlisted 192.0.2.0/28");
    let out = cli(&["allow", "add", "192.0.2.0/28", "--reason", "vpn"])?;
    assert_eq!(
        out.trim(),
        r#"allowlisted 192.0.2.0/28 (it was already; its reason "office" is replaced by "vpn")"#
    );
    let out = cli(&["allow", "add", "::ffff:192.0.2.99"])?;
    assert_eq!(out.trim(), "allowlisted 192.0.2.99");
    let allows = d.json(&["allow", "ls"])?;
    assert!(
        allows
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["target"] == "192.0.2.99")),
        "{allows}"
    );
    Ok(())
}

/// Issue 20, item 4: SIGHUP (as `systemctl reload` or a log rotation sends it) never stops the
/// daemon, with the proxy off: it logs what it reloaded, still answers, and keeps its bans.
#[test]
fn sighup_does_not_stop_the_daemon() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let d = &s.d;
    d.cli(&["ban", "add", "192.0.2.60", "--ttl", "10m"])
        .map_err(anyhow::Error::msg)?;
    let pid = d.json(&["status"])?["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("status names the daemon's pid");
    for _ in 0..2 {
        // SAFETY: kill(2) on the pid of the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = d.json(&["status"]);
    assert!(
        status.is_ok(),
        "the daemon stopped on SIGHUP: {status:?}\n{}",
        d.log_text()
    );
    assert_eq!(
        status?["pid"].as_i64(),
        Some(i64::from(pid)),
        "another daemon answers"
    );
    assert!(ban_of(d, "192.0.2.60").is_some(), "the ban was lost");
    let log = d.log_text();
    assert_eq!(
        log.matches("SIGHUP received").count(),
        2,
        "each SIGHUP is logged: {log}"
    );
    Ok(())
}

/// `guard stats`'s table as (counter, value) pairs.
fn stats_table(d: &Daemon) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let out = d.cli(&["stats"]).map_err(anyhow::Error::msg)?;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    anyhow::ensure!(header == ["COUNTER", "VALUE"], "no header in:\n{out}");
    Ok(lines
        .filter_map(|l| {
            let mut cells = l.split_whitespace();
            Some((cells.next()?.to_owned(), cells.next()?.to_owned()))
        })
        .collect())
}

/// Issue 20, item 5: `guard stats`'s table shows every group the daemon reports (the engine's,
/// the tap's, the log writer's, the XDP program's, the daemon's; the AI and the proxy as
/// `off`), with the same numbers as `--json`, after real requests.
#[test]
fn stats_table_shows_every_group() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let d = &s.d;
    let src = s.link.add_far_v4(70)?;
    assert_eq!(get(&s, src, &["/"; 5]), 5);
    wait_until(Duration::from_secs(10), || {
        d.json(&["stats"])
            .is_ok_and(|j| j["engine"]["inspected"].as_u64() >= Some(5))
    })
    .unwrap_or_else(|| {
        panic!(
            "the 5 requests were not inspected: {:?}",
            d.json(&["stats"])
        )
    });
    // The log writer works in batches, and the tap publishes its counters every 250 ms: wait
    // until both have counted them too.
    wait_until(Duration::from_secs(10), || {
        d.json(&["stats"]).is_ok_and(|j| {
            j["logs"]["written"].as_u64() >= Some(5) && j["tap"][0]["requests"].as_u64() >= Some(5)
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "the 5 requests were not logged and counted by the tap: {:?}",
            d.json(&["stats"])
        )
    });
    let json = d.json(&["stats"])?;
    let table = stats_table(d)?;
    let iface = &s.link.near_if;
    for (row, value) in [
        ("engine.inspected", &json["engine"]["inspected"]),
        ("engine_core.requests", &json["engine_core"]["requests"]),
        ("logs.written", &json["logs"]["written"]),
        ("logs.stored", &json["logs"]["stored"]),
        (
            &format!("tap.{iface}.requests"),
            &json["tap"][0]["requests"],
        ),
        ("daemon.bans_expired", &json["daemon"]["bans_expired"]),
        ("xdp.dense_blocks", &json["xdp"]["dense_blocks"]),
    ] {
        let n = value
            .as_u64()
            .unwrap_or_else(|| panic!("{row}: not in --json: {json}"));
        assert_eq!(
            table.get(row).map(String::as_str),
            Some(n.to_string().as_str()),
            "{row} in the table: {table:#?}"
        );
    }
    assert!(json["engine"]["inspected"].as_u64() >= Some(5));
    assert_eq!(json["tap"][0]["interface"], iface.as_str());
    assert!(json["tap"][0]["requests"].as_u64() >= Some(5), "{json}");
    for off in ["ai", "proxy", "inline"] {
        assert_eq!(
            table.get(off).map(String::as_str),
            Some("off"),
            "{table:#?}"
        );
    }
    for group in [
        "engine.",
        "engine_core.",
        "tap.",
        "logs.",
        "daemon.",
        "xdp.",
    ] {
        let rows = table.keys().filter(|k| k.starts_with(group)).count();
        assert!(rows >= 3, "group {group} has {rows} rows: {table:#?}");
    }
    Ok(())
}

/// `t` (seconds since the epoch) as RFC 3339 UTC, as `date -u` writes it.
fn rfc3339(t: u64) -> String {
    let out = guard_tests::sh(
        "date",
        &["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"],
    )
    .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The RFC 3339 UTC times (`2026-11-18T11:06:40Z`) in `text`.
fn utc_times(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| w.len() == 20 && w.as_bytes()[10] == b'T' && w.ends_with('Z'))
        .collect()
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
}

/// The paths of `guard logs ARGS --json`.
fn logged_paths(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = d
        .cli(&a)
        .unwrap_or_else(|e| panic!("guard {}: {e}", a.join(" ")));
    out.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["path"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Waits until the log holds `n` records.
fn wait_logged(d: &Daemon, n: usize) {
    wait_until(Duration::from_secs(10), || {
        logged_paths(d, &["--limit", "1000"]).len() >= n
    })
    .unwrap_or_else(|| {
        panic!(
            "{n} records were not logged: {:?}",
            logged_paths(d, &["--limit", "1000"])
        )
    });
}

/// Issue 20, item 7: times say their zone (`Z`) in `ban add`, `ban ls` and `logs`;
/// `--since` / `--until` take RFC 3339 times and dates besides durations; an inverted range
/// is an error sentence, not an empty answer.
#[test]
fn times_say_utc_and_ranges_take_dates() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let d = &s.d;
    let out = d
        .cli(&["ban", "add", "192.0.2.70", "--ttl", "1h"])
        .map_err(anyhow::Error::msg)?;
    let until = out
        .trim()
        .strip_prefix("banned 192.0.2.70 until ")
        .unwrap_or_else(|| panic!("{out}"));
    let expected = rfc3339(unix_now().as_secs() + 3600);
    assert_eq!(until.len(), "2026-11-18T11:06:40Z".len(), "{out}");
    assert!(
        until.ends_with('Z') && until.as_bytes()[10] == b'T',
        "{out}"
    );
    // Within a few seconds of an hour from now.
    assert_eq!(until[..15], expected[..15], "{out} vs {expected}");
    let ls = d.cli(&["ban", "ls"]).map_err(anyhow::Error::msg)?;
    let row = ls
        .lines()
        .find(|l| l.starts_with("192.0.2.70"))
        .unwrap_or_else(|| panic!("{ls}"));
    // CREATED and EXPIRES, the end as `ban add` said it.
    let times = utc_times(row);
    assert_eq!(times.len(), 2, "{ls}");
    assert_eq!(times[1], until, "{ls}");

    // Two batches of requests, a second apart, and T between them.
    let src = s.link.add_far_v4(71)?;
    assert_eq!(get(&s, src, &["/early"; 3]), 3);
    wait_logged(d, 3);
    std::thread::sleep(Duration::from_millis(1500));
    let t = rfc3339(unix_now().as_secs());
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&s, src, &["/late"; 2]), 2);
    wait_logged(d, 5);
    assert_eq!(logged_paths(d, &["--since", &t]), ["/late"; 2]);
    assert_eq!(logged_paths(d, &["--until", &t]), ["/early"; 3]);
    let today = &t[..10];
    assert_eq!(logged_paths(d, &["--since", today]).len(), 5);
    assert_eq!(
        logged_paths(d, &["--since", "1h", "--until", "now"]).len(),
        5
    );
    let table = d.cli(&["logs"]).map_err(anyhow::Error::msg)?;
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{table}");
    for r in &rows {
        assert!(r.starts_with(today) && r[..24].ends_with('Z'), "{r}");
    }

    // An inverted range is an error naming both ends; so is a time without a zone.
    let err = d
        .cli(&["logs", "--since", &t, "--until", "1h"])
        .expect_err("an inverted range must fail");
    assert!(
        err.contains(&format!("--since {t} ({t}) is not before --until 1h (")),
        "{err}"
    );
    let err = d
        .cli(&["logs", "--since", &t[..19]])
        .expect_err("a time without a zone must fail");
    assert!(err.contains("it has no time zone: add Z for UTC"), "{err}");
    Ok(())
}

/// A minimal HTTP server on `addr` in `ns` (one `200 ok` per request), for IPv6 clients.
fn serve_on(ns: &guard_tests::Netns, addr: SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let listener = std::net::TcpListener::bind(addr);
        let _ = tx.send(listener.is_ok());
        let Ok(listener) = listener else { return };
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    anyhow::ensure!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false),
        "the IPv6 server did not start on {addr}"
    );
    Ok(())
}

/// Issue 20, item 8: a bare `guard logs` shows the newest 100 records and a footer saying how
/// many more there are and how to see them; `--ip` takes an IPv4 or IPv6 network; `--follow`
/// prints the rows that come later in the header's columns.
#[test]
fn logs_pages_take_networks_and_follow_in_columns() -> anyhow::Result<()> {
    require_root!();
    // 104 requests in a few seconds are a flood to the engine's defaults; not what is tested.
    let s = setup(
        "[engine.black]\nrequests_10s = 10000\nflood_requests_10s = 10000\n[engine.grey]\nelevated_requests_10s = 10000\n",
    )?;
    let d = &s.d;
    let v6_dst = SocketAddr::new(s.link.near_v6, PORT);
    serve_on(&s.link.near, v6_dst)?;
    let v4 = s.link.add_far_v4(72)?;
    let b = s.link.add_far_v4_in(77, 5)?;
    let v6 = s.link.far_v6;
    assert_eq!(get_many(&s, v4, s.dst, "/a", 104), 104);
    assert_eq!(get(&s, b, &["/b"; 3]), 3);
    assert_eq!(get_at(&s, v6, v6_dst, &["/c"; 2]), 2);
    wait_logged(d, 109);

    // The newest 100, and a footer for the 9 older ones.
    let out = d.cli(&["logs"]).map_err(anyhow::Error::msg)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 102, "header, 100 rows, footer:\n{out}");
    assert!(lines[0].starts_with("TIME"), "{out}");
    assert_eq!(
        lines[101],
        "… 9 more (older); show them with --limit N or --limit all, or narrow with --since"
    );
    assert!(lines[100].contains("/c"), "the newest come last: {out}");
    assert_eq!(logged_paths(d, &[]).len(), 100, "--json is limited too");
    assert_eq!(logged_paths(d, &["--limit", "all"]).len(), 109);
    let out = d
        .cli(&["logs", "--limit", "5"])
        .map_err(anyhow::Error::msg)?;
    assert!(
        out.ends_with(
            "… 104 more (older); show them with --limit N or --limit all, or narrow with --since\n"
        ),
        "{out}"
    );
    let out = d
        .cli(&["logs", "--limit", "all"])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        out.lines().count(),
        110,
        "no footer when all are shown:\n{out}"
    );

    // --ip: an address, an IPv4 network, an IPv6 network.
    assert_eq!(logged_paths(d, &["--ip", &format!("{b}/24")]), ["/b"; 3]);
    assert_eq!(
        logged_paths(d, &["--ip", &format!("{}/64", s.link.v6_prefix())]),
        ["/c"; 2]
    );
    assert_eq!(logged_paths(d, &["--ip", &v6.to_string()]), ["/c"; 2]);
    assert_eq!(
        logged_paths(d, &["--ip", &s.link.v4_subnet(), "--limit", "all"]).len(),
        104
    );
    assert_eq!(
        logged_paths(d, &["--ip", "10.0.0.0/8", "--limit", "all"]).len(),
        107
    );
    let err = d
        .cli(&["logs", "--ip", "10.0.0.0/33"])
        .expect_err("a bad network must fail");
    assert!(err.contains("10.0.0.0/33"), "{err}");

    follow_keeps_the_columns(&s, b)
}

/// `guard logs --follow --ip B/24`: the first page, then new rows in the header's columns.
fn follow_keeps_the_columns(s: &Setup, b: IpAddr) -> anyhow::Result<()> {
    let d = &s.d;
    let mut child = std::process::Command::new(guard_tests::guard_bin()?)
        .arg("--socket")
        .arg(&d.socket)
        .args(["logs", "--follow", "--ip", &format!("{b}/24")])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(10));
    let header = next()?;
    let first: Vec<String> = (0..3).map(|_| next()).collect::<Result<_, _>>()?;
    let long = format!("/followed/{}", "x".repeat(40));
    assert_eq!(get(s, b, &["/f", &long]), 2);
    let later = [next()?, next()?];
    let _ = child.kill();
    let _ = child.wait();
    let client = header.find("CLIENT").expect("CLIENT column");
    let status_end = header.find("STATUS").expect("STATUS column") + "STATUS".len();
    let path = header.find("PATH").expect("PATH column");
    for row in first.iter().chain(&later) {
        assert!(
            row[client..].starts_with(&b.to_string()),
            "CLIENT not under its header:\n{header}\n{row}"
        );
        assert_eq!(
            &row[status_end - 3..=status_end],
            "200 ",
            "STATUS not under its header:\n{header}\n{row}"
        );
        assert!(
            row[path..].starts_with('/'),
            "PATH not under its header:\n{header}\n{row}"
        );
    }
    assert!(later[0][path..].starts_with("/f "), "{}", later[0]);
    assert!(later[1][path..].starts_with(&long), "{}", later[1]);
    Ok(())
}

/// Issue 20, item 9: errors and log lines are sentences, not internal texts. A negative
/// duration in the config names the file, line and key; a second daemon on the same state
/// directory names the first one's pid and the directory; log lines carry no `Some(…)`; a
/// probe of an AI that is off in its file says so.
#[test]
fn errors_and_log_lines_are_sentences() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let d = &s.d;
    let dir = d
        .config
        .parent()
        .expect("the config's directory")
        .to_owned();

    // `default_ttl = -600`.
    let bad = dir.join("negative.toml");
    std::fs::write(&bad, "[bans]\ndefault_ttl = -600\n")?;
    let err = d
        .cli(&["config", "check", &bad.display().to_string()])
        .expect_err("a negative TTL must be refused");
    assert_eq!(
        err.trim(),
        format!(
            "error: {}: line 2, key `bans.default_ttl`: a duration cannot be negative (-600): \
             write a number of seconds, or text like \"10m\" or \"4h\"",
            bad.display()
        )
    );

    // Log lines of an engine ban, a rate of bans and a CLI ban: times, not `Some(…)`.
    let src = s.link.add_far_v4(74)?;
    get_banned(&s, src);
    d.cli(&["ban", "add", "192.0.2.80", "--ttl", "10m"])
        .map_err(anyhow::Error::msg)?;
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("banned by the engine"))
        .unwrap_or_else(|| panic!("no engine ban in the log: {log}"));
    assert!(
        utc_times(&line.replace("expires_at=", "expires_at= ")).len() == 1,
        "the end is an RFC 3339 time: {line}"
    );
    assert!(!log.contains("Some("), "debug text in the log: {log}");

    // A second daemon on the same state directory (its own socket and pins).
    let pid = d.json(&["status"])?["pid"].as_u64().expect("pid");
    let other = dir.join("other");
    std::fs::create_dir_all(&other)?;
    std::fs::set_permissions(
        &other,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )?;
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", s.link.near.path().display()))
        .arg(guard_tests::guard_bin()?)
        .args(["run", "--interface", &s.link.near_if, "--socket"])
        .arg(other.join("guard.sock"))
        .arg("--state-dir")
        .arg(&d.state_dir)
        .arg("--pin-dir")
        .arg(format!(
            "/sys/fs/bpf/{}",
            guard_tests::unique("guard-test-second")
        ))
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second daemon started: {err}");
    assert!(
        err.contains(&format!(
            "another guard (pid {pid}) is using state directory {}",
            d.state_dir.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("Os {") && !err.contains("WouldBlock"),
        "{err}"
    );
    assert!(
        d.json(&["status"]).is_ok(),
        "the first daemon was disturbed"
    );

    // `guard ai probe` with the AI off in its file: said, then probed (nothing listens here).
    let off = dir.join("ai-off.toml");
    std::fs::write(
        &off,
        "[ai]\nenabled = false\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n",
    )?;
    let err = d
        .cli(&["ai", "probe", "--config", &off.display().to_string()])
        .expect_err("nothing answers the probe");
    assert!(
        err.contains(&format!(
            "note: the AI is off in {} (ai.enabled = false)",
            off.display()
        )),
        "{err}"
    );
    Ok(())
}

/// Issue 20, item 10: started under `ip netns exec` (a mount namespace of its own, with a fresh
/// `/sys`), guard mounts bpffs where only it sees it. It warns at start that enforcement ends
/// with the process, says so again at stop instead of "XDP stays attached and bans stay
/// enforced", and that is what happens: a banned address gets through once it has stopped.
/// Started as usual (`nsenter --net`, the host's mount namespace), it warns of nothing.
#[test]
fn a_private_mount_namespace_is_warned_of() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    assert!(
        !s.d.log_text()
            .contains("enforcement ends with this process"),
        "a daemon in the host's mount namespace was warned: {}",
        s.d.log_text()
    );
    drop(s.d);
    let link = s.link;
    let dst = SocketAddr::new(link.near_v4, PORT);
    let d = Daemon::prepare(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let log_path = d.config.with_file_name("netns-exec.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &link.near.name])
        .arg(guard_tests::guard_bin()?)
        .arg("run")
        .arg("--config")
        .arg(&d.config)
        .args(["--interface", &link.near_if, "--socket"])
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(&d.state_dir)
        .arg("--pin-dir")
        .arg(&d.pin_dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = wait_until(Duration::from_secs(20), || d.cli(&["status"]).is_ok());
    if started.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("guard under ip netns exec did not start: {}", text());
    }
    let src = link.add_far_v4(75)?;
    d.cli(&["ban", "add", &src.to_string(), "--ttl", "1h"])
        .map_err(anyhow::Error::msg)?;
    assert!(
        !tcp_ok(&link.far, Some(src), dst, Duration::from_millis(300)),
        "the ban is not enforced while guard runs"
    );
    // SAFETY: kill(2) on the pid of the child this test started (ip execs guard in place).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait()?;
    let log = text();
    assert!(status.success(), "guard exited with {status}: {log}");
    assert!(
        log.contains(&format!(
            "xdp.pin_dir {} is on a bpffs that only guard's own mount namespace sees",
            d.pin_dir.display()
        )) && log.contains("enforcement ends with this process"),
        "no warning at start: {log}"
    );
    assert!(
        !log.contains("XDP stays attached and bans stay enforced"),
        "enforcement claimed at stop: {log}"
    );
    assert!(
        log.contains("exiting; XDP detaches and bans stop being enforced with this process"),
        "{log}"
    );
    // As said: with guard gone, the banned address gets through.
    assert!(
        wait_until(Duration::from_secs(5), || tcp_ok(
            &link.far,
            Some(src),
            dst,
            Duration::from_millis(300)
        ))
        .is_some(),
        "the ban still holds after guard stopped: {log}"
    );
    Ok(())
}

/// The reasons of `guard logs --json --limit all`.
fn logged_reasons(d: &Daemon) -> Vec<String> {
    let out = d
        .cli(&["logs", "--json", "--limit", "all"])
        .unwrap_or_else(|e| panic!("guard logs: {e}"));
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["reason"].as_str().map(str::to_owned))
        .collect()
}

/// Issue 20, item 2: shadow mode can be reviewed. `guard status` says the mode; a client the
/// engine would ban is never banned and keeps being answered, and its records say `would ban`
/// and `would be banned`, never `banned`; the table of tapped requests (which were served)
/// says `flagged`, not `yes`. In enforce mode status says so too.
#[test]
fn shadow_mode_says_would_ban() -> anyhow::Result<()> {
    require_root!();
    let s = setup("[engine]\nmode = \"shadow\"\n")?;
    let d = &s.d;
    let status = d.cli(&["status"]).map_err(anyhow::Error::msg)?;
    assert!(
        status
            .contains("  mode shadow: bans are decided and logged (\"would ban\"), never enforced"),
        "{status}"
    );
    assert_eq!(d.json(&["status"])?["mode"], "shadow");

    let src = s.link.add_far_v4(76)?;
    assert_eq!(
        get(&s, src, &PROBES),
        PROBES.len(),
        "shadow mode cut a client off"
    );
    assert_eq!(get(&s, src, &["/", "/"]), 2, "shadow mode cut a client off");
    assert!(banned(d, src).is_none(), "shadow mode banned {src}");
    wait_until(Duration::from_secs(10), || {
        logged_reasons(d)
            .iter()
            .any(|r| r == "would be banned (shadow mode)")
    })
    .unwrap_or_else(|| panic!("no would-be-banned record: {:?}", logged_reasons(d)));
    let reasons = logged_reasons(d);
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("would ban (shadow mode): ")),
        "{reasons:?}"
    );
    assert!(
        !reasons
            .iter()
            .any(|r| r == "banned" || r.starts_with("banned") || r.starts_with("shadow ban")),
        "{reasons:?}"
    );
    let table = d
        .cli(&["logs", "--blocked", "--limit", "all"])
        .map_err(anyhow::Error::msg)?;
    let header = table.lines().next().unwrap_or_default();
    assert!(header.ends_with("VERDICT"), "{table}");
    for row in table.lines().skip(1) {
        assert!(
            row.contains("flagged: "),
            "a tapped request not flagged: {row}"
        );
        assert!(!row.contains(" yes"), "{row}");
    }
    assert!(
        table.contains("flagged: would be banned (shadow mode)"),
        "{table}"
    );

    // Enforce mode (the default) says so.
    drop(s);
    let s = setup("")?;
    let status = s.d.cli(&["status"]).map_err(anyhow::Error::msg)?;
    assert!(
        status.contains("  mode enforce: bans are enforced in XDP"),
        "{status}"
    );
    Ok(())
}

/// The live mode, as `guard status --json` reports it.
fn live_mode(d: &Daemon) -> String {
    d.json(&["status"]).map_or_else(
        |e| panic!("guard status: {e:#}"),
        |s| s["mode"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Issue 20, items 2 and 4: `guard reload` and SIGHUP re-read the config and apply the engine's
/// mode without dropping a ban; an invalid file changes nothing and says why; `guard mode`
/// switches at run time until the file's own mode changes.
#[test]
fn reload_and_mode_change_enforcement_without_a_restart() -> anyhow::Result<()> {
    require_root!();
    let base = format!("[tap]\nhttp_ports = [{PORT}]\n");
    let s = setup("[engine]\nmode = \"shadow\"\n")?;
    let d = &s.d;
    let write = |mode: &str| {
        std::fs::write(&d.config, format!("{base}[engine]\nmode = \"{mode}\"\n"))
            .expect("writing the config");
    };
    // A manual ban made before any reload.
    let held = s.link.add_far_v4(80)?;
    d.cli(&["ban", "add", &held.to_string(), "--ttl", "permanent"])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(get(&s, held, &["/"]), 0, "the banned client was answered");

    // Shadow: a prober is answered and not banned.
    let p1 = s.link.add_far_v4(81)?;
    assert_eq!(
        get(&s, p1, &PROBES),
        PROBES.len(),
        "shadow mode cut a prober off"
    );
    assert!(banned(d, p1).is_none(), "shadow mode banned {p1}");

    // An invalid file: nothing changes, and the answer says why.
    std::fs::write(&d.config, format!("{base}[engine]\nmode = 5\n"))?;
    let err = d.cli(&["reload"]).expect_err("a bad file was reloaded");
    assert!(
        err.contains("not reloaded") && err.contains("old one stays in effect"),
        "{err}"
    );
    assert!(!err.contains("Some(") && !err.contains("Os {"), "{err}");
    assert_eq!(live_mode(d), "shadow");

    // Enforce through `guard reload`: the next prober is banned, the earlier ban still holds.
    write("enforce");
    let out = d.cli(&["reload"]).map_err(anyhow::Error::msg)?;
    assert!(
        out.contains("engine.mode"),
        "the reload did not name the key: {out}"
    );
    assert_eq!(live_mode(d), "enforce");
    let p2 = s.link.add_far_v4(82)?;
    let answered = get(&s, p2, &PROBES);
    let ban = wait_until(Duration::from_secs(10), || banned(d, p2).is_some());
    assert!(
        ban.is_some(),
        "enforce mode after the reload did not ban {p2} ({answered} answered): {}",
        d.log_text()
    );
    assert!(banned(d, held).is_some(), "the reload dropped a ban");
    assert_eq!(
        get(&s, held, &["/"]),
        0,
        "the banned client was answered after the reload"
    );

    // `guard mode shadow`: at once, and said by status.
    d.cli(&["mode", "shadow"]).map_err(anyhow::Error::msg)?;
    let status = d.json(&["status"])?;
    assert_eq!(status["mode"], "shadow", "{status}");
    assert_eq!(status["mode_set_by_command"], true, "{status}");
    let p3 = s.link.add_far_v4(83)?;
    assert_eq!(
        get(&s, p3, &PROBES),
        PROBES.len(),
        "guard mode shadow cut a prober off"
    );
    assert!(banned(d, p3).is_none(), "guard mode shadow banned {p3}");

    // SIGHUP does what `guard reload` does: the file now says shadow itself (the override is
    // dropped), then enforce.
    let pid = d.json(&["status"])?["pid"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no pid in status"))?;
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP {pid} failed");
    };
    write("shadow");
    hup();
    let dropped = wait_until(Duration::from_secs(10), || {
        d.json(&["status"])
            .is_ok_and(|s| s["mode_set_by_command"] != true && s["mode"] == "shadow")
    });
    assert!(dropped.is_some(), "SIGHUP did not reload: {}", d.log_text());
    write("enforce");
    hup();
    let enforced = wait_until(Duration::from_secs(10), || live_mode(d) == "enforce");
    assert!(
        enforced.is_some(),
        "SIGHUP did not apply enforce: {}",
        d.log_text()
    );
    assert!(banned(d, held).is_some(), "SIGHUP dropped a ban");
    assert!(banned(d, p2).is_some(), "SIGHUP dropped an engine ban");
    Ok(())
}
