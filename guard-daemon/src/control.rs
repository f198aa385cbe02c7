//! The control API: newline-delimited JSON over a Unix socket in a private directory. One
//! request line, one response line, both typed in [`proto`]. The daemon serves it ([`serve`],
//! within the bounds of `server`), checking each caller ([`access`]: root for changes, a
//! configured group for reading); the CLI is its client ([`call`]).
pub mod access;
pub mod proto;
pub mod server;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

pub use access::{Access, Peer, Role, SocketGroup, group_name};
pub use proto::{
    AllowAdded, BanAdded, DaemonCounters, FromReply, ImportEntry, Imported, Interface, LogCounters,
    LogsRequest, Removed, Replaced, Reply, Request, Response, Stats, Status, UnexpectedReply,
};
pub use server::{Limits, MAX_REQUEST_BYTES, bind, prepare_dir, serve, serve_with};

/// Errors of the control socket, on either side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "guard is not running: nothing listens on {path} (start it with `guard run`, or pass --socket)"
    )]
    NotRunning { path: PathBuf },
    #[error(
        "permission denied on {path}: run as root (members of daemon.socket_group, if it is set, \
         may run the read-only commands)"
    )]
    Permission { path: PathBuf },
    #[error(
        "daemon.socket_group {name:?}: {why} (create it with `groupadd {name}`, or remove the key)"
    )]
    UnknownGroup { name: String, why: String },
    #[error("the control socket {path} has no directory")]
    NoDirectory { path: PathBuf },
    #[error(transparent)]
    Directory(Box<crate::perms::PermsError>),
    #[error("another guard is already listening on {path}")]
    AlreadyRunning { path: PathBuf },
    #[error("control socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "guard did not answer on {path} within {} s (it may be stuck; see its log)",
        .timeout.as_secs()
    )]
    NoAnswer {
        path: PathBuf,
        timeout: std::time::Duration,
    },
    #[error("the request could not be encoded")]
    BadRequest(#[source] serde_json::Error),
    #[error("the daemon sent an unreadable answer")]
    BadResponse(#[source] serde_json::Error),
    #[error(transparent)]
    Unexpected(#[from] UnexpectedReply),
    /// The daemon refused or failed the request; its message, for the user.
    #[error("{0}")]
    Daemon(String),
}

impl From<crate::perms::PermsError> for ControlError {
    fn from(e: crate::perms::PermsError) -> Self {
        Self::Directory(Box::new(e))
    }
}

/// How long the CLI waits for an answer (an import of a million bans takes a few seconds).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_mins(2);

/// Sends one request and waits for its answer, as the type `T` this request gets. An error
/// answer becomes `ControlError::Daemon`.
pub fn call<T: FromReply>(socket: &Path, request: &Request) -> Result<T, ControlError> {
    Ok(T::from_reply(call_within(
        socket,
        request,
        ANSWER_TIMEOUT,
    )?)?)
}

/// [`call`], waiting at most `timeout` for the answer.
fn call_within(
    socket: &Path,
    request: &Request,
    timeout: std::time::Duration,
) -> Result<Reply, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = StdUnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning {
                path: socket.to_owned(),
            }
        }
        std::io::ErrorKind::PermissionDenied => ControlError::Permission {
            path: socket.to_owned(),
        },
        _ => io(e),
    })?;
    let mut line = serde_json::to_vec(request).map_err(ControlError::BadRequest)?;
    line.push(b'\n');
    // A daemon that refuses the request unread (too large, not allowed) answers and closes:
    // the write then fails, and its answer is still there to read.
    let written = stream.write_all(&line);
    let mut answer = String::new();
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ControlError::NoAnswer {
                    path: socket.to_owned(),
                    timeout,
                }
            }
            _ => io(e),
        })?;
    if let Err(e) = written
        && answer.is_empty()
    {
        return Err(io(e));
    }
    match serde_json::from_str(&answer).map_err(ControlError::BadResponse)? {
        Response::Ok(reply) => Ok(reply),
        Response::Err(message) => Err(ControlError::Daemon(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that accepts and never answers: the CLI gives up with a message, not a hang.
    #[test]
    fn a_silent_daemon_is_an_error_not_a_hang() {
        let path = std::env::temp_dir().join(format!("guard-silent-{}.sock", std::process::id()));
        // Only the client side is under test here: a plain listener, no private directory.
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let request = Request::Status;
        let t = std::time::Instant::now();
        let err = call_within(&path, &request, std::time::Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ControlError::NoAnswer { .. }), "{err:?}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(err.to_string().contains("did not answer"), "{err}");
        drop(held.join());
        let _ = std::fs::remove_file(&path);
    }
}
