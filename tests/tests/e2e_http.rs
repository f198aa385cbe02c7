//! End to end for the HTTP tap: a real HTTP/1.1 server on the guarded side of a veth pair, real
//! clients on the far side, and `guard logs --json` must show exactly the requests made.
use std::net::SocketAddr;
use std::time::Duration;

use guard_tests::http::{Client, start_server};
use guard_tests::{Daemon, Link, require_root, wait_until};
use serde_json::Value;

const PORT: u16 = 8080;

fn setup(extra: &str) -> anyhow::Result<(Link, Daemon, SocketAddr)> {
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    // These tests are about capture and logging: the engine only watches (shadow mode), so
    // the odd clients below (malformed input, half-open floods) are not banned mid-test.
    let daemon = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[engine]\nmode = \"shadow\"\n\n[tap]\nhttp_ports = [{PORT}]\n{extra}"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    Ok((link, daemon, dst))
}

/// Every record of `guard logs --json`. A CLI that fails or a line that is not JSON fails the
/// test: read as "no records", it would pass every check that something was not logged.
fn logs(d: &Daemon) -> Vec<Value> {
    d.cli(&["logs", "--json", "--limit", "all"])
        .unwrap_or_else(|e| panic!("guard logs: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect()
}

fn wait_logs(d: &Daemon, n: usize) -> Vec<Value> {
    let _ = wait_until(Duration::from_secs(5), || logs(d).len() >= n);
    logs(d)
}

fn curl(link: &Link, url: &str) -> anyhow::Result<String> {
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
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: e2e-client\r\n\r\n")
        .into_bytes()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: every kind of request, then one check of the whole log"
)]
fn logs_show_exactly_the_requests_made() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup("")?;
    let base = format!("http://{}:{PORT}", link.near_v4);
    assert_eq!(curl(&link, &format!("{base}/plain"))?, "200");
    assert_eq!(curl(&link, &format!("{base}/search?q=a+b&page=2"))?, "200");
    assert_eq!(curl(&link, &format!("{base}/missing/page"))?, "404");
    // Keep-alive: two requests, one connection, one after the other.
    let ka = Client::with(&link.far, dst, |c| {
        c.send(&request("/ka/1"))?;
        let mut s = c.responses(1)?;
        c.send(&request("/ka/2"))?;
        s.extend(c.responses(1)?);
        Ok(s)
    })?;
    assert_eq!(ka, [200, 200]);
    // Pipelining: three requests in one write.
    let piped = Client::with(&link.far, dst, |c| {
        let mut all = request("/pipe/1");
        all.extend(request("/pipe/2"));
        all.extend(request("/error/3"));
        c.send(&all)?;
        c.responses(3)
    })?;
    assert_eq!(piped, [200, 200, 500]);
    // Chunked upload.
    let chunked = Client::with(&link.far, dst, |c| {
        c.send(b"POST /upload/chunked HTTP/1.1\r\nHost: guard.test\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n")?;
        for part in ["5\r\nhello\r\n", "7\r\n, world\r\n", "0\r\n\r\n"] {
            c.send(part.as_bytes())?;
            std::thread::sleep(Duration::from_millis(5));
        }
        c.responses(1)
    })?;
    assert_eq!(chunked, [200]);
    // One megabyte upload.
    let big = Client::with(&link.far, dst, |c| {
        c.send(b"POST /upload/big HTTP/1.1\r\nHost: guard.test\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n")?;
        c.send(&vec![b'x'; 1 << 20])?;
        c.responses(1)
    })?;
    assert_eq!(big, [200]);
    // One byte per write.
    let slow = Client::with(&link.far, dst, |c| {
        for b in request("/slow/bytes?one=1") {
            c.send(&[b])?;
            std::thread::sleep(Duration::from_millis(1));
        }
        c.responses(1)
    })?;
    assert_eq!(slow, [200]);

    let records = wait_logs(&d, 11);
    let got: Vec<(String, String, Option<String>, u64)> = records
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or_default().to_owned(),
                r["path"].as_str().unwrap_or_default().to_owned(),
                r["query"].as_str().map(str::to_owned),
                r["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(&str, &str, Option<&str>, u64)> = vec![
        ("GET", "/plain", None, 200),
        ("GET", "/search", Some("q=a+b&page=2"), 200),
        ("GET", "/missing/page", None, 404),
        ("GET", "/ka/1", None, 200),
        ("GET", "/ka/2", None, 200),
        ("GET", "/pipe/1", None, 200),
        ("GET", "/pipe/2", None, 200),
        ("GET", "/error/3", None, 500),
        ("POST", "/upload/chunked", None, 200),
        ("POST", "/upload/big", None, 200),
        ("GET", "/slow/bytes", Some("one=1"), 200),
    ];
    let want: Vec<(String, String, Option<String>, u64)> = want
        .into_iter()
        .map(|(m, p, q, s)| (m.into(), p.into(), q.map(Into::into), s))
        .collect();
    assert_eq!(
        got, want,
        "the log must hold exactly the requests made, in order"
    );
    for r in &records {
        assert_eq!(r["client"], link.far_v4.to_string());
        let latency = r["latency_ms"].as_f64().unwrap_or(-1.0);
        assert!(
            (0.0..5000.0).contains(&latency),
            "implausible latency {latency} in {r}"
        );
        assert!(r["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    let big = records
        .iter()
        .find(|r| r["path"] == "/upload/big")
        .expect("big upload logged");
    assert!(
        big["bytes_in"].as_u64() > Some(1 << 20),
        "1 MB upload counted in full: {big}"
    );
    let slow = records
        .iter()
        .find(|r| r["path"] == "/slow/bytes")
        .expect("slow request logged");
    assert_eq!(slow["user_agent"], "e2e-client");
    // Filters.
    let notfound = d
        .cli(&["logs", "--json", "--status", "404"])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(notfound.lines().count(), 1);
    let errors = d
        .cli(&["logs", "--json", "--status", "5xx"])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(errors.lines().count(), 1);
    let uploads = d
        .cli(&["logs", "--json", "--path-prefix", "/upload"])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(uploads.lines().count(), 2);
    let other = d
        .cli(&["logs", "--json", "--ip", "192.0.2.1"])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(other.lines().count(), 0);
    let stats = d.json(&["stats"])?;
    assert_eq!(stats["logs"]["dropped"], 0);
    assert_eq!(stats["tap"][0]["capture"]["drops"], 0);
    Ok(())
}

#[test]
fn reordered_segments_are_reassembled() -> anyhow::Result<()> {
    require_root!();
    let (link, daemon, _) = setup("")?;
    guard_tests::rawtcp::mute_kernel_resets(&link.far, PORT)?;
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (link.far_v4, link.near_v4) else {
        anyhow::bail!("IPv4 link expected");
    };
    let n = 5;
    for i in 0..n {
        let reply = link.far.run(move || -> anyhow::Result<Vec<u8>> {
            let mut c = guard_tests::rawtcp::RawTcp::connect(src, dst, PORT)?;
            let req = format!(
                "POST /reorder/{i} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: e2e-raw\r\nContent-Length: 40\r\n\r\n{}",
                "y".repeat(40)
            );
            let bytes = req.as_bytes();
            // Three segments sent last, first, middle; the first again (a retransmission).
            let (a, b) = (bytes.len() / 3, 2 * bytes.len() / 3);
            c.send_at(b as u32, &bytes[b..])?;
            std::thread::sleep(Duration::from_millis(5));
            c.send_at(0, &bytes[..a])?;
            std::thread::sleep(Duration::from_millis(5));
            c.send_at(a as u32, &bytes[a..b])?;
            c.send_at(0, &bytes[..a])?;
            // No FIN/RST: the namespace drops outgoing resets; the server times the connection out.
            c.read_response()
        })??;
        assert!(
            reply.starts_with(b"HTTP/1.1 200"),
            "server answer: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let records = wait_logs(&daemon, n);
    let mut paths: Vec<String> = records
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    paths.sort();
    let want: Vec<String> = (0..n).map(|i| format!("/reorder/{i}")).collect();
    assert_eq!(paths, want, "every reordered request logged once, intact");
    assert!(records.iter().all(|r| r["method"] == "POST"
        && r["status"] == 200
        && r["bytes_in"].as_u64() >= Some(100)));
    Ok(())
}

#[test]
fn malformed_input_never_stalls_and_is_counted() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup("max_flows = 64\n")?;
    let raw = |bytes: Vec<u8>| {
        Client::with(&link.far, dst, move |c| {
            c.send(&bytes)?;
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        })
    };
    raw(b"\x16\x03\x01\x02\x00garbage\x00\xff\xfe not http at all\r\n\r\n".to_vec())?;
    raw(b"GET /truncated HTTP/1.1\r\nHost: gua".to_vec())?;
    let mut long = b"GET /long HTTP/1.1\r\nX-Long: ".to_vec();
    long.extend(vec![b'a'; 100 * 1024]);
    long.extend(b"\r\n\r\n");
    raw(long)?;
    raw(b"POST /chunks HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\nzz-not-hex\r\nabc\r\n".to_vec())?;
    // A flood of half-open flows: 300 connections that send half a request and stay open.
    let held = link.far.run(move || {
        let mut socks = Vec::new();
        for i in 0..300 {
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2)) {
                let _ = std::io::Write::write_all(
                    &mut s,
                    format!("GET /half/{i} HTTP/1.1\r\n").as_bytes(),
                );
                socks.push(s);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        socks.len()
    })?;
    assert!(held > 250, "only {held} half-open connections");
    // Still responsive, still logging.
    let answered = wait_until(Duration::from_secs(2), || d.cli(&["status"]).is_ok());
    assert!(answered.is_some(), "daemon stalled");
    let ok = Client::with(&link.far, dst, |c| {
        c.send(&request("/after/malformed"))?;
        c.responses(1)
    })?;
    assert_eq!(ok, [200]);
    assert!(
        wait_until(Duration::from_secs(5), || logs(&d)
            .iter()
            .any(|r| r["path"] == "/after/malformed"))
        .is_some()
    );
    let stats = d.json(&["stats"])?;
    let tap = &stats["tap"][0]["tap"];
    let malformed = tap["http_malformed"].as_u64().unwrap_or(0);
    assert!(
        malformed >= 3,
        "garbage, 100 KB header line and bad chunk size counted as malformed: {tap}"
    );
    let over =
        tap["flows_evicted"].as_u64().unwrap_or(0) + tap["flows_refused"].as_u64().unwrap_or(0);
    assert!(
        over > 0,
        "max_flows = 64 must have evicted or refused flows: {tap}"
    );
    let open = tap["flows_open"].as_u64();
    assert!(
        open.is_some_and(|n| n <= 64),
        "flow table over its bound (or not reported): {tap}"
    );
    assert!(
        !logs(&d).iter().any(|r| r["path"] == "/long"),
        "a 100 KB header line is not a request"
    );
    Ok(())
}

#[test]
fn protected_ports_change_at_run_time() -> anyhow::Result<()> {
    require_root!();
    let (link, d, dst) = setup("")?;
    start_server(&link.near, 8081)?;
    let other = SocketAddr::new(link.near_v4, 8081);
    let get = |to: SocketAddr, path: &'static str| {
        Client::with(&link.far, to, move |c| {
            c.send(&request(path))?;
            c.responses(1)
        })
    };
    assert_eq!(get(dst, "/before/8080")?, [200]);
    assert_eq!(get(other, "/before/8081")?, [200]);
    let out = d
        .cli(&["tap", "ports", "8081"])
        .map_err(anyhow::Error::msg)?;
    assert!(out.contains("8081") && !out.contains("8080"), "{out}");
    assert_eq!(get(dst, "/after/8080")?, [200]);
    assert_eq!(get(other, "/after/8081")?, [200]);
    assert!(
        wait_until(Duration::from_secs(5), || logs(&d)
            .iter()
            .any(|r| r["path"] == "/after/8081"))
        .is_some(),
        "not logged after the change: {:?} {}",
        d.json(&["stats"]).map(|s| s["tap"].clone()),
        d.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let paths: Vec<String> = logs(&d)
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        paths,
        ["/before/8080", "/after/8081"],
        "only the protected port at each moment is logged"
    );
    assert!(d.cli(&["tap", "ports", "0"]).is_err(), "port 0 refused");
    Ok(())
}

/// Control requests from many CLIs at once: `stats` and `tap ports` take the ban table's and the
/// pipeline's locks, `ban` and `allow` the ban table's, `logs` the log store. Four clients in
/// parallel loops of whole cycles, 208 requests in all, must all be answered within 30 s (a lock taken in both
/// orders deadlocks the daemon, and each CLI then fails after its 120 s timeout) and leave no
/// ban or allowlist entry behind.
#[test]
fn concurrent_control_requests_are_all_answered() -> anyhow::Result<()> {
    require_root!();
    let (_link, d, _dst) = setup("")?;
    let started = std::time::Instant::now();
    let loops: [&[&[&str]]; 4] = [
        &[&["stats", "--json"]],
        &[&["tap", "ports", "8080"], &["tap", "ports"]],
        &[
            &["ban", "add", "198.51.100.7", "--reason", "parallel"],
            &["ban", "rm", "198.51.100.7"],
        ],
        &[
            &["allow", "add", "198.51.100.99", "--reason", "parallel"],
            &["logs", "--limit", "5"],
            &["allow", "rm", "198.51.100.99"],
            &["status"],
        ],
    ];
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = loops
            .iter()
            .map(|cycle| {
                let d = &d;
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..52 {
                        let args = cycle[i % cycle.len()];
                        if let Err(e) = d.cli(args) {
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
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(took < Duration::from_secs(30), "208 requests took {took:?}");
    let bans = d.json(&["ban", "ls"])?;
    assert_eq!(bans, serde_json::json!([]), "a ban was left behind");
    let allows = d.json(&["allow", "ls"])?;
    assert_eq!(
        allows,
        serde_json::json!([]),
        "an allowlist entry was left behind"
    );
    Ok(())
}
