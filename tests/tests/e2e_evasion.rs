//! End to end for what the tap must not miss: an HTTP request over a real IPv6 connection whose
//! every packet carries a destination-options extension header (set on the client's socket with
//! `IPV6_DSTOPTS`, so the kernel writes it into the SYN and every data segment). The `http_tap`
//! filter used to keep only TCP directly after the fixed IPv6 header, hiding such requests from
//! guard; now they are logged as verified and judged (the prober is banned). And a blind reset:
//! an off-path sender's RST with a guessed sequence number no longer closes a verified flow in
//! the tap (the next request on it was then picked up mid-stream, unverified). And a request with
//! more header lines than the parser's bound: judged (a protocol finding), and the next request on
//! the keep-alive connection still seen (the direction used to stop being parsed).
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

use guard_tests::http::{Client, start_server};
use guard_tests::rawtcp::Forger;
use guard_tests::{Daemon, Link, require_root, wait_until};
use serde_json::Value;

const PORT: u16 = 8080;

/// A destination-options header of 8 bytes: next header (the kernel fills it), length 0, one
/// `PadN` option of four zero bytes.
const DSTOPTS: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];

/// A connection to `dst` whose packets carry [`DSTOPTS`], or why it could not be made (within a
/// second).
fn connect_with_dstopts(dst: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V6(v6) = dst else {
        return Err(std::io::Error::other("not an ipv6 address"));
    };
    let last = std::io::Error::last_os_error;
    // SAFETY: plain socket syscalls on an fd this function owns (closed by the `TcpStream` on
    // every path); the option and address buffers live across the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last());
        }
        let stream = TcpStream::from_raw_fd(fd);
        if libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_DSTOPTS,
            DSTOPTS.as_ptr().cast(),
            DSTOPTS.len() as u32,
        ) != 0
        {
            return Err(last());
        }
        // A connect timeout: once the client is banned its SYNs are dropped.
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        );
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_port = v6.port().to_be();
        sa.sin6_addr.s6_addr = v6.ip().octets();
        if libc::connect(
            fd,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in6>() as u32,
        ) != 0
        {
            return Err(last());
        }
        Ok(stream)
    }
}

