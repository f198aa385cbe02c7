//! `guard run`'s part of the inline mode: the decision it builds when the forward-auth endpoint
//! or the reverse proxy is on, and the forward-auth endpoint it starts.
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use super::Shared;
use crate::bans::UserLookup;
use crate::config::Config;
use crate::inline::InlineGate;
use crate::inline::auth::{AuthSettings, serve};
use crate::inline::event::Identity;
use crate::judge::Judge;
use crate::quota::QuotaCheck;
use crate::store::logs::LogWriter;
use crate::tap::jwt::JwtKeys;
use crate::xdp::Xdp;

/// The inline decision, if `[proxy]` turns the forward-auth endpoint or the proxy on. Its
/// address-ban lookups read the XDP maps through handles of its own; `users` answers its user
/// checks; `jwt` verifies bearer tokens as the tap does; `quotas` are the plan quotas (see
/// [`quotas`]), shared with the tap.
pub(super) fn gate(
    config: &Config,
    xdp: &Xdp,
    judge: &Arc<Judge>,
    writer: &Arc<LogWriter>,
    users: UserLookup,
    jwt: JwtKeys,
    quotas: Option<&Arc<QuotaCheck>>,
) -> anyhow::Result<Option<Arc<InlineGate>>> {
    if config.proxy.auth_listen.is_none() && !config.proxy.proxy_enabled() {
        return Ok(None);
    }
    let maps = xdp
        .ban_maps()
        .context("opening the ban maps for the inline mode")?;
    let mut identity = Identity::from_tap(&config.tap, jwt);
    // The forward-auth endpoint's front ends (nginx) may name the client in X-Real-IP.
    identity.real_ip_fallback = true;
    let mut gate = InlineGate::new(
        Arc::clone(judge),
        Arc::clone(writer),
        Arc::new(crate::bans::lookup::MapLookup::new(maps)),
        identity,
        &config.proxy,
    )
    .with_user_check(Arc::new(users));
    if let Some(q) = quotas {
        gate = gate.with_quotas(Arc::clone(q));
    }
    Ok(Some(Arc::new(gate)))
}

/// The plan quotas, when `[quotas]` defines plans: `store` (the state database) keys their
/// users and keeps their day, month and lifetime counters (marked counters written every
/// second, passed windows swept every `quota::SWEEP_EVERY`). One check serves the inline mode
/// and the tap, so both charge the same counters.
pub(super) fn quotas(
    config: &Config,
    store: Option<QuotaStore>,
) -> anyhow::Result<Option<Arc<QuotaCheck>>> {
    let (true, Some(store)) = (config.quotas.enabled(), store) else {
        return Ok(None);
    };
    let quotas = QuotaCheck::new(
        &config.quotas,
        config.tap.trusted_proxies.clone(),
        store.salt,
        crate::quota::salt::random_seed(),
    )
    .map_err(|p| anyhow::anyhow!("{}: {}", p.key, p.message))?;
    let (quotas, restored) = quotas
        .with_store(store.tree, &config.quotas)
        .context("reading the quota counters from the store")?;
    let quotas = Arc::new(quotas.with_plan_store(Arc::new(store.plans)));
    crate::quota::spawn_sweeper(&quotas).context("starting the quota sweep")?;
    info!(
        plans = config.quotas.plans.len(),
        default_plan = config.quotas.default_plan.as_deref().unwrap_or("-"),
        restored,
        "plan quotas on (day, month and lifetime counters restored from the store)"
    );
    Ok(Some(quotas))
}

/// What the plan quotas keep in the state database.
pub(super) struct QuotaStore {
    salt: Vec<u8>,
    tree: sled::Tree,
    /// The plan table (`guard plan set`).
    plans: crate::quota::plans::PlanStore,
}

/// When `[quotas]` defines plans: the salt of the quotas' user keys, read from (or made and
/// stored in) the state database's `meta` tree, the tree of their counters and the plan table.
pub(super) fn quota_store(config: &Config, db: &sled::Db) -> anyhow::Result<Option<QuotaStore>> {
    if !config.quotas.enabled() {
        return Ok(None);
    }
    let salt =
        crate::quota::salt::load_or_create(db).context("reading the quota salt from the store")?;
    let tree = db
        .open_tree(crate::quota::persist::TREE_QUOTA)
        .context("opening the quota counters' tree")?;
    let plans = db
        .open_tree(crate::quota::plans::TREE_PLANS)
        .and_then(crate::quota::plans::PlanStore::open)
        .context("reading the plan table from the store")?;
    Ok(Some(QuotaStore { salt, tree, plans }))
}

/// Binds `proxy.auth_listen` and serves the forward-auth endpoint until `stop` turns true (a
/// listen address that cannot be bound fails the start).
pub(super) async fn start_auth(
    shared: &Shared,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let (Some(addr), Some(gate)) = (shared.config.proxy.auth_listen, &shared.inline) else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the forward-auth endpoint on {addr}"))?;
    let p = &shared.config.proxy;
    let settings = AuthSettings {
        header_timeout: p.header_timeout,
        drain_timeout: p.drain_timeout,
        deny_status: p.deny_status,
    };
    let gate: Arc<dyn crate::inline::Gate> = Arc::clone(gate) as _;
    Ok(Some(tokio::spawn(serve(
        listener,
        gate,
        settings,
        stop.clone(),
    ))))
}
