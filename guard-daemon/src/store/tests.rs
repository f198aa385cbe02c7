//! Tests of the state database.
use super::*;
use crate::engine::Evidence;

/// Opens `dir` again in this process: sled's flusher thread may hold the file lock for a
/// moment after the previous handle is dropped (a new process, like a restarted daemon,
/// never meets this).
fn reopen(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopening {}: {e}", dir.display()),
        }
    }
}

fn ban(t: &str, exp: Option<u64>) -> BanRecord {
    BanRecord {
        target: t.parse().unwrap(),
        reason: "test".into(),
        origin: Origin::Cli,
        created_at: 1,
        expires_at: exp,
        evidence: None,
    }
}

#[test]
fn the_old_log_tree_is_dropped_once() {
    let s = Store::temporary().unwrap();
    assert_eq!(s.drop_old_logs().unwrap(), None);
    let old = s.db().open_tree(TREE_LOGS).unwrap();
    old.insert(b"k1", b"v").unwrap();
    old.insert(b"k2", b"v").unwrap();
    s.put_ban(&ban("10.0.0.1", None)).unwrap();
    assert_eq!(s.drop_old_logs().unwrap(), Some(2));
    assert_eq!(s.drop_old_logs().unwrap(), None);
    assert!(!s.db().tree_names().iter().any(|n| n.as_ref() == b"logs"));
    assert_eq!(s.ban_count().unwrap(), 1, "bans are untouched");
}

