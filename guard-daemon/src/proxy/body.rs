//! The bodies the proxy moves. [`Forward`] is a request body on its way upstream: the prefix
//! the gate saw, then the rest of the client's body as it arrives, never held whole, cut with
//! an error past `proxy.max_body`. [`RespBody`] is what the client gets: the upstream's body as
//! it arrives, or a small answer of guard's own; it holds the connection's in-flight mark until
//! hyper has sent it and drops it.
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::conn::InFlight;
use super::upstream::Lease;

/// Why a request body stopped on its way upstream.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body over proxy.max_body ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("reading the client's request body")]
    Client(#[source] hyper::Error),
    #[error("the client's request body stalled for proxy.idle_timeout ({0:?})")]
    Stalled(Duration),
}

/// A request body sent upstream: `prefix` first, then `rest` frame by frame.
pub struct Forward {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    /// Body bytes counted so far (the prefix included), against `limit` (0 = none).
    counted: u64,
    limit: u64,
    /// The client's declared length (`Content-Length`) and what has been handed on of it.
    declared: Option<u64>,
    emitted: u64,
    /// Dropped (so its receiver wakes) when the body is finished or abandoned: the upstream's
    /// response timer starts then.
    done: Option<oneshot::Sender<()>>,
    /// The longest wait for the client's next piece of body, and its timer (with a rest only).
    stall: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// Whether the timer runs: from the first poll that finds nothing until a piece arrives
    /// (time the upstream takes to ask for more is not the client's).
    waiting: bool,
}

impl Forward {
    /// `prefix` was read already (counted against `limit`); `rest` is what is left of the
    /// client's body (`None` when the prefix was all of it). Returns the receiver that wakes
    /// when the body is no longer being sent, when there is a rest to wait for.
    pub fn new(
        prefix: Bytes,
        rest: Option<Incoming>,
        trailers: Option<HeaderMap>,
        limit: u64,
        declared: Option<u64>,
        stall_after: Duration,
    ) -> (Self, Option<oneshot::Receiver<()>>) {
        let (done, rx) = if rest.is_some() {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let counted = prefix.len() as u64;
        let stall = rest
            .is_some()
            .then(|| (stall_after, Box::pin(tokio::time::sleep(stall_after))));
        let body = Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
            trailers,
            counted,
            limit,
            declared,
            emitted: 0,
            done,
            stall,
            waiting: false,
        };
        (body, rx)
    }
}

impl Body for Forward {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(p) = this.prefix.take() {
            this.emitted += p.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if let Some(rest) = this.rest.as_mut() {
            let polled = Pin::new(rest).poll_frame(cx);
            if polled.is_pending() {
                if let Some((after, timer)) = this.stall.as_mut() {
                    if !this.waiting {
                        this.waiting = true;
                        timer.as_mut().reset(tokio::time::Instant::now() + *after);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let after = *after;
                    this.rest = None;
                    this.done = None;
                    this.stall = None;
                    return Poll::Ready(Some(Err(BodyError::Stalled(after))));
                }
                return Poll::Pending;
            }
            this.waiting = false;
            match ready!(polled) {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        this.counted += d.len() as u64;
                        this.emitted += d.len() as u64;
                        if this.limit > 0 && this.counted > this.limit {
                            this.rest = None;
                            this.done = None;
                            return Poll::Ready(Some(Err(BodyError::TooLarge {
                                limit: this.limit,
                            })));
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => {
                    this.rest = None;
                    this.done = None;
                    return Poll::Ready(Some(Err(BodyError::Client(e))));
                }
                None => {
                    this.rest = None;
                    this.stall = None;
                }
            }
        }
        if let Some(t) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        this.done = None;
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(total) = self.declared {
            return SizeHint::with_exact(total.saturating_sub(self.emitted));
        }
        if self.rest.is_none() {
            return SizeHint::with_exact(self.prefix.as_ref().map_or(0, |p| p.len() as u64));
        }
        let mut hint = SizeHint::new();
        hint.set_lower(self.prefix.as_ref().map_or(0, |p| p.len() as u64));
        hint
    }
}

/// A response body for the client.
pub struct RespBody {
    inner: Inner,
    /// Released when hyper drops the body, i.e. the response is sent (or abandoned).
    _in_flight: Option<InFlight>,
    /// The upstream connection the body comes from: back to the pool if the body was read to
    /// its end, closed otherwise.
    lease: Option<Lease>,
}

impl Drop for RespBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take()
            && let Inner::Upstream(b) = &self.inner
            && b.is_end_stream()
        {
            lease.release();
        }
    }
}

enum Inner {
    Upstream(Incoming),
    Once(Option<Bytes>),
}

impl RespBody {
    pub fn upstream(body: Incoming, in_flight: Option<InFlight>, lease: Option<Lease>) -> Self {
        Self {
            inner: Inner::Upstream(body),
            _in_flight: in_flight,
            lease,
        }
    }

    pub fn once(bytes: Bytes, in_flight: Option<InFlight>) -> Self {
        Self {
            inner: Inner::Once((!bytes.is_empty()).then_some(bytes)),
            _in_flight: in_flight,
            lease: None,
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Once(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Once(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Once(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
