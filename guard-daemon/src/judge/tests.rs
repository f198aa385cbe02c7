//! The judge's unit tests: counters, headers the tap keeps, evasion signs, unverified flows,
//! containment of panics, the sweep cadence, and ban orders that are dropped or fail.
use super::*;
use crate::tap::{RequestEvent, RequestHeaders};

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0";

fn event(client: &str, headers: &[(&str, &str)]) -> RequestEvent {
    let mut all = crate::tap::http::HeaderList::default();
    all.push("User-Agent", UA.as_bytes());
    for (name, value) in headers {
        all.push(name, value.as_bytes());
    }
    RequestEvent {
        conn_id: 1,
        ts: Duration::from_secs(1_700_000_000),
        client: client.parse().expect("address"),
        trust: Trust::Verified,
        peer: "192.0.2.7:40000".parse().expect("address"),
        server: "192.0.2.1:80".parse().expect("address"),
        user: None,
        method: "GET".into(),
        path: "/account".into(),
        query: None,
        http_minor: 1,
        headers: RequestHeaders {
            host: Some("example.test".into()),
            user_agent: Some(UA.into()),
            ..RequestHeaders::default()
        },
        all_headers: all,
        body: Vec::new(),
        body_len: 0,
        status: Some(200),
        latency: None,
        bytes_in: 100,
        bytes_out: 100,
        response_content_type: None,
    }
}

/// A judge with the default validator and engine, no allowlist, no AI, room for 16 orders.
fn default_judge() -> (Judge, BanQueue) {
    Judge::new(
        &ValidatorConfig::default(),
        &EngineConfig::default(),
        Vec::new(),
        16,
        None,
    )
    .expect("judge")
}

#[test]
fn a_snapshot_copies_every_counter() {
    let stats = JudgeStats::default();
    stats.inspected.store(7, Ordering::Relaxed);
    stats.ai_unsure.store(3, Ordering::Relaxed);
    let copy = stats.snapshot();
    stats.inspected.store(8, Ordering::Relaxed);
    assert_eq!(copy.inspected.load(Ordering::Relaxed), 7);
    assert_eq!(copy.ai_unsure.load(Ordering::Relaxed), 3);
}

/// Attacks in headers the tap does not otherwise keep (Cookie, Authorization) reach the
/// validator.
#[test]
fn attacks_in_any_header_are_judged() {
    let (judge, _queue) = default_judge();
    let (blocked, _) = judge.judge(&event(
        "192.0.2.7",
        &[
            ("Host", "example.test"),
            (
                "Cookie",
                "session=abc; id=1' UNION SELECT password FROM users--",
            ),
        ],
    ));
    assert!(blocked, "SQL injection in a cookie was not blocked");
    let (blocked, reason) = judge.judge(&event(
        "192.0.2.8",
        &[
            ("Host", "example.test"),
            ("Cookie", "session=abc; theme=dark"),
            ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ],
    ));
    assert!(
        !blocked,
        "an ordinary cookie and token were blocked: {reason:?}"
    );
    assert_eq!(judge.stats.validator_block.load(Ordering::Relaxed), 1);
}

/// Evasion signs the tap put on a harmless-looking request make it a protocol finding: a
/// block, and strikes up to a ban on a verified flow; nothing on an unverified one.
#[test]
fn evasion_signs_are_protocol_findings() {
    let (judge, queue) = default_judge();
    let signs = [
        Evasion {
            too_many_headers: true,
            ..Evasion::default()
        },
        Evasion {
            overlap_conflict: true,
            ..Evasion::default()
        },
        Evasion {
            fragments: 2,
            ..Evasion::default()
        },
    ];
    for (i, sign) in signs.iter().enumerate() {
        let mut ev = event(&format!("192.0.2.{}", 20 + i), &[("Host", "example.test")]);
        let (blocked, reason) = judge.judge(&ev);
        assert!(!blocked, "the request itself is harmless: {reason:?}");
        ev.headers.evasion = *sign;
        let (blocked, reason) = judge.judge(&ev);
        assert!(blocked, "{sign:?}: {reason:?}");
        assert!(reason.unwrap_or_default().contains("protocol"));
        ev.client = "192.0.2.99".parse().expect("address");
        ev.trust = Trust::Unverified;
        let (blocked, reason) = judge.judge(&ev);
        assert!(!blocked && reason.unwrap_or_default().starts_with("not judged"));
    }
    assert_eq!(judge.stats.evasion.load(Ordering::Relaxed), 6);
    for _ in 0..50 {
        let mut ev = event("192.0.2.30", &[("Host", "example.test")]);
        ev.headers.evasion = signs[1];
        let _ = judge.judge(&ev);
    }
    let ban = queue.try_recv().expect("a ban was ordered");
    assert!(format!("{ban:?}").contains("192.0.2.30"), "{ban:?}");
}

