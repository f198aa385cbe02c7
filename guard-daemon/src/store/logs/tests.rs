use std::time::Duration;

use super::*;

fn store() -> LogStore {
    LogStore::temporary().unwrap()
}

fn rec(secs: u64, client: &str, path: &str, status: Option<u16>, blocked: bool) -> LogRecord {
    LogRecord {
        time: Duration::from_secs(secs),
        client: client.parse().unwrap(),
        trust: crate::tap::Trust::Verified,
        user: None,
        method: "GET".into(),
        path: path.into(),
        query: None,
        status,
        latency_ms: Some(1.5),
        bytes_in: 100,
        bytes_out: 200,
        user_agent: Some("ua".into()),
        host: Some("h".into()),
        blocked,
        reason: blocked.then(|| "banned".into()),
        truncated: false,
        mode: Mode::Tap,
        request_id: None,
    }
}

fn sample(s: &LogStore) {
    s.insert(&rec(100, "192.0.2.1", "/api/a", Some(200), false))
        .unwrap();
    s.insert(&rec(100, "192.0.2.1", "/api/b", Some(404), false))
        .unwrap();
    s.insert(&rec(200, "192.0.2.2", "/admin", Some(503), true))
        .unwrap();
    s.insert(&rec(300, "2001:db8::1", "/api/c", Some(500), false))
        .unwrap();
    s.insert(&rec(400, "192.0.2.2", "/", None, false)).unwrap();
}

fn paths(records: &[LogRecord]) -> Vec<&str> {
    records.iter().map(|r| r.path.as_str()).collect()
}

#[test]
fn keys_sort_by_time_then_sequence() {
    assert!(key(Duration::from_nanos(1), u32::MAX) < key(Duration::from_nanos(2), 0));
    assert!(key(Duration::from_secs(5), 1) < key(Duration::from_secs(5), 2));
    assert_eq!(
        &key(Duration::from_nanos(0x0102), 3)[..],
        &[0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3]
    );
}

