//! Evasion: requests shaped so that guard and the server read them differently, or flows an
//! off-path sender tries to close. Each sign is counted and marks the request it concerns.
use std::fmt::Write as _;

use super::*;
use crate::tap::http::MAX_HEADERS;
use crate::tap::synth::tcp_packet_ack;

/// A request with `n` extra header lines.
fn with_headers(path: &str, n: usize) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: h\r\nUser-Agent: test\r\n");
    for i in 0..n {
        let _ = write!(r, "X-Pad-{i}: {i}\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[test]
fn a_request_with_more_headers_than_the_bound_is_marked_and_parsing_goes_on() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(&with_headers("/many", MAX_HEADERS + 10), 1448));
    rig.feed(&c.response(&ok_response("a"), 1448));
    // The next request on the keep-alive connection is still seen.
    rig.feed(&c.request(&with_headers("/next", 2), 1448));
    rig.feed(&c.response(&ok_response("b"), 1448));
    assert_eq!(rig.out.len(), 2, "{:?}", rig.tap.stats());
    let (first, next) = (&rig.out[0], &rig.out[1]);
    assert_eq!(first.path, "/many");
    assert!(first.headers.evasion.too_many_headers);
    assert_eq!(first.all_headers.len(), MAX_HEADERS + 12);
    assert_eq!(first.headers.user_agent.as_deref(), Some("test"));
    assert_eq!(next.path, "/next");
    assert!(next.headers.evasion.is_empty());
    let s = rig.tap.stats();
    assert_eq!((s.too_many_headers, s.http_malformed, s.paired), (1, 0, 2));
}

#[test]
fn a_reset_outside_the_window_is_ignored_and_one_inside_closes() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 1448));
    // Blind resets: far ahead, and behind the next expected byte.
    for seq in [
        c.client_seq.wrapping_add(0x4000_0000),
        c.client_seq.wrapping_sub(1),
    ] {
        rig.feed(&[tcp_packet_ack(
            c.client,
            c.server,
            seq,
            0,
            TcpFlags::RST,
            &[],
        )]);
    }
    let s = rig.tap.stats();
    assert_eq!((s.resets_out_of_window, s.resets, s.flows_open), (2, 0, 1));
    // The flow is still parsed: the response pairs with its request.
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].status, Some(200));
    // A reset a little ahead (client data in flight) is inside the window and closes the flow.
    let rst = tcp_packet_ack(
        c.client,
        c.server,
        c.client_seq.wrapping_add(3000),
        c.server_seq,
        TcpFlags::RST,
        &[],
    );
    rig.feed(&[rst]);
    let s = rig.tap.stats();
    assert_eq!((s.resets_out_of_window, s.resets, s.flows_open), (2, 1, 0));
}

#[test]
fn overlapping_segments_with_different_bytes_mark_the_request() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let (cl, sv, base) = (c.client, c.server, c.client_seq);
    let req = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n";
    // Ahead of a hole, then an overlapping copy with other bytes, then the start.
    rig.feed(&[
        tcp_packet(cl, sv, base + 10, 0, &req[10..20]),
        tcp_packet(cl, sv, base + 5, 0, b"/evil/HTTP"),
        tcp_packet(cl, sv, base, 0, &req[..10]),
        tcp_packet(cl, sv, base + 20, 0, &req[20..]),
    ]);
    c.client_seq += req.len() as u32;
    rig.feed(&c.response(&ok_response(""), 1448));
    // The same overlap with the same bytes is only a retransmission.
    let req2 = b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n";
    let base = c.client_seq;
    rig.feed(&[
        tcp_packet(cl, sv, base + 10, 0, &req2[10..20]),
        tcp_packet(cl, sv, base + 5, 0, &req2[5..15]),
        tcp_packet(cl, sv, base, 0, &req2[..10]),
        tcp_packet(cl, sv, base + 20, 0, &req2[20..]),
    ]);
    c.client_seq += req2.len() as u32;
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(rig.out.len(), 2);
    assert!(rig.out[0].headers.evasion.overlap_conflict);
    assert!(rig.out[1].headers.evasion.is_empty(), "{:?}", rig.out[1]);
    // Both the copy and the original disagreed with what was buffered before them.
    assert_eq!(rig.tap.stats().overlap_conflicts, 2);
}

/// `p` (an IPv4 packet from `synth`) as the first fragment of its datagram.
fn first_fragment_v4(mut p: Vec<u8>) -> Vec<u8> {
    p[6] = 0x20;
    p
}

/// `p` (an IPv6 packet from `synth`) behind a fragment header (offset 0, more to come).
fn first_fragment_v6(p: &[u8]) -> Vec<u8> {
    let mut v = p[..40].to_vec();
    v[6] = 44;
    let len = u16::from_be_bytes([p[4], p[5]]) + 8;
    v[4..6].copy_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 7]);
    v.extend_from_slice(&p[40..]);
    v
}

#[test]
fn first_fragments_of_client_segments_are_counted_against_the_flow() {
    for client in [CLIENT, "[2001:db8::10]:40000"] {
        let mut rig = Rig::new(&TapConfig::default());
        let server = if client.starts_with('[') {
            addr("[2001:db8::1]:80")
        } else {
            addr(SERVER)
        };
        let mut c = Conversation::new(addr(client), server);
        let hs = c.handshake();
        rig.feed(&hs);
        // The request's first segment arrives fragmented (the tap cannot use its bytes); the
        // client's stack retransmits it whole.
        let segs = c.request(b"GET /frag HTTP/1.1\r\nHost: h\r\n\r\n", 1448);
        let frag = if client.starts_with('[') {
            first_fragment_v6(&segs[0])
        } else {
            first_fragment_v4(segs[0].clone())
        };
        rig.feed(&[frag]);
        rig.feed(&segs);
        rig.feed(&c.response(&ok_response(""), 1448));
        // A fragment of a flow the tap does not track is counted only.
        rig.feed(&[first_fragment_v4(tcp_packet(
            addr("192.0.2.99:1234"),
            addr(SERVER),
            1,
            0,
            b"x",
        ))]);
        let s = rig.tap.stats();
        assert_eq!((s.fragments, s.flow_fragments), (2, 1), "{client}");
        assert_eq!(rig.out.len(), 1);
        assert_eq!(rig.out[0].path, "/frag");
        assert_eq!(rig.out[0].headers.evasion.fragments, 1);
    }
}
