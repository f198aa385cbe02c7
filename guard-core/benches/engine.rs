//! Engine benchmark: decisions per second on one core with 100,000 active clients in memory,
//! and the engine's memory per client.
//!
//! Memory is measured with a counting global allocator: live heap bytes after the engine has
//! seen every client (40 requests each, past the grace period, so every window, ring and sample list is in use) minus
//! live bytes before it was made, divided by the number of clients. The engine's own estimate
//! (`approx_table_bytes`) and the growth of the resident set (which includes the allocator's
//! per-allocation overhead) are printed beside it.
//!
//! Throughput: one thread replays a mix of requests (pages, API calls, static assets, 404s,
//! script user agents, a few probes) round-robin over the clients with the clock advancing, and
//! divides the decisions by the wall time. Events are prepared in advance; only the client
//! address and time change per call, so the figure is the engine's work alone.
//!
//! Sweep: the time of one expiry pass (`Engine::expire`) over the full table keeping every
//! client, then of a sweep in slices (as the daemon runs it) that drops them all: the longest
//! slice is the longest the engine's lock is held.
//!
//! Run: `cargo bench -p guard-core --bench engine` (release profile).
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guard_core::engine::{Decision, Engine, EngineConfig, SWEEP_SLICE};
use guard_core::tap::{RequestEvent, RequestHeaders};

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CLIENTS: u32 = 100_000;
const WARM_ROUNDS: u32 = 40;
const DECISIONS: u64 = 4_000_000;
const T0: u64 = 1_800_000_000;
/// The last events of [`mix`] are hostile.
const HOSTILE: usize = 3;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn event(path: &str, query: Option<&str>, status: u16, ua: Option<&str>) -> RequestEvent {
    RequestEvent {
        conn_id: 1,
        ts: Duration::from_secs(T0),
        client: ip(0),
        trust: guard_core::tap::Trust::Verified,
        peer: SocketAddr::new(ip(0), 40_000),
        server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 80),
        user: None,
        method: "GET".to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        http_minor: 1,
        headers: RequestHeaders {
            user_agent: ua.map(str::to_owned),
            host: Some("shop.example".to_owned()),
            ..RequestHeaders::default()
        },
        all_headers: guard_core::tap::http::HeaderList::default(),
        body: Vec::new(),
        body_len: 0,
        status: Some(status),
        latency: Some(Duration::from_millis(4)),
        bytes_in: 420,
        bytes_out: 5300,
        response_content_type: Some("text/html".to_owned()),
    }
}

/// The request mix: mostly a browsing site, some API, some misses, a few hostile probes.
fn mix() -> Vec<RequestEvent> {
    let ff = Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");
    let mut v = Vec::new();
    for i in 0..12 {
        v.push(event(&format!("/products/item-{i}x"), None, 200, ff));
        v.push(event(&format!("/static/js/chunk-{i}.js"), None, 200, ff));
        v.push(event(&format!("/media/{i}.webp"), None, 200, ff));
        v.push(event("/api/cart", Some("add=1"), 200, ff));
    }
    for i in 0..6 {
        v.push(event(
            &format!("/api/v1/orders/{i}"),
            Some("page=2"),
            200,
            Some("python-requests/2.32"),
        ));
        v.push(event(
            &format!("/search/q{i}x"),
            Some("q=blue%20shoe"),
            200,
            ff,
        ));
    }
    v.push(event("/favicon.ico", None, 404, ff));
    v.push(event("/prodcuts", None, 404, ff));
    v.push(event("/admin", None, 302, Some("curl/8.5.0")));
    v.push(event("/login", None, 401, ff));
    v.push(event("/.env", None, 404, Some("Go-http-client/1.1")));
    v.push(event(
        "/download",
        Some("file=..%2F..%2Fetc%2Fpasswd"),
        400,
        ff,
    ));
    v
}

