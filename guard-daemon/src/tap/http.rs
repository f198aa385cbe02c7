//! Incremental HTTP/1.0 and HTTP/1.1 parser for one direction of a connection.
//!
//! Bytes arrive in whatever pieces TCP reassembly delivers. The head is found first (a bounded
//! scan for the blank line — the "check" step, which answers "incomplete" on partial input) and
//! only then parsed with `httparse`. Bodies are framed here (Content-Length, chunked, or — for
//! responses — until the connection closes); only the first `body_cap` bytes are kept, the rest is
//! counted and skipped. A message is reported once it is complete; pipelined messages come out one
//! per [`Parser::advance`] call. A malformed stream is an [`HttpError`]: the caller stops parsing
//! that direction.
use std::fmt::Write as _;

#[cfg(test)]
mod tests;

/// Headers httparse may return for one message; more is malformed.
const MAX_HEADERS: usize = 96;
/// Longest chunk-size line (with extensions) we accept.
const MAX_CHUNK_LINE: usize = 4096;
/// Header values kept longer than this are cut (they only feed logs and scoring).
const MAX_VALUE: usize = 4096;

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
}

/// The parts of a request head guard looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// The raw Authorization value: kept for identity extraction, not passed on.
    pub authorization: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub forwarded: Option<String>,
    pub referer: Option<String>,
    pub has_cookie: bool,
    /// Value of the configured user header.
    pub user_header: Option<String>,
}

/// The parts of a response head guard looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: u8,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

