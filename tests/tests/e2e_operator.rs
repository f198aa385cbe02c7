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
#[expect(
    clippy::too_many_lines,
    clippy::many_single_char_names,
    reason = "one scenario: the page, the networks, then the follow, on one daemon"
)]
fn logs_pages_take_networks_and_follow_in_columns() -> anyhow::Result<()> {
    require_root!();
    let s = setup("")?;
    let d = &s.d;
    let v6_dst = SocketAddr::new(s.link.near_v6, PORT);
    serve_on(&s.link.near, v6_dst)?;
    let a = s.link.add_far_v4(72)?;
    let b = s.link.add_far_v4_in(77, 5)?;
    let c = s.link.far_v6;
    assert_eq!(get(&s, a, &["/a"; 104]), 104);
    assert_eq!(get(&s, b, &["/b"; 3]), 3);
    assert_eq!(get_at(&s, c, v6_dst, &["/c"; 2]), 2);
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
    assert_eq!(logged_paths(d, &["--ip", &c.to_string()]), ["/c"; 2]);
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

    // --follow: the first page, then new rows in the header's columns.
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
    assert_eq!(get(&s, b, &["/f", &long]), 2);
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
