//! One request through the proxy: the head and the first body bytes go to the gate; a request
//! it passes goes upstream with its head rewritten (hop-by-hop headers out, forwarding headers
//! in) and its body streamed; the upstream's response comes back the same way. A WebSocket (or
//! any `Upgrade`) handshake the upstream accepts becomes a tunnel between the two sockets.
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::body::{BodyError, Forward, RespBody};
use super::conn::{ConnState, InFlight};
use super::headers;
use super::stats::ProxyStats;
use super::upstream::{Lease, Upstream, UpstreamError};
use crate::inline::answer::GUARD_PROBLEM;
use crate::inline::{Gate, Seen, Verdict};

/// Everything a request needs, shared by every connection.
pub struct Forwarder {
    pub gate: Arc<dyn Gate>,
    /// The upstream and this worker's pool of connections to it.
    pub upstream: Arc<Upstream>,
    /// `proxy.max_body` (0 = no limit).
    pub max_body: u64,
    /// `validator.max_body_bytes`: how much of a body the gate sees.
    pub peek: usize,
    pub upstream_timeout: Duration,
    /// The longest wait for the client's next piece of a body (`proxy.idle_timeout`), while
    /// guard reads what the gate sees and while the rest streams upstream.
    pub body_timeout: Duration,
    pub stats: Arc<ProxyStats>,
}

/// Why the upstream gave no response.
enum Failure {
    Timeout,
    Error(UpstreamError),
}

