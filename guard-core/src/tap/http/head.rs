//! Message heads: the "check" step that finds where a head ends (or says it is incomplete), and
//! the parse of a complete head with `httparse` into the fields guard uses.
use std::fmt::Write as _;

use super::{HttpError, Kind, Limits};
use crate::tap::identity::ForwardChain;

/// Headers parsed on the fast path (a stack array); a head with more is parsed again whole (the
/// head itself is bounded by `max_head`) and, for a request, marked
/// ([`RequestHead::too_many_headers`]) so the judge can hold it against the client.
pub(crate) const MAX_HEADERS: usize = 96;
/// Header values kept longer than this are cut (they only feed logs and scoring).
const MAX_VALUE: usize = 4096;

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
    /// The configured forwarding header, parsed whole (its display copies above are cut), when
    /// trusted proxies are configured and the request carries it.
    pub forward_chain: Option<ForwardChain>,
    /// Every header as sent, for the validator (never logged).
    pub all: HeaderList,
    /// More header lines than [`MAX_HEADERS`]: parsed whole, but an evasion sign.
    pub too_many_headers: bool,
}

/// All headers of a request in one buffer: names and values (cut at `MAX_VALUE`), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    text: String,
    /// (start, name length, value length) in `text`.
    spans: Vec<(u32, u32, u32)>,
}

impl HeaderList {
    fn with_capacity(bytes: usize, headers: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(headers),
        }
    }

    /// Appends a header (the value is decoded lossily and trimmed).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let value = String::from_utf8_lossy(&value[..value.len().min(MAX_VALUE)]);
        let value = value.trim();
        let start = self.text.len() as u32;
        self.text.push_str(name);
        self.text.push_str(value);
        self.spans
            .push((start, name.len() as u32, value.len() as u32));
    }

    /// (name, value) pairs in the order they were sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|&(start, name, value)| {
            let (s, n, v) = (start as usize, name as usize, value as usize);
            (&self.text[s..s + n], &self.text[s + n..s + n + v])
        })
    }

    /// Number of headers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True without headers.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes held.
    #[must_use]
    pub fn size(&self) -> usize {
        self.text.len() + self.spans.len() * 12
    }
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
    /// Boxed: a request head is large and moves from parser to queue to event.
    Request(Box<RequestHead>),
    Response(ResponseHead),
}

pub(super) fn parse_head(kind: Kind, limits: &Limits, bytes: &[u8]) -> Result<Head, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse_with(kind, limits, bytes, &mut headers) {
        Err(HttpError::Head {
            source: httparse::Error::TooManyHeaders,
        }) => {
            // The shortest header line ("a:" and a line feed) is three bytes.
            let mut many = vec![httparse::EMPTY_HEADER; bytes.len() / 3 + 1];
            let mut head = parse_with(kind, limits, bytes, &mut many)?;
            if let Head::Request(r) = &mut head {
                r.too_many_headers = true;
            }
            Ok(head)
        }
        other => other,
    }
}

fn parse_with<'b>(
    kind: Kind,
    limits: &Limits,
    bytes: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Head, HttpError> {
    match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(headers);
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
            head.all = HeaderList::with_capacity(bytes.len(), req.headers.len());
            for h in req.headers.iter() {
                head.all.push(h.name, h.value);
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
                } else if limits
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
            if let Some(which) = limits.client_header {
                let name = which.name();
                let lines = req
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value);
                if lines.clone().next().is_some() {
                    head.forward_chain = Some(ForwardChain::parse(which, lines));
                }
            }
            Ok(Head::Request(Box::new(head)))
        }
        Kind::Response => {
            let mut res = httparse::Response::new(headers);
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

/// The "check" step: the index just past the blank line ending a head, searching from `from`, or
/// `None` while the head is incomplete. Leading blank lines are not an end.
pub(super) fn check_head(buf: &[u8], from: usize) -> Option<usize> {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let mut i = from.max(start);
    while let Some(at) = find_lf(&buf[i..]) {
        i += at;
        if buf.get(i + 1) == Some(&b'\n') {
            return Some(i + 2);
        }
        if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
            return Some(i + 3);
        }
        i += 1;
    }
    None
}

/// Index of the first `\n`, eight bytes at a time (a head is scanned once per delivery).
fn find_lf(buf: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = LO * b'\n' as u64;
    let mut chunks = buf.chunks_exact(8);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ LF;
        // A zero byte in `x` is a `\n` in the chunk (the classic has-zero-byte test).
        if x.wrapping_sub(LO) & !x & HI != 0 {
            return chunk.iter().position(|&b| b == b'\n').map(|p| base + p);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| base + p)
}

/// Turns an absolute-form target (`http://host/path`) into its path.
fn strip_authority(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        // `get`: the target may hold UTF-8, and byte 7 or 8 need not be a character boundary.
        if target
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        {
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
            let v = std::str::from_utf8(h.value)
                .map_err(|_| HttpError::BadContentLength)?
                .trim();
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