#[test]
fn query_filters() {
    let s = store();
    sample(&s);
    assert_eq!(s.len(), 5);
    let all = s.query(&LogQuery::default()).unwrap();
    assert_eq!(paths(&all), ["/api/a", "/api/b", "/admin", "/api/c", "/"]);
    let q = |q: LogQuery| {
        paths(&s.query(&q).unwrap())
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let secs = Duration::from_secs;
    assert_eq!(
        q(LogQuery {
            since: Some(secs(200)),
            until: Some(secs(400)),
            ..LogQuery::default()
        }),
        ["/admin", "/api/c"]
    );
    assert_eq!(
        q(LogQuery {
            ip: Some("192.0.2.2".parse().unwrap()),
            ..LogQuery::default()
        }),
        ["/admin", "/"]
    );
    assert_eq!(
        q(LogQuery {
            path_prefix: Some("/api".into()),
            ..LogQuery::default()
        }),
        ["/api/a", "/api/b", "/api/c"]
    );
    assert_eq!(
        q(LogQuery {
            status: Some("5xx".parse().unwrap()),
            ..LogQuery::default()
        }),
        ["/admin", "/api/c"]
    );
    assert_eq!(
        q(LogQuery {
            status: Some("404".parse().unwrap()),
            ..LogQuery::default()
        }),
        ["/api/b"]
    );
    assert_eq!(
        q(LogQuery {
            blocked: Some(true),
            ..LogQuery::default()
        }),
        ["/admin"]
    );
    let inverted = LogQuery {
        since: Some(secs(300)),
        until: Some(secs(100)),
        ..LogQuery::default()
    };
    assert!(q(inverted).is_empty());
    assert_eq!(
        q(LogQuery {
            limit: Some(2),
            ..LogQuery::default()
        }),
        ["/api/c", "/"]
    );
    assert_eq!(
        q(LogQuery {
            path_prefix: Some("/api".into()),
            limit: Some(1),
            ..LogQuery::default()
        }),
        ["/api/c"]
    );
}

#[test]
fn status_filter_parsing() {
    assert_eq!("5xx".parse::<StatusFilter>(), Ok(StatusFilter::Class(5)));
    assert_eq!("4XX".parse::<StatusFilter>(), Ok(StatusFilter::Class(4)));
    assert_eq!("404".parse::<StatusFilter>(), Ok(StatusFilter::Exact(404)));
    assert!("6xx".parse::<StatusFilter>().is_err());
    assert!("42".parse::<StatusFilter>().is_err());
    assert!("abc".parse::<StatusFilter>().is_err());
}

#[test]
fn prune_removes_only_older_records() {
    let s = store();
    sample(&s);
    assert_eq!(s.prune_older_than(Duration::from_mins(5)).unwrap(), 3);
    assert_eq!(
        paths(&s.query(&LogQuery::default()).unwrap()),
        ["/api/c", "/"]
    );
    assert_eq!(s.prune_older_than(Duration::from_mins(5)).unwrap(), 0);
}

#[test]
fn writer_batches_and_flushes_on_shutdown() {
    let s = store();
    let w = LogWriter::spawn(s.clone(), 10_000, 64, Limits::default()).unwrap();
    for i in 0..1000 {
        assert!(w.try_log(rec(i, "192.0.2.1", "/w", Some(200), false)));
    }
    w.shutdown();
    assert_eq!(s.len(), 1000);
    let recs = s.query(&LogQuery::default()).unwrap();
    assert!(recs.windows(2).all(|p| p[0].time <= p[1].time));
}

#[test]
fn writer_drops_and_counts_when_full() {
    let s = store();
    let w = LogWriter::spawn(s.clone(), 4, 2, Limits::default()).unwrap();
    let mut accepted = 0u64;
    for i in 0..10_000 {
        accepted += u64::from(w.try_log(rec(i, "192.0.2.1", "/d", Some(200), false)));
    }
    let dropped = w.counters().dropped.load(Ordering::Relaxed);
    assert_eq!(accepted + dropped, 10_000);
    assert!(dropped > 0, "a queue of 4 cannot take 10k records at once");
    let counters = Arc::clone(&w.counters);
    w.shutdown();
    assert_eq!(counters.written.load(Ordering::Relaxed), accepted);
    assert_eq!(s.len() as u64, accepted);
}

#[test]
fn json_line_has_exactly_the_documented_fields() {
    let mut r = rec(1_764_000_000, "192.0.2.1", "/p", Some(403), true);
    r.time += Duration::from_millis(250);
    r.query = Some("a=1".into());
    r.user = Some("u1".into());
    let v: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = [
        "ts",
        "client",
        "trust",
        "user",
        "method",
        "path",
        "query",
        "status",
        "latency_ms",
        "bytes_in",
        "bytes_out",
        "user_agent",
        "blocked",
        "reason",
        "truncated",
        "mode",
        "request_id",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(v["ts"], "2025-11-24T16:00:00.250Z");
    assert_eq!(v["client"], "192.0.2.1");
    assert_eq!(v["status"], 403);
    assert_eq!(v["blocked"], true);
    assert_eq!(v["reason"], "banned");
    assert_eq!(v["mode"], "tap");
    assert_eq!(v["request_id"], serde_json::Value::Null);
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(Duration::from_hours(264_384)),
        "2000-02-29T00:00:00.000Z"
    );
    assert_eq!(
        rfc3339(Duration::from_secs(4_102_444_799)),
        "2099-12-31T23:59:59.000Z"
    );
}

#[test]
fn table_has_a_header_and_one_row_per_record() {
    let s = store();
    sample(&s);
    let t = format_table(&s.query(&LogQuery::default()).unwrap());
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[0].starts_with("TIME"));
    assert!(lines[3].contains("/admin") && lines[3].contains("yes: banned"));
    assert!(lines[5].contains("2001:db8::1") || lines[4].contains("2001:db8::1"));
}

