//! The inline mode's seam: what the reverse proxy and the forward-auth endpoint hand to the
//! decision, and what they get back. The transport (listeners, TLS, HTTP/1.1 and HTTP/2, the
//! upstream pool, streaming) knows nothing of the validator, the engine or the bans; the decision
//! knows nothing of sockets. Both sides are tested on their own through this trait.
//!
//! - [`gate`]: [`gate::InlineGate`], the decision (bans, the user seam, validator and engine,
//!   the log record);
//! - [`event`]: a seen request as the tap's `RequestEvent`;
//! - [`answer`]: the refusal page (HTML or JSON) with its request id;
//! - [`front`] and [`auth`]: the forward-auth endpoint for nginx, Traefik and Envoy;
//! - [`pending`]: the proxy's passed requests waiting for the upstream's status
//!   ([`gate::InlineGate::for_proxy`]: the reverse proxy's gate, made from the daemon's one, whose
//!   records carry the upstream's status reported through [`Gate::finished`]; call
//!   `flush_pending` at shutdown).
use std::net::SocketAddr;

use bytes::Bytes;

pub mod answer;
pub mod auth;
pub mod event;
pub mod front;
pub mod gate;
pub mod pending;

pub use gate::{InlineGate, Refusal, UserCheck};

/// One request as a front end saw it, before anything was sent upstream.
#[derive(Debug)]
pub struct Seen<'a> {
    /// The TCP peer: the client, or a proxy in front of guard (then the client comes from the
    /// forwarding headers, and only if the peer is a trusted proxy).
    pub peer: SocketAddr,
    /// Whether the client spoke TLS to guard.
    pub tls: bool,
    /// Method, URI, version and headers, as received (hop-by-hop headers not yet removed).
    pub head: &'a http::request::Parts,
    /// The first bytes of the body, at most `validator.max_body` (empty for forward-auth, which
    /// never sees bodies).
    pub body: &'a [u8],
    /// Whether `body` is the whole body.
    pub body_complete: bool,
}

/// What the decision says about a request.
#[derive(Debug)]
pub enum Verdict {
    /// Send it on. `id` is the request's id, also in the log record; `headers` go on the
    /// response the client gets (the quotas' `RateLimit` and `RateLimit-Policy` of an admitted
    /// request; usually none).
    Pass {
        id: String,
        headers: http::HeaderMap,
    },
    /// Answer the client with this response (403, 429, …) and send nothing upstream. In shadow
    /// mode the decision gives `Pass` and logs what it would have answered.
    Answer {
        id: String,
        response: http::Response<Bytes>,
    },
}

/// The per-request decision of the inline mode. It must be quick (no I/O on the caller's task:
/// lookups are in memory) and never panic on input.
pub trait Gate: Send + Sync + 'static {
    /// Judges a request before any of it reaches the upstream.
    fn check(&self, seen: &Seen<'_>) -> Verdict;

    /// The upstream's (or guard's own) answer to a request that passed, for the log.
    fn finished(&self, id: &str, status: u16) {
        let _ = (id, status);
    }
}
