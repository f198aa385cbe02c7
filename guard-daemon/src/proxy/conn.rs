//! One client connection: hyper's HTTP/1.1-or-HTTP/2 server over a socket whose reads are
//! watched, and the timers hyper does not keep the way guard needs them. A request head that
//! takes longer than `proxy.header_timeout` to arrive gets a 408 (plain HTTP/1.1; over TLS the
//! connection is closed), a connection idle for `proxy.idle_timeout` is closed, and at shutdown
//! every connection is asked to finish what it has in flight and close.
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::handler::Forwarder;
use super::stats::ProxyStats;

/// What a connection task shares with the socket wrapper and its requests.
pub struct ConnState {
    epoch: Instant,
    /// Requests whose response has not been sent yet.
    in_flight: AtomicU32,
    /// When (ms since `epoch`, plus one) the first byte of a request head arrived while no
    /// request was in flight; 0 when no head is pending.
    head_since: AtomicU64,
    /// The last read, or the last response sent (ms since `epoch`, plus one).
    last_activity: AtomicU64,
    /// HTTP/2 (by ALPN or the connection preface): no per-request head timer.
    h2: AtomicBool,
    first_read: AtomicBool,
}

/// A request's mark on its connection, released when its response has been sent.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        self.0.last_activity.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a timer check found.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Nothing,
    HeaderTimeout,
    Idle,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl ConnState {
    fn new(h2: bool) -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_since: AtomicU64::new(0),
            last_activity: AtomicU64::new(1),
            h2: AtomicBool::new(h2),
            first_read: AtomicBool::new(true),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn on_read(&self, bytes: &[u8]) {
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.first_read.swap(false, Ordering::Relaxed)
            && bytes.len() >= 4
            && H2_PREFACE.starts_with(&bytes[..bytes.len().min(H2_PREFACE.len())])
        {
            self.h2.store(true, Ordering::Relaxed);
        }
        if !self.h2.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now, Ordering::Relaxed);
        }
    }

    /// A request head was read whole: its timer stops, and the connection is busy until the
    /// returned mark is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn due(&self, header_timeout: u64, idle_timeout: u64) -> Due {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Due::Nothing;
        }
        let now = self.now_ms();
        let head = self.head_since.load(Ordering::Relaxed);
        if head > 0 {
            if now >= head + header_timeout {
                return Due::HeaderTimeout;
            }
            return Due::Nothing;
        }
        if now >= self.last_activity.load(Ordering::Relaxed) + idle_timeout {
            return Due::Idle;
        }
        Due::Nothing
    }
}

/// A socket whose reads are reported to its [`ConnState`].
struct Watched<IO> {
    io: IO,
    state: Arc<ConnState>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let filled = buf.filled();
        if filled.len() > before {
            self.state.on_read(&filled[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Settings every connection shares.
pub struct Shared {
    pub forwarder: Forwarder,
    pub builder: auto::Builder<TokioExecutor>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub stats: Arc<ProxyStats>,
}

/// How a connection task learns that guard is stopping, and how guard learns that it is done.
#[derive(Clone)]
pub struct Lifecycle {
    pub stop: watch::Receiver<bool>,
    /// Held while the task runs: the drain waits until every clone is gone.
    pub _drain: mpsc::Sender<()>,
}

/// Resolves once `stop` says true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n\
content-length: 34\r\nconnection: close\r\n\r\nrequest head not received in time\n";

/// Serves one connection until it ends, times out, or guard has stopped and it has drained.
/// `raw` is the plain socket's descriptor (for the 408 hyper cannot send mid-head); `None`
/// over TLS.
pub async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    tls: bool,
    h2: bool,
    raw: Option<RawFd>,
    shared: Arc<Shared>,
    mut life: Lifecycle,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new(h2));
    let service = {
        let (shared, state) = (Arc::clone(&shared), Arc::clone(&state));
        service_fn(move |req| {
            let (shared, state) = (Arc::clone(&shared), Arc::clone(&state));
            async move {
                Ok::<_, std::convert::Infallible>(
                    shared.forwarder.handle(req, peer, tls, &state).await,
                )
            }
        })
    };
    let io = TokioIo::new(Watched {
        io,
        state: Arc::clone(&state),
    });
    let conn = shared.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let header_ms = shared.header_timeout.as_millis() as u64;
    let idle_ms = shared.idle_timeout.as_millis() as u64;
    // How often the timers are looked at: a quarter of the shorter one, within 50 ms..1 s.
    let tick = (shared.header_timeout.min(shared.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    debug!(%peer, "client connection ended: {e}");
                }
                return;
            }
            () = tokio::time::sleep(tick) => match state.due(header_ms, idle_ms) {
                Due::HeaderTimeout => {
                    ProxyStats::bump(&shared.stats.status_408);
                    debug!(%peer, "request head not received within proxy.header_timeout: 408");
                    if let Some(fd) = raw {
                        send_408(fd);
                    }
                    return;
                }
                Due::Idle if !closing => {
                    ProxyStats::bump(&shared.stats.idle_closed);
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Due::Idle | Due::Nothing => {}
            },
            () = stopped(&mut life.stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Writes a 408 straight onto the socket (hyper is waiting for the rest of a head, so nothing
/// else writes now), without blocking; whatever does not fit is dropped with the connection.
fn send_408(fd: RawFd) {
    use nix::sys::socket::{MsgFlags, send};
    let _ = send(
        fd,
        RESPONSE_408,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_head_times_out_and_an_idle_connection_is_idle() {
        let s = Arc::new(ConnState::new(false));
        assert_eq!(s.due(10_000, 10_000), Due::Nothing);
        assert_eq!(s.due(10_000, 0), Due::Idle);
        s.on_read(b"GET / HT");
        assert_eq!(s.due(0, 0), Due::HeaderTimeout);
        assert_eq!(s.due(10_000, 0), Due::Nothing);
        let mark = s.request_started();
        assert_eq!(
            s.due(0, 0),
            Due::Nothing,
            "a request in flight is never timed out"
        );
        s.on_read(b"body bytes");
        drop(mark);
        assert_eq!(s.due(0, 0), Due::Idle, "body bytes are not a pending head");
    }

    #[test]
    fn http2_has_no_head_timer() {
        let s = ConnState::new(false);
        s.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(s.h2.load(Ordering::Relaxed));
        assert_eq!(s.due(0, 10_000), Due::Nothing);
        let s = ConnState::new(false);
        s.on_read(b"POST / HTTP/1.1\r\n");
        assert!(!s.h2.load(Ordering::Relaxed));
    }

    #[test]
    fn the_408_says_its_length() {
        let text = std::str::from_utf8(RESPONSE_408).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
