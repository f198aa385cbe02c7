//! The daemon's side of the control socket: [`prepare_dir`] and [`bind`] make the socket private
//! (see `access`), [`serve`] answers one request per connection within [`Limits`]: a request
//! line of at most 1 MiB read within 10 s (a longer one is answered with an error and the
//! connection closed, nothing parsed), at most 64 connections at once from root and 64 from
//! everyone else (over it a connection gets a "busy" error at once and is closed, so a reader
//! filling its share cannot keep root out), and accept errors (out of file descriptors…) backed
//! off from 10 ms to 1 s, each kind logged once.
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::access::{Access, Peer, Role};
use super::{ControlError, Request, Response};
use crate::perms::{DirSpec, check_private_dir};

/// Largest request line accepted, in bytes (the CLI sends `ban import` in pieces under it).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The bounds of each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, newline excluded. Default 1 MiB.
    pub max_request: usize,
    /// Time allowed for the request line to arrive. Default 10 s.
    pub read_timeout: Duration,
    /// Time allowed to write the answer. Default 60 s.
    pub write_timeout: Duration,
    /// Connections open at once, for root and for everyone else each. Default 64.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request: MAX_REQUEST_BYTES,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_mins(1),
            max_connections: 64,
        }
    }
}

/// Makes the socket's directory private before anything else starts: created 0700 (0750 with
/// the read-only group), or, if it exists, refused unless it is owned by the daemon's user
/// and no looser than that (see `perms::check_private_dir`).
pub fn prepare_dir(socket: &Path, access: &Access) -> Result<(), ControlError> {
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Err(ControlError::NoDirectory {
            path: socket.to_owned(),
        });
    };
    let spec = DirSpec {
        mode: access.dir_mode(),
        group: access.group().map(|g| g.gid),
    };
    check_private_dir(dir, spec, "control socket directory")?;
    Ok(())
}

/// Binds the control socket in its private directory ([`prepare_dir`]): refuses if another
/// daemon answers there, replaces a stale socket file, binds under umask 077 and then gives
/// the socket its mode (0600, or 0660 with the read-only group).
pub fn bind(path: &Path, access: &Access) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    prepare_dir(path, access)?;
    if std::fs::symlink_metadata(path).is_ok() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = {
        // The directory already keeps others out; the umask makes the socket itself private
        // from its creation. `guard run` works under 077 throughout: this only matters to other
        // callers (tests), and restores their umask.
        let before = crate::perms::private_umask();
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(before));
        bound.map_err(io)?
    };
    if let Some(g) = access.group() {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(g.gid)))
            .map_err(|e| io(e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.socket_mode()))
        .map_err(io)?;
    Ok(listener)
}

/// Serves requests with the default [`Limits`] until `shutdown` resolves; see [`serve_with`].
pub async fn serve<H, F>(listener: UnixListener, access: Access, handler: Arc<H>, shutdown: F)
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
    F: std::future::Future<Output = ()>,
{
    serve_with(listener, access, Limits::default(), handler, shutdown).await;
}

/// Serves requests until `shutdown` resolves. Each connection is handled on its own task,
/// within `limits`, for a caller `access` allows; `handler` runs on the blocking pool (it may
/// touch sled and BPF maps).
pub async fn serve_with<H, F>(
    listener: UnixListener,
    access: Access,
    limits: Limits,
    handler: Arc<H>,
    shutdown: F,
) where
    H: Fn(Request) -> Response + Send + Sync + 'static,
    F: std::future::Future<Output = ()>,
{
    let access = Arc::new(access);
    let (admins, others) = (
        Arc::new(Semaphore::new(limits.max_connections)),
        Arc::new(Semaphore::new(limits.max_connections)),
    );
    let mut backoff = Backoff::default();
    let mut busy_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if let Some(errors) = backoff.succeeded() {
                    info!(errors, "control socket accepting again");
                }
                stream
            }
            Err(e) => {
                let (pause, first) = backoff.failed(&e);
                if first {
                    warn!(
                        "control socket accept: {e} (retrying every {} ms at most, said once a kind)",
                        pause.as_millis()
                    );
                }
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                debug!("control connection without credentials: {e}");
                continue;
            }
        };
        let pool = if access.role(&peer) == Role::Admin {
            &admins
        } else {
            &others
        };
        let Ok(permit) = Arc::clone(pool).try_acquire_owned() else {
            if busy_warned.is_none_or(|t| t.elapsed() >= Duration::from_mins(1)) {
                warn!(
                    uid = peer.uid,
                    "control socket busy: {} connections are open; new ones are refused \
                     (said once a minute)",
                    limits.max_connections
                );
                busy_warned = Some(Instant::now());
            }
            let busy = Response::err(format!(
                "busy: {} control connections are open; try again",
                limits.max_connections
            ));
            // Written on the plain (non-blocking) socket, never waiting: a fresh socket's
            // buffer takes the line. (tokio's `try_write` would not write before the reactor
            // has seen the socket writable.)
            if let Ok(plain) = stream.into_std() {
                let _ = std::io::Write::write(&mut &plain, &encode(&busy));
            }
            continue;
        };
        let (handler, access) = (Arc::clone(&handler), Arc::clone(&access));
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &peer, &access, limits, handler).await {
                debug!("control connection: {e}");
            }
            drop(permit);
        });
    }
}

