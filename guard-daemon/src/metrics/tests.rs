//! The encoding and the endpoint: real text parsed back, a real listener on port 0.
#![expect(
    clippy::float_cmp,
    reason = "the samples are integers, written and parsed exactly"
)]
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};

use super::*;

/// Parses `OpenMetrics` text the way a scraper does: every line is a `# HELP`, `# TYPE`,
/// `# UNIT` or a sample `name{labels} value`, and the text ends with `# EOF`. Returns the
/// samples by `name{labels}` as written.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (what, name) = (words.next().unwrap(), words.next().unwrap());
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&what),
                "unknown comment {line:?}"
            );
            assert!(name.starts_with("guard_"), "unprefixed {name}");
            if what == "TYPE" {
                let t = words.next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&t), "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.starts_with("guard_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        let v: f64 = if value == "+Inf" {
            f64::INFINITY
        } else {
            value.parse().expect("a number")
        };
        assert!(
            samples.insert(series.to_owned(), v).is_none(),
            "{series} twice"
        );
    }
    assert!(eof, "no # EOF at the end");
    samples
}

fn sample() -> Snapshot {
    let mut packets = Family::counter("xdp_packets", "Packets seen by XDP.");
    packets.push(vec![label("action", "drop"), label("reason", "ban")], 7);
    packets.push(vec![label("action", "pass"), label("reason", "clean")], 40);
    let hist = LatencyHistogram::default();
    hist.observe(Duration::from_micros(500));
    hist.observe(Duration::from_millis(30));
    hist.observe(Duration::from_mins(1));
    Snapshot {
        families: vec![
            packets,
            Family::gauge("bans_active", "Bans.").value(3),
            Family::counter("tap_bytes_delivered", "Bytes.")
                .in_unit(Unit::Bytes)
                .value(1234),
        ],
        histograms: vec![HistogramFamily {
            name: "proxy_request_duration",
            help: "Time.",
            unit: Some(Unit::Seconds),
            value: hist.snapshot(),
        }],
    }
}

#[test]
fn a_snapshot_encodes_as_openmetrics_text_with_conventional_names() {
    let text = encode(sample());
    let s = parse(&text);
    assert_eq!(
        s["guard_xdp_packets_total{action=\"drop\",reason=\"ban\"}"],
        7.0
    );
    assert_eq!(
        s["guard_xdp_packets_total{action=\"pass\",reason=\"clean\"}"],
        40.0
    );
    assert_eq!(s["guard_bans_active"], 3.0);
    assert_eq!(s["guard_tap_bytes_delivered_bytes_total"], 1234.0);
    assert!(text.contains("# TYPE guard_xdp_packets counter\n"));
    assert!(text.contains("# TYPE guard_bans_active gauge\n"));
    // The histogram: cumulative buckets, the sum in seconds, the count.
    assert_eq!(
        s["guard_proxy_request_duration_seconds_bucket{le=\"0.001\"}"],
        1.0
    );
    assert_eq!(
        s["guard_proxy_request_duration_seconds_bucket{le=\"0.025\"}"],
        1.0
    );
    assert_eq!(
        s["guard_proxy_request_duration_seconds_bucket{le=\"0.05\"}"],
        2.0
    );
    assert_eq!(
        s["guard_proxy_request_duration_seconds_bucket{le=\"30.0\"}"],
        2.0
    );
    assert_eq!(
        s["guard_proxy_request_duration_seconds_bucket{le=\"+Inf\"}"],
        3.0
    );
    assert_eq!(s["guard_proxy_request_duration_seconds_count"], 3.0);
    assert!((s["guard_proxy_request_duration_seconds_sum"] - 60.0305).abs() < 1e-9);
}

#[test]
fn an_empty_snapshot_is_still_a_whole_exposition() {
    assert_eq!(encode(Snapshot::default()), "# EOF\n");
}

/// One HTTP/1.1 exchange on a fresh connection: (status, content type, body).
fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, ctype, body.to_owned())
}

#[test]
fn the_endpoint_serves_each_scrape_afresh_and_stops_on_its_signal() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let scrapes = Arc::new(AtomicU64::new(0));
    let gather: Gather = {
        let scrapes = Arc::clone(&scrapes);
        Arc::new(move || {
            let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
            Snapshot {
                families: vec![Family::counter("scrapes", "Scrapes so far.").value(n)],
                histograms: Vec::new(),
            }
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, gather, async {
        let _ = stopped.await;
    }));
    let (status, ctype, body) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(ctype, CONTENT_TYPE);
    assert_eq!(parse(&body)["guard_scrapes_total"], 1.0);
    let (_, _, body) = get(addr, "GET", "/metrics");
    assert_eq!(parse(&body)["guard_scrapes_total"], 2.0);
    assert_eq!(get(addr, "GET", "/").0, 404);
    assert_eq!(get(addr, "POST", "/metrics").0, 405);
    stop.send(()).unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the endpoint stops on its signal")
            .unwrap();
    });
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed after the stop"
    );
}
