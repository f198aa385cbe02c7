//! The `[engine]` section: every rule, weight, threshold and bound of the engine, with the seed's
//! values as defaults (see `AIAnomalyDetector.py`) and guard's own for what the seed lacks
//! (probing scenarios, ban escalation, bounds). Durations are text (`"10s"`, `"30m"`) or seconds.
use std::time::Duration;

use serde::Deserialize;

use super::EngineError;
use crate::time::de_duration;

/// What the engine does with a ban it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bans are decided and pushed (default).
    Enforce,
    /// Bans are decided, logged and counted, but marked `shadow` and never pushed.
    Shadow,
}

/// How the rate rules weigh a busy client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateProfile {
    /// Default. A rate alone is a rate limit, not a ban: the `requests_10s` block answers 429
    /// (inline) without a strike, and the grey points for an elevated rate, many distinct paths
    /// and a burst after idle are not given, unless the client's recent requests also do harm
    /// (an error share of `grey.error_percent` in 2 min,
    /// `black.harm_probe_paths` distinct paths answered 400/403/404 in 1 min, or a sensitive
    /// file, backdoor or traversal in 1 min). The flood bound and every other rule are unchanged.
    Weighted,
    /// The seed's rules as they were: every `requests_10s` block is a strike (three make a
    /// ban) and the rate points are given whatever the requests do. Busy clients behind one
    /// address (an office behind NAT) get banned under it.
    Seed,
}

/// `[engine]`: the behaviour engine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `enforce` (default) or `shadow`.
    pub mode: Mode,
    /// `weighted` (default) or `seed`: whether a high rate of harmless requests can ban.
    pub rate_profile: RateProfile,
    /// Clients (addresses, or users when known) whose state is kept; past it the least recently
    /// seen are evicted (approximately: a clock sweep) and counted. Default 100000.
    pub max_clients: usize,
    /// A client idle this long is dropped by [`super::Engine::expire`]. Default `24h` (the grace
    /// period counts requests of the last 24 h).
    #[serde(deserialize_with = "de_duration")]
    pub client_expiry: Duration,
    /// How often idle clients, old offences and unanswered triages are swept out (one pass over
    /// the client table under the engine's lock). Default `60s`; between `1s` and `1h`.
    #[serde(deserialize_with = "de_duration")]
    pub sweep_interval: Duration,
    /// Requests remembered per client (time, path hash, numeric id, status class) for distinct
    /// path counts, sequential ids and 404 probing. Default 32; at least 16.
    pub history: usize,
    /// Recent paths kept as text per client, for the AI payload and ban evidence. Default 8.
    pub sample_paths: usize,
    /// Longest sample path kept, in bytes (cut at a character boundary). Default 256.
    pub sample_path_max: usize,
    /// Extensions of static assets: requests for them count only toward the flood rule, not
    /// toward the seed's rates, error share, distinct paths or 404 probing (the seed, a Django
    /// middleware, never saw them). Default: js, css, images, fonts, source maps.
    pub static_extensions: Vec<String>,
    /// Key clients by user ids the tap could not verify (a claim of the client). Default false:
    /// an unverified id could be rotated to dodge per-client windows.
    pub trust_unverified_users: bool,
    /// Count 5xx answers as the client's errors in the error-rate rules. Default false: the seed
    /// counted every status >= 400, so a backend outage made every active client "erroneous".
    pub count_server_errors: bool,
    /// Least time between two AI triages of one client. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub triage_interval: Duration,
    /// Triages waiting for an AI verdict, kept for the ban evidence. Default 10000.
    pub max_pending_triage: usize,
    pub black: BlackConfig,
    pub grey: GreyConfig,
    pub scenarios: ScenarioConfig,
    pub bans: EngineBansConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            rate_profile: RateProfile::Weighted,
            max_clients: 100_000,
            client_expiry: Duration::from_hours(24),
            sweep_interval: Duration::from_mins(1),
            history: 32,
            sample_paths: 8,
            sample_path_max: 256,
            static_extensions: strings(&[
                "js", "mjs", "css", "png", "jpg", "jpeg", "gif", "svg", "ico", "webp", "avif",
                "woff", "woff2", "ttf", "otf", "eot", "map",
            ]),
            trust_unverified_users: false,
            count_server_errors: false,
            triage_interval: Duration::from_mins(1),
            max_pending_triage: 10_000,
            black: BlackConfig::default(),
            grey: GreyConfig::default(),
            scenarios: ScenarioConfig::default(),
            bans: EngineBansConfig::default(),
        }
    }
}

