//! Packet capture for the HTTP tap: an `AF_PACKET` socket bound to the guarded interface, with the
//! `http_tap` socket filter attached (only TCP segments of the protected ports reach userspace)
//! and a `TPACKET_V3` ring mapped into memory, read a block at a time — never a syscall per packet.
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::net::if_::if_nametoindex;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{
    AddressFamily, LinkAddr, SockFlag, SockType, SockaddrLike, bind, getsockopt, setsockopt, socket,
};
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};

/// Errors setting up the capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("unknown interface {name:?}")]
    UnknownInterface { name: String },
    #[error("{call} failed")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Ring geometry.
#[derive(Debug, Clone, Copy)]
pub struct RingSize {
    /// Bytes per block; a power of two, at least one page, larger than any packet (GSO/GRO
    /// aggregates reach 64 KiB).
    pub block_size: u32,
    /// Number of blocks.
    pub blocks: u32,
    /// A block is handed to userspace at the latest after this long, even if not full.
    pub retire: Duration,
}

impl RingSize {
    /// A ring of `mb` MiB in 256 KiB blocks (four per MiB, room for the largest GSO/GRO
    /// aggregate), each handed over after 10 ms at the latest. The whole ring is mapped into
    /// the daemon and counts in its RSS.
    #[must_use]
    pub fn mib(mb: u32) -> Self {
        Self {
            block_size: 256 << 10,
            blocks: mb.clamp(1, 1024) * 4,
            retire: Duration::from_millis(10),
        }
    }
}

impl Default for RingSize {
    fn default() -> Self {
        Self::mib(crate::tap::TapConfig::default().ring_mb)
    }
}

/// Kernel-side counters of the capture socket (cumulative since open).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CaptureStats {
    /// Packets that passed the filter.
    pub packets: u64,
    /// Packets the kernel dropped because the ring was full.
    pub drops: u64,
    /// Times the ring was full ("freeze" of the queue).
    pub ring_full: u64,
}

/// An open capture socket and its mapped ring.
pub struct Capture {
    fd: OwnedFd,
    ring: NonNull<u8>,
    size: RingSize,
    next_block: u32,
    stats: CaptureStats,
}

// SAFETY: the ring mapping is owned by this value and only touched through &mut self.
unsafe impl Send for Capture {}

fn sys(call: &'static str) -> impl FnOnce(Errno) -> CaptureError {
    move |e| CaptureError::Sys {
        call,
        source: e.into(),
    }
}

// The packet-socket options nix has no type for, declared through its own macro (which wraps
// getsockopt/setsockopt with the size of the value type).
sockopt_impl!(
    /// `PACKET_VERSION`: the ring layout (`TPACKET_V3`).
    PacketVersion,
    SetOnly,
    libc::SOL_PACKET,
    libc::PACKET_VERSION,
    libc::c_int
);
sockopt_impl!(
    /// `PACKET_RX_RING`: the receive ring's geometry.
    PacketRxRing,
    SetOnly,
    libc::SOL_PACKET,
    libc::PACKET_RX_RING,
    libc::tpacket_req3
);
sockopt_impl!(
    /// `PACKET_STATISTICS` of a `TPACKET_V3` socket (reading resets the kernel's counters).
    PacketStatistics,
    GetOnly,
    libc::SOL_PACKET,
    libc::PACKET_STATISTICS,
    libc::tpacket_stats_v3
);

