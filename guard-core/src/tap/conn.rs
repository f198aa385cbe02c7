//! One TCP connection to the protected server: both directions' reassembly and HTTP parsers, the
//! FIFO that pairs each request with its response (pipelining keeps the order), and whether the
//! client's address is proven ([`Proof`]).
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::http::{self, Head, Kind, Message, Parser, RequestHead};
use super::identity;
use super::packet::Segment;
use super::reassembly::{self, Stream};
use super::{Evasion, RequestEvent, RequestHeaders, Settings, TapStats, Trust};

/// Which way a segment travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server: requests.
    Up,
    /// Server to client: responses.
    Down,
}

/// Everything a connection reports into.
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub stats: &'a mut TapStats,
    pub out: &'a mut Vec<RequestEvent>,
}

/// A request waiting for its response.
#[derive(Debug)]
struct Pending {
    head: Box<RequestHead>,
    body: Vec<u8>,
    body_len: u64,
    bytes_in: u64,
    start: Duration,
}

/// One direction's HTTP state.
#[derive(Debug)]
struct Side {
    parser: Parser,
    /// False once the direction was found malformed (or abandoned): its bytes are ignored.
    parsing: bool,
    /// Capture time of the segment carrying the first byte of the current message.
    msg_start: Duration,
    messages: u64,
    eof_done: bool,
    /// Picked up inside a message: bytes are skipped until a delivery starts like a message.
    resync: bool,
}

impl Side {
    fn new(kind: Kind, limits: http::Limits) -> Self {
        Self {
            parser: Parser::new(kind, limits),
            parsing: true,
            msg_start: Duration::ZERO,
            messages: 0,
            eof_done: false,
            resync: false,
        }
    }
}

/// The HTTP half of a connection (split from the streams so reassembly can feed it directly).
#[derive(Debug)]
struct Exchange {
    id: u64,
    client: SocketAddr,
    server: SocketAddr,
    up: Side,
    down: Side,
    pending: VecDeque<Pending>,
    /// Bytes held by `pending`: heads (roughly) and body prefixes.
    pending_bytes: usize,
    /// Set when the pipeline bound was passed: the connection is abandoned after this segment.
    overflow: bool,
    /// The request in progress was already reported with an early response: do not queue it
    /// when it completes.
    answered_early: bool,
    /// The flow is verified: its requests count against their client.
    verified: bool,
    /// Evasion signs seen on the flow since its last reported request: given to the next one.
    evasion: Evasion,
}

/// What proves that the client address of a flow is real: the client acknowledged server
/// sequence numbers that only a host receiving the server's segments can know.
///
/// With the handshake seen, the server's initial sequence number (from its SYN-ACK) is known and
/// the client's first segment after it must acknowledge it. Picked up mid-stream, server data
/// that continues in sequence from the client's latest acknowledgement anchors the server's
/// sequence space, and the client must then acknowledge some of that data. An off-path sender
/// with a forged source never sees the server's segments, so it can do neither (short of
/// guessing 32 bits).
#[derive(Debug, Default)]
struct Proof {
    /// The lowest acknowledgement number that proves the client received server segments:
    /// the server's ISN + 1, or the mid-stream anchor + 1. `None` until known.
    acked_from: Option<u32>,
    /// Just past the highest server sequence number seen in sequence from the anchor (SYN and
    /// FIN count one each).
    server_next: u32,
    /// The acknowledgement number of the client's latest segment (mid-stream anchoring).
    last_client_ack: Option<u32>,
}

