//! The HTTP observation pipeline: one thread per guarded interface reads the capture ring,
//! feeds the tap (reassembly, HTTP parsing, pairing) and hands each finished request to the
//! batching log writer — never blocking on it: a record that does not fit is counted and dropped.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::capture::{Capture, CaptureError, CaptureStats, RingSize};
use crate::judge::Judge;
use crate::store::logs::{LogRecord, LogWriter};
use crate::tap::{RequestEvent, Tap, TapConfig, TapStats};
use crate::xdp::Xdp;

/// Counters of one interface's pipeline, refreshed by its thread.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PipelineStats {
    pub interface: String,
    pub capture: CaptureStats,
    pub tap: TapStats,
    /// Requests handed to the log writer.
    pub requests: u64,
}

/// The running pipeline threads.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    /// Ports the threads should use, and a version bumped on each change.
    ports: Arc<(Mutex<Vec<u16>>, AtomicU64)>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<Mutex<PipelineStats>>>,
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
        for iface in interfaces {
            let capture = Capture::open(iface, RingSize::default(), |fd| {
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
            };
            let tap = Tap::new(config);
            let thread = std::thread::Builder::new()
                .name(format!("guard-tap-{iface}"))
                .spawn(move || run(capture, tap, &worker))
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
        })
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
}

fn run(mut capture: Capture, mut tap: Tap, w: &Worker) {
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
    let mut out: Vec<RequestEvent> = Vec::new();
    let mut requests = 0u64;
    let mut last_tick = Instant::now();
    let emit = |out: &mut Vec<RequestEvent>, requests: &mut u64| {
        for e in out.drain(..) {
            *requests += 1;
            // A panic while judging costs this request only (counted, logged by the judge).
            let (blocked, reason) = judge
                .judge_contained(&e)
                .unwrap_or_else(|| (false, Some("not judged: the judge panicked".to_owned())));
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
        });
        if let Err(e) = polled {
            warn!(interface = iface, "capture stopped: {e}");
            break;
        }
        emit(&mut out, &mut requests);
        if last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = Instant::now();
            tap.on_tick(wall_now(), &mut out);
            judge.expire(wall_now());
            emit(&mut out, &mut requests);
            let cap = capture.stats();
            let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
            s.capture = cap;
            s.tap = tap.stats().clone();
            s.requests = requests;
        }
    }
    tap.flush(&mut out);
    emit(&mut out, &mut requests);
}
