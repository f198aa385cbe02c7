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
        Verdict::Pass { id, headers } => {
            let mut r = http::Response::new(Full::new(Bytes::new()));
            // The quotas' `RateLimit` and `RateLimit-Policy`: nginx hands them on with
            // `auth_request_set` (see `dist/nginx-guard-auth.conf`).
            *r.headers_mut() = headers;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::inline::answer::{Extra, answer};

    /// Answers every request with `status` (200 = pass) and keeps what it was asked.
    struct Fixed {
        status: u16,
        seen: Mutex<Vec<(SocketAddr, String, String)>>,
    }

    impl Gate for Fixed {
        fn check(&self, seen: &Seen<'_>) -> Verdict {
            self.seen.lock().unwrap().push((
                seen.peer,
                seen.head.method.to_string(),
                seen.head.uri.to_string(),
            ));
            let id = "abc-1".to_owned();
            if self.status == 200 {
                Verdict::Pass {
                    id,
                    headers: http::HeaderMap::new(),
                }
            } else {
                let response = answer(self.status, &id, None, &Extra::default());
                Verdict::Answer { id, response }
            }
        }
    }

    fn fixed(status: u16) -> Fixed {
        Fixed {
            status,
            seen: Mutex::new(Vec::new()),
        }
    }

    fn auth(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri("/.guard-auth");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const PEER: &str = "127.0.0.1:50000";

    #[test]
    fn an_allowed_request_is_200_with_its_request_id() {
        let gate = fixed(200);
        let r = respond(
            &gate,
            PEER.parse().unwrap(),
            &auth(&[("x-original-uri", "/a?b=c"), ("x-original-method", "POST")]),
            403,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[REQUEST_ID], "abc-1");
        let seen = gate.seen.lock().unwrap();
        assert_eq!(seen[0].1, "POST");
        assert_eq!(seen[0].2, "/a?b=c");
    }

    #[test]
    fn nginx_gets_403_and_the_real_status_others_the_status_itself() {
        let gate = fixed(429);
        let peer = PEER.parse().unwrap();
        let r = respond(&gate, peer, &auth(&[("x-original-uri", "/")]), 403);
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()[GUARD_STATUS], "429");
        assert_eq!(r.headers()[REQUEST_ID], "abc-1");
        let r = respond(&gate, peer, &auth(&[("x-forwarded-uri", "/")]), 403);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[GUARD_STATUS], "429");
        let r = respond(&gate, peer, &auth(&[]), 403);
        assert_eq!(r.status(), 429);
    }

    #[test]
    fn an_unreadable_description_is_refused_without_asking_the_gate() {
        let gate = fixed(200);
        let r = respond(
            &gate,
            PEER.parse().unwrap(),
            &auth(&[("x-original-uri", "/"), ("x-original-method", "G(E)T")]),
            451,
        );
        assert_eq!(r.status(), 403, "nginx passes only 401 and 403");
        assert_eq!(r.headers()[GUARD_STATUS], "451");
        assert!(gate.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn the_server_answers_over_tcp_and_drains_at_shutdown() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = watch::channel(false);
            let settings = AuthSettings {
                header_timeout: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(5),
                deny_status: 403,
            };
            let server = tokio::spawn(serve(listener, Arc::new(fixed(403)), settings, rx));
            let ask = async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(
                    b"GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Uri: /x?id=1\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                String::from_utf8_lossy(&out).into_owned()
            };
            let answer = tokio::time::timeout(Duration::from_secs(5), ask)
                .await
                .unwrap();
            assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("x-request-id: abc-1"), "{answer}");
            tx.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("the server did not stop")
                .unwrap();
            assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        });
    }

    #[test]
    fn a_slow_head_is_cut_by_the_header_timeout() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (_tx, rx) = watch::channel(false);
            let settings = AuthSettings {
                header_timeout: Duration::from_millis(200),
                drain_timeout: Duration::from_secs(1),
                deny_status: 403,
            };
            let gate = Arc::new(fixed(200));
            tokio::spawn(serve(listener, Arc::clone(&gate) as _, settings, rx));
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
            let start = std::time::Instant::now();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                .await
                .expect("the slow head was never cut")
                .unwrap_or_default();
            assert!(start.elapsed() >= Duration::from_millis(150));
            assert!(gate.seen.lock().unwrap().is_empty());
        });
    }
}