/// One response line.
fn encode(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    out
}

/// What came in on a connection.
enum Incoming {
    Line(Vec<u8>),
    /// Closed before a byte was sent.
    Nothing,
    TooLarge,
    TimedOut,
}

async fn read_request(stream: &mut UnixStream, limits: Limits) -> std::io::Result<Incoming> {
    let max = limits.max_request as u64;
    let mut reader = BufReader::new(stream.take(max + 1));
    let mut line = Vec::new();
    let read = tokio::time::timeout(limits.read_timeout, reader.read_until(b'\n', &mut line));
    match read.await {
        Err(_) => Ok(Incoming::TimedOut),
        Ok(Err(e)) => Err(e),
        Ok(Ok(0)) => Ok(Incoming::Nothing),
        Ok(Ok(_)) if line.last() != Some(&b'\n') && line.len() as u64 > max => {
            Ok(Incoming::TooLarge)
        }
        Ok(Ok(_)) => Ok(Incoming::Line(line)),
    }
}

async fn handle<H>(
    mut stream: UnixStream,
    peer: &Peer,
    access: &Access,
    limits: Limits,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let response = if let Some(refusal) = access.refuse_connection(peer) {
        Response::err(refusal)
    } else {
        match read_request(&mut stream, limits).await? {
            Incoming::Nothing => return Ok(()),
            Incoming::TimedOut => Response::err(format!(
                "no request line within {} s: closing",
                limits.read_timeout.as_secs()
            )),
            Incoming::TooLarge => Response::err(format!(
                "request larger than {} bytes (1 MiB): refused unread (`guard ban import` sends \
                 large imports in pieces)",
                limits.max_request
            )),
            Incoming::Line(line) => match serde_json::from_slice::<Request>(&line) {
                Err(e) => Response::err(format!("bad request: {e}")),
                Ok(request) => match access.refuse_request(peer, &request) {
                    Some(refusal) => {
                        info!(
                            uid = peer.uid,
                            command = request.command(),
                            "control request refused"
                        );
                        Response::err(refusal)
                    }
                    None => tokio::task::spawn_blocking(move || handler(request))
                        .await
                        .unwrap_or_else(|e| Response::err(format!("internal error: {e}"))),
                },
            },
        }
    };
    let write = async {
        stream.write_all(&encode(&response)).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(limits.write_timeout, write)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(ErrorKind::TimedOut)))
}

/// Pauses after failed accepts: 10 ms doubling to 1 s, reset by a success; each kind of error
/// is said once an episode.
#[derive(Debug, Default)]
struct Backoff {
    pause: Option<Duration>,
    /// The kinds said in this episode (raw OS error, or -1).
    said: Vec<i32>,
    errors: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// The pause after `e`, and whether it is the first of its kind in this episode.
    fn failed(&mut self, e: &std::io::Error) -> (Duration, bool) {
        let pause = self.pause.map_or(Self::FIRST, |p| (p * 2).min(Self::MAX));
        self.pause = Some(pause);
        self.errors += 1;
        let kind = e.raw_os_error().unwrap_or(-1);
        let first = !self.said.contains(&kind);
        if first {
            self.said.push(kind);
        }
        (pause, first)
    }

    /// Ends an episode of errors: how many there were, if any.
    fn succeeded(&mut self) -> Option<u64> {
        self.pause = None;
        self.said.clear();
        let errors = std::mem::take(&mut self.errors);
        (errors > 0).then_some(errors)
    }
}

#[cfg(test)]
mod tests;