#[test]
fn records_from_tap_events() {
    use crate::tap::{RequestEvent, RequestHeaders};
    let e = RequestEvent {
        conn_id: 1,
        ts: Duration::from_secs(10),
        client: "192.0.2.9".parse().unwrap(),
        trust: crate::tap::Trust::Unverified,
        peer: "192.0.2.9:1234".parse().unwrap(),
        server: "192.0.2.1:80".parse().unwrap(),
        user: None,
        method: "POST".into(),
        path: "/login".into(),
        query: None,
        http_minor: 1,
        headers: RequestHeaders {
            user_agent: Some("x".into()),
            ..RequestHeaders::default()
        },
        all_headers: crate::tap::http::HeaderList::default(),
        body: Vec::new(),
        body_len: 0,
        status: Some(401),
        latency: Some(Duration::from_micros(2500)),
        bytes_in: 10,
        bytes_out: 20,
        response_content_type: None,
    };
    let r = LogRecord::from_event(&e, false, None);
    assert_eq!(r.trust, crate::tap::Trust::Unverified);
    let line: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
    assert_eq!(line["trust"], "unverified");
    let table = format_table(std::slice::from_ref(&r));
    assert!(
        table.contains("192.0.2.9 (unverified)"),
        "the table marks the record: {table}"
    );
    assert_eq!(
        (r.status, r.latency_ms, r.user_agent.as_deref()),
        (Some(401), Some(2.5), Some("x"))
    );
}

#[test]
fn records_written_before_the_trust_field_read_as_verified() {
    let mut v = serde_json::to_value(rec(1, "192.0.2.1", "/", Some(200), false)).unwrap();
    v.as_object_mut().unwrap().remove("trust");
    let r: LogRecord = serde_json::from_value(v).unwrap();
    assert_eq!(r.trust, crate::tap::Trust::Verified);
}

#[test]
fn cuts_are_marked_on_a_character_boundary() {
    let mut s = "/ab".to_owned();
    assert!(!cap::cut(&mut s, 3));
    assert_eq!(s, "/ab");
    let mut s = "/abcdefgh".to_owned();
    assert!(cap::cut(&mut s, 8));
    assert_eq!(s, "/abcd…");
    assert!(s.len() <= 8);
    // "é" is two bytes: a cut inside it keeps the whole character out.
    let mut s = "/ééééé".to_owned();
    assert!(cap::cut(&mut s, 8));
    assert_eq!(s, "/éé…");
    // A bound smaller than the mark keeps only the mark.
    let mut s = "/abc".to_owned();
    assert!(cap::cut(&mut s, 2));
    assert_eq!(s, "…");
}

#[test]
fn long_fields_are_cut_and_the_record_marked() {
    let limits = Limits {
        max_path_bytes: 64,
        max_query_bytes: 32,
        ..Limits::default()
    };
    let mut r = rec(
        1,
        "192.0.2.1",
        &format!("/{}", "a".repeat(60_000)),
        None,
        false,
    );
    r.query = Some("q=".repeat(100));
    r.user_agent = Some("u".repeat(5000));
    assert!(r.cut(&limits));
    assert!(r.truncated);
    assert!(
        r.path.len() <= 64 && r.path.ends_with(CUT_MARK),
        "{}",
        r.path
    );
    let q = r.query.as_deref().unwrap();
    assert!(q.len() <= 32 && q.ends_with(CUT_MARK));
    assert!(r.user_agent.as_deref().unwrap().len() <= cap::MAX_HEADER_BYTES);
    let line: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
    assert_eq!(line["truncated"], true);
    let table = format_table(std::slice::from_ref(&r));
    assert!(
        table.contains("aaa…?q=q="),
        "the table shows the cut: {table}"
    );
    // A short record is left alone.
    let mut short = rec(1, "192.0.2.1", "/ok", None, false);
    assert!(!short.cut(&limits));
    assert!(!short.truncated);
    // Records written before the field existed read as not cut.
    let mut v = serde_json::to_value(&short).unwrap();
    v.as_object_mut().unwrap().remove("truncated");
    assert!(!serde_json::from_value::<LogRecord>(v).unwrap().truncated);
}

