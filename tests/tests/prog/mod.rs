//! The harness of the `BPF_PROG_TEST_RUN` tests: `xdp_guard` loaded with a private pin
//! directory, its maps, and crafted frames.
// Each test crate uses a part of it.
#![allow(dead_code)]
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub use aya::maps::lpm_trie::Key;
pub use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray};
pub use aya::programs::{TestRun, TestRunOptions, Xdp};
pub use aya::{Ebpf, EbpfLoader};
use guard_common::*;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The loaded program with a private bpffs pin directory, removed on drop.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub pins: PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

pub fn load() -> anyhow::Result<Loaded> {
    let object = PathBuf::from(env!("GUARD_EBPF_DIR")).join("guard-ebpf");
    let bytes = std::fs::read(&object)
        .map_err(|e| anyhow::anyhow!("{}: {e} (run `cargo xtask build`)", object.display()))?;
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/guard-ptr-{}",
        guard_tests::unique("p")
    ));
    std::fs::create_dir_all(&pins)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&pins)
        .load(&bytes)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP_GUARD)
        .expect("program")
        .try_into()?;
    // The verifier answers EAGAIN when a signal arrives while it works: load again, like
    // libbpf and guard do.
    let mut tries = 1;
    loop {
        match prog.load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(11) && tries < 5 =>
            {
                tries += 1;
            }
            other => break other?,
        }
    }
    Ok(Loaded { ebpf, pins })
}

impl Loaded {
    pub fn run(&self, frame: &[u8]) -> anyhow::Result<u32> {
        let prog: &Xdp = self
            .ebpf
            .program(PROG_XDP_GUARD)
            .expect("program")
            .try_into()?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })?;
        Ok(r.return_value)
    }

    /// A global counter as the daemon reports it: exact-ban drops include those the hot-ban
    /// cache has not flushed yet.
    pub fn stat(&self, idx: u32) -> u64 {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_STATS).unwrap()).unwrap();
        let mut n = m.get(&idx, 0).unwrap().iter().sum();
        if idx == STAT_DROP_BAN_EXACT {
            let hot: PerCpuArray<&MapData, HotBan> =
                PerCpuArray::try_from(self.ebpf.map(MAP_HOT).unwrap()).unwrap();
            n += hot
                .get(&0, 0)
                .unwrap()
                .iter()
                .filter(|h| h.valid != 0)
                .map(|h| h.pending_packets)
                .sum::<u64>();
        }
        n
    }

    pub fn set_config(&mut self, cfg: XdpConfig) {
        let mut m: Array<&mut MapData, XdpConfig> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        m.set(0, cfg, 0).unwrap();
    }

    pub fn ban_v4(&mut self, a: Ipv4Addr, expires_ns: u64) {
        let mut m: HashMap<&mut MapData, u32, BanEntry> =
            HashMap::try_from(self.ebpf.map_mut(MAP_BANS_V4).unwrap()).unwrap();
        m.insert(
            u32::from_ne_bytes(a.octets()),
            BanEntry {
                expires_ns,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    }

    /// The ban entry with the drops still pending in the per-CPU hot-ban cache added in.
    pub fn ban_entry_v4(&self, a: Ipv4Addr) -> BanEntry {
        let m: HashMap<&MapData, u32, BanEntry> =
            HashMap::try_from(self.ebpf.map(MAP_BANS_V4).unwrap()).unwrap();
        let mut e = m.get(&u32::from_ne_bytes(a.octets()), 0).unwrap();
        let hot: PerCpuArray<&MapData, HotBan> =
            PerCpuArray::try_from(self.ebpf.map(MAP_HOT).unwrap()).unwrap();
        for h in hot.get(&0, 0).unwrap().iter() {
            if h.valid != 0 && h.addr == u32::from_ne_bytes(a.octets()) {
                e.packets += h.pending_packets;
                e.bytes += h.pending_bytes;
            }
        }
        e
    }

    pub fn generation(&mut self, generation: u64) {
        let mut m: Array<&mut MapData, XdpConfig> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        let mut c = m.get(&0, 0).unwrap();
        c.generation = generation;
        m.set(0, c, 0).unwrap();
    }

    pub fn ban_v6(&mut self, a: Ipv6Addr) {
        let mut m: HashMap<&mut MapData, [u8; 16], BanEntry> =
            HashMap::try_from(self.ebpf.map_mut(MAP_BANS_V6).unwrap()).unwrap();
        m.insert(a.octets(), BanEntry::default(), 0).unwrap();
    }

    pub fn cidr_v4(&mut self, a: Ipv4Addr, len: u32) {
        let mut m: LpmTrie<&mut MapData, u32, BanEntry> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_CIDR_V4).unwrap()).unwrap();
        m.insert(
            &Key::new(len, u32::from_ne_bytes(a.octets())),
            BanEntry::default(),
            0,
        )
        .unwrap();
    }

    pub fn cidr_v4_flagged(&mut self, a: Ipv4Addr, len: u32, expires_ns: u64) {
        let mut m: LpmTrie<&mut MapData, u32, BanEntry> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_CIDR_V4).unwrap()).unwrap();
        m.insert(
            &Key::new(len, u32::from_ne_bytes(a.octets())),
            BanEntry {
                expires_ns,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    }

    pub fn cidr_v6(&mut self, a: Ipv6Addr, len: u32) {
        let mut m: LpmTrie<&mut MapData, [u8; 16], BanEntry> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_CIDR_V6).unwrap()).unwrap();
        m.insert(&Key::new(len, a.octets()), BanEntry::default(), 0)
            .unwrap();
    }

    pub fn allow_v4(&mut self, a: Ipv4Addr, len: u32) {
        let mut m: LpmTrie<&mut MapData, u32, u32> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_ALLOW_V4).unwrap()).unwrap();
        m.insert(&Key::new(len, u32::from_ne_bytes(a.octets())), 1, 0)
            .unwrap();
    }
}

/// Ethernet header with the given VLAN tags (TPIDs) and final ethertype.
pub fn eth(tags: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A 64-byte-ish IPv4/UDP frame from `src`.
pub fn v4_frame(tags: &[u16], src: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(tags, 0x0800);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&28u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]);
    f.resize(f.len().max(64), 0);
    f
}

pub fn v6_frame(tags: &[u16], src: Ipv6Addr) -> Vec<u8> {
    let mut f = eth(tags, 0x86DD);
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&8u16.to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]);
    f
}

pub const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
pub const Q: u16 = 0x8100;
pub const AD: u16 = 0x88A8;
