//! The forward-auth endpoint (`proxy.auth_listen`): one decision service for nginx
//! `auth_request`, Traefik `ForwardAuth` and Envoy's HTTP `ext_authz`. Each asks about one
//! request by its head ([`super::front`]); the endpoint answers 200 (allow, with
//! `X-Request-Id`), or the refusal the [`Gate`] gives (403, 429, with its page). It never reads
//! a body: the front ends send none, and one that came would be ignored.
//!
//! HTTP/1.1 (hyper), keep-alive, a header-read timeout (`proxy.header_timeout`) and a bound on
//! connections; at shutdown the listener closes, open connections finish the request in hand
//! (`proxy.drain_timeout` at most) and close.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::answer::REQUEST_ID;
use super::front::{self, GUARD_STATUS};
use super::{Gate, Seen, Verdict};

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;

/// The endpoint's settings (from `[proxy]`).
#[derive(Debug, Clone, Copy)]
pub struct AuthSettings {
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
    /// The status of an unreadable description (bad `X-Original-URI`, …): `proxy.deny_status`.
    pub deny_status: u16,
}

/// The answer to one forward-auth request from `peer`.
pub fn respond(
    gate: &dyn Gate,
    peer: SocketAddr,
    auth: &http::request::Parts,
    deny_status: u16,
) -> http::Response<Full<Bytes>> {
    let (front, head) = match front::original(auth) {
        Ok(v) => v,
        Err(e) => {
            // A front end that cannot say what it asks about gets a refusal, never an allow.
            warn!(%peer, "forward-auth request refused: {e}");
            let front = front::front_end(&auth.headers);
            let mut r = http::Response::new(Full::new(Bytes::new()));
            *r.status_mut() = http::StatusCode::from_u16(front::status_for(front, deny_status))
                .unwrap_or(http::StatusCode::FORBIDDEN);
            r.headers_mut()
                .insert(GUARD_STATUS, HeaderValue::from(deny_status));
            return r;
        }
    };
    let seen = Seen {
        peer,
        tls: false,
        head: &head,
        body: &[],
        body_complete: false,
    };
    match gate.check(&seen) {
        Verdict::Pass { id } => {
            let mut r = http::Response::new(Full::new(Bytes::new()));
            if let Ok(v) = HeaderValue::from_str(&id) {
                r.headers_mut().insert(REQUEST_ID, v);
            }
            r
        }
        Verdict::Answer { response, .. } => {
            let (mut parts, body) = response.into_parts();
            let status = parts.status.as_u16();
            parts
                .headers
                .insert(GUARD_STATUS, HeaderValue::from(status));
            let passed_on = front::status_for(front, status);
            if passed_on != status {
                parts.status =
                    http::StatusCode::from_u16(passed_on).unwrap_or(http::StatusCode::FORBIDDEN);
            }
            debug!(front = front.name(), status, "forward-auth refusal");
            http::Response::from_parts(parts, Full::new(body))
        }
    }
}

/// Returns once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves forward-auth requests on `listener` until `shutdown` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<dyn Gate>,
    settings: AuthSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, "forward-auth endpoint ready");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p,
            () = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) => {
                    // Out of descriptors or memory: wait, never spin.
                    warn!("forward-auth accept failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let gate = Arc::clone(&gate);
        let mut stop = shutdown.clone();
        // Reap finished connections as new ones come.
        while conns.try_join_next().is_some() {}
        conns.spawn(async move {
            let _permit = permit;
            let deny = settings.deny_status;
            let service = service_fn(move |req: http::Request<Incoming>| {
                let (parts, _body) = req.into_parts();
                let response = respond(&*gate, peer, &parts, deny);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "forward-auth connection ended: {e}");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(settings.drain_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = conns.len(),
            "forward-auth connections still open after proxy.drain_timeout: closed"
        );
        conns.abort_all();
    }
    info!("forward-auth endpoint stopped");
}
