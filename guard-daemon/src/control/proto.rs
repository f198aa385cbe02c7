//! The control socket's messages, shared by the daemon (which answers) and the CLI (which
//! asks): one [`Request`] line, one [`Response`] line, both JSON. Requests are tagged by `op`
//! (`{"op":"ban_ls"}`); a success carries a typed [`Reply`] tagged by `reply`, with its content
//! under `data` as before (`{"ok":true,"reply":"bans","data":[…]}`), a failure only a message
//! (`{"ok":false,"error":"…"}`). The CLI turns a reply into the type it expects with
//! [`FromReply`], never by reading JSON by key.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bans::{BanFilter, BanView};
use crate::judge::JudgeStats;
use crate::net::Net;
use crate::store::logs::{LogPage, LogRecord};
use crate::store::{AllowRecord, UserBanRecord};

/// One line of `guard ban import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportEntry {
    pub target: Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the CLI asks of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    BanAdd {
        target: Net,
        /// `None` = the configured default; 0 = permanent.
        ttl_secs: Option<u64>,
        reason: Option<String>,
        #[serde(default)]
        force: bool,
        /// An already banned target keeps the later of its two ends.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        extend: bool,
    },
    BanRm {
        target: Net,
        /// Keep the engine's view of the client and count the lifted ban as an offence.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_history: bool,
    },
    /// Lifts every ban the filter selects.
    BanRmMatching {
        filter: BanFilter,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_history: bool,
    },
    BanLs {
        #[serde(default)]
        filter: BanFilter,
    },
    BanImport {
        entries: Vec<ImportEntry>,
        #[serde(default)]
        force: bool,
    },
    AllowAdd {
        target: Net,
        reason: Option<String>,
    },
    AllowRm {
        target: Net,
    },
    AllowLs,
    /// `guard ban add --user`.
    UserBanAdd {
        id: String,
        /// `None` = the configured default; 0 = permanent.
        ttl_secs: Option<u64>,
        reason: Option<String>,
    },
    /// `guard ban rm --user`.
    UserBanRm {
        id: String,
    },
    /// `guard ban ls --user`.
    UserBanLs,
    Stats,
    Status,
    Logs(LogsRequest),
    /// `guard logs`: a page of records and the count of older matches.
    LogPage(LogsRequest),
    /// Reads (`None`) or replaces the protected HTTP ports of the running tap.
    TapPorts {
        ports: Option<Vec<u16>>,
    },
    /// `guard plan set USER PLAN` (plan quotas' plan table).
    PlanSet {
        user: String,
        plan: String,
    },
    /// `guard plan rm USER`.
    PlanRm {
        user: String,
    },
    /// `guard plan ls`.
    PlanLs,
    /// `guard quota show USER|ADDR`.
    QuotaShow {
        target: String,
    },
    /// `guard quota reset USER|ADDR [--rule PATH]`.
    QuotaReset {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// `guard reload`: read the configuration file again and apply it.
    Reload,
    /// `guard mode shadow|enforce`.
    Mode {
        mode: String,
    },
}

impl Request {
    /// True when the request changes something (bans, the allowlist, the tap's ports): only
    /// root may make it. Members of `daemon.socket_group` may make the others.
    #[must_use]
    pub fn changes(&self) -> bool {
        match self {
            Self::BanAdd { .. }
            | Self::BanRm { .. }
            | Self::BanRmMatching { .. }
            | Self::BanImport { .. }
            | Self::AllowAdd { .. }
            | Self::AllowRm { .. }
            | Self::UserBanAdd { .. }
            | Self::UserBanRm { .. }
            | Self::PlanSet { .. }
            | Self::PlanRm { .. }
            | Self::QuotaReset { .. }
            | Self::Reload
            | Self::Mode { .. } => true,
            Self::TapPorts { ports } => ports.is_some(),
            Self::BanLs { .. }
            | Self::UserBanLs
            | Self::AllowLs
            | Self::Stats
            | Self::Status
            | Self::Logs(_)
            | Self::LogPage(_)
            | Self::PlanLs
            | Self::QuotaShow { .. } => false,
        }
    }