/// A request whose source is not proven is inspected and logged, never judged: however
/// many attacks arrive "from" an address, the engine orders no ban.
#[test]
fn unverified_requests_never_strike_or_ban() {
    let (judge, queue) = default_judge();
    for trust in [Trust::Unverified, Trust::NoClient] {
        for i in 0..50 {
            let mut ev = event("192.0.2.66", &[("Host", "example.test")]);
            ev.trust = trust;
            ev.path = "/shell.php".into();
            ev.query = Some(format!("id={i}' UNION SELECT password FROM users--"));
            ev.status = Some(404);
            let (blocked, reason) = judge.judge(&ev);
            assert!(!blocked);
            let reason = reason.unwrap_or_default();
            assert!(reason.starts_with("not judged"), "{reason}");
        }
    }
    assert!(queue.try_recv().is_err(), "no ban was ordered");
    assert_eq!(judge.stats.not_judged.load(Ordering::Relaxed), 100);
    assert_eq!(judge.stats.bans_ordered.load(Ordering::Relaxed), 0);
    // The same requests, verified, are banned.
    for i in 0..50 {
        let mut ev = event("192.0.2.66", &[("Host", "example.test")]);
        ev.path = "/shell.php".into();
        ev.query = Some(format!("id={i}' UNION SELECT password FROM users--"));
        ev.status = Some(404);
        let _ = judge.judge(&ev);
    }
    assert!(queue.try_recv().is_ok(), "the verified client was banned");
}

/// A panic while judging one request (here injected while the engine's lock is held, the
/// worst place) costs that request only: it is counted, the lock is not left poisoned, and
/// the next request is judged as usual.
#[test]
fn a_panic_while_judging_costs_that_request_only() {
    let (judge, _queue) = default_judge();
    let ev = event("192.0.2.9", &[("Host", "example.test")]);
    let caught = judge.contain(&ev, || {
        let _engine = judge.engine();
        panic!("injected while judging");
    });
    assert!(caught.is_none());
    assert_eq!(judge.stats.judge_panics.load(Ordering::Relaxed), 1);
    assert!(!judge.engine.is_poisoned());
    let attack = event(
        "192.0.2.10",
        &[
            ("Host", "example.test"),
            ("Cookie", "id=1' UNION SELECT 1--"),
        ],
    );
    let (blocked, _) = judge.judge_contained(&attack).expect("judged");
    assert!(blocked, "the request after the panic was not judged");
    assert_eq!(judge.stats.judge_panics.load(Ordering::Relaxed), 1);
    assert_eq!(judge.stats.inspected.load(Ordering::Relaxed), 1);
}

