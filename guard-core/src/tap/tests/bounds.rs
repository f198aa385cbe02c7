//! Hostile and broken input: resets, timeouts, garbage, truncation, oversize heads and chunks,
//! floods, fragments, mid-stream pickups, buffer overflow. Each asserts the counters.
use super::*;

#[test]
fn reset_mid_request_reports_nothing_and_frees_the_flow() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(
        b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial",
        1448,
    ));
    rig.feed(&[c.client_rst()]);
    assert!(rig.out.is_empty());
    let s = rig.tap.stats();
    assert_eq!((s.resets, s.flows_open, s.requests), (1, 0, 0));
}

#[test]
fn reset_after_request_reports_it_unanswered() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(b"GET /slow HTTP/1.1\r\n\r\n", 1448));
    rig.feed(&[c.client_rst()]);
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].status, None);
    assert_eq!(rig.out[0].latency, None);
    assert_eq!(rig.tap.stats().unpaired_requests, 1);
}

#[test]
fn idle_flows_time_out() {
    let config = TapConfig {
        idle_timeout: Duration::from_secs(30),
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(b"GET /hang HTTP/1.1\r\n\r\n", 1448));
    let now = rig.now;
    rig.tap.on_tick(now + Duration::from_secs(29), &mut rig.out);
    assert_eq!(rig.tap.stats().flows_open, 1);
    rig.tap.on_tick(now + Duration::from_secs(30), &mut rig.out);
    let s = rig.tap.stats();
    assert_eq!(
        (s.flows_open, s.flows_timed_out, s.unpaired_requests),
        (0, 1, 1)
    );
    assert_eq!(rig.out[0].path, "/hang");
}

#[test]
fn garbage_is_counted_not_parsed() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(b"\x00\x01\x02 not http at all\r\n\r\n", 1448));
    rig.feed(&c.request(b"GET /after HTTP/1.1\r\n\r\n", 1448));
    assert!(rig.out.is_empty());
    assert_eq!(rig.tap.stats().http_malformed, 1);
    // Broken packets.
    let mut out = Vec::new();
    for junk in [
        &b""[..],
        b"\x45",
        b"\x45\0\0\x10garbage-garbage",
        b"\x60\0\0\0\0\x10\x06\x40",
        b"\x99",
    ] {
        rig.tap.on_packet(T0, junk, &mut out);
    }
    rig.tap.on_frame(T0, b"\x00\x01", &mut out);
    assert_eq!(rig.tap.stats().malformed_packets, 6);
}

#[test]
fn truncated_request_is_counted_at_close() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(b"GET /trunc HTTP/1.1\r\nHost: ", 1448));
    rig.feed(&[c.client_fin(), c.server_fin()]);
    assert!(rig.out.is_empty());
    let s = rig.tap.stats();
    assert_eq!((s.http_truncated, s.flows_open), (1, 0));
}

#[test]
fn huge_header_line_is_malformed_not_buffered() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let mut req = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 100 * 1024));
    rig.feed(&c.request(&req, 1448));
    assert_eq!(rig.tap.stats().http_malformed, 1);
    rig.feed(&c.request(b"\r\n\r\n", 1448));
    rig.feed(&c.response(&ok_response(""), 1448));
    assert!(rig.out.is_empty());
    assert_eq!(rig.tap.stats().unpaired_responses, 1);
}

#[test]
fn invalid_chunk_size_is_malformed() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        1448,
    ));
    assert_eq!(rig.tap.stats().http_malformed, 1);
    assert_eq!(rig.tap.stats().requests, 0);
}

#[test]
fn half_open_flood_respects_max_flows() {
    let config = TapConfig {
        max_flows: 8,
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    // Four real connections with data.
    let mut real: Vec<Conversation> = (0..4)
        .map(|i| rig.conv(&format!("192.0.2.1:{}", 1000 + i)))
        .collect();
    for c in &mut real {
        let segs = c.request(b"GET / HTTP/1.1\r\n", 1448);
        rig.feed(&segs);
    }
    // A SYN flood from 100 ports.
    for port in 0..100u16 {
        let syn = tcp_packet(
            addr(&format!("203.0.113.9:{}", 20000 + port)),
            addr(SERVER),
            7,
            TcpFlags::SYN,
            &[],
        );
        rig.feed(&[syn]);
    }
    let s = rig.tap.stats().clone();
    assert_eq!(s.flows_open, 8);
    assert_eq!(s.flows_created, 104);
    assert_eq!(s.flows_evicted, 96);
    // The real connections survived and still complete.
    for c in &mut real {
        let segs = c.request(b"\r\n", 1448);
        rig.feed(&segs);
        let segs = c.response(&ok_response(""), 1448);
        rig.feed(&segs);
    }
    assert_eq!(rig.out.len(), 4);
    // Once every slot carries data, new flows are refused.
    for i in 0..4 {
        let segs = rig
            .conv(&format!("192.0.2.2:{}", 1000 + i))
            .request(b"G", 10);
        rig.feed(&segs);
    }
    let syn = tcp_packet(addr("203.0.113.9:1"), addr(SERVER), 7, TcpFlags::SYN, &[]);
    rig.feed(&[syn]);
    assert_eq!(rig.tap.stats().flows_refused, 1);
    assert_eq!(rig.tap.stats().flows_open, 8);
}

#[test]
fn fragments_are_counted_and_skipped() {
    let mut tap = Tap::new(&TapConfig::default());
    let mut p = tcp_packet(addr(CLIENT), addr(SERVER), 1, 0, b"GET / HTTP/1.1\r\n\r\n");
    p[6] = 0x20; // more fragments
    let mut out = Vec::new();
    tap.on_packet(T0, &p, &mut out);
    assert_eq!(tap.stats().fragments, 1);
    assert_eq!(tap.stats().flows_created, 0);
}

#[test]
fn midstream_pickup_starts_at_first_data() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = Conversation::new(addr(CLIENT), addr(SERVER));
    rig.feed(&c.request(b"GET /mid HTTP/1.1\r\n\r\n", 1448));
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(rig.out.len(), 1);
    // Picked up in the middle of a body: desync, not malformed.
    let mut d = Conversation::new(addr("192.0.2.11:1"), addr(SERVER));
    rig.feed(&d.request(b"tail of an upload\r\n\r\n", 1448));
    let s = rig.tap.stats();
    assert_eq!(
        (s.midstream_pickups, s.http_desync, s.http_malformed),
        (3, 1, 0)
    );
}