    /// The CLI command that sends it, for messages (`ban add`).
    #[must_use]
    pub fn command(&self) -> &'static str {
        match self {
            Self::BanAdd { .. } => "ban add",
            Self::BanRm { .. } | Self::BanRmMatching { .. } => "ban rm",
            Self::BanLs { .. } => "ban ls",
            Self::BanImport { .. } => "ban import",
            Self::AllowAdd { .. } => "allow add",
            Self::AllowRm { .. } => "allow rm",
            Self::AllowLs => "allow ls",
            Self::UserBanAdd { .. } => "ban add --user",
            Self::UserBanRm { .. } => "ban rm --user",
            Self::UserBanLs => "ban ls --user",
            Self::Stats => "stats",
            Self::Status => "status",
            Self::Logs(_) | Self::LogPage(_) => "logs",
            Self::TapPorts { ports: None } => "tap ports",
            Self::TapPorts { ports: Some(_) } => "tap ports PORT...",
            Self::PlanSet { .. } => "plan set",
            Self::PlanRm { .. } => "plan rm",
            Self::PlanLs => "plan ls",
            Self::QuotaShow { .. } => "quota show",
            Self::QuotaReset { .. } => "quota reset",
            Self::Reload => "reload",
            Self::Mode { .. } => "mode",
        }
    }
}

/// Filters of `guard logs` as sent over the socket (see `store::logs::LogQuery`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Wall-clock ns since the epoch.
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    /// An address or a network (`192.0.2.0/24`); an address reads as before.
    pub ip: Option<Net>,
    pub path_prefix: Option<String>,
    /// `404`, `5xx`, …
    pub status: Option<String>,
    #[serde(default)]
    pub blocked: bool,
    pub limit: Option<usize>,
}

/// The answer to `ban rm` with filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// Bans lifted.
    pub removed: usize,
}

/// The answer to `ban add`: the ban as made, and the one it replaced, if the target was banned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BanAdded {
    #[serde(flatten)]
    pub ban: BanView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Replaced>,
}

/// The ban a `ban add` replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub reason: String,
    pub origin: crate::bans::Origin,
    /// Wall-clock ms since the epoch; `None` = permanent.
    pub expires_at: Option<u64>,
}

/// The answer to `allow add`: the entry, and the reason it replaced, if it was there already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowAdded {
    #[serde(flatten)]
    pub entry: AllowRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_reason: Option<String>,
}

/// The answer to `ban import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// Lines banned.
    pub banned: usize,
    /// Why each refused line was refused (overlaps the allowlist, not saved).
    pub refused: Vec<String>,
}

/// The answer to `stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    /// The XDP program's counters by name (`guard_common::STAT_NAMES`), and the dense tier's
    /// `dense_blocks` and `dense_blocks_refused`.
    pub xdp: BTreeMap<String, u64>,
    /// Each interface's capture and tap counters, as the pipeline reports them (shown whole by
    /// `--json`; the CLI reads nothing in them).
    pub tap: serde_json::Value,
    /// The validator's and engine's counters in the daemon.
    pub engine: JudgeStats,
    /// The engine's own counters and gauges (`guard_core::engine::EngineStats`: requests,
    /// clients held, bans decided, rules fired).
    #[serde(default)]
    pub engine_core: serde_json::Value,
    /// The AI client's counters; `None` when the AI is off.
    #[serde(default)]
    pub ai: Option<crate::ai::AiStats>,
    pub logs: LogCounters,
    pub daemon: DaemonCounters,
    /// The inline decision's counters (`inline::gate::InlineStats`: requests, passed, refused,
    /// banned addresses and users, shadow refusals, ban lookup errors); `None` when neither the
    /// forward-auth endpoint nor the proxy is on.
    #[serde(default)]
    pub inline: Option<serde_json::Value>,
    /// The plan quotas' counters (`quota::QuotaStats`, shared by the inline mode and the tap),
    /// with the tap's own under `tap` (`quota::tap::TapQuotaStats`: checked, overruns,
    /// `bans_ordered`, `unverified_skipped`); `None` when `[quotas]` defines no plan.
    #[serde(default)]
    pub quotas: Option<serde_json::Value>,
    /// The reverse proxy's counters; `None` when it is off (`proxy.listen` unset).
    #[serde(default)]
    pub proxy: Option<crate::proxy::ProxyCounters>,
}

/// The request log's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCounters {
    pub written: u64,
    /// Records dropped because the writer's queue was full.
    pub dropped: u64,
    pub failed_batches: u64,
    /// Records in the store now.
    pub stored: usize,
    /// Records with a field cut at its bound (`logs.max_path_bytes`, `logs.max_query_bytes`).
    #[serde(default)]
    pub truncated: u64,
    /// The log database's files, in bytes, as sled measures them (`<state_dir>/logs/`).
    #[serde(default)]
    pub size_on_disk: u64,
    /// Estimated bytes of the records stored now (what `logs.max_bytes` is kept against).
    #[serde(default)]
    pub live_bytes: u64,
    /// Records pruned, oldest first, to keep the log under `logs.max_bytes`.
    #[serde(default)]
    pub pruned: u64,
    /// Records pruned past `logs.retention`.
    #[serde(default)]
    pub expired: u64,
    /// Times the log was rebuilt with its newest records because its files neared the cap.
    #[serde(default)]
    pub rebuilds: u64,
}