impl Proof {
    /// Learns from one segment; true when it proves the flow.
    fn on_segment(&mut self, dir: Dir, seg: &Segment<'_>) -> bool {
        let flags = seg.flags;
        match dir {
            Dir::Down => {
                let len = (seg.payload.len() as u32)
                    .wrapping_add(u32::from(flags.syn()))
                    .wrapping_add(u32::from(flags.fin()));
                let end = seg.seq.wrapping_add(len);
                match self.acked_from {
                    None if flags.syn() => {
                        // The SYN-ACK: the server's initial sequence number.
                        self.acked_from = Some(end);
                        self.server_next = end;
                    }
                    None if len > 0 && self.last_client_ack == Some(seg.seq) => {
                        // Mid-stream: server data continuing where the client acknowledged.
                        self.acked_from = Some(seg.seq.wrapping_add(1));
                        self.server_next = end;
                    }
                    // In sequence (at or before the highest byte seen) and reaching further.
                    Some(_)
                        if !after(seg.seq, self.server_next) && after(end, self.server_next) =>
                    {
                        self.server_next = end;
                    }
                    _ => {}
                }
                false
            }
            Dir::Up => {
                if !flags.ack() || flags.syn() {
                    return false;
                }
                self.last_client_ack = Some(seg.ack);
                self.acked_from.is_some_and(|from| {
                    // from <= ack <= server_next, modulo 2^32.
                    seg.ack.wrapping_sub(from) <= self.server_next.wrapping_sub(from)
                })
            }
        }
    }
}

/// `a` comes after `b` in sequence space (RFC 9293 modular comparison).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A tracked connection.
#[derive(Debug)]
pub struct Conn {
    up_stream: Stream,
    down_stream: Stream,
    http: Exchange,
    proof: Proof,
    pub last_seen: Duration,
    /// `held()` as last added to the tap-wide total.
    pub counted_held: usize,
}

/// What became of a connection after a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Open,
    /// Both directions closed (FIN) or reset: remove it.
    Closed,
    /// A bound was passed: remove it.
    Abandoned,
}

impl Conn {
    pub fn new(id: u64, client: SocketAddr, server: SocketAddr, settings: &Settings) -> Self {
        Self {
            up_stream: Stream::default(),
            down_stream: Stream::default(),
            http: Exchange {
                id,
                client,
                server,
                up: Side::new(Kind::Request, settings.http.clone()),
                // Response bodies are not reported: count them, keep nothing.
                down: Side::new(
                    Kind::Response,
                    http::Limits {
                        body_cap: 0,
                        user_header: None,
                        client_header: None,
                        ..settings.http.clone()
                    },
                ),
                pending: VecDeque::new(),
                pending_bytes: 0,
                overflow: false,
                answered_early: false,
                verified: false,
                evasion: Evasion::default(),
            },
            proof: Proof::default(),
            last_seen: Duration::ZERO,
            counted_held: 0,
        }
    }

    /// Drops the out-of-order buffers, returning how many bytes they held.
    pub fn release(&mut self) -> usize {
        self.up_stream.clear() + self.down_stream.clear()
    }

    /// Bytes held outside the out-of-order buffers: partial heads, kept body prefixes, requests
    /// waiting for their response.
    pub fn held(&self) -> usize {
        let h = &self.http;
        h.up.parser.buffered() + h.down.parser.buffered() + h.pending_bytes
    }

    /// True when the client sent data on this flow already (a new SYN then means a new
    /// connection on a reused port).
    pub fn client_sent_data(&self) -> bool {
        self.http.up.messages > 0 || !self.http.up.parser.is_idle() || !self.http.up.parsing
    }

    /// True once the client proved its address (see [`Proof`]).
    pub fn verified(&self) -> bool {
        self.http.verified
    }

    /// A first fragment of a client segment of this flow (not reassembled): marks the next
    /// request.
    pub fn on_fragment(&mut self) {
        self.http.evasion.fragments = self.http.evasion.fragments.saturating_add(1);
    }

