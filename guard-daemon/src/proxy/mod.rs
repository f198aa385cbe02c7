//! The reverse proxy of the inline mode (`[proxy]`): plain and TLS listeners (HTTP/1.1 and
//! HTTP/2), one upstream behind a keep-alive pool, bodies streamed, WebSocket tunnelled, and a
//! [`Gate`] asked about every request before the upstream sees any of it. It runs on threads
//! of its own, so that the daemon's runtime (control socket, ban orders) never waits on
//! traffic, nor traffic on it: one single-threaded runtime per core, each with its own upstream
//! pool, so that a request is served start to end on one thread (as nginx's workers do). The
//! first worker accepts and hands the connections out in turn.
//!
//! - `conn`: one client connection, its head and idle timers, graceful close;
//! - `handler`: one request: gate, head rewrite, upstream exchange, upgrades;
//! - `body`: the streamed request and response bodies;
//! - `headers`: hop-by-hop removal and the forwarding headers;
//! - `tls`: the certificate, reloaded on SIGHUP;
//! - `stats`: the counters of `guard stats`.
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use http::uri::Authority;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::inline::Gate;

mod body;
mod conn;
mod handler;
mod headers;
mod stats;
#[cfg(test)]
mod tests;
mod tls;
mod upstream;

pub use stats::{ProxyCounters, ProxyStats};
pub use tls::TlsError;

use conn::{Lifecycle, Shared};
use handler::Forwarder;
use tls::Tls;

/// Why the proxy did not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy.upstream {url:?} is not an http://host[:port] URL")]
    Upstream { url: String },
    #[error("binding the proxy listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the proxy's TLS certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("starting the proxy's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The running proxy.
pub struct Running {
    threads: Vec<JoinHandle<bool>>,
    stats: Arc<ProxyStats>,
    listen: Vec<SocketAddr>,
    tls_listen: Vec<SocketAddr>,
}

impl Running {
    /// The counters `guard stats` shows.
    #[must_use]
    pub fn stats(&self) -> Arc<ProxyStats> {
        Arc::clone(&self.stats)
    }

    /// The bound plain and TLS addresses (a configured port 0 is resolved).
    #[must_use]
    pub fn addrs(&self) -> (&[SocketAddr], &[SocketAddr]) {
        (&self.listen, &self.tls_listen)
    }

    /// Waits until the proxy has stopped (after its shutdown signal and the drain).
    pub fn wait(self) {
        let mut drained = true;
        for t in self.threads {
            if let Ok(d) = t.join() {
                drained &= d;
            } else {
                error!("a proxy thread panicked");
            }
        }
        if drained {
            info!("proxy drained");
        } else {
            warn!("proxy.drain_timeout reached: connections still open were cut");
        }
    }
}

/// Binds the listeners and starts serving on threads of its own. `shutdown` turning true
/// stops the listeners; requests in flight then get `proxy.drain_timeout` to finish.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the proxy owns its gate and its shutdown signal; each worker gets a clone"
)]
pub fn start(
    config: &Config,
    gate: Arc<dyn Gate>,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, ProxyError> {
    let p = &config.proxy;
    let url = p.upstream.clone().unwrap_or_default();
    let upstream: Authority = url
        .strip_prefix("http://")
        .map(|a| a.strip_suffix('/').unwrap_or(a))
        .and_then(|a| a.parse().ok())
        .ok_or(ProxyError::Upstream { url: url.clone() })?;
    let tls = match (&p.tls_cert, &p.tls_key) {
        (Some(c), Some(k)) if !p.tls_listen.is_empty() => Some(Arc::new(Tls::load(c, k)?)),
        _ => None,
    };
    let bind = |addr: &SocketAddr| {
        let l = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ProxyError::Bind {
                addr: *addr,
                source,
            })?;
        let local = l.local_addr().unwrap_or(*addr);
        Ok::<_, ProxyError>((l, local))
    };
    let plain = p.listen.iter().map(bind).collect::<Result<Vec<_>, _>>()?;
    let secure = p
        .tls_listen
        .iter()
        .map(bind)
        .collect::<Result<Vec<_>, _>>()?;
    let listen: Vec<SocketAddr> = plain.iter().map(|(_, a)| *a).collect();
    let tls_listen: Vec<SocketAddr> = secure.iter().map(|(_, a)| *a).collect();
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let stats = Arc::new(ProxyStats::default());
    let mut threads = Vec::with_capacity(workers);
    let (inboxes, mut outboxes): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let inboxes: Arc<[Handoff]> = inboxes.into();
    let mut listeners = Some((plain, secure, inboxes));
    for n in 0..workers {
        let inbox = outboxes.remove(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ProxyError::Runtime)?;
        let worker = Worker {
            shared: Arc::new(shared(config, &upstream, Arc::clone(&gate), &stats)),
            // The first worker accepts (and reloads the certificate on SIGHUP).
            listeners: listeners.take(),
            tls: tls.clone(),
            inbox,
            shutdown: shutdown.clone(),
            drain: p.drain_timeout,
        };
        let thread = std::thread::Builder::new()
            .name(format!("guard-proxy-{n}"))
            .spawn(move || {
                let drained = runtime.block_on(worker.run());
                runtime.shutdown_timeout(Duration::from_secs(1));
                drained
            })
            .map_err(ProxyError::Runtime)?;
        threads.push(thread);
    }
    info!(
        listen = ?listen,
        tls_listen = ?tls_listen,
        %upstream,
        mode = ?p.mode,
        workers,
        "reverse proxy listening"
    );
    Ok(Running {
        threads,
        stats,
        listen,
        tls_listen,
    })
}

