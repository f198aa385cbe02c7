//! The HTTP observation pipeline: one thread per guarded interface reads the capture ring,
//! feeds the tap (reassembly, HTTP parsing, pairing) and hands each finished request to the
//! batching log writer — never blocking on it: a record that does not fit is counted and dropped.
use guard_core::tap::jwt::JwtKeys;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::capture::{Capture, CaptureError, CaptureStats, RingSize};
use crate::judge::Judge;
use crate::quota::tap::{TapQuotas, join_reasons};
use crate::store::logs::{LogRecord, LogWriter};
use crate::tap::{RequestEvent, Tap, TapConfig, TapStats};
use crate::verified::VerifiedSources;
use crate::xdp::Xdp;

/// Counters of one interface's pipeline, refreshed by its thread.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PipelineStats {
    pub interface: String,
    pub capture: CaptureStats,
    pub tap: TapStats,
    /// Requests handed to the log writer.
    pub requests: u64,
    /// Of those, requests the judge blocked (the tap cannot refuse them: logged as blocked, and
    /// counted against their client).
    pub blocked: u64,
    /// Requests over their plan quota (served: logged with the quota's reason), and bans
    /// ordered for repeated overruns (`quotas.tap_overrun_ban`).
    pub quota_overruns: u64,
    pub quota_bans: u64,
    /// Times the capture thread panicked and was restarted (its socket and ring kept, its flow
    /// table rebuilt), and the last panic's message.
    pub capture_restarts: u64,
    pub last_capture_panic: Option<String>,
}

/// The running pipeline threads.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    /// Ports the threads should use, and a version bumped on each change.
    ports: Arc<(Mutex<Vec<u16>>, AtomicU64)>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<Mutex<PipelineStats>>>,
    /// Sources whose handshake the threads saw recently.
    verified: Arc<VerifiedSources>,
}

