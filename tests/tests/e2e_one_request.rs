//! End to end: one request must not blind the tap. The requests that used to panic the capture
//! thread (a multipart body with multi-byte text where the validator's `_charset_` window ended,
//! and a UTF-8 request target cut inside a character) go through the real tap; afterwards a
//! 404 prober is still seen, judged and banned, and `guard stats` shows every request judged
//! and no panic. (Both panics are fixed at their source; that a panic which still happened
//! would cost only its request is proven by the judge's unit test, which injects one.)
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use guard_tests::http::{Client, start_server};
use guard_tests::{Daemon, Link, require_root, wait_until};

const PORT: u16 = 8080;

/// The shape of the 371-byte multipart body that panicked the validator: 100 two-byte
/// characters after the `_charset_` field name, so its 120-byte window ended inside one.
fn multipart_body() -> String {
    format!(
        "--b\r\nContent-Disposition: form-data; name=\"_charset_\"\r\n\r\nutf-8{}\r\n--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n",
        "\u{e9}".repeat(100)
    )
}

fn banned(d: &Daemon, addr: IpAddr) -> bool {
    d.json(&["ban", "ls"]).ok().is_some_and(|v| {
        v.as_array()
            .is_some_and(|bans| bans.iter().any(|b| b["addr"] == addr.to_string()))
    })
}

/// Sends `requests` on one keep-alive connection from `src` and returns their statuses.
fn send(link: &Link, src: IpAddr, dst: SocketAddr, requests: Vec<String>) -> Vec<u16> {
    Client::with_from(&link.far, Some(src), dst, move |c| {
        let mut statuses = Vec::new();
        for r in &requests {
            c.send(r.as_bytes())?;
            statuses.extend(c.responses(1)?);
        }
        Ok(statuses)
    })
    .unwrap_or_default()
}

#[test]
fn a_request_that_panicked_the_validator_does_not_blind_the_tap() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    let uploader = link.add_far_v4(20)?;
    let prober = link.add_far_v4(30)?;

    let body = multipart_body();
    let killers = vec![
        format!(
            "POST /upload HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        "GET /aaaaa\u{e9} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0\r\n\r\n"
            .to_owned(),
    ];
    let answered = send(&link, uploader, dst, killers);
    assert_eq!(answered.len(), 2, "the server did not answer both requests");
    // Both requests reached the judge (the tap thread is alive and parsed them).
    let judged = wait_until(Duration::from_secs(5), || {
        d.json(&["stats"])
            .is_ok_and(|s| s["engine"]["inspected"].as_u64() >= Some(2))
    });
    assert!(
        judged.is_some(),
        "the two requests were not judged: {}",
        d.log_text()
    );

    // A 404 prober afterwards: one path per request on one connection until it is cut off.
    let paths: Vec<String> = (0..300)
        .map(|i| {
            format!("GET /scan/{i}/index.html HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0\r\n\r\n")
        })
        .collect();
    let link_ns = link.far.path();
    let prober_thread = std::thread::spawn(move || {
        let _ = guard_tests::enter(&link_ns);
        for p in paths {
            let Some(s) = guard_tests::connect_from(prober, dst, Duration::from_secs(1)) else {
                break;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut c = Client { stream: s };
            if c.send(p.as_bytes()).and_then(|()| c.responses(1)).is_err() {
                break;
            }
        }
    });
    let t = wait_until(Duration::from_secs(15), || banned(&d, prober));
    let _ = prober_thread.join();
    assert!(
        t.is_some(),
        "the 404 prober was not banned after the crafted requests: {}",
        d.log_text()
    );
    println!(
        "404 prober banned {} ms after its first probe",
        t.unwrap_or_default().as_millis()
    );
    let stats = d.json(&["stats"])?;
    assert_eq!(
        stats["engine"]["judge_panics"].as_u64(),
        Some(0),
        "a request panicked the judge: {stats}"
    );
    Ok(())
}
