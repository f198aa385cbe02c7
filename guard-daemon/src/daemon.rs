//! `guard run`: opens the store, loads and attaches XDP, rebuilds the maps from the store, then
//! serves the control socket, sweeps expired bans and turns rate-limit events into log lines
//! (and bans, if configured) until SIGTERM or SIGINT.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{MapData, RingBuf};
use guard_common::{FAMILY_V4, RateEvent};
use tokio::io::unix::AsyncFd;
use tracing::{error, info, warn};

use crate::bans::{BanError, BanRequest, Bans, Origin};
use crate::config::Config;
use crate::control::{self, Request};
use crate::judge::{BanQueue, Judge};
use crate::net::Net;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::store::logs::{LogStore, LogWriter};
use crate::verified::VerifiedSources;
use crate::xdp::Xdp;

mod requests;
use requests::handle;

/// The request log database's directory inside the state directory.
pub const LOG_DIR: &str = "logs";

/// Daemon-level counters shown by `guard stats`.
#[derive(Default)]
struct Counters {
    rate_events: AtomicU64,
    rate_bans: AtomicU64,
    rate_bans_unverified: AtomicU64,
    expired: AtomicU64,
    control_requests: AtomicU64,
}

struct Shared {
    bans: Mutex<Bans>,
    judge: Arc<Judge>,
    logs: LogStore,
    writer: Arc<LogWriter>,
    pipeline: Mutex<Option<Pipeline>>,
    /// The tap's recently verified sources (`None` without the tap): rate bans need them.
    verified: Option<Arc<VerifiedSources>>,
    counters: Counters,
    config: Config,
    started: Instant,
}

