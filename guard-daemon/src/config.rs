//! guard's configuration: one TOML file, parsed once at start into a validated, typed
//! [`Config`]. Every key has a default (see `guard.example.toml` at the repository top), so no
//! file at all is a valid configuration. Errors name the key and the line.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod parse_error;
mod proxy;
mod quotas;
pub use proxy::{InlineMode, ProxyConfig};
pub use quotas::{
    OnStoreError, PlanConfig, PlanSource, QuotasConfig, QuotasProblem, RuleConfig, TapOverrunBan,
};

/// Errors reading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    /// A problem under a key built from names in the file (`quotas.plans.free.rules[1].path`).
    #[error("{path}: key `{key}`: {message}")]
    InvalidAt {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub xdp: XdpConfig,
    pub bans: BansConfig,
    pub tap: crate::tap::TapConfig,
    pub logs: LogsConfig,
    pub ai: crate::ai::AiConfig,
    pub engine: crate::engine::EngineConfig,
    pub validator: crate::validate::ValidatorConfig,
    pub proxy: ProxyConfig,
    pub quotas: QuotasConfig,
    pub crowdsec: crate::crowdsec::CrowdsecConfig,
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (`OpenMetrics` text), e.g. `"127.0.0.1:9464"`. Keep it on
    /// loopback or a management network: it has no authentication. Default: none (off).
    pub listen: Option<std::net::SocketAddr>,
}

/// `[logs]`: the request log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Records older than this are pruned in the background. Default `30d`.
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// Records waiting for the writer; past it new records are dropped and counted. Default 65536.
    pub queue: usize,
    /// Records written per sled batch at most. Default 1024.
    pub batch: usize,
    /// Bytes the log database (`<state_dir>/logs/`) may take; past it the oldest records are
    /// pruned (down to 75 % of it). 0 = no cap. Default 268435456 (256 MiB).
    pub max_bytes: u64,
    /// Longest path kept in a record, in bytes; a longer one is cut, ends in `…` and the record
    /// is marked `truncated`. Default 4096.
    pub max_path_bytes: usize,
    /// Longest query kept, cut the same way. Default 4096.
    pub max_query_bytes: usize,
}

impl Default for LogsConfig {
    fn default() -> Self {
        let limits = crate::store::logs::Limits::default();
        Self {
            retention: limits.retention,
            queue: 65_536,
            batch: 1024,
            max_bytes: limits.max_bytes,
            max_path_bytes: limits.max_path_bytes,
            max_query_bytes: limits.max_query_bytes,
        }
    }
}

impl LogsConfig {
    /// The bounds the log writer keeps.
    #[must_use]
    pub fn limits(&self) -> crate::store::logs::Limits {
        crate::store::logs::Limits {
            max_bytes: self.max_bytes,
            max_path_bytes: self.max_path_bytes,
            max_query_bytes: self.max_query_bytes,
            retention: self.retention,
        }
    }
}

/// `[daemon]`: where guard keeps its socket and state.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Control socket, in a directory of its own: guard creates it 0700 (0750 with
    /// `socket_group`) and refuses to start if it exists with looser permissions or another
    /// owner. The socket is 0600 (0660). Default `/run/guard/guard.sock`.
    pub socket: PathBuf,
    /// A group whose members may run the read-only commands (`ban ls`, `allow ls`, `stats`,
    /// `status`, `logs`, `tap ports` without a change); a name or a number. Default: none
    /// (root only).
    pub socket_group: Option<String>,
    /// Directory of the state database (bans, allowlist); the request log is a database of
    /// its own in its `logs/` subdirectory. Made 0700 and its files 0600 at each start.
    /// Default `/var/lib/guard`.
    pub state_dir: PathBuf,
    /// Page cache of the state database, in MiB: recently used parts of the ban tree kept in
    /// memory. Bans are read from it at start, by `ban ls` and on changes, never per packet
    /// (XDP holds its own copy), so a small cache costs little. Default 16.
    pub store_cache_mb: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_group: None,
            state_dir: PathBuf::from("/var/lib/guard"),
            store_cache_mb: crate::store::DEFAULT_CACHE_MB,
        }
    }
}

/// Default control socket path, also used by the CLI when no `--socket` is given.
pub const DEFAULT_SOCKET: &str = "/run/guard/guard.sock";

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native mode only; fail if the driver cannot.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