/// The daemon's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonCounters {
    /// Over-rate events read from the XDP program.
    pub rate_events: u64,
    /// Bans made for exceeding the packet rate.
    pub rate_bans: u64,
    /// Rate events not turned into a ban: the source was not seen complete a TCP handshake
    /// recently (it may be forged; see `xdp.rate_ban_unverified`).
    #[serde(default)]
    pub rate_bans_unverified: u64,
    pub bans_expired: u64,
    pub control_requests: u64,
}

impl DaemonCounters {
    /// (name, value) in name order, for the table of `guard stats`.
    #[must_use]
    pub fn rows(&self) -> [(&'static str, u64); 5] {
        [
            ("bans_expired", self.bans_expired),
            ("control_requests", self.control_requests),
            ("rate_bans", self.rate_bans),
            ("rate_bans_unverified", self.rate_bans_unverified),
            ("rate_events", self.rate_events),
        ]
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub interfaces: Vec<Interface>,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Bans stored.
    pub bans: usize,
    /// Allowlist entries.
    pub allowlist: usize,
    /// User bans stored.
    #[serde(default)]
    pub user_bans: usize,
    pub rate_limit_pps: u64,
    pub keep_attached: bool,
    /// What is never banned, and why (see `protect`).
    #[serde(default)]
    pub protected: Vec<crate::protect::Protected>,
    /// Bans refused since start because they touched a protected address.
    #[serde(default)]
    pub protect_refusals: u64,
    /// Each ban and allowlist map's entries against its capacity.
    #[serde(default)]
    pub maps: Vec<MapFill>,
    /// Stored bans and allowlist entries the maps could not hold at start (not enforced; each
    /// was logged with its key).
    #[serde(default)]
    pub skipped_at_start: u64,
    /// Ban records in the store that cannot be decoded: skipped (not enforced), each logged
    /// with its key; they stay stored.
    #[serde(default)]
    pub bad_ban_records: u64,
    /// The engine's mode (`engine.mode`): `enforce`, or `shadow` (bans decided and logged,
    /// never enforced).
    #[serde(default)]
    pub mode: String,
    /// The engine's mode was chosen with `guard mode` (kept until `engine.mode` changes).
    #[serde(default)]
    pub mode_set_by_command: bool,
    /// The inline mode's (`proxy.mode`: `enforce` or `shadow`), when the reverse proxy or the
    /// forward-auth endpoint is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_mode: Option<String>,
    /// The CrowdSec LAPI: its state, the last sync and the counters; `None` when
    /// `crowdsec.lapi_url` is unset.
    #[serde(default)]
    pub crowdsec: Option<crate::crowdsec::CrowdsecStatus>,
}

/// The answer to `guard reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reloaded {
    /// The file read.
    pub file: PathBuf,
    /// Changed keys now in effect (`engine.grey.threshold`).
    pub applied: Vec<String>,
    /// Changed keys that keep their old value until guard is restarted.
    pub need_restart: Vec<String>,
    /// The engine mode in effect after the reload.
    pub mode: String,
    /// Set when a `guard mode` override ended because the file's `engine.mode` changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub override_ended: bool,
}

/// The answer to `guard mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModeSet {
    /// The mode in effect now.
    pub mode: String,
    /// The mode before the change.
    pub previous: String,
    /// `engine.mode` of the configuration.
    pub config_mode: String,
}

/// One XDP map's fill, in `guard status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapFill {
    /// `IPv4 bans`, `IPv4 CIDR bans`, `IPv4 allowlist`, … (IPv6 likewise).
    pub map: String,
    pub entries: u32,
    pub capacity: u32,
}

/// An interface guard's XDP program is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// `native` or `generic`.
    pub mode: String,
}

/// A reply the CLI did not expect for its request (a daemon of another version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the daemon answered with {got} where {expected} was expected (is it another version of guard?)"
)]
pub struct UnexpectedReply {
    pub expected: &'static str,
    pub got: &'static str,
}

/// A type a [`Reply`] carries: the CLI asks for the one its request gets.
pub trait FromReply: Sized {
    /// The content of `reply`, if it is of this type.
    ///
    /// # Errors
    /// [`UnexpectedReply`] when `reply` carries another type.
    fn from_reply(reply: Reply) -> Result<Self, UnexpectedReply>;
}

