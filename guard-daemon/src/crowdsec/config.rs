//! `[crowdsec]`: joining a CrowdSec Local API (LAPI) as a bouncer (its decisions become bans)
//! and, with a machine login, as a watcher (guard's own bans are pushed to it as alerts).
//! Secrets come from an environment variable or a file, never from the configuration file.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::CrowdsecError;
use crate::config::de_duration;

/// The `[crowdsec]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrowdsecConfig {
    /// The LAPI's base URL (`http://127.0.0.1:8080`). Default: none, CrowdSec off.
    pub lapi_url: Option<String>,
    /// Environment variable holding the bouncer key (`cscli bouncers add NAME`); read first.
    /// Default `GUARD_CROWDSEC_KEY`.
    pub api_key_env: String,
    /// File holding the bouncer key (first line), read when the variable is unset or empty.
    /// Default: none. With `lapi_url` set and no key at all, guard refuses to start.
    pub api_key_file: Option<PathBuf>,
    /// Time between two polls of `/v1/decisions/stream`. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// Longest wait between two attempts while the LAPI is down (the wait starts at
    /// `poll_interval` and doubles). Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Time allowed for one HTTP exchange with the LAPI. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Shortest IPv4 prefix a `range` decision may have; wider ones are refused and counted.
    /// Default 16.
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix a `range` decision may have. Default 32.
    pub min_prefix_v6: u8,
    /// Machine id (`cscli machines add ID`) to log in with and push guard's bans as alerts.
    /// Default: none, nothing pushed.
    pub machine_id: Option<String>,
    /// Environment variable holding the machine's password; read first. Default
    /// `GUARD_CROWDSEC_PASSWORD`.
    pub machine_password_env: String,
    /// File holding the machine's password (first line). Default: none.
    pub machine_password_file: Option<PathBuf>,
    /// Push the operator's bans (`guard ban add`, `guard ban import`) too, not only the bans
    /// guard makes by itself (engine, packet rate). Default `false`.
    pub push_manual: bool,
    /// Alerts waiting to be pushed while the LAPI is down; beyond, new ones are dropped and
    /// counted. Default 10000.
    pub push_queue: usize,
}

impl Default for CrowdsecConfig {
    fn default() -> Self {
        Self {
            // Off until pointed at a LAPI.
            lapi_url: None,
            api_key_env: "GUARD_CROWDSEC_KEY".to_owned(),
            api_key_file: None,
            // CrowdSec's own bouncers poll every 10 s.
            poll_interval: Duration::from_secs(10),
            // A LAPI down for long is asked once a minute.
            retry_max: Duration::from_mins(1),
            // A local LAPI answers in milliseconds; 10 s covers a full list of many decisions.
            timeout: Duration::from_secs(10),
            // A /16 is 65,536 addresses: wider is a mistake or an attack on the fleet.
            min_prefix_v4: 16,
            // A /32 is a whole provider's allocation.
            min_prefix_v6: 32,
            machine_id: None,
            machine_password_env: "GUARD_CROWDSEC_PASSWORD".to_owned(),
            machine_password_file: None,
            push_manual: false,
            // A few MB of alerts at most.
            push_queue: 10_000,
        }
    }
}

impl CrowdsecConfig {
    /// Whether guard talks to a LAPI at all.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.lapi_url.is_some()
    }

    /// Checks what serde cannot; `(key, message)` for the first problem.
    #[must_use]
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(url) = &self.lapi_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => {
                    return Some((
                        "crowdsec.lapi_url",
                        format!("scheme {:?}: must be http or https", u.scheme()),
                    ));
                }
                Err(e) => return Some(("crowdsec.lapi_url", format!("{url:?}: {e}"))),
            }
        }
        if self.poll_interval < Duration::from_millis(100) {
            return Some(("crowdsec.poll_interval", "at least 100ms".into()));
        }
        if self.retry_max < self.poll_interval {
            return Some((
                "crowdsec.retry_max",
                "at least crowdsec.poll_interval".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Some(("crowdsec.timeout", "above 0s".into()));
        }
        if !(1..=32).contains(&self.min_prefix_v4) {
            return Some(("crowdsec.min_prefix_v4", "between 1 and 32".into()));
        }
        if !(1..=128).contains(&self.min_prefix_v6) {
            return Some(("crowdsec.min_prefix_v6", "between 1 and 128".into()));
        }
        if self.machine_id.as_deref().is_some_and(str::is_empty) {
            return Some((
                "crowdsec.machine_id",
                "a machine id, or no key at all".into(),
            ));
        }
        if self.push_queue == 0 {
            return Some(("crowdsec.push_queue", "at least 1".into()));
        }
        None
    }

    /// The stream endpoint.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.lapi_url.as_deref().unwrap_or("").trim_end_matches('/')
        )
    }
}

/// A secret read from the environment or a file; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret given directly (tests).
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The variable `var` (through `env`), else the first line of `file`; `None` with neither.
pub fn load_secret(
    var: &str,
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, CrowdsecError> {
    if let Some(v) = env(var).map(|k| k.trim().to_owned())
        && !v.is_empty()
    {
        return Ok(Some(Secret(v)));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| CrowdsecError::SecretFile {
        path: path.to_owned(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(CrowdsecError::EmptySecretFile {
            path: path.to_owned(),
        });
    }
    Ok(Some(Secret(line.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_variable_then_the_file() {
        let dir = std::env::temp_dir().join(format!("guard-cs-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "from-file\nignored\n").unwrap();
        let env = |v: &str| (v == "K").then(|| " from-env ".to_owned());
        let s = load_secret("K", Some(&file), env).unwrap().unwrap();
        assert_eq!(s.expose(), "from-env");
        let s = load_secret("OTHER", Some(&file), env).unwrap().unwrap();
        assert_eq!(s.expose(), "from-file");
        assert!(load_secret("OTHER", None, env).unwrap().is_none());
        std::fs::write(&file, "\n").unwrap();
        let e = load_secret("OTHER", Some(&file), env)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = CrowdsecConfig {
            lapi_url: Some("ftp://x".into()),
            ..CrowdsecConfig::default()
        };
        assert_eq!(c.problem().unwrap().0, "crowdsec.lapi_url");
        c.lapi_url = Some("http://127.0.0.1:8080/".into());
        assert!(c.problem().is_none());
        assert_eq!(
            c.url("/v1/decisions/stream"),
            "http://127.0.0.1:8080/v1/decisions/stream"
        );
        c.min_prefix_v4 = 0;
        assert_eq!(c.problem().unwrap().0, "crowdsec.min_prefix_v4");
    }
}
