//! Incremental HTTP/1.0 and HTTP/1.1 parser for one direction of a connection.
//!
//! Bytes arrive in whatever pieces TCP reassembly delivers. The head is found first (a bounded
//! scan for the blank line — the "check" step, which answers "incomplete" on partial input) and
//! only then parsed with `httparse`. Bodies are framed here (Content-Length, chunked, or — for
//! responses — until the connection closes); only the first `body_cap` bytes are kept, the rest is
//! counted and skipped. A message is reported once it is complete; pipelined messages come out one
//! per [`Parser::advance`] call. A malformed stream is an [`HttpError`]: the caller stops parsing
//! that direction.
mod chunked;
mod head;
#[cfg(test)]
mod tests;

use chunked::{Chunk, chunk_byte};
#[cfg(test)]
pub(crate) use head::MAX_HEADERS;
pub use head::{Head, HeaderList, RequestHead, ResponseHead};
use head::{check_head, parse_head};

/// Why a direction stopped being parsed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("message head longer than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("bad message head")]
    Head {
        #[source]
        source: httparse::Error,
    },
    #[error("bad content-length")]
    BadContentLength,
    #[error("conflicting content-length headers")]
    ConflictingContentLength,
    #[error("unsupported transfer-encoding in a request")]
    UnsupportedTransferEncoding,
    #[error("bad chunk size line")]
    BadChunkSize,
    #[error("missing crlf after chunk data")]
    BadChunkTerminator,
    #[error("trailer section longer than {limit} bytes")]
    TrailerTooLarge { limit: usize },
    #[error("connection closed in the middle of a message")]
    Truncated,
}

/// Which side of the exchange a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

/// Parser bounds, from the `[tap]` config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_head: usize,
    pub body_cap: usize,
    /// Lower-case name of the header carrying the user id, if configured.
    pub user_header: Option<String>,
    /// The forwarding header to parse whole for the client address (only with trusted proxies).
    pub client_header: Option<crate::tap::config::ClientHeader>,
}

/// One complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    /// The first `body_cap` bytes of the (de-chunked) body.
    pub body: Vec<u8>,
    /// Full (de-chunked) body length.
    pub body_len: u64,
    /// Bytes on the wire: head, body and chunk framing.
    pub wire_len: u64,
    /// True for a `101 Switching Protocols` response: the connection is no longer HTTP/1.
    pub upgraded: bool,
}

/// What one [`Parser::advance`] call did.
#[derive(Debug)]
pub struct Progress {
    /// Bytes of the input used; call again with the rest.
    pub consumed: usize,
    /// A message completed with the consumed bytes.
    pub message: Option<Message>,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Framing),
    /// After a protocol switch: bytes are counted and ignored.
    Opaque,
}

/// The parser for one direction.
#[derive(Debug)]
pub struct Parser {
    kind: Kind,
    limits: Limits,
    state: State,
    /// Partial head bytes (only while a head spans several deliveries).
    head_buf: Vec<u8>,
    current: Option<Head>,
    body: Vec<u8>,
    body_len: u64,
    wire_len: u64,
}

impl Parser {
    #[must_use]
    pub fn new(kind: Kind, limits: Limits) -> Self {
        Self {
            kind,
            limits,
            state: State::Head,
            head_buf: Vec::new(),
            current: None,
            body: Vec::new(),
            body_len: 0,
            wire_len: 0,
        }
    }

