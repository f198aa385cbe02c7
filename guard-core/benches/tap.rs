//! Tap throughput: requests/s on one core through packet parsing, TCP reassembly, HTTP parsing and
//! pairing, over a generated corpus (keep-alive connections, mixed request sizes, interleaved), and
//! the same figure for plain `httparse` on the same request bytes, as a ratio.
//!
//! Run: `cargo bench -p guard-core --bench tap` (optional arguments: seconds per measurement,
//! `--tap-only` to skip the baseline, e.g. under a profiler).
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use guard_core::tap::synth::Conversation;
use guard_core::tap::{Tap, TapConfig};

const CONNECTIONS: usize = 256;
const REQUESTS_PER_CONNECTION: usize = 8;
const MSS: usize = 1448;

/// A deterministic generator (xorshift) so every run measures the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn request(rng: &mut Rng, i: usize, gets_only: bool) -> Vec<u8> {
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let pick = if gets_only {
        rng.next() % 7
    } else {
        rng.next() % 10
    };
    match pick {
        // Small GET.
        0..=3 => format!("GET /static/app.{i}.js HTTP/1.1\r\nHost: example.com\r\n\r\n").into_bytes(),
        // Browser-like GET with many headers.
        4..=6 => format!(
            "GET /api/v1/items?page={i}&sort=desc HTTP/1.1\r\nHost: example.com\r\nUser-Agent: {ua}\r\n\
             Accept: application/json\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, br\r\n\
             Referer: https://example.com/items\r\nCookie: session=abcdef0123456789; theme=dark\r\n\
             Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl\r\n\r\n"
        )
        .into_bytes(),
        // JSON POST, 1–4 KiB.
        7 | 8 => {
            let body = "x".repeat(1024 + (rng.next() % 3072) as usize);
            format!(
                "POST /api/v1/items HTTP/1.1\r\nHost: example.com\r\nUser-Agent: {ua}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"v\":\"{body}\"}}",
                body.len() + 8
            )
            .into_bytes()
        }
        // Chunked upload, 32 KiB.
        _ => {
            let mut r = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..8 {
                r.extend_from_slice(b"1000\r\n");
                r.extend(std::iter::repeat_n(b'u', 4096));
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        }
    }
}

/// The packets of every connection, interleaved round-robin, and every request's bytes.
fn corpus(gets_only: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let server: SocketAddr = "198.51.100.1:80".parse().unwrap();
    let mut per_conn: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut requests = Vec::new();
    for c in 0..CONNECTIONS {
        let client = SocketAddr::new(
            format!("10.{}.{}.{}", c / 65536, c / 256 % 256, c % 256)
                .parse()
                .unwrap(),
            40_000,
        );
        let mut conv = Conversation::new(client, server);
        let mut packets = conv.handshake();
        for i in 0..REQUESTS_PER_CONNECTION {
            let req = request(&mut rng, i, gets_only);
            packets.extend(conv.request(&req, MSS));
            let body = "r".repeat((rng.next() % if gets_only { 256 } else { 2048 }) as usize);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            packets.extend(conv.response(resp.as_bytes(), MSS));
            requests.push(req);
        }
        packets.push(conv.client_fin());
        packets.push(conv.server_fin());
        per_conn.push(packets);
    }
    let mut interleaved = Vec::new();
    let longest = per_conn.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for conn in &per_conn {
            if let Some(p) = conn.get(i) {
                interleaved.push(p.clone());
            }
        }
    }
    (interleaved, requests)
}

/// Runs `f` (which returns requests processed) repeatedly for about `budget`; returns requests/s.
fn measure(budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut requests = 0;
    while start.elapsed() < budget {
        requests += f();
    }
    requests as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let budget = Duration::from_secs_f64(secs);
    let tap_only = std::env::args().any(|a| a == "--tap-only");
    for (name, gets_only) in [
        (
            "mixed: GETs, 1-4 KiB JSON POSTs, 32 KiB chunked uploads",
            false,
        ),
        (
            "GETs only: small and browser-like heads, small responses",
            true,
        ),
    ] {
        println!("== {name}");
        run(budget, gets_only, tap_only);
    }
}

fn run(budget: Duration, gets_only: bool, tap_only: bool) {
    let (packets, requests) = corpus(gets_only);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let request_bytes: usize = requests.iter().map(Vec::len).sum();
    println!(
        "corpus: {} connections, {} requests ({} KiB of requests), {} packets ({} KiB)",
        CONNECTIONS,
        requests.len(),
        request_bytes / 1024,
        packets.len(),
        bytes / 1024
    );

    let config = TapConfig::default();
    let mut events = Vec::with_capacity(requests.len());
    let tap_rps = measure(budget, || {
        let mut tap = Tap::new(&config);
        let ts = Duration::from_secs(1_700_000_000);
        for p in &packets {
            tap.on_packet(ts, p, &mut events);
        }
        let n = events.len();
        assert_eq!(n, requests.len(), "every request paired");
        black_box(&events);
        events.clear();
        n
    });

    if tap_only {
        println!("tap: {tap_rps:.0} requests/s/core");
        return;
    }
    let httparse_rps = measure(budget, || {
        let mut n = 0;
        for r in &requests {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = req.parse(black_box(r)) {
                black_box((req.method, req.path, len));
                n += 1;
            }
        }
        n
    });

    println!("tap (packet parse + reassembly + http + pairing): {tap_rps:>12.0} requests/s/core");
    println!(
        "httparse on the same request bytes:               {httparse_rps:>12.0} requests/s/core"
    );
    println!(
        "ratio tap / httparse:                              {:>12.3}",
        tap_rps / httparse_rps
    );
    println!(
        "tap throughput:                                   {:>12.1} MiB/s of packets",
        tap_rps / requests.len() as f64 * bytes as f64 / (1024.0 * 1024.0)
    );
}
