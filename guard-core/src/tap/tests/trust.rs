//! What the tap believes: flows verified by their acknowledgements (handshake or mid-stream),
//! forged sources left unverified, forwarding headers read whole from the right, and a flow
//! table that a flood of unverified flows cannot take from verified ones.
use super::*;
use crate::tap::identity::{ForwardChain, MAX_HOPS, client_of};
use crate::tap::synth::tcp_packet_ack;

const VICTIM: &str = "192.0.2.77:41000";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn shell() -> &'static [u8] {
    b"GET /shell.php HTTP/1.1\r\nHost: h\r\nUser-Agent: x\r\n\r\n"
}

/// A data segment from `from` to the server with the given acknowledgement number.
fn forged(from: &str, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    tcp_packet_ack(addr(from), addr(SERVER), seq, ack, TcpFlags::PSH, payload)
}

#[test]
fn a_handshake_acknowledged_by_the_client_verifies_the_flow() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(shell(), 1448));
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].trust, Trust::Verified);
    assert!(rig.out[0].trust.counts());
    let s = rig.tap.stats();
    assert_eq!((s.flows_verified, s.unverified_requests), (1, 0));
}

/// The sources of verified flows are handed to the caller once, when the flow becomes
/// verified (for the rate limiter's bans); a forged source never is.
#[test]
fn verified_sources_are_reported_once_and_forged_ones_never() {
    let mut rig = Rig::new(&TapConfig::default());
    rig.feed(&[forged(VICTIM, 1_000, 0x1234_5678, shell())]);
    assert_eq!(rig.tap.drain_verified_sources().count(), 0);
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(shell(), 1448));
    let got: Vec<IpAddr> = rig.tap.drain_verified_sources().collect();
    assert_eq!(got, vec![ip("192.0.2.10")]);
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(
        rig.tap.drain_verified_sources().count(),
        0,
        "reported twice"
    );
}

#[test]
fn forged_data_without_a_handshake_is_reported_unverified() {
    let mut rig = Rig::new(&TapConfig::default());
    // A blind sender: no handshake, whatever acknowledgement number it likes.
    rig.feed(&[forged(VICTIM, 1_000, 0x1234_5678, shell())]);
    // The server's stack has no such connection and resets it.
    let rst = tcp_packet_ack(
        addr(SERVER),
        addr(VICTIM),
        0x1234_5678,
        0,
        TcpFlags::RST,
        &[],
    );
    rig.feed(&[rst]);
    assert_eq!(rig.out.len(), 1);
    let e = &rig.out[0];
    assert_eq!(
        (e.path.as_str(), e.trust),
        ("/shell.php", Trust::Unverified)
    );
    assert_eq!(e.client, ip("192.0.2.77"));
    assert!(!e.trust.counts());
    let s = rig.tap.stats();
    assert_eq!((s.flows_verified, s.unverified_requests), (0, 1));
}

#[test]
fn a_wrong_acknowledgement_after_a_seen_handshake_is_unverified() {
    let mut rig = Rig::new(&TapConfig::default());
    // A forged SYN: the server answers the real owner of the address, the forger guesses.
    let syn = tcp_packet_ack(addr(VICTIM), addr(SERVER), 999, 0, TcpFlags::SYN, &[]);
    let syn_ack = tcp_packet_ack(
        addr(SERVER),
        addr(VICTIM),
        0x7000_0000,
        1_000,
        TcpFlags::SYN | TcpFlags::ACK,
        &[],
    );
    rig.feed(&[syn, syn_ack]);
    // Off by one either way, or far off: none proves anything.
    for (i, ack) in [0x7000_0000u32, 0x7000_0002, 0, 0x8000_0001]
        .into_iter()
        .enumerate()
    {
        let req = format!("GET /{i} HTTP/1.1\r\n\r\n");
        let seq = 1_000 + (i as u32) * req.len() as u32;
        rig.feed(&[forged(VICTIM, seq, ack, req.as_bytes())]);
    }
    rig.tap.flush(&mut rig.out);
    assert_eq!(rig.out.len(), 4);
    assert!(rig.out.iter().all(|e| e.trust == Trust::Unverified));
    assert_eq!(rig.tap.stats().flows_verified, 0);
}

#[test]
fn a_verified_handshake_survives_sequence_wrap_around() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = Conversation::new(addr(CLIENT), addr(SERVER));
    c.server_seq = u32::MAX - 1;
    c.client_seq = u32::MAX;
    rig.feed(&c.handshake());
    rig.feed(&c.request(shell(), 10));
    rig.feed(&c.response(&ok_response("wrapped"), 7));
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].trust, Trust::Verified);
}

