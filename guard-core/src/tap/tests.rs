use std::net::SocketAddr;
use std::time::Duration;

use super::synth::{Conversation, ethernet, tcp_packet};
use super::*;

mod bounds;
mod evasion;
mod jwt;
mod packets;
mod trust;

const CLIENT: &str = "192.0.2.10:40000";
const SERVER: &str = "198.51.100.1:80";
const T0: Duration = Duration::from_secs(1_700_000_000);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Rig {
    tap: Tap,
    out: Vec<RequestEvent>,
    now: Duration,
}

impl Rig {
    fn new(config: &TapConfig) -> Self {
        Self {
            tap: Tap::new(config),
            out: Vec::new(),
            now: T0,
        }
    }

    fn feed(&mut self, packets: &[Vec<u8>]) {
        for p in packets {
            self.now += Duration::from_millis(1);
            self.tap.on_packet(self.now, p, &mut self.out);
        }
    }

    fn conv(&mut self, client: &str) -> Conversation {
        let mut c = Conversation::new(addr(client), addr(SERVER));
        let hs = c.handshake();
        self.feed(&hs);
        c
    }
}

fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn plain_get_is_paired_with_its_response() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let req = b"GET /api/users?id=1&x=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nReferer: http://a/\r\nCookie: s=1\r\n\r\n";
    rig.feed(&c.request(req, 1448));
    rig.now += Duration::from_millis(20);
    let resp = ok_response("hello");
    rig.feed(&c.response(&resp, 1448));
    assert_eq!(rig.out.len(), 1);
    let e = &rig.out[0];
    assert_eq!(e.method, "GET");
    assert_eq!(e.path, "/api/users");
    assert_eq!(e.query.as_deref(), Some("id=1&x=2"));
    assert_eq!(e.headers.host.as_deref(), Some("example.com"));
    assert_eq!(e.headers.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(e.headers.referer.as_deref(), Some("http://a/"));
    assert!(e.headers.has_cookie);
    assert!(!e.headers.has_authorization);
    assert_eq!(e.status, Some(200));
    assert_eq!(e.latency, Some(Duration::from_millis(21)));
    assert_eq!(e.bytes_in, req.len() as u64);
    assert_eq!(e.bytes_out, resp.len() as u64);
    assert_eq!(e.client, addr(CLIENT).ip());
    assert_eq!(e.response_content_type.as_deref(), Some("text/plain"));
    assert_eq!(e.ts, T0 + Duration::from_millis(4));
    assert!(e.user.is_none());
    // Orderly close removes the flow.
    rig.feed(&[c.client_fin(), c.server_fin()]);
    let s = rig.tap.stats();
    assert_eq!(
        (
            s.flows_open,
            s.flows_closed,
            s.requests,
            s.responses,
            s.paired
        ),
        (0, 1, 1, 1, 1)
    );
}

#[test]
fn keep_alive_connection_carries_several_exchanges() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    for i in 0..3 {
        let req = format!("GET /page/{i} HTTP/1.1\r\nHost: h\r\n\r\n");
        rig.feed(&c.request(req.as_bytes(), 1448));
        rig.feed(&c.response(&ok_response("x"), 1448));
    }
    let paths: Vec<_> = rig.out.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/page/0", "/page/1", "/page/2"]);
    assert!(
        rig.out
            .iter()
            .all(|e| e.conn_id == rig.out[0].conn_id && e.status == Some(200))
    );
    assert_eq!(rig.tap.stats().flows_created, 1);
}

#[test]
fn pipelined_requests_pair_in_order_including_head() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let reqs = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    rig.feed(&c.request(reqs, 1448));
    let mut resps = ok_response("aaaa");
    // HEAD: Content-Length announced, no body follows.
    resps.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    resps.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno");
    rig.feed(&c.response(&resps, 1448));
    let got: Vec<_> = rig
        .out
        .iter()
        .map(|e| (e.method.as_str(), e.path.as_str(), e.status))
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/a", Some(200)),
            ("HEAD", "/b", Some(200)),
            ("GET", "/c", Some(404))
        ]
    );
    assert_eq!(rig.tap.stats().unpaired_responses, 0);
}

