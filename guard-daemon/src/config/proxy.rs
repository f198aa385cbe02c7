//! `[proxy]`: the inline mode. guard as a reverse proxy in front of one upstream, and a
//! forward-auth endpoint for nginx `auth_request`, Traefik `ForwardAuth` and Envoy `ext_authz`.
//! Both are off until a listen address is set.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::de_duration;

/// What the inline mode does with a request it would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InlineMode {
    /// Answer it (403, 429, …); the upstream never sees it.
    Enforce,
    /// Pass everything; log what would have been answered.
    Shadow,
}

/// `[proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Plain HTTP listen addresses (HTTP/1.1, and HTTP/2 with prior knowledge). Default: none.
    pub listen: Vec<SocketAddr>,
    /// HTTPS listen addresses (ALPN `h2` and `http/1.1`); needs `tls_cert` and `tls_key`.
    /// Default: none.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain and private key, re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where requests go: `http://host:port`. Required when a listen address is set.
    pub upstream: Option<String>,
    /// The forward-auth endpoint's listen address. Default: none.
    pub auth_listen: Option<SocketAddr>,
    /// `enforce` or `shadow`. Default `enforce`.
    pub mode: InlineMode,
    /// Largest request body; a longer one gets 413. 0 = no limit. Default 1 GiB.
    pub max_body: u64,
    /// Time to read a request's head; a slower client gets 408. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Connecting to the upstream; past it 502. Default `5s`.
    #[serde(deserialize_with = "de_duration")]
    pub upstream_connect_timeout: Duration,
    /// Waiting for the upstream's response head; past it 504. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub upstream_timeout: Duration,
    /// Requests in flight get this long to finish at shutdown. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// The status for a refused request (banned, hostile). Default 403.
    pub deny_status: u16,
    /// The status for a flood or a quota. Default 429.
    pub limit_status: u16,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            upstream: None,
            auth_listen: None,
            mode: InlineMode::Enforce,
            max_body: 1 << 30,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(1),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_mins(1),
            drain_timeout: Duration::from_secs(10),
            deny_status: 403,
            limit_status: 429,
        }
    }
}

impl ProxyConfig {
    /// Whether the reverse proxy runs.
    #[must_use]
    pub fn proxy_enabled(&self) -> bool {
        !self.listen.is_empty() || !self.tls_listen.is_empty()
    }

    /// The key and message of the first problem, if any.
    pub(super) fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.proxy_enabled() {
            match self.upstream.as_deref() {
                None => return Some(("proxy.upstream", "required when proxy.listen is set")),
                Some(u) if !valid_upstream(u) => {
                    return Some((
                        "proxy.upstream",
                        "an http:// URL with a host and no path, e.g. http://127.0.0.1:8000",
                    ));
                }
                Some(_) => {}
            }
        }
        if !self.tls_listen.is_empty() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Some(("proxy.tls_listen", "needs proxy.tls_cert and proxy.tls_key"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Some((
                "proxy.tls_cert",
                "proxy.tls_cert and proxy.tls_key go together",
            ));
        }
        for (key, status) in [
            ("proxy.deny_status", self.deny_status),
            ("proxy.limit_status", self.limit_status),
        ] {
            if !(400..=599).contains(&status) {
                return Some((key, "an HTTP error status, 400 to 599"));
            }
        }
        for (key, d) in [
            ("proxy.header_timeout", self.header_timeout),
            ("proxy.idle_timeout", self.idle_timeout),
            (
                "proxy.upstream_connect_timeout",
                self.upstream_connect_timeout,
            ),
            ("proxy.upstream_timeout", self.upstream_timeout),
        ] {
            if d.is_zero() {
                return Some((key, "must be more than 0s"));
            }
        }
        None
    }
}

/// `http://host[:port]` with nothing after the authority but an optional `/`.
fn valid_upstream(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    !authority.is_empty() && !authority.contains(['/', '?', '#', '@', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert!(valid_upstream("http://127.0.0.1:8000"));
        assert!(valid_upstream("http://app.internal/"));
        assert!(!valid_upstream("https://app"));
        assert!(!valid_upstream("http://"));
        assert!(!valid_upstream("http://app/api"));
        assert!(!valid_upstream("http://user@app"));
    }

    #[test]
    fn listen_needs_an_upstream_and_tls_needs_keys() {
        let mut c = ProxyConfig {
            listen: vec!["127.0.0.1:8080".parse().unwrap()],
            ..ProxyConfig::default()
        };
        assert_eq!(c.problem().map(|p| p.0), Some("proxy.upstream"));
        c.upstream = Some("http://127.0.0.1:8000".into());
        assert_eq!(c.problem(), None);
        c.tls_listen = vec!["127.0.0.1:8443".parse().unwrap()];
        assert_eq!(c.problem().map(|p| p.0), Some("proxy.tls_listen"));
        c.deny_status = 200;
        c.tls_listen.clear();
        assert_eq!(c.problem().map(|p| p.0), Some("proxy.deny_status"));
    }
}
