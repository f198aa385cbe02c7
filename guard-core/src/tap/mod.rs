//! HTTP at the socket hook, userspace side: raw packets in, one [`RequestEvent`] per
//! request/response exchange out.
//!
//! The capture (`AF_PACKET` + the `http_tap` socket filter) hands every packet to
//! [`Tap::on_packet`] (starting at the IP header) or [`Tap::on_frame`] (at Ethernet) with its
//! capture time. The tap parses the headers ([`packet`]), reassembles each direction of each
//! connection ([`reassembly`]), parses HTTP/1.x ([`http`]) and pairs requests with responses
//! (`conn`), naming the client and user ([`identity`]). It is pure and synchronous: the clock comes
//! in with the packets and [`Tap::on_tick`]; every bound comes from [`TapConfig`] and every
//! overflow is a counter in [`TapStats`].
//!
//! What the tap sees can be forged: a source address costs nothing off-path. So every event
//! says how far it can be believed ([`Trust`]): only a request on a *verified* flow — the client
//! acknowledged the server's initial sequence number, which an off-path sender never sees, or,
//! for a flow picked up mid-stream, acknowledged server data that continued from its own
//! acknowledgements — with a client the forwarding chain names, may count against that client.
//! The flow table favours verified flows: an unverified flow never evicts one. The `http_tap`
//! socket filter guarantees the direction (client segments come in, server segments go out), so
//! a forged "server" segment never reaches [`Tap::on_segment`] in the daemon.
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub mod config;
mod conn;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod packet;
pub mod pem;
pub mod reassembly;
pub mod synth;

#[cfg(test)]
mod tests;

pub use config::{ClientHeader, TapConfig};
pub use identity::{UserId, UserSource};
pub use packet::{PacketError, Segment, TcpFlags};

use crate::net::Net;
use conn::{After, Conn, Ctx, Dir};

/// Headers of a request that guard's checks use.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestHeaders {
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub has_authorization: bool,
    pub has_cookie: bool,
    /// Display copies, cut at 4 KiB: the client address comes from the configured header parsed
    /// whole (`identity::ForwardChain`), never from these.
    pub x_forwarded_for: Option<String>,
    pub forwarded: Option<String>,
    pub referer: Option<String>,
    /// Signs that the request was shaped to be read one way by guard and another by the server.
    /// (Kept with the headers so that events built elsewhere need not name it.)
    #[serde(skip_serializing_if = "Evasion::is_empty")]
    pub evasion: Evasion,
}

/// Evasion signs the tap saw on a request or on its flow since the flow's previous request was
/// reported. On a verified flow the judge turns any of them into a protocol finding (a strike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Evasion {
    /// The head had more header lines than the parser's bound (it was still parsed whole).
    pub too_many_headers: bool,
    /// Overlapping client segments carried different bytes for the same sequence numbers (the
    /// tap keeps the first copy; a server may keep another).
    pub overlap_conflict: bool,
    /// Client TCP segments of the flow that came in IP fragments (first fragments counted; they
    /// are not reassembled, so their bytes are missing from the request).
    pub fragments: u32,
}

impl Evasion {
    /// True when no sign was seen.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds the signs of `other`.
    pub fn merge(&mut self, other: Evasion) {
        self.too_many_headers |= other.too_many_headers;
        self.overlap_conflict |= other.overlap_conflict;
        self.fragments = self.fragments.saturating_add(other.fragments);
    }
}

/// How far a request can be held against its client.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// A verified flow, and a client named by the peer itself or by trusted proxies: the request
    /// counts (log, engine, strikes, bans).
    #[default]
    Verified,
    /// The flow was not verified (no handshake acknowledged, no in-sequence exchange yet): its
    /// source address may be forged. Logged only.
    Unverified,
    /// The peer is a trusted proxy, and its forwarding header names no client that can be
    /// believed (missing, `unknown`, unparsable, or only trusted proxies): `client` is the
    /// unspecified address. Logged only.
    NoClient,
}

impl Trust {
    /// True when the request may count against its client (engine, strikes, bans).
    #[must_use]
    pub fn counts(self) -> bool {
        self == Self::Verified
    }
}