/// A parsed head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Request(RequestHead),
    Response(ResponseHead),
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
enum Chunk {
    Size { value: u64, digits: u8, ext: bool, line: usize },
    SizeLf { value: u64, digits: u8 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { line: usize, total: usize },
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

    /// Bytes held for a partial head.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.head_buf.len()
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
            match check_head(data, 0) {
                Some(end) => (end, end),
                None => {
                    self.stash(data)?;
                    return Ok(Progress {
                        consumed: data.len(),
                        message: None,
                    });
                }
            }
        } else {
            let old = self.head_buf.len();
            self.head_buf.extend_from_slice(data);
            match check_head(&self.head_buf, old.saturating_sub(3)) {
                Some(end) => (end - old, end),
                None => {
                    self.head_buf.truncate(old);
                    self.stash(data)?;
                    return Ok(Progress {
                        consumed: data.len(),
                        message: None,
                    });
                }
            }
        };
        if end > self.limits.max_head {
            return Err(HttpError::HeadTooLarge {
                limit: self.limits.max_head,
            });
        }
        let buf = std::mem::take(&mut self.head_buf);
        let head_bytes = if buf.is_empty() { &data[..end] } else { &buf[..end] };
        let head = self.parse_head(head_bytes)?;
        self.wire_len += end as u64;
        let framing = match &head {
            Head::Request(r) => {
                if r.chunked {
                    Some(Framing::Chunked(Chunk::Size { value: 0, digits: 0, ext: false, line: 0 }))
                } else {
                    r.content_length.filter(|&n| n > 0).map(Framing::Length)
                }
            }
            Head::Response(r) => {
                if (100..200).contains(&r.status) && r.status != 101 {
                    // Interim response (100 Continue, 103 Early Hints): not paired, skipped.
                    self.wire_len = 0;
                    return Ok(Progress { consumed, message: None });
                }
                if head_request || r.status == 101 || r.status == 204 || r.status == 304 {
                    None
                } else if r.chunked {
                    Some(Framing::Chunked(Chunk::Size { value: 0, digits: 0, ext: false, line: 0 }))
                } else {
                    Some(r.content_length.map_or(Framing::UntilClose, Framing::Length))
                        .filter(|f| !matches!(f, Framing::Length(0)))
                }
            }
        };
        let upgraded = matches!(&head, Head::Response(r) if r.status == 101);
        self.current = Some(head);
        match framing {
            Some(f) => {
                self.state = State::Body(f);
                Ok(Progress { consumed, message: None })
            }
            None => {
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
        }
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

    fn parse_head(&self, bytes: &[u8]) -> Result<Head, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match self.kind {
            Kind::Request => {
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(bytes) {
                    Ok(httparse::Status::Complete(_)) => {}
                    Ok(httparse::Status::Partial) => return Err(HttpError::Truncated),
                    Err(source) => return Err(HttpError::Head { source }),
                }
                let target = req.path.unwrap_or("/");
                let target = strip_authority(target);
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                    None => (target.to_owned(), None),
                };
                let mut head = RequestHead {
                    method: req.method.unwrap_or_default().to_owned(),
                    path,
                    query,
                    version: req.version.unwrap_or(1),
                    ..RequestHead::default()
                };
                let common = common_headers(req.headers)?;
                head.content_length = common.content_length;
                head.chunked = common.chunked;
                if common.other_encoding && !common.chunked {
                    return Err(HttpError::UnsupportedTransferEncoding);
                }
                head.content_type = common.content_type;
                for h in req.headers.iter() {
                    let name = h.name;
                    let slot = if name.eq_ignore_ascii_case("host") {
                        &mut head.host
                    } else if name.eq_ignore_ascii_case("user-agent") {
                        &mut head.user_agent
                    } else if name.eq_ignore_ascii_case("authorization") {
                        &mut head.authorization
                    } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                        append_list(&mut head.x_forwarded_for, h.value);
                        continue;
                    } else if name.eq_ignore_ascii_case("forwarded") {
                        append_list(&mut head.forwarded, h.value);
                        continue;
                    } else if name.eq_ignore_ascii_case("referer") {
                        &mut head.referer
                    } else if name.eq_ignore_ascii_case("cookie") {
                        head.has_cookie = true;
                        continue;
                    } else if self
                        .limits
                        .user_header
                        .as_deref()
                        .is_some_and(|u| name.eq_ignore_ascii_case(u))
                    {
                        &mut head.user_header
                    } else {
                        continue;
                    };
                    if slot.is_none() {
                        *slot = Some(value_string(h.value));
                    }
                }
                Ok(Head::Request(head))
            }
            Kind::Response => {
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(bytes) {
                    Ok(httparse::Status::Complete(_)) => {}
                    Ok(httparse::Status::Partial) => return Err(HttpError::Truncated),
                    Err(source) => return Err(HttpError::Head { source }),
                }
                let common = common_headers(res.headers)?;
                Ok(Head::Response(ResponseHead {
                    status: res.code.unwrap_or_default(),
                    version: res.version.unwrap_or(1),
                    content_type: common.content_type,
                    content_length: common.content_length,
                    chunked: common.chunked,
                }))
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = self.limits.body_cap.saturating_sub(self.body.len());
        self.body.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.body_len += bytes.len() as u64;
    }

