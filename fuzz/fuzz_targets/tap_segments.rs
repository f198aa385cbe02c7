//! Arbitrary TCP segment sequences through reassembly, HTTP parsing and pairing, plus arbitrary
//! raw packets and frames through the header parsers. The input is a little program: each op
//! byte picks an action and its operands come from the following bytes. Invariants checked after
//! every op: the configured bounds hold, kept bodies never pass the inspection cap.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use guard_core::tap::{Segment, Tap, TapConfig, TcpFlags};
use libfuzzer_sys::fuzz_target;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    // Small bounds half of the time, so overflow paths run too.
    let small = mode & 1 == 1;
    let config = TapConfig {
        max_flows: if small { 2 } else { 64 },
        max_flow_buffer: if small { 64 } else { 4096 },
        max_total_buffer: if small { 96 } else { 16_384 },
        body_inspect_cap: if small { 4 } else { 256 },
        max_head_size: if small { 128 } else { 4096 },
        max_pipelined: if small { 2 } else { 16 },
        user_header: Some("x-user".into()),
        jwt_hs256_key: (mode & 2 == 2).then(|| "k".into()),
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..TapConfig::default()
    };
    let cap = config.body_inspect_cap;
    let mut tap = Tap::new(&config);
    let mut out = Vec::new();
    let mut now = Duration::from_secs(1_700_000_000);
    let clients: [SocketAddr; 3] = [
        "10.0.0.1:1000".parse().unwrap(),
        "192.0.2.1:2000".parse().unwrap(),
        "[2001:db8::1]:3000".parse().unwrap(),
    ];
    let server: SocketAddr = "192.0.2.80:80".parse().unwrap();
    let server6: SocketAddr = "[2001:db8::80]:80".parse().unwrap();
    while let Some(op) = input.byte() {
        match op % 8 {
            // A segment: connection, direction, flags, sequence offset, payload length.
            0..=5 => {
                let (Some(ctl), Some(flags), Some(off), Some(len)) =
                    (input.byte(), input.byte(), input.u16(), input.byte())
                else {
                    break;
                };
                let client = clients[usize::from(ctl % 3)];
                let srv = if client.is_ipv6() { server6 } else { server };
                let up = ctl & 4 == 0;
                let base: u32 = if up { 1_000 } else { 4_294_967_000 }; // server side wraps
                let payload = input.take(usize::from(len));
                let seg = Segment {
                    src: if up { client } else { srv },
                    dst: if up { srv } else { client },
                    seq: base.wrapping_add(u32::from(off)).wrapping_sub(256),
                    ack: 0,
                    flags: TcpFlags(flags & 0x1f),
                    payload,
                    ts: now,
                };
                tap.on_segment(&seg, &mut out);
            }
            // A raw IP packet or Ethernet frame.
            6 => {
                let Some(len) = input.u16() else { break };
                let bytes = input.take(usize::from(len));
                if len & 1 == 0 {
                    tap.on_packet(now, bytes, &mut out);
                } else {
                    tap.on_frame(now, bytes, &mut out);
                }
            }
            // Time passes.
            _ => {
                let Some(secs) = input.byte() else { break };
                now += Duration::from_secs(u64::from(secs));
                tap.on_tick(now, &mut out);
            }
        }
        let s = tap.stats();
        assert!(s.flows_open <= config.max_flows as u64);
        assert!(s.ooo_buffered <= config.max_total_buffer as u64);
        for e in out.drain(..) {
            assert!(e.body.len() <= cap);
            assert!(e.body.len() as u64 <= e.body_len);
        }
    }
    tap.flush(&mut out);
    assert_eq!(tap.stats().ooo_buffered, 0);
});