/// One request and, when it came, its response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestEvent {
    /// Connection number, unique for the tap's lifetime.
    pub conn_id: u64,
    /// Capture time of the request's first byte, wall clock since the Unix epoch.
    pub ts: Duration,
    /// The client: the peer, or the forwarded-for address when the peer is a trusted proxy (the
    /// unspecified address when [`Trust::NoClient`]).
    pub client: IpAddr,
    /// Whether the request may count against `client`: judge only [`Trust::Verified`] ones.
    pub trust: Trust,
    /// The TCP peer (client side of the connection).
    pub peer: SocketAddr,
    /// The protected server's address.
    pub server: SocketAddr,
    pub user: Option<UserId>,
    pub method: String,
    /// Request target path, raw (not percent-decoded), without the query.
    pub path: String,
    /// Raw query string, without the `?`.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub http_minor: u8,
    pub headers: RequestHeaders,
    /// Every request header as sent, for the validator. Never logged: it holds credentials
    /// and cookies.
    #[serde(skip)]
    pub all_headers: http::HeaderList,
    /// The first `body_inspect_cap` bytes of the (de-chunked) request body.
    pub body: Vec<u8>,
    /// Full request body length.
    pub body_len: u64,
    /// Response status; `None` when the connection ended (reset, timeout, bound) before it.
    pub status: Option<u16>,
    /// First request byte to first response byte.
    pub latency: Option<Duration>,
    /// Request bytes on the wire (head + body + chunk framing).
    pub bytes_in: u64,
    /// Response bytes on the wire.
    pub bytes_out: u64,
    pub response_content_type: Option<String>,
}

/// Counters of everything the tap saw, dropped or bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TapStats {
    pub packets: u64,
    /// Broken packets (truncated headers, bad lengths).
    pub malformed_packets: u64,
    /// IP fragments, skipped (not reassembled).
    pub fragments: u64,
    /// First fragments of client segments on a tracked flow (counted against the flow: its next
    /// request is marked, see [`Evasion::fragments`]).
    pub flow_fragments: u64,
    /// Well-formed packets that are not TCP, or TCP on other ports.
    pub ignored_packets: u64,
    /// Connections being tracked now.
    pub flows_open: u64,
    pub flows_created: u64,
    pub flows_closed: u64,
    /// Unverified flows (least recently seen first) evicted to make room when `max_flows` was
    /// reached.
    pub flows_evicted: u64,
    /// New flows not tracked because every tracked flow was verified.
    pub flows_refused: u64,
    /// New flows not tracked because their source already had `max_flows_per_source`.
    pub flows_source_capped: u64,
    /// Flows that became verified (handshake acknowledged, or an in-sequence exchange).
    pub flows_verified: u64,
    /// Requests reported from flows never verified (logged, not judged).
    pub unverified_requests: u64,
    /// Requests from a trusted proxy whose forwarding header named no believable client.
    pub no_client_requests: u64,
    /// Segments without ACK (and without SYN or RST): the server's stack discards them, so the
    /// tap does too.
    pub no_ack_segments: u64,
    pub flows_timed_out: u64,
    pub resets: u64,
    /// Client resets ignored because their sequence number was outside the window the tap
    /// expects (RFC 5961: a blind reset must not close a flow).
    pub resets_out_of_window: u64,
    /// Client segments that overlapped buffered bytes of their flow with different bytes.
    pub overlap_conflicts: u64,
    /// Directions picked up without their SYN.
    pub midstream_pickups: u64,
    /// Flows abandoned because a direction passed `max_flow_buffer`.
    pub ooo_flow_overflow: u64,
    /// Flows abandoned because all flows together passed `max_total_buffer`.
    pub ooo_total_overflow: u64,
    /// Out-of-order bytes held now.
    pub ooo_buffered: u64,
    /// Partial heads, kept body prefixes and waiting requests held now.
    pub held_bytes: u64,
    /// Flows abandoned because out-of-order plus held bytes of all flows passed
    /// `max_total_buffer`.
    pub held_overflow: u64,
    pub bytes_delivered: u64,
    /// Retransmitted or overlapping bytes dropped (first copy wins).
    pub duplicate_bytes: u64,
    /// Directions that stopped being parsed on bad HTTP.
    pub http_malformed: u64,
    /// Request heads with more header lines than the parser's bound (parsed whole and marked).
    pub too_many_headers: u64,
    /// Mid-stream pickups that started inside a message (not counted as malformed).
    pub http_desync: u64,
    /// Desynchronised directions that found the start of a message again.
    pub http_resync: u64,
    /// Connections closed in the middle of a message.
    pub http_truncated: u64,
    pub requests: u64,
    pub responses: u64,
    pub paired: u64,
    /// Requests reported without a response.
    pub unpaired_requests: u64,
    /// Responses with no request waiting (mid-stream pickups, malformed requests).
    pub unpaired_responses: u64,
    /// Responses that came before their request ended (e.g. 413 to an upload): reported with
    /// the request as received so far.
    pub early_responses: u64,
    pub upgrades: u64,
    /// Connections abandoned because more than `max_pipelined` requests waited.
    pub pipeline_overflow: u64,
}

