//! A hand-rolled TCP client over a raw IPv4 socket, for sending a server real segments in an
//! order no kernel stack would: it does its own handshake, then writes the pieces of a request
//! in any order. Run it on a thread inside the client namespace, where an nftables rule drops
//! the kernel's own RSTs for the crafted connection ([`mute_kernel_resets`]).
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Netns, sh};

/// Makes the kernel of `ns` stop answering crafted connections to `port` with RSTs (it has no
/// socket for them). The rule lives in the namespace and goes with it.
pub fn mute_kernel_resets(ns: &Netns, port: u16) -> anyhow::Result<()> {
    let rules = format!(
        "table ip guard_test {{\n chain out {{\n  type filter hook output priority 0;\n  tcp dport {port} tcp flags & rst == rst drop\n }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("guard-nft-{}.nft", crate::unique("n")));
    std::fs::write(&file, rules)?;
    let out = ns.command("nft").arg("-f").arg(&file).output();
    let _ = std::fs::remove_file(&file);
    let out = out?;
    anyhow::ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = sh;
    Ok(())
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One crafted connection.
pub struct RawTcp {
    fd: OwnedFd,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    /// Our next sequence number (after the SYN).
    pub isn: u32,
    ack: u32,
}

/// Source ports of crafted connections, each used once.
static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

impl RawTcp {
    /// Handshakes with `dst:dport` from `src`.
    pub fn connect(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> anyhow::Result<Self> {
        // SAFETY: socket() returns a new fd we own.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP,
            )
        };
        if raw < 0 {
            bail!("raw socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid timeval for SO_RCVTIMEO.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        let sport = 40_000
            + (std::process::id() as u16 % 5_000)
            + NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let isn = 0x1000_0000 ^ u32::from(sport);
        let mut c = Self {
            fd,
            src,
            dst,
            sport,
            dport,
            isn,
            ack: 0,
        };
        c.send_segment(isn.wrapping_sub(1), SYN, &[])?;
        let (seq, flags) = c
            .wait_for(|flags| flags & (SYN | ACK) == SYN | ACK)
            .context("no SYN-ACK")?;
        let _ = flags;
        c.ack = seq.wrapping_add(1);
        c.send_segment(isn, ACK, &[])?;
        Ok(c)
    }

    /// Sends `payload` as if it started `offset` bytes into the stream.
    pub fn send_at(&self, offset: u32, payload: &[u8]) -> anyhow::Result<()> {
        self.send_segment(self.isn.wrapping_add(offset), ACK | PSH, payload)
    }

    /// Waits until the server sends data (the response); returns its first bytes.
    pub fn read_response(&mut self) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Some((_, _, payload)) = self.recv()
                && !payload.is_empty()
            {
                return Ok(payload);
            }
        }
        bail!("no response data")
    }

    fn wait_for(&mut self, want: impl Fn(u8) -> bool) -> anyhow::Result<(u32, u8)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Some((seq, flags, _)) = self.recv()
                && want(flags)
            {
                return Ok((seq, flags));
            }
        }
        bail!("timed out")
    }

    /// One TCP segment of our connection: (seq, flags, payload), or None on timeout/other.
    fn recv(&mut self) -> Option<(u32, u8, Vec<u8>)> {
        let mut buf = vec![0u8; 65_536];
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return None;
        }
        let pkt = &buf[..n as usize];
        if pkt.len() < 20 {
            return None;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]])).min(pkt.len());
        if pkt[12..16] != self.dst.octets() || total < ihl + 20 {
            return None;
        }
        let tcp = &pkt[ihl..total];
        let (sport, dport) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        if sport != self.dport || dport != self.sport {
            return None;
        }
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let doff = usize::from(tcp[12] >> 4) * 4;
        Some((seq, tcp[13], tcp.get(doff..).unwrap_or_default().to_vec()))
    }

    fn send_segment(&self, seq: u32, flags: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&65_535u16.to_be_bytes());
        tcp.extend_from_slice(payload);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        let mut sum_in = pseudo;
        sum_in.extend_from_slice(&tcp);
        let c = checksum(&sum_in, 0);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        // SAFETY: sockaddr_in for sendto, zeroed then filled.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from_ne_bytes(self.dst.octets());
        // SAFETY: sends our buffer to a valid address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                tcp.as_ptr().cast(),
                tcp.len(),
                0,
                (&raw const sin).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sends one TCP segment with any source address (an `IP_HDRINCL` raw socket builds the whole
/// IPv4 packet), as an off-path sender forging a source would: it never sees the answers.
/// Run it inside the sending namespace.
pub struct Forger {
    fd: OwnedFd,
}

impl Forger {
    pub fn new() -> anyhow::Result<Self> {
        // SAFETY: socket() returns a new fd we own.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if raw < 0 {
            bail!("raw socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// One segment `src:sport` → `dst:dport` with the given numbers and flags (`0x02` SYN,
    /// `0x08` PSH, `0x10` ACK).
    #[expect(clippy::too_many_arguments, reason = "every field of a forged segment")]
    pub fn send(
        &self,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&65_535u16.to_be_bytes());
        tcp.extend_from_slice(payload);
        let mut sum_in = Vec::with_capacity(12 + tcp.len());
        sum_in.extend_from_slice(&src.octets());
        sum_in.extend_from_slice(&dst.octets());
        sum_in.extend_from_slice(&[0, 6]);
        sum_in.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        sum_in.extend_from_slice(&tcp);
        let c = checksum(&sum_in, 0);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        let total = (20 + tcp.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let c = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&tcp);
        // SAFETY: sockaddr_in for sendto, zeroed then filled.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
        // SAFETY: sends our buffer to a valid address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ip.as_ptr().cast(),
                ip.len(),
                0,
                (&raw const sin).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}
