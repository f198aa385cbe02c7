//! CrowdSec: guard joins a CrowdSec Local API (LAPI) instead of inventing a protocol of its own
//! to share bans across hosts.
//!
//! - As a **bouncer** ([`bouncer`]) it polls `/v1/decisions/stream` (`startup=true` at start
//!   and after every failure, then deltas) and turns `ip` and `range` decisions into bans of
//!   origin `crowdsec`, `username` decisions into user bans, all through the ban owner, for the
//!   decision's own duration. The allowlist and the protected addresses win (the owner refuses
//!   those); deleted decisions lift only bans of origin `crowdsec`. While the LAPI is down what
//!   is enforced stays enforced.
//! - As a **machine** ([`machine`]) it logs in with `/v1/watchers/login` and pushes guard's own
//!   bans as alerts with decisions to `/v1/alerts`; a ban that came from the LAPI is never
//!   pushed back.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

pub mod bouncer;
pub mod config;
pub mod decision;
pub mod machine;

pub use config::{CrowdsecConfig, Secret, load_secret};

/// Errors of the CrowdSec client.
#[derive(Debug, thiserror::Error)]
pub enum CrowdsecError {
    #[error("cannot read the CrowdSec secret file {path}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CrowdSec secret file {path} is empty")]
    EmptySecretFile { path: PathBuf },
    #[error(
        "crowdsec.lapi_url is set but there is no bouncer key: set the variable named by \
         crowdsec.api_key_env ({var}) or crowdsec.api_key_file (the key `cscli bouncers add` printed)"
    )]
    NoKey { var: String },
    #[error(
        "crowdsec.machine_id is set but there is no password: set the variable named by \
         crowdsec.machine_password_env ({var}) or crowdsec.machine_password_file"
    )]
    NoPassword { var: String },
    #[error("cannot build the HTTP client for the LAPI: {source}")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    #[error("the LAPI did not answer: {source}")]
    Unreachable {
        #[source]
        source: reqwest::Error,
    },
    #[error("the LAPI answered {status} to {what}")]
    Status { what: &'static str, status: u16 },
    #[error("the LAPI's answer to {what} is larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error(transparent)]
    Stream(#[from] decision::StreamError),
    #[error("the LAPI's login answer has no token")]
    NoToken,
}

/// The LAPI connection as `guard status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LapiState {
    /// Not asked yet.
    #[default]
    Starting,
    /// The last poll was answered.
    Up,
    /// The last poll failed; guard retries with backoff.
    Down,
}

/// Counters and state of the CrowdSec client, shared with `guard status` and `guard stats`.
#[derive(Debug, Default)]
pub struct CrowdsecStats {
    up: AtomicBool,
    asked: AtomicBool,
    /// Wall-clock ms of the last successful poll.
    last_sync: AtomicU64,
    /// The last failure, for `guard status`.
    last_error: Mutex<Option<String>>,
    pub polls: AtomicU64,
    pub poll_failures: AtomicU64,
    /// Full resyncs (`startup=true`).
    pub resyncs: AtomicU64,
    pub bans_added: AtomicU64,
    pub user_bans_added: AtomicU64,
    /// Decisions for a target banned at least as long already.
    pub already_banned: AtomicU64,
    pub bans_lifted: AtomicU64,
    /// Refused by the ban owner: allowlisted or protected.
    pub refused_allowlisted: AtomicU64,
    /// Refused here: malformed, unknown scope, range too wide, already over.
    pub refused_invalid: AtomicU64,
    /// Decisions of another type than `ban` (captcha, …).
    pub ignored_type: AtomicU64,
    /// Bans the owner failed to make (maps full, store error).
    pub ban_failures: AtomicU64,
    /// Machine side: alerts pushed, failed pushes, alerts dropped from a full queue, logins.
    pub alerts_pushed: AtomicU64,
    pub push_failures: AtomicU64,
    pub alerts_dropped: AtomicU64,
    pub logins: AtomicU64,
    /// Alerts waiting now.
    pub push_queued: AtomicU64,
}

impl CrowdsecStats {
    fn synced(&self, now_ms: u64) {
        self.asked.store(true, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
        self.last_sync.store(now_ms, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn failed(&self, why: String) {
        self.asked.store(true, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
        self.poll_failures.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    /// The state and counters now.
    #[must_use]
    pub fn status(&self, lapi_url: &str, machine: Option<&str>) -> CrowdsecStatus {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let state = match (
            self.asked.load(Ordering::Relaxed),
            self.up.load(Ordering::Relaxed),
        ) {
            (false, _) => LapiState::Starting,
            (true, true) => LapiState::Up,
            (true, false) => LapiState::Down,
        };
        CrowdsecStatus {
            lapi_url: lapi_url.to_owned(),
            state,
            last_sync: Some(l(&self.last_sync)).filter(|t| *t != 0),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            machine: machine.map(str::to_owned),
            polls: l(&self.polls),
            poll_failures: l(&self.poll_failures),
            resyncs: l(&self.resyncs),
            bans_added: l(&self.bans_added),
            user_bans_added: l(&self.user_bans_added),
            already_banned: l(&self.already_banned),
            bans_lifted: l(&self.bans_lifted),
            refused_allowlisted: l(&self.refused_allowlisted),
            refused_invalid: l(&self.refused_invalid),
            ignored_type: l(&self.ignored_type),
            ban_failures: l(&self.ban_failures),
            alerts_pushed: l(&self.alerts_pushed),
            push_failures: l(&self.push_failures),
            alerts_dropped: l(&self.alerts_dropped),
            push_queued: l(&self.push_queued),
            logins: l(&self.logins),
        }
    }
}

/// The CrowdSec part of `guard status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecStatus {
    pub lapi_url: String,
    pub state: LapiState,
    /// Wall-clock ms of the last successful poll.
    pub last_sync: Option<u64>,
    pub last_error: Option<String>,
    /// The machine id guard pushes its bans as, if any.
    pub machine: Option<String>,
    pub polls: u64,
    pub poll_failures: u64,
    pub resyncs: u64,
    pub bans_added: u64,
    pub user_bans_added: u64,
    pub already_banned: u64,
    pub bans_lifted: u64,
    pub refused_allowlisted: u64,
    pub refused_invalid: u64,
    pub ignored_type: u64,
    pub ban_failures: u64,
    pub alerts_pushed: u64,
    pub push_failures: u64,
    pub alerts_dropped: u64,
    pub push_queued: u64,
    pub logins: u64,
}

/// Reads a response body up to `limit` bytes.
async fn body_within(
    mut resp: reqwest::Response,
    what: &'static str,
    limit: usize,
) -> Result<Vec<u8>, CrowdsecError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| CrowdsecError::Unreachable { source })?
    {
        if body.len() + chunk.len() > limit {
            return Err(CrowdsecError::TooLarge { what, limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The HTTP client for the LAPI.
fn http_client(cfg: &CrowdsecConfig) -> Result<reqwest::Client, CrowdsecError> {
    reqwest::Client::builder()
        .connect_timeout(cfg.timeout)
        .timeout(cfg.timeout)
        .user_agent(concat!("guard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| CrowdsecError::Client { source })
}
