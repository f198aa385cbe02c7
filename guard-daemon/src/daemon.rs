//! `guard run`: opens the store, loads and attaches XDP, rebuilds the maps from the store, hands
//! bans and the allowlist to their owner thread (`bans::owner`, which also ends expired bans),
//! then serves the control socket, applies the engine's ban orders and turns rate-limit events
//! into log lines (and bans, if configured) until SIGTERM or SIGINT.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{MapData, RingBuf};
use guard_common::{FAMILY_V4, RateEvent};
use tokio::io::unix::AsyncFd;
use tracing::{error, info, warn};

use crate::bans::{BanError, BanHandle, BanRequest, Bans, Ordered, Origin, Owner};
use crate::config::Config;
use crate::control::{self, Request};
use crate::engine::BanOutcome;
use crate::judge::{BanOrder, BanQueue, Judge};
use crate::net::Net;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::store::logs::{LogStore, LogWriter};
use crate::verified::VerifiedSources;
use crate::xdp::Xdp;

mod hangup;
mod inline;
mod metrics;
mod quotas;
mod readd;
mod reload;
mod requests;
use requests::handle;

/// The request log database's directory inside the state directory.
pub const LOG_DIR: &str = "logs";

/// Daemon-level counters shown by `guard stats` and `/metrics`.
#[derive(Default)]
struct Counters {
    rate_events: AtomicU64,
    rate_bans: AtomicU64,
    rate_bans_unverified: AtomicU64,
    control_requests: AtomicU64,
}

struct Shared {
    /// The ban owner: every read and change of bans, the allowlist and the XDP maps.
    bans: BanHandle,
    judge: Arc<Judge>,
    logs: LogStore,
    writer: Arc<LogWriter>,
    /// The lock only guards taking the pipeline out at exit: a request clones the `Arc` and
    /// lets the lock go before it does anything else.
    pipeline: Mutex<Option<Arc<Pipeline>>>,
    /// The tap's recently verified sources (`None` without the tap): rate bans need them.
    verified: Option<Arc<VerifiedSources>>,
    /// The inline mode's decision, when the forward-auth endpoint or the proxy is on.
    inline: Option<Arc<crate::inline::InlineGate>>,
    /// The plan quotas (`[quotas]` defines plans), shared by the inline mode and the tap; and
    /// the tap's view of them (its overrun counters).
    quotas: Option<Arc<crate::quota::QuotaCheck>>,
    tap_quotas: Option<Arc<crate::quota::tap::TapQuotas>>,
    counters: Counters,
    /// The reverse proxy's counters (`None` when `[proxy]` has no listener).
    proxy: Option<Arc<crate::proxy::ProxyStats>>,
    /// A handle on the state database for counts that need no visit to the ban owner (the bans
    /// by kind, kept as they are written): `/metrics` reads them even while the owner is busy.
    store: Store,
    config: Config,
    /// The `[validator]` and `[engine]` sections in effect (a reload replaces them); every other
    /// section is `config`'s, from the start.
    live: Mutex<Config>,
    reloader: reload::Reloader,
    started: Instant,
    /// The CrowdSec client's state and counters (`None` without `crowdsec.lapi_url`).
    crowdsec: Option<Arc<crate::crowdsec::CrowdsecStats>>,
}