#[test]
fn a_midstream_flow_is_verified_by_an_in_sequence_exchange() {
    let mut rig = Rig::new(&TapConfig::default());
    // Picked up after a restart: no handshake seen.
    let mut c = Conversation::new(addr(CLIENT), addr(SERVER));
    rig.feed(&c.request(b"GET /before HTTP/1.1\r\n\r\n", 1448));
    rig.feed(&c.response(&ok_response("a"), 1448));
    // The client's next segment acknowledges the server's data: only the real client has it.
    rig.feed(&c.request(b"GET /after HTTP/1.1\r\n\r\n", 1448));
    rig.feed(&c.response(&ok_response("b"), 1448));
    let seen: Vec<(&str, Trust)> = rig.out.iter().map(|e| (e.path.as_str(), e.trust)).collect();
    assert_eq!(
        seen,
        [("/before", Trust::Unverified), ("/after", Trust::Verified)]
    );
    assert_eq!(rig.tap.stats().flows_verified, 1);
}

#[test]
fn a_midstream_forger_cannot_verify() {
    let mut rig = Rig::new(&TapConfig::default());
    // Forged requests acknowledge a made-up server position; server data elsewhere in its
    // sequence space (another answer, not a continuation) anchors nothing.
    let first = b"GET /a HTTP/1.1\r\n\r\n";
    rig.feed(&[forged(VICTIM, 10, 5_000, first)]);
    let next = 10 + first.len() as u32;
    let resp = ok_response("x");
    rig.feed(&[tcp_packet_ack(
        addr(SERVER),
        addr(VICTIM),
        9_000_000,
        next,
        TcpFlags::PSH,
        &resp,
    )]);
    // The forger guesses that the server continued from its acknowledgement.
    rig.feed(&[forged(
        VICTIM,
        next,
        5_000 + resp.len() as u32,
        b"GET /b HTTP/1.1\r\n\r\n",
    )]);
    rig.tap.flush(&mut rig.out);
    assert_eq!(rig.out.len(), 2);
    assert!(rig.out.iter().all(|e| e.trust == Trust::Unverified));
}

#[test]
fn an_acknowledgement_beyond_what_the_server_sent_proves_nothing() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = Conversation::new(addr(CLIENT), addr(SERVER));
    let hs = c.handshake();
    rig.feed(&hs[..2]);
    // ISN + 1 + 1000: the server never sent those bytes.
    let early = c.server_seq.wrapping_add(1_000);
    rig.feed(&[forged(CLIENT, c.client_seq, early, shell())]);
    rig.tap.flush(&mut rig.out);
    assert_eq!(rig.out[0].trust, Trust::Unverified);
}

#[test]
fn segments_without_ack_open_nothing() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut p = forged(VICTIM, 1, 0, shell());
    // Clear ACK in the TCP flags (IPv4, no options: byte 20 + 13).
    p[33] &= !TcpFlags::ACK;
    rig.feed(&[p]);
    let s = rig.tap.stats();
    assert_eq!((s.no_ack_segments, s.flows_created), (1, 0));
    assert!(rig.out.is_empty());
}

// ---- forwarding headers ----

