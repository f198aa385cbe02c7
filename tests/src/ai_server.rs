//! A loopback stand-in for an OpenAI-compatible chat-completions server, speaking the real
//! protocol over real HTTP: it answers every `POST /v1/chat/completions` with the verdict the
//! test sets (`BLOCK`, `ALLOW`) or a 500, and counts the calls.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::Netns;

/// What the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    Block = 0,
    Allow = 1,
    ServerError = 2,
    /// Read the request, then close the connection without a word: the AI is down.
    Down = 3,
}

/// A running server's controls.
#[derive(Clone)]
pub struct AiServer {
    answer: Arc<AtomicU8>,
    calls: Arc<AtomicU64>,
}

impl AiServer {
    /// Starts the server on 127.0.0.1:`port` inside `ns`.
    pub fn start(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        let me = Self {
            answer: Arc::new(AtomicU8::new(Answer::Block as u8)),
            calls: Arc::new(AtomicU64::new(0)),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let server = me.clone();
        ns.spawn(move || {
            let listener = TcpListener::bind(("127.0.0.1", port));
            let _ = tx.send(listener.is_ok());
            let Ok(listener) = listener else { return };
            for stream in listener.incoming().flatten() {
                let server = server.clone();
                std::thread::spawn(move || {
                    let _ = server.serve(stream);
                });
            }
        });
        anyhow::ensure!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false),
            "AI server did not start"
        );
        Ok(me)
    }

    /// Sets the answer to every later call.
    pub fn answer(&self, a: Answer) {
        self.answer.store(a as u8, Ordering::SeqCst);
    }

    /// Calls received so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn serve(&self, stream: std::net::TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut out = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            crate::http::skip_message(&mut reader)?;
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.answer.load(Ordering::SeqCst) == Answer::Down as u8 {
                return Ok(());
            }
            let (status, body) = match self.answer.load(Ordering::SeqCst) {
                0 | 1 => {
                    let verdict = if self.answer.load(Ordering::SeqCst) == 0 {
                        "BLOCK"
                    } else {
                        "ALLOW"
                    };
                    let content = format!("{{\\\"verdict\\\": \\\"{verdict}\\\"}}");
                    (
                        "200 OK",
                        format!(
                            r#"{{"id":"t","object":"chat.completion","model":"test","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}]}}"#
                        ),
                    )
                }
                _ => (
                    "500 Internal Server Error",
                    r#"{"error":{"message":"overloaded"}}"#.to_owned(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            out.write_all(response.as_bytes())?;
        }
    }
}
