//! Packet capture for the HTTP tap: an `AF_PACKET` socket bound to the guarded interface, with the
//! `http_tap` socket filter attached (only TCP segments of the protected ports reach userspace)
//! and a `TPACKET_V3` ring mapped into memory, read a block at a time — never a syscall per packet.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

impl Default for RingSize {
    fn default() -> Self {
        // 32 MiB in 1 MiB blocks, flushed every 10 ms.
        Self {
            block_size: 1 << 20,
            blocks: 32,
            retire: Duration::from_millis(10),
        }
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
    ring: *mut u8,
    size: RingSize,
    next_block: u32,
    stats: CaptureStats,
}

// SAFETY: the ring mapping is owned by this value and only touched through &mut self.
unsafe impl Send for Capture {}

fn sys(call: &'static str) -> CaptureError {
    CaptureError::Sys {
        call,
        source: std::io::Error::last_os_error(),
    }
}

fn setsockopt<T>(
    fd: i32,
    level: i32,
    name: i32,
    value: &T,
    call: &'static str,
) -> Result<(), CaptureError> {
    // SAFETY: value points to a live T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as u32,
        )
    };
    if rc == 0 { Ok(()) } else { Err(sys(call)) }
}

impl Capture {
    /// Opens a packet socket on `iface` and maps its ring. `attach` is called with the socket
    /// before it is bound, to attach the filter (no unfiltered packet is ever queued).
    pub fn open(
        iface: &str,
        size: RingSize,
        attach: impl FnOnce(BorrowedFd<'_>) -> Result<(), CaptureError>,
    ) -> Result<Self, CaptureError> {
        let name = std::ffi::CString::new(iface)
            .map_err(|_| CaptureError::UnknownInterface { name: iface.into() })?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(CaptureError::UnknownInterface { name: iface.into() });
        }
        // Protocol 0: nothing is queued until bind() names a protocol, after the filter is on.
        // SAFETY: socket() returns a new fd we take ownership of.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(sys("socket(AF_PACKET)"));
        }
        // SAFETY: raw is a fresh, valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach(fd.as_fd())?;
        let version = libc::tpacket_versions::TPACKET_V3 as i32;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            "setsockopt(PACKET_VERSION)",
        )?;
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
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            "setsockopt(PACKET_RX_RING)",
        )?;
        let len = size.block_size as usize * size.blocks as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                raw,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(sys("mmap(packet ring)"));
        }
        let capture = Self {
            fd,
            ring: ring.cast(),
            size,
            next_block: 0,
            stats: CaptureStats::default(),
        };
        // SAFETY: zeroed sockaddr_ll, then the fields bind() reads.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binds our socket to the interface with a valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                raw,
                std::ptr::from_ref(&sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(sys("bind(AF_PACKET)"));
        }
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
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe {
                libc::poll(
                    &raw mut pfd,
                    1,
                    timeout.as_millis().min(i32::MAX as u128) as i32,
                )
            };
            if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Err(sys("poll(packet socket)"));
            }
        }
        // Drain every ready block, in ring order.
        while self.block_ready() {
            delivered += self.read_block(&mut each);
            self.next_block = (self.next_block + 1) % self.size.blocks;
        }
        Ok(delivered)
    }

    fn block(&self) -> *mut libc::tpacket_block_desc {
        // SAFETY: next_block < blocks, so the offset is inside the mapping.
        unsafe {
            self.ring
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

    fn read_block(&mut self, each: &mut impl FnMut(u64, &[u8])) -> usize {
        let block = self.block();
        let base = block.cast::<u8>();
        let limit = self.size.block_size as usize;
        // SAFETY: the kernel filled this block and handed it to us (TP_STATUS_USER); every
        // offset is checked against the block size before use.
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
            // Give the block back to the kernel.
            std::sync::atomic::fence(Ordering::Release);
            std::ptr::write_volatile(
                &raw mut (*block).hdr.bh1.block_status,
                libc::TP_STATUS_KERNEL,
            );
            count
        }
    }

    /// Kernel counters since open. Reading them resets the kernel's, so they are accumulated here.
    pub fn stats(&mut self) -> CaptureStats {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as u32;
        // SAFETY: getsockopt writes at most len bytes into st.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
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

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in open().
        unsafe {
            libc::munmap(
                self.ring.cast(),
                self.size.block_size as usize * self.size.blocks as usize,
            )
        };
    }
}