#[test]
fn chunked_upload_is_decoded() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let req = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"a\":\r\n4\r\n 1}\n\r\n0\r\nX-Trailer: t\r\n\r\n";
    rig.feed(&c.request(req, 7));
    rig.feed(&c.response(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok!\r\n0\r\n\r\n",
        5,
    ));
    assert_eq!(rig.out.len(), 1);
    let e = &rig.out[0];
    assert_eq!(e.body, b"{\"a\": 1}\n");
    assert_eq!(e.body_len, 9);
    assert!(e.headers.chunked);
    assert_eq!(e.headers.content_type.as_deref(), Some("application/json"));
    assert_eq!(e.bytes_in, req.len() as u64);
    assert_eq!(e.status, Some(201));
}

#[test]
fn large_upload_keeps_only_the_cap_but_counts_every_byte() {
    let config = TapConfig {
        body_inspect_cap: 1024,
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    let mut c = rig.conv(CLIENT);
    let body = vec![b'z'; 1 << 20];
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.clone().into_bytes();
    req.extend_from_slice(&body);
    rig.feed(&c.request(&req, 1448));
    rig.feed(&c.response(&ok_response("done"), 1448));
    let e = &rig.out[0];
    assert_eq!(e.body.len(), 1024);
    assert_eq!(e.body_len, 1 << 20);
    assert_eq!(e.bytes_in, (head.len() + body.len()) as u64);
    assert_eq!(e.headers.content_length, Some(1 << 20));
    assert_eq!(rig.tap.stats().ooo_buffered, 0);
}

#[test]
fn one_byte_per_segment() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let req = b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    rig.feed(&c.request(req, 1));
    rig.feed(&c.response(&ok_response("fine"), 1));
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].body, b"abc");
    assert_eq!(rig.out[0].status, Some(200));
    assert_eq!(rig.out[0].bytes_out, ok_response("fine").len() as u64);
}

#[test]
fn out_of_order_segments_are_reordered() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let req = b"GET /reordered HTTP/1.1\r\nHost: h\r\nUser-Agent: test\r\n\r\n";
    let mut segs = c.request(req, 8);
    segs.reverse();
    rig.feed(&segs);
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].path, "/reordered");
    assert_eq!(rig.out[0].headers.user_agent.as_deref(), Some("test"));
    assert_eq!(rig.tap.stats().ooo_buffered, 0);
}

#[test]
fn retransmissions_and_overlaps_keep_the_first_copy() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    let (cl, sv, base) = (c.client, c.server, c.client_seq);
    let req = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n";
    // A segment ahead of a hole, an overlapping copy with other bytes, the start, a retransmit.
    rig.feed(&[
        tcp_packet(cl, sv, base + 10, 0, &req[10..20]),
        tcp_packet(cl, sv, base + 5, 0, b"XXXXXXXXXX"),
        tcp_packet(cl, sv, base, 0, &req[..10]),
        tcp_packet(cl, sv, base, 0, &req[..10]),
        tcp_packet(cl, sv, base + 20, 0, &req[20..]),
    ]);
    c.client_seq += req.len() as u32;
    rig.feed(&c.response(&ok_response(""), 1448));
    assert_eq!(rig.out.len(), 1);
    // Bytes 5..10 of the overlapping copy were buffered before the original: they win.
    assert_eq!(rig.out[0].path, "/XXXXX");
    let s = rig.tap.stats();
    assert_eq!(s.http_malformed, 0);
    // 5 overlap bytes already buffered, 5 of the original already buffered, 10 retransmitted.
    assert_eq!(s.duplicate_bytes, 5 + 5 + 10);
    assert_eq!(s.ooo_buffered, 0);
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    let config = TapConfig {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..TapConfig::default()
    };
    let mut rig = Rig::new(&config);
    let req = b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7, 10.1.1.1\r\n\r\n";
    let mut proxy = rig.conv("10.0.0.2:5555");
    rig.feed(&proxy.request(req, 1448));
    rig.feed(&proxy.response(&ok_response(""), 1448));
    let mut direct = rig.conv("192.0.2.50:5555");
    rig.feed(&direct.request(req, 1448));
    rig.feed(&direct.response(&ok_response(""), 1448));
    let mut fwd = rig.conv("10.0.0.3:5555");
    rig.feed(&fwd.request(
        b"GET / HTTP/1.1\r\nForwarded: for=\"[2001:db8::7]:443\";proto=http\r\n\r\n",
        1448,
    ));
    rig.feed(&fwd.response(&ok_response(""), 1448));
    let clients: Vec<String> = rig.out.iter().map(|e| e.client.to_string()).collect();
    // The proxies write X-Forwarded-For (the default `client_header`): a Forwarded header is
    // never read instead, so the third request has no client.
    assert_eq!(clients, ["203.0.113.7", "192.0.2.50", "0.0.0.0"]);
    let trust: Vec<Trust> = rig.out.iter().map(|e| e.trust).collect();
    assert_eq!(trust, [Trust::Verified, Trust::Verified, Trust::NoClient]);
    assert_eq!(
        rig.out[1].headers.x_forwarded_for.as_deref(),
        Some("203.0.113.7, 10.1.1.1")
    );
}

