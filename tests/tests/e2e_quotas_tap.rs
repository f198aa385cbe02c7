//! End to end for plan quotas in tap mode: a real `guard run` watching a veth pair with the
//! tap (`[tap] http_ports`), the test application on the near side, clients on the far side,
//! each a source address of its own under the default plan. The tap cannot answer 429: a
//! request over its quota is served, logged with the quota's reason and counted; with
//! `quotas.tap_overrun_ban` its address is banned into XDP once it overruns often enough.
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guard_tests::http::start_app;
use guard_tests::ping::ping_from;
use guard_tests::{Daemon, Link, require_root, tcp_ok, wait_until};
use serde_json::Value;

const PORT: u16 = 8483;
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
/// Requests per minute the default plan allows on `/api/items/{id}`.
const PER_MINUTE: usize = 3;

/// guard tapping `PORT` with the engine's rate rules out of reach (only the quotas act), and
/// `ban` as `quotas.tap_overrun_ban` (none: log only).
fn setup(ban: Option<&str>) -> anyhow::Result<(Link, Daemon, SocketAddr)> {
    let link = Link::new()?;
    start_app(&link.near, PORT)?;
    let ban = ban.map_or_else(String::new, |b| format!("tap_overrun_ban = {b}\n"));
    let config = format!(
        "[tap]\nhttp_ports = [{PORT}]\n\n\
         [engine.black]\nrequests_10s = 1000000\nflood_requests_10s = 1000000\n\n\
         [engine.grey]\ngrace_requests_24h = 1000000\n\n\
         [quotas]\ndefault_plan = \"anonymous\"\n{ban}\
         [[quotas.plans.anonymous.rules]]\npath = \"/api/items/{{id}}\"\nper_minute = {PER_MINUTE}\n"
    );
    let d = Daemon::start(&link.near, &link.near_if, &config)?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    Ok((link, d, dst))
}

/// Waits until at least 20 s are left in the current UTC minute, so that a test's requests
/// fall in one minute window.
fn same_minute() {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 60;
    if s > 40 {
        std::thread::sleep(Duration::from_secs(61 - s));
    }
}

/// Sends `n` GETs of `/api/items/7` from `src`, one per connection, `pause` apart; the status
/// of each answer (`None`: no connection or no answer, the rest not sent).
fn requests(link: &Link, src: IpAddr, dst: SocketAddr, n: usize) -> Vec<Option<u16>> {
    let ns = link.far.path();
    std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let mut out = Vec::new();
        for _ in 0..n {
            let status =
                guard_tests::connect_from(src, dst, Duration::from_secs(1)).and_then(|mut s| {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    let req = format!(
                        "GET /api/items/7 HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: {UA}\r\n\
                         Connection: close\r\n\r\n"
                    );
                    s.write_all(req.as_bytes()).ok()?;
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    let text = String::from_utf8_lossy(&buf);
                    text.split(' ').nth(1)?.parse().ok()
                });
            let done = status.is_none();
            out.push(status);
            if done {
                break;
            }
            // Each request finished (and paired) before the next one.
            std::thread::sleep(Duration::from_millis(150));
        }
        out
    })
    .join()
    .expect("the client thread panicked")
}

/// Every record of `guard logs --json` from `client`.
fn logs_of(d: &Daemon, client: IpAddr) -> Vec<Value> {
    d.cli(&["logs", "--json", "--limit", "all"])
        .unwrap_or_else(|e| panic!("guard logs: {e}"))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .filter(|r| r["client"] == client.to_string())
        .collect()
}

/// The records whose reason names the quota overrun.
fn overruns(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("quota: minute (3 requests) spent, plan anonymous"))
        })
        .collect()
}

/// The ban of `addr` in `guard ban ls`, if any.
fn banned(d: &Daemon, addr: IpAddr) -> Option<Value> {
    let list = d
        .json(&["ban", "ls"])
        .unwrap_or_else(|e| panic!("guard ban ls: {e:#}"));
    list.as_array()
        .unwrap_or_else(|| panic!("ban ls is not a list: {list}"))
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .cloned()
}