fn proxied(config: &TapConfig, peer: &str, headers: &str) -> RequestEvent {
    let mut rig = Rig::new(config);
    let mut c = rig.conv(peer);
    let req = format!("GET /x HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
    rig.feed(&c.request(req.as_bytes(), 1448));
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(rig.out.len(), 1, "{headers:.80}");
    rig.out.remove(0)
}

fn behind_proxy() -> TapConfig {
    TapConfig {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..TapConfig::default()
    }
}

#[test]
fn a_padded_forwarded_for_is_read_whole_from_the_right() {
    let config = behind_proxy();
    // The client pads its own X-Forwarded-For past 4 KiB of addresses of its choosing; the
    // proxy appends the address it saw. Only that last hop names the client.
    let padding = "192.0.2.99, ".repeat(400);
    assert!(padding.len() > 4096);
    let e = proxied(
        &config,
        "10.0.0.2:5555",
        &format!("X-Forwarded-For: {padding}203.0.113.50\r\n"),
    );
    assert_eq!((e.client, e.trust), (ip("203.0.113.50"), Trust::Verified));
    // The same with the proxy's hop on a header line of its own.
    let e = proxied(
        &config,
        "10.0.0.2:5556",
        &format!("X-Forwarded-For: {padding}\r\nX-Forwarded-For: 203.0.113.51, 10.0.0.9\r\n"),
    );
    assert_eq!((e.client, e.trust), (ip("203.0.113.51"), Trust::Verified));
}

#[test]
fn an_unknown_or_unparsable_hop_names_no_client() {
    let config = behind_proxy();
    for xff in [
        "203.0.113.5, unknown",
        "203.0.113.5, unknown, 10.1.1.1",
        "203.0.113.5, _hidden",
        "203.0.113.5,,",
        "203.0.113.5, 300.1.1.1",
    ] {
        let e = proxied(
            &config,
            "10.0.0.2:5555",
            &format!("X-Forwarded-For: {xff}\r\n"),
        );
        assert_eq!(
            (e.client, e.trust),
            (ip("0.0.0.0"), Trust::NoClient),
            "{xff}"
        );
    }
    assert_eq!(
        proxied(&config, "10.0.0.2:1", "").trust,
        Trust::NoClient,
        "a trusted proxy without the header is nobody, never the proxy"
    );
    let e = proxied(
        &config,
        "10.0.0.2:2",
        "X-Forwarded-For: 10.3.3.3, 10.2.2.2\r\n",
    );
    assert_eq!(
        (e.client, e.trust),
        (ip("0.0.0.0"), Trust::NoClient),
        "only trusted hops: a trusted proxy is never the client"
    );
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let e = proxied(
        &behind_proxy(),
        "192.0.2.50:5555",
        "X-Forwarded-For: 203.0.113.7\r\n",
    );
    assert_eq!((e.client, e.trust), (ip("192.0.2.50"), Trust::Verified));
}

#[test]
fn only_the_configured_header_is_read() {
    let forwarded = TapConfig {
        client_header: ClientHeader::Forwarded,
        ..behind_proxy()
    };
    let e = proxied(
        &forwarded,
        "10.0.0.2:1",
        "Forwarded: for=192.0.2.1, for=\"[2001:db8::7]:443\";proto=http\r\nX-Forwarded-For: 198.51.100.1\r\n",
    );
    assert_eq!((e.client, e.trust), (ip("2001:db8::7"), Trust::Verified));
    let e = proxied(
        &forwarded,
        "10.0.0.2:2",
        "X-Forwarded-For: 198.51.100.1\r\n",
    );
    assert_eq!(
        e.trust,
        Trust::NoClient,
        "never falls back to X-Forwarded-For"
    );
    let e = proxied(&forwarded, "10.0.0.2:3", "Forwarded: for=unknown\r\n");
    assert_eq!(e.trust, Trust::NoClient);
    let e = proxied(
        &behind_proxy(),
        "10.0.0.2:4",
        "Forwarded: for=198.51.100.2\r\n",
    );
    assert_eq!(e.trust, Trust::NoClient, "never falls back to Forwarded");
}

#[test]
fn forward_chain_walk() {
    let proxies: Vec<crate::net::Net> = vec!["10.0.0.0/8".parse().unwrap()];
    let xff =
        |v: &str| ForwardChain::parse(ClientHeader::XForwardedFor, [v.as_bytes()].into_iter());
    let peer = ip("10.0.0.1");
    let walk = |v: &str| client_of(peer, Some(&xff(v)), &proxies);
    assert_eq!(walk("1.1.1.1, 2.2.2.2"), Some(ip("2.2.2.2")));
    assert_eq!(walk("1.1.1.1, 2.2.2.2:80, 10.0.0.5"), Some(ip("2.2.2.2")));
    assert_eq!(walk("[2001:db8::1]:80, 10.0.0.5"), Some(ip("2001:db8::1")));
    assert_eq!(walk("1.1.1.1, unknown, 10.0.0.5"), None);
    assert_eq!(client_of(peer, None, &proxies), None);
    assert_eq!(
        client_of(ip("192.0.2.1"), Some(&xff("1.1.1.1")), &proxies),
        Some(ip("192.0.2.1"))
    );
    // More trusted hops than are kept: nobody.
    let many = vec!["10.0.0.7"; MAX_HOPS + 1].join(", ");
    assert_eq!(walk(&format!("1.1.1.1, {many}")), None);
    // Not UTF-8.
    let bad = ForwardChain::parse(
        ClientHeader::XForwardedFor,
        [&b"1.1.1.1, \xff"[..]].into_iter(),
    );
    assert_eq!(client_of(peer, Some(&bad), &proxies), None);
}

// ---- the flow table ----

/// One byte of data from a made-up source, as a blind flooder sends it.
fn flood_packet(i: u32, seq: u32) -> Vec<u8> {
    let src = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::from(0x2800_0000 + i)), 1024);
    tcp_packet_ack(src, addr(SERVER), seq, 0, TcpFlags::PSH, b"G")
}