/// `[engine.black]`: rules that block a request outright (the seed's BLACK list, plus a flood
/// bound that counts static assets too).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlackConfig {
    /// Block requests without a `User-Agent`. Default true.
    pub empty_user_agent: bool,
    /// Block at this many requests (static assets excluded) in 10 s. Default 50.
    pub requests_10s: u32,
    /// Block at this many requests of any kind in 10 s. Default 500.
    pub flood_requests_10s: u32,
    /// Block at this share of 4xx/5xx answers in 2 min, in per cent. Default 75.
    pub error_percent: u32,
    /// ... once the client made at least this many requests in those 2 min. Default 10.
    pub error_min_requests: u32,
    /// Under `rate_profile = "weighted"`: this many distinct paths answered 400/403/404 in
    /// 1 min make a busy client's rate count (with an error share of `grey.error_percent`, or
    /// any sensitive file, backdoor or traversal in 1 min). Default 3.
    pub harm_probe_paths: u32,
}

impl Default for BlackConfig {
    fn default() -> Self {
        Self {
            empty_user_agent: true,
            requests_10s: 50,
            flood_requests_10s: 500,
            error_percent: 75,
            error_min_requests: 10,
            harm_probe_paths: 3,
        }
    }
}

/// `[engine.grey]`: the seed's suspicion score. At `threshold` the client goes to the AI; at
/// `hard_block` the request is blocked without asking.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GreyConfig {
    /// Clients with fewer requests than this in 24 h are not scored. Default 20.
    pub grace_requests_24h: u32,
    /// Score from which the client is triaged by the AI. Default 4.
    pub threshold: u32,
    /// Score from which the request is blocked without the AI. Default 8.
    pub hard_block: u32,
    /// Elevated rate: this many requests in 10 s (up to the black limit). Default 20.
    pub elevated_requests_10s: u32,
    /// Moderate error share in 2 min, in per cent (up to the black share). Default 40.
    pub error_percent: u32,
    /// Endpoint scanning: this many distinct paths in 1 min. Default 15.
    pub distinct_paths_1min: u32,
    /// Sequential id probing: this many ids in a row (+1 or -1 each, in time order) under one
    /// path prefix within 1 min. Default 5.
    pub sequential_ids: u32,
    /// A client silent this long that then bursts is "bursting after idle". Default `30m`.
    #[serde(deserialize_with = "de_duration")]
    pub idle_gap: Duration,
    /// The burst: this many requests in 10 s ... Default 15.
    pub idle_burst_requests_10s: u32,
    /// ... on at most this many distinct paths. Default 2.
    pub idle_burst_max_paths: u32,
    /// Path prefixes that are sensitive. Default: the seed's list.
    pub sensitive_paths: Vec<String>,
    /// User-agent substrings (case-insensitive) of scripts and headless browsers. Default: the
    /// seed's list.
    pub suspicious_user_agents: Vec<String>,
    pub weights: Weights,
}

impl Default for GreyConfig {
    fn default() -> Self {
        Self {
            grace_requests_24h: 20,
            threshold: 4,
            hard_block: 8,
            elevated_requests_10s: 20,
            error_percent: 40,
            distinct_paths_1min: 15,
            sequential_ids: 5,
            idle_gap: Duration::from_mins(30),
            idle_burst_requests_10s: 15,
            idle_burst_max_paths: 2,
            sensitive_paths: strings(&[
                "/admin",
                "/.env",
                "/config",
                "/phpmyadmin",
                "/wp-admin",
                "/api/token",
                "/api/login",
            ]),
            suspicious_user_agents: strings(&[
                "curl",
                "python-requests",
                "go-http",
                "java/",
                "headlesschrome",
                "phantomjs",
                "scrapy",
                "wget",
                "libwww",
                "httpx",
                "okhttp",
                "aiohttp",
            ]),
            weights: Weights::default(),
        }
    }
}

