//! A real HTTP/1.1 server on 127.0.0.1:0 that speaks enough of the chat-completions protocol
//! for the tests: it reads each request whole, records it, and plays the next scripted reply.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One scripted reply.
#[derive(Debug, Clone)]
pub(super) enum Reply {
    /// A whole response: status, extra headers, body.
    Http {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// A 200 whose body arrives one byte every `every`.
    Drip { body: String, every: Duration },
    /// Waits `after`, then plays the reply.
    Delayed { after: Duration, reply: Box<Reply> },
    /// Takes the whole request, then closes the connection without a byte: the server is down.
    HangUp,
}

/// A 200 with one choice whose content is `content`, finished normally.
pub(super) fn chat(content: &str) -> Reply {
    chat_finished(content, "stop")
}

pub(super) fn chat_finished(content: &str, finish_reason: &str) -> Reply {
    ok_body(&json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
        }],
    }))
}

pub(super) fn ok_body(body: &Value) -> Reply {
    Reply::Http {
        status: 200,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

pub(super) fn status(status: u16) -> Reply {
    Reply::Http {
        status,
        headers: Vec::new(),
        body: json!({"error": {"message": "scripted", "type": "test"}}).to_string(),
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) at: Instant,
    pub(super) request_line: String,
    /// Header lines, names lower-cased.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Received {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the client sent JSON")
    }

    /// The system message then the user message.
    pub(super) fn messages(&self) -> (String, String) {
        let json = self.json();
        let text = |i: usize| {
            json["messages"][i]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(json["messages"][0]["role"], "system");
        assert_eq!(json["messages"][1]["role"], "user");
        (text(0), text(1))
    }
}

pub(super) struct TestServer {
    pub(super) base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    accept: JoinHandle<()>,
}

struct Shared {
    script: Vec<Reply>,
    next: AtomicUsize,
    required_key: Option<String>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl TestServer {
    /// Starts a server that plays `script` in order, repeating its last reply.
    pub(super) async fn start(script: Vec<Reply>) -> Self {
        Self::start_with_key(script, None).await
    }

    /// As `start`, answering 401 to any request without `Authorization: Bearer <key>`.
    pub(super) async fn start_with_key(script: Vec<Reply>, key: Option<&str>) -> Self {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            script,
            next: AtomicUsize::new(0),
            required_key: key.map(str::to_owned),
            received: Arc::clone(&received),
        });
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            received,
            accept,
        }
    }

    pub(super) fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    pub(super) fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some(received) = read_request(&mut stream).await else {
        return;
    };
    let authorised = shared.required_key.as_ref().is_none_or(|key| {
        received.header("authorization") == Some(format!("Bearer {key}").as_str())
    });
    assert_eq!(received.request_line, "POST /v1/chat/completions HTTP/1.1");
    shared.received.lock().expect("lock").push(received);
    let index = shared.next.fetch_add(1, Ordering::SeqCst);
    let reply = if authorised {
        shared.script[index.min(shared.script.len() - 1)].clone()
    } else {
        status(401)
    };
    play(&mut stream, reply).await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        at: Instant::now(),
        request_line,
        headers,
        body,
    })
}

async fn play(stream: &mut TcpStream, mut reply: Reply) {
    while let Reply::Delayed {
        after,
        reply: inner,
    } = reply
    {
        tokio::time::sleep(after).await;
        reply = *inner;
    }
    match reply {
        Reply::Http {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                let _ = write!(head, "{name}: {value}\r\n");
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        }
        Reply::Drip { body, every } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            for byte in body.as_bytes() {
                if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }
        Reply::HangUp => {}
        Reply::Delayed { .. } => unreachable!("unwrapped above"),
    }
    let _ = stream.shutdown().await;
}
