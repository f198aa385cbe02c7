//! A request a front end saw ([`Seen`]) turned into the same [`RequestEvent`] the tap makes of
//! a request it watched: the client and the user are named by the tap's own identity code
//! (`guard_core::tap::identity`), so both modes attribute a request alike.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use http::header::{self, HeaderMap};

use super::Seen;
use crate::net::Net;
use crate::tap::identity::{self, ForwardChain};
use crate::tap::jwt::JwtKeys;
use crate::tap::{ClientHeader, Evasion, RequestEvent, RequestHeaders, TapConfig, Trust};

/// Longest display copy of a forwarding header in the event (as the tap's).
const MAX_DISPLAY: usize = 4096;

/// How requests name their client and user: the tap's settings (`tap.trusted_proxies`,
/// `tap.client_header`, `tap.user_header`, and the JWT keys of `tap.jwt_hs256_key` and
/// `tap.jwt_public_key`).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub trusted_proxies: Vec<Net>,
    pub client_header: Option<ClientHeader>,
    /// Lower case.
    pub user_header: Option<String>,
    /// The keys bearer JWTs are verified with (`exp`/`nbf` checked at the request's time).
    pub jwt: JwtKeys,
    /// Without the configured forwarding header, take the client from `X-Real-IP` (one hop,
    /// nginx's `$remote_addr`). The forward-auth endpoint sets it; the proxy does not.
    pub real_ip_fallback: bool,
}

impl Identity {
    /// The tap's identity settings and its JWT `keys` (`crate::jwt::keys_of`); as in the tap,
    /// the forwarding header is read only when trusted proxies are configured.
    #[must_use]
    pub fn from_tap(tap: &TapConfig, jwt: JwtKeys) -> Self {
        Self {
            trusted_proxies: tap.trusted_proxies.clone(),
            client_header: (!tap.trusted_proxies.is_empty()).then_some(tap.client_header),
            user_header: tap.user_header.as_ref().map(|h| h.to_ascii_lowercase()),
            jwt,
            real_ip_fallback: false,
        }
    }

    /// The forwarding chain of a request's headers: the configured header parsed whole, every
    /// line in order (the tap's parser), or, if allowed and the header is missing, `X-Real-IP`.
    fn chain(&self, headers: &HeaderMap) -> Option<ForwardChain> {
        let which = self.client_header?;
        let lines = headers.get_all(which.name());
        if lines.iter().next().is_some() {
            return Some(ForwardChain::parse(
                which,
                lines.iter().map(http::HeaderValue::as_bytes),
            ));
        }
        if self.real_ip_fallback {
            let real = headers.get_all("x-real-ip");
            if real.iter().next().is_some() {
                return Some(ForwardChain::parse(
                    ClientHeader::XForwardedFor,
                    real.iter().map(http::HeaderValue::as_bytes),
                ));
            }
        }
        None
    }
}

/// The unspecified address of `peer`'s family: the client of a request that names none.
fn unspecified(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A header's value as text (lossy, trimmed, cut at the tap's bound), first line only.
fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let v = headers.get(name)?.as_bytes();
    Some(
        String::from_utf8_lossy(&v[..v.len().min(MAX_DISPLAY)])
            .trim()
            .to_owned(),
    )
}

/// Every line of a list header joined with `, ` (a display copy, cut at its bound).
fn list(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = String::from_utf8_lossy(v.as_bytes());
        match &mut out {
            Some(s) if s.len() < MAX_DISPLAY => {
                s.push_str(", ");
                s.push_str(v.trim());
            }
            Some(_) => {}
            None => out = Some(v.trim().to_owned()),
        }
    }
    if let Some(s) = &mut out {
        let keep = guard_core::text::truncate(s, MAX_DISPLAY).len();
        s.truncate(keep);
    }
    out
}

/// The request event of `seen`: connection number `conn_id`, received at `ts` (wall clock).
/// The peer completed a TCP handshake with guard, so the flow is verified; the client is the
/// peer, or, when the peer is a trusted proxy, the first untrusted hop of its forwarding chain
/// ([`Trust::NoClient`] when that names nobody).
#[must_use]
pub fn request_event(
    seen: &Seen<'_>,
    identity: &Identity,
    conn_id: u64,
    ts: Duration,
) -> RequestEvent {
    let head = seen.head;
    let h = &head.headers;
    let peer = seen.peer.ip();
    let chain = identity.chain(h);
    let named = identity::client_of(peer, chain.as_ref(), &identity.trusted_proxies);
    let trust = if named.is_some() {
        Trust::Verified
    } else {
        Trust::NoClient
    };
    let peer_trusted = identity::trusted(peer, &identity.trusted_proxies);
    let user_header = identity
        .user_header
        .as_deref()
        .and_then(|name| h.get(name))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
    let authorization = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let user = identity::user_id_at(
        user_header.as_deref(),
        peer_trusted,
        authorization,
        &identity.jwt,
        ts.as_secs(),
    );
    let (path, query) = match head.uri.path_and_query() {
        Some(pq) => (pq.path().to_owned(), pq.query().map(str::to_owned)),
        None => ("/".to_owned(), None),
    };
    let mut all = crate::tap::http::HeaderList::default();
    for (name, value) in h {
        all.push(name.as_str(), value.as_bytes());
    }
    let content_length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = h
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().to_ascii_lowercase().ends_with(b"chunked"));
    let host = text(h, header::HOST).or_else(|| head.uri.authority().map(ToString::to_string));
    let body_len = content_length.unwrap_or(seen.body.len() as u64);
    let head_bytes: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    RequestEvent {
        conn_id,
        ts,
        client: named.unwrap_or_else(|| unspecified(peer)),
        trust,
        peer: seen.peer,
        server: std::net::SocketAddr::new(unspecified(peer), 0),
        user,
        method: head.method.as_str().to_owned(),
        path,
        query,
        http_minor: u8::from(head.version != http::Version::HTTP_10),
        headers: RequestHeaders {
            host,
            user_agent: text(h, header::USER_AGENT),
            content_type: text(h, header::CONTENT_TYPE),
            content_length,
            chunked,
            has_authorization: h.contains_key(header::AUTHORIZATION),
            has_cookie: h.contains_key(header::COOKIE),
            x_forwarded_for: list(h, "x-forwarded-for"),
            forwarded: list(h, "forwarded"),
            referer: text(h, header::REFERER),
            evasion: Evasion::default(),
        },
        all_headers: all,
        body: seen.body.to_vec(),
        body_len,
        status: None,
        latency: None,
        bytes_in: (head_bytes as u64).saturating_add(body_len),
        bytes_out: 0,
        response_content_type: None,
    }
}