impl Shared {
    fn bans(&self) -> std::sync::MutexGuard<'_, Bans> {
        // A panic while holding the lock cannot leave the maps inconsistent with sled in a way
        // a later operation would make worse; keep serving.
        self.bans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the daemon until a termination signal.
#[expect(
    clippy::too_many_lines,
    reason = "start-up and shut-down in order, each step one call"
)]
pub fn run(config: Config) -> anyhow::Result<()> {
    if crate::xdp::EBPF_STUB {
        anyhow::bail!(
            "this guard binary was built without its eBPF programs (no BPF toolchain at build \
             time), so it cannot run the daemon; build the real programs with `cargo xtask build` \
             (or start guard with `cargo xtask run`), which sets up the toolchain first"
        );
    }
    std::fs::create_dir_all(&config.daemon.state_dir).with_context(|| {
        format!(
            "creating state directory {}",
            config.daemon.state_dir.display()
        )
    })?;
    let store = Store::open(&config.daemon.state_dir).context("opening the store")?;
    let mut xdp = Xdp::open(&config.xdp).context("loading and attaching XDP")?;
    let events = xdp.take_events();
    let ebpf_log = xdp.take_ebpf_log();
    // The request log is a database of its own, so that traffic filling it can never stop bans
    // being saved; an earlier version's log tree in the state database is dropped.
    match store.drop_old_logs() {
        Ok(Some(n)) => info!(
            records = n,
            "request log moved to its own database: the old log tree in the state database was \
             dropped"
        ),
        Ok(None) => {}
        Err(e) => warn!("the old request log tree was not dropped: {e}"),
    }
    let log_dir = config.daemon.state_dir.join(LOG_DIR);
    let logs = LogStore::open_dir(&log_dir).context("opening the request log database")?;
    let writer = Arc::new(
        LogWriter::spawn(
            logs.clone(),
            config.logs.queue,
            config.logs.batch,
            config.logs.limits(),
        )
        .context("starting the log writer")?,
    );
    let allowlist: Vec<Net> = store
        .allows()
        .context("reading the allowlist")?
        .into_iter()
        .map(|a| a.target)
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // The AI second opinion; without it (disabled, or a bad set-up) grey clients are only
    // logged: guard fails open.
    let ai = if config.ai.enabled {
        let _entered = runtime.enter();
        match crate::ai::AiClient::from_config(config.ai.clone()) {
            Ok(client) => {
                info!(base_url = %config.ai.base_url, model = %config.ai.model, "AI triage enabled");
                Some(client)
            }
            Err(e) => {
                error!("AI triage disabled: {e}");
                None
            }
        }
    } else {
        None
    };
    // Lock-out safety: what is never banned, read from the host at start and every
    // bans.protect_refresh (see `protect_loop`).
    let facts =
        crate::protect::HostFacts::read(config.ai.enabled.then_some(config.ai.base_url.as_str()));
    let protected = crate::protect::ProtectList::compute(
        &facts,
        &config.tap.trusted_proxies,
        &config.bans.protect,
    );
    for p in protected.entries() {
        info!(net = %p.net, why = %p.why, found_in = %p.found_in, "protected: never banned");
    }
    let (judge, ban_queue) = Judge::new(&config.validator, &config.engine, allowlist, 4096, ai)
        .context("building the validator and engine")?;
    judge.set_protected(protected.nets());
    // Repeat offenders survive restarts: their next ban is escalated.
    let since = Duration::from_millis(crate::clock::now_ms())
        .saturating_sub(config.engine.bans.offender_memory)
        .as_secs();
    match store.offences(since) {
        Ok(list) => {
            judge.restore_offenders(&list);
            info!(
                offenders = list.len(),
                "repeat offenders restored from the store"
            );
        }
        Err(e) => warn!("repeat offenders not restored: {e}"),
    }
    let judge = Arc::new(judge);
    let pipeline = if config.tap.http_ports.is_empty() {
        info!("tap.http_ports is empty: no HTTP capture");
        None
    } else {
        let names: Vec<String> = xdp.interfaces().iter().map(|(n, _)| n.clone()).collect();
        // Fail open: without the tap guard still enforces bans; say so loudly.
        match Pipeline::start(&mut xdp, &names, &config.tap, &writer, &judge) {
            Ok(p) => Some(p),
            Err(e) => {
                error!("HTTP capture unavailable, continuing without it: {e}");
                None
            }
        }
    };
    let bans = Bans::new(store, xdp, config.bans.default_ttl, protected)
        .context("rebuilding the XDP maps from the store")?;
    {
        let n = bans.count().unwrap_or(0);
        let a = bans.allows().map_or(0, |l| l.len());
        info!(bans = n, allowlist = a, "bans restored from the store");
    }
    let verified = pipeline.as_ref().map(Pipeline::verified);
    let shared = Arc::new(Shared {
        bans: Mutex::new(bans),
        judge,
        logs,
        writer,
        pipeline: Mutex::new(pipeline),
        verified,
        counters: Counters::default(),
        config,
        started: Instant::now(),
    });

    let applier_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let applier = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&applier_stop));
        std::thread::Builder::new()
            .name("guard-ban-applier".into())
            .spawn(move || apply_bans(&shared, &ban_queue, &stop))
            .context("starting the ban applier")?
    };
    // Runs while `serve` does; dropped with the runtime.
    if let Some(log) = ebpf_log {
        runtime.spawn(crate::xdp::forward_ebpf_log(log));
    }
    let result = runtime.block_on(serve(Arc::clone(&shared), events, facts));
    drop(runtime);

    // The pipeline holds the judge, whose queue keeps the applier running: stop the pipeline
    // first, then the applier ends when the queue's sender is gone.
    if let Some(p) = shared
        .pipeline
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        p.stop();
    }
    applier_stop.store(true, Ordering::Relaxed);
    if applier.join().is_err() {
        warn!("the ban applier panicked");
    }
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("daemon state still shared at exit"))?;
    if let Some(p) = shared
        .pipeline
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        p.stop();
    }
    if let Ok(w) = Arc::try_unwrap(shared.writer) {
        w.shutdown();
    } else {
        warn!("log writer still in use at exit; queued records may be lost");
    }
    let bans = shared
        .bans
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if let Err(e) = bans.store().flush() {
        error!("flushing the store at exit: {e}");
    }
    if let Err(e) = shared.logs.flush() {
        warn!("flushing the request log at exit: {e}");
    }
    if shared.config.xdp.keep_attached {
        info!("exiting; XDP stays attached and bans stay enforced (xdp.keep_attached = true)");
    } else {
        info!("exiting; detaching XDP and removing pins (xdp.keep_attached = false)");
        bans.into_xdp().detach_and_unpin();
    }
    let _ = std::fs::remove_file(&shared.config.daemon.socket);
    result
}