macro_rules! replies {
    ($($(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal,)*) => {
        /// What a successful request answers, tagged by `reply` with its content under `data`.
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "reply", content = "data")]
        pub enum Reply {
            $($(#[$doc])* #[serde(rename = $name)] $variant($ty),)*
        }

        impl Reply {
            /// The reply's tag on the wire.
            #[must_use]
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }
        }

        $(
            impl From<$ty> for Reply {
                fn from(v: $ty) -> Self {
                    Self::$variant(v)
                }
            }

            impl FromReply for $ty {
                fn from_reply(reply: Reply) -> Result<Self, UnexpectedReply> {
                    match reply {
                        Reply::$variant(v) => Ok(v),
                        other => Err(UnexpectedReply {
                            expected: $name,
                            got: other.kind(),
                        }),
                    }
                }
            }
        )*
    };
}

replies! {
    /// One ban, as made (`ban add`) or lifted (`ban rm`).
    Ban(Box<BanView>) = "ban",
    /// `ban add`: the ban and the one it replaced.
    BanAdded(Box<BanAdded>) = "ban_added",
    /// `ban ls`.
    Bans(Vec<BanView>) = "bans",
    /// `ban rm` with filters.
    Removed(Removed) = "removed",
    /// `ban import`.
    Imported(Imported) = "imported",
    /// One allowlist entry, as added or removed.
    Allow(AllowRecord) = "allow",
    /// `allow add`: the entry and the reason it replaced.
    AllowAdded(AllowAdded) = "allow_added",
    /// `allow ls`.
    Allows(Vec<AllowRecord>) = "allows",
    /// One user ban, as made (`ban add --user`) or lifted (`ban rm --user`).
    UserBan(UserBanRecord) = "user_ban",
    /// `ban ls --user`.
    UserBans(Vec<UserBanRecord>) = "user_bans",
    Stats(Box<Stats>) = "stats",
    Status(Box<Status>) = "status",
    /// `logs`.
    Logs(Vec<LogRecord>) = "logs",
    /// `logs`, as a page.
    LogPage(LogPage) = "log_page",
    /// The tap's protected ports, after the change if there was one.
    TapPorts(Vec<u16>) = "tap_ports",
    /// One plan table entry, as set (`plan set`) or removed (`plan rm`).
    Plan(crate::quota::plans::PlanEntry) = "plan",
    /// `plan ls`.
    Plans(Vec<crate::quota::plans::PlanEntry>) = "plans",
    /// `quota show`.
    QuotaUsage(crate::quota::admin::QuotaUsage) = "quota_usage",
    /// `quota reset`.
    QuotaReset(crate::quota::admin::QuotaReset) = "quota_reset",
    /// `reload`.
    Reloaded(Reloaded) = "reloaded",
    /// `mode`.
    ModeSet(ModeSet) = "mode_set",
}

impl From<BanView> for Reply {
    fn from(v: BanView) -> Self {
        Self::Ban(Box::new(v))
    }
}

/// The daemon's answer to one request.
#[derive(Debug)]
pub enum Response {
    Ok(Reply),
    /// A message for the user.
    Err(String),
}

impl Response {
    /// A success carrying `reply`.
    pub fn ok(reply: impl Into<Reply>) -> Self {
        Self::Ok(reply.into())
    }

    /// A failure with a message for the user.
    pub fn err(message: impl std::fmt::Display) -> Self {
        Self::Err(message.to_string())
    }

    /// A failure with `error` and its causes (see [`error_chain`]).
    pub fn failed(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::Err(error_chain(error))
    }
}

/// `error`'s message and, after it, its causes ("a: b: c"): an error's chain crosses the socket
/// as text, the only form the CLI can show. A message that already quotes its cause (as the
/// ban store's own wording of a sled error does) tells the rest of the chain: the walk stops
/// there, so nothing is said twice.
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if text.contains(&more) {
            break;
        }
        text.push_str(": ");
        text.push_str(&more);
        cause = e.source();
    }
    text
}

/// [`Response`] as it is written.
#[derive(Serialize)]
struct WireOut<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    reply: Option<&'a Reply>,
}

/// [`Response`] as it is read: the reply is typed once `ok` says there is one.
#[derive(Deserialize)]
struct WireIn {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            Self::Ok(reply) => WireOut {
                ok: true,
                error: None,
                reply: Some(reply),
            },
            Self::Err(message) => WireOut {
                ok: false,
                error: Some(message),
                reply: None,
            },
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireIn::deserialize(d)?;
        if !wire.ok {
            return Ok(Self::Err(
                wire.error.unwrap_or_else(|| "unknown error".to_owned()),
            ));
        }
        Reply::deserialize(serde_json::Value::Object(wire.rest))
            .map(Self::Ok)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
