//! SIGHUP never stops guard. Its default action ends the process (exit 129, with no log line),
//! and service managers and log rotation send it expecting a reload. guard re-reads its
//! configuration only at start; on SIGHUP the proxy re-reads its TLS certificate (see
//! `proxy::tls`), and this handler logs what was reloaded, so the operator sees the signal
//! arrived and what it did.
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Installs the SIGHUP handler on `runtime`, before anything else can receive the signal's
/// default action; `tls` says whether the proxy reloads a TLS certificate on it.
pub(super) fn install(runtime: &tokio::runtime::Runtime, tls: bool) {
    let _entered = runtime.enter();
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot handle SIGHUP, which would stop guard: {e}");
            return;
        }
    };
    let reloaded = if tls {
        "the proxy's TLS certificate and key"
    } else {
        "nothing"
    };
    runtime.spawn(async move {
        while hup.recv().await.is_some() {
            info!(
                reloaded,
                "SIGHUP received: reloaded {reloaded}; the configuration is read at start only \
                 (restart guard to apply a change to it)"
            );
        }
    });
}
