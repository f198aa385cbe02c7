//! The reverse proxy's counters, shown by `guard stats`: one set of relaxed atomics shared by
//! every connection task, read into a plain [`ProxyCounters`] for the control socket.
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters. Cloned `Arc`s of one value are held by the listeners and the daemon.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub(super) connections: AtomicU64,
    pub(super) tls_handshake_failures: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) answered: AtomicU64,
    pub(super) upgrades: AtomicU64,
    pub(super) status_408: AtomicU64,
    pub(super) status_413: AtomicU64,
    pub(super) status_502: AtomicU64,
    pub(super) status_504: AtomicU64,
    pub(super) upstream_errors: AtomicU64,
    pub(super) idle_closed: AtomicU64,
    pub(super) tls_reloads: AtomicU64,
    pub(super) tls_reload_failures: AtomicU64,
    /// Time from a request's head to its response's head (the body streams after), for
    /// `/metrics`.
    pub latency: crate::metrics::LatencyHistogram,
}

/// What `guard stats` shows of the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyCounters {
    /// Client connections accepted (plain and TLS).
    pub connections: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: u64,
    /// Requests received (each HTTP/2 stream counts as one).
    pub requests: u64,
    /// Requests the gate answered itself (403, 429, …); the upstream never saw them.
    pub answered: u64,
    /// Connections upgraded (WebSocket) and tunnelled to the upstream.
    pub upgrades: u64,
    /// Clients too slow to send a request head (`proxy.header_timeout`) or its body.
    pub status_408: u64,
    /// Bodies over `proxy.max_body`.
    pub status_413: u64,
    /// The upstream refused, could not be reached in time, or broke the exchange.
    pub status_502: u64,
    /// The upstream did not answer within `proxy.upstream_timeout`.
    pub status_504: u64,
    /// Every failed exchange with the upstream (502 and 504 together, and errors after the head).
    pub upstream_errors: u64,
    /// Keep-alive connections closed after `proxy.idle_timeout`.
    pub idle_closed: u64,
    /// Certificate reloads (SIGHUP) that took effect, and those refused (the old one stays).
    pub tls_reloads: u64,
    pub tls_reload_failures: u64,
}

impl ProxyStats {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters now.
    #[must_use]
    pub fn snapshot(&self) -> ProxyCounters {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyCounters {
            connections: r(&self.connections),
            tls_handshake_failures: r(&self.tls_handshake_failures),
            requests: r(&self.requests),
            answered: r(&self.answered),
            upgrades: r(&self.upgrades),
            status_408: r(&self.status_408),
            status_413: r(&self.status_413),
            status_502: r(&self.status_502),
            status_504: r(&self.status_504),
            upstream_errors: r(&self.upstream_errors),
            idle_closed: r(&self.idle_closed),
            tls_reloads: r(&self.tls_reloads),
            tls_reload_failures: r(&self.tls_reload_failures),
        }
    }
}
