//! The XDP side of guard: loads and attaches `xdp_guard`, and is the only code that touches its
//! BPF maps. Maps and links are pinned under the configured bpffs directory so that a restarted
//! daemon picks them up again (no window without enforcement) and several instances never collide.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::links::PinnedLink;
use aya::programs::{ProgramError, SocketFilter, Xdp as XdpProgram};
use aya::{Ebpf, EbpfLoader};
use guard_common::dense::{DenseError, DenseTier};
use guard_common::{
    BanEntry, CFG_HAVE_ALLOW_V4, CFG_HAVE_ALLOW_V6, CFG_HAVE_CIDR_V4, CFG_HAVE_CIDR_V6,
    CFG_HAVE_DENSE_V4, HotBan, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_CIDR_V4,
    MAP_CIDR_V6, MAP_CONFIG, MAP_DENSE, MAP_DENSE_HITS, MAP_DENSE_INDEX, MAP_DENSE_V16, MAP_EVENTS,
    MAP_HOT, MAP_STATS, MAP_TAP_PORTS, PROG_HTTP_TAP, PROG_XDP_GUARD, STAT_COUNT,
    XdpConfig as MapConfig,
};
use tracing::{info, warn};

mod attach;
mod batch;
mod log;
mod maps;
pub use attach::default_route_interface;
use attach::{attach, ensure_bpffs};
pub use log::{EbpfLog, EbpfLogLevel, forward as forward_ebpf_log};

use crate::config::XdpConfig;
use crate::net::Net;

/// The eBPF object, built by `cargo xtask build` into `$GUARD_EBPF_DIR`; build.rs embeds an empty
/// stub instead when it is missing or stale (see [`EBPF_STUB`]).
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("GUARD_EBPF_OBJECT"));

/// Whether this binary was built without the eBPF programs (stable Rust only): it can check
/// configs, inspect requests and talk to a daemon, but refuses `guard run`.
pub const EBPF_STUB: bool = cfg!(guard_ebpf_stub);

/// Errors of the XDP layer.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("cannot load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("cannot open the eBPF programs' log ring")]
    Log(#[source] aya_log::Error),
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
    /// The reader of the programs' log ring, when `--ebpf-log` asked for one.
    ebpf_log: Option<EbpfLog>,
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
        let log_level = cfg.ebpf_log.global();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&cfg.pin_dir)
            // aya-log-ebpf's default is "everything": always say what is wanted.
            .override_global(aya_log::LEVEL, &log_level, true)
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
        // After the program is loaded: the reader takes the ring out of `ebpf` (its fd stays open
        // with the reader).
        let ebpf_log = log::open(&mut ebpf, cfg.ebpf_log)?;
        let mut xdp = Self {
            ebpf_log,
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

    /// The reader of the programs' log (once; `None` when the log is off), for
    /// [`forward_ebpf_log`].
    pub fn take_ebpf_log(&mut self) -> Option<EbpfLog> {
        self.ebpf_log.take()
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

#[cfg(test)]
mod tests;