/// The config turned into what the per-packet path needs.
#[derive(Debug)]
struct Settings {
    http_ports: Vec<u16>,
    max_flows: usize,
    idle_timeout: Duration,
    max_pipelined: usize,
    limits: reassembly::Limits,
    max_total_buffer: usize,
    http: http::Limits,
    max_flows_per_source: usize,
    trusted_proxies: Vec<Net>,
    /// The keys bearer JWTs are verified with (HS256 from the config; RS256/ES256 added by
    /// [`Tap::set_jwt_public_keys`]).
    jwt: jwt::JwtKeys,
}

/// A connection: (client, server). Hashed as one byte string, so the keyed (`HashDoS`-safe)
/// default hasher runs once per lookup instead of once per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    client: SocketAddr,
    server: SocketAddr,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        fn put(buf: &mut [u8], a: SocketAddr) {
            match a.ip() {
                IpAddr::V4(ip) => buf[..4].copy_from_slice(&ip.octets()),
                IpAddr::V6(ip) => buf[..16].copy_from_slice(&ip.octets()),
            }
            buf[16..18].copy_from_slice(&a.port().to_be_bytes());
        }
        let mut buf = [0u8; 36];
        put(&mut buf[..18], self.client);
        put(&mut buf[18..], self.server);
        state.write(&buf);
    }
}

/// The tap: flow table, counters and settings.
#[derive(Debug)]
pub struct Tap {
    settings: Settings,
    flows: HashMap<Key, Conn>,
    /// Unverified flows, the eviction candidates, in the order they were queued, each with the
    /// `last_seen` it had then (a CLOCK: a flow seen since is queued again once, an unchanged one
    /// is evicted). Lazy: entries of flows gone or verified are skipped.
    unverified: VecDeque<(Key, Duration)>,
    /// Flows tracked per source address (for `max_flows_per_source`).
    per_source: HashMap<IpAddr, u32>,
    next_id: u64,
    ooo_total: usize,
    /// Sum of every flow's `held()`.
    held_total: usize,
    stats: TapStats,
    /// Sources whose flow became verified since the caller last drained them (see
    /// [`Tap::drain_verified_sources`]); at most [`MAX_VERIFIED_BACKLOG`].
    verified_sources: Vec<IpAddr>,
}

/// Verified sources kept for the caller between two drains; past it they are not recorded.
pub const MAX_VERIFIED_BACKLOG: usize = 4096;

impl Tap {
    /// Verifies bearer JWTs with `keys` from now on (the daemon's: the HS256 secret of the
    /// config and the public keys of `tap.jwt_public_key`) instead of the config's HS256 key
    /// alone.
    pub fn set_jwt_keys(&mut self, keys: jwt::JwtKeys) {
        self.settings.jwt = keys;
    }

    /// Changes the protected HTTP ports at run time; flows already tracked continue.
    pub fn set_http_ports(&mut self, ports: &[u16]) {
        self.settings.http_ports = ports.to_vec();
    }

    #[must_use]
    pub fn new(config: &TapConfig) -> Self {
        let settings = Settings {
            http_ports: config.http_ports.clone(),
            max_flows: config.max_flows.max(1),
            max_flows_per_source: config.max_flows_per_source.max(1),
            idle_timeout: config.idle_timeout,
            max_pipelined: config.max_pipelined.max(1),
            max_total_buffer: config.max_total_buffer,
            limits: reassembly::Limits {
                max_flow_buffer: config.max_flow_buffer,
                max_total_buffer: config.max_total_buffer,
            },
            http: http::Limits {
                max_head: config.max_head_size,
                body_cap: config.body_inspect_cap,
                user_header: config.user_header.as_ref().map(|h| h.to_ascii_lowercase()),
                // Forwarding headers mean nothing without a proxy to believe.
                client_header: (!config.trusted_proxies.is_empty()).then_some(config.client_header),
            },
            trusted_proxies: config.trusted_proxies.clone(),
            jwt: jwt::JwtKeys::new(config.jwt_hs256_key.as_ref().map(String::as_bytes), None),
        };
        Self {
            settings,
            flows: HashMap::new(),
            unverified: VecDeque::new(),
            per_source: HashMap::new(),
            next_id: 0,
            ooo_total: 0,
            held_total: 0,
            stats: TapStats::default(),
            verified_sources: Vec::new(),
        }
    }