/// `[engine.grey.weights]`: points each grey rule adds (the seed's weights).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Default 2.
    pub suspicious_user_agent: u32,
    /// Default 3.
    pub elevated_rate: u32,
    /// Default 2.
    pub error_rate: u32,
    /// Default 4.
    pub sensitive_path: u32,
    /// Default 2.
    pub endpoint_scanning: u32,
    /// Default 5.
    pub sequential_ids: u32,
    /// Default 2.
    pub idle_burst: u32,
    /// Default 1.
    pub unauthenticated: u32,
    /// A validator finding worth an AI look (not the seed's; the validator is guard's). Default 2.
    pub validator: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            suspicious_user_agent: 2,
            elevated_rate: 3,
            error_rate: 2,
            sensitive_path: 4,
            endpoint_scanning: 2,
            sequential_ids: 5,
            idle_burst: 2,
            unauthenticated: 1,
            validator: 2,
        }
    }
}

/// `[engine.scenarios]`: probing scenarios of the `CrowdSec` kind, each banning directly. The
/// counted ones are leaky buckets: each hit adds one, one leaks out every `*_leak`, and the
/// client is banned when the level reaches `*_hits`. Leaks count in whole seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScenarioConfig {
    /// 404/403/400 probing: this many distinct non-static paths answered so ... Default 10.
    pub probing_distinct_paths: u32,
    /// ... within this window. Default `1m`.
    #[serde(deserialize_with = "de_duration")]
    pub probing_window: Duration,
    /// Path substrings (matched lower-case, percent-decoded) of files that must never be served.
    pub sensitive_files: Vec<String>,
    /// Default 3.
    pub sensitive_file_hits: u32,
    /// Default `1m`.
    #[serde(deserialize_with = "de_duration")]
    pub sensitive_file_leak: Duration,
    /// Path substrings of known web shells and backdoors.
    pub backdoors: Vec<String>,
    /// Default 2.
    pub backdoor_hits: u32,
    /// Default `5m`.
    #[serde(deserialize_with = "de_duration")]
    pub backdoor_leak: Duration,
    /// Path traversal in the decoded path or query (`../`, `/etc/passwd`, ...). Default 3.
    pub traversal_hits: u32,
    /// Default `1m`.
    #[serde(deserialize_with = "de_duration")]
    pub traversal_leak: Duration,
    /// Path prefixes of login endpoints, where 401/403 answers count as failed logins.
    pub login_paths: Vec<String>,
    /// Failed logins. Default 10.
    pub brute_force_hits: u32,
    /// Default `30s`.
    #[serde(deserialize_with = "de_duration")]
    pub brute_force_leak: Duration,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        Self {
            probing_distinct_paths: 10,
            probing_window: Duration::from_mins(1),
            sensitive_files: strings(&[
                "/.env",
                "/.git/",
                "/.svn/",
                "/.hg/",
                "/.htpasswd",
                "/.htaccess",
                "/.aws/",
                "/.ssh/",
                "/.ds_store",
                "/.npmrc",
                "/.dockerenv",
                "/id_rsa",
                "/wp-config.php",
                "/wp-admin",
                "/wp-login.php",
                "/xmlrpc.php",
                "/phpinfo.php",
                "/server-status",
                "/web.config",
                "/backup.sql",
                "/dump.sql",
                "/database.sql",
                "/config.php.bak",
                "/.vscode/sftp.json",
                "/actuator/env",
            ]),
            sensitive_file_hits: 3,
            sensitive_file_leak: Duration::from_mins(1),
            backdoors: strings(&[
                "shell.php",
                "c99.php",
                "r57.php",
                "wso.php",
                "wso2.php",
                "b374k",
                "cmd.php",
                "alfa.php",
                "alfacgiapi",
                "indoxploit",
                "webshell",
                "/up.php",
                "/ws.php",
                "/x.php",
                "/1.php",
                "adminer.php",
                "eval-stdin.php",
            ]),
            backdoor_hits: 2,
            backdoor_leak: Duration::from_mins(5),
            traversal_hits: 3,
            traversal_leak: Duration::from_mins(1),
            login_paths: strings(&[
                "/login",
                "/signin",
                "/sign-in",
                "/auth",
                "/api/login",
                "/api/token",
                "/api/auth",
                "/oauth/token",
                "/user/login",
                "/users/sign_in",
                "/wp-login.php",
                "/xmlrpc.php",
                "/session",
            ]),
            brute_force_hits: 10,
            brute_force_leak: Duration::from_secs(30),
        }
    }
}