fn logs(d: &Daemon) -> Vec<Value> {
    d.cli(&["logs", "--json", "--limit", "all"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// True when a ban covers `client` itself or `prefix` (the /64 an engine ban of IPv6 covers).
fn banned(d: &Daemon, client: IpAddr, prefix: &str) -> bool {
    let names = [
        client.to_string(),
        format!("{client}/128"),
        format!("{prefix}/64"),
    ];
    d.json(&["ban", "ls"]).ok().is_some_and(|v| {
        v.as_array().is_some_and(|bans| {
            bans.iter()
                .any(|b| names.iter().any(|n| b["addr"].as_str() == Some(n.as_str())))
        })
    })
}

/// An HTTP server on `[::]:PORT` in the near namespace: every request gets a 404 and the
/// connection is closed.
fn start_v6_server(link: &Link) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    link.near.spawn(move || {
        let listener = std::net::TcpListener::bind(("::", PORT));
        let _ = tx.send(listener.is_ok());
        let Ok(listener) = listener else { return };
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    anyhow::ensure!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false),
        "HTTP server did not start"
    );
    Ok(())
}

#[test]
fn requests_behind_an_ipv6_destination_options_header_are_seen_and_judged() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_v6_server(&link)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let dst = SocketAddr::new(link.near_v6, PORT);
    let client = link.far_v6;
    let prefix = link.v6_prefix();
    // Probes for secrets files, one per connection, until the connection fails (the client is
    // banned) or 40 were answered.
    let answered = link.far.run(move || -> anyhow::Result<usize> {
        let mut answered = 0;
        for i in 0..40 {
            let Ok(mut s) = connect_with_dstopts(dst) else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let req = format!(
                "GET /.env?{i} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: sqlmap/1.7\r\nConnection: close\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).is_err() {
                break;
            }
            let mut buf = Vec::new();
            if s.read_to_end(&mut buf).is_err() || buf.is_empty() {
                break;
            }
            answered += 1;
        }
        Ok(answered)
    })??;
    let seen = |d: &Daemon| {
        logs(d)
            .into_iter()
            .filter(|r| r["client"] == client.to_string())
            .collect::<Vec<_>>()
    };
    let _ = wait_until(Duration::from_secs(10), || !seen(&d).is_empty());
    let records = seen(&d);
    assert!(
        !records.is_empty(),
        "no request behind a destination-options header was logged ({answered} answered); \
         stats: {}",
        d.json(&["stats"])?
    );
    assert!(
        records.iter().all(|r| r["trust"] == "verified"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/.env"))),
        "{records:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || banned(&d, client, &prefix)).is_some(),
        "the prober behind the extension header was not banned ({answered} answered, {} logged): {}",
        records.len(),
        d.json(&["ban", "ls"])?
    );
    Ok(())
}

/// A counter of the first interface's tap, as `guard stats` shows it (published periodically).
fn tap_stat(d: &Daemon, name: &str) -> Option<u64> {
    d.json(&["stats"])
        .ok()
        .and_then(|s| s["tap"][0]["tap"][name].as_u64())
}

#[test]
fn a_blind_reset_does_not_close_a_verified_flow() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let (IpAddr::V4(server), IpAddr::V4(client)) = (link.near_v4, link.far_v4) else {
        anyhow::bail!("the link has no IPv4 addresses");
    };
    let dst = SocketAddr::new(link.near_v4, PORT);
    let request =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: test\r\n\r\n");
    let (first, second) = (request("/before-reset"), request("/after-reset"));
    Client::with(&link.far, dst, move |c| {
        c.send(first.as_bytes())?;
        c.responses(1)?;
        // An off-path sender knows the four-tuple but not the sequence number: it guesses.
        let port = c.stream.local_addr()?.port();
        let f = Forger::new().map_err(std::io::Error::other)?;
        f.send(client, port, server, PORT, 0x5eed_0bad, 0, 0x04, &[])
            .map_err(std::io::Error::other)?;
        std::thread::sleep(Duration::from_millis(300));
        c.send(second.as_bytes())?;
        c.responses(1)?;
        Ok(())
    })?;
    let both = |d: &Daemon| {
        logs(d)
            .into_iter()
            .filter(|r| r["client"] == client.to_string())
            .collect::<Vec<_>>()
    };
    let _ = wait_until(Duration::from_secs(10), || both(&d).len() >= 2);
    let records = both(&d);
    let stats = d.json(&["stats"])?;
    assert_eq!(records.len(), 2, "{records:?}; stats: {stats}");
    // The second request was seen on the same, still verified flow.
    assert!(
        records.iter().all(|r| r["trust"] == "verified"),
        "{records:?}; stats: {stats}"
    );
    // The tap's counters are published a moment later.
    let _ = wait_until(Duration::from_secs(10), || {
        tap_stat(&d, "resets_out_of_window") == Some(1)
    });
    let stats = d.json(&["stats"])?;
    assert_eq!(
        tap_stat(&d, "resets_out_of_window"),
        Some(1),
        "stats: {stats}"
    );
    Ok(())
}

#[test]
fn a_request_with_too_many_headers_is_judged_and_the_connection_still_parsed() -> anyhow::Result<()>
{
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let client = link.far_v4;
    let dst = SocketAddr::new(link.near_v4, PORT);
    let mut padded =
        String::from("GET /padded HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: test\r\n");
    for i in 0..150 {
        padded.push_str("X-Pad-");
        padded.push_str(&i.to_string());
        padded.push_str(": 1\r\n");
    }
    padded.push_str("\r\n");
    let next = "GET /next HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: test\r\n\r\n";
    Client::with(&link.far, dst, move |c| {
        c.send(padded.as_bytes())?;
        c.responses(1)?;
        c.send(next.as_bytes())?;
        c.responses(1)?;
        Ok(())
    })?;
    let seen = |d: &Daemon| {
        logs(d)
            .into_iter()
            .filter(|r| r["client"] == client.to_string())
            .collect::<Vec<_>>()
    };
    let _ = wait_until(Duration::from_secs(10), || seen(&d).len() >= 2);
    let records = seen(&d);
    let stats = d.json(&["stats"])?;
    let path = |p: &str| records.iter().find(|r| r["path"] == p).cloned();
    let padded = path("/padded");
    assert!(
        padded.as_ref().is_some_and(|r| r["blocked"] == true
            && r["reason"].as_str().is_some_and(|s| s.contains("protocol"))),
        "{records:?}; stats: {stats}"
    );
    assert!(path("/next").is_some(), "{records:?}; stats: {stats}");
    let _ = wait_until(Duration::from_secs(10), || {
        tap_stat(&d, "too_many_headers") == Some(1)
    });
    let stats = d.json(&["stats"])?;
    assert_eq!(tap_stat(&d, "too_many_headers"), Some(1), "stats: {stats}");
    assert_eq!(tap_stat(&d, "http_malformed"), Some(0), "stats: {stats}");
    Ok(())
}