/// The engine is swept at its cadence (`engine.sweep_interval`), on the monotonic clock,
/// once per period however many threads ask, and the sweep forgets idle clients.
#[test]
fn the_engine_is_swept_at_its_interval_only() {
    let engine = EngineConfig {
        sweep_interval: Duration::from_mins(1),
        client_expiry: Duration::from_hours(1),
        ..EngineConfig::default()
    };
    let (judge, _queue) =
        Judge::new(&ValidatorConfig::default(), &engine, Vec::new(), 16, None).expect("judge");
    let ev = event("192.0.2.40", &[("Host", "example.test")]);
    let _ = judge.judge(&ev);
    assert_eq!(judge.engine_stats().clients, 1);
    let idle = ev.ts + Duration::from_hours(2);
    let at = |secs: u64, millis: u64| {
        judge.sweep_at(
            Duration::from_secs(secs) + Duration::from_millis(millis),
            idle,
        )
    };
    assert!(!at(0, 0) && !at(0, 250) && !at(59, 999), "swept early");
    assert_eq!(judge.engine_stats().clients, 1, "swept before its interval");
    assert!(at(60, 0), "not swept at its interval");
    assert_eq!(judge.engine_stats().clients, 0, "the idle client was kept");
    assert!(
        !at(60, 0) && !at(60, 250) && !at(119, 999),
        "swept twice in one period"
    );
    assert!(at(120, 0));
    // A late caller (the thread was busy) sweeps once, and the next period starts from it.
    assert!(at(500, 0) && !at(559, 0) && at(560, 0));
    assert_eq!(judge.stats.engine_sweeps.load(Ordering::Relaxed), 4);
}

/// Many threads asking at once: exactly one sweeps.
#[test]
fn one_thread_of_many_sweeps() {
    let (judge, _queue) = default_judge();
    let judge = Arc::new(judge);
    let due = Duration::from_mins(1);
    let swept: usize = (0..8)
        .map(|_| {
            let judge = Arc::clone(&judge);
            std::thread::spawn(move || judge.sweep_at(due, due))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| usize::from(t.join().expect("thread")))
        .sum();
    assert_eq!(swept, 1);
}

/// Strikes `client` with evasion signs until the engine orders its ban.
fn provoke_ban(judge: &Judge, client: &str) {
    for _ in 0..50 {
        let mut ev = event(client, &[("Host", "example.test")]);
        ev.headers.evasion = Evasion {
            overlap_conflict: true,
            ..Evasion::default()
        };
        if judge.judge(&ev).1.is_some_and(|r| r.starts_with("banned:")) {
            return;
        }
    }
    panic!("{client} was not banned");
}

/// An order the full queue cannot take is not lost: the engine does not count the client
/// as banned, and its next request orders the ban again; a client counts as banned only
/// once the owner confirms.
#[test]
fn a_ban_order_dropped_by_a_full_queue_is_given_again() {
    let (judge, queue) = Judge::new(
        &ValidatorConfig::default(),
        &EngineConfig::default(),
        Vec::new(),
        1,
        None,
    )
    .expect("judge");
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    provoke_ban(&judge, "192.0.2.40");
    provoke_ban(&judge, "192.0.2.41");
    assert_eq!(count(&judge.stats.bans_ordered), 1);
    assert_eq!(
        count(&judge.stats.bans_dropped),
        1,
        "the queue held one order"
    );
    let first = queue.try_recv().expect("the first order");
    assert_eq!(first.request.target.to_string(), "192.0.2.40");
    // The dropped client's next request orders its ban again.
    let (blocked, _) = judge.judge(&event("192.0.2.41", &[("Host", "example.test")]));
    assert!(blocked);
    assert_eq!(count(&judge.stats.bans_retried), 1);
    let again = queue.try_recv().expect("ordered again");
    assert_eq!(again.request.target.to_string(), "192.0.2.41");
    // Confirmed: blocked as banned, nothing ordered any more.
    judge.settle(&first.ticket, BanOutcome::Enforced);
    judge.settle(&again.ticket, BanOutcome::Enforced);
    for client in ["192.0.2.40", "192.0.2.41"] {
        let (blocked, reason) = judge.judge(&event(client, &[("Host", "example.test")]));
        assert!(blocked, "{reason:?}");
    }
    assert!(queue.try_recv().is_err());
    assert_eq!(count(&judge.stats.bans_confirmed), 2);
    // An order the owner could not carry out is given again as well.
    provoke_ban(&judge, "192.0.2.42");
    let order = queue.try_recv().expect("ordered");
    judge.settle(&order.ticket, BanOutcome::Failed);
    let _ = judge.judge(&event("192.0.2.42", &[("Host", "example.test")]));
    assert!(queue.try_recv().is_ok(), "the failed order was given again");
    assert_eq!(count(&judge.stats.bans_failed), 1);
    assert_eq!(count(&judge.stats.bans_retried), 2);
}
