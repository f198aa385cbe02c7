//! The report of a synthetic day whose every figure is known.
use super::*;

/// Midnight UTC, 3 December 2026.
const DAY: u64 = 1_796_256_000;

fn at(secs: u64) -> Duration {
    Duration::from_secs(DAY + secs)
}

fn entry(
    secs: u64,
    path: &'static str,
    status: Option<u16>,
    latency_ms: Option<f64>,
    reason: Option<&'static str>,
) -> Entry<'static> {
    Entry {
        time: at(secs),
        path,
        status,
        latency_ms,
        blocked: reason.is_some(),
        reason,
        offender: reason.map(|_| {
            if path == "/search" {
                "alice"
            } else {
                "192.0.2.7"
            }
        }),
    }
}

fn utc_day() -> Window {
    Window {
        start: at(0),
        end: at(86_400),
    }
}

/// Ten records in the day (latencies chosen to be exact in the histogram) and two outside it.
fn synthetic() -> Vec<Entry<'static>> {
    vec![
        entry(0, "/users/1", Some(200), Some(10.0), None),
        entry(100, "/users/2", Some(200), Some(20.0), None),
        entry(3_600, "/users/3", Some(404), Some(32.0), None),
        entry(
            3_700,
            "/orders/3f2504e0-4f89-41d3-9a0c-0305e82c3301",
            Some(500),
            Some(256.0),
            None,
        ),
        entry(7_200, "/login", Some(403), Some(1.0), Some("sqli")),
        entry(7_300, "/login", Some(403), Some(1.0), Some("sqli")),
        entry(7_400, "/search", Some(429), Some(2.0), Some("flood")),
        entry(
            50_000,
            "/blobs/d41d8cd98f00b204e9800998ecf8427e",
            Some(502),
            Some(768.0),
            None,
        ),
        entry(86_399, "/health", Some(200), None, None),
        entry(86_399, "/health", None, None, None),
        Entry {
            time: Duration::from_secs(DAY - 1),
            path: "/users/9",
            status: Some(200),
            ..Entry::default()
        },
        Entry {
            time: at(86_400),
            path: "/users/9",
            status: Some(200),
            ..Entry::default()
        },
    ]
}

fn report(window: Window, limits: Limits, entries: &[Entry<'_>]) -> DayReport {
    let mut day = DayAggregate::new(window, limits);
    for e in entries {
        day.add(e);
    }
    day.finish()
}

fn stat(path: &str, hits: u64, mean: Option<f64>) -> EndpointStat {
    EndpointStat {
        path: path.to_owned(),
        hits,
        mean_latency_ms: mean,
    }
}

#[test]
fn every_figure_of_a_known_day() {
    let r = report(utc_day(), Limits::default(), &synthetic());
    assert_eq!((r.start, r.end), (DAY, DAY + 86_400));
    assert_eq!(r.total, 10);
    assert_eq!(r.outside, 2);
    assert_eq!((r.status_4xx, r.status_5xx), (4, 2));
    assert_eq!((r.share_4xx, r.share_5xx), (0.4, 0.2));
    assert_eq!(r.blocked, 3);
    assert_eq!(
        r.blocked_by_reason,
        [
            Count {
                name: "sqli".into(),
                count: 2
            },
            Count {
                name: "flood".into(),
                count: 1
            }
        ]
    );
    // 1, 1, 2, 10, 20, 32, 256, 768 ms: mean 1090 / 8; p50 the 4th, p95 and p99 the 8th.
    assert_eq!(r.latency_count, 8);
    assert_eq!(r.mean_latency_ms, Some(136.25));
    assert_eq!(r.p50_ms, Some(10.0));
    assert_eq!(r.p95_ms, Some(768.0));
    assert_eq!(r.p99_ms, Some(768.0));
    let classes: Vec<(&str, u64)> = r
        .status_classes
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        classes,
        [
            ("1xx", 0),
            ("2xx", 3),
            ("3xx", 0),
            ("4xx", 4),
            ("5xx", 2),
            ("none", 1),
            ("other", 0)
        ]
    );
    assert_eq!(
        r.most_hit,
        [
            stat("/users/{id}", 3, Some(62_000.0 / 3.0 / 1000.0)),
            stat("/health", 2, None),
            stat("/login", 2, Some(1.0)),
            stat("/blobs/{id}", 1, Some(768.0)),
            stat("/orders/{id}", 1, Some(256.0)),
        ]
    );
    assert_eq!(
        r.slowest,
        [
            stat("/blobs/{id}", 1, Some(768.0)),
            stat("/orders/{id}", 1, Some(256.0)),
            stat("/users/{id}", 3, Some(62_000.0 / 3.0 / 1000.0)),
            stat("/search", 1, Some(2.0)),
            stat("/login", 2, Some(1.0)),
        ]
    );
    assert_eq!(r.other_endpoint_hits, 0);
    assert_eq!(
        r.top_offenders,
        [
            top::Top {
                name: "192.0.2.7".into(),
                count: 2,
                error: 0
            },
            top::Top {
                name: "alice".into(),
                count: 1,
                error: 0
            }
        ]
    );
    assert_eq!(r.hourly.len(), 24);
    let busy: Vec<(usize, u64, u64, u64)> = r
        .hourly
        .iter()
        .enumerate()
        .filter(|(_, h)| h.requests > 0)
        .map(|(i, h)| (i, h.requests, h.blocked, h.errors))
        .collect();
    assert_eq!(
        busy,
        [
            (0, 2, 0, 0),
            (1, 2, 0, 1),
            (2, 3, 3, 0),
            (13, 1, 0, 1),
            (23, 2, 0, 0)
        ]
    );
    assert_eq!(r.hourly[5].start, DAY + 5 * 3600);
}