#[test]
fn pruning_removes_the_oldest_first_down_to_the_target() {
    let s = store();
    for i in 0..100 {
        s.insert(&rec(
            i,
            "192.0.2.1",
            &format!("/{i:04}/{}", "x".repeat(900)),
            None,
            false,
        ))
        .unwrap();
    }
    let full = s.live_bytes();
    assert_eq!(
        s.recount().unwrap(),
        full,
        "the running estimate is the recount"
    );
    let per = full / 100;
    let p = s.prune_to(full / 2).unwrap();
    assert!(s.live_bytes() <= full / 2);
    // Records differ by a byte or two (their times): half of them, give or take one.
    assert!(
        (50..=51).contains(&p.records),
        "{p:?} ({per} bytes a record)"
    );
    assert_eq!(s.pruned_records(), p.records);
    assert_eq!(s.len() as u64, 100 - p.records);
    let left = s.query(&LogQuery::default()).unwrap();
    assert_eq!(
        left[0].time,
        Duration::from_secs(p.records),
        "the oldest went first"
    );
    assert_eq!(s.recount().unwrap(), s.live_bytes());
    // Under the target: nothing to do.
    assert_eq!(s.prune_to(full).unwrap(), Pruned::default());
    // Retention pruning keeps the estimate too.
    assert_eq!(
        s.prune_older_than(Duration::from_mins(1)).unwrap() as u64,
        60 - p.records
    );
    assert_eq!(s.expired_records(), 60 - p.records);
    assert_eq!(s.recount().unwrap(), s.live_bytes());
}

