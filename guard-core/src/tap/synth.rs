//! Crafted packets for tests, the benchmark and the fuzz target: IPv4/IPv6 + TCP headers around a
//! payload, optionally in an Ethernet frame, and a [`Conversation`] that keeps the sequence numbers
//! of one client/server connection. Checksums are left at zero (the tap never checks them: the
//! kernel already did).
use std::net::{IpAddr, SocketAddr};

use super::packet::TcpFlags;

/// A TCP segment (no options) in an IPv4 or IPv6 packet, starting at the IP header, with an
/// acknowledgement number of 0 (what a blind sender would put).
#[must_use]
pub fn tcp_packet(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp_packet_ack(src, dst, seq, 0, flags, payload)
}

/// A TCP segment acknowledging `ack`. Every segment but a SYN gets the ACK flag.
#[must_use]
pub fn tcp_packet_ack(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(flags | (TcpFlags::ACK * u8::from(flags & TcpFlags::SYN == 0)));
    tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + tcp.len()) as u16;
            let mut p = vec![0x45, 0];
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&tcp);
            p
        }
        (s, d) => {
            let s = match s {
                IpAddr::V6(s) => s,
                IpAddr::V4(s) => s.to_ipv6_mapped(),
            };
            let d = match d {
                IpAddr::V6(d) => d,
                IpAddr::V4(d) => d.to_ipv6_mapped(),
            };
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[6, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&tcp);
            p
        }
    }
}

/// Wraps an IP packet in an Ethernet frame with the given VLAN ids (outer first).
#[must_use]
pub fn ethernet(ip: &[u8], vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (i, vid) in vlans.iter().enumerate() {
        f.extend_from_slice(if i == 0 && vlans.len() > 1 {
            &[0x88, 0xa8]
        } else {
            &[0x81, 0x00]
        });
        f.extend_from_slice(&vid.to_be_bytes());
    }
    let ethertype: u16 = if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// One connection's two sequence spaces.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Next sequence number the client sends.
    pub client_seq: u32,
    /// Next sequence number the server sends.
    pub server_seq: u32,
}

impl Conversation {
    #[must_use]
    pub fn new(client: SocketAddr, server: SocketAddr) -> Self {
        Self {
            client,
            server,
            client_seq: 1_000,
            server_seq: 5_000_000,
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self) -> Vec<Vec<u8>> {
        let p = vec![
            tcp_packet(
                self.client,
                self.server,
                self.client_seq,
                TcpFlags::SYN,
                &[],
            ),
            tcp_packet_ack(
                self.server,
                self.client,
                self.server_seq,
                self.client_seq.wrapping_add(1),
                TcpFlags::SYN | TcpFlags::ACK,
                &[],
            ),
            tcp_packet_ack(
                self.client,
                self.server,
                self.client_seq.wrapping_add(1),
                self.server_seq.wrapping_add(1),
                TcpFlags::ACK,
                &[],
            ),
        ];
        self.client_seq = self.client_seq.wrapping_add(1);
        self.server_seq = self.server_seq.wrapping_add(1);
        p
    }

    /// Client data split into segments of at most `mss` bytes, acknowledging everything the
    /// server sent.
    pub fn request(&mut self, data: &[u8], mss: usize) -> Vec<Vec<u8>> {
        let (from, to) = (self.client, self.server);
        split(from, to, &mut self.client_seq, self.server_seq, data, mss)
    }

    /// Server data split into segments of at most `mss` bytes, acknowledging everything the
    /// client sent.
    pub fn response(&mut self, data: &[u8], mss: usize) -> Vec<Vec<u8>> {
        let (from, to) = (self.server, self.client);
        split(from, to, &mut self.server_seq, self.client_seq, data, mss)
    }

    /// A FIN from the client.
    pub fn client_fin(&mut self) -> Vec<u8> {
        let p = tcp_packet_ack(
            self.client,
            self.server,
            self.client_seq,
            self.server_seq,
            TcpFlags::FIN,
            &[],
        );
        self.client_seq = self.client_seq.wrapping_add(1);
        p
    }

    /// A FIN from the server.
    pub fn server_fin(&mut self) -> Vec<u8> {
        let p = tcp_packet_ack(
            self.server,
            self.client,
            self.server_seq,
            self.client_seq,
            TcpFlags::FIN,
            &[],
        );
        self.server_seq = self.server_seq.wrapping_add(1);
        p
    }

    /// A RST from the client.
    #[must_use]
    pub fn client_rst(&self) -> Vec<u8> {
        tcp_packet_ack(
            self.client,
            self.server,
            self.client_seq,
            self.server_seq,
            TcpFlags::RST,
            &[],
        )
    }
}

fn split(
    from: SocketAddr,
    to: SocketAddr,
    seq: &mut u32,
    ack: u32,
    data: &[u8],
    mss: usize,
) -> Vec<Vec<u8>> {
    data.chunks(mss.max(1))
        .map(|c| {
            let p = tcp_packet_ack(from, to, *seq, ack, TcpFlags::PSH, c);
            *seq = seq.wrapping_add(c.len() as u32);
            p
        })
        .collect()
}