#[test]
fn out_of_order_overflow_abandons_the_flow() {
    let config = TapConfig {
        max_flow_buffer: 1000,
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    let mut c = rig.conv(CLIENT);
    let body = vec![b'a'; 3000];
    let segs = c.request(&body, 500);
    // The first segment is lost: the next fits in the buffer, the one after does not.
    rig.feed(&segs[1..3]);
    let s = rig.tap.stats();
    assert_eq!(
        (s.ooo_flow_overflow, s.flows_open, s.ooo_buffered),
        (1, 0, 0)
    );
}

#[test]
fn partial_heads_count_against_the_total_buffer() {
    let config = TapConfig {
        max_total_buffer: 10_000,
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    // Each connection parks 3000 bytes of an unfinished head.
    let mut head = b"GET / HTTP/1.1\r\nX-Slow: ".to_vec();
    head.resize(3000, b'a');
    for i in 0..4 {
        let mut c = rig.conv(&format!("192.0.2.3:{}", 1000 + i));
        rig.feed(&c.request(&head, 3000));
    }
    let s = rig.tap.stats();
    assert_eq!(s.held_overflow, 1);
    assert_eq!(s.flows_open, 3);
    assert_eq!(s.held_bytes, 9000);
    rig.tap.flush(&mut rig.out);
    assert_eq!(rig.tap.stats().held_bytes, 0);
}

#[test]
fn new_syn_on_a_reused_port_starts_a_new_connection() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut old = rig.conv(CLIENT);
    rig.feed(&old.request(b"GET /old HTTP/1.1\r\n\r\n", 1448));
    // The old connection vanished without FIN/RST; the client port is reused with a new ISN.
    let mut new = Conversation::new(addr(CLIENT), addr(SERVER));
    new.client_seq = 77_777;
    let hs = new.handshake();
    rig.feed(&hs);
    rig.feed(&new.request(b"GET /new HTTP/1.1\r\n\r\n", 1448));
    rig.feed(&new.response(&ok_response(""), 1448));
    let got: Vec<_> = rig
        .out
        .iter()
        .map(|e| (e.path.as_str(), e.status))
        .collect();
    assert_eq!(got, [("/old", None), ("/new", Some(200))]);
    assert_eq!(rig.tap.stats().flows_created, 2);
}

#[test]
fn midstream_pickup_resynchronises_at_the_next_message() {
    let mut rig = Rig::new(&TapConfig::default());
    // The tap starts while a request is being answered: the client's next request and the tail
    // of the previous response arrive first.
    let mut c = Conversation::new(addr(CLIENT), addr(SERVER));
    rig.feed(&c.request(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", 1448));
    rig.feed(&c.response(b"...tail of an earlier body\r\n\r\n", 1448));
    rig.feed(&c.response(&ok_response("for next"), 1448));
    rig.feed(&c.request(b"GET /after HTTP/1.1\r\n\r\n", 1448));
    rig.feed(&c.response(&ok_response("after"), 1448));
    let got: Vec<_> = rig
        .out
        .iter()
        .map(|e| (e.path.as_str(), e.status))
        .collect();
    assert_eq!(got, [("/next", Some(200)), ("/after", Some(200))]);
    let s = rig.tap.stats();
    assert_eq!((s.http_desync, s.http_resync, s.http_malformed), (1, 1, 0));
}

#[test]
fn early_response_to_an_upload_is_paired_with_it() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let mut req =
        b"POST /upload HTTP/1.1\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n".to_vec();
    let head_len = req.len() as u64;
    req.extend(std::iter::repeat_n(b'b', 1000));
    rig.feed(&c.request(&req, 1448));
    rig.feed(&c.response(
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
        1448,
    ));
    assert_eq!(rig.out.len(), 1);
    let e = &rig.out[0];
    assert_eq!(
        (e.path.as_str(), e.status, e.body_len),
        ("/upload", Some(413), 1000)
    );
    assert_eq!(e.bytes_in, head_len + 1000);
    // The rest of the upload completes the request: it is not reported a second time, and the
    // next exchange pairs normally.
    rig.feed(&c.request(&vec![b'b'; 99_000], 1448));
    rig.feed(&c.request(b"GET /next HTTP/1.1\r\n\r\n", 1448));
    rig.feed(&c.response(&ok_response(""), 1448));
    let got: Vec<_> = rig
        .out
        .iter()
        .map(|e| (e.path.as_str(), e.status))
        .collect();
    assert_eq!(got, [("/upload", Some(413)), ("/next", Some(200))]);
    let s = rig.tap.stats();
    assert_eq!(
        (s.early_responses, s.unpaired_responses, s.requests),
        (1, 0, 2)
    );
}
