//! The `[tap]` section of the TOML config: which ports carry HTTP, and every bound the tap works
//! within (flows, buffers, head and body sizes), plus how clients and users are identified.
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::net::Net;

#[cfg(test)]
mod tests;

/// `[tap]`: HTTP observation at the socket hook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapConfig {
    /// TCP ports of the protected HTTP server(s); a packet to or from one of them is HTTP.
    pub http_ports: Vec<u16>,
    /// Connections tracked at once. Past it the least recently seen unverified flow is evicted
    /// (a verified flow never is); when every flow is verified, new flows are refused.
    pub max_flows: usize,
    /// Connections tracked at once from one source address (trusted proxies are exempt); past it
    /// new flows from that source are refused.
    pub max_flows_per_source: usize,
    /// Out-of-order bytes buffered per direction of a connection before it is abandoned.
    pub max_flow_buffer: usize,
    /// Bytes buffered across all connections — out-of-order data, partial heads, kept body
    /// prefixes, requests waiting for their response — before the flow that overflows is
    /// abandoned.
    pub max_total_buffer: usize,
    /// A connection with no packet for this long is closed (seconds in TOML).
    #[serde(deserialize_with = "secs")]
    pub idle_timeout: Duration,
    /// Body bytes kept per message for inspection; the rest is counted and skipped.
    pub body_inspect_cap: usize,
    /// Longest accepted message head (request line + headers); longer is malformed.
    pub max_head_size: usize,
    /// Requests waiting for their response on one connection (pipelining) before it is abandoned.
    pub max_pipelined: usize,
    /// Peers whose forwarding header is believed (CIDRs, e.g. "10.0.0.0/8"). A request from one of
    /// them is attributed to the client its `client_header` names, never to the proxy.
    pub trusted_proxies: Vec<Net>,
    /// The forwarding header the trusted proxies write: `"x-forwarded-for"` or `"forwarded"`.
    /// Only that one is read, never the other.
    pub client_header: ClientHeader,
    /// Header carrying the user id (set by an auth proxy), e.g. "X-User-Id".
    pub user_header: Option<String>,
    /// HS256 key: bearer JWTs whose signature checks with it give a verified user id.
    pub jwt_hs256_key: Option<String>,
    /// The packet ring between the kernel and each capture thread, in MiB (one per interface).
    /// It holds the traffic of the ports above while the thread is busy: at 1 Gbit/s, 8 MiB is
    /// about 65 ms. The kernel's drops when it is full show in `guard stats`
    /// (`capture.drops`). 1 to 1024.
    pub ring_mb: u32,
    /// PEM file of public keys (RSA, EC P-256): RS256 and ES256 bearer JWTs whose signature
    /// checks with one of them give a verified user id. Read by the daemon at start.
    pub jwt_public_key: Option<String>,
}

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            // The usual plain-HTTP ports; TLS ports carry nothing readable.
            http_ports: vec![80, 8080],
            // ~65k connections: a few hundred bytes each plus their buffers.
            max_flows: 65_536,
            // 4096: one source takes at most 1/16 of the default table (a NAT of a few hundred
            // browsers fits).
            max_flows_per_source: 4096,
            // 256 KiB: several windows of reordering on a LAN-speed connection.
            max_flow_buffer: 256 * 1024,
            // 64 MiB across all flows.
            max_total_buffer: 64 * 1024 * 1024,
            // Longer than common keep-alive timeouts (nginx 75 s).
            idle_timeout: Duration::from_mins(2),
            // 8 KiB of each body: enough for form and JSON payload checks.
            body_inspect_cap: 8 * 1024,
            // 64 KiB, above what common servers accept (nginx 8–32 KiB, Node 16 KiB).
            max_head_size: 64 * 1024,
            // 64 pipelined requests; browsers do not pipeline, tools rarely exceed a handful.
            max_pipelined: 64,
            // None: only the peer address counts until proxies are configured.
            trusted_proxies: Vec::new(),
            // What nginx, HAProxy and most load balancers write.
            client_header: ClientHeader::XForwardedFor,
            // None: user ids come from bearer JWTs only.
            user_header: None,
            // None: JWT `sub` claims are reported as unverified.
            jwt_hs256_key: None,
            // 8 MiB: 10,000 requests/s across namespaces lose nothing (`cargo xtask bench tap`).
            ring_mb: 8,
            // None: RS256/ES256 tokens are reported as unverified.
            jwt_public_key: None,
        }
    }
}

/// A `[tap]` value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapConfigError {
    #[error("tap.http_ports is empty")]
    NoPorts,
    #[error("tap.{key} must be at least {min}")]
    TooSmall { key: &'static str, min: u64 },
    #[error("tap.max_flow_buffer ({flow}) is larger than tap.max_total_buffer ({total})")]
    FlowAboveTotal { flow: usize, total: usize },
    #[error("tap.jwt_hs256_key is empty")]
    EmptyJwtKey,
    #[error("tap.ring_mb must be between 1 and 1024")]
    RingSize,
    #[error("tap.jwt_public_key is empty (give the path of a PEM file, or leave it out)")]
    EmptyJwtPublicKey,
}

impl TapConfig {
    /// Checks the values that would make the tap useless or inconsistent.
    pub fn validate(&self) -> Result<(), TapConfigError> {
        if self.http_ports.is_empty() {
            return Err(TapConfigError::NoPorts);
        }
        let mins: [(&'static str, u64, u64); 6] = [
            ("max_flows", self.max_flows as u64, 1),
            ("max_flows_per_source", self.max_flows_per_source as u64, 1),
            ("max_pipelined", self.max_pipelined as u64, 1),
            // A request line plus a few headers must fit.
            ("max_head_size", self.max_head_size as u64, 1024),
            ("max_flow_buffer", self.max_flow_buffer as u64, 1500),
            ("idle_timeout", self.idle_timeout.as_secs(), 1),
        ];
        for (key, value, min) in mins {
            if value < min {
                return Err(TapConfigError::TooSmall { key, min });
            }
        }
        if self.max_flow_buffer > self.max_total_buffer {
            return Err(TapConfigError::FlowAboveTotal {
                flow: self.max_flow_buffer,
                total: self.max_total_buffer,
            });
        }
        if self.jwt_hs256_key.as_deref() == Some("") {
            return Err(TapConfigError::EmptyJwtKey);
        }
        if !(1..=1024).contains(&self.ring_mb) {
            return Err(TapConfigError::RingSize);
        }
        if self.jwt_public_key.as_deref() == Some("") {
            return Err(TapConfigError::EmptyJwtPublicKey);
        }
        Ok(())
    }
}

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ClientHeader {
    /// The header's name, lower case.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}