    /// The source addresses of the flows that became verified (their handshake, or an
    /// in-sequence exchange, was seen) since the last call: addresses proven to be really
    /// talking, for callers that must not act on a forged source (the rate limiter's bans).
    pub fn drain_verified_sources(&mut self) -> std::vec::Drain<'_, IpAddr> {
        self.verified_sources.drain(..)
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> &TapStats {
        &self.stats
    }

    /// A packet starting at the IP header, captured at `ts` (wall clock since the Unix epoch).
    /// Finished exchanges are pushed to `out`.
    pub fn on_packet(&mut self, ts: Duration, packet: &[u8], out: &mut Vec<RequestEvent>) {
        self.stats.packets += 1;
        match packet::parse_ip(ts, packet) {
            Ok(seg) => self.on_segment(&seg, out),
            Err(e) => self.count_error(&e),
        }
    }

    /// A frame starting at the Ethernet header.
    pub fn on_frame(&mut self, ts: Duration, frame: &[u8], out: &mut Vec<RequestEvent>) {
        self.stats.packets += 1;
        match packet::parse_ethernet(ts, frame) {
            Ok(seg) => self.on_segment(&seg, out),
            Err(e) => self.count_error(&e),
        }
    }

    fn count_error(&mut self, e: &PacketError) {
        match e {
            PacketError::Fragment { flow } => {
                self.stats.fragments += 1;
                // A first fragment of a client segment: counted against its flow.
                if let Some((src, dst)) = *flow
                    && self.settings.http_ports.contains(&dst.port())
                    && let Some(conn) = self.flows.get_mut(&Key {
                        client: src,
                        server: dst,
                    })
                {
                    conn.on_fragment();
                    self.stats.flow_fragments += 1;
                }
            }
            e if e.is_malformed() => self.stats.malformed_packets += 1,
            _ => self.stats.ignored_packets += 1,
        }
    }

    /// An already parsed segment.
    pub fn on_segment(&mut self, seg: &Segment<'_>, out: &mut Vec<RequestEvent>) {
        let ports = &self.settings.http_ports;
        let (key, dir) = if ports.contains(&seg.dst.port()) {
            (
                Key {
                    client: seg.src,
                    server: seg.dst,
                },
                Dir::Up,
            )
        } else if ports.contains(&seg.src.port()) {
            (
                Key {
                    client: seg.dst,
                    server: seg.src,
                },
                Dir::Down,
            )
        } else {
            self.stats.ignored_packets += 1;
            return;
        };
        if dir == Dir::Up
            && seg.flags.syn()
            && !seg.flags.ack()
            && self.flows.get(&key).is_some_and(Conn::client_sent_data)
        {
            // A new connection on a reused client port: the old one is over.
            self.remove(&key, out);
            self.stats.flows_closed += 1;
        }
        if !seg.flags.ack() && !seg.flags.syn() && !seg.flags.rst() {
            // Every segment after the SYN carries ACK; the server's stack drops one without it
            // (RFC 9293 3.10.7.4), so what it carries was never received.
            self.stats.no_ack_segments += 1;
            return;
        }
        if !self.flows.contains_key(&key) && !self.open(key, seg, out) {
            return;
        }
        let Some(conn) = self.flows.get_mut(&key) else {
            return;
        };
        let mut ctx = Ctx {
            settings: &self.settings,
            stats: &mut self.stats,
            out,
        };
        let was_verified = conn.verified();
        let after = conn.on_segment(dir, seg, &mut self.ooo_total, &mut ctx);
        if !was_verified && conn.verified() {
            self.stats.flows_verified += 1;
            if self.verified_sources.len() < MAX_VERIFIED_BACKLOG {
                self.verified_sources.push(key.client.ip());
            }
        }
        let held = conn.held();
        self.held_total = self.held_total - conn.counted_held + held;
        conn.counted_held = held;
        let after = if after == After::Open
            && self.ooo_total + self.held_total > self.settings.max_total_buffer
        {
            self.stats.held_overflow += 1;
            After::Abandoned
        } else {
            after
        };
        if after != After::Open {
            self.remove(&key, out);
            if after == After::Closed {
                self.stats.flows_closed += 1;
            }
        }
        self.stats.flows_open = self.flows.len() as u64;
        self.stats.ooo_buffered = self.ooo_total as u64;
        self.stats.held_bytes = self.held_total as u64;
    }

