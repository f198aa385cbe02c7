//! The XDP side of guard: loads and attaches `xdp_guard`, and is the only code that touches its
//! BPF maps. Maps and links are pinned under the configured bpffs directory so that a restarted
//! daemon picks them up again (no window without enforcement) and several instances never collide.
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::links::PinnedLink;
use aya::programs::{ProgramError, SocketFilter, Xdp as XdpProgram};
use aya::{Ebpf, EbpfLoader};
use guard_common::dense::{DenseError, DenseTier};
use guard_common::{
    BAN_CHECK_ALLOW, BanEntry, CFG_HAVE_ALLOW_V4, CFG_HAVE_ALLOW_V6, CFG_HAVE_CIDR_V4,
    CFG_HAVE_CIDR_V6, CFG_HAVE_DENSE_V4, HotBan, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BANS_V4,
    MAP_BANS_V6, MAP_CIDR_V4, MAP_CIDR_V6, MAP_CONFIG, MAP_DENSE, MAP_DENSE_HITS, MAP_DENSE_INDEX,
    MAP_DENSE_V16, MAP_EVENTS, MAP_HOT, MAP_STATS, MAP_TAP_PORTS, PROG_HTTP_TAP, PROG_XDP_GUARD,
    STAT_COUNT, XdpConfig as MapConfig,
};
use tracing::{info, warn};

mod attach;
pub use attach::default_route_interface;
use attach::{attach, ensure_bpffs};

use crate::config::XdpConfig;
use crate::net::Net;

/// The eBPF object, built by `cargo xtask build` into `$GUARD_EBPF_DIR` (checked by build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("GUARD_EBPF_DIR"), "/guard-ebpf"));