#[test]
fn user_from_jwt_sub_and_configured_header() {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64.encode(br#"{"sub":"user-42","exp":9999999999}"#);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"secret").unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    let token = format!("{header}.{payload}.{sig}");
    let req = format!("GET /me HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");

    let run = |config: TapConfig, req: &str| {
        let mut rig = Rig::new(&config);
        let mut c = rig.conv(CLIENT);
        rig.feed(&c.request(req.as_bytes(), 1448));
        rig.feed(&c.response(&ok_response(""), 1448));
        rig.out.pop().unwrap()
    };
    let e = run(TapConfig::default(), &req);
    assert!(e.headers.has_authorization);
    assert_eq!(
        e.user,
        Some(UserId {
            id: "user-42".into(),
            verified: false,
            source: UserSource::Jwt
        })
    );
    let keyed = TapConfig {
        jwt_hs256_key: Some("secret".into()),
        ..TapConfig::default()
    };
    assert!(run(keyed.clone(), &req).user.unwrap().verified);
    let wrong = TapConfig {
        jwt_hs256_key: Some("other".into()),
        ..TapConfig::default()
    };
    assert!(!run(wrong, &req).user.unwrap().verified);
    let tampered = req.replace(&payload, &b64.encode(br#"{"sub":"admin"}"#));
    let u = run(keyed, &tampered).user.unwrap();
    assert_eq!((u.id.as_str(), u.verified), ("admin", false));
    let with_header = TapConfig {
        user_header: Some("X-User".into()),
        ..TapConfig::default()
    };
    let u = run(with_header, "GET / HTTP/1.1\r\nx-user: alice\r\n\r\n")
        .user
        .unwrap();
    assert_eq!((u.id.as_str(), u.source), ("alice", UserSource::Header));
}

#[test]
fn http10_response_ends_at_fin() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(b"GET /old HTTP/1.0\r\n\r\n", 1448));
    rig.feed(&c.response(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 4));
    assert!(rig.out.is_empty());
    rig.feed(&[c.server_fin()]);
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].http_minor, 0);
    assert_eq!(rig.out[0].bytes_out, 32);
}

#[test]
fn bodiless_statuses_and_interim_responses() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = rig.conv(CLIENT);
    rig.feed(&c.request(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", 1448));
    rig.feed(&c.response(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        1448,
    ));
    let got: Vec<_> = rig
        .out
        .iter()
        .map(|e| (e.path.as_str(), e.status))
        .collect();
    assert_eq!(
        got,
        [("/a", Some(204)), ("/b", Some(304)), ("/c", Some(200))]
    );
}

#[test]
fn ipv6_with_extension_header_and_vlan_frames() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = Conversation::new(addr("[2001:db8::1]:40000"), addr("[2001:db8::2]:8080"));
    let mut packets = c.handshake();
    packets.extend(c.request(b"GET /v6 HTTP/1.1\r\n\r\n", 1448));
    // Put a hop-by-hop options header in front of TCP in the request packet.
    let req = packets.pop().unwrap();
    let mut with_ext = req[..40].to_vec();
    with_ext[6] = 0;
    let len = u16::from_be_bytes([req[4], req[5]]) + 8;
    with_ext[4..6].copy_from_slice(&len.to_be_bytes());
    with_ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    with_ext.extend_from_slice(&req[40..]);
    packets.push(with_ext);
    packets.extend(c.response(&ok_response("6"), 1448));
    for (i, p) in packets.iter().enumerate() {
        let vlans: &[u16] = if i % 2 == 0 { &[10, 20] } else { &[30] };
        rig.tap.on_frame(T0, &ethernet(p, vlans), &mut rig.out);
    }
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].path, "/v6");
    assert_eq!(rig.out[0].client.to_string(), "2001:db8::1");
    let too_many = ethernet(&packets[0], &[1, 2, 3]);
    rig.tap.on_frame(T0, &too_many, &mut rig.out);
    assert_eq!(rig.tap.stats().malformed_packets, 1);
}