#[test]
fn an_empty_day_has_zeros_and_no_latency() {
    let r = report(utc_day(), Limits::default(), &[]);
    assert_eq!(r.total, 0);
    assert_eq!((r.share_4xx, r.share_5xx), (0.0, 0.0));
    assert_eq!((r.mean_latency_ms, r.p50_ms, r.p99_ms), (None, None, None));
    assert!(r.most_hit.is_empty() && r.slowest.is_empty());
    assert_eq!(r.hourly.len(), 24);
    assert!(r.hourly.iter().all(|h| h.requests == 0));
}

#[test]
fn a_dst_day_has_23_or_25_hours() {
    let short = Window {
        start: at(0),
        end: at(23 * 3600),
    };
    let r = report(
        short,
        Limits::default(),
        &[
            entry(22 * 3600 + 1800, "/a", Some(200), None, None),
            entry(23 * 3600, "/a", Some(200), None, None),
        ],
    );
    assert_eq!(r.hourly.len(), 23);
    assert_eq!((r.total, r.outside), (1, 1));
    assert_eq!(r.hourly[22].requests, 1);
    let long = Window {
        start: at(0),
        end: at(25 * 3600),
    };
    let r = report(
        long,
        Limits::default(),
        &[entry(24 * 3600 + 10, "/a", Some(200), None, None)],
    );
    assert_eq!(r.hourly.len(), 25);
    assert_eq!(r.hourly[24].requests, 1);
    assert_eq!(r.hourly[24].start, DAY + 24 * 3600);
}

#[test]
fn endpoints_and_reasons_past_their_bounds_count_together() {
    let limits = Limits {
        max_endpoints: 2,
        max_reasons: 1,
        max_offenders: 8,
    };
    let r = report(
        utc_day(),
        limits,
        &[
            entry(1, "/a/1", Some(200), Some(1.0), Some("first")),
            entry(2, "/b", Some(200), Some(1.0), Some("second")),
            entry(3, "/c", Some(200), Some(1.0), Some("third")),
            entry(4, "/a/2", Some(200), Some(1.0), Some("first")),
            entry(5, "/d", Some(200), Some(1.0), None),
        ],
    );
    assert_eq!(
        r.most_hit,
        [stat("/a/{id}", 2, Some(1.0)), stat("/b", 1, Some(1.0))]
    );
    assert_eq!(r.other_endpoint_hits, 2);
    assert_eq!(
        r.blocked_by_reason,
        [
            Count {
                name: "(other)".into(),
                count: 2
            },
            Count {
                name: "first".into(),
                count: 2
            }
        ]
    );
    assert_eq!(r.blocked, 4);
}
