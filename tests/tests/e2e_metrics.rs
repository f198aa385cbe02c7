//! End to end for `/metrics`: the real daemon on a veth pair serves the Prometheus endpoint in
//! its namespace; the text is parsed the way a scraper reads it, and after real traffic (HTTP
//! requests through the tap, pings from a banned source dropped by XDP) the counters must have
//! moved by exactly what was sent.
use std::collections::BTreeMap;
use std::time::Duration;

use guard_tests::http::start_server;
use guard_tests::{Daemon, Link, require_root, wait_until};

const PORT: u16 = 8080;
const METRICS: &str = "127.0.0.1:9464";

/// The samples of one scrape, by `name{labels}` as written.
type Samples = BTreeMap<String, f64>;

/// Checks the text as a scraper does and returns its samples: every line is a `# HELP`,
/// `# TYPE` or `# UNIT` comment or a `name{labels} value` sample of a `guard_` family, no label
/// names an address or a user, and the text ends with `# EOF`.
fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let what = words.next().unwrap_or_default();
            let name = words.next().unwrap_or_default();
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&what),
                "unknown comment {line:?}"
            );
            assert!(name.starts_with("guard_"), "unprefixed family in {line:?}");
            if what == "TYPE" {
                let t = words.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&t),
                    "unknown type in {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
            ),
            None => (series, ""),
        };
        assert!(
            name.starts_with("guard_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (key, v) = pair
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
            assert!(
                !["addr", "address", "ip", "client", "user", "source"].contains(&key),
                "a label that names who: {line:?}"
            );
            assert!(!v.contains('\n'), "{line:?}");
        }
        let v: f64 = if value == "+Inf" {
            f64::INFINITY
        } else {
            value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"))
        };
        assert!(
            samples.insert(series.to_owned(), v).is_none(),
            "{series} twice"
        );
    }
    assert!(eof, "no # EOF at the end of the scrape");
    samples
}

