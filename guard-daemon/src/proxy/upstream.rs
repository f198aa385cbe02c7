//! The upstream and a worker's keep-alive pool of HTTP/1.1 connections to it. A request takes
//! an idle connection (one that says it is ready), or opens one within
//! `proxy.upstream_connect_timeout`; the connection goes back to the pool when the response's
//! body has been read to its end ([`Lease`], released by the response body). A request that
//! an idle connection could not even send (the upstream closed it meanwhile) is sent once more
//! on a new connection. This replaces hyper-util's general pool, whose per-request task and
//! bookkeeping cost guard a third of its throughput against nginx in `bench proxy`.
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::body::Forward;

/// Why the upstream gave no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {authority}")]
    Connect {
        authority: Authority,
        #[source]
        source: std::io::Error,
    },
    #[error("exchange with the upstream")]
    Exchange(#[source] hyper::Error),
}

/// Idle connections kept per worker, at most; more are closed when released.
const MAX_IDLE: usize = 1024;

pub struct Upstream {
    pub authority: Authority,
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Forward>>>,
}

/// A connection lent to one exchange.
pub struct Lease {
    sender: SendRequest<Forward>,
    upstream: Arc<Upstream>,
}

impl Lease {
    /// The exchange is over (the response body was read to its end): the connection may
    /// serve another request.
    pub fn release(self) {
        let mut idle = self
            .upstream
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE && !self.sender.is_closed() {
            idle.push(self.sender);
        }
    }
}

impl Upstream {
    pub fn new(authority: Authority, connect_timeout: Duration) -> Self {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(80);
        Self {
            authority,
            host,
            port,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends a request; the response comes with its connection's lease.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Forward>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let (mut sender, pooled) = match self.take_idle().await {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let req = match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, self.lease(sender))),
            Err(mut e) => match e.take_message() {
                // Never written: an idle connection the upstream had closed. Once more, fresh.
                Some(req) if pooled => {
                    debug!(upstream = %self.authority, "idle upstream connection was gone: {}", e.error());
                    req
                }
                _ => return Err(UpstreamError::Exchange(e.into_error())),
            },
        };
        let mut sender = self.connect().await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, self.lease(sender))),
            Err(e) => Err(UpstreamError::Exchange(e)),
        }
    }

    fn lease(self: &Arc<Self>, sender: SendRequest<Forward>) -> Lease {
        Lease {
            sender,
            upstream: Arc::clone(self),
        }
    }

    /// An idle connection that is ready for a request, if any.
    async fn take_idle(&self) -> Option<SendRequest<Forward>> {
        loop {
            let mut s = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if s.is_closed() {
                continue;
            }
            if s.is_ready() || s.ready().await.is_ok() {
                return Some(s);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Forward>, UpstreamError> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(UpstreamError::Connect {
                    authority: self.authority.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(UpstreamError::Connect {
                    authority: self.authority.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "not connected within proxy.upstream_connect_timeout ({:?})",
                            self.connect_timeout
                        ),
                    ),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(upstream = %authority, "upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }
}
