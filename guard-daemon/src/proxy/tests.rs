//! The transport on loopback with a gate of the tests' own (403 when the query or the body's
//! first bytes say `attack`): a real upstream (hyper, in a thread), real sockets, raw HTTP/1.1
//! written by hand so that every header and timing is the test's choice.
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::*;
use crate::inline::{Seen, Verdict};

/// Answers 403 when the query or the body the gate sees contains `attack`; counts what it saw.
#[derive(Default)]
struct TestGate {
    checked: AtomicU64,
    finished: AtomicU64,
    last_body_len: AtomicU64,
}

impl Gate for TestGate {
    fn check(&self, seen: &Seen<'_>) -> Verdict {
        let n = self.checked.fetch_add(1, Ordering::Relaxed);
        self.last_body_len
            .store(seen.body.len() as u64, Ordering::Relaxed);
        let query = seen.head.uri.query().unwrap_or("");
        let hostile = query.contains("attack") || seen.body.windows(6).any(|w| w == b"attack");
        let id = format!("t{n}");
        if hostile {
            let response = http::Response::builder()
                .status(403)
                .body(Bytes::from_static(b"refused\n"))
                .unwrap();
            Verdict::Answer { id, response }
        } else {
            Verdict::Pass {
                id,
                headers: http::HeaderMap::new(),
            }
        }
    }