/// One scrape from inside the daemon's namespace (loopback: the XDP program on the veth never
/// sees it), parsed.
fn scrape(link: &Link) -> Samples {
    let out = link
        .near
        .command("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-D",
            "/dev/stderr",
            &format!("http://{METRICS}/metrics"),
        ])
        .output()
        .expect("running curl");
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "scrape answered {head:?}");
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "content type in {head:?}"
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// A sample's value; 0 when the series is not there yet.
fn get(s: &Samples, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

fn curl(link: &Link, url: &str) -> String {
    let out = link
        .far
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[expect(
    clippy::float_cmp,
    reason = "the samples are integers, written and parsed exactly"
)]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: first scrape, tap traffic, a ban and its pings, the lift"
)]
fn counters_move_by_exactly_the_traffic_sent() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n\n[metrics]\nlisten = \"{METRICS}\"\n"),
    )?;
    let iface = &link.near_if;
    let before = scrape(&link);
    // Every family is there from the first scrape, with no traffic yet.
    for series in [
        "guard_xdp_packets_total{action=\"drop\",reason=\"ban_address\"}".to_owned(),
        "guard_bans_active{scope=\"address\",origin=\"cli\"}".to_owned(),
        "guard_map_capacity{map=\"ipv4_bans\"}".to_owned(),
        format!("guard_tap_requests_total{{interface=\"{iface}\"}}"),
        format!("guard_capture_packets_total{{interface=\"{iface}\"}}"),
        "guard_requests_total{mode=\"tap\",verdict=\"allowed\"}".to_owned(),
        "guard_validator_findings_total{category=\"sqli\",action=\"block\"}".to_owned(),
        "guard_engine_decisions_total{decision=\"block\"}".to_owned(),
        "guard_ban_orders_total{outcome=\"ordered\"}".to_owned(),
    ] {
        assert!(
            before.contains_key(&series),
            "no {series} in the first scrape"
        );
    }
    assert_eq!(
        get(
            &before,
            "guard_bans_active{scope=\"address\",origin=\"cli\"}"
        ),
        0.0
    );
    assert!(get(&before, "guard_map_capacity{map=\"ipv4_bans\"}") > 0.0);

    // Through the tap: five plain requests and one SQL injection.
    let base = format!("http://{}:{PORT}", link.near_v4);
    for i in 0..5 {
        assert_eq!(curl(&link, &format!("{base}/page/{i}")), "200");
    }
    assert_eq!(
        curl(
            &link,
            &format!("{base}/items?id=1%20UNION%20SELECT%20username,password%20FROM%20users")
        ),
        "200"
    );
    let tap_requests = format!("guard_tap_requests_total{{interface=\"{iface}\"}}");
    let allowed = "guard_requests_total{mode=\"tap\",verdict=\"allowed\"}";
    let blocked = "guard_requests_total{mode=\"tap\",verdict=\"blocked\"}";
    // The pipeline publishes its counters every 250 ms.
    let mut after = before.clone();
    let _ = wait_until(Duration::from_secs(5), || {
        after = scrape(&link);
        get(&after, allowed) + get(&after, blocked) >= get(&before, allowed) + 6.0
    });
    assert_eq!(
        get(&after, &tap_requests) - get(&before, &tap_requests),
        6.0
    );
    assert_eq!(get(&after, allowed) - get(&before, allowed), 5.0);
    assert_eq!(get(&after, blocked) - get(&before, blocked), 1.0);
    let sqli = "guard_validator_findings_total{category=\"sqli\",action=\"block\"}";
    assert_eq!(get(&after, sqli) - get(&before, sqli), 1.0);
    let xss = "guard_validator_findings_total{category=\"xss\",action=\"block\"}";
    assert_eq!(get(&after, xss), get(&before, xss));
    let engine_block = "guard_engine_decisions_total{decision=\"block\"}";
    assert_eq!(get(&after, engine_block) - get(&before, engine_block), 1.0);
    let captured = format!("guard_capture_packets_total{{interface=\"{iface}\"}}");
    assert!(
        get(&after, &captured) >= get(&before, &captured) + 6.0 * 4.0,
        "each exchange is at least four captured segments"
    );

    // Through XDP: a banned source's pings, every one dropped by its exact ban.
    let far = link.far_v4.to_string();
    d.cli(&["ban", "add", &far, "--reason", "e2e metrics"])
        .map_err(|e| anyhow::anyhow!("guard ban add: {e}"))?;
    let banned = scrape(&link);
    assert_eq!(
        get(
            &banned,
            "guard_bans_active{scope=\"address\",origin=\"cli\"}"
        ),
        1.0
    );
    assert_eq!(get(&banned, "guard_map_entries{map=\"ipv4_bans\"}"), 1.0);
    let dropped = "guard_xdp_packets_total{action=\"drop\",reason=\"ban_address\"}";
    let out = link
        .far
        .command("ping")
        .args([
            "-n",
            "-c",
            "5",
            "-i",
            "0.05",
            "-W",
            "1",
            &link.near_v4.to_string(),
        ])
        .output()?;
    assert!(
        !out.status.success(),
        "pings from a banned source were answered: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut pinged = banned.clone();
    let _ = wait_until(Duration::from_secs(3), || {
        pinged = scrape(&link);
        get(&pinged, dropped) >= get(&banned, dropped) + 5.0
    });
    assert_eq!(get(&pinged, dropped) - get(&banned, dropped), 5.0);
    let range = "guard_xdp_packets_total{action=\"drop\",reason=\"ban_range\"}";
    assert_eq!(get(&pinged, range), get(&banned, range));

    // Lifted: the gauges go back down.
    d.cli(&["ban", "rm", &far])
        .map_err(|e| anyhow::anyhow!("guard ban rm: {e}"))?;
    let lifted = scrape(&link);
    assert_eq!(
        get(
            &lifted,
            "guard_bans_active{scope=\"address\",origin=\"cli\"}"
        ),
        0.0
    );
    assert_eq!(get(&lifted, "guard_map_entries{map=\"ipv4_bans\"}"), 0.0);
    Ok(())
}