impl Shared {
    fn pipeline(&self) -> Option<Arc<Pipeline>> {
        self.pipeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs the daemon until a termination signal.
#[expect(
    clippy::too_many_lines,
    reason = "start-up and shut-down in order, each step one call"
)]
pub fn run(config: Config, config_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    if crate::xdp::EBPF_STUB {
        anyhow::bail!(
            "this guard binary was built without its eBPF programs (no BPF toolchain at build \
             time), so it cannot run the daemon; build the real programs with `cargo xtask build` \
             (or start guard with `cargo xtask run`), which sets up the toolchain first"
        );
    }
    crate::memory::limit_arenas();
    // Everything guard creates from here on (databases, socket, directories) is private.
    let _ = crate::perms::private_umask();
    // The socket's directory is checked before anything changes: a refused start leaves the
    // host as it was.
    let access = control::Access::from_config(&config.daemon)?;
    control::prepare_dir(&config.daemon.socket, &access)?;
    let tightened = crate::perms::private_tree(&config.daemon.state_dir, "state directory")?;
    if tightened.entries > 0 {
        warn!(
            state_dir = %config.daemon.state_dir.display(),
            entries = tightened.entries,
            "state directory and files were open to other users: made 0700 and 0600"
        );
    }
    // Everything that can fail on the config or the disk comes before XDP; and XDP itself
    // changes nothing the running program (if pinned by an earlier instance) sees until the maps
    // are rebuilt, and its rate settings only once the control socket is bound: a start that
    // fails leaves enforcement as it was.
    let store = Store::open_with_cache(&config.daemon.state_dir, config.daemon.store_cache_mb)
        .context("opening the store")?;
    let quota_store = inline::quota_store(&config, store.db())?;
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
    // Retention does not act on a wall-clock jump of more than a day (`logs/retention.rs`).
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
    // From here on a SIGHUP is a reload (once the control socket serves), never the end of
    // guard.
    let hup = hangup::install(&runtime);
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
    // `guard mode`'s choice outlives a restart while `engine.mode` stays as it was.
    judge.set_mode(reload::start_mode(&store, &config));
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
    // A LAPI without its key stops the start: running on would leave the fleet's decisions
    // unenforced without a word.
    let crowdsec_key = crowdsec_key(&config)?;
    let crowdsec_password = crowdsec_password(&config)?;
    let mut xdp = Xdp::open(&config.xdp).context("loading XDP")?;
    // Pins on a bpffs of guard's own mount namespace end with it: said now, and at exit.
    let pin_scope = crate::xdp::pins_outlive_process(&config.xdp.pin_dir);
    if let Some(w) = pin_scope.warning(&config.xdp.pin_dir) {
        warn!("{w}");
    }
    let events = xdp.take_events();
    let ebpf_log = xdp.take_ebpf_log();
    // A key file that cannot be used stops the start: running on would leave every RS256/ES256
    // user unverified without a word.
    let jwt = crate::jwt::keys_of(&config.tap).context("tap.jwt_public_key")?;
    // One quota check for the tap and the inline mode: both charge the same counters.
    let quotas = inline::quotas(&config, quota_store)?;
    let tap_quotas = quotas.as_ref().map(|q| {
        Arc::new(crate::quota::tap::TapQuotas::new(
            Arc::clone(q),
            config.quotas.tap_overrun_ban,
        ))
    });
    let pipeline = if config.tap.http_ports.is_empty() {
        info!("tap.http_ports is empty: no HTTP capture");
        None
    } else {
        let names = xdp.interface_names().to_vec();
        // Fail open: without the tap guard still enforces bans; say so loudly.
        match Pipeline::start(
            &mut xdp,
            &names,
            &config.tap,
            &writer,
            &judge,
            &jwt,
            tap_quotas.as_ref(),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                error!("HTTP capture unavailable, continuing without it: {e}");
                None
            }
        }
    };
    let counts_store = store.clone();
    let mut bans = Bans::new(store, xdp, config.bans.default_ttl, protected)
        .context("rebuilding the XDP maps from the store")?;
    let crowdsec_stats = config
        .crowdsec
        .enabled()
        .then(|| Arc::new(crate::crowdsec::CrowdsecStats::default()));
    let pusher = match (
        crowdsec_password,
        &crowdsec_stats,
        &config.crowdsec.machine_id,
    ) {
        (Some(password), Some(stats), Some(id)) => {
            let (feed, pusher) = crate::crowdsec::machine::channel(
                &config.crowdsec,
                id.clone(),
                password,
                Arc::clone(stats),
            )
            .context("starting the CrowdSec machine")?;
            bans.set_feed(feed.clone());
            judge.set_feed(feed);
            Some(pusher)
        }
        _ => None,
    };
    {
        let n = bans.count().unwrap_or(0);
        let a = bans.allows().map_or(0, |l| l.len());
        let skipped = bans.xdp().skipped();
        info!(
            bans = n,
            allowlist = a,
            skipped,
            "bans restored from the store"
        );
    }
    // The inline mode's decision (forward-auth endpoint, reverse proxy).
    let inline = inline::gate(
        &config,
        bans.xdp(),
        &judge,
        &writer,
        bans.user_lookup(),
        jwt.clone(),
        quotas.as_ref(),
    )?;
    let verified = pipeline.as_ref().map(Pipeline::verified);
    // Only now, with the maps rebuilt, does this program take over the interfaces.
    bans.xdp_mut().attach().context("attaching XDP")?;
    let owner = Owner::spawn(bans, config.bans.sweep_interval).context("starting the ban owner")?;
    // The reverse proxy runs on a runtime of its own and stops when `proxy_stop` says so.
    // A proxy that cannot start (a listener taken, a bad certificate) fails the start, after
    // the shutdown below has put everything back.
    let (proxy_stop, proxy_stop_rx) = tokio::sync::watch::channel(false);
    // The proxy's gate: the inline decision, holding each passed request's record until the
    // upstream's status is known (at most the upstream's timeout and a margin).
    let proxy_gate = match (&inline, config.proxy.proxy_enabled()) {
        (Some(g), true) => Some(Arc::new(
            g.for_proxy(config.proxy.upstream_timeout + Duration::from_secs(5)),
        )),
        _ => None,
    };
    let (proxy, proxy_failed) = if let Some(g) = &proxy_gate {
        let gate: Arc<dyn crate::inline::Gate> = Arc::clone(g) as _;
        match crate::proxy::start(&config, gate, proxy_stop_rx) {
            Ok(p) => (Some(p), None),
            Err(e) => (
                None,
                Some(anyhow::Error::new(e).context("starting the reverse proxy")),
            ),
        }
    } else {
        (None, None)
    };
    let bouncer = match (crowdsec_key, &crowdsec_stats) {
        (Some(key), Some(stats)) => {
            let _entered = runtime.enter();
            Some(
                crate::crowdsec::bouncer::Bouncer::new(
                    config.crowdsec.clone(),
                    key,
                    owner.handle(),
                    Arc::clone(stats),
                )
                .context("starting the CrowdSec bouncer")?,
            )
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        bans: owner.handle(),
        judge,
        logs,
        writer,
        pipeline: Mutex::new(pipeline.map(Arc::new)),
        verified,
        inline,
        quotas,
        tap_quotas,
        counters: Counters::default(),
        proxy: proxy.as_ref().map(crate::proxy::Running::stats),
        store: counts_store,
        live: Mutex::new(config.clone()),
        reloader: reload::Reloader::new(config_file),
        config,
        started: Instant::now(),
        crowdsec: crowdsec_stats,
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
    let result = match proxy_failed {
        Some(e) => Err(e),
        None => runtime.block_on(serve(
            Arc::clone(&shared),
            events,
            access,
            facts,
            (bouncer, pusher),
            hup,
        )),
    };
    drop(runtime);
    // The proxy stops accepting, then drains (`proxy.drain_timeout`).
    proxy_stop.send_replace(true);
    if let Some(p) = proxy {
        p.wait();
    }
    // Requests still waiting for the upstream's status are logged without it.
    if let Some(g) = proxy_gate {
        g.flush_pending();
    }

    // The pipeline holds the judge, whose queue keeps the applier running: stop the pipeline
    // first, then the applier ends when the queue's sender is gone.
    let pipeline = shared
        .pipeline
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(p) = pipeline {
        stop_pipeline(p);
    }
    applier_stop.store(true, Ordering::Relaxed);
    if applier.join().is_err() {
        warn!("the ban applier panicked");
    }
    // Blocking tasks of the control socket may still hold a handle for a moment; the owner
    // answers what is queued, flushes and stops.
    let Some(mut bans) = owner.stop() else {
        anyhow::bail!("the ban owner panicked; bans are in the store and stay enforced in XDP");
    };
    if let Err(e) = bans.beat_now() {
        warn!("writing the heartbeat at exit: {e}");
    }
    if let Err(e) = bans.store().flush() {
        error!("flushing the store at exit: {e}");
    }
    let mut shared = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("daemon state still shared at exit"))?;
    // The inline decision holds the log writer too.
    drop(shared.inline.take());
    if let Ok(w) = Arc::try_unwrap(shared.writer) {
        w.shutdown();
    } else {
        warn!("log writer still in use at exit; queued records may be lost");
    }
    if let Err(e) = shared.logs.flush() {
        warn!("flushing the request log at exit: {e}");
    }
    if !shared.config.xdp.keep_attached {
        info!("exiting; detaching XDP and removing pins (xdp.keep_attached = false)");
        bans.into_xdp().detach_and_unpin();
    } else if pin_scope.ends_with_process() {
        warn!(
            pin_dir = %shared.config.xdp.pin_dir.display(),
            "exiting; XDP detaches and bans stop being enforced with this process: its pins are \
             on a bpffs of its own mount namespace (see the warning at start)"
        );
    } else {
        info!("exiting; XDP stays attached and bans stay enforced (xdp.keep_attached = true)");
    }
    let _ = std::fs::remove_file(&shared.config.daemon.socket);
    result
}