    /// Feeds one segment of this connection.
    pub fn on_segment(
        &mut self,
        dir: Dir,
        seg: &Segment<'_>,
        total: &mut usize,
        ctx: &mut Ctx<'_>,
    ) -> After {
        let (ts, seq, flags, payload) = (seg.ts, seg.seq, seg.flags, seg.payload);
        if flags.rst()
            && dir == Dir::Up
            && !self
                .up_stream
                .accepts_reset(seq, reset_window(ctx.settings.limits.max_flow_buffer))
        {
            // A blind reset (RFC 5961): an off-path sender does not know where the stream is.
            // Ignored whole, so it cannot even refresh the flow. (Server segments are the host's
            // own: the socket filter keeps only outgoing ones.)
            ctx.stats.resets_out_of_window += 1;
            return After::Open;
        }
        self.last_seen = ts;
        if !self.http.verified && self.proof.on_segment(dir, seg) {
            self.http.verified = true;
        }
        if flags.rst() {
            ctx.stats.resets += 1;
            return After::Closed;
        }
        let stream = match dir {
            Dir::Up => &mut self.up_stream,
            Dir::Down => &mut self.down_stream,
        };
        let http = &mut self.http;
        if flags.syn() {
            stream.on_syn(seq);
        }
        if payload.is_empty() && !flags.fin() {
            return After::Open;
        }
        let seq = if flags.syn() {
            seq.wrapping_add(1)
        } else {
            seq
        };
        let limits = ctx.settings.limits;
        // Data before any SYN: this segment starts a mid-stream pickup.
        let midstream = stream.midstream || !stream.started();
        if !stream.started() && !payload.is_empty() {
            ctx.stats.midstream_pickups += 1;
        }
        let pushed = {
            let mut sink = |data: &[u8]| {
                http.on_data(dir, ts, data, midstream, ctx);
            };
            stream.push(seq, payload, flags.fin(), limits, total, &mut sink)
        };
        match pushed {
            Ok(o) => {
                if o.conflicting > 0 && dir == Dir::Up {
                    ctx.stats.overlap_conflicts += 1;
                    self.http.evasion.overlap_conflict = true;
                }
                ctx.stats.duplicate_bytes += o.duplicate as u64;
                ctx.stats.bytes_delivered += o.delivered as u64;
            }
            Err(reassembly::ReassemblyError::FlowBufferFull { .. }) => {
                ctx.stats.ooo_flow_overflow += 1;
                return After::Abandoned;
            }
            Err(reassembly::ReassemblyError::TotalBufferFull { .. }) => {
                ctx.stats.ooo_total_overflow += 1;
                return After::Abandoned;
            }
        }
        if self.http.overflow {
            ctx.stats.pipeline_overflow += 1;
            return After::Abandoned;
        }
        if stream.finished() {
            self.http.on_eof(dir, ts, ctx);
        }
        if self.up_stream.finished() && self.down_stream.finished() {
            After::Closed
        } else {
            After::Open
        }
    }

    /// Reports every request still waiting for a response, without one.
    pub fn flush(&mut self, ctx: &mut Ctx<'_>) {
        self.http.pending_bytes = 0;
        while let Some(p) = self.http.pending.pop_front() {
            ctx.stats.unpaired_requests += 1;
            self.http.report(p, None, ctx);
        }
    }
}

