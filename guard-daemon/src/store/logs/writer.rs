//! The request log's writer: a bounded queue the request path never waits on, and one thread
//! that writes batches, keeps the log under its cap and prunes records past their retention.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Limits, LogError, LogRecord, LogStore, Retention};

/// How often the writer prunes records past their retention.
const RETENTION_EVERY: Duration = Duration::from_mins(10);

/// The writer's pause between batches while records keep coming (see `write_loop`).
const BUSY_TICK: Duration = Duration::from_millis(20);

/// Counters of a [`LogWriter`].
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Records written to sled.
    pub written: AtomicU64,
    /// Records dropped because the queue was full (or the writer had stopped).
    pub dropped: AtomicU64,
    /// Batches sled refused (their records are lost).
    pub failed_batches: AtomicU64,
    /// Records with a field cut at its bound.
    pub truncated: AtomicU64,
}

/// Bounded, batching writer: the request path calls [`LogWriter::try_log`], one thread writes,
/// keeps the database under its cap and prunes records past their retention.
#[derive(Debug)]
pub struct LogWriter {
    /// Boxed records: a bounded channel initialises every slot up front, so a queue of 65,536
    /// unboxed records would hold 16 MB resident from the start.
    tx: Option<SyncSender<Box<LogRecord>>>,
    pub(super) counters: Arc<WriterCounters>,
    limits: Limits,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer thread with a queue of `capacity` records and batches of at most
    /// `max_batch`, within `limits`.
    pub fn spawn(
        store: LogStore,
        capacity: usize,
        max_batch: usize,
        limits: Limits,
    ) -> Result<Self, LogError> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let counters = Arc::new(WriterCounters::default());
        let c = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("guard-log-writer".into())
            .spawn(move || write_loop(&store, &rx, max_batch.max(1), &limits, &c))
            .map_err(|source| LogError::Spawn { source })?;
        Ok(Self {
            tx: Some(tx),
            counters,
            limits,
            thread: Some(thread),
        })
    }

    /// Cuts the record's long fields (see [`Limits`]) and queues it without blocking; false (and
    /// counted) when the queue is full.
    #[must_use = "a false return means the record was dropped"]
    pub fn try_log(&self, mut record: LogRecord) -> bool {
        if record.cut(&self.limits) {
            self.counters.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| match tx.try_send(Box::new(record)) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            });
        if !sent {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// The writer's counters.
    #[must_use]
    pub fn counters(&self) -> &WriterCounters {
        &self.counters
    }

    /// Writes what is queued and stops the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            // A panicked writer already lost its batch; nothing more to do here.
            let _ = t.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// At most one warning about lost batches per this interval (a full disk fails every batch).
const FAILURE_WARN_EVERY: std::time::Duration = std::time::Duration::from_mins(1);

/// Rate-limited warnings of one kind of failure.
#[derive(Default)]
struct Warner {
    last: Option<std::time::Instant>,
    lost_since: u64,
}

impl Warner {
    fn failed(&mut self, what: &str, e: &LogError, lost: u64) {
        self.lost_since += lost;
        if self.last.is_none_or(|t| t.elapsed() >= FAILURE_WARN_EVERY) {
            tracing::warn!(
                error = %e,
                records = self.lost_since,
                "{what} (further failures are summed into one warning a minute)"
            );
            self.last = Some(std::time::Instant::now());
            self.lost_since = 0;
        }
    }
}

fn write_loop(
    store: &LogStore,
    rx: &Receiver<Box<LogRecord>>,
    max_batch: usize,
    limits: &Limits,
    c: &WriterCounters,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let (mut write_warn, mut prune_warn) = (Warner::default(), Warner::default());
    let mut next_retention = std::time::Instant::now();
    let mut retention = Retention::new(store);
    // `busy`: the last batch had records; `full`: it was as large as a batch may be.
    let (mut busy, mut full) = (false, false);
    loop {
        if next_retention <= std::time::Instant::now() {
            next_retention = std::time::Instant::now() + RETENTION_EVERY;
            prune_expired(store, limits, &mut retention, &mut prune_warn);
        }
        // While records keep coming, the writer sleeps a tick between batches instead of
        // waiting on the queue: a sender then never has to wake it (a futex call and a context
        // switch per record at high rates). Once a tick finds the queue empty it waits again.
        let first = if busy {
            if !full {
                std::thread::sleep(BUSY_TICK);
            }
            match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => {
                    busy = false;
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        busy = true;
        // A batch also stops at a share of the cap, so that one batch cannot overshoot it.
        let max_batch_bytes = match limits.live_cap() {
            0 => u64::MAX,
            cap => cap / 8,
        };
        let mut batch_bytes = first.approx_bytes();
        batch.push(*first);
        while batch.len() < max_batch && batch_bytes < max_batch_bytes {
            match rx.try_recv() {
                Ok(r) => {
                    batch_bytes += r.approx_bytes();
                    batch.push(*r);
                }
                Err(_) => break,
            }
        }
        full = batch.len() >= max_batch || batch_bytes >= max_batch_bytes;
        match store.insert_batch(&batch) {
            Ok(()) => {
                c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                c.failed_batches.fetch_add(1, Ordering::Relaxed);
                write_warn.failed("request log records lost", &e, batch.len() as u64);
            }
        }
        batch.clear();
        match store.enforce_cap(limits) {
            Ok(p) if p.records > 0 => tracing::debug!(
                records = p.records,
                bytes = p.bytes,
                "request log over logs.max_bytes: oldest records pruned"
            ),
            Ok(_) => {}
            Err(e) => prune_warn.failed("request log not pruned to its cap", &e, 0),
        }
    }
}

fn prune_expired(store: &LogStore, limits: &Limits, retention: &mut Retention, warn: &mut Warner) {
    let now = guard_core::time::ClockReading::new(crate::clock::now_ms(), crate::clock::mono_ns());
    match retention.prune(store, limits.retention, now) {
        Ok(Some(n)) if n > 0 => {
            tracing::info!(records = n, "request log pruned past logs.retention");
        }
        Ok(_) => {}
        Err(e) => warn.failed("request log retention not applied", &e, 0),
    }
}
