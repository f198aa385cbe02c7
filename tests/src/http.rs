//! A small real HTTP/1.1 server for the tests (keep-alive, pipelining, Content-Length and
//! chunked request bodies) and raw-socket clients that can write requests any way a test wants.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::Netns;

/// Starts the server on `port` in `ns`. `/missing*` and probe-like paths (dot-files, `.php`,
/// `wp-`, `admin`, backups, `/scan/`) answer 404, `/login*` 401, `/error*` 500, anything else
/// 200 with a body naming the method and path.
pub fn start_server(ns: &Netns, port: u16) -> anyhow::Result<()> {
    // Its HEAD answers carry a body, as some tests of the tap's pairing expect.
    start_with(ns, port, probe_routes, false)
}

/// Starts a small web application on `port` in `ns`, the way a real site answers: its pages
/// (`/`, `/news/…`, `/archive/…`, `/api/…`, `/static/…`, `/media/…`, `/robots.txt`) 200, a
/// login form at `/accounts/login/` and `/login` whose POST answers 200 with the same
/// "Invalid credentials" page whatever the credentials (as Django's `LoginView` does), and
/// anything else 404.
pub fn start_app(ns: &Netns, port: u16) -> anyhow::Result<()> {
    start_with(ns, port, app_routes, true)
}

/// What a route answers: the status line's text and the body.
type Route = fn(method: &str, target: &str, body: usize) -> (&'static str, String);

/// The login page of [`start_app`]: the same bytes for every failed attempt.
pub const LOGIN_FAILED: &str = "<!doctype html><title>Log in</title><form method=post>\
    <p class=error>Invalid credentials. Please try again.</p><input name=username>\
    <input name=password type=password><button>Log in</button></form>\n";

fn app_routes(method: &str, target: &str, _body: usize) -> (&'static str, String) {
    let path = target.split('?').next().unwrap_or("");
    if path == "/accounts/login/" || path == "/login" {
        return ("200 OK", LOGIN_FAILED.to_owned());
    }
    let pages = [
        "/static/",
        "/media/",
        "/news/",
        "/archive/",
        "/api/",
        "/about",
    ];
    if path == "/" || path == "/robots.txt" || pages.iter().any(|p| path.starts_with(p)) {
        return ("200 OK", format!("{method} {path} page\n"));
    }
    ("404 Not Found", "Not Found\n".to_owned())
}

fn probe_routes(method: &str, target: &str, body: usize) -> (&'static str, String) {
    // Probe-like paths do not exist here, as on most sites.
    let probe = ["/.", ".php", "wp-", "admin", ".bak", ".sql", "/scan/"]
        .iter()
        .any(|p| target.contains(p));
    let status = if target.starts_with("/missing") || probe {
        "404 Not Found"
    } else if target.starts_with("/login") {
        // Every password is wrong.
        "401 Unauthorized"
    } else if target.starts_with("/error") {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    (status, format!("{method} {target} {body}\n"))
}

fn start_with(ns: &Netns, port: u16, route: Route, head: bool) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let listener = TcpListener::bind(("0.0.0.0", port));
        let _ = tx.send(listener.is_ok());
        let Ok(listener) = listener else { return };
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(stream, route, head);
            });
        }
    });
    anyhow::ensure!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false),
        "HTTP server did not start"
    );
    Ok(())
}

/// Serves one connection; `head`: HEAD answers carry no body (as HTTP says).
fn serve(stream: TcpStream, route: Route, head: bool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (
            parts.next().map(str::to_owned),
            parts.next().map(str::to_owned),
        ) else {
            out.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        };
        let mut length = 0usize;
        let mut chunked = false;
        let mut close = line.contains("HTTP/1.0");
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = 0usize;
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                else {
                    out.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                    return Ok(());
                };
                let mut buf = vec![0u8; n + 2];
                reader.read_exact(&mut buf)?;
                body += n;
                if n == 0 {
                    break;
                }
            }
        } else if length > 0 {
            std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
            body = length;
        }
        let (status, payload) = route(&method, &target, body);
        let conn = if close { "close" } else { "keep-alive" };
        let body_out = if head && method == "HEAD" {
            ""
        } else {
            payload.as_str()
        };
        let kind = if payload.starts_with("<!doctype") {
            "text/html; charset=utf-8"
        } else {
            "text/plain"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body_out}",
            payload.len()
        );
        out.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// Reads the rest of a message head (after its first line) and skips its Content-Length body.
pub fn skip_message(reader: &mut impl BufRead) -> std::io::Result<()> {
    let mut length = 0u64;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    std::io::copy(&mut reader.take(length), &mut std::io::sink())?;
    Ok(())
}

/// A client connection from inside a namespace (open on a thread that entered it).
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    /// Connects from `ns` to `dst` and runs `f` with the connection, on a thread inside `ns`.
    pub fn with<T: Send + 'static>(
        ns: &Netns,
        dst: SocketAddr,
        f: impl FnOnce(&mut Client) -> std::io::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Self::with_from(ns, None, dst, f)
    }

    /// Like [`Client::with`], from a chosen source address of the namespace.
    pub fn with_from<T: Send + 'static>(
        ns: &Netns,
        src: Option<std::net::IpAddr>,
        dst: SocketAddr,
        f: impl FnOnce(&mut Client) -> std::io::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        Ok(ns.run(move || -> std::io::Result<T> {
            let stream = match src {
                None => TcpStream::connect_timeout(&dst, Duration::from_secs(3))?,
                Some(src) => crate::connect_from(src, dst, Duration::from_secs(3))
                    .ok_or_else(|| std::io::Error::other("connect failed"))?,
            };
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_nodelay(true)?;
            f(&mut Client { stream })
        })??)
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads `n` complete responses (Content-Length framed) and returns their status codes.
    pub fn responses(&mut self, n: usize) -> std::io::Result<Vec<u16>> {
        let mut reader = BufReader::new(self.stream.try_clone()?);
        let mut statuses = Vec::new();
        for _ in 0..n {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            skip_message(&mut reader)?;
            statuses.push(status);
        }
        Ok(statuses)
    }
}