#[test]
fn a_full_scale_flood_of_unverified_flows_does_not_blind_the_tap() {
    let config = TapConfig::default();
    let max = config.max_flows as u32;
    let mut rig = Rig::new(&config);
    // Two real clients mid-request when the flood starts.
    let mut real: Vec<Conversation> = (0..2)
        .map(|i| rig.conv(&format!("192.0.2.1:{}", 1000 + i)))
        .collect();
    for c in &mut real {
        let segs = c.request(b"GET /slow HTTP/1.1\r\n", 1448);
        rig.feed(&segs);
    }
    // 65,536 one-byte flows without a handshake, then the same again two minutes later.
    for round in 0..2u32 {
        for i in 0..max {
            let p = flood_packet(i, 7 + round);
            rig.tap.on_packet(rig.now, &p, &mut rig.out);
        }
        rig.now += Duration::from_secs(119);
    }
    let s = rig.tap.stats().clone();
    assert_eq!(s.flows_open, u64::from(max));
    assert_eq!(s.flows_refused, 0, "no new flow was refused");
    assert!(s.flows_evicted >= 2, "{s:?}");
    // The real clients kept their flows and finish their requests.
    for c in &mut real {
        let segs = c.request(b"\r\n", 1448);
        rig.feed(&segs);
        let segs = c.response(&ok_response(""), 1448);
        rig.feed(&segs);
    }
    assert_eq!(rig.out.len(), 2);
    assert!(
        rig.out
            .iter()
            .all(|e| e.trust == Trust::Verified && e.path == "/slow")
    );
    // A scanner arriving in the middle of the flood is seen, verified, on every probe.
    let mut scanner = rig.conv("198.51.100.66:50000");
    for path in ["/shell.php", "/.env", "/wp-login.php"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
        rig.feed(&scanner.request(req.as_bytes(), 1448));
        rig.feed(&scanner.response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 1448));
        // The flood goes on between probes.
        for i in 0..1_000 {
            let p = flood_packet(max + i, 7);
            rig.tap.on_packet(rig.now, &p, &mut rig.out);
        }
    }
    let probes: Vec<(&str, Trust, Option<u16>)> = rig.out[2..]
        .iter()
        .map(|e| (e.path.as_str(), e.trust, e.status))
        .collect();
    assert_eq!(
        probes,
        [
            ("/shell.php", Trust::Verified, Some(404)),
            ("/.env", Trust::Verified, Some(404)),
            ("/wp-login.php", Trust::Verified, Some(404)),
        ]
    );
    assert_eq!(rig.tap.stats().flows_refused, 0);
}

#[test]
fn verified_flows_are_never_evicted_by_unverified_ones() {
    let config = TapConfig {
        max_flows: 4,
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    let mut real: Vec<Conversation> = (0..4)
        .map(|i| rig.conv(&format!("192.0.2.1:{}", 1000 + i)))
        .collect();
    for c in &mut real {
        let segs = c.request(b"GET / HTTP/1.1\r\n", 1448);
        rig.feed(&segs);
    }
    for i in 0..100 {
        rig.feed(&[flood_packet(i, 1)]);
    }
    let s = rig.tap.stats();
    assert_eq!(
        (s.flows_open, s.flows_refused, s.flows_evicted),
        (4, 100, 0)
    );
}

#[test]
fn the_least_recently_seen_unverified_flow_goes_first() {
    let config = TapConfig {
        max_flows: 3,
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    rig.feed(&[flood_packet(0, 1), flood_packet(1, 1), flood_packet(2, 1)]);
    // Flow 0 is seen again: flow 1 is now the least recently seen.
    rig.feed(&[flood_packet(0, 2)]);
    rig.feed(&[flood_packet(3, 1)]);
    assert_eq!(rig.tap.stats().flows_evicted, 1);
    // Flow 0 is still tracked (a segment continues it without a new flow).
    let created = rig.tap.stats().flows_created;
    rig.feed(&[flood_packet(0, 3)]);
    assert_eq!(rig.tap.stats().flows_created, created);
    rig.feed(&[flood_packet(1, 2)]);
    assert_eq!(rig.tap.stats().flows_created, created + 1);
}

#[test]
fn flows_per_source_are_capped_except_for_trusted_proxies() {
    let config = TapConfig {
        max_flows_per_source: 3,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    for port in 0..5 {
        rig.conv(&format!("203.0.113.9:{}", 2000 + port));
        rig.conv(&format!("10.0.0.2:{}", 2000 + port));
    }
    let s = rig.tap.stats().clone();
    // Each refused handshake is counted twice: its SYN and the server's SYN-ACK.
    assert_eq!((s.flows_open, s.flows_source_capped), (3 + 5, 4));
    // Once one closes, the source may open another.
    let mut c = Conversation::new(addr("203.0.113.9:2000"), addr(SERVER));
    c.client_seq = 1_001;
    c.server_seq = 5_000_001;
    rig.feed(&[c.client_rst()]);
    rig.conv("203.0.113.9:3000");
    assert_eq!(rig.tap.stats().flows_source_capped, 4);
    assert_eq!(rig.tap.stats().flows_open, 8);
}