/// `statfs` magic of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Errors of the XDP layer.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("cannot load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("map {name} has an unexpected type")]
    MapType {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name}: {op} failed")]
    Map {
        name: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("unknown interface {name:?}")]
    UnknownInterface { name: String },
    #[error("cannot attach to {iface} in {mode} mode")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(transparent)]
    Dense(#[from] DenseError),
    #[error("bpffs: {message}")]
    Bpffs { message: String },
    #[error("no interface given and no default route found in /proc/net/route")]
    NoDefaultRoute,
    #[error("pinning {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Counters of one ban as read back from the maps.
#[derive(Debug, Clone, Copy, Default)]
pub struct BanCounters {
    pub packets: u64,
    pub bytes: u64,
    /// `CLOCK_MONOTONIC` ns of the last drop; 0 = never.
    pub last_hit_ns: u64,
}

/// The loaded, attached program and its maps.
pub struct Xdp {
    // Keeps the programs (and unpinned links, if any) alive.
    ebpf: Ebpf,
    tap_ports: Array<MapData, u8>,
    hot: PerCpuArray<MapData, HotBan>,
    /// Ports currently set in `tap_ports` (the map is created empty with each load).
    tap_set: Vec<u16>,
    bans_v4: HashMap<MapData, u32, BanEntry>,
    bans_v6: HashMap<MapData, [u8; 16], BanEntry>,
    cidr_v4: LpmTrie<MapData, u32, BanEntry>,
    cidr_v6: LpmTrie<MapData, [u8; 16], BanEntry>,
    allow_v4: LpmTrie<MapData, u32, u32>,
    allow_v6: LpmTrie<MapData, [u8; 16], u32>,
    config: Array<MapData, MapConfig>,
    stats: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    /// The dense IPv4 tier: /24 blocks with many exact bans, looked up by block.
    dense: DenseTier,
    settings: MapConfig,
    /// CIDR bans and allowlist entries in the maps, mirrored here: an LPM lookup returns the
    /// longest match, so only this tells whether an exact prefix is present, and the counts
    /// per family set the `CFG_HAVE_*` flags.
    cidrs: HashSet<Net>,
    allows: HashSet<Net>,
    links: Vec<(String, PinnedLink)>,
    interfaces: Vec<(String, &'static str)>,
    pin_dir: PathBuf,
}

macro_rules! take {
    ($ebpf:expr, $name:expr) => {{
        let map = $ebpf.take_map($name).ok_or(XdpError::Missing {
            what: "map",
            name: $name,
        })?;
        map.try_into().map_err(|source| XdpError::MapType {
            name: $name,
            source,
        })?
    }};
}

fn map_err(name: &'static str, op: &'static str) -> impl FnOnce(MapError) -> XdpError {
    move |source| XdpError::Map { name, op, source }
}

fn v4(a: std::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

impl Xdp {
    /// Loads the program (reusing maps pinned by an earlier instance), and attaches it to each
    /// interface, atomically replacing the program of a link pinned by an earlier instance.
    pub fn open(cfg: &XdpConfig) -> Result<Self, XdpError> {
        ensure_bpffs(&cfg.pin_dir)?;
        std::fs::create_dir_all(&cfg.pin_dir).map_err(|e| XdpError::Bpffs {
            message: format!("cannot create {}: {e}", cfg.pin_dir.display()),
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&cfg.pin_dir)
            .load(OBJECT)
            .map_err(|e| XdpError::Load(Box::new(e)))?;
        let mut interfaces = Vec::new();
        let mut links = Vec::new();
        {
            let prog: &mut XdpProgram = ebpf
                .program_mut(PROG_XDP_GUARD)
                .ok_or(XdpError::Missing {
                    what: "program",
                    name: PROG_XDP_GUARD,
                })?
                .try_into()
                .map_err(|source| XdpError::Program {
                    name: PROG_XDP_GUARD,
                    source,
                })?;
            prog.load().map_err(|source| XdpError::Program {
                name: PROG_XDP_GUARD,
                source,
            })?;
            let names = if cfg.interfaces.is_empty() {
                vec![default_route_interface()?]
            } else {
                cfg.interfaces.clone()
            };
            for iface in names {
                let (link, mode) = attach(prog, &iface, cfg.mode, &cfg.pin_dir)?;
                info!(interface = %iface, mode, "xdp_guard attached");
                interfaces.push((iface.clone(), mode));
                links.push((iface, link));
            }
        }
        let dense = {
            let mut map = |name| {
                ebpf.take_map(name)
                    .ok_or(XdpError::Missing { what: "map", name })
            };
            DenseTier::open(
                map(MAP_DENSE_INDEX)?,
                map(MAP_DENSE)?,
                map(MAP_DENSE_HITS)?,
                map(MAP_DENSE_V16)?,
            )?
        };
        let mut xdp = Self {
            dense,
            bans_v4: take!(ebpf, MAP_BANS_V4),
            bans_v6: take!(ebpf, MAP_BANS_V6),
            cidr_v4: take!(ebpf, MAP_CIDR_V4),
            cidr_v6: take!(ebpf, MAP_CIDR_V6),
            allow_v4: take!(ebpf, MAP_ALLOW_V4),
            allow_v6: take!(ebpf, MAP_ALLOW_V6),
            config: take!(ebpf, MAP_CONFIG),
            stats: take!(ebpf, MAP_STATS),
            events: Some(take!(ebpf, MAP_EVENTS)),
            tap_ports: take!(ebpf, MAP_TAP_PORTS),
            hot: take!(ebpf, MAP_HOT),
            tap_set: Vec::new(),
            ebpf,
            settings: MapConfig::default(),
            cidrs: HashSet::new(),
            allows: HashSet::new(),
            links,
            interfaces,
            pin_dir: cfg.pin_dir.clone(),
        };
        let cost_ns = 1_000_000_000_u64
            .checked_div(cfg.rate_limit_pps)
            .unwrap_or(0);
        let burst = if cfg.rate_limit_burst == 0 {
            cfg.rate_limit_pps
        } else {
            cfg.rate_limit_burst
        };
        xdp.settings = MapConfig {
            flags: 0,
            cost_ns,
            cap_ns: cost_ns.saturating_mul(burst),
            event_window_ns: cfg.rate_event_window.as_nanos() as u64,
            // Past any generation an earlier instance's program has cached against.
            generation: xdp
                .config
                .get(&0, 0)
                .map_or(0, |c| c.generation)
                .wrapping_add(1),
        };
        xdp.write_config()?;
        Ok(xdp)
    }

    /// Interfaces the program is attached to, with the mode used.
    #[must_use]
    pub fn interfaces(&self) -> &[(String, &'static str)] {
        &self.interfaces
    }

    /// The bpffs directory of this instance.
    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Attaches the `http_tap` socket filter to a capture socket (loading it on first use).
    pub fn attach_tap(&mut self, socket: std::os::fd::BorrowedFd<'_>) -> Result<(), XdpError> {
        let err = |source| XdpError::Program {
            name: PROG_HTTP_TAP,
            source,
        };
        let prog: &mut SocketFilter = self
            .ebpf
            .program_mut(PROG_HTTP_TAP)
            .ok_or(XdpError::Missing {
                what: "program",
                name: PROG_HTTP_TAP,
            })?
            .try_into()
            .map_err(err)?;
        if prog.fd().is_err() {
            prog.load().map_err(err)?;
        }
        prog.attach(socket).map_err(err)
    }

    /// Sets the TCP ports whose segments the tap captures (all others are cleared).
    pub fn set_tap_ports(&mut self, ports: &[u16]) -> Result<(), XdpError> {
        for &old in &self.tap_set {
            if !ports.contains(&old) {
                self.tap_ports
                    .set(u32::from(old), 0, 0)
                    .map_err(map_err(MAP_TAP_PORTS, "set"))?;
            }
        }
        for &port in ports {
            self.tap_ports
                .set(u32::from(port), 1, 0)
                .map_err(map_err(MAP_TAP_PORTS, "set"))?;
        }
        self.tap_set = ports.to_vec();
        Ok(())
    }

    /// Takes the event ring buffer (once) for the event reader task.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    fn write_config(&mut self) -> Result<(), XdpError> {
        let mut flags = 0;
        for (set, v4_bit, v6_bit) in [
            (&self.cidrs, CFG_HAVE_CIDR_V4, CFG_HAVE_CIDR_V6),
            (&self.allows, CFG_HAVE_ALLOW_V4, CFG_HAVE_ALLOW_V6),
        ] {
            for net in set {
                flags |= if net.addr().is_ipv4() { v4_bit } else { v6_bit };
            }
        }
        if self.dense.active() {
            flags |= CFG_HAVE_DENSE_V4;
        }
        self.settings.flags = flags;
        self.config
            .set(0, self.settings, 0)
            .map_err(map_err(MAP_CONFIG, "set"))
    }

    /// Makes the maps hold exactly `bans` (with their monotonic deadlines) and `allows`,
    /// without ever removing an entry that stays: enforcement has no gap during a restart.
    pub fn reconcile(&mut self, bans: &[(Net, u64)], allows: &[Net]) -> Result<(), XdpError> {
        let have = self.ban_keys()?;
        self.cidrs = have.iter().filter(|n| !n.is_host()).copied().collect();
        self.allows = self.allow_keys()?;
        // The allowlist first: each ban's BAN_CHECK_ALLOW flag depends on it.
        let want: HashSet<Net> = allows.iter().copied().collect();
        for net in self.allows.clone().difference(&want) {
            self.remove_allow(net)?;
        }
        for net in allows {
            self.put_allow(net)?;
        }
        let want: HashSet<Net> = bans.iter().map(|(n, _)| *n).collect();
        for net in have.difference(&want) {
            self.remove_ban(net)?;
        }
        for (net, deadline) in bans {
            self.put_ban(net, *deadline)?;
        }
        self.rebuild_dense(bans)?;
        self.write_config()
    }

    /// Recomputes the dense tier from the exact IPv4 bans in `bans` (all of them).
    fn rebuild_dense(&mut self, bans: &[(Net, u64)]) -> Result<(), XdpError> {
        let v4: Vec<(u32, u64)> = bans
            .iter()
            .filter(|(net, _)| net.is_host())
            .filter_map(|(net, deadline)| match net.addr() {
                IpAddr::V4(a) => Some((v4(a), *deadline | self.allow_flag(net))),
                IpAddr::V6(_) => None,
            })
            .collect();
        self.dense.rebuild(&mut self.bans_v4, v4.iter().copied())?;
        info!(
            blocks = self.dense.blocks(),
            "dense tier: /24 blocks with at least {} bans",
            guard_common::DENSE_MIN
        );
        Ok(())
    }

    /// `BAN_CHECK_ALLOW` if `net` overlaps the allowlist, else 0.
    fn allow_flag(&self, net: &Net) -> u64 {
        if self.allows.iter().any(|a| a.overlaps(net)) {
            BAN_CHECK_ALLOW
        } else {
            0
        }
    }

    fn ban_keys(&self) -> Result<HashSet<Net>, XdpError> {
        let mut out = HashSet::new();
        for k in self.bans_v4.keys() {
            out.insert(Net::host(IpAddr::from(
                k.map_err(map_err(MAP_BANS_V4, "iterate"))?.to_ne_bytes(),
            )));
        }
        for k in self.bans_v6.keys() {
            out.insert(Net::host(IpAddr::from(
                k.map_err(map_err(MAP_BANS_V6, "iterate"))?,
            )));
        }
        for k in self.cidr_v4.keys() {
            let k = k.map_err(map_err(MAP_CIDR_V4, "iterate"))?;
            out.insert(Net::new(
                IpAddr::from(k.data().to_ne_bytes()),
                k.prefix_len() as u8,
            ));
        }
        for k in self.cidr_v6.keys() {
            let k = k.map_err(map_err(MAP_CIDR_V6, "iterate"))?;
            out.insert(Net::new(IpAddr::from(k.data()), k.prefix_len() as u8));
        }
        Ok(out)
    }

    fn allow_keys(&self) -> Result<HashSet<Net>, XdpError> {
        let mut out = HashSet::new();
        for k in self.allow_v4.keys() {
            let k = k.map_err(map_err(MAP_ALLOW_V4, "iterate"))?;
            out.insert(Net::new(
                IpAddr::from(k.data().to_ne_bytes()),
                k.prefix_len() as u8,
            ));
        }
        for k in self.allow_v6.keys() {
            let k = k.map_err(map_err(MAP_ALLOW_V6, "iterate"))?;
            out.insert(Net::new(IpAddr::from(k.data()), k.prefix_len() as u8));
        }
        Ok(out)
    }

    /// Inserts or updates a ban; an existing entry keeps its counters.
    pub fn put_ban(&mut self, net: &Net, expires_ns: u64) -> Result<(), XdpError> {
        // Only a ban that overlaps the allowlist makes the program look the allowlist up.
        let expires_ns = expires_ns | self.allow_flag(net);
        let fresh = |old: Option<BanEntry>| BanEntry {
            expires_ns,
            ..old.unwrap_or_default()
        };
        match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => {
                let old = self.bans_v4.get(&v4(a), 0).ok();
                self.bans_v4
                    .insert(v4(a), fresh(old), 0)
                    .map_err(map_err(MAP_BANS_V4, "insert"))?;
                let was_active = self.dense.active();
                self.dense.added(
                    &mut self.bans_v4,
                    v4(a),
                    expires_ns,
                    old.map(|e| e.expires_ns),
                )?;
                // A changed ban (deadline, allowlist flag) must not stay cached per CPU.
                if old.is_some() {
                    self.invalidate_hot()?;
                } else if was_active != self.dense.active() {
                    self.write_config()?;
                }
                Ok(())
            }
            (IpAddr::V6(a), true) => {
                let old = self.bans_v6.get(&a.octets(), 0).ok();
                self.bans_v6
                    .insert(a.octets(), fresh(old), 0)
                    .map_err(map_err(MAP_BANS_V6, "insert"))
            }
            (IpAddr::V4(a), false) => {
                let key = Key::new(u32::from(net.prefix()), v4(a));
                let old = self
                    .cidrs
                    .contains(net)
                    .then(|| self.cidr_v4.get(&key, 0).ok())
                    .flatten();
                self.cidr_v4
                    .insert(&key, fresh(old), 0)
                    .map_err(map_err(MAP_CIDR_V4, "insert"))?;
                self.cidrs.insert(*net);
                self.write_config()
            }
            (IpAddr::V6(a), false) => {
                let key = Key::new(u32::from(net.prefix()), a.octets());
                let old = self
                    .cidrs
                    .contains(net)
                    .then(|| self.cidr_v6.get(&key, 0).ok())
                    .flatten();
                self.cidr_v6
                    .insert(&key, fresh(old), 0)
                    .map_err(map_err(MAP_CIDR_V6, "insert"))?;
                self.cidrs.insert(*net);
                self.write_config()
            }
        }
    }

    /// Removes a ban; absent is not an error.
    pub fn remove_ban(&mut self, net: &Net) -> Result<(), XdpError> {
        let r = match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => {
                // The dense bit goes first: a set bit must always have its exact ban.
                let old = self.bans_v4.get(&v4(a), 0).ok().map(|e| e.expires_ns);
                self.dense.removing(&mut self.bans_v4, v4(a), old)?;
                self.bans_v4.remove(&v4(a))
            }
            (IpAddr::V6(a), true) => self.bans_v6.remove(&a.octets()),
            (IpAddr::V4(a), false) => {
                self.cidrs.remove(net);
                self.cidr_v4
                    .remove(&Key::new(u32::from(net.prefix()), v4(a)))
            }
            (IpAddr::V6(a), false) => {
                self.cidrs.remove(net);
                self.cidr_v6
                    .remove(&Key::new(u32::from(net.prefix()), a.octets()))
            }
        };
        ignore_missing(r, "remove ban")?;
        self.invalidate_hot()
    }

    /// Bumps the generation that every CPU's hot-ban cache is checked against.
    fn invalidate_hot(&mut self) -> Result<(), XdpError> {
        self.settings.generation = self.settings.generation.wrapping_add(1);
        self.write_config()
    }

    /// Drops a CPU has counted against a cached ban but not yet added to its entry.
    fn hot_pending(&self, net: &Net) -> (u64, u64) {
        let IpAddr::V4(a) = net.addr() else {
            return (0, 0);
        };
        if !net.is_host() {
            return (0, 0);
        }
        let Ok(per_cpu) = self.hot.get(&0, 0) else {
            return (0, 0);
        };
        per_cpu
            .iter()
            // Any generation: stale counts are still flushed into the ban (the map is pinned, so
            // this includes drops counted by an earlier instance's program).
            .filter(|h| h.valid != 0 && h.addr == v4(a))
            .fold((0, 0), |(p, b), h| {
                (p + h.pending_packets, b + h.pending_bytes)
            })
    }

    /// The drop counters of a ban, if it is in the maps.
    #[must_use]
    pub fn ban_counters(&self, net: &Net) -> Option<BanCounters> {
        if !net.is_host() && !self.cidrs.contains(net) {
            return None;
        }
        let e = match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => self.bans_v4.get(&v4(a), 0).ok(),
            (IpAddr::V6(a), true) => self.bans_v6.get(&a.octets(), 0).ok(),
            (IpAddr::V4(a), false) => self
                .cidr_v4
                .get(&Key::new(u32::from(net.prefix()), v4(a)), 0)
                .ok(),
            (IpAddr::V6(a), false) => self
                .cidr_v6
                .get(&Key::new(u32::from(net.prefix()), a.octets()), 0)
                .ok(),
        }?;
        let (pending_packets, pending_bytes) = self.hot_pending(net);
        let dense = match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => self.dense.hits(v4(a)).unwrap_or_default(),
            _ => guard_common::DenseHit::default(),
        };
        Some(BanCounters {
            packets: e.packets + pending_packets + dense.packets,
            bytes: e.bytes + pending_bytes + dense.bytes,
            last_hit_ns: e.last_hit_ns.max(dense.last_hit_ns),
        })
    }

    /// Adds an allowlist entry.
    pub fn put_allow(&mut self, net: &Net) -> Result<(), XdpError> {
        match net.addr() {
            IpAddr::V4(a) => {
                let key = Key::new(u32::from(net.prefix()), v4(a));
                self.allow_v4
                    .insert(&key, 1, 0)
                    .map_err(map_err(MAP_ALLOW_V4, "insert"))?;
            }
            IpAddr::V6(a) => {
                let key = Key::new(u32::from(net.prefix()), a.octets());
                self.allow_v6
                    .insert(&key, 1, 0)
                    .map_err(map_err(MAP_ALLOW_V6, "insert"))?;
            }
        }
        self.allows.insert(*net);
        self.write_config()
    }

    /// Removes an allowlist entry; absent is not an error.
    pub fn remove_allow(&mut self, net: &Net) -> Result<(), XdpError> {
        let r = match net.addr() {
            IpAddr::V4(a) => self
                .allow_v4
                .remove(&Key::new(u32::from(net.prefix()), v4(a))),
            IpAddr::V6(a) => self
                .allow_v6
                .remove(&Key::new(u32::from(net.prefix()), a.octets())),
        };
        self.allows.remove(net);
        ignore_missing(r, "remove allow")?;
        self.write_config()
    }

    /// /24 blocks in the dense tier, and how often a block qualified but every slot was taken.
    #[must_use]
    pub fn dense(&self) -> (usize, u64) {
        (self.dense.blocks(), self.dense.full())
    }

    /// Global counters summed over CPUs, indexed by `STAT_*` (with the drops the hot-ban
    /// cache has not flushed yet).
    pub fn stats(&self) -> Result<[u64; STAT_COUNT as usize], XdpError> {
        let mut out = [0u64; STAT_COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = self
                .stats
                .get(&(i as u32), 0)
                .map_err(map_err(MAP_STATS, "get"))?;
            *slot = values.iter().sum();
        }
        if let Ok(hot) = self.hot.get(&0, 0) {
            out[guard_common::STAT_DROP_BAN_EXACT as usize] += hot
                .iter()
                .filter(|h| h.valid != 0)
                .map(|h| h.pending_packets)
                .sum::<u64>();
        }
        Ok(out)
    }

    /// Detaches the program and removes every pin of this instance. Used when
    /// `keep_attached = false`; otherwise the pins keep enforcing after exit.
    pub fn detach_and_unpin(self) {
        for (iface, link) in self.links {
            match link.unpin() {
                Ok(fd) => drop(fd),
                Err(e) => warn!(interface = %iface, "cannot unpin link: {e}"),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.pin_dir) {
            warn!(dir = %self.pin_dir.display(), "cannot remove pins: {e}");
        }
    }
}

fn ignore_missing(r: Result<(), MapError>, op: &'static str) -> Result<(), XdpError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map_err(map_err("ban/allow", op)),
    }
}

#[cfg(test)]
mod tests;
