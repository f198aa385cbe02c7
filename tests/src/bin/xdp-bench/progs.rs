//! The programs under test and their maps: `xdp_guard` (with its maps pinned in a private
//! bpffs directory that is removed on drop) and the benchmark helpers `xdp_drop_all` and
//! `xdp_gen`; plus the test frame and one `BPF_PROG_TEST_RUN` call.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use guard_common::dense::DenseTier;
use guard_common::{
    BanEntry, CFG_HAVE_DENSE_V4, MAP_ALLOW_V4, MAP_BANS_V4, MAP_CIDR_V4, MAP_CONFIG, MAP_DENSE,
    MAP_DENSE_HITS, MAP_DENSE_INDEX, MAP_DENSE_V16, MAP_STATS, PROG_XDP_GUARD, XdpConfig,
};

/// The drop-everything baseline in `guard-bench-ebpf`.
pub const PROG_DROP_ALL: &str = "xdp_drop_all";
/// The live-frame generator in `guard-bench-ebpf`.
pub const PROG_GEN: &str = "xdp_gen";

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Path of an eBPF object built into `GUARD_EBPF_DIR`; an error saying how to build it if missing.
fn object(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(env!("GUARD_EBPF_DIR")).join(name);
    ensure!(
        path.is_file(),
        "{} is missing: build the eBPF programs first (RUSTC_BOOTSTRAP=1 cargo +debian-bpf build -p guard-ebpf \
         --release --target bpfel-unknown-none, then copy guard-ebpf and guard-bench-ebpf into {})",
        path.display(),
        env!("GUARD_EBPF_DIR")
    );
    Ok(path)
}

/// `--guard-object`: benchmark this build of `guard-ebpf` instead of the one in `GUARD_EBPF_DIR`.
pub static GUARD_OBJECT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A fresh directory under /sys/fs/bpf for one guard instance's pinned maps, removed on drop.
/// (`xdp_guard` declares its maps pinned by name; without a directory aya 0.14 would pin them
/// straight into /sys/fs/bpf and reuse whatever another instance left there.)
pub struct PinDir(PathBuf);

impl PinDir {
    fn new() -> anyhow::Result<Self> {
        let path = PathBuf::from("/sys/fs/bpf").join(guard_tests::unique("guard-bench-"));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating {} (is bpffs mounted?)", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("no map {name} in the object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn load_xdp(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<()> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name} in the object"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {name}"))
}

pub fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?)
}

pub fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?)
}

/// One loaded `xdp_guard` with its own (private, initially empty) maps.
pub struct Guard {
    pub ebpf: Ebpf,
    pub bans: HashMap<MapData, u32, BanEntry>,
    pub cidr: LpmTrie<MapData, u32, BanEntry>,
    pub allow: LpmTrie<MapData, u32, u32>,
    pub config: Array<MapData, XdpConfig>,
    pub stats: PerCpuArray<MapData, u64>,
    /// The dense tier, kept as the daemon keeps it.
    dense: DenseTier,
    /// Every exact ban added, for the tier's rebuild.
    banned: Vec<u32>,
    /// Last field: the pins are removed after the maps are closed.
    _pins: PinDir,
}