/// `[engine.bans]`: how long the engine bans, and when blocks become a ban.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineBansConfig {
    /// First ban of a client. Default `1h`.
    #[serde(deserialize_with = "de_duration")]
    pub ttl: Duration,
    /// Each further ban of the same address lasts this many times the previous. Default 4.
    pub factor: u32,
    /// Longest ban. Default `7d`.
    #[serde(deserialize_with = "de_duration")]
    pub max_ttl: Duration,
    /// Blocked requests (black rules, hard grey score, validator blocks) that make a ban; they
    /// leak one per `strike_leak`. 0 = blocks never ban. Default 3.
    pub block_strikes: u32,
    /// Default `2m`.
    #[serde(deserialize_with = "de_duration")]
    pub strike_leak: Duration,
    /// A past ban counts toward escalation for this long. Default `30d`.
    #[serde(deserialize_with = "de_duration")]
    pub offender_memory: Duration,
    /// Addresses whose ban count is kept; the oldest are forgotten first. Default 100000.
    pub max_offenders: usize,
    /// An IPv6 client's ban covers its network of this many bits (one host commonly owns a
    /// whole /64 and picks new addresses in it at will); 128 = the address alone. 32..=128.
    /// Default 64.
    pub ipv6_prefix: u8,
}

impl Default for EngineBansConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_hours(1),
            factor: 4,
            max_ttl: Duration::from_hours(7 * 24),
            block_strikes: 3,
            strike_leak: Duration::from_mins(2),
            offender_memory: Duration::from_hours(30 * 24),
            max_offenders: 100_000,
            ipv6_prefix: 64,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl EngineConfig {
    /// Checks ranges and relations serde cannot.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |key: &'static str, reason: &str| {
            Err(EngineError::InvalidConfig {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.max_clients == 0 {
            return bad("engine.max_clients", "at least 1");
        }
        if !(Duration::from_secs(1)..=Duration::from_hours(1)).contains(&self.sweep_interval) {
            return bad("engine.sweep_interval", "between 1s and 1h");
        }
        if !(16..=255).contains(&self.history) {
            return bad("engine.history", "between 16 and 255");
        }
        let g = &self.grey;
        let needed = [
            g.distinct_paths_1min,
            g.sequential_ids,
            self.scenarios.probing_distinct_paths,
        ];
        if needed.iter().any(|&n| n as usize > self.history) {
            return bad(
                "engine.history",
                "must be at least grey.distinct_paths_1min, grey.sequential_ids and \
                 scenarios.probing_distinct_paths",
            );
        }
        if g.threshold == 0 || g.hard_block < g.threshold {
            return bad(
                "engine.grey.hard_block",
                "need 1 <= grey.threshold <= grey.hard_block",
            );
        }
        if g.sequential_ids < 2 {
            return bad("engine.grey.sequential_ids", "at least 2");
        }
        if self.black.error_percent > 100 || g.error_percent > 100 {
            return bad("engine.black.error_percent", "a share in per cent, 0..=100");
        }
        let s = &self.scenarios;
        for (key, hits, leak) in [
            (
                "engine.scenarios.sensitive_file_leak",
                s.sensitive_file_hits,
                s.sensitive_file_leak,
            ),
            (
                "engine.scenarios.backdoor_leak",
                s.backdoor_hits,
                s.backdoor_leak,
            ),
            (
                "engine.scenarios.traversal_leak",
                s.traversal_hits,
                s.traversal_leak,
            ),
            (
                "engine.scenarios.brute_force_leak",
                s.brute_force_hits,
                s.brute_force_leak,
            ),
            (
                "engine.bans.strike_leak",
                self.bans.block_strikes,
                self.bans.strike_leak,
            ),
        ] {
            if hits > 0 && leak < Duration::from_secs(1) {
                return bad(key, "at least 1s");
            }
        }
        if s.probing_window.is_zero() || s.probing_window > Duration::from_hours(1) {
            return bad("engine.scenarios.probing_window", "between 1s and 1h");
        }
        let b = &self.bans;
        if b.ttl.is_zero() || b.max_ttl < b.ttl {
            return bad("engine.bans.max_ttl", "need 0s < bans.ttl <= bans.max_ttl");
        }
        if b.factor == 0 {
            return bad("engine.bans.factor", "at least 1");
        }
        if b.max_offenders == 0 {
            return bad("engine.bans.max_offenders", "at least 1");
        }
        if !(32..=128).contains(&b.ipv6_prefix) {
            return bad(
                "engine.bans.ipv6_prefix",
                "between 32 and 128 (64 = the client's /64)",
            );
        }
        Ok(())
    }
}