/// A flood of 60 KB paths into a log capped at 4 MiB: paths cut to the default 4096 bytes, the
/// writer prunes the oldest as it goes, the newest are kept, and the log takes records after.
/// Removes a test's database directory when the test ends, failed or not (declared before the
/// store and its writer, so it is dropped after them).
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_flood_of_long_paths_keeps_the_live_records_under_the_cap() {
    let dir = std::env::temp_dir().join(format!("guard-logcap-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = RemoveDir(dir.clone());
    let limits = Limits {
        max_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let s = LogStore::open_dir(&dir).unwrap();
    let w = LogWriter::spawn(s.clone(), 4096, 256, limits).unwrap();
    let path = format!("/{}", "p".repeat(60 * 1024));
    let mut max_disk = 0;
    let mut max_live = 0;
    for round in 0..60u64 {
        for i in 0..500 {
            let r = rec(round * 1000 + i, "192.0.2.1", &path, Some(404), false);
            while !w.try_log(r.clone()) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        max_disk = max_disk.max(s.size_on_disk().unwrap());
        max_live = max_live.max(s.live_bytes());
    }
    let counters = Arc::clone(&w.counters);
    w.shutdown();
    let written = counters.written.load(Ordering::Relaxed);
    let truncated = counters.truncated.load(Ordering::Relaxed);
    let failed = counters.failed_batches.load(Ordering::Relaxed);

    s.flush().unwrap();
    let disk = s.size_on_disk().unwrap();
    println!(
        "failed {}, written {written}, truncated {truncated}, stored {}, pruned {}, live {} (max {max_live}), \
         on disk {disk} (max {max_disk}), cap {}, rebuilds {}",
        failed,
        s.len(),
        s.pruned_records(),
        s.live_bytes(),
        limits.max_bytes,
        s.rebuilds()
    );
    assert_eq!(written, 30_000);
    assert!(s.pruned_records() > 0);
    assert!(max_live <= limits.live_cap() + limits.live_cap() / 4);
    // sled reclaims segments lazily: past the cap the writer rebuilds the log.
    assert!(s.rebuilds() > 0);
    assert!(
        disk <= limits.max_bytes,
        "on disk {disk} > cap {}",
        limits.max_bytes
    );
    // Sampled at any moment (mid-batch, mid-rebuild), the files stay within the peak: the writer
    // flushes before it measures, and rebuilds while both generations still fit. Before, on a
    // loaded machine, one sample in a run reached 8 MiB, sled's buffers written after a check.
    assert!(
        max_disk <= limits.peak_bytes(),
        "files sampled at {max_disk} bytes, cap {}",
        limits.max_bytes
    );
    let newest = s
        .query(&LogQuery {
            limit: Some(1),
            ..LogQuery::default()
        })
        .unwrap();
    assert!(truncated >= 30_000);
    assert!(
        newest[0].time >= Duration::from_secs(50_000),
        "the newest are kept"
    );
    // Once the flood is over the log takes records again.
    let w = LogWriter::spawn(s.clone(), 16, 16, limits).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(w.try_log(rec(99_999, "192.0.2.1", &path, Some(404), false)));
    w.shutdown();
    let newest = s
        .query(&LogQuery {
            limit: Some(1),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(
        newest[0].time,
        Duration::from_secs(99_999),
        "written after the flood"
    );
    println!("after the flood: on disk {}", s.size_on_disk().unwrap());
}

#[test]
fn a_rebuild_keeps_the_newest_in_the_next_generation_and_deletes_the_last() {
    let dir = std::env::temp_dir().join(format!("guard-logrebuild-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A generation an interrupted rebuild left behind is removed at open.
    std::fs::create_dir_all(dir.join("3")).unwrap();
    {
        let s = LogStore::open_dir(&dir).unwrap();
        assert!(!dir.join("0").exists() && dir.join("3").exists());
        for i in 0..100 {
            s.insert(&rec(i, "192.0.2.1", &format!("/{i:04}"), None, false))
                .unwrap();
        }
        let per = s.live_bytes() / 100;
        let kept = s.rebuild(per * 10).unwrap();
        assert!((9..=10).contains(&kept), "{kept}");
        assert!(dir.join("4").exists() && !dir.join("3").exists());
        assert_eq!(s.len() as u64, kept);
        assert_eq!(s.pruned_records(), 100 - kept);
        assert_eq!(s.recount().unwrap(), s.live_bytes());
        let left = s.query(&LogQuery::default()).unwrap();
        assert_eq!(left.last().unwrap().path, "/0099", "the newest are kept");
        // The log goes on in the new generation.
        s.insert(&rec(100, "192.0.2.1", "/0100", None, false))
            .unwrap();
        s.flush().unwrap();
    }
    let s = reopen(&dir);
    let left = s.query(&LogQuery::default()).unwrap();
    assert_eq!(left.last().unwrap().path, "/0100");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens `dir` again in this process: sled's flusher thread may hold the file lock for a moment
/// after the previous handle is dropped.
fn reopen(dir: &std::path::Path) -> LogStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match LogStore::open_dir(dir) {
            Ok(s) => return s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopening {}: {e}", dir.display()),
        }
    }
}

/// Pruning by age refuses a wall clock far ahead of the log (a start with the clock a year
/// ahead), keeps refusing while it stays ahead, and prunes once it has run steadily for a day.
#[test]
fn retention_does_not_prune_on_a_clock_jump() {
    use guard_core::time::ClockReading;
    const DAY: u64 = 86_400;
    let s = store();
    // Ten days of records ending at t0; 30 days' retention.
    let t0 = 1_795_000_000;
    for d in 0..10 {
        s.insert(&rec(t0 - (9 - d) * DAY, "192.0.2.1", "/", Some(200), false))
            .unwrap();
    }
    let retention = Duration::from_secs(30 * DAY);
    let at = |secs: u64, mono_secs: u64| ClockReading::new(secs * 1000, mono_secs * 1_000_000_000);
    // Started a year later by the wall clock: refused, nothing deleted (the first prune used to
    // delete the whole log).
    let mut r = Retention::new(&s);
    let year = 365 * DAY;
    assert_eq!(r.prune(&s, retention, at(t0 + year, 5)).unwrap(), None);
    assert_eq!(s.len(), 10);
    assert_eq!(
        r.prune(&s, retention, at(t0 + year + 3600, 3605)).unwrap(),
        None
    );
    assert_eq!(s.len(), 10);
    // A day on the new clock: it is accepted and the log is pruned by it.
    assert_eq!(
        r.prune(&s, retention, at(t0 + year + DAY, DAY + 5))
            .unwrap(),
        Some(10)
    );
    assert!(s.is_empty());

    // Steady clocks prune as before: records past 30 days go, the others stay.
    let s = store();
    for d in [40, 31, 29, 1] {
        s.insert(&rec(t0 - d * DAY, "192.0.2.1", "/", None, false))
            .unwrap();
    }
    let mut r = Retention::new(&s);
    assert_eq!(r.prune(&s, retention, at(t0, 100)).unwrap(), Some(2));
    assert_eq!(r.prune(&s, retention, at(t0 + 600, 700)).unwrap(), Some(0));
    // Running, the clock steps forward 60 days: refused.
    assert_eq!(
        r.prune(&s, retention, at(t0 + 60 * DAY, 1300)).unwrap(),
        None
    );
    assert_eq!(s.len(), 2);
    // An empty log trusts the first reading.
    let empty = store();
    assert_eq!(empty.newest_time(), None);
    assert_eq!(
        Retention::new(&empty)
            .prune(&empty, retention, at(t0, 1))
            .unwrap(),
        Some(0)
    );
}

#[test]
fn a_rebuild_is_due_while_both_generations_still_fit() {
    let limits = Limits {
        max_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let (cap, peak, seg) = (limits.max_bytes, limits.peak_bytes(), 256 * 1024);
    assert_eq!(peak, 6 * 1024 * 1024);
    // The last rebuild made a generation of 2 MiB: the old one may grow to the peak less that
    // and less the next batch's margin.
    let fresh = 2 * 1024 * 1024;
    assert!(!limits.should_rebuild(peak - fresh - seg, seg, fresh));
    assert!(limits.should_rebuild(peak - fresh - seg + 1, seg, fresh));
    // A small new generation: the old one still stays within the cap.
    assert!(!limits.should_rebuild(cap - seg, seg, 1));
    assert!(limits.should_rebuild(cap - seg + 1, seg, 1));
    // Before the first rebuild the new generation is reckoned at FRESH_FACTOR times the records.
    let first = limits.prune_target() * cap::FRESH_FACTOR;
    assert!(!limits.should_rebuild(peak - first - seg, seg, 0));
    assert!(limits.should_rebuild(peak - first - seg + 1, seg, 0));
    // A rebuild keeps fewer records when the last new generation took more than half the cap.
    assert_eq!(limits.rebuild_keep(0, 0), limits.prune_target());
    assert_eq!(limits.rebuild_keep(700_000, cap / 2), limits.prune_target());
    assert_eq!(limits.rebuild_keep(700_000, cap), 350_000);
}

#[test]
fn the_cap_check_counts_what_sled_still_buffers() {
    let dir = std::env::temp_dir().join(format!("guard-logmeasure-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = RemoveDir(dir.clone());
    let limits = Limits {
        max_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let s = LogStore::open_dir(&dir).unwrap();
    let path = format!("/{}", "p".repeat(4000));
    for round in 0..60u64 {
        let records: Vec<_> = (0..30)
            .map(|i| rec(round * 100 + i, "192.0.2.1", &path, Some(404), false))
            .collect();
        s.insert_batch(&records).unwrap();
        s.enforce_cap(&limits).unwrap();
        // What the check measured is all there is: a flush now writes nothing more.
        let measured = s.acct.files.load(Ordering::Relaxed);
        s.flush().unwrap();
        assert_eq!(s.size_on_disk().unwrap(), measured, "round {round}");
        assert!(measured <= limits.max_bytes, "round {round}: {measured}");
    }
    assert!(s.rebuilds() > 0);
}

#[test]
fn inline_records_keep_their_mode_and_request_id_and_old_records_read_as_tapped() {
    let s = store();
    let mut r = rec(500, "192.0.2.7", "/x", Some(403), true);
    r.mode = Mode::Inline;
    r.request_id = Some("00ab12cd34ef5678".into());
    s.insert(&r).unwrap();
    let back = s.query(&LogQuery::default()).unwrap();
    assert_eq!(back, vec![r.clone()]);
    let v: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
    assert_eq!(v["mode"], "inline");
    assert_eq!(v["request_id"], "00ab12cd34ef5678");
    assert!(format_table(&back).contains("GET (inline)"));
    // A record stored before the fields existed.
    let mut old = serde_json::to_value(rec(1, "192.0.2.8", "/", None, false)).unwrap();
    old.as_object_mut().unwrap().remove("mode");
    let old: LogRecord = serde_json::from_value(old).unwrap();
    assert_eq!((old.mode, old.request_id), (Mode::Tap, None));
}

/// `guard logs`'s page: the newest `limit` matches, the count of the older ones, and `--ip`
/// as a network.
#[test]
fn a_page_counts_the_older_matches() {
    let s = store();
    sample(&s);
    let page = |q: LogQuery| {
        let p = s.query_page(&q).unwrap();
        (
            paths(&p.records)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            p.more,
            p.more_at_least,
        )
    };
    // By time only (keys counted).
    assert_eq!(
        page(LogQuery {
            limit: Some(2),
            ..LogQuery::default()
        }),
        (vec!["/api/c".into(), "/".into()], 3, false)
    );
    assert_eq!(
        page(LogQuery {
            since: Some(Duration::from_secs(150)),
            limit: Some(1),
            ..LogQuery::default()
        }),
        (vec!["/".into()], 2, false)
    );
    // Filtered (records decoded): only matches count.
    assert_eq!(
        page(LogQuery {
            path_prefix: Some("/api".into()),
            limit: Some(1),
            ..LogQuery::default()
        }),
        (vec!["/api/c".into()], 2, false)
    );
    // All of it fits: nothing more.
    assert_eq!(page(LogQuery::default()).1, 0);
    assert_eq!(
        page(LogQuery {
            limit: Some(5),
            ..LogQuery::default()
        })
        .1,
        0
    );
    // --ip as a CIDR, IPv4 and IPv6; an address is its own network.
    let net = |t: &str| Some(t.parse::<crate::net::Net>().unwrap());
    assert_eq!(
        page(LogQuery {
            ip: net("192.0.2.0/30"),
            limit: Some(3),
            ..LogQuery::default()
        }),
        (vec!["/api/b".into(), "/admin".into(), "/".into()], 1, false)
    );
    assert_eq!(
        page(LogQuery {
            ip: net("2001:db8::/32"),
            ..LogQuery::default()
        })
        .0,
        ["/api/c"]
    );
    assert_eq!(
        page(LogQuery {
            ip: net("192.0.2.2"),
            ..LogQuery::default()
        })
        .0,
        ["/admin", "/"]
    );
    // The same records as `query`.
    let q = LogQuery {
        status: Some("5xx".parse().unwrap()),
        limit: Some(1),
        ..LogQuery::default()
    };
    assert_eq!(s.query_page(&q).unwrap().records, s.query(&q).unwrap());
    // Past the scan bound the count is a lower bound, and says so.
    let q = LogQuery {
        path_prefix: Some("/".into()),
        limit: Some(1),
        ..LogQuery::default()
    };
    let p = s.page_scanning(&q, 2).unwrap();
    assert_eq!((p.more, p.more_at_least), (2, true));
}