/// The CrowdSec bouncer key, when `crowdsec.lapi_url` is set (an error without one).
fn crowdsec_key(config: &Config) -> anyhow::Result<Option<crate::crowdsec::Secret>> {
    let c = &config.crowdsec;
    if !c.enabled() {
        return Ok(None);
    }
    let key = crate::crowdsec::load_secret(&c.api_key_env, c.api_key_file.as_deref(), |v| {
        std::env::var(v).ok()
    })
    .context("crowdsec.api_key_file")?
    .ok_or_else(|| crate::crowdsec::CrowdsecError::NoKey {
        var: c.api_key_env.clone(),
    })?;
    Ok(Some(key))
}

/// The CrowdSec machine's password, when `crowdsec.machine_id` is set (an error without one).
fn crowdsec_password(config: &Config) -> anyhow::Result<Option<crate::crowdsec::Secret>> {
    let c = &config.crowdsec;
    if !c.enabled() || c.machine_id.is_none() {
        return Ok(None);
    }
    let password = crate::crowdsec::load_secret(
        &c.machine_password_env,
        c.machine_password_file.as_deref(),
        |v| std::env::var(v).ok(),
    )
    .context("crowdsec.machine_password_file")?
    .ok_or_else(|| crate::crowdsec::CrowdsecError::NoPassword {
        var: c.machine_password_env.clone(),
    })?;
    Ok(Some(password))
}

