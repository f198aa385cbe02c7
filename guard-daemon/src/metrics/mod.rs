//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` answers the `OpenMetrics` text
//! format, encoded by `prometheus-client` from a [`Snapshot`] of the counters guard already
//! keeps, read at scrape time (the daemon's `daemon/metrics.rs` gathers it; nothing here knows
//! where a number comes from). Counters are never kept twice: a scrape reads them.
//!
//! Names follow Prometheus' conventions: the `guard_` prefix, `_total` on counters (added by
//! the encoder), base units (seconds, bytes), and no label that names an address or a user,
//! so a family's size is bounded by the code and the config, never by traffic.
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

#[cfg(test)]
mod tests;

/// The content type of the `OpenMetrics` text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes served at once, at most; a scraper beyond waits for a slot.
const MAX_CONNECTIONS: usize = 16;
/// How long a scraper may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long open scrapes may go on after the shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a family counts up (its samples get `_total`) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family: a name (without the `guard_` prefix and the `_total` suffix), its help
/// text, and its samples, each with its labels.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: Cow<'static, str>,
    pub help: Cow<'static, str>,
    pub kind: Kind,
    /// `Some(Unit::Bytes)` or `Some(Unit::Seconds)` appends the unit to the name.
    pub unit: Option<Unit>,
    pub samples: Vec<(Labels, u64)>,
}

/// A sample's labels: (name, value) pairs, in order.
pub type Labels = Vec<(&'static str, Cow<'static, str>)>;

impl Family {
    /// A counter family with no samples yet.
    #[must_use]
    pub fn counter(name: impl Into<Cow<'static, str>>, help: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind: Kind::Counter,
            unit: None,
            samples: Vec::new(),
        }
    }

    /// A gauge family with no samples yet.
    #[must_use]
    pub fn gauge(name: impl Into<Cow<'static, str>>, help: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: Kind::Gauge,
            ..Self::counter(name, help)
        }
    }

    /// The same family in `unit`.
    #[must_use]
    pub fn in_unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    /// Adds a sample without labels.
    #[must_use]
    pub fn value(mut self, v: u64) -> Self {
        self.samples.push((Vec::new(), v));
        self
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: Labels, v: u64) {
        self.samples.push((labels, v));
    }
}

/// A label pair whose value is a fixed word.
#[must_use]
pub fn label(name: &'static str, value: &'static str) -> (&'static str, Cow<'static, str>) {
    (name, Cow::Borrowed(value))
}

/// A histogram's state at one moment: the observations in each bucket by its upper bound
/// (seconds; not cumulative: the encoder adds them up), their sum (seconds) and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// A named histogram in a snapshot.
#[derive(Debug, Clone)]
pub struct HistogramFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub value: HistogramSnapshot,
}

/// What one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub families: Vec<Family>,
    pub histograms: Vec<HistogramFamily>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let kind = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(&f.name, &f.help, f.unit.as_ref(), kind)?;
            for (labels, v) in &f.samples {
                let sample = metric.encode_family(labels)?;
                match f.kind {
                    Kind::Counter => ConstCounter::new(*v).encode(sample)?,
                    // Gauges are signed in the format; a count past i64 is impossible here.
                    Kind::Gauge => {
                        ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(sample)?;
                    }
                }
            }
        }
        for h in &self.histograms {
            let mut metric = encoder.encode_descriptor(
                h.name,
                h.help,
                h.unit.as_ref(),
                MetricType::Histogram,
            )?;
            metric.encode_histogram::<NoLabelSet>(
                h.value.sum,
                h.value.count,
                &h.value.buckets,
                None,
            )?;
        }
        Ok(())
    }
}

/// The `OpenMetrics` text of `snapshot`, ending with `# EOF`.
#[must_use]
pub fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("guard");
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; a family the encoder refused would end the text early,
    // which the scraper sees as a missing `# EOF`.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        warn!("encoding the metrics: {e}");
    }
    out
}

/// Upper bounds (seconds) of [`LatencyHistogram`]'s buckets, before `+Inf`.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram kept in relaxed atomics: an observation is two or three additions, no
/// lock, so the request path never waits on a scrape.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative), the last one for `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The buckets now (`+Inf` last), the sum in seconds and the count.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BOUNDS.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            let bound = LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        HistogramSnapshot {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
        }
    }
}

/// Reads a [`Snapshot`]; called on a blocking thread for each scrape.
pub type Gather = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown` completes, then lets open scrapes
/// finish (for a moment). Each scrape calls `gather` on a blocking thread.
pub async fn serve(listener: TcpListener, gather: Gather, shutdown: impl Future<Output = ()>) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, "metrics endpoint ready");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p,
            () = &mut shutdown => break,
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
                    warn!("metrics accept failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let gather = Arc::clone(&gather);
        let mut stop = stop_rx.clone();
        while conns.try_join_next().is_some() {}
        conns.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: http::Request<Incoming>| {
                let gather = Arc::clone(&gather);
                async move { Ok::<_, Infallible>(answer(&req, gather).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "metrics connection ended: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
    info!("metrics endpoint stopped");
}

/// The answer to one request: the metrics for `GET /metrics` (and `HEAD`), 404 elsewhere,
/// 405 for other methods.
async fn answer<B>(req: &http::Request<B>, gather: Gather) -> http::Response<Full<Bytes>> {
    let plain = |status: http::StatusCode, text: &'static str| {
        let mut r = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(
            http::StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut r = plain(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here\n",
        );
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    let text = tokio::task::spawn_blocking(move || encode(gather())).await;
    match text {
        Ok(text) => {
            let mut r = http::Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            warn!("gathering the metrics failed: {e}");
            plain(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be gathered (see guard's log)\n",
            )
        }
    }
}