    /// Closes connections idle for `idle_timeout` at `now`.
    pub fn on_tick(&mut self, now: Duration, out: &mut Vec<RequestEvent>) {
        let timeout = self.settings.idle_timeout;
        let idle: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_seen) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.remove(&key, out);
            self.stats.flows_timed_out += 1;
        }
        if self.unverified.len() > 2 * self.settings.max_flows {
            let flows = &self.flows;
            self.unverified
                .retain(|(k, _)| flows.get(k).is_some_and(|c| !c.verified()));
        }
        self.stats.flows_open = self.flows.len() as u64;
        self.stats.ooo_buffered = self.ooo_total as u64;
    }

    /// Closes every connection (shutdown), reporting requests still waiting.
    pub fn flush(&mut self, out: &mut Vec<RequestEvent>) {
        let keys: Vec<Key> = self.flows.keys().copied().collect();
        for key in keys {
            self.remove(&key, out);
        }
        self.unverified.clear();
        self.per_source.clear();
        self.stats.flows_open = 0;
    }

    fn remove(&mut self, key: &Key, out: &mut Vec<RequestEvent>) {
        if let Some(mut conn) = self.flows.remove(key) {
            let source = key.client.ip();
            if let Some(n) = self.per_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&source);
                }
            }
            self.ooo_total = self.ooo_total.saturating_sub(conn.release());
            self.held_total = self.held_total.saturating_sub(conn.counted_held);
            let mut ctx = Ctx {
                settings: &self.settings,
                stats: &mut self.stats,
                out,
            };
            conn.flush(&mut ctx);
        }
        self.stats.ooo_buffered = self.ooo_total as u64;
        self.stats.held_bytes = self.held_total as u64;
    }

    /// Starts tracking `key` for `seg`, if it may open a flow and there is room. False when the
    /// segment is dropped.
    fn open(&mut self, key: Key, seg: &Segment<'_>, out: &mut Vec<RequestEvent>) -> bool {
        // Only a SYN or data opens a flow; a stray ACK, FIN or RST does not.
        if seg.flags.rst() || (!seg.flags.syn() && seg.payload.is_empty()) {
            self.stats.ignored_packets += 1;
            return false;
        }
        let source = key.client.ip();
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if held as usize >= self.settings.max_flows_per_source
            && !identity::trusted(source, &self.settings.trusted_proxies)
        {
            self.stats.flows_source_capped += 1;
            return false;
        }
        if !self.make_room(out) {
            self.stats.flows_refused += 1;
            return false;
        }
        self.next_id += 1;
        let conn = Conn::new(self.next_id, key.client, key.server, &self.settings);
        self.flows.insert(key, conn);
        *self.per_source.entry(source).or_default() += 1;
        self.unverified.push_back((key, seg.ts));
        self.stats.flows_created += 1;
        true
    }

    /// Makes room for one more flow: evicts the least recently seen unverified flow. False when
    /// every tracked flow is verified (the new flow is refused: an unverified flow never evicts
    /// a verified one).
    fn make_room(&mut self, out: &mut Vec<RequestEvent>) -> bool {
        if self.flows.len() < self.settings.max_flows {
            return true;
        }
        // Each flow seen since it was queued gets one more turn; after a full round of those,
        // the next candidate goes whatever its age (the loop always ends).
        let mut second_chances = self.unverified.len();
        while let Some((key, stamp)) = self.unverified.pop_front() {
            let Some(conn) = self.flows.get(&key) else {
                continue;
            };
            if conn.verified() {
                continue;
            }
            if conn.last_seen > stamp && second_chances > 0 {
                second_chances -= 1;
                self.unverified.push_back((key, conn.last_seen));
                continue;
            }
            self.remove(&key, out);
            self.stats.flows_evicted += 1;
            return true;
        }
        false
    }
}
