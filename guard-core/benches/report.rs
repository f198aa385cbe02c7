//! Daily report benchmark: 10,000,000 log records of one day through [`DayAggregate`] on one
//! core, and the most heap it holds meanwhile.
//!
//! The records are made on the fly from a pool of 100,000 raw paths (numbers, UUIDs and hashes
//! under 20 endpoints, so that grouping has work to do), with statuses, latencies and block
//! reasons drawn from a fixed seed; nothing is kept per record. The baseline, measured in the
//! same run over the same records, is the same loop folding each record into a checksum (its
//! status, latency and path length): what producing the records costs alone. The goal is the
//! whole day within 10 s (5 s hoped for) in bounded memory: the heap's peak is printed, and
//! does not grow with the number of records.
//!
//! Run: `cargo bench -p guard-core --bench report` (release profile).
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guard_core::report::{DayAggregate, Entry, Limits, Window};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const RECORDS: u64 = 10_000_000;
const PATHS: usize = 100_000;
/// Midnight UTC, 3 December 2026.
const DAY: u64 = 1_796_256_000;
const ENDPOINTS: [&str; 20] = [
    "/users",
    "/orders",
    "/items",
    "/blobs",
    "/api/v1/accounts",
    "/api/v1/invoices",
    "/cart",
    "/search",
    "/login",
    "/logout",
    "/static/img",
    "/static/js",
    "/feed",
    "/posts",
    "/comments",
    "/tags",
    "/admin/users",
    "/reports",
    "/health",
    "/metrics",
];
const REASONS: [&str; 6] = [
    "validator: sqli",
    "validator: xss",
    "engine: flood",
    "engine: scanner",
    "banned address",
    "quota",
];

/// splitmix64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn paths() -> Vec<String> {
    (0..PATHS as u64)
        .map(|i| {
            let r = mix(i);
            let base = ENDPOINTS[(r % 20) as usize];
            match (r >> 8) % 4 {
                0 => format!("{base}/{}", r % 1_000_000),
                1 => format!(
                    "{base}/{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    r as u32,
                    (r >> 32) as u16,
                    (r >> 48) as u16,
                    (r >> 16) as u16,
                    r & 0xffff_ffff_ffff
                ),
                2 => format!("{base}/{r:016x}{:016x}/raw", mix(r)),
                _ => base.to_owned(),
            }
        })
        .collect()
}

/// 5,000 offenders, more than the report holds (its top list then works past its capacity).
fn offenders() -> Vec<String> {
    (0..5_000u32)
        .map(|i| std::net::Ipv4Addr::from(0xc000_0000 | mix(u64::from(i)) as u32).to_string())
        .collect()
}

/// Record `i` of the day.
fn record<'a>(paths: &'a [String], offenders: &'a [String], i: u64) -> Entry<'a> {
    let r = mix(i ^ 0x5eed);
    let status = match r % 100 {
        0..=84 => 200,
        85..=89 => 304,
        90..=95 => 404,
        96..=97 => 403,
        _ => 500,
    };
    let blocked = r.is_multiple_of(50);
    Entry {
        time: Duration::from_secs(DAY + i * 86_400 / RECORDS),
        path: &paths[((r >> 20) % PATHS as u64) as usize],
        status: (!r.is_multiple_of(997)).then_some(status),
        latency_ms: Some(((r >> 40) % 2_000_000) as f64 / 1000.0),
        blocked,
        reason: blocked.then(|| REASONS[((r >> 12) % 6) as usize]),
        // A skewed choice: a few offenders make most of the blocks.
        offender: blocked.then(|| {
            let o = ((r >> 24) % 5_000) * ((r >> 36) % 5_000) / 5_000;
            offenders[o as usize].as_str()
        }),
    }
}

fn main() {
    let paths = paths();
    let offenders = offenders();
    let window = Window {
        start: Duration::from_secs(DAY),
        end: Duration::from_secs(DAY + 86_400),
    };

    let t = Instant::now();
    let mut sum = 0u64;
    for i in 0..RECORDS {
        let e = record(&paths, &offenders, i);
        sum = sum
            .wrapping_add(u64::from(e.status.unwrap_or(0)))
            .wrapping_add(e.latency_ms.unwrap_or(0.0) as u64)
            .wrapping_add(e.path.len() as u64);
    }
    black_box(sum);
    let baseline = t.elapsed();

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let t = Instant::now();
    let mut day = DayAggregate::new(window, Limits::default());
    for i in 0..RECORDS {
        day.add(&record(&paths, &offenders, i));
    }
    let report = black_box(day.finish());
    let took = t.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(report.total, RECORDS);

    println!("daily report over {RECORDS} records ({PATHS} raw paths, one core)");
    println!(
        "  baseline (the records alone): {:>6.2} s",
        baseline.as_secs_f64()
    );
    println!(
        "  report:                       {:>6.2} s  ({:.2}x the baseline; {:.2} M records/s)",
        took.as_secs_f64(),
        took.as_secs_f64() / baseline.as_secs_f64(),
        RECORDS as f64 / took.as_secs_f64() / 1e6
    );
    println!(
        "  heap held at most:            {:>6.2} MB (p50 {} ms, p99 {} ms, top endpoint {})",
        peak as f64 / 1e6,
        report.p50_ms.unwrap_or_default(),
        report.p99_ms.unwrap_or_default(),
        report.most_hit.first().map_or("-", |e| e.path.as_str())
    );
    println!(
        "  (wall-clock times: on a loaded machine compare the ratio, or run under \
         `/usr/bin/time` for the CPU time)"
    );
    println!("  goal: at most 10 s (hoped 5 s), memory independent of the record count");
}