    fn complete(&mut self) -> Message {
        self.state = State::Head;
        Message {
            head: self.current.take().unwrap_or(Head::Request(RequestHead::default())),
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
                Ok(Progress { consumed: data.len(), message: None })
            }
            Framing::Length(left) => {
                let take = (left.min(data.len() as u64)) as usize;
                self.keep(&data[..take]);
                self.wire_len += take as u64;
                let left = left - take as u64;
                if left == 0 {
                    Ok(Progress { consumed: take, message: Some(self.complete()) })
                } else {
                    self.state = State::Body(Framing::Length(left));
                    Ok(Progress { consumed: take, message: None })
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
                chunk = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                continue;
            }
            let b = data[i];
            i += 1;
            chunk = match chunk {
                Chunk::Size { value, digits, ext, line } => {
                    if line >= MAX_CHUNK_LINE {
                        return Err(HttpError::BadChunkSize);
                    }
                    let line = line + 1;
                    match b {
                        b'\r' => Chunk::SizeLf { value, digits },
                        b'\n' => size_done(value, digits)?,
                        _ if ext => Chunk::Size { value, digits, ext, line },
                        b';' | b' ' | b'\t' if digits > 0 => Chunk::Size { value, digits, ext: true, line },
                        _ => {
                            let d = (b as char).to_digit(16).ok_or(HttpError::BadChunkSize)?;
                            if digits >= 15 {
                                return Err(HttpError::BadChunkSize);
                            }
                            Chunk::Size { value: value * 16 + u64::from(d), digits: digits + 1, ext, line }
                        }
                    }
                }
                Chunk::SizeLf { value, digits } => {
                    if b != b'\n' {
                        return Err(HttpError::BadChunkSize);
                    }
                    size_done(value, digits)?
                }
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size { value: 0, digits: 0, ext: false, line: 0 },
                    _ => return Err(HttpError::BadChunkTerminator),
                },
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadChunkTerminator);
                    }
                    Chunk::Size { value: 0, digits: 0, ext: false, line: 0 }
                }
                Chunk::Trailer { line, total } => {
                    if total >= self.limits.max_head {
                        return Err(HttpError::TrailerTooLarge { limit: self.limits.max_head });
                    }
                    match b {
                        b'\n' if line == 0 => {
                            self.wire_len += i as u64;
                            return Ok(Progress { consumed: i, message: Some(self.complete()) });
                        }
                        b'\n' => Chunk::Trailer { line: 0, total: total + 1 },
                        b'\r' => Chunk::Trailer { line, total: total + 1 },
                        _ => Chunk::Trailer { line: line + 1, total: total + 1 },
                    }
                }
                Chunk::Data(_) => unreachable!("handled above"),
            };
        }
        self.wire_len += i as u64;
        self.state = State::Body(Framing::Chunked(chunk));
        Ok(Progress { consumed: i, message: None })
    }
}

fn size_done(value: u64, digits: u8) -> Result<Chunk, HttpError> {
    if digits == 0 {
        return Err(HttpError::BadChunkSize);
    }
    Ok(if value == 0 {
        Chunk::Trailer { line: 0, total: 0 }
    } else {
        Chunk::Data(value)
    })
}

/// The "check" step: the index just past the blank line ending a head, searching from `from`, or
/// `None` while the head is incomplete. Leading blank lines are not an end.
fn check_head(buf: &[u8], from: usize) -> Option<usize> {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let mut i = from.max(start);
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Turns an absolute-form target (`http://host/path`) into its path.
fn strip_authority(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &target[scheme.len()..];
            return rest.find(['/', '?']).map_or("/", |i| &rest[i..]);
        }
    }
    target
}

fn value_string(v: &[u8]) -> String {
    let v = &v[..v.len().min(MAX_VALUE)];
    String::from_utf8_lossy(v).trim().to_owned()
}

fn append_list(slot: &mut Option<String>, v: &[u8]) {
    let v = value_string(v);
    match slot {
        Some(s) if s.len() < MAX_VALUE => {
            let _ = write!(s, ", {v}");
        }
        Some(_) => {}
        None => *slot = Some(v),
    }
}

struct Common {
    content_length: Option<u64>,
    content_type: Option<String>,
    chunked: bool,
    other_encoding: bool,
}

fn common_headers(headers: &[httparse::Header<'_>]) -> Result<Common, HttpError> {
    let mut c = Common {
        content_length: None,
        content_type: None,
        chunked: false,
        other_encoding: false,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| HttpError::BadContentLength)?.trim();
            if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadContentLength);
            }
            let n: u64 = v.parse().map_err(|_| HttpError::BadContentLength)?;
            if c.content_length.is_some_and(|old| old != n) {
                return Err(HttpError::ConflictingContentLength);
            }
            c.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value);
            // Only the last coding decides the framing.
            let last = v.rsplit(',').next().unwrap_or("").trim();
            c.chunked = last.eq_ignore_ascii_case("chunked");
            c.other_encoding = !c.chunked;
        } else if h.name.eq_ignore_ascii_case("content-type") && c.content_type.is_none() {
            c.content_type = Some(value_string(h.value));
        }
    }
    Ok(c)
}