async fn serve(
    shared: Arc<Shared>,
    events: Option<RingBuf<MapData>>,
    facts: crate::protect::HostFacts,
) -> anyhow::Result<()> {
    let listener =
        control::bind(&shared.config.daemon.socket).context("binding the control socket")?;
    info!(socket = %shared.config.daemon.socket.display(), "control socket ready");

    let sweeper = tokio::spawn(sweep_loop(Arc::clone(&shared)));
    let protector = tokio::spawn(protect_loop(Arc::clone(&shared), facts));
    let reader = events.map(|rb| tokio::spawn(event_loop(Arc::clone(&shared), rb)));
    let handler = {
        let shared = Arc::clone(&shared);
        Arc::new(move |req: Request| {
            shared
                .counters
                .control_requests
                .fetch_add(1, Ordering::Relaxed);
            handle(&shared, req)
        })
    };
    control::serve(listener, handler, shutdown_signal()).await;
    sweeper.abort();
    protector.abort();
    if let Some(r) = reader {
        r.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop guard with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    // A clean stop that cannot finish (a stuck thread) must not leave guard running forever;
    // a normal exit ends the process, and this thread with it, long before.
    arm_watchdog(SHUTDOWN_LIMIT, || {
        error!(
            "shutdown did not finish within {} s; exiting without it (bans are in the store, and XDP \
             keeps enforcing them if it stays attached)",
            SHUTDOWN_LIMIT.as_secs()
        );
        std::process::exit(1);
    });
}

/// How long a clean shutdown may take after SIGTERM or SIGINT.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// Runs `give_up` on a thread of its own after `limit`, unless the process has exited by then.
fn arm_watchdog(limit: Duration, give_up: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("guard-shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            give_up();
        });
    if let Err(e) = spawned {
        warn!("no shutdown watchdog: {e}");
    }
}

async fn sweep_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.bans.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = Arc::clone(&shared);
        let swept = tokio::task::spawn_blocking(move || s.bans().sweep()).await;
        match swept {
            Ok(Ok(gone)) => {
                for net in &gone {
                    info!(target = %net, "ban expired");
                }
                shared
                    .counters
                    .expired
                    .fetch_add(gone.len() as u64, Ordering::Relaxed);
            }
            Ok(Err(e)) => warn!("sweeping expired bans: {e}"),
            Err(e) => warn!("sweeper task: {e}"),
        }
    }
}

/// Reads the host's addresses, gateways and resolvers again every `bans.protect_refresh`, and
/// hands a changed list to the engine and the ban service (an address added to an interface
/// after start is then never banned).
async fn protect_loop(shared: Arc<Shared>, facts: crate::protect::HostFacts) {
    let every = shared.config.bans.protect_refresh;
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (s, start) = (Arc::clone(&shared), facts.clone());
        let refreshed = tokio::task::spawn_blocking(move || refresh_protected(&s, &start)).await;
        if let Err(e) = refreshed {
            warn!("refreshing the protected addresses: {e}");
        }
    }
}

fn refresh_protected(shared: &Shared, start: &crate::protect::HostFacts) {
    let cfg = &shared.config;
    let list = crate::protect::ProtectList::compute(
        &start.refreshed(),
        &cfg.tap.trusted_proxies,
        &cfg.bans.protect,
    );
    let old = shared.bans().protected().clone();
    if list == old {
        return;
    }
    for p in list.entries().iter().filter(|p| !old.entries().contains(p)) {
        info!(net = %p.net, why = %p.why, found_in = %p.found_in, "protected: never banned");
    }
    for p in old.entries().iter().filter(|p| !list.entries().contains(p)) {
        info!(net = %p.net, why = %p.why, found_in = %p.found_in, "no longer protected");
    }
    shared.judge.set_protected(list.nets());
    if let Err(e) = shared.bans().set_protected(list) {
        warn!("the XDP allowlist of protected addresses was not updated: {e}");
    }
}

async fn event_loop(shared: Arc<Shared>, ring: RingBuf<MapData>) {
    // SAFETY: the ring buffer owns its fd and outlives the registration (AsyncFd owns it).
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!(
                "cannot watch the rate-event ring buffer: {}",
                e.into_parts().1
            );
            return;
        }
    };
    loop {
        let Ok(mut ready) = fd.readable_mut().await else {
            return;
        };
        let mut batch = Vec::new();
        while let Some(item) = ready.get_inner_mut().next() {
            if item.len() >= std::mem::size_of::<RateEvent>() {
                // SAFETY: the program writes whole RateEvents; read_unaligned copes with alignment.
                batch.push(unsafe { item.as_ptr().cast::<RateEvent>().read_unaligned() });
            }
        }
        ready.clear_ready();
        for ev in batch {
            on_rate_event(&shared, &ev);
        }
    }
}

