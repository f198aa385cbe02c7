//! Quota benchmark: decisions per second on one core with 1,000,000 users and a plan of 10
//! rules (memory windows: second, minute, hour, day), and the table's bytes per active user.
//!
//! A decision is what a request costs: finding the plan's first matching rule (10 rules, exact,
//! prefix and template paths, method filters) and the atomic check-and-charge of the rule's
//! windows in the sharded table. The baseline, measured in the same run over the same keys in
//! the same order, is a plain `std::collections::HashMap<u128, u32>` lookup-and-increment
//! (the standard hasher, no lock, no windows): figures are printed as a ratio to it so that they compare
//! across machines.
//!
//! Memory is measured with a counting global allocator: live heap bytes after every user has
//! been charged once (one (user, rule) entry each) minus live bytes before, per user; a user
//! active under k rules holds k entries.
//!
//! Run: `cargo bench -p guard-core --bench quota` (release profile).
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use guard_core::quota::{Limits, PartitionKey, Plan, PlanSet, QuotaTable, Rule, Window};

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

const USERS: usize = 1_000_000;
const DECISIONS: usize = 10_000_000;
/// 2027-01-01 00:00:00 UTC minus 5 s: the run crosses a second, minute, hour, day and year edge.
const T0_US: u64 = 1_798_761_595_000_000;
/// The clock moves 1 µs per decision.
const STEP_US: u64 = 1;
/// Visits users in a scattered order (odd, so coprime with 10^6), as real traffic does.
const STRIDE: usize = 999_983;

fn plan() -> PlanSet {
    let l = |s, m, h, d| {
        Limits::default()
            .with(Window::Second, s)
            .with(Window::Minute, m)
            .with(Window::Hour, h)
            .with(Window::Day, d)
    };
    let rules = vec![
        Rule::new("/api/v1/login", Some("POST"), l(1, 5, 20, 100)).unwrap(),
        Rule::new("/api/v1/users/{id}", Some("DELETE"), l(2, 10, 50, 200)).unwrap(),
        Rule::new("/api/v1/users/{id}", None, l(10, 100, 1000, 10_000)).unwrap(),
        Rule::new(
            "/api/v1/users/{id}/posts/{post}",
            None,
            l(10, 100, 1000, 10_000),
        )
        .unwrap(),
        Rule::new("/api/v1/search", None, l(5, 60, 600, 5000)).unwrap(),
        Rule::new("/api/v1/orders/*", Some("POST"), l(5, 30, 300, 3000)).unwrap(),
        Rule::new("/api/v1/orders/*", None, l(20, 200, 2000, 20_000)).unwrap(),
        Rule::new("/api/v1/export/{kind}", None, l(1, 2, 10, 50)).unwrap(),
        Rule::new("/api/v2/*", None, l(50, 500, 5000, 50_000)).unwrap(),
        Rule::new("/*", None, l(100, 1000, 10_000, 100_000)).unwrap(),
    ];
    PlanSet::new(
        vec![Plan {
            name: "free".into(),
            rules,
        }],
        Some("free"),
    )
    .unwrap()
}

/// One request per rule, in rule order (each matches its own rule first).
const REQUESTS: [(&str, &str); 10] = [
    ("POST", "/api/v1/login"),
    ("DELETE", "/api/v1/users/42"),
    ("GET", "/api/v1/users/42"),
    ("GET", "/api/v1/users/42/posts/7"),
    ("GET", "/api/v1/search"),
    ("POST", "/api/v1/orders/new"),
    ("GET", "/api/v1/orders/981"),
    ("GET", "/api/v1/export/csv"),
    ("GET", "/api/v2/items"),
    ("GET", "/index.html"),
];

fn main() {
    let set = plan();
    let plan = set.get("free").unwrap();
    for (i, (m, p)) in REQUESTS.iter().enumerate() {
        assert_eq!(plan.rule_for(m, p).map(|r| r.id), Some(i as u16), "{m} {p}");
    }
    let keys: Vec<PartitionKey> = (0..USERS)
        .map(|i| PartitionKey::user(&format!("user-{i}"), b"bench-salt"))
        .collect();
    let order = |i: usize| (i * STRIDE) % USERS;

    // Memory: every user charged once, under the rule of its request.
    let before = LIVE.load(Ordering::Relaxed);
    let table = QuotaTable::new(0x5eed);
    let t0 = T0_US / 1_000_000;
    for (u, key) in keys.iter().enumerate() {
        let (m, p) = REQUESTS[u % 10];
        let rule = plan.rule_for(m, p).unwrap();
        assert!(table.check(*key, rule, t0).admitted);
    }
    let live = LIVE.load(Ordering::Relaxed) - before;
    let per_user = live as f64 / USERS as f64;

    // Baseline: a plain HashMap lookup-and-increment of the same keys in the same order.
    let mut base: HashMap<u128, u32> = keys.iter().map(|k| (k.to_bits(), 0)).collect();
    let start = Instant::now();
    for i in 0..DECISIONS {
        let k = keys[order(i)].to_bits();
        if let Some(c) = base.get_mut(&black_box(k)) {
            *c += 1;
        }
    }
    let base_s = start.elapsed().as_secs_f64();
    let base_rate = DECISIONS as f64 / base_s;
    drop(base);

    // Check only: the rule already known.
    let rules: Vec<&Rule> = REQUESTS
        .iter()
        .map(|(m, p)| plan.rule_for(m, p).unwrap())
        .collect();
    let mut now_us = T0_US;
    let start = Instant::now();
    let mut admitted = 0usize;
    for i in 0..DECISIONS {
        let u = order(i);
        now_us += STEP_US;
        let d = table.check(keys[u], rules[u % 10], now_us / 1_000_000);
        admitted += usize::from(d.admitted);
        black_box(&d);
    }
    let check_s = start.elapsed().as_secs_f64();
    let check_rate = DECISIONS as f64 / check_s;

    // Full decision: first matching rule of 10, then check and charge.
    let start = Instant::now();
    let mut full_admitted = 0usize;
    for i in 0..DECISIONS {
        let u = order(i);
        now_us += STEP_US;
        let (m, p) = REQUESTS[u % 10];
        let rule = plan.rule_for(black_box(m), black_box(p)).unwrap();
        let d = table.check(keys[u], rule, now_us / 1_000_000);
        full_admitted += usize::from(d.admitted);
        black_box(&d);
    }
    let full_s = start.elapsed().as_secs_f64();
    let full_rate = DECISIONS as f64 / full_s;

    println!(
        "quota memory: {USERS} active users, {} entries, {live} bytes live heap = {per_user:.0} \
         bytes/active user under one rule ({} bytes of key and counters per entry; a user active \
         under k rules holds k entries)",
        table.len(),
        QuotaTable::entry_bytes(),
    );
    println!(
        "baseline: plain HashMap<u128, u32> lookup+increment of the same keys: {base_rate:.0}/s \
         ({:.0} ns each)",
        1e9 / base_rate
    );
    println!(
        "quota check (rule known): {DECISIONS} in {check_s:.2} s on one thread = {check_rate:.0} \
         checks/s per core ({:.0} ns each), {:.2}x the baseline's time; admitted {admitted}",
        1e9 / check_rate,
        base_rate / check_rate,
    );
    println!(
        "quota decision (first match of 10 rules + check): {DECISIONS} in {full_s:.2} s = \
         {full_rate:.0} decisions/s per core ({:.0} ns each), {:.2}x the baseline's time; \
         admitted {full_admitted}",
        1e9 / full_rate,
        base_rate / full_rate,
    );
}