#[test]
fn offences_survive_reopen_and_old_ones_are_dropped() {
    let dir = std::env::temp_dir().join(format!("guard-offence-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (v4, v6, old): (IpAddr, IpAddr, IpAddr) = (
        "192.0.2.5".parse().unwrap(),
        "2001:db8::5".parse().unwrap(),
        "192.0.2.6".parse().unwrap(),
    );
    {
        let s = Store::open(&dir).unwrap();
        s.put_offence(
            v4,
            OffenceRecord {
                count: 1,
                last: 1_000,
            },
        )
        .unwrap();
        s.put_offence(
            v4,
            OffenceRecord {
                count: 2,
                last: 2_000,
            },
        )
        .unwrap();
        s.put_offence(
            v6,
            OffenceRecord {
                count: 3,
                last: 1_500,
            },
        )
        .unwrap();
        s.put_offence(old, OffenceRecord { count: 9, last: 10 })
            .unwrap();
        s.flush().unwrap();
    }
    let s = reopen(&dir);
    let mut got = s.offences(1_000).unwrap();
    got.sort_by_key(|(ip, _)| *ip);
    assert_eq!(
        got,
        vec![
            (
                v4,
                OffenceRecord {
                    count: 2,
                    last: 2_000
                }
            ),
            (
                v6,
                OffenceRecord {
                    count: 3,
                    last: 1_500
                }
            ),
        ]
    );
    assert_eq!(s.offences(0).unwrap().len(), 2, "the old one was removed");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bans_round_trip_and_survive_reopen() {
    let dir = std::env::temp_dir().join(format!("guard-store-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let s = Store::open(&dir).unwrap();
        assert!(s.put_ban(&ban("10.0.0.1", None)).unwrap().is_none());
        s.put_ban(&ban("10.0.0.0/8", Some(5))).unwrap();
        s.put_ban(&ban("2001:db8::/32", None)).unwrap();
        assert!(s.put_ban(&ban("10.0.0.1", Some(9))).unwrap().is_some());
        s.flush().unwrap();
    }
    let s = reopen(&dir);
    let all = s.bans().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        s.ban(&"10.0.0.1".parse().unwrap())
            .unwrap()
            .unwrap()
            .expires_at,
        Some(9)
    );
    assert!(
        s.remove_ban(&"10.0.0.0/8".parse().unwrap())
            .unwrap()
            .is_some()
    );
    assert!(
        s.remove_ban(&"10.0.0.0/8".parse().unwrap())
            .unwrap()
            .is_none()
    );
    assert_eq!(s.bans().unwrap().len(), 2);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records written by earlier versions (origin strings, evidence built with `json!` or of
/// any other shape) load, so a restart keeps every ban.
#[test]
fn records_of_earlier_versions_still_load() {
    let s = Store::temporary().unwrap();
    let old = [
        r#"{"target":"192.0.2.7","reason":"backdoor: 2 hits","origin":"engine","created_at":5,"expires_at":null,"evidence":{"rule":"backdoor","client":"192.0.2.7","user":null,"offence":3,"ttl_secs":57600,"shadow":false,"counts":{"requests_10s":2},"sample_paths":["/shell.php"],"hits":2,"leak_secs":60}}"#,
        r#"{"target":"198.51.100.0/24","reason":"packet rate over 1000/s","origin":"rate-limit","created_at":6,"expires_at":99,"evidence":{"rule":"xdp-rate","limit_pps":1000,"dropped":12}}"#,
        r#"{"target":"203.0.113.9","reason":"odd","origin":"some-later-origin","created_at":7,"expires_at":null,"evidence":"a note, not an object"}"#,
        r#"{"target":"2001:db8::1","reason":"manual","origin":"cli","created_at":8,"expires_at":null}"#,
    ];
    for json in old {
        let target: Net = serde_json::from_str::<serde_json::Value>(json).unwrap()["target"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        s.bans.insert(net_key(&target), json.as_bytes()).unwrap();
    }
    let bans = s.bans().unwrap();
    assert_eq!(bans.len(), 4);
    let by = |t: &str| {
        let t: Net = t.parse().unwrap();
        bans.iter().find(|b| b.target == t).unwrap().clone()
    };
    let engine = by("192.0.2.7");
    assert_eq!(engine.origin, Origin::Engine);
    let ev = engine.evidence.unwrap();
    assert_eq!((ev.rule.as_str(), ev.offence), ("backdoor", Some(3)));
    assert_eq!(ev.details.hits, Some(2));
    let rate = by("198.51.100.0/24");
    assert_eq!(rate.origin, Origin::RateLimit);
    assert_eq!(rate.evidence.unwrap().details.dropped, Some(12));
    let odd = by("203.0.113.9");
    assert_eq!(odd.origin, Origin::Unknown);
    assert_eq!(
        odd.evidence.unwrap().extra.get("value"),
        Some(&serde_json::json!("a note, not an object"))
    );
    let cli = by("2001:db8::1");
    assert_eq!((cli.origin, cli.evidence), (Origin::Cli, None));
    // Written back, a record reads the same.
    s.put_ban(&engine_record()).unwrap();
    assert_eq!(
        s.ban(&"192.0.2.8".parse().unwrap()).unwrap(),
        Some(engine_record())
    );
}

fn engine_record() -> BanRecord {
    BanRecord {
        target: "192.0.2.8".parse().unwrap(),
        reason: "probing".into(),
        origin: Origin::Engine,
        created_at: 1,
        expires_at: Some(2),
        evidence: Some(Evidence {
            rule: "probing".into(),
            offence: Some(1),
            sample_paths: vec!["/a".into()],
            ..Evidence::default()
        }),
    }
}

/// Origins are stored, sent and typed as the same lower-case names as before.
#[test]
fn origins_round_trip_by_their_old_names() {
    for (origin, name) in Origin::KNOWN
        .into_iter()
        .zip(["cli", "import", "rate-limit", "engine"])
    {
        assert_eq!(origin.to_string(), name);
        assert_eq!(name.parse::<Origin>(), Ok(origin));
        let json = serde_json::to_string(&origin).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Origin>(&json).unwrap(), origin);
    }
    let err = "ratelimit".parse::<Origin>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown origin `ratelimit`: expected one of cli, import, rate-limit, engine, crowdsec"
    );
    assert!(
        "unknown".parse::<Origin>().is_err(),
        "not an origin to filter by"
    );
}

#[test]
fn expiry() {
    assert!(ban("1.2.3.4", Some(10)).expired(10));
    assert!(!ban("1.2.3.4", Some(10)).expired(9));
    assert!(!ban("1.2.3.4", None).expired(u64::MAX));
}

#[test]
fn allow_round_trip() {
    let s = Store::temporary().unwrap();
    let e = AllowRecord {
        target: "192.0.2.0/24".parse().unwrap(),
        reason: "office".into(),
        created_at: 3,
    };
    s.put_allow(&e).unwrap();
    assert_eq!(s.allows().unwrap(), vec![e.clone()]);
    assert_eq!(s.remove_allow(&e.target).unwrap(), Some(e));
    assert!(s.allows().unwrap().is_empty());
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("guard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A record that cannot be decoded (damaged on disk, or written by a newer version) costs
/// only itself: every other ban loads, the bad one is counted, and replacing it uncounts it.
#[test]
fn an_undecodable_record_is_skipped_and_counted_not_fatal() {
    let dir = temp_dir("bad-record-test");
    let damaged: Net = "192.0.2.9".parse().unwrap();
    let newer: Net = "2001:db8::9".parse().unwrap();
    {
        let s = Store::open(&dir).unwrap();
        for t in ["192.0.2.1", "192.0.2.2", "198.51.100.0/24"] {
            s.put_ban(&ban(t, None)).unwrap();
        }
        s.put_ban(&ban("192.0.2.9", Some(7))).unwrap();
        s.flush().unwrap();
    }
    {
        // Damage one record behind the store's back, and add one of an unknown version.
        let db = sled::Config::new().path(&dir).open().unwrap();
        let tree = db.open_tree(TREE_BANS).unwrap();
        let key = net_key(&damaged);
        let mut value = tree.get(&key).unwrap().unwrap().to_vec();
        value.truncate(value.len() - 3);
        tree.insert(&key, value).unwrap();
        tree.insert(net_key(&newer), &[9u8, 1, 2, 3][..]).unwrap();
        db.flush().unwrap();
    }
    let s = reopen(&dir);
    let loaded: Vec<String> = s
        .bans()
        .unwrap()
        .iter()
        .map(|b| b.target.to_string())
        .collect();
    assert_eq!(loaded, ["192.0.2.1", "192.0.2.2", "198.51.100.0/24"]);
    assert_eq!(s.bad_records(), 2);
    // Met again by another scan: still two distinct records.
    assert_eq!(s.ban_iter().filter_map(Result::ok).count(), 3);
    assert_eq!(s.bad_records(), 2);
    assert!(matches!(s.ban(&damaged), Err(StoreError::BadBan { .. })));
    assert_eq!(s.ban_count().unwrap(), 5, "the count is of stored records");
    // A new ban of the damaged target replaces it; lifting the newer one removes it.
    assert_eq!(s.put_ban(&ban("192.0.2.9", None)).unwrap(), None);
    assert_eq!(s.bad_records(), 1);
    let lifted = s.remove_ban(&newer).unwrap().unwrap();
    assert_eq!((lifted.target, lifted.origin), (newer, Origin::Unknown));
    assert_eq!(s.bad_records(), 0);
    assert_eq!(s.bans().unwrap().len(), 4);
    assert_eq!(s.ban_count().unwrap(), 4);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bans are written compactly with a version byte, and stay readable after a reopen.
#[test]
fn new_records_carry_a_schema_version() {
    let s = Store::temporary().unwrap();
    let r = engine_record();
    s.put_ban(&r).unwrap();
    let raw = s.bans.get(net_key(&r.target)).unwrap().unwrap();
    assert_eq!(raw[0], codec::BAN_V1);
    assert_eq!(s.ban(&r.target).unwrap(), Some(r));
}

#[test]
fn the_count_is_kept_through_writes_and_batches() {
    let s = Store::temporary().unwrap();
    assert_eq!(s.ban_count().unwrap(), 0);
    s.put_ban(&ban("10.0.0.1", None)).unwrap();
    s.put_ban(&ban("10.0.0.1", Some(3))).unwrap();
    assert_eq!(s.ban_count().unwrap(), 1);
    let olds = s
        .put_bans(&[
            ban("10.0.0.1", Some(5)),
            ban("10.0.0.2", None),
            ban("10.0.0.3", Some(4)),
            ban("10.0.0.3", Some(6)),
        ])
        .unwrap();
    // The replaced deadlines: 10.0.0.1 had 3; 10.0.0.3 given twice replaces its own first line.
    assert_eq!(olds, [Some(3), None, None, Some(4)]);
    assert_eq!(s.ban_count().unwrap(), 3);
    assert_eq!(
        s.ban(&"10.0.0.3".parse().unwrap())
            .unwrap()
            .unwrap()
            .expires_at,
        Some(6)
    );
    s.remove_ban(&"10.0.0.2".parse().unwrap()).unwrap();
    s.remove_ban(&"10.0.0.2".parse().unwrap()).unwrap();
    assert_eq!(s.ban_count().unwrap(), 2);
    // A fresh handle on the same tree counts by a scan, and agrees.
    let fresh = Store::from_db(s.db().clone()).unwrap();
    assert_eq!(fresh.ban_count().unwrap(), 2);
}

/// The count of one kind, by scope and origin name.
fn kind(kinds: &[u64; codec::BAN_KINDS], scope: &str, origin: Origin) -> u64 {
    let s = codec::BAN_SCOPES.iter().position(|x| *x == scope).unwrap();
    let o = codec::BAN_KIND_ORIGINS
        .iter()
        .position(|x| *x == origin)
        .unwrap();
    kinds[s * codec::BAN_KIND_ORIGINS.len() + o]
}

#[test]
fn bans_are_counted_by_scope_and_origin_through_every_write() {
    let s = Store::temporary().unwrap();
    let with = |t: &str, origin| BanRecord {
        origin,
        ..ban(t, None)
    };
    s.put_ban(&with("10.0.0.1", Origin::Cli)).unwrap();
    s.put_ban(&with("10.1.0.0/16", Origin::Engine)).unwrap();
    s.put_ban(&with("2001:db8::1", Origin::Engine)).unwrap();
    // A replacement moves the ban from its old origin to its new one.
    s.put_ban(&with("10.0.0.1", Origin::RateLimit)).unwrap();
    s.put_bans(&[
        with("10.0.0.2", Origin::Import),
        with("10.0.0.3", Origin::Import),
        with("10.2.0.0/24", Origin::Import),
        with("10.1.0.0/16", Origin::Import),
    ])
    .unwrap();
    s.remove_ban(&"10.0.0.3".parse().unwrap()).unwrap();
    s.remove_ban(&"10.0.0.3".parse().unwrap()).unwrap();
    let k = s.ban_kinds().unwrap();
    assert_eq!(kind(&k, "address", Origin::Cli), 0);
    assert_eq!(kind(&k, "address", Origin::RateLimit), 1);
    assert_eq!(kind(&k, "address", Origin::Engine), 1);
    assert_eq!(kind(&k, "address", Origin::Import), 1);
    assert_eq!(kind(&k, "range", Origin::Engine), 0);
    assert_eq!(kind(&k, "range", Origin::Import), 2);
    assert_eq!(k.iter().sum::<u64>(), 5);
    // A fresh handle learns the same by a scan (the start's rebuild walks the tree too).
    let fresh = Store::from_db(s.db().clone()).unwrap();
    assert_eq!(fresh.ban_kinds().unwrap(), k);
    let again = Store::from_db(s.db().clone()).unwrap();
    assert_eq!(again.ban_ends().count(), 5);
    assert!(
        again
            .counts
            .bans_known
            .load(std::sync::atomic::Ordering::Acquire)
    );
    assert_eq!(again.ban_kinds().unwrap(), k);
}

#[test]
fn iteration_is_in_key_order_and_a_range_reads_only_its_keys() {
    let s = Store::temporary().unwrap();
    for t in [
        "2001:db8::1",
        "10.1.0.0/16",
        "10.1.2.3",
        "10.1.255.255",
        "10.2.0.1",
        "10.0.0.0/8",
        "9.255.255.255",
        "2001:db8::/32",
    ] {
        s.put_ban(&ban(t, None)).unwrap();
    }
    let all: Vec<String> = s
        .ban_iter()
        .map(|b| b.unwrap().target.to_string())
        .collect();
    assert_eq!(
        all,
        [
            "9.255.255.255",
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3",
            "10.1.255.255",
            "10.2.0.1",
            "2001:db8::/32",
            "2001:db8::1"
        ]
    );
    let within = |r: &str| -> Vec<String> {
        s.bans_within(&r.parse().unwrap())
            .map(|b| b.unwrap().target.to_string())
            .collect()
    };
    assert_eq!(
        within("10.1.0.0/16"),
        ["10.1.0.0/16", "10.1.2.3", "10.1.255.255"]
    );
    assert_eq!(within("10.1.2.3"), ["10.1.2.3"]);
    assert_eq!(
        within("0.0.0.0/0"),
        [
            "9.255.255.255",
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3",
            "10.1.255.255",
            "10.2.0.1"
        ]
    );
    assert_eq!(within("::/0"), ["2001:db8::/32", "2001:db8::1"]);
    assert!(within("192.168.0.0/16").is_empty());
    // Taking two decodes two, and learns no count from a partial walk.
    assert_eq!(s.ban_iter().take(2).count(), 2);
}

/// Not a test: `cargo test --release -p guard-daemon --lib store::tests::import_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement"]
fn import_speed() {
    let dir = temp_dir("import-speed");
    let s = Store::open(&dir).unwrap();
    let n = 200_000u32;
    let mut records: Vec<BanRecord> = (0..n)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761);
            BanRecord {
                reason: "imported".into(),
                origin: Origin::Import,
                ..ban(&std::net::Ipv4Addr::from(x).to_string(), Some(5))
            }
        })
        .collect();
    records.sort_by_key(|r| r.target);
    let t = std::time::Instant::now();
    for chunk in records.chunks(17_000) {
        s.put_bans(chunk).unwrap();
        s.flush().unwrap();
    }
    println!("put_bans: {:?} for {n}", t.elapsed());
    let t = std::time::Instant::now();
    for chunk in records.chunks(17_000) {
        for r in chunk {
            s.put_ban(r).unwrap();
        }
        s.flush().unwrap();
    }
    println!("put_ban over existing: {:?} for {n}", t.elapsed());
    drop(s);
    let cache = std::env::var("CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CACHE_MB);
    let s = Store::open_with_cache(&temp_dir("import-speed2"), cache).unwrap();
    let t = std::time::Instant::now();
    for chunk in records.chunks(17_000) {
        for r in chunk {
            s.put_ban(r).unwrap();
        }
        s.flush().unwrap();
    }
    println!("put_ban fresh: {:?} for {n}", t.elapsed());
    let t = std::time::Instant::now();
    assert_eq!(s.ban_iter().count(), n as usize);
    println!("iterate: {:?}", t.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(temp_dir("import-speed2"));
}

fn rss_mb() -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Not a test: where a million bans' memory goes, per copy.
/// `cargo test --release -p guard-daemon --lib store::tests::memory_per_copy -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement"]
fn memory_per_copy() {
    let n = 1_000_000u32;
    let nets: Vec<Net> = (0..n)
        .map(|i| {
            Net::host(std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761) | 1 << 24).into())
        })
        .collect();
    let base = rss_mb();
    let deadlines: std::collections::BTreeSet<(u64, Net)> = nets.iter().map(|n| (5, *n)).collect();
    let with_deadlines = rss_mb();
    println!(
        "BTreeSet<(u64, Net)> deadlines: {:.1} MB",
        with_deadlines - base
    );
    let counts: std::collections::HashMap<u32, u32> = nets
        .iter()
        .enumerate()
        .map(|(i, _)| (i as u32, 1))
        .collect();
    println!(
        "HashMap<u32, u32> (dense tier counts, one per /24): {:.1} MB",
        rss_mb() - with_deadlines
    );
    drop((deadlines, counts));
    crate::memory::give_back();
    let dir = temp_dir("memory-per-copy");
    let s = Store::open(&dir).unwrap();
    let mut records: Vec<BanRecord> = nets
        .iter()
        .map(|n| BanRecord {
            reason: "imported".into(),
            origin: Origin::Import,
            ..ban(&n.to_string(), Some(5))
        })
        .collect();
    records.sort_by_key(|r| r.target);
    let before = rss_mb();
    for chunk in records.chunks(17_000) {
        s.put_bans(chunk).unwrap();
        s.flush().unwrap();
    }
    drop(records);
    crate::memory::give_back();
    println!(
        "sled with 1M bans written (16 MiB cache): {:.1} MB",
        rss_mb() - before
    );
    drop(s);
    let before = rss_mb();
    let s = Store::open(&dir).unwrap();
    assert_eq!(s.ban_iter().count(), n as usize);
    crate::memory::give_back();
    println!(
        "sled reopened and read through: {:.1} MB",
        rss_mb() - before
    );
    // As a start does: the deadlines and a list of live bans built while reading.
    let before = rss_mb();
    let mut deadlines = std::collections::BTreeSet::new();
    let mut live = Vec::new();
    for b in s.ban_iter() {
        let b = b.unwrap();
        deadlines.insert((b.expires_at.unwrap_or(0), b.target));
        live.push((b.target, 5u64));
    }
    println!(
        "read with deadlines and the live list: {:.1} MB",
        rss_mb() - before
    );
    drop(live);
    crate::memory::give_back();
    println!(
        "  after the list is dropped and memory given back: {:.1} MB",
        rss_mb() - before
    );
    drop(deadlines);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