/// Resident set size of this process in bytes (Linux), 0 if unreadable.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let cfg = EngineConfig::default();
    let mut events = mix();
    let rss_before = rss();
    let before = LIVE.load(Ordering::Relaxed);
    let mut engine = Engine::new(&cfg);
    let mut now = Duration::from_secs(T0);
    // Warm-up: every client sends WARM_ROUNDS benign requests of the mix, clients interleaved,
    // the clock moving 10 µs per request (100,000 requests/s in aggregate, one per client per
    // second).
    let step = Duration::from_micros(10);
    let benign = events.len() - HOSTILE;
    let mut n = 0usize;
    for _ in 0..WARM_ROUNDS {
        for c in 0..CLIENTS {
            let ev = &mut events[n % benign];
            n += 1;
            ev.client = ip(c);
            now += step;
            black_box(engine.observe(now, ev, None));
        }
    }
    let live = LIVE.load(Ordering::Relaxed) - before;
    let rss_grown = rss().saturating_sub(rss_before);
    let stats = engine.stats();
    let per = |bytes: usize| bytes as f64 / f64::from(CLIENTS);
    println!(
        "engine memory: {} clients, {} bytes live heap = {:.0} bytes/client by the counting \
         allocator ({:.0} by the engine's own accounting; resident set grew {:.0} bytes/client, \
         malloc overhead included)",
        stats.clients,
        live,
        per(live),
        per(engine.approx_table_bytes()),
        per(rss_grown),
    );

    let mut counts = [0u64; 4];
    let start = Instant::now();
    for i in 0..DECISIONS {
        let c = (i % u64::from(CLIENTS)) as u32;
        let len = events.len();
        let ev = &mut events[(i as usize) % len];
        ev.client = ip(c);
        now += step;
        let d = engine.observe(now, ev, None);
        counts[match d {
            Decision::Allow => 0,
            Decision::Block { .. } => 1,
            Decision::Ban { .. } => 2,
            Decision::Triage { .. } => 3,
        }] += 1;
        black_box(&d);
    }
    let elapsed = start.elapsed();
    let rate = DECISIONS as f64 / elapsed.as_secs_f64();
    println!(
        "engine throughput: {DECISIONS} decisions in {:.2} s on one thread = {:.0} decisions/s per core \
         ({:.0} ns each) with {} active clients",
        elapsed.as_secs_f64(),
        rate,
        1e9 / rate,
        engine.stats().clients,
    );
    println!(
        "decision mix: allow {}, block {}, ban {}, triage {}",
        counts[0], counts[1], counts[2], counts[3]
    );

    // The expiry sweep (every engine.sweep_interval, under the engine's lock): a pass over the
    // table that keeps every client, then one that drops them all.
    let clients = engine.stats().clients;
    let start = Instant::now();
    drop(engine.expire(now));
    let keep = start.elapsed();
    // Every client expires: slice by slice as the daemon does, the longest slice (the engine's
    // lock is held that long at most) and the freeing (outside the lock) timed apart.
    let later = now + cfg.client_expiry + Duration::from_secs(1);
    let (mut longest, mut slices, mut gone, mut free) = (Duration::ZERO, 0, 0, Duration::ZERO);
    let mut from = Some(0);
    let start = Instant::now();
    while let Some(at) = from {
        let t = Instant::now();
        let (expired, next) = engine.expire_slice(later, at, SWEEP_SLICE);
        longest = longest.max(t.elapsed());
        slices += 1;
        gone += expired.len();
        let t = Instant::now();
        drop(expired);
        free += t.elapsed();
        from = next;
    }
    let all = start.elapsed();
    println!(
        "engine sweep: {:.2} ms over {clients} active clients (none idle; every {} s by default: \
         {:.4} % of one core); all {gone} expiring: {:.0} ms in {slices} slices of {SWEEP_SLICE}, \
         the engine's lock held {:.2} ms at most, {:.0} ms of it freeing outside the lock",
        keep.as_secs_f64() * 1e3,
        cfg.sweep_interval.as_secs(),
        keep.as_secs_f64() / cfg.sweep_interval.as_secs_f64() * 100.0,
        all.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3,
        free.as_secs_f64() * 1e3,
    );
}