fn tap_stats(d: &Daemon) -> Value {
    let s = d
        .json(&["stats"])
        .unwrap_or_else(|e| panic!("guard stats: {e:#}"));
    s["quotas"]["tap"].clone()
}

/// Without `tap_overrun_ban`: every request is served, the ones over the quota are logged with
/// its reason (not blocked) and counted, and nobody is banned.
#[test]
fn tap_overruns_are_logged_and_counted_without_a_ban() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup(None)?;
    let client = link.far_v4;
    same_minute();
    let got = requests(&link, client, dst, PER_MINUTE + 3);
    assert_eq!(
        got,
        vec![Some(200); PER_MINUTE + 3],
        "the tap refused something: {}",
        d.log_text()
    );
    let _ = wait_until(Duration::from_secs(5), || {
        overruns(&logs_of(&d, client)).len() >= 3
    });
    let records = logs_of(&d, client);
    let over = overruns(&records);
    assert_eq!(over.len(), 3, "overruns in the log: {records:#?}");
    for r in &over {
        assert_eq!(r["blocked"], false, "an overrun logged as blocked: {r}");
        assert_eq!(r["status"], 200, "{r}");
        assert!(
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("served: the tap cannot refuse")),
            "{r}"
        );
    }
    assert_eq!(records.len(), PER_MINUTE + 3, "{records:#?}");
    let stats = tap_stats(&d);
    assert_eq!(stats["overruns"], 3, "{stats}");
    assert_eq!(stats["bans_ordered"], 0, "{stats}");
    assert!(stats["checked"].as_u64() >= Some(6), "{stats}");
    assert!(banned(&d, client).is_none(), "banned without the option");
    assert!(
        tcp_ok(&link.far, Some(client), dst, Duration::from_millis(500)),
        "the client was cut off"
    );
    Ok(())
}

/// With `tap_overrun_ban = { after = 2 }`: the second overrun bans the address into XDP (origin
/// engine, the quota policy named); its TCP and pings are dropped, while a client under its
/// quota is left alone.
#[test]
fn repeated_tap_overruns_ban_the_address() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup(Some("{ after = 2, within = \"10m\", ttl = \"1h\" }"))?;
    let client = link.far_v4;
    let other = link.add_far_v4(41)?;
    let near = link.near_v4;
    assert!(ping_from(&link.far, client, near), "no echo before the ban");
    same_minute();
    let got = requests(&link, client, dst, PER_MINUTE + 8);
    assert_eq!(
        &got[..PER_MINUTE + 2],
        &vec![Some(200); PER_MINUTE + 2][..],
        "the requests up to the second overrun are served: {}",
        d.log_text()
    );
    let _ = wait_until(Duration::from_secs(5), || banned(&d, client).is_some());
    let ban = banned(&d, client).unwrap_or_else(|| panic!("not banned: {}", d.log_text()));
    assert_eq!(ban["origin"], "engine", "{ban}");
    let reason = ban["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("quota_overrun") && reason.contains("plan anonymous"),
        "{ban}"
    );
    assert!(
        got.len() < PER_MINUTE + 8 || got.contains(&None),
        "the client was never cut off: {got:?}"
    );
    // Banned means dropped by XDP.
    assert!(
        !tcp_ok(&link.far, Some(client), dst, Duration::from_millis(300)),
        "the banned client still connects"
    );
    assert!(
        !ping_from(&link.far, client, near),
        "the banned client still gets echoes"
    );
    assert!(
        tcp_ok(&link.far, Some(other), dst, Duration::from_millis(500)),
        "a client under its quota was cut off"
    );
    assert!(
        ping_from(&link.far, other, near),
        "a client under its quota lost its echoes"
    );
    let records = logs_of(&d, client);
    let over = overruns(&records);
    assert!(over.len() >= 2, "overruns in the log: {records:#?}");
    assert!(
        over.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("banned: quota_overrun"))),
        "no record names the ban: {records:#?}"
    );
    let stats = tap_stats(&d);
    assert!(stats["overruns"].as_u64() >= Some(2), "{stats}");
    assert_eq!(stats["bans_ordered"], 1, "{stats}");
    Ok(())
}