/// Stops the capture threads once no control request holds the pipeline any more.
fn stop_pipeline(mut p: Arc<Pipeline>) {
    for _ in 0..100 {
        match Arc::try_unwrap(p) {
            Ok(p) => return p.stop(),
            Err(still) => {
                p = still;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    warn!("the HTTP tap is still in use at exit; its threads end with the process");
}

async fn serve(
    shared: Arc<Shared>,
    events: Option<RingBuf<MapData>>,
    access: control::Access,
    facts: crate::protect::HostFacts,
    (bouncer, pusher): (
        Option<crate::crowdsec::bouncer::Bouncer>,
        Option<crate::crowdsec::machine::Pusher>,
    ),
    hup: Option<tokio::signal::unix::Signal>,
) -> anyhow::Result<()> {
    let listener = control::bind(&shared.config.daemon.socket, &access)
        .context("binding the control socket")?;
    // The start has succeeded: the program gets this configuration's rate settings.
    shared
        .bans
        .with_xdp(Xdp::commit_settings)
        .context("asking the ban owner")?
        .context("writing the XDP settings")?;
    info!(socket = %shared.config.daemon.socket.display(), "control socket ready");
    // One shutdown signal for every listener: the control socket and the forward-auth endpoint.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let auth = inline::start_auth(&shared, &stop_rx).await?;
    let metrics = metrics::start(&shared, &stop_rx).await?;

    let protector = tokio::spawn(protect_loop(Arc::clone(&shared), facts));
    let bouncer = bouncer.map(|b| tokio::spawn(b.run()));
    let pusher = pusher.map(|p| tokio::spawn(p.run()));
    let reloads = hup.map(|h| {
        let tls = !shared.config.proxy.tls_listen.is_empty();
        tokio::spawn(hangup::serve(Arc::clone(&shared), h, tls))
    });
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
    let signal = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    control::serve(listener, access, handler, signal).await;
    if let Some(auth) = auth {
        // It drains its connections within proxy.drain_timeout.
        if let Err(e) = auth.await {
            warn!("the forward-auth endpoint ended badly: {e}");
        }
    }
    if let Some(m) = metrics
        && let Err(e) = m.await
    {
        warn!("the metrics endpoint ended badly: {e}");
    }
    drop(stop_rx);
    protector.abort();
    for task in bouncer.into_iter().chain(pusher) {
        task.abort();
    }
    if let Some(r) = reloads {
        r.abort();
    }
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
    let old = match shared.bans.read(|b| b.protected().clone()) {
        Ok(old) => old,
        Err(e) => {
            warn!("refreshing the protected addresses: {e}");
            return;
        }
    };
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
    if let Err(e) = shared.bans.set_protected(list) {
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
        if !batch.is_empty() {
            // Waiting for the owner's answer (a flush) is blocking work: off the runtime, one
            // task for the whole read, whose bans share one flush.
            let s = Arc::clone(&shared);
            tokio::task::spawn_blocking(move || on_rate_events(&s, &batch));
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

/// Logs each over-rate source and, when `xdp.rate_ban` is set, bans them through the owner:
/// every order is sent first, then the answers are read, so they share one flush.
fn on_rate_events(shared: &Shared, events: &[RateEvent]) {
    let pps = shared.config.xdp.rate_limit_pps;
    let ttl = shared.config.xdp.rate_ban;
    let mut waiting = Vec::new();
    for ev in events {
        shared.counters.rate_events.fetch_add(1, Ordering::Relaxed);
        let addr = event_addr(ev);
        warn!(source = %addr, dropped = ev.dropped, limit_pps = pps, "source over its packet rate");
        if ttl.is_zero() {
            continue;
        }
        // The event names the packets' source address, which anyone can forge: ban only a
        // source the tap saw complete a handshake recently, unless the operator chose otherwise.
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
                "not banned for its rate: no TCP handshake from it was seen recently, so the \
                 source may be forged (its excess packets are still dropped; see \
                 xdp.rate_ban_unverified)"
            );
            continue;
        }
        let req = BanRequest {
            target: Net::host(addr),
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
            user: None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if !shared.bans.send(crate::bans::Command::Order(req, tx)) {
            warn!(source = %addr, "rate ban failed: {}", BanError::OwnerGone);
            continue;
        }
        waiting.push((addr, rx));
    }
    for (addr, rx) in waiting {
        match rx.recv().unwrap_or(Err(BanError::OwnerGone)) {
            Ok(Ordered::Banned(_)) => {
                shared.counters.rate_bans.fetch_add(1, Ordering::Relaxed);
                info!(
                    source = %addr,
                    ttl = %crate::clock::format_duration(ttl),
                    "banned for exceeding the packet rate"
                );
            }
            Ok(Ordered::Already(_))
            | Err(BanError::Allowlisted { .. } | BanError::Protected(_)) => {}
            Err(e) => warn!(source = %addr, "rate ban failed: {e}"),
        }
    }
}

/// Orders taken off the judge's queue per round, at most: sent to the owner together, so they
/// share its flush.
const APPLY_BATCH: usize = 1024;

/// Applies the engine's ban orders through the owner, a batch at a time (one flush for the
/// batch), and tells the engine how each went: enforced (the client counts as banned), refused
/// for good, or failed (ordered again on the client's next request).
fn apply_bans(shared: &Shared, queue: &BanQueue, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(first) = queue.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let mut orders = vec![first];
        while orders.len() < APPLY_BATCH {
            match queue.try_recv() {
                Ok(o) => orders.push(o),
                Err(_) => break,
            }
        }
        let mut waiting = Vec::with_capacity(orders.len());
        for BanOrder { request, ticket } in orders.into_iter().map(|o| *o) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let target = request.target;
            let reason = request.reason.clone();
            if shared.bans.send(crate::bans::Command::Order(request, tx)) {
                waiting.push((ticket, target, reason, Some(rx)));
            } else {
                waiting.push((ticket, target, reason, None));
            }
        }
        for (ticket, target, reason, rx) in waiting {
            let result = rx.map_or(Err(BanError::OwnerGone), |rx| {
                rx.recv().unwrap_or(Err(BanError::OwnerGone))
            });
            let outcome = match result {
                Ok(Ordered::Banned(view)) => {
                    info!(
                        %target,
                        %reason,
                        expires_at = %crate::clock::format_expiry(view.expires_at),
                        "banned by the engine"
                    );
                    BanOutcome::Enforced
                }
                Ok(Ordered::Already(_)) => BanOutcome::Enforced,
                // Enforced in XDP; the store's failure is logged.
                Err(e @ BanError::NotSaved { .. }) => {
                    warn!(%target, "engine ban: {e}");
                    BanOutcome::Enforced
                }
                Err(BanError::Allowlisted { .. }) => {
                    info!(%target, "engine ban refused: allowlisted");
                    BanOutcome::Refused
                }
                // Logged with its reason by the ban owner.
                Err(BanError::Protected(_)) => BanOutcome::Refused,
                Err(e) => {
                    warn!(%target, "engine ban failed (ordered again on the client's next request): {e}");
                    BanOutcome::Failed
                }
            };
            shared.judge.settle(&ticket, outcome);
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