    fn finished(&self, _id: &str, _status: u16) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// The upstream: `/slow` answers after 3 s; anything else echoes the request line, its
/// headers and its body's length.
struct App {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

fn app() -> App {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&requests);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let counter = Arc::clone(&counter);
                        async move {
                            counter.fetch_add(1, Ordering::Relaxed);
                            if req.uri().path() == "/slow" {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                            let mut text = format!("{} {}\n", req.method(), req.uri());
                            for (k, v) in req.headers() {
                                let _ = writeln!(text, "{k}: {}", v.to_str().unwrap_or("?"));
                            }
                            let body = req.into_body().collect().await?.to_bytes();
                            let _ = writeln!(text, "body-length: {}", body.len());
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(text))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    App { addr, requests }
}

struct Proxy {
    running: Option<Running>,
    stop: watch::Sender<bool>,
    addr: SocketAddr,
    gate: Arc<TestGate>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(r) = self.running.take() {
            r.wait();
        }
    }
}

fn proxy(upstream: SocketAddr, edit: impl FnOnce(&mut Config)) -> Proxy {
    let mut config = Config::default();
    config.proxy.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.proxy.upstream = Some(format!("http://{upstream}"));
    config.validator.max_body_bytes = 16;
    edit(&mut config);
    let gate = Arc::new(TestGate::default());
    let (stop, rx) = watch::channel(false);
    let running = start(&config, Arc::clone(&gate) as Arc<dyn Gate>, rx).unwrap();
    let addr = running.addrs().0[0];
    Proxy {
        running: Some(running),
        stop,
        addr,
        gate,
    }
}

/// Sends raw bytes, reads until the server closes; returns (status, headers+body text).
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn a_passed_request_reaches_the_upstream_with_its_headers_rewritten() {
    let app = app();
    let p = proxy(app.addr, |_| {});
    let (status, text) = exchange(
        p.addr,
        b"GET /echo?x=1 HTTP/1.1\r\nHost: site.example\r\nConnection: close, X-Hop\r\n\
          X-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 203.0.113.9\r\n\
          Forwarded: for=6.6.6.6\r\nX-Kept: yes\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("GET /echo?x=1\n"), "{text}");
    assert!(text.contains("host: site.example\n"), "{text}");
    assert!(text.contains("x-kept: yes\n"), "{text}");
    assert!(
        !text.contains("x-hop"),
        "a header named by Connection went upstream: {text}"
    );
    assert!(!text.contains("keep-alive: timeout"), "{text}");
    assert!(
        text.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(
        text.contains("forwarded: for=127.0.0.1;host=\"site.example\";proto=http\n"),
        "{text}"
    );
    assert_eq!(p.gate.finished.load(Ordering::Relaxed), 1);
    let counters = p.running.as_ref().unwrap().stats().snapshot();
    assert_eq!(counters.requests, 1);
}

#[test]
fn the_gate_answers_and_the_upstream_never_sees_it() {
    let app = app();
    let p = proxy(app.addr, |_| {});
    let (status, text) = exchange(
        p.addr,
        b"GET /?q=attack HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("refused\n"), "{text}");
    // The body's first bytes count too; past what the gate sees (16 bytes here) they pass,
    // and the whole body reaches the upstream.
    let (status, _) = exchange(
        p.addr,
        b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 10\r\n\r\nxx attack!",
    );
    assert_eq!(status, 403);
    assert_eq!(app.requests.load(Ordering::Relaxed), 0);
    let body = format!("{}attack{}", "a".repeat(20), "b".repeat(5000));
    let req = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let (status, text) = exchange(p.addr, req.as_bytes());
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(&format!("body-length: {}\n", body.len())),
        "{text}"
    );
    assert_eq!(p.gate.last_body_len.load(Ordering::Relaxed), 16);
    assert_eq!(app.requests.load(Ordering::Relaxed), 1);
    assert_eq!(p.running.as_ref().unwrap().stats().snapshot().answered, 2);
}

#[test]
fn bodies_over_max_body_get_413() {
    let app = app();
    let p = proxy(app.addr, |c| c.proxy.max_body = 1000);
    let (status, _) = exchange(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 1001\r\n\r\n",
    );
    assert_eq!(status, 413);
    // Chunked: found while streaming, past what the gate reads.
    let chunk = "z".repeat(600);
    let req = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let (status, text) = exchange(p.addr, req.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert_eq!(p.running.as_ref().unwrap().stats().snapshot().status_413, 2);
}

#[test]
fn a_dead_upstream_gives_502_and_a_slow_one_504() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = proxy(dead, |_| {});
    let (status, _) = exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 502);
    let app = app();
    let p = proxy(app.addr, |c| {
        c.proxy.upstream_timeout = Duration::from_millis(500);
    });
    let start = Instant::now();
    let (status, _) = exchange(
        p.addr,
        b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 504);
    assert!(start.elapsed() < Duration::from_secs(2));
    let s = p.running.as_ref().unwrap().stats().snapshot();
    assert_eq!((s.status_504, s.upstream_errors), (1, 1));
}

#[test]
fn a_slow_head_gets_408_and_an_idle_connection_is_closed() {
    let app = app();
    let p = proxy(app.addr, |c| {
        c.proxy.header_timeout = Duration::from_millis(400);
        c.proxy.idle_timeout = Duration::from_secs(1);
    });
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let start = Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    // A keep-alive connection outlives the head timer while idle, and is closed after the
    // idle one.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let start = Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "no bytes, only the close");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let st = p.running.as_ref().unwrap().stats().snapshot();
    assert_eq!((st.status_408, st.idle_closed), (1, 1));
}

#[test]
fn shutdown_lets_a_request_in_flight_finish() {
    let app = app();
    let p = proxy(app.addr, |_| {});
    let addr = p.addr;
    let client = std::thread::spawn(move || {
        exchange(
            addr,
            b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    drop(p);
    let (status, _) = client.join().unwrap();
    assert_eq!(status, 200, "the request in flight was cut");
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

/// An upstream written by hand: answers `ok` to each request head and counts its connections;
/// with `close_after_each`, it closes the connection after every answer without saying so.
fn raw_upstream(close_after_each: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&conns);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            counter.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    buf.clear();
                    while !buf.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        buf.push(byte[0]);
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .is_err()
                        || close_after_each
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[test]
fn upstream_connections_are_reused_and_a_closed_one_is_not() {
    let (addr, conns) = raw_upstream(false);
    let p = proxy(addr, |_| {});
    for _ in 0..5 {
        let (status, _) = exchange(
            p.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200);
    }
    // One per worker (connections go to the workers in turn, each has its own pool).
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) as u64;
    assert_eq!(
        conns.load(Ordering::Relaxed),
        workers.min(5),
        "pooled connections"
    );

    // The upstream closes each connection after its answer: the next request must not be
    // lost on the dead one.
    let (addr, conns) = raw_upstream(true);
    let p = proxy(addr, |_| {});
    for i in 0..5 {
        let (status, text) = exchange(
            p.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "request {i}: {text}");
    }
    assert_eq!(conns.load(Ordering::Relaxed), 5);
    assert_eq!(
        p.running
            .as_ref()
            .unwrap()
            .stats()
            .snapshot()
            .upstream_errors,
        0
    );
}

#[test]
fn a_body_that_stalls_after_the_judged_part_gets_408() {
    let app = app();
    let p = proxy(app.addr, |c| {
        c.proxy.idle_timeout = Duration::from_millis(800);
    });
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 40 of 100 bytes: more than the 16 the gate sees, so the request goes upstream, then the
    // body stops.
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    s.write_all(&[b'x'; 40]).unwrap();
    let start = Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(
        app.requests.load(Ordering::Relaxed),
        1,
        "the app saw the head"
    );
    assert_eq!(p.running.as_ref().unwrap().stats().snapshot().status_408, 1);
}