impl Exchange {
    fn side(&mut self, dir: Dir) -> &mut Side {
        match dir {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }

    fn on_data(&mut self, dir: Dir, ts: Duration, data: &[u8], midstream: bool, ctx: &mut Ctx<'_>) {
        if self.side(dir).resync {
            if !looks_like_start(dir, data) {
                return;
            }
            self.side(dir).resync = false;
            ctx.stats.http_resync += 1;
            if dir == Dir::Down {
                // Responses to the requests before the last one were missed.
                while self.pending.len() > 1 {
                    if let Some(p) = self.pending.pop_front() {
                        self.pending_bytes = self
                            .pending_bytes
                            .saturating_sub(pending_size(&p.head, &p.body));
                        ctx.stats.unpaired_requests += 1;
                        self.report(p, None, ctx);
                    }
                }
            }
        }
        let mut rest = data;
        while !rest.is_empty() && self.side(dir).parsing && !self.overflow {
            let head_request = dir == Dir::Down
                && self
                    .pending
                    .front()
                    .is_some_and(|p| p.head.method.eq_ignore_ascii_case("HEAD"));
            let side = self.side(dir);
            if side.parser.is_idle() {
                side.msg_start = ts;
            }
            let Ok(progress) = side.parser.advance(rest, head_request) else {
                if midstream && side.messages == 0 {
                    // Picked up inside a message: not the client's fault. Wait for the next one.
                    ctx.stats.http_desync += 1;
                    side.parser.reset();
                    side.resync = true;
                } else {
                    ctx.stats.http_malformed += 1;
                    side.parsing = false;
                }
                break;
            };
            rest = &rest[progress.consumed..];
            if let Some(m) = progress.message {
                self.on_message(dir, m, ctx);
            } else if progress.consumed == 0 {
                break;
            }
        }
    }

    fn on_eof(&mut self, dir: Dir, _ts: Duration, ctx: &mut Ctx<'_>) {
        let side = self.side(dir);
        if side.eof_done {
            return;
        }
        side.eof_done = true;
        if !side.parsing {
            return;
        }
        match side.parser.finish() {
            Ok(Some(m)) => self.on_message(dir, m, ctx),
            Ok(None) => {}
            Err(_) => ctx.stats.http_truncated += 1,
        }
    }

    fn on_message(&mut self, dir: Dir, m: Message, ctx: &mut Ctx<'_>) {
        let side = self.side(dir);
        side.messages += 1;
        let start = side.msg_start;
        match (dir, m.head) {
            (Dir::Up, Head::Request(head)) => {
                ctx.stats.requests += 1;
                if head.too_many_headers {
                    ctx.stats.too_many_headers += 1;
                }
                if std::mem::take(&mut self.answered_early) {
                    return;
                }
                if self.pending.len() >= ctx.settings.max_pipelined {
                    self.overflow = true;
                    return;
                }
                self.pending_bytes += pending_size(&head, &m.body);
                self.pending.push_back(Pending {
                    head,
                    body: m.body,
                    body_len: m.body_len,
                    bytes_in: m.wire_len,
                    start,
                });
            }
            (Dir::Down, Head::Response(head)) => {
                ctx.stats.responses += 1;
                if m.upgraded {
                    self.up.parser.set_opaque();
                    ctx.stats.upgrades += 1;
                }
                let p = if let Some(p) = self.pending.pop_front() {
                    self.pending_bytes = self
                        .pending_bytes
                        .saturating_sub(pending_size(&p.head, &p.body));
                    p
                } else if let Some(early) = self.early_request() {
                    ctx.stats.early_responses += 1;
                    early
                } else {
                    ctx.stats.unpaired_responses += 1;
                    return;
                };
                let response = Response {
                    status: head.status,
                    latency: start.saturating_sub(p.start),
                    bytes_out: m.wire_len,
                    content_type: head.content_type,
                };
                ctx.stats.paired += 1;
                self.report(p, Some(response), ctx);
            }
            _ => unreachable!("each parser yields its own kind of head"),
        }
    }

    /// The request still being received, when a response arrives before its end.
    fn early_request(&mut self) -> Option<Pending> {
        if !self.up.parsing || self.answered_early {
            return None;
        }
        let m = self.up.parser.in_progress()?;
        let Head::Request(head) = m.head else {
            return None;
        };
        self.answered_early = true;
        Some(Pending {
            head,
            body: m.body,
            body_len: m.body_len,
            bytes_in: m.wire_len,
            start: self.up.msg_start,
        })
    }

    /// Reports one request (with its response, if any), counting how far it is believed, with
    /// the flow's evasion signs seen since the last report.
    fn report(&mut self, p: Pending, response: Option<Response>, ctx: &mut Ctx<'_>) {
        let mut event = self.event(p, response, ctx.settings);
        event
            .headers
            .evasion
            .merge(std::mem::take(&mut self.evasion));
        match event.trust {
            Trust::Verified => {}
            Trust::Unverified => ctx.stats.unverified_requests += 1,
            Trust::NoClient => ctx.stats.no_client_requests += 1,
        }
        ctx.out.push(event);
    }

    fn event(&self, p: Pending, response: Option<Response>, settings: &Settings) -> RequestEvent {
        let peer = self.client.ip();
        let h = *p.head;
        let named = identity::client_of(peer, h.forward_chain.as_ref(), &settings.trusted_proxies);
        let trust = match named {
            _ if !self.verified => Trust::Unverified,
            Some(_) => Trust::Verified,
            None => Trust::NoClient,
        };
        let client = named.unwrap_or_else(|| unspecified(peer));
        let peer_trusted = settings.trusted_proxies.iter().any(|c| c.contains(peer));
        let user = identity::user_id_at(
            h.user_header.as_deref(),
            peer_trusted,
            h.authorization.as_deref(),
            &settings.jwt,
            p.start.as_secs(),
        );
        let (status, latency, bytes_out, response_content_type) = match response {
            Some(r) => (Some(r.status), Some(r.latency), r.bytes_out, r.content_type),
            None => (None, None, 0, None),
        };
        RequestEvent {
            conn_id: self.id,
            ts: p.start,
            client,
            trust,
            peer: self.client,
            server: self.server,
            user,
            method: h.method,
            path: h.path,
            query: h.query,
            http_minor: h.version,
            headers: RequestHeaders {
                host: h.host,
                user_agent: h.user_agent,
                content_type: h.content_type,
                content_length: h.content_length,
                chunked: h.chunked,
                has_authorization: h.authorization.is_some(),
                has_cookie: h.has_cookie,
                x_forwarded_for: h.x_forwarded_for,
                forwarded: h.forwarded,
                referer: h.referer,
                evasion: Evasion {
                    too_many_headers: h.too_many_headers,
                    ..Evasion::default()
                },
            },
            all_headers: h.all,
            body: p.body,
            body_len: p.body_len,
            status,
            latency,
            bytes_in: p.bytes_in,
            bytes_out,
            response_content_type,
        }
    }
}

/// How far past the next expected byte a client reset may point and still close the flow: the
/// bytes the tap would buffer ahead of a hole, at least 64 KiB (a client's unacknowledged data in
/// flight when it resets).
fn reset_window(max_flow_buffer: usize) -> u32 {
    u32::try_from(max_flow_buffer)
        .unwrap_or(u32::MAX)
        .max(u32::from(u16::MAX))
}

/// The unspecified address of `ip`'s family: "nobody".
fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// True when `data` (the start of a delivery) looks like the start of a message of `dir`:
/// `HTTP/1.` for a response, an upper-case method and a space for a request.
fn looks_like_start(dir: Dir, data: &[u8]) -> bool {
    match dir {
        Dir::Down => data.starts_with(b"HTTP/1."),
        Dir::Up => {
            let n = data
                .iter()
                .take(11)
                .take_while(|b| b.is_ascii_uppercase())
                .count();
            (3..=10).contains(&n) && data.get(n) == Some(&b' ')
        }
    }
}

/// What a waiting request holds, roughly: its strings and its body prefix.
fn pending_size(h: &RequestHead, body: &[u8]) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    h.method.len()
        + h.path.len()
        + opt(&h.query)
        + opt(&h.host)
        + opt(&h.user_agent)
        + opt(&h.content_type)
        + opt(&h.authorization)
        + opt(&h.x_forwarded_for)
        + opt(&h.forwarded)
        + opt(&h.referer)
        + opt(&h.user_header)
        + h.forward_chain
            .as_ref()
            .map_or(0, |c| size_of_val(c.hops()))
        + h.all.size()
        + body.len()
}

struct Response {
    status: u16,
    latency: Duration,
    bytes_out: u64,
    content_type: Option<String>,
}