impl Pipeline {
    /// Opens a capture socket per interface (with the `http_tap` filter from `xdp`), sets the
    /// protected ports, and starts the threads.
    pub fn start(
        xdp: &mut Xdp,
        interfaces: &[String],
        config: &TapConfig,
        writer: &Arc<LogWriter>,
        judge: &Arc<Judge>,
        jwt: &JwtKeys,
        quotas: Option<&Arc<TapQuotas>>,
    ) -> Result<Self, CaptureError> {
        xdp.set_tap_ports(&config.http_ports)
            .map_err(|e| CaptureError::Sys {
                call: "setting the tap ports",
                source: std::io::Error::other(e),
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let ports = Arc::new((Mutex::new(config.http_ports.clone()), AtomicU64::new(0)));
        let mut threads = Vec::new();
        let mut all_stats = Vec::new();
        let verified = Arc::new(VerifiedSources::default());
        for iface in interfaces {
            let capture = Capture::open(iface, RingSize::mib(config.ring_mb), |fd| {
                xdp.attach_tap(fd).map_err(|e| CaptureError::Sys {
                    call: "attaching http_tap",
                    source: std::io::Error::other(e),
                })
            })?;
            let stats = Arc::new(Mutex::new(PipelineStats {
                interface: iface.clone(),
                ..Default::default()
            }));
            let worker = Worker {
                stop: Arc::clone(&stop),
                stats: Arc::clone(&stats),
                writer: Arc::clone(writer),
                iface: iface.clone(),
                ports: Arc::clone(&ports),
                judge: Arc::clone(judge),
                verified: Arc::clone(&verified),
                jwt: jwt.clone(),
                quotas: quotas.cloned(),
            };
            let tap_config = config.clone();
            let thread = std::thread::Builder::new()
                .name(format!("guard-tap-{iface}"))
                .spawn(move || run(capture, &tap_config, &worker))
                .map_err(|source| CaptureError::Sys {
                    call: "spawning the capture thread",
                    source,
                })?;
            info!(interface = %iface, ports = ?config.http_ports, "HTTP tap capturing");
            threads.push(thread);
            all_stats.push(stats);
        }
        Ok(Self {
            stop,
            ports,
            threads,
            stats: all_stats,
            verified,
        })
    }

    /// The sources whose TCP handshake on a protected port the tap saw recently (the rate
    /// limiter bans only those).
    #[must_use]
    pub fn verified(&self) -> Arc<VerifiedSources> {
        Arc::clone(&self.verified)
    }

    /// The protected ports now.
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.ports
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the protected ports: the kernel filter (through `xdp`) and every thread's tap.
    pub fn set_ports(&self, xdp: &mut Xdp, ports: &[u16]) -> Result<(), crate::xdp::XdpError> {
        xdp.set_tap_ports(ports)?;
        *self.ports.0.lock().unwrap_or_else(PoisonError::into_inner) = ports.to_vec();
        self.ports.1.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// A snapshot of every interface's counters.
    #[must_use]
    pub fn stats(&self) -> Vec<PipelineStats> {
        self.stats
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect()
    }

    /// Stops the threads (each flushes its open requests to the log first).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn wall_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// What one capture thread shares with the rest of the daemon.
struct Worker {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<PipelineStats>>,
    writer: Arc<LogWriter>,
    iface: String,
    ports: Arc<(Mutex<Vec<u16>>, AtomicU64)>,
    judge: Arc<Judge>,
    verified: Arc<VerifiedSources>,
    /// The keys bearer JWTs are verified with (`tap.jwt_hs256_key`, `tap.jwt_public_key`).
    jwt: JwtKeys,
    /// The plan quotas, checked on requests the judge did not block (`[quotas]`).
    quotas: Option<Arc<TapQuotas>>,
}

/// Runs one interface's capture until `stop`, restarting the capture loop after a panic (see
/// [`supervise`]). The socket and its ring are kept: the block being read when the panic struck
/// was handed back to the kernel on the way out (its remaining packets are lost); the tap is
/// rebuilt empty, since a panic may have left its flow table half-updated (flows open then are
/// picked up mid-stream, see `Trust`).
fn run(mut capture: Capture, config: &TapConfig, w: &Worker) {
    let mut tap = Tap::new(config);
    tap.set_jwt_keys(w.jwt.clone());
    let mut requests = Tally::default();
    let mut fresh = true;
    supervise(
        &w.iface,
        &w.stop,
        Backoff::default(),
        &|message| {
            let mut s = w.stats.lock().unwrap_or_else(PoisonError::into_inner);
            s.capture_restarts += 1;
            s.last_capture_panic = Some(message.to_owned());
        },
        || {
            if !fresh {
                tap = Tap::new(config);
                tap.set_jwt_keys(w.jwt.clone());
            }
            fresh = false;
            capture_loop(&mut capture, &mut tap, &mut requests, w);
        },
    );
}

/// Debug builds only (compiled out of release builds): with `GUARD_FAULT_PANIC_PATH` set in its
/// environment, the capture thread panics inside the ring's packet handler when the tap finishes
/// a request for exactly that path. The end-to-end tests' way to prove that a capture thread
/// which panics is restarted and goes on judging.
#[cfg(debug_assertions)]
fn injected_fault(out: &[RequestEvent]) {
    static PATH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(path) = PATH.get_or_init(|| std::env::var("GUARD_FAULT_PANIC_PATH").ok())
        && out.iter().any(|e| e.path == *path)
    {
        panic!("injected fault (GUARD_FAULT_PANIC_PATH): a request for {path}");
    }
}

/// Delays between restarts of a panicking capture loop: `first`, doubled at each panic up to
/// `max`, back to `first` once the loop has run for `max` without panicking.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Calls `body` until it returns or `stop` is set. A panic in `body` is caught, logged with its
/// message, handed to `on_panic` (the counters), and `body` is called again after the backoff:
/// a capture thread that panics never leaves guard blind.
fn supervise(
    iface: &str,
    stop: &AtomicBool,
    backoff: Backoff,
    on_panic: &dyn Fn(&str),
    mut body: impl FnMut(),
) {
    let mut delay = backoff.first;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut body)) else {
            return;
        };
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        if started.elapsed() >= backoff.max {
            delay = backoff.first;
        }
        error!(
            interface = iface,
            panic = %message,
            restart_in = ?delay,
            "the capture thread panicked: restarting it (flows open now are picked up mid-stream)"
        );
        on_panic(&message);
        // Sleep in slices, so that a stop is not held up by the backoff.
        let until = Instant::now() + delay;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// Requests handed on so far, and how many of them were blocked (kept across restarts of the
/// capture loop).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    requests: u64,
    blocked: u64,
    quota_overruns: u64,
    quota_bans: u64,
}

/// Reads the ring and feeds the tap until `stop` (then flushes the open requests) or a capture
/// error.
fn capture_loop(capture: &mut Capture, tap: &mut Tap, requests: &mut Tally, w: &Worker) {
    let (stop, stats, writer, iface, ports, judge) = (
        &*w.stop,
        &*w.stats,
        &*w.writer,
        w.iface.as_str(),
        &*w.ports,
        &*w.judge,
    );
    let mut ports_seen = 0;
    let mut known_ports = ports
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    tap.set_http_ports(&known_ports);
    let mut out: Vec<RequestEvent> = Vec::new();
    let mut last_tick = Instant::now();
    let emit = |out: &mut Vec<RequestEvent>, requests: &mut Tally| {
        for e in out.drain(..) {
            requests.requests += 1;
            // A panic while judging costs this request only (counted, logged by the judge).
            let judged = judge.judge_contained(&e);
            let unjudged = judged.is_none();
            let (blocked, reason) = judged
                .unwrap_or_else(|| (false, Some("not judged: the judge panicked".to_owned())));
            requests.blocked += u64::from(blocked);
            // Served whatever its quota says: an overrun is logged, counted, maybe banned. A
            // blocked or unjudged request charges nothing.
            let overrun = match &w.quotas {
                Some(q) if !blocked && !unjudged => q.observe(&e, judge),
                _ => None,
            };
            let reason = match overrun {
                Some(o) => {
                    requests.quota_overruns += 1;
                    requests.quota_bans += u64::from(o.ban.is_some());
                    Some(join_reasons(reason, &o))
                }
                None => reason,
            };
            // A full queue drops the record; the writer counts it.
            let _ = writer.try_log(LogRecord::from_event(&e, blocked, reason));
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let polled = capture.poll(Duration::from_millis(100), |ts, frame| {
            // Checked per packet: the first segments on a newly protected port may already be
            // in the batch that was being waited for when the ports changed. The tap keeps every
            // port protected so far: the kernel filter alone decides what is captured, and
            // segments of a just-removed port captured before the change still parse.
            let version = ports.1.load(Ordering::Acquire);
            if version != ports_seen {
                ports_seen = version;
                for p in ports
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                {
                    if !known_ports.contains(p) {
                        known_ports.push(*p);
                    }
                }
                tap.set_http_ports(&known_ports);
            }
            tap.on_frame(Duration::from_nanos(ts), frame, &mut out);
            #[cfg(debug_assertions)]
            injected_fault(&out);
        });
        if let Err(e) = polled {
            warn!(interface = iface, "capture stopped: {e}");
            break;
        }
        {
            let mut sources = tap.drain_verified_sources().peekable();
            if sources.peek().is_some() {
                w.verified.insert_all(Instant::now(), sources);
            }
        }
        emit(&mut out, requests);
        if last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = Instant::now();
            tap.on_tick(wall_now(), &mut out);
            judge.sweep_if_due(wall_now());
            emit(&mut out, requests);
            let cap = capture.stats();
            let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
            s.capture = cap;
            s.tap = tap.stats().clone();
            s.requests = requests.requests;
            s.blocked = requests.blocked;
            s.quota_overruns = requests.quota_overruns;
            s.quota_bans = requests.quota_bans;
        }
    }
    tap.flush(&mut out);
    emit(&mut out, requests);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    const QUICK: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(8),
    };

    /// A body that panics is called again, each panic counted with its message, until it
    /// returns normally.
    #[test]
    fn a_panicking_capture_loop_is_restarted_and_counted() {
        let stop = AtomicBool::new(false);
        let runs = AtomicUsize::new(0);
        let panics = Mutex::new(Vec::new());
        supervise(
            "test0",
            &stop,
            QUICK,
            &|m| panics.lock().unwrap().push(m.to_owned()),
            || {
                let n = runs.fetch_add(1, Ordering::Relaxed);
                assert!(n >= 3, "injected panic {n}");
            },
        );
        assert_eq!(
            runs.load(Ordering::Relaxed),
            4,
            "not restarted until it returned"
        );
        let panics = panics.into_inner().unwrap();
        assert_eq!(panics.len(), 3);
        assert!(panics[0].contains("injected panic 0"), "{panics:?}");
    }

    /// A body that keeps panicking is restarted with a growing delay, and a stop ends it.
    #[test]
    fn restarts_back_off_and_stop() {
        let stop = Arc::new(AtomicBool::new(false));
        let runs = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|s| {
            let stopper = Arc::clone(&stop);
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                stopper.store(true, Ordering::Relaxed);
            });
            supervise("test1", &stop, QUICK, &|_| {}, || {
                runs.fetch_add(1, Ordering::Relaxed);
                panic!("always");
            });
        });
        let runs = runs.load(Ordering::Relaxed);
        // 1 + 2 + 4 + 8 + 8 ... ms: about 300 / 8 restarts, far fewer than without a delay.
        assert!((10..=60).contains(&runs), "{runs} restarts in 300 ms");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the stop was held up"
        );
    }
}