impl Capture {
    /// Opens a packet socket on `iface` and maps its ring. `attach` is called with the socket
    /// before it is bound, to attach the filter (no unfiltered packet is ever queued).
    pub fn open(
        iface: &str,
        size: RingSize,
        attach: impl FnOnce(BorrowedFd<'_>) -> Result<(), CaptureError>,
    ) -> Result<Self, CaptureError> {
        let ifindex = if_nametoindex(iface)
            .ok()
            .filter(|&i| i != 0)
            .ok_or_else(|| CaptureError::UnknownInterface { name: iface.into() })?;
        // Protocol 0: nothing is queued until bind() names a protocol, after the filter is on.
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(sys("socket(AF_PACKET)"))?;
        attach(fd.as_fd())?;
        setsockopt(
            &fd,
            PacketVersion,
            &(libc::tpacket_versions::TPACKET_V3 as libc::c_int),
        )
        .map_err(sys("setsockopt(PACKET_VERSION)"))?;
        let frame = 1u32 << 11;
        let req = libc::tpacket_req3 {
            tp_block_size: size.block_size,
            tp_block_nr: size.blocks,
            tp_frame_size: frame,
            tp_frame_nr: size.block_size / frame * size.blocks,
            tp_retire_blk_tov: size.retire.as_millis().max(1) as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, PacketRxRing, &req).map_err(sys("setsockopt(PACKET_RX_RING)"))?;
        let len = NonZeroUsize::new(size.block_size as usize * size.blocks as usize).ok_or(
            CaptureError::Sys {
                call: "mmap(packet ring)",
                source: Errno::EINVAL.into(),
            },
        )?;
        // SAFETY: a fresh shared mapping of the ring the kernel just allocated for this socket
        // (PACKET_RX_RING succeeded with exactly `len` bytes); no Rust reference aliases it, and
        // it is unmapped once, in Drop, with the same length.
        let ring = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_LOCKED,
                &fd,
                0,
            )
        }
        .map_err(sys("mmap(packet ring)"))?;
        let capture = Self {
            fd,
            ring: ring.cast(),
            size,
            next_block: 0,
            stats: CaptureStats::default(),
        };
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: the pointer is to a live, initialised sockaddr_ll and the length given is its
        // size; from_raw only copies it (after checking the length and the family).
        let addr = unsafe {
            LinkAddr::from_raw(
                std::ptr::from_ref(&sll).cast(),
                Some(size_of::<libc::sockaddr_ll>() as libc::socklen_t),
            )
        }
        .ok_or(CaptureError::Sys {
            call: "bind(AF_PACKET)",
            source: Errno::EINVAL.into(),
        })?;
        bind(capture.fd.as_raw_fd(), &addr).map_err(sys("bind(AF_PACKET)"))?;
        Ok(capture)
    }

    /// Waits up to `timeout` for filled blocks and hands every packet in them to `each`
    /// (kernel timestamp in ns since the epoch, frame from the Ethernet header). Returns the
    /// number of packets delivered.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<usize, CaptureError> {
        let mut delivered = 0;
        if !self.block_ready() {
            let mut fds = [PollFd::new(
                self.fd.as_fd(),
                PollFlags::POLLIN | PollFlags::POLLERR,
            )];
            let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(sys("poll(packet socket)")(e)),
            }
        }
        // Drain every ready block, in ring order. Each block is handed back to the kernel and
        // the ring advanced when it is done, also when `each` panics (the thread is restarted
        // with this capture: the same block must not be read again).
        while self.block_ready() {
            let block = Release {
                block: self.block(),
                next_block: &mut self.next_block,
                blocks: self.size.blocks,
            };
            // SAFETY: the block is ready (TP_STATUS_USER): the kernel filled it and handed it
            // to us, and it stays ours until `block` is dropped.
            delivered +=
                unsafe { read_block(block.block, self.size.block_size as usize, &mut each) };
        }
        Ok(delivered)
    }

    fn block(&self) -> *mut libc::tpacket_block_desc {
        // SAFETY: next_block < blocks, so the offset is inside the mapping.
        unsafe {
            self.ring
                .as_ptr()
                .add(self.next_block as usize * self.size.block_size as usize)
                .cast()
        }
    }

    fn block_ready(&self) -> bool {
        // SAFETY: the block descriptor lies at the start of each block; the kernel flips
        // block_status, so read it volatile.
        let status =
            unsafe { std::ptr::read_volatile(&raw const (*self.block()).hdr.bh1.block_status) };
        status & libc::TP_STATUS_USER != 0
    }

    /// Kernel counters since open. Reading them resets the kernel's, so they are accumulated here.
    pub fn stats(&mut self) -> CaptureStats {
        if let Ok(st) = getsockopt(&self.fd, PacketStatistics) {
            // tp_packets counts drops too.
            self.stats.packets += u64::from(st.tp_packets);
            self.stats.drops += u64::from(st.tp_drops);
            self.stats.ring_full += u64::from(st.tp_freeze_q_cnt);
        }
        self.stats
    }

    /// Polls until `stop` is set, handing packets to `each`.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(), CaptureError> {
        while !stop.load(Ordering::Relaxed) {
            self.poll(Duration::from_millis(100), &mut each)?;
        }
        Ok(())
    }
}

