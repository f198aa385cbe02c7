//! `cargo xtask bench tap` (load part): guard's HTTP tap under a steady 10,000 requests/s from
//! the far side of a veth pair, against a real HTTP server on the guarded side. Reports the
//! rate achieved and the fraction of requests that reached the request log (goal: 100 %).
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use guard_tests::{Daemon, Link, http::start_server, skip_reason, wait_until};

const PORT: u16 = 8080;
const RATE: u64 = 10_000;
const SECONDS: u64 = 5;
const CONNECTIONS: u64 = 20;

fn main() -> anyhow::Result<()> {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return Ok(());
    }
    let link = Link::exclusive()?;
    start_server(&link.near, PORT)?;
    // One client at 10,000 requests/s is a flood to the engine: it only watches here (shadow
    // mode), since this measures capture and logging, not the ban.
    let daemon = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[engine]\nmode = \"shadow\"\n\n[tap]\nhttp_ports = [{PORT}]\n"),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let per_conn = RATE / CONNECTIONS;
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..CONNECTIONS {
        let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
        let path = link.far.path();
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            guard_tests::enter(&path)?;
            let stream = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut writer = stream;
            let begin = Instant::now();
            let total = per_conn * SECONDS;
            for i in 0..total {
                // Pace: request i is due at i / per_conn seconds.
                let due = Duration::from_micros(i * 1_000_000 / per_conn);
                if let Some(wait) = due.checked_sub(begin.elapsed()) {
                    std::thread::sleep(wait);
                }
                let body = if i % 4 == 0 { "x".repeat((i % 700) as usize) } else { String::new() };
                let req = if body.is_empty() {
                    format!("GET /load/{c}/{i}?n={i} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: tap-load\r\n\r\n")
                } else {
                    format!("POST /load/{c}/{i} HTTP/1.1\r\nHost: guard.test\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                };
                if writer.write_all(req.as_bytes()).is_err() || read_response(&mut reader).is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    let elapsed = start.elapsed();
    let sent = done.load(Ordering::Relaxed);
    let logged = || {
        daemon
            .json(&["stats"])
            .ok()
            .and_then(|s| s["logs"]["written"].as_u64())
            .unwrap_or(0)
    };
    let _ = wait_until(Duration::from_secs(10), || logged() >= sent);
    let stats = daemon.json(&["stats"]).context("stats")?;
    let written = stats["logs"]["written"].as_u64().unwrap_or(0);
    let tap = &stats["tap"][0];
    println!(
        "tap load: {sent} requests in {:.2} s = {:.0} requests/s over {CONNECTIONS} keep-alive connections ({} failed)",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "  reached the request log: {written} of {sent} = {:.2} %   (goal: 100 %)",
        100.0 * written as f64 / sent.max(1) as f64
    );
    println!(
        "  capture: {}   tap requests: {}   log writer dropped: {}   http malformed: {}",
        tap["capture"], tap["requests"], stats["logs"]["dropped"], tap["tap"]["http_malformed"]
    );
    Ok(())
}

fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 ") {
        return Err(std::io::Error::other("bad status line"));
    }
    guard_tests::http::skip_message(reader)
}