fn event_addr(ev: &RateEvent) -> IpAddr {
    if ev.family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(
            ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(ev.addr))
    }
}

fn on_rate_event(shared: &Shared, ev: &RateEvent) {
    shared.counters.rate_events.fetch_add(1, Ordering::Relaxed);
    let addr = event_addr(ev);
    let pps = shared.config.xdp.rate_limit_pps;
    warn!(source = %addr, dropped = ev.dropped, limit_pps = pps, "source over its packet rate");
    let ttl = shared.config.xdp.rate_ban;
    if ttl.is_zero() {
        return;
    }
    // The event names the packets' source address, which anyone can forge: ban only a source
    // the tap saw complete a handshake recently, unless the operator chose otherwise.
    let proven = shared
        .verified
        .as_ref()
        .is_some_and(|v| v.contains(Instant::now(), addr));
    if !proven && !shared.config.xdp.rate_ban_unverified {
        shared
            .counters
            .rate_bans_unverified
            .fetch_add(1, Ordering::Relaxed);
        info!(
            source = %addr,
            "not banned for its rate: no TCP handshake from it was seen recently, so the source \
             may be forged (its excess packets are still dropped; see xdp.rate_ban_unverified)"
        );
        return;
    }
    let mut bans = shared.bans();
    let target = Net::host(addr);
    if matches!(bans.store().ban(&target), Ok(Some(_))) {
        return;
    }
    let req = BanRequest {
        target,
        ttl: Some(ttl),
        reason: format!("packet rate over {pps}/s"),
        origin: Origin::RateLimit,
        force: false,
        evidence: Some(crate::engine::Evidence {
            rule: "xdp-rate".into(),
            details: crate::engine::Details {
                limit_pps: Some(pps),
                dropped: Some(ev.dropped),
                ..Default::default()
            },
            ..Default::default()
        }),
    };
    match bans.ban(req) {
        Ok(_) => {
            shared.counters.rate_bans.fetch_add(1, Ordering::Relaxed);
            info!(source = %addr, ttl = ?ttl, "banned for exceeding the packet rate");
        }
        Err(BanError::Allowlisted { .. } | BanError::Protected(_)) => {}
        Err(e) => warn!(source = %addr, "rate ban failed: {e}"),
    }
}

/// Applies the engine's ban orders: sled first, then the XDP maps (through `Bans`).
fn apply_bans(shared: &Shared, queue: &BanQueue, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut order) = queue.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        // An IPv6 client's network that holds a protected address (the host's own /64): the
        // client alone is banned, never its neighbours.
        if !order.target.is_host()
            && let Some(c) = order.evidence.as_ref().and_then(|e| e.client)
            && matches!(
                shared.bans().protected().check(&order.target, false),
                Err(crate::protect::Refusal::Contains { .. })
            )
        {
            info!(network = %order.target, client = %c, "the client's network holds a protected address: banning the client alone");
            order.target = Net::host(c);
        }
        let target = order.target;
        if matches!(shared.bans().store().ban(&target), Ok(Some(_))) {
            continue;
        }
        let reason = order.reason.clone();
        let offence = order.evidence.as_ref().and_then(|e| e.offence);
        // The offender is the client, also when its ban covers its IPv6 network.
        let client = order.evidence.as_ref().and_then(|e| e.client);
        // The ban table's lock is released before the offence is stored.
        let result = shared.bans().ban(order);
        match result {
            Ok(view) => {
                info!(%target, %reason, expires_at = ?view.expires_at, "banned by the engine");
                if let (Some(count), Some(client)) = (offence, client) {
                    let record = crate::store::OffenceRecord {
                        count,
                        last: view.created_at / 1000,
                    };
                    if let Err(e) = shared.bans().store().put_offence(client, record) {
                        warn!(%target, "repeat offence not stored: {e}");
                    }
                }
            }
            Err(BanError::Allowlisted { .. }) => info!(%target, "engine ban refused: allowlisted"),
            // Logged with its reason by the ban service.
            Err(BanError::Protected(_)) => {}
            Err(e) => warn!(%target, "engine ban failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_gives_up_after_its_limit_and_not_before() {
        let (tx, rx) = std::sync::mpsc::channel();
        let start = Instant::now();
        arm_watchdog(Duration::from_millis(200), move || {
            let _ = tx.send(Instant::now());
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "gave up early"
        );
        let fired = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("never gave up");
        assert!(fired.duration_since(start) >= Duration::from_millis(200));
    }
}
