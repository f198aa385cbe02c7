//! The eBPF programs' log: the level `guard run --ebpf-log LEVEL` writes into the object before
//! it is loaded (aya-log's `AYA_LOG_LEVEL`, a read-only global, so the verifier removes every
//! disabled log call and logging off costs the programs nothing), and the reader that hands
//! each record of the `AYA_LOGS` ring to the daemon's own log, under the target `guard::ebpf`.
use aya::Ebpf;
use aya_log::{EbpfLogger, Level};
use serde::Deserialize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use super::XdpError;

/// How much the eBPF programs log: nothing (default), or their rare events up to a level —
/// `warn`: a failed rate-map insert, a full event ring; `info`: also the first over-rate packet
/// of each source; `debug`: also every malformed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EbpfLogLevel {
    /// No log at all (the programs carry no log code once verified).
    #[default]
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl EbpfLogLevel {
    /// The value of aya-log's `AYA_LOG_LEVEL` global: records up to this level are written.
    #[must_use]
    pub fn global(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Error => Level::Error as u8,
            Self::Warn => Level::Warn as u8,
            Self::Info => Level::Info as u8,
            Self::Debug => Level::Debug as u8,
            Self::Trace => Level::Trace as u8,
        }
    }
}

/// Hands aya-log's records to `tracing`.
#[derive(Debug, Clone, Copy)]
pub struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "guard::ebpf", "{message}"),
            log::Level::Warn => tracing::warn!(target: "guard::ebpf", "{message}"),
            log::Level::Info => tracing::info!(target: "guard::ebpf", "{message}"),
            log::Level::Debug => tracing::debug!(target: "guard::ebpf", "{message}"),
            log::Level::Trace => tracing::trace!(target: "guard::ebpf", "{message}"),
        }
    }

    fn flush(&self) {}
}

/// The reader of the programs' log ring.
pub type EbpfLog = EbpfLogger<ToTracing>;

/// Takes the log ring out of `ebpf` unless the log is off. Call it only after the programs are
/// loaded: the ring's fd must stay open while a program that writes it is loaded, and the
/// reader keeps it open.
pub(super) fn open(ebpf: &mut Ebpf, level: EbpfLogLevel) -> Result<Option<EbpfLog>, XdpError> {
    if level == EbpfLogLevel::Off {
        return Ok(None);
    }
    info!(?level, "eBPF log on");
    EbpfLogger::init_with_logger(ebpf, ToTracing)
        .map(Some)
        .map_err(XdpError::Log)
}

/// Forwards the programs' log records to the daemon's log until the ring can no longer be
/// watched (the daemon's runtime is shutting down).
pub async fn forward(log: EbpfLog) {
    // SAFETY: the reader owns the ring's map fd (a `MapData`), which stays open and the same
    // until the reader is dropped, and the `AsyncFd` owns the reader.
    let mut fd = match unsafe { AsyncFd::register_with_interest(log, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!("cannot watch the eBPF log ring: {}", e.into_parts().1);
            return;
        }
    };
    loop {
        let Ok(mut ready) = fd.readable_mut().await else {
            return;
        };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
