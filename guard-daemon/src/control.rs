//! The control API: newline-delimited JSON over a Unix socket with root-only permissions.
//! One request line, one response line, both typed in [`proto`]. The daemon serves it
//! ([`serve`]); the CLI is its client ([`call`]).
pub mod proto;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixListener;
use tracing::{debug, warn};

pub use proto::{
    DaemonCounters, FromReply, ImportEntry, Imported, Interface, LogCounters, LogsRequest, Removed,
    Reply, Request, Response, Stats, Status, UnexpectedReply,
};

/// Largest request accepted (a `ban import` of a million lines fits).
pub const MAX_REQUEST_BYTES: u64 = 128 << 20;

/// Errors of the control socket, on either side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "guard is not running: nothing listens on {path} (start it with `guard run`, or pass --socket)"
    )]
    NotRunning { path: PathBuf },
    #[error("permission denied on {path}: the control socket is root-only")]
    Permission { path: PathBuf },
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
    stream.write_all(&line).map_err(io)?;
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
    match serde_json::from_str(&answer).map_err(ControlError::BadResponse)? {
        Response::Ok(reply) => Ok(reply),
        Response::Err(message) => Err(ControlError::Daemon(message)),
    }
}

/// Binds the control socket: creates its directory, refuses if another daemon answers there,
/// replaces a stale socket file, and makes it root-only (0600).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Serves requests until `shutdown` resolves. Each connection is handled on its own task;
/// `handler` runs on the blocking pool (it may touch sled and BPF maps).
pub async fn serve<H, F>(listener: UnixListener, handler: Arc<H>, shutdown: F)
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
    F: std::future::Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, handler).await {
                            debug!("control connection: {e}");
                        }
                    });
                }
                Err(e) => warn!("control socket accept: {e}"),
            },
        }
    }
}

async fn handle<H>(stream: tokio::net::UnixStream, handler: Arc<H>) -> std::io::Result<()>
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let (read, mut write) = stream.into_split();
    let mut reader = TokioBufReader::new(read.take(MAX_REQUEST_BYTES));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    let response = if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_REQUEST_BYTES {
        Response::err(format!("request larger than {MAX_REQUEST_BYTES} bytes"))
    } else {
        match serde_json::from_slice::<Request>(&line) {
            Ok(request) => tokio::task::spawn_blocking(move || handler(request))
                .await
                .unwrap_or_else(|e| Response::err(format!("internal error: {e}"))),
            Err(e) => Response::err(format!("bad request: {e}")),
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends over a real socket: the daemon's typed reply is the CLI's typed value.
    #[test]
    fn a_typed_reply_crosses_the_socket() {
        let path = std::env::temp_dir().join(format!("guard-typed-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(async { bind(&path) }).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handler = Arc::new(|req: Request| match req {
            Request::TapPorts { ports } => Response::ok(ports.unwrap_or_default()),
            _ => Response::err("not here"),
        });
        let server = runtime.spawn(serve(listener, handler, async {
            let _ = stopped.await;
        }));
        let ports: Vec<u16> = call(
            &path,
            &Request::TapPorts {
                ports: Some(vec![80, 8080]),
            },
        )
        .unwrap();
        assert_eq!(ports, [80, 8080]);
        let err = call::<Vec<u16>>(&path, &Request::Status).unwrap_err();
        assert!(
            matches!(&err, ControlError::Daemon(m) if m == "not here"),
            "{err:?}"
        );
        // The right reply for another request is an error, not a misread.
        let err = call::<Removed>(&path, &Request::TapPorts { ports: None }).unwrap_err();
        assert!(matches!(err, ControlError::Unexpected(_)), "{err:?}");
        let _ = stop.send(());
        runtime.block_on(server).unwrap();
        let _ = std::fs::remove_file(&path);
    }

    /// A daemon that accepts and never answers: the CLI gives up with a message, not a hang.
    #[test]
    fn a_silent_daemon_is_an_error_not_a_hang() {
        let path = std::env::temp_dir().join(format!("guard-silent-{}.sock", std::process::id()));
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