    /// True between messages: no byte of the next message has been seen.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.head_buf.is_empty()
    }

    /// The message in progress as far as it went, once its head is parsed (for a response that
    /// comes before the request ended, e.g. a 413 or 401 to an upload).
    #[must_use]
    pub fn in_progress(&self) -> Option<Message> {
        if !matches!(self.state, State::Body(_)) {
            return None;
        }
        Some(Message {
            head: self.current.clone()?,
            body: self.body.clone(),
            body_len: self.body_len,
            wire_len: self.wire_len,
            upgraded: false,
        })
    }

    /// Forgets the message in progress (resynchronising after a mid-stream pickup).
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.head_buf.clear();
        self.current = None;
        self.body = Vec::new();
        self.body_len = 0;
        self.wire_len = 0;
    }

    /// True after a protocol switch.
    #[must_use]
    pub fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Stops HTTP parsing (e.g. the request side once the response said 101).
    pub fn set_opaque(&mut self) {
        self.state = State::Opaque;
        self.head_buf = Vec::new();
    }

    /// Bytes held: a partial head and the kept prefix of the body in progress.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.head_buf.len() + self.body.len()
    }

    /// Consumes a prefix of `data`. `head_request` tells a response parser that the request it
    /// answers was a HEAD (so it has no body). Returns "incomplete" as a [`Progress`] without a
    /// message that consumed all the input.
    pub fn advance(&mut self, data: &[u8], head_request: bool) -> Result<Progress, HttpError> {
        match self.state {
            State::Opaque => Ok(Progress {
                consumed: data.len(),
                message: None,
            }),
            State::Head => self.advance_head(data, head_request),
            State::Body(framing) => self.advance_body(framing, data),
        }
    }

    /// The connection closed (FIN) after every byte was delivered: completes a response read until
    /// close, or reports a truncated message.
    pub fn finish(&mut self) -> Result<Option<Message>, HttpError> {
        match self.state {
            State::Body(Framing::UntilClose) => Ok(Some(self.complete())),
            State::Opaque => Ok(None),
            State::Head if self.head_buf.iter().all(u8::is_ascii_whitespace) => Ok(None),
            State::Head | State::Body(_) => Err(HttpError::Truncated),
        }
    }

    fn advance_head(&mut self, data: &[u8], head_request: bool) -> Result<Progress, HttpError> {
        let (consumed, end) = if self.head_buf.is_empty() {
            let Some(end) = check_head(data, 0) else {
                self.stash(data)?;
                return Ok(Progress {
                    consumed: data.len(),
                    message: None,
                });
            };
            (end, end)
        } else {
            let old = self.head_buf.len();
            self.head_buf.extend_from_slice(data);
            let Some(end) = check_head(&self.head_buf, old.saturating_sub(3)) else {
                self.head_buf.truncate(old);
                self.stash(data)?;
                return Ok(Progress {
                    consumed: data.len(),
                    message: None,
                });
            };
            (end - old, end)
        };
        if end > self.limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: self.limits.max_head,
            });
        }
        let buf = std::mem::take(&mut self.head_buf);
        let head_bytes = if buf.is_empty() {
            &data[..end]
        } else {
            &buf[..end]
        };
        let head = parse_head(self.kind, &self.limits, head_bytes)?;
        self.wire_len += end as u64;
        let framing = match &head {
            Head::Request(r) => {
                if r.chunked {
                    Some(Framing::Chunked(Chunk::START))
                } else {
                    r.content_length.filter(|&n| n > 0).map(Framing::Length)
                }
            }
            Head::Response(r) => {
                if (100..200).contains(&r.status) && r.status != 101 {
                    // Interim response (100 Continue, 103 Early Hints): not paired, skipped.
                    self.wire_len = 0;
                    return Ok(Progress {
                        consumed,
                        message: None,
                    });
                }
                if head_request || r.status == 101 || r.status == 204 || r.status == 304 {
                    None
                } else if r.chunked {
                    Some(Framing::Chunked(Chunk::START))
                } else {
                    Some(
                        r.content_length
                            .map_or(Framing::UntilClose, Framing::Length),
                    )
                    .filter(|f| !matches!(f, Framing::Length(0)))
                }
            }
        };
        let upgraded = matches!(&head, Head::Response(r) if r.status == 101);
        self.current = Some(head);
        if let Some(f) = framing {
            self.state = State::Body(f);
            return Ok(Progress {
                consumed,
                message: None,
            });
        }
        let mut message = self.complete();
        if upgraded {
            message.upgraded = true;
            self.state = State::Opaque;
        }
        Ok(Progress {
            consumed,
            message: Some(message),
        })
    }

    /// Keeps a partial head, refusing to grow past the head limit.
    fn stash(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if self.head_buf.len() + data.len() > self.limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: self.limits.max_head,
            });
        }
        if self.head_buf.is_empty() && data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            // Blank lines between messages are allowed and carry nothing.
            return Ok(());
        }
        self.head_buf.extend_from_slice(data);
        Ok(())
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = self.limits.body_cap.saturating_sub(self.body.len());
        if room > 0 && !bytes.is_empty() {
            if self.body.capacity() == 0 {
                // One allocation for the whole kept prefix in the common case.
                self.body
                    .reserve_exact(self.expected_body().min(self.limits.body_cap));
            }
            self.body.extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
        self.body_len += bytes.len() as u64;
    }

    /// Announced body length of the current message (the cap when unknown).
    fn expected_body(&self) -> usize {
        let announced = match &self.current {
            Some(Head::Request(r)) => r.content_length,
            Some(Head::Response(r)) => r.content_length,
            None => None,
        };
        announced.map_or(self.limits.body_cap, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
    }

    fn complete(&mut self) -> Message {
        self.state = State::Head;
        Message {
            head: self
                .current
                .take()
                .unwrap_or_else(|| Head::Request(Box::default())),
            body: std::mem::take(&mut self.body),
            body_len: std::mem::take(&mut self.body_len),
            wire_len: std::mem::take(&mut self.wire_len),
            upgraded: false,
        }
    }

    fn advance_body(&mut self, framing: Framing, data: &[u8]) -> Result<Progress, HttpError> {
        match framing {
            Framing::UntilClose => {
                self.keep(data);
                self.wire_len += data.len() as u64;
                Ok(Progress {
                    consumed: data.len(),
                    message: None,
                })
            }
            Framing::Length(left) => {
                let take = (left.min(data.len() as u64)) as usize;
                self.keep(&data[..take]);
                self.wire_len += take as u64;
                let left = left - take as u64;
                if left == 0 {
                    Ok(Progress {
                        consumed: take,
                        message: Some(self.complete()),
                    })
                } else {
                    self.state = State::Body(Framing::Length(left));
                    Ok(Progress {
                        consumed: take,
                        message: None,
                    })
                }
            }
            Framing::Chunked(chunk) => self.advance_chunked(chunk, data),
        }
    }

    fn advance_chunked(&mut self, mut chunk: Chunk, data: &[u8]) -> Result<Progress, HttpError> {
        let mut i = 0;
        while i < data.len() {
            if let Chunk::Data(left) = chunk {
                let take = (left.min((data.len() - i) as u64)) as usize;
                self.keep(&data[i..i + take]);
                i += take;
                let left = left - take as u64;
                chunk = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            let Some(next) = chunk_byte(chunk, b, self.limits.max_head)? else {
                self.wire_len += i as u64;
                return Ok(Progress {
                    consumed: i,
                    message: Some(self.complete()),
                });
            };
            chunk = next;
        }
        self.wire_len += i as u64;
        self.state = State::Body(Framing::Chunked(chunk));
        Ok(Progress {
            consumed: i,
            message: None,
        })
    }
}