/// One worker's settings and upstream pool.
fn shared(
    config: &Config,
    upstream: &Authority,
    gate: Arc<dyn Gate>,
    stats: &Arc<ProxyStats>,
) -> Shared {
    let p = &config.proxy;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // guard keeps its own head timer (`conn`): hyper's would also cut idle keep-alive
        // connections, and closes without the 408.
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    Shared {
        forwarder: Forwarder {
            gate,
            upstream: Arc::new(upstream::Upstream::new(
                upstream.clone(),
                p.upstream_connect_timeout,
            )),
            max_body: p.max_body,
            peek: config.validator.max_body_bytes,
            upstream_timeout: p.upstream_timeout,
            body_timeout: p.idle_timeout,
            stats: Arc::clone(stats),
        },
        builder,
        header_timeout: p.header_timeout,
        idle_timeout: p.idle_timeout,
        stats: Arc::clone(stats),
    }
}

type Bound = Vec<(std::net::TcpListener, SocketAddr)>;

/// An accepted connection on its way to a worker; `tls` when it came to a TLS listener.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<Tls>>,
}

type Handoff = mpsc::UnboundedSender<Accepted>;

/// One proxy thread.
struct Worker {
    shared: Arc<Shared>,
    /// The listening sockets and every worker's inbox, on the first worker only.
    listeners: Option<(Bound, Bound, Arc<[Handoff]>)>,
    tls: Option<Arc<Tls>>,
    inbox: mpsc::UnboundedReceiver<Accepted>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
}

impl Worker {
    /// Serves the connections handed to this worker until `shutdown`, then waits for them to
    /// drain (at most `drain`); says whether they all did.
    async fn run(mut self) -> bool {
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let life = Lifecycle {
            stop: self.shutdown.clone(),
            _drain: drain_tx,
        };
        let first = self.listeners.is_some();
        if let Some((plain, secure, inboxes)) = self.listeners.take() {
            let turn = Arc::new(AtomicUsize::new(0));
            let listeners = plain
                .into_iter()
                .map(|l| (l, None))
                .chain(secure.into_iter().map(|l| (l, self.tls.clone())));
            for ((std_listener, addr), tls) in listeners {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => {
                        tokio::spawn(accept_loop(
                            l,
                            tls,
                            Arc::clone(&self.shared.stats),
                            Arc::clone(&inboxes),
                            Arc::clone(&turn),
                            self.shutdown.clone(),
                        ));
                    }
                    Err(e) => error!(%addr, "the proxy listener cannot be used: {e}"),
                }
            }
            if let Some(tls) = self.tls.clone() {
                tokio::spawn(reload_on_sighup(
                    tls,
                    Arc::clone(&self.shared.stats),
                    self.shutdown.clone(),
                ));
            }
        }
        loop {
            let accepted = tokio::select! {
                a = self.inbox.recv() => a,
                () = conn::stopped(&mut self.shutdown) => None,
            };
            let Some(a) = accepted else { break };
            connection(a, &self.shared, &life);
        }
        drop(life);
        if first {
            info!(drain = ?self.drain, "proxy stopping: no new connections; requests in flight may finish");
        }
        tokio::time::timeout(self.drain, drain_rx.recv())
            .await
            .is_ok()
    }
}

/// Accepts on one listener and hands each connection to the next worker in turn.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    stats: Arc<ProxyStats>,
    inboxes: Arc<[Handoff]>,
    turn: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = conn::stopped(&mut stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: wait a moment instead of spinning.
                warn!("proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ProxyStats::bump(&stats.connections);
        let _ = stream.set_nodelay(true);
        // Out of this runtime's reactor, into the next worker's.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let n = turn.fetch_add(1, Ordering::Relaxed) % inboxes.len();
        let _ = inboxes[n].send(Accepted {
            stream,
            peer,
            tls: tls.clone(),
        });
    }
}

/// Starts serving a connection handed to this worker (the TLS handshake first, if any).
fn connection(a: Accepted, shared: &Arc<Shared>, life: &Lifecycle) {
    let Accepted { stream, peer, tls } = a;
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, "the accepted connection cannot be used: {e}");
            return;
        }
    };
    let (shared, life) = (Arc::clone(shared), life.clone());
    match tls {
        None => {
            let raw = stream.as_raw_fd();
            tokio::spawn(conn::serve(
                stream,
                peer,
                false,
                false,
                Some(raw),
                shared,
                life,
            ));
        }
        Some(tls) => {
            let acceptor = tls.acceptor();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(shared.header_timeout, acceptor.accept(stream)).await;
                match handshake {
                    Ok(Ok(s)) => {
                        let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                        conn::serve(s, peer, true, h2, None, shared, life).await;
                    }
                    Ok(Err(e)) => {
                        ProxyStats::bump(&shared.stats.tls_handshake_failures);
                        debug!(%peer, "TLS handshake failed: {e}");
                    }
                    Err(_) => {
                        ProxyStats::bump(&shared.stats.tls_handshake_failures);
                        debug!(%peer, "TLS handshake not done within proxy.header_timeout");
                    }
                }
            });
        }
    }
}

async fn reload_on_sighup(tls: Arc<Tls>, stats: Arc<ProxyStats>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!("no SIGHUP handler, so the TLS certificate is not reloaded: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            r = hup.recv() => if r.is_none() { return },
            () = conn::stopped(&mut stop) => return,
        }
        match tls.reload() {
            Ok(()) => {
                ProxyStats::bump(&stats.tls_reloads);
                info!("SIGHUP: TLS certificate and key reloaded");
            }
            Err(e) => {
                ProxyStats::bump(&stats.tls_reload_failures);
                error!("SIGHUP: {e}; the previous certificate stays in use");
            }
        }
    }
}
