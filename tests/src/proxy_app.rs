//! The reverse proxy's test app: a real HTTP/1.1 server (hyper, keep-alive, upgrades) that the
//! tests and `cargo xtask bench proxy` put behind guard. Routes:
//! - `/hello`: a fixed short answer (the benchmark's);
//! - `/sink`: reads the body as it comes, counting its bytes (never holding it), answers the count;
//! - `/slow`: answers after 3 s;
//! - `/ws` with `Upgrade: websocket`: 101, then every frame echoed back (unmasked);
//! - anything else: the request line, every header as received, and the body's length.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Netns;

/// What the app has seen.
#[derive(Default)]
pub struct Seen {
    /// Requests answered (every route).
    pub requests: AtomicU64,
    /// Body bytes `/sink` has counted, over all requests.
    pub sink_bytes: AtomicU64,
    /// The last echoed request's text (request line and headers).
    pub last: Mutex<String>,
}

impl Seen {
    #[must_use]
    pub fn last(&self) -> String {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running app; it serves until the process ends.
pub struct App {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

/// Starts the app on `addr` (port 0: any) inside `ns` (or where the caller is), with `threads`
/// runtime threads.
pub fn start(ns: Option<&Netns>, addr: SocketAddr, threads: usize) -> anyhow::Result<App> {
    let seen = Arc::new(Seen::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let s = Arc::clone(&seen);
    let body = move || {
        let listener = match std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
        {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(listener.local_addr());
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(serve(listener, s));
    };
    match ns {
        Some(ns) => ns.spawn(body),
        None => {
            std::thread::spawn(body);
        }
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(5))
        .context("the test app did not start")?
        .context("binding the test app")?;
    Ok(App { addr, seen })
}

async fn serve(listener: std::net::TcpListener, seen: Arc<Seen>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, Arc::clone(&seen)));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

type Reply = hyper::Response<Full<Bytes>>;

async fn answer(mut req: hyper::Request<Incoming>, seen: Arc<Seen>) -> Result<Reply, hyper::Error> {
    seen.requests.fetch_add(1, Ordering::Relaxed);
    match req.uri().path() {
        "/hello" => {
            return Ok(hyper::Response::new(Full::new(Bytes::from_static(
                b"hello from the test app\n",
            ))));
        }
        "/slow" => tokio::time::sleep(Duration::from_secs(3)).await,
        "/sink" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame?.into_data() {
                    n += d.len() as u64;
                    seen.sink_bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            return Ok(hyper::Response::new(Full::new(Bytes::from(format!(
                "received {n}\n"
            )))));
        }
        "/ws" if req.headers().contains_key("upgrade") => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    let _ = ws_echo(TokioIo::new(up)).await;
                }
            });
            let mut r = hyper::Response::new(Full::new(Bytes::new()));
            *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", http::HeaderValue::from_static("websocket"));
            r.headers_mut()
                .insert("connection", http::HeaderValue::from_static("upgrade"));
            // The tests' client does not check the accept key; the value is the RFC's example.
            r.headers_mut().insert(
                "sec-websocket-accept",
                http::HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            );
            return Ok(r);
        }
        _ => {}
    }
    let mut text = format!("{} {}\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        let _ = writeln!(text, "{k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
    seen.last
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone_from(&text);
    let body = req.into_body().collect().await?.to_bytes();
    let _ = writeln!(text, "body-length: {}", body.len());
    Ok(hyper::Response::new(Full::new(Bytes::from(text))))
}

/// Echoes WebSocket frames (unmasked, same opcode) until a close frame or the end.
async fn ws_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
) -> std::io::Result<()> {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await?;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7f {
            126 => u64::from(s.read_u16().await?),
            127 => s.read_u64().await?,
            n => u64::from(n),
        };
        let mut key = [0u8; 4];
        if masked {
            s.read_exact(&mut key).await?;
        }
        let mut payload = vec![0u8; usize::try_from(len.min(1 << 20)).unwrap_or(0)];
        s.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        s.write_all(&frame(opcode, &payload, None)).await?;
        if opcode == 8 {
            return Ok(());
        }
    }
}

/// One final WebSocket frame; masked with `mask` when given (a client's frame).
#[must_use]
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(bit | n as u8),
        n @ 126..=0xffff => {
            out.push(bit | 0x7e);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 0x7f);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}
