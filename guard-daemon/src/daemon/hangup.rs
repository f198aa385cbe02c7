//! SIGHUP never stops guard. Its default action ends the process (exit 129, with no log line),
//! and service managers and log rotation send it expecting a reload. On SIGHUP guard reloads
//! its configuration file as `guard reload` does (see `reload`), and the proxy re-reads its TLS
//! certificate (see `proxy::tls`); the log says what was reloaded, or why not.
use std::sync::Arc;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use super::Shared;

/// Takes SIGHUP on `runtime`, before anything else can receive the signal's default action.
/// The signals wait in the returned stream until [`serve`] handles them.
pub(super) fn install(runtime: &tokio::runtime::Runtime) -> Option<Signal> {
    let _entered = runtime.enter();
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot handle SIGHUP, which would stop guard: {e}");
            None
        }
    }
}

/// Reloads on each SIGHUP until the runtime ends; `tls` says whether the proxy reloads a TLS
/// certificate on it too.
pub(super) async fn serve(shared: Arc<Shared>, mut hup: Signal, tls: bool) {
    while hup.recv().await.is_some() {
        if tls {
            info!("SIGHUP received: the proxy reloads its TLS certificate and key");
        }
        let s = Arc::clone(&shared);
        match tokio::task::spawn_blocking(move || super::reload::reload(&s)).await {
            Ok(Ok(r)) => info!(
                file = %r.file.display(),
                applied = ?r.applied,
                need_restart = ?r.need_restart,
                mode = r.mode,
                "SIGHUP received: configuration reloaded"
            ),
            Ok(Err(e)) => warn!("SIGHUP received: {e}"),
            Err(e) => warn!("SIGHUP received: the reload did not finish: {e}"),
        }
    }
}
