//! Header parsing details and sequence-number wrap-around, through the tap.
use super::*;
use crate::tap::packet::{PacketError, parse_ethernet, parse_ip};

#[test]
fn ipv4_options_and_ethernet_padding() {
    let p = tcp_packet(addr(CLIENT), addr(SERVER), 9, TcpFlags::PSH, b"hi");
    // Insert 4 bytes of options (NOP x4): IHL 6, total length + 4.
    let mut with_opts = p[..20].to_vec();
    with_opts[0] = 0x46;
    let total = u16::from_be_bytes([p[2], p[3]]) + 4;
    with_opts[2..4].copy_from_slice(&total.to_be_bytes());
    with_opts.extend_from_slice(&[1, 1, 1, 1]);
    with_opts.extend_from_slice(&p[20..]);
    // Ethernet pads short frames: the padding must not become payload.
    let mut frame = ethernet(&with_opts, &[]);
    frame.extend_from_slice(&[0; 12]);
    let seg = parse_ethernet(T0, &frame).unwrap();
    assert_eq!(seg.payload, b"hi");
    assert_eq!((seg.src, seg.dst, seg.seq), (addr(CLIENT), addr(SERVER), 9));
    assert!(seg.flags.ack());
}

#[test]
fn bad_lengths_are_malformed_not_panics() {
    let p = tcp_packet(addr(CLIENT), addr(SERVER), 9, 0, b"x");
    for cut in 0..p.len() {
        let r = parse_ip(T0, &p[..cut]);
        assert!(
            r.as_ref().is_err_and(PacketError::is_malformed),
            "cut {cut}: {r:?}"
        );
    }
    let mut bad_ihl = p.clone();
    bad_ihl[0] = 0x44;
    assert!(matches!(
        parse_ip(T0, &bad_ihl),
        Err(PacketError::BadLength { .. })
    ));
    let mut bad_offset = p.clone();
    bad_offset[32] = 0xf0; // TCP data offset 60 > segment
    assert!(matches!(
        parse_ip(T0, &bad_offset),
        Err(PacketError::BadLength { .. })
    ));
    let mut udp = p;
    udp[9] = 17;
    assert_eq!(
        parse_ip(T0, &udp),
        Err(PacketError::NotTcp { protocol: 17 })
    );
}

#[test]
fn ipv6_fragment_and_auth_headers() {
    let p = tcp_packet(
        addr("[2001:db8::1]:1"),
        addr("[2001:db8::2]:80"),
        1,
        0,
        b"data",
    );
    let with_ext = |next_hdr: u8, ext: &[u8]| {
        let mut v = p[..40].to_vec();
        v[6] = next_hdr;
        let len = u16::from_be_bytes([p[4], p[5]]) + ext.len() as u16;
        v[4..6].copy_from_slice(&len.to_be_bytes());
        v.extend_from_slice(ext);
        v.extend_from_slice(&p[40..]);
        v
    };
    assert_eq!(
        parse_ip(T0, &with_ext(44, &[6, 0, 0, 1, 0, 0, 0, 1])),
        Err(PacketError::Fragment {
            flow: Some((parse_ip(T0, &p).unwrap().src, parse_ip(T0, &p).unwrap().dst))
        })
    );
    // A later fragment: no ports.
    assert_eq!(
        parse_ip(T0, &with_ext(44, &[6, 0, 0, 0x09, 0, 0, 0, 1])),
        Err(PacketError::Fragment { flow: None })
    );
    // An atomic fragment (offset 0, no more fragments) is a whole packet.
    assert_eq!(
        parse_ip(T0, &with_ext(44, &[6, 0, 0, 0, 0, 0, 0, 1]))
            .unwrap()
            .payload,
        b"data"
    );
    // AH: length field 1 means (1 + 2) * 4 = 12 bytes.
    let ah = with_ext(51, &[6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(parse_ip(T0, &ah).unwrap().payload, b"data");
    // A routing header claiming more bytes than the packet has.
    assert!(
        parse_ip(T0, &with_ext(43, &[6, 200, 0, 0, 0, 0, 0, 0])).is_err_and(|e| e.is_malformed())
    );
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut rig = Rig::new(&TapConfig::default());
    let mut c = Conversation::new(addr(CLIENT), addr(SERVER));
    c.client_seq = u32::MAX - 20;
    c.server_seq = u32::MAX - 3;
    let hs = c.handshake();
    rig.feed(&hs);
    let mut segs = c.request(
        b"POST /wrap HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
        9,
    );
    segs.swap(1, 3);
    rig.feed(&segs);
    rig.feed(&c.response(&ok_response("wrapped"), 5));
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.out[0].body, b"0123456789");
    assert_eq!(rig.out[0].status, Some(200));
    assert_eq!(rig.tap.stats().duplicate_bytes, 0);
}
