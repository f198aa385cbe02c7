//! End to end for the ban owner: many control requests at once, of every kind that touches
//! bans, the allowlist, the XDP maps and the tap, are all answered, and leave sled (`ban ls`,
//! `allow ls`, also after a restart) and the pinned XDP maps holding exactly the same set; a
//! ban the maps cannot hold is never stored, an engine ban they refuse is ordered again, what
//! the CLI was told is saved survives `kill -9`, and a clock far past the heartbeat at start
//! does not delete timed bans.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, Map};
use guard_common::{BanEntry, MAP_BANS_V4, MAP_CIDR_V4};
use guard_tests::http::start_server;
use guard_tests::{Daemon, Link, maps, require_root};

const PORT: u16 = 8080;

/// The `addr` of every entry of `guard <what> ls --json` (read from sled by the owner).
fn stored(d: &Daemon, what: &str) -> anyhow::Result<BTreeSet<String>> {
    let list = d.json(&[what, "ls"])?;
    let list = list
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{what} ls: not a list: {list}"))?;
    list.iter()
        .map(|e| {
            e.get("addr")
                .or_else(|| e.get("target"))
                .and_then(|a| a.as_str())
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("{what} ls entry without addr: {e}"))
        })
        .collect()
}

/// The networks guard protects by itself: in the XDP allowlist, not in `allow ls`.
fn protected(d: &Daemon) -> anyhow::Result<BTreeSet<String>> {
    let status = d.json(&["status"])?;
    Ok(status["protected"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|p| p["net"].as_str())
                .map(|n| {
                    n.strip_suffix("/32")
                        .or_else(|| n.strip_suffix("/128"))
                        .unwrap_or(n)
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Sled and the maps hold the same bans and the same allowlist (plus the protected networks,
/// which only the maps hold).
fn assert_same(d: &Daemon, when: &str) -> anyhow::Result<BTreeSet<String>> {
    let bans = stored(d, "ban")?;
    assert_eq!(
        bans,
        maps::bans(&d.pin_dir)?,
        "{when}: bans in sled and in the maps differ"
    );
    let mut allows = stored(d, "allow")?;
    allows.extend(protected(d)?);
    let in_maps: BTreeSet<String> = maps::allows(&d.pin_dir)?
        .into_iter()
        .map(|n| {
            n.strip_suffix("/32")
                .or_else(|| n.strip_suffix("/128"))
                .map_or(n.clone(), str::to_owned)
        })
        .collect();
    let allows: BTreeSet<String> = allows
        .into_iter()
        .map(|n| {
            n.strip_suffix("/32")
                .or_else(|| n.strip_suffix("/128"))
                .map_or(n.clone(), str::to_owned)
        })
        .collect();
    assert_eq!(
        allows, in_maps,
        "{when}: the allowlist in sled and in the maps differ"
    );
    Ok(bans)
}

fn cmd(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

/// Add on even steps, remove on odd steps of odd items: what stays is the even items, and
/// every third one for IPv6. `other` fills the odd steps of the items that stay.
fn add_rm(
    i: u32,
    add: &[&str],
    rm: &[&str],
    keep: impl Fn(u32) -> bool,
    other: &[&str],
) -> Vec<String> {
    if i.is_multiple_of(2) {
        cmd(add)
    } else if keep(i / 2) {
        cmd(other)
    } else {
        cmd(rm)
    }
}

/// Eight clients of 25 requests each. What stays: 198.51.100.k and 10.k.0.0/16 for even k,
/// `2001:db8:k::/48` for k divisible by 3 (k = 0..=12), 192.0.2.100-119 (an import), and the
/// allowlist entries 203.0.113.k for even k.
fn scripts(import: &str) -> Vec<Vec<Vec<String>>> {
    let even = |k: u32| k.is_multiple_of(2);
    vec![
        (0..25).map(|_| cmd(&["stats", "--json"])).collect(),
        (0..25u32)
            .map(|i| {
                if even(i) {
                    cmd(&["tap", "ports", "8080"])
                } else {
                    cmd(&["tap", "ports"])
                }
            })
            .collect(),
        (0..25u32)
            .map(|i| {
                let a = format!("198.51.100.{}", i / 2);
                add_rm(
                    i,
                    &["ban", "add", &a, "--reason", "parallel"],
                    &["ban", "rm", &a],
                    even,
                    &["status"],
                )
            })
            .collect(),
        (0..25u32)
            .map(|i| {
                let n = format!("10.{}.0.0/16", i / 2);
                add_rm(
                    i,
                    &["ban", "add", &n, "--ttl", "1h"],
                    &["ban", "rm", &n],
                    even,
                    &["logs", "--limit", "5"],
                )
            })
            .collect(),
        (0..25u32)
            .map(|i| {
                let n = format!("2001:db8:{:x}::/48", i / 2);
                add_rm(
                    i,
                    &["ban", "add", &n],
                    &["ban", "rm", &n],
                    |k| k.is_multiple_of(3),
                    &["stats"],
                )
            })
            .collect(),
        (0..25u32)
            .map(|i| {
                let a = format!("203.0.113.{}", i / 2);
                add_rm(
                    i,
                    &["allow", "add", &a, "--reason", "parallel"],
                    &["allow", "rm", &a],
                    even,
                    &["allow", "ls"],
                )
            })
            .collect(),
        (0..25u32)
            .map(|i| match i {
                12 => cmd(&["ban", "import", import]),
                i if even(i) => cmd(&["logs", "--limit", "5"]),
                _ => cmd(&["ban", "ls", "--json"]),
            })
            .collect(),
        (0..25u32)
            .map(|i| {
                if even(i) {
                    cmd(&["status"])
                } else {
                    cmd(&["tap", "ports", "8080"])
                }
            })
            .collect(),
    ]
}

/// 200 control requests from eight parallel CLIs — stats, tap ports, status, logs, bans added
/// and lifted (exact, CIDR, IPv6), allowlist entries added and removed, an import — are all
/// answered within 30 s, and afterwards sled and the maps hold exactly the same bans and
/// allowlist, before and after a restart. Some bans and entries stay, so that "the same" is
/// not "both empty".
#[test]
fn concurrent_mixed_requests_leave_sled_and_maps_identical() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let mut d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[engine]\nmode = \"shadow\"\n\n[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let mut import = std::env::temp_dir();
    import.push(format!("guard-owner-import-{}.txt", std::process::id()));
    std::fs::write(
        &import,
        (100..120).fold(String::new(), |t, i| t + &format!("192.0.2.{i}\n")),
    )?;
    let import_path = import.to_string_lossy().into_owned();
    let clients = scripts(&import_path);
    assert_eq!(clients.iter().map(Vec::len).sum::<usize>(), 200);
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .map(|cycle| {
                let d = &d;
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for args in cycle {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        if let Err(e) = d.cli(&args) {
                            failed.push(format!("{args:?}: {e}"));
                        }
                    }
                    failed
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    let took = started.elapsed();
    let _ = std::fs::remove_file(&import);
    println!("200 mixed control requests from 8 parallel clients answered in {took:?}");
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(took < Duration::from_secs(30), "200 requests took {took:?}");

    let mut want: BTreeSet<String> = BTreeSet::new();
    for i in 0..=12u32 {
        if i.is_multiple_of(2) {
            want.insert(format!("198.51.100.{i}"));
            want.insert(format!("10.{i}.0.0/16"));
        }
        if i.is_multiple_of(3) {
            let net: IpAddr = format!("2001:db8:{i:x}::").parse()?;
            want.insert(format!("{net}/48"));
        }
    }
    for i in 0..20 {
        want.insert(format!("192.0.2.{}", 100 + i));
    }
    let bans = assert_same(&d, "after the parallel requests")?;
    assert_eq!(
        bans, want,
        "the bans left are not the ones the requests leave"
    );
    let allows = stored(&d, "allow")?;
    let want_allows: BTreeSet<String> = (0..=12u32)
        .filter(|i| i.is_multiple_of(2))
        .map(|i| format!("203.0.113.{i}"))
        .collect();
    assert_eq!(allows, want_allows);

    // What the CLI was told is saved is on disk: the same after a restart, maps included.
    d.stop()?;
    d.spawn()?;
    let after = assert_same(&d, "after a restart")?;
    assert_eq!(after, want, "bans changed across the restart");
    assert_eq!(stored(&d, "allow")?, want_allows);
    Ok(())
}

/// A ban the XDP maps cannot hold is refused when it is asked for and never stored: with the
/// IPv4 CIDR map filled to its capacity (written straight into the pinned map, as the daemon's
/// own imports would take minutes), one more CIDR ban fails with an error, `ban ls` and
/// `status` do not count it, and the daemon restarts cleanly (a ban stored but not enforceable
/// would fail every later start's rebuild).
#[test]
fn a_ban_the_full_cidr_map_cannot_hold_is_refused_and_never_stored() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let mut d = Daemon::start(&link.near, &link.near_if, "")?;
    let cap = guard_common::CIDR_CAPACITY;
    // /28 blocks of 100.64.0.0/10, none near the test's own addresses.
    let key = |i: u32| {
        Key::new(
            28,
            u32::from_ne_bytes((0x6440_0000u32 + i * 16).to_be_bytes()),
        )
    };
    let mut cidr: LpmTrie<_, u32, BanEntry> =
        LpmTrie::try_from(Map::LpmTrie(maps::open(&d.pin_dir, MAP_CIDR_V4)?))?;
    for i in 0..cap {
        cidr.insert(&key(i), BanEntry::default(), 0)?;
    }
    let one_more = format!("{}/28", std::net::Ipv4Addr::from(0x6440_0000u32 + cap * 16));
    let err = d
        .cli(&["ban", "add", &one_more])
        .expect_err("a CIDR ban beyond the map's capacity must be refused");
    println!("ban add beyond capacity: {}", err.trim());
    assert!(
        err.contains("CIDR"),
        "the error does not name the full map: {err}"
    );
    let addr = one_more.trim_end_matches("/28");
    assert_eq!(
        d.json(&["ban", "ls", "--ip", addr])?,
        serde_json::json!([]),
        "the refused ban was stored"
    );
    assert_eq!(
        d.json(&["status"])?["bans"],
        0,
        "the refused ban was counted"
    );
    // With room again, the same ban is taken, stored, and survives a restart.
    for i in 0..cap {
        cidr.remove(&key(i))?;
    }
    d.cli(&["ban", "add", &one_more])
        .map_err(anyhow::Error::msg)?;
    d.stop()?;
    d.spawn()?;
    assert_eq!(stored(&d, "ban")?, BTreeSet::from([one_more.clone()]));
    assert_eq!(maps::bans(&d.pin_dir)?, BTreeSet::from([one_more]));
    Ok(())
}

/// The heartbeat guard keeps in its state database (`meta` tree): the wall clock it last saw.
fn heartbeat(db: &sled::Db) -> anyhow::Result<u64> {
    let v = db
        .open_tree("meta")?
        .get("last_wall_ms")?
        .ok_or_else(|| anyhow::anyhow!("no heartbeat in the state database"))?;
    Ok(u64::from_be_bytes(v.as_ref().try_into()?))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// guard is stopped for a few seconds, but its wall clock now reads three days past the last
/// time it ran (as after a clock step while it was down): a timed ban whose end has passed by
/// the wall clock is not deleted (the jump is logged and not acted on; the ban keeps what it
/// had left at the heartbeat), and it stays enforced. Without the jump, a ban whose end passed
/// while guard was stopped is removed at start, from sled and the maps.
#[test]
fn a_start_far_past_the_heartbeat_keeps_timed_bans() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let mut d = Daemon::start(&link.near, &link.near_if, "")?;
    d.cli(&["ban", "add", "198.51.100.20", "--ttl", "3s"])
        .map_err(anyhow::Error::msg)?;
    d.stop()?;
    {
        let db = sled::open(&d.state_dir)?;
        let hb = heartbeat(&db)?;
        assert!(
            now_ms().abs_diff(hb) < 30_000,
            "the heartbeat is not recent: {hb}"
        );
        let three_days = 3 * 86_400_000;
        db.open_tree("meta")?
            .insert("last_wall_ms", &(hb - three_days).to_be_bytes())?;
        db.flush()?;
    }
    // The ban's three seconds are over by the wall clock.
    std::thread::sleep(Duration::from_secs(4));
    d.spawn()?;
    assert!(
        d.log_text().contains("since guard last ran"),
        "the jump was not logged: {}",
        d.log_text()
    );
    let bans = assert_same(&d, "after a start three days past the heartbeat")?;
    assert!(
        bans.contains("198.51.100.20"),
        "the timed ban was deleted: {bans:?}"
    );
    let shown = d.json(&["ban", "ls", "--ip", "198.51.100.20"])?;
    let expires = shown[0]["expires_at"].as_u64().unwrap_or(0);
    assert!(
        expires > now_ms() + 2 * 86_400_000,
        "the ban does not keep what it had left at the heartbeat: expires at {expires}"
    );

    // An ordinary restart: a ban whose end passed while guard was stopped is gone.
    d.cli(&["ban", "add", "198.51.100.21", "--ttl", "2s"])
        .map_err(anyhow::Error::msg)?;
    d.stop()?;
    std::thread::sleep(Duration::from_secs(3));
    d.spawn()?;
    let bans = assert_same(&d, "after an ordinary restart")?;
    assert!(
        !bans.contains("198.51.100.21"),
        "an ended ban came back: {bans:?}"
    );
    assert!(bans.contains("198.51.100.20"));
    Ok(())
}

/// The engine's ban counters in `guard stats --json`.
fn order_stat(d: &Daemon, name: &str) -> u64 {
    d.json(&["stats"])
        .ok()
        .and_then(|s| s["engine"][name].as_u64())
        .unwrap_or(0)
}

/// One GET from `src` to `dst`; whether it was answered.
fn get(link: &Link, src: IpAddr, dst: std::net::SocketAddr, path: &str) -> bool {
    let ns = link.far.path();
    let req = format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: curl/8.0\r\n\r\n");
    std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let Some(s) = guard_tests::connect_from(src, dst, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut c = guard_tests::http::Client { stream: s };
        c.send(req.as_bytes()).and_then(|()| c.responses(1)).is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// An engine ban the maps refuse (the exact IPv4 map is full) is not lost and not half-made:
/// it is not stored, the engine does not count the client as banned, and the client's next
/// request orders it again; once there is room, that retry bans it in XDP and sled, and the
/// client is cut off. `guard stats` counts the failed and the retried orders.
#[test]
fn an_engine_ban_the_maps_refuse_is_ordered_again_on_the_next_request() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let dst = std::net::SocketAddr::new(link.near_v4, PORT);
    let attacker = link.far_v4;
    let cap = guard_common::BANS_CAPACITY;
    // Filled through its pin with addresses of 100.64.0.0/10, none of them the attacker.
    let mut exact: HashMap<_, u32, BanEntry> =
        HashMap::try_from(Map::HashMap(maps::open(&d.pin_dir, MAP_BANS_V4)?))?;
    let key = |i: u32| u32::from_ne_bytes((0x6440_0000u32 + i).to_be_bytes());
    let started = Instant::now();
    for i in 0..cap {
        // The map is not preallocated: the kernel allocates each element without waiting for
        // reclaim, so on a host whose memory is mostly page cache an insert can fail with
        // ENOMEM until kswapd has freed some. That is the host, not guard: wait and try again.
        let mut tries = 0;
        while let Err(e) = exact.insert(key(i), BanEntry::default(), 0) {
            tries += 1;
            let enomem = matches!(&e, aya::maps::MapError::SyscallError(s)
                if s.io_error.raw_os_error() == Some(12));
            if !enomem || tries > 200 {
                return Err(e.into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!("exact IPv4 map filled ({cap}) in {:?}", started.elapsed());

    // Sensitive-file probes: the engine orders a ban, the full map refuses it.
    for path in [
        "/.env",
        "/.git/config",
        "/backup.sql",
        "/.aws/credentials",
        "/.htpasswd",
    ] {
        let _ = get(&link, attacker, dst, path);
    }
    let failed = guard_tests::wait_until(Duration::from_secs(10), || {
        order_stat(&d, "bans_failed") >= 1
    });
    assert!(failed.is_some(), "no ban order failed: {}", d.log_text());
    assert_eq!(
        d.json(&["ban", "ls", "--ip", &attacker.to_string()])?,
        serde_json::json!([]),
        "a ban the maps refused was stored"
    );
    // Its next request is answered (no ban was made) and orders the ban again, which fails
    // again while the map is full.
    let failed_before = order_stat(&d, "bans_failed");
    assert!(
        get(&link, attacker, dst, "/"),
        "the attacker is cut off although no ban was made"
    );
    let failed_again = guard_tests::wait_until(Duration::from_secs(10), || {
        order_stat(&d, "bans_failed") > failed_before
    });
    assert!(
        failed_again.is_some(),
        "the next request did not order the ban again"
    );

    // Room again: the client's next request orders the ban again, and this time it holds.
    for i in 0..cap {
        exact.remove(&key(i))?;
    }
    let retried_before = order_stat(&d, "bans_retried");
    let _ = get(&link, attacker, dst, "/");
    let banned = guard_tests::wait_until(Duration::from_secs(10), || {
        d.json(&["ban", "ls", "--ip", &attacker.to_string()])
            .is_ok_and(|l| l.as_array().is_some_and(|a| !a.is_empty()))
    });
    assert!(
        banned.is_some(),
        "the retried order did not ban: {}",
        d.log_text()
    );
    let stats = d.json(&["stats"])?;
    assert!(
        order_stat(&d, "bans_retried") > retried_before,
        "the ban was not made by a retry (retried before: {retried_before}): {}\n{}",
        stats["engine"],
        d.log_text()
    );
    assert!(order_stat(&d, "bans_confirmed") >= 1);
    assert!(
        !get(&link, attacker, dst, "/"),
        "the banned attacker still gets answers"
    );
    assert!(maps::bans(&d.pin_dir)?.contains(&attacker.to_string()));
    Ok(())
}