/// The key guard uses for an IPv4 address (network order in memory).
pub fn v4_key(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

impl Guard {
    pub fn load() -> anyhow::Result<Self> {
        let pins = PinDir::new()?;
        let path = match GUARD_OBJECT.get() {
            Some(p) => p.clone(),
            None => object("guard-ebpf")?,
        };
        // As guard loads it by default: the eBPF log off (aya-log's own default is "all"). Not
        // required to exist, so objects from before the log can be benchmarked too.
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .override_global("AYA_LOG_LEVEL", &0u8, false)
            .load_file(&path)
            .with_context(|| format!("loading {}", path.display()))?;
        load_xdp(&mut ebpf, PROG_XDP_GUARD)?;
        let mut map = |name| {
            ebpf.take_map(name)
                .with_context(|| format!("no map {name} in the object"))
        };
        let dense = DenseTier::open(
            map(MAP_DENSE_INDEX)?,
            map(MAP_DENSE)?,
            map(MAP_DENSE_HITS)?,
            map(MAP_DENSE_V16)?,
        )?;
        Ok(Self {
            dense,
            banned: Vec::new(),
            bans: take(&mut ebpf, MAP_BANS_V4)?,
            cidr: take(&mut ebpf, MAP_CIDR_V4)?,
            allow: take(&mut ebpf, MAP_ALLOW_V4)?,
            config: take(&mut ebpf, MAP_CONFIG)?,
            stats: take(&mut ebpf, MAP_STATS)?,
            ebpf,
            _pins: pins,
        })
    }

    pub fn prog(&self) -> anyhow::Result<&Xdp> {
        xdp(&self.ebpf, PROG_XDP_GUARD)
    }

    /// Sets `CONFIG[0].flags` (rate limiting stays off).
    pub fn set_flags(&mut self, flags: u64) -> anyhow::Result<()> {
        let dense = if self.dense.active() {
            CFG_HAVE_DENSE_V4
        } else {
            0
        };
        self.config.set(
            0,
            XdpConfig {
                flags: flags | dense,
                ..XdpConfig::default()
            },
            0,
        )?;
        Ok(())
    }

    /// Bans `count` consecutive addresses from `first` (never expiring).
    pub fn ban_range(&mut self, first: Ipv4Addr, count: u32) -> anyhow::Result<()> {
        self.ban_spread(first, count, 1)
    }

    /// Bans `count` addresses `first + i * stride` (never expiring), then rebuilds the dense
    /// tier from every ban as the daemon does after loading its bans.
    pub fn ban_spread(&mut self, first: Ipv4Addr, count: u32, stride: u32) -> anyhow::Result<()> {
        let first = u32::from(first);
        for i in 0..count {
            let key = v4_key(Ipv4Addr::from(first.wrapping_add(i.wrapping_mul(stride))));
            self.bans
                .insert(key, BanEntry::default(), 0)
                .context("inserting a ban")?;
            self.banned.push(key);
        }
        self.dense
            .rebuild(&mut self.bans, self.banned.iter().map(|&k| (k, 0)))?;
        let flags = self.config.get(&0, 0)?.flags & !CFG_HAVE_DENSE_V4;
        self.set_flags(flags)
    }

    /// /24 blocks in the dense tier.
    pub fn dense_blocks(&self) -> usize {
        self.dense.blocks()
    }

    /// Adds `count` CIDR bans `first/len`, `first + 2^(32-len)/len`, …
    pub fn cidr_range(&mut self, first: Ipv4Addr, len: u32, count: u32) -> anyhow::Result<()> {
        let step = 1u32 << (32 - len);
        for i in 0..count {
            let net = Ipv4Addr::from(u32::from(first) + i * step);
            self.cidr
                .insert(&Key::new(len, v4_key(net)), BanEntry::default(), 0)
                .context("inserting a CIDR ban")?;
        }
        Ok(())
    }

    /// Adds `count` allowlist prefixes like [`Guard::cidr_range`].
    pub fn allow_range(&mut self, first: Ipv4Addr, len: u32, count: u32) -> anyhow::Result<()> {
        let step = 1u32 << (32 - len);
        for i in 0..count {
            let net = Ipv4Addr::from(u32::from(first) + i * step);
            self.allow
                .insert(&Key::new(len, v4_key(net)), 1, 0)
                .context("inserting an allowlist entry")?;
        }
        Ok(())
    }
}

/// The benchmark helpers: `xdp_drop_all` with its `DROPPED` counter and `xdp_gen` with `GEN`.
pub struct Bench {
    pub ebpf: Ebpf,
    pub dropped: PerCpuArray<MapData, u64>,
    pub gen_cfg: Array<MapData, u32>,
}

impl Bench {
    pub fn load() -> anyhow::Result<Self> {
        let path = object("guard-bench-ebpf")?;
        let mut ebpf = EbpfLoader::new()
            .load_file(&path)
            .with_context(|| format!("loading {}", path.display()))?;
        load_xdp(&mut ebpf, PROG_DROP_ALL)?;
        load_xdp(&mut ebpf, PROG_GEN)?;
        Ok(Self {
            dropped: take(&mut ebpf, "DROPPED")?,
            gen_cfg: take(&mut ebpf, "GEN")?,
            ebpf,
        })
    }

    /// Makes `xdp_gen` (configured by `gen_cfg`, the `GEN` map) cycle through `count` sources
    /// `first + i * stride`; a function of the map alone so that it can be called while the
    /// program is borrowed.
    pub fn set_sources(
        gen_cfg: &mut Array<MapData, u32>,
        first: Ipv4Addr,
        count: u32,
        stride: u32,
    ) -> anyhow::Result<()> {
        gen_cfg.set(0, count, 0)?;
        gen_cfg.set(1, u32::from(first), 0)?;
        gen_cfg.set(2, stride, 0)?;
        Ok(())
    }
}

/// A 64-byte Ethernet/IPv4/UDP frame (ports 9 → 9, UDP checksum 0 = none).
pub fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes()); // 64 - 14
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip.chunks(2).fold(0u32, |acc, w| {
        acc + u32::from(u16::from_be_bytes([w[0], w[1]]))
    });
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&30u16.to_be_bytes());
    f
}

/// One timed `BPF_PROG_TEST_RUN`.
pub struct Run {
    pub retval: u32,
    /// ns per run as the kernel reports it (integer: total / repeat).
    pub kernel_ns: f64,
    /// Wall time of the syscall / repeat (sub-ns resolution, includes the set-up once).
    pub wall_ns: f64,
}

pub fn test_run(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<Run> {
    let start = Instant::now();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    })?;
    let wall: Duration = start.elapsed();
    Ok(Run {
        retval: r.return_value,
        kernel_ns: r.duration.as_nanos() as f64,
        wall_ns: wall.as_nanos() as f64 / f64::from(repeat),
    })
}