/// `[xdp]`: the packet-level guard.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XdpConfig {
    /// Interfaces to guard. Default: empty = the interface of the default route.
    pub interfaces: Vec<String>,
    /// `auto` (default), `native` or `generic`.
    pub mode: XdpMode,
    /// bpffs directory where maps and links are pinned; one per guard instance, never the
    /// bpffs root itself. Default `/sys/fs/bpf/guard`.
    pub pin_dir: PathBuf,
    /// `guard run --replace-pins`: unpin maps of another layout and rebuild them from the
    /// store instead of refusing to start. Not a config key.
    #[serde(skip)]
    pub replace_pins: bool,
    /// Per-source packet rate limit in packets/s; 0 (default) = off.
    pub rate_limit_pps: u64,
    /// Burst allowance in packets; 0 (default) = one second's worth (`rate_limit_pps`).
    pub rate_limit_burst: u64,
    /// Minimum time between two rate events for one source. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub rate_event_window: Duration,
    /// Ban a source for this long when it exceeds the rate; `0s` (default) = only drop the
    /// excess packets and log the event.
    #[serde(deserialize_with = "de_duration")]
    pub rate_ban: Duration,
    /// Let `rate_ban` ban a source the HTTP tap has not seen complete a TCP handshake recently.
    /// Default `false`: a rate event names a packet's source address, which anyone can forge, so
    /// only sources proven to be really talking (a handshake on a `tap.http_ports` port in the
    /// last 5 to 10 minutes) are banned; the others' excess packets are still dropped, and the
    /// refusals counted (`rate_bans_unverified`). Without the tap (`tap.http_ports` empty) no
    /// source is ever proven, so `rate_ban` bans nothing unless this is `true`.
    pub rate_ban_unverified: bool,
    /// Leave the program attached and the maps pinned when the daemon exits, so bans stay
    /// enforced while it is down or restarting. Default `true`.
    pub keep_attached: bool,
    /// What the eBPF programs log into the daemon's log (target `guard::ebpf`): `off` (default),
    /// `error`, `warn`, `info`, `debug` or `trace`; `guard run --ebpf-log LEVEL` overrides it.
    pub ebpf_log: crate::xdp::EbpfLogLevel,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: XdpMode::Auto,
            pin_dir: PathBuf::from("/sys/fs/bpf/guard"),
            replace_pins: false,
            rate_limit_pps: 0,
            rate_limit_burst: 0,
            rate_event_window: Duration::from_secs(10),
            rate_ban: Duration::ZERO,
            rate_ban_unverified: false,
            keep_attached: true,
            ebpf_log: crate::xdp::EbpfLogLevel::Off,
        }
    }
}

/// `[bans]`: defaults for bans made without an explicit duration, and what is never banned.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BansConfig {
    /// Duration of `guard ban add` without `--ttl`; `0s` = permanent. Default `4h`.
    #[serde(deserialize_with = "de_duration")]
    pub default_ttl: Duration,
    /// How often expired bans are removed from the maps and the store. Default `250ms`.
    #[serde(deserialize_with = "de_duration")]
    pub sweep_interval: Duration,
    /// Addresses and CIDRs never banned, on top of what guard protects by itself (the host's
    /// addresses, default gateways, resolvers, `tap.trusted_proxies`, the AI endpoint). A ban
    /// of one of them, or inside one, is refused whatever asks; a CIDR containing one needs
    /// `guard ban add --force`. Default: empty.
    pub protect: Vec<crate::net::Net>,
    /// How often the host's addresses, default gateways and resolvers are read again, so that
    /// an address added after start is protected too. Default `30s`; `0s` = only at start.
    #[serde(deserialize_with = "de_duration")]
    pub protect_refresh: Duration,
}

impl Default for BansConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_hours(4),
            sweep_interval: Duration::from_millis(250),
            protect: Vec::new(),
            protect_refresh: Duration::from_secs(30),
        }
    }
}