impl Forwarder {
    /// Answers one request; never fails (every failure is an HTTP answer to the client). The
    /// time until the response head is ready goes into the latency histogram.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
        conn: &Arc<ConnState>,
    ) -> Response<RespBody> {
        let started = std::time::Instant::now();
        let response = self.respond(req, peer, tls, conn).await;
        self.stats.latency.observe(started.elapsed());
        response
    }

    async fn respond(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
        conn: &Arc<ConnState>,
    ) -> Response<RespBody> {
        let mark = conn.request_started();
        ProxyStats::bump(&self.stats.requests);
        if req.method() == http::Method::CONNECT {
            return local(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not proxied\n",
                mark,
            );
        }
        let upgrade = headers::wants_upgrade(req.version(), req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let declared = content_length(req.headers());
        if self.max_body > 0 && declared.is_some_and(|n| n > self.max_body) {
            ProxyStats::bump(&self.stats.status_413);
            debug!(%peer, declared, limit = self.max_body, "request body over proxy.max_body: 413");
            return local(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large\n",
                mark,
            );
        }
        let (mut parts, mut body) = req.into_parts();

        let (prefix, trailers, complete) = match self.read_prefix(&mut body, peer).await {
            Ok(read) => read,
            Err((status, text)) => return local(status, text, mark),
        };
        let seen = Seen {
            peer,
            tls,
            head: &parts,
            body: &prefix[..prefix.len().min(self.peek)],
            body_complete: complete && prefix.len() <= self.peek,
        };
        let (id, extra) = match self.gate.check(&seen) {
            Verdict::Pass { id, headers } => (id, headers),
            Verdict::Answer { id, mut response } => {
                // For forward-auth's front ends only: the body already says it here.
                response.headers_mut().remove(GUARD_PROBLEM);
                ProxyStats::bump(&self.stats.answered);
                self.gate.finished(&id, response.status().as_u16());
                return response.map(|b| RespBody::once(b, Some(mark)));
            }
        };

        // The head as the upstream gets it.
        // The client's Host (HTTP/1.1) or :authority (HTTP/2), kept for the upstream.
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::add_forwarding(
            &mut parts.headers,
            peer.ip(),
            tls,
            host.as_ref().and_then(|h| h.to_str().ok()),
        );
        if !parts.headers.contains_key(header::HOST)
            && let Some(h) = host
        {
            parts.headers.insert(header::HOST, h);
        }
        parts.uri = Self::upstream_uri(&parts.uri);
        parts.version = http::Version::HTTP_11;
        parts.extensions.clear();
        let rest = (!complete).then_some(body);
        let (forward, body_done) = Forward::new(
            prefix,
            rest,
            trailers,
            self.max_body,
            declared,
            self.body_timeout,
        );
        let upstream_req = Request::from_parts(parts, forward);

        let (mut answer, lease) = match self.send(upstream_req, body_done).await {
            Ok(r) => r,
            Err(failure) => return self.failed(failure, &id, peer, mark),
        };
        let status = answer.status();
        let mut lease = Some(lease);
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection becomes the tunnel (or, unasked for, is closed): never pooled.
            lease = None;
        }
        if status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client) = client_upgrade
        {
            ProxyStats::bump(&self.stats.upgrades);
            let upstream = hyper::upgrade::on(&mut answer);
            tokio::spawn(tunnel(client, upstream, peer));
            headers::strip_hop_by_hop(answer.headers_mut(), true);
        } else {
            headers::strip_hop_by_hop(answer.headers_mut(), false);
        }
        // The gate's own headers (the quotas' `RateLimit`), after the upstream's.
        for (name, value) in &extra {
            answer.headers_mut().append(name, value.clone());
        }
        self.gate.finished(&id, status.as_u16());
        answer.map(|b| RespBody::upstream(b, Some(mark), lease))
    }

    /// Reads the first `peek` bytes of a body (or all of a shorter one) for the gate: the bytes,
    /// the trailers if the body ended with them, and whether the body ended.
    async fn read_prefix(
        &self,
        body: &mut Incoming,
        peer: SocketAddr,
    ) -> Result<(Bytes, Option<http::HeaderMap>, bool), (StatusCode, &'static str)> {
        let mut buf = BytesMut::new();
        let mut trailers = None;
        let mut complete = body.is_end_stream();
        while !complete && buf.len() < self.peek {
            match tokio::time::timeout(self.body_timeout, body.frame()).await {
                Err(_) => {
                    ProxyStats::bump(&self.stats.status_408);
                    debug!(%peer, "request body stalled past proxy.idle_timeout: 408");
                    return Err((StatusCode::REQUEST_TIMEOUT, "request body too slow\n"));
                }
                Ok(None) => complete = true,
                Ok(Some(Err(e))) => {
                    debug!(%peer, "reading the request body: {e}");
                    return Err((StatusCode::BAD_REQUEST, "unreadable request body\n"));
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        buf.extend_from_slice(&data);
                        if self.max_body > 0 && buf.len() as u64 > self.max_body {
                            ProxyStats::bump(&self.stats.status_413);
                            debug!(%peer, limit = self.max_body, "request body over proxy.max_body: 413");
                            return Err((
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "request body too large\n",
                            ));
                        }
                    }
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        complete = true;
                    }
                },
            }
            complete = complete || body.is_end_stream();
        }
        Ok((buf.freeze(), trailers, complete))
    }

    /// Sends a request upstream. The response timer (`proxy.upstream_timeout`) starts once the
    /// request body has been handed on whole, so a long upload is not cut by it.
    async fn send(
        &self,
        req: Request<Forward>,
        body_done: Option<oneshot::Receiver<()>>,
    ) -> Result<(Response<Incoming>, Lease), Failure> {
        let fut = self.upstream.send(req);
        tokio::pin!(fut);
        if let Some(done) = body_done {
            tokio::select! {
                biased;
                res = &mut fut => return res.map_err(Failure::Error),
                _ = done => {}
            }
        }
        match tokio::time::timeout(self.upstream_timeout, fut).await {
            Err(_) => Err(Failure::Timeout),
            Ok(res) => res.map_err(Failure::Error),
        }
    }

    /// The client's answer when the upstream gave none, with the log line that says why.
    fn failed(
        &self,
        failure: Failure,
        id: &str,
        peer: SocketAddr,
        mark: InFlight,
    ) -> Response<RespBody> {
        let upstream = &self.upstream.authority;
        let (status, text) = match failure {
            Failure::Timeout => {
                ProxyStats::bump(&self.stats.status_504);
                ProxyStats::bump(&self.stats.upstream_errors);
                warn!(%upstream, request = id, timeout = ?self.upstream_timeout,
                    "the upstream did not answer within proxy.upstream_timeout: 504");
                (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n")
            }
            Failure::Error(e @ UpstreamError::Connect { .. }) => {
                ProxyStats::bump(&self.stats.status_502);
                ProxyStats::bump(&self.stats.upstream_errors);
                warn!(%upstream, request = id,
                    "cannot connect to the upstream (refused, unreachable, or past \
                     proxy.upstream_connect_timeout): 502: {}", chain(&e));
                (StatusCode::BAD_GATEWAY, "upstream unreachable\n")
            }
            Failure::Error(e @ UpstreamError::Exchange(_)) => match body_error(&e) {
                Some(BodyError::TooLarge { limit }) => {
                    ProxyStats::bump(&self.stats.status_413);
                    debug!(%peer, request = id, limit, "request body over proxy.max_body while streaming: 413");
                    (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
                }
                Some(BodyError::Stalled(after)) => {
                    ProxyStats::bump(&self.stats.status_408);
                    debug!(%peer, request = id, "request body stalled for {after:?}: 408");
                    (StatusCode::REQUEST_TIMEOUT, "request body too slow\n")
                }
                Some(BodyError::Client(_)) => {
                    debug!(%peer, request = id, "the client's body broke off: {}", chain(&e));
                    (StatusCode::BAD_REQUEST, "request body broke off\n")
                }
                None => {
                    ProxyStats::bump(&self.stats.status_502);
                    ProxyStats::bump(&self.stats.upstream_errors);
                    warn!(%upstream, request = id, "the upstream broke off the exchange: 502: {}", chain(&e));
                    (StatusCode::BAD_GATEWAY, "upstream error\n")
                }
            },
        };
        self.gate.finished(id, status.as_u16());
        local(status, text, mark)
    }

    /// The request target as the upstream gets it: origin form (`/path?query`), or `*`.
    fn upstream_uri(original: &Uri) -> Uri {
        original
            .path_and_query()
            .filter(|pq| pq.as_str().starts_with('/') || pq.as_str() == "*")
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
    }
}

/// A small answer of guard's own.
fn local(status: StatusCode, text: &'static str, mark: InFlight) -> Response<RespBody> {
    let mut r = Response::new(RespBody::once(
        Bytes::from_static(text.as_bytes()),
        Some(mark),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The request's declared length; an unreadable one counts as none (hyper has refused a
/// malformed one on HTTP/1.1 already).
fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Our own body error, if that is what stopped the exchange.
fn body_error(e: &UpstreamError) -> Option<&BodyError> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return Some(b);
        }
        source = s.source();
    }
    None
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Copies bytes both ways between the client and the upstream once both have switched
/// protocols, until either side closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, peer: SocketAddr) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(%peer, "upgrade did not complete: {e}");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => debug!(%peer, up, down, "upgraded connection closed"),
        Err(e) => debug!(%peer, "upgraded connection ended: {e}"),
    }
}