/// A block userspace is reading: handed back to the kernel, and the ring advanced past it, when
/// this is dropped (also while unwinding from a panic in the packet handler).
struct Release<'a> {
    block: *mut libc::tpacket_block_desc,
    next_block: &'a mut u32,
    blocks: u32,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        std::sync::atomic::fence(Ordering::Release);
        // SAFETY: `block` is the descriptor of a block of the live mapping that userspace owns
        // (TP_STATUS_USER); writing TP_STATUS_KERNEL gives it back, and nothing reads it after.
        unsafe {
            std::ptr::write_volatile(
                &raw mut (*self.block).hdr.bh1.block_status,
                libc::TP_STATUS_KERNEL,
            );
        }
        *self.next_block = (*self.next_block + 1) % self.blocks;
    }
}

/// Hands every packet of a filled block to `each`; returns how many.
///
/// # Safety
/// `block` must point to a block of `limit` bytes of the ring that the kernel handed to
/// userspace (`TP_STATUS_USER`) and that stays so for the duration of the call.
unsafe fn read_block(
    block: *mut libc::tpacket_block_desc,
    limit: usize,
    each: &mut impl FnMut(u64, &[u8]),
) -> usize {
    let base = block.cast::<u8>();
    // SAFETY: the caller guarantees the block is ours; every offset is checked against the
    // block size before use.
    unsafe {
        std::sync::atomic::fence(Ordering::Acquire);
        let bh = &(*block).hdr.bh1;
        let n = bh.num_pkts as usize;
        let mut off = bh.offset_to_first_pkt as usize;
        let mut count = 0;
        for _ in 0..n {
            if off + size_of::<libc::tpacket3_hdr>() > limit {
                break;
            }
            // The kernel aligns headers to 16 bytes; read unaligned anyway, it costs nothing here.
            let hdr = base.add(off).cast::<libc::tpacket3_hdr>().read_unaligned();
            let start = off + usize::from(hdr.tp_mac);
            let end = start + hdr.tp_snaplen as usize;
            if end <= limit {
                let ts = u64::from(hdr.tp_sec) * 1_000_000_000 + u64::from(hdr.tp_nsec);
                each(ts, std::slice::from_raw_parts(base.add(start), end - start));
                count += 1;
            }
            if hdr.tp_next_offset == 0 {
                break;
            }
            off += hdr.tp_next_offset as usize;
        }
        count
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let len = self.size.block_size as usize * self.size.blocks as usize;
        // SAFETY: unmaps exactly the mapping made in open() (same address, same length), once;
        // nothing borrowed from it outlives `self`.
        if let Err(e) = unsafe { munmap(self.ring.cast(), len) } {
            tracing::warn!("unmapping the packet ring: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// A panic in the packet handler hands the block being read back to the kernel: the capture
    /// (kept by the restarted thread) goes on with the next packets and never reads that block
    /// again. Without that, the same block is read, and panics, forever.
    #[test]
    fn a_panic_in_the_handler_does_not_wedge_the_ring() {
        let size = RingSize {
            block_size: 1 << 16,
            blocks: 4,
            retire: Duration::from_millis(5),
        };
        let mut capture = match Capture::open("lo", size, |_| Ok(())) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIPPED: no packet socket on lo ({e}); needs root");
                return;
            }
        };
        let marker = format!("guard-capture-test-{}", std::process::id());
        let (poison, good) = (format!("{marker}-poison"), format!("{marker}-good"));
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        let to = sock.local_addr().expect("address");
        sock.send_to(poison.as_bytes(), to).expect("send");
        let has = |frame: &[u8], needle: &str| {
            frame.windows(needle.len()).any(|w| w == needle.as_bytes())
        };
        let (mut panics, mut seen_good) = (0, false);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !seen_good && std::time::Instant::now() < deadline {
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                capture.poll(Duration::from_millis(50), |_, frame| {
                    assert!(!has(frame, &poison), "poison packet");
                    seen_good |= has(frame, &good);
                })
            }));
            if let Ok(r) = polled {
                r.expect("poll");
            } else {
                panics += 1;
                // The next packet goes out only after the first panic.
                if panics == 1 {
                    sock.send_to(good.as_bytes(), to).expect("send");
                }
            }
            assert!(
                panics <= 2,
                "the poisoned block was read again ({panics} panics)"
            );
        }
        assert!(panics >= 1, "the poison packet was never captured");
        assert!(seen_good, "no packet after the panic was delivered");
    }
}