pub(crate) use guard_core::time::de_duration;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_error::describe(text, &e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between keys.
    #[expect(
        clippy::too_many_lines,
        reason = "one check per key, in the order of the file"
    )]
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message: message.to_owned(),
            })
        };
        if let Some((key, message)) = self.proxy.problem() {
            return invalid(key, message);
        }
        if let Some((key, message)) = self.crowdsec.problem() {
            return invalid(key, &message);
        }
        if let Err(QuotasProblem { key, message }) = self.quotas.plan_set() {
            return Err(ConfigError::InvalidAt {
                path: path.to_owned(),
                key,
                message,
            });
        }
        if self.daemon.store_cache_mb == 0 || self.daemon.store_cache_mb > 1 << 20 {
            return invalid("daemon.store_cache_mb", "between 1 and 1048576 MiB");
        }
        if self.xdp.rate_limit_pps > 1_000_000_000 {
            return invalid("xdp.rate_limit_pps", "at most 1000000000 packets/s");
        }
        if self.xdp.rate_limit_burst > 0 && self.xdp.rate_limit_pps == 0 {
            return invalid(
                "xdp.rate_limit_burst",
                "set xdp.rate_limit_pps too (0 = rate limiting off)",
            );
        }
        if self
            .daemon
            .socket_group
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return invalid(
                "daemon.socket_group",
                "a group name or number, or no key at all",
            );
        }
        if self.xdp.pin_dir.is_relative() {
            return invalid("xdp.pin_dir", "must be an absolute path on a bpffs mount");
        }
        if self
            .xdp
            .pin_dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return invalid("xdp.pin_dir", "must not contain `..`");
        }
        if self.xdp.pin_dir == Path::new("/sys/fs/bpf") || self.xdp.pin_dir == Path::new("/") {
            return invalid(
                "xdp.pin_dir",
                "must be a directory of its own below the bpffs root, not /sys/fs/bpf itself \
                 (guard creates and removes its pins there by name); default /sys/fs/bpf/guard",
            );
        }
        if self.bans.sweep_interval.is_zero() || self.bans.sweep_interval > Duration::from_secs(1) {
            return invalid("bans.sweep_interval", "must be between 1ms and 1s");
        }
        if !self.bans.protect_refresh.is_zero()
            && self.bans.protect_refresh < Duration::from_secs(1)
        {
            return invalid("bans.protect_refresh", "at least 1s (or 0s: only at start)");
        }
        if self.logs.queue == 0 || self.logs.batch == 0 {
            return invalid("logs.queue", "logs.queue and logs.batch must be at least 1");
        }
        if self.logs.max_bytes != 0 && self.logs.max_bytes < 1024 * 1024 {
            return invalid(
                "logs.max_bytes",
                "at least 1048576 (1 MiB), or 0 for no cap",
            );
        }
        if self.logs.max_path_bytes < 16 {
            return invalid("logs.max_path_bytes", "at least 16");
        }
        if self.logs.max_query_bytes < 16 {
            return invalid("logs.max_query_bytes", "at least 16");
        }
        if self.tap.http_ports.contains(&0) {
            return invalid("tap.http_ports", "port 0 is not a port");
        }
        // No ports means no capture; otherwise the tap's own bounds must make sense.
        if !self.tap.http_ports.is_empty()
            && let Err(e) = self.tap.validate()
        {
            return invalid("tap", &e.to_string());
        }
        if let Some(pem) = self.tap.jwt_public_key.as_deref().filter(|p| !p.is_empty())
            && let Err(e) = crate::jwt::load(Path::new(pem))
        {
            return invalid("tap.jwt_public_key", &e.to_string());
        }
        if !(1..=4).contains(&self.validator.paranoia) {
            return invalid("validator.paranoia", "must be 1, 2, 3 or 4");
        }
        if let Err(crate::engine::EngineError::InvalidConfig { key, reason }) =
            self.engine.validate()
        {
            return invalid(key, &reason);
        }
        for name in &self.xdp.interfaces {
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return invalid(
                    "xdp.interfaces",
                    &format!("{name:?} is not an interface name"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("guard.toml"))
    }

    #[test]
    fn pin_dir_is_a_directory_of_its_own_below_the_bpffs_root() {
        for dir in [
            "/sys/fs/bpf",
            "/sys/fs/bpf/",
            "/",
            "/sys/fs/bpf/guard/..",
            "guard",
        ] {
            let e = parse(&format!("[xdp]\npin_dir = \"{dir}\"\n"))
                .expect_err(dir)
                .to_string();
            assert!(e.contains("xdp.pin_dir"), "{dir}: {e}");
        }
        let c =
            parse("[xdp]\npin_dir = \"/sys/fs/bpf/guard-2\"\n").expect("a directory of its own");
        assert!(!c.xdp.replace_pins, "--replace-pins is never a config key");
        assert!(parse("[xdp]\nreplace_pins = true\n").is_err());
    }

    #[test]
    fn empty_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.daemon.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.xdp.mode, XdpMode::Auto);
        assert_eq!(c.bans.default_ttl, Duration::from_hours(4));
        assert_eq!(c.logs.max_bytes, 256 * 1024 * 1024);
        assert_eq!(c.logs.limits(), crate::store::logs::Limits::default());
    }

    #[test]
    fn log_bounds_are_checked() {
        let c = parse("[logs]\nmax_bytes = 4194304\nmax_path_bytes = 100\n").unwrap();
        assert_eq!(
            (
                c.logs.max_bytes,
                c.logs.max_path_bytes,
                c.logs.max_query_bytes
            ),
            (4_194_304, 100, 4096)
        );
        let e = parse("[logs]\nmax_bytes = 1000\n").unwrap_err().to_string();
        assert!(e.contains("logs.max_bytes"), "{e}");
        let e = parse("[logs]\nmax_query_bytes = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("logs.max_query_bytes"), "{e}");
        assert_eq!(parse("[logs]\nmax_bytes = 0\n").unwrap().logs.max_bytes, 0);
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../guard.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.xdp.rate_event_window, Duration::from_secs(10));
        assert_eq!(c.validator, crate::validate::ValidatorConfig::default());
    }

    #[test]
    fn protect_list_and_ipv6_prefix() {
        let c = parse("").unwrap();
        assert!(c.bans.protect.is_empty());
        assert_eq!(c.engine.bans.ipv6_prefix, 64);
        let c = parse(
            "[bans]\nprotect = [\"10.0.0.1\", \"192.0.2.0/24\", \"2001:db8::/48\"]\n\
             [engine.bans]\nipv6_prefix = 56\n",
        )
        .unwrap();
        let got: Vec<String> = c.bans.protect.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.1", "192.0.2.0/24", "2001:db8::/48"]);
        assert_eq!(c.engine.bans.ipv6_prefix, 56);
        let e = parse("[bans]\nprotect = [\"10.0.0.300\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[engine.bans]\nipv6_prefix = 16\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("engine.bans.ipv6_prefix"), "{e}");
    }

    #[test]
    fn ebpf_log_level_by_name_off_by_default() {
        assert_eq!(
            parse("").unwrap().xdp.ebpf_log,
            crate::xdp::EbpfLogLevel::Off
        );
        let c = parse("[xdp]\nebpf_log = \"info\"\n").unwrap();
        assert_eq!(c.xdp.ebpf_log, crate::xdp::EbpfLogLevel::Info);
        assert_eq!(c.xdp.ebpf_log.global(), 3);
        assert!(parse("[xdp]\nebpf_log = \"loud\"\n").is_err());
    }

    #[test]
    fn cadences_and_rate_ban_proof_have_safe_defaults_and_bounds() {
        let c = parse("").unwrap();
        assert_eq!(c.bans.protect_refresh, Duration::from_secs(30));
        assert_eq!(c.engine.sweep_interval, Duration::from_mins(1));
        assert!(!c.xdp.rate_ban_unverified);
        let c =
            parse("[bans]\nprotect_refresh = \"0s\"\n[xdp]\nrate_ban_unverified = true\n").unwrap();
        assert!(c.bans.protect_refresh.is_zero() && c.xdp.rate_ban_unverified);
        let e = parse("[bans]\nprotect_refresh = \"100ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bans.protect_refresh"), "{e}");
        for bad in ["\"250ms\"", "\"2h\""] {
            let e = parse(&format!("[engine]\nsweep_interval = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("engine.sweep_interval"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_as_text_or_seconds() {
        let c = parse("[xdp]\nrate_ban = \"1h30m\"\nrate_event_window = 5\n").unwrap();
        assert_eq!(c.xdp.rate_ban, Duration::from_mins(90));
        assert_eq!(c.xdp.rate_event_window, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = parse("[xdp]\nrate_limit_pps = 10\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus") && e.contains("line 3"), "{e}");
        let e = parse("[bans]\ndefault_ttl = \"forever\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_ttl") || e.contains("line 2"), "{e}");
        assert!(e.contains("invalid duration"), "{e}");
        let e = parse("[xdp]\nrate_limit_burst = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("xdp.rate_limit_burst"), "{e}");
        let e = parse("[validator]\nparanoia = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("validator.paranoia"), "{e}");
        let e = parse("[engine.grey]\nhard_block = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("engine.grey.hard_block"), "{e}");
        let e = parse("[xdp]\nmode = \"turbo\"\n").unwrap_err().to_string();
        assert!(e.contains("turbo") && e.contains("line 2"), "{e}");
    }

    /// A negative duration is one sentence naming the file, the line and the key, without
    /// serde's or the parser's internals.
    #[test]
    fn a_negative_duration_names_file_line_and_key() {
        let e = Config::parse(
            "[daemon]\n\n[bans]\ndefault_ttl = -600\n",
            Path::new("/etc/guard/guard.toml"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "/etc/guard/guard.toml: line 4, key `bans.default_ttl`: a duration cannot be \
             negative (-600): write a number of seconds, or text like \"10m\" or \"4h\""
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
