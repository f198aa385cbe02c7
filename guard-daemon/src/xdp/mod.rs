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
mod fill;
mod log;
mod lookup;
mod maps;
mod mountns;
pub mod pins;
pub use attach::default_route_interface;
use attach::{attach, ensure_bpffs};
use fill::{Fill, Which};
pub use fill::{MapFill, WARN_PERCENT};
pub use log::{EbpfLog, EbpfLogLevel, forward as forward_ebpf_log};
pub use lookup::{BanHit, BanMaps};
pub use mountns::{PinScope, pins_outlive_process};

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
    /// A ban or allowlist entry the map cannot hold; nothing was changed.
    #[error("{map} full: {capacity}")]
    Full { map: &'static str, capacity: u32 },
    #[error(
        "the maps pinned in {dir} have layout {found}, this guard needs {want}: they are not \
         reused. Start with `guard run --replace-pins` to unpin them and rebuild the maps from the \
         store (the old program keeps enforcing the old maps until the new one replaces it)"
    )]
    Layout {
        dir: PathBuf,
        found: String,
        want: &'static str,
    },
    #[error(
        "xdp.pin_dir {dir} is the root of a bpffs mount: give guard a directory of its own \
         below it (default /sys/fs/bpf/guard)"
    )]
    PinDirRoot { dir: PathBuf },
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
    /// The program's settings as this instance wants them in `CONFIG` (flags from the maps).
    settings: MapConfig,
    /// What `CONFIG` holds, as last read or written: unchanged settings are not written again.
    written: MapConfig,
    /// This configuration's rate settings (`cost_ns`, `cap_ns`, `event_window_ns`), applied by
    /// [`Xdp::commit_settings`] once the start has succeeded: until then the program keeps the
    /// ones it runs with.
    wanted: MapConfig,
    /// CIDR bans and allowlist entries in the maps, mirrored here: an LPM lookup returns the
    /// longest match, so only this tells whether an exact prefix is present, and the counts
    /// per family set the `CFG_HAVE_*` flags.
    cidrs: HashSet<Net>,
    allows: HashSet<Net>,
    /// Entries per ban and allowlist map.
    fill: Fill,
    /// Bans and allowlist entries the last `reconcile` could not fit into the maps.
    skipped: u64,
    links: Vec<(String, PinnedLink)>,
    /// Interfaces to attach to (resolved at open), and those attached with their mode.
    names: Vec<String>,
    mode: crate::config::XdpMode,
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

/// The `xdp_guard` program of a loaded object.
fn xdp_guard(ebpf: &mut aya::Ebpf) -> Result<&mut XdpProgram, XdpError> {
    ebpf.program_mut(PROG_XDP_GUARD)
        .ok_or(XdpError::Missing {
            what: "program",
            name: PROG_XDP_GUARD,
        })?
        .try_into()
        .map_err(|source| XdpError::Program {
            name: PROG_XDP_GUARD,
            source,
        })
}

/// Runs a program load, again (up to five tries in all) when the kernel answers `EAGAIN`: the
/// verifier gives up with it when a signal arrives while it works, and the same load then
/// succeeds (libbpf retries likewise).
fn load_retrying(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    let mut tries = 1;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(nix::errno::Errno::EAGAIN as i32)
                    && tries < 5 =>
            {
                tries += 1;
                warn!("the kernel's verifier was interrupted (EAGAIN): loading again");
            }
            other => return other,
        }
    }
}

fn map_err(name: &'static str, op: &'static str) -> impl FnOnce(MapError) -> XdpError {
    move |source| XdpError::Map { name, op, source }
}

fn v4(a: std::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

impl Xdp {
    /// Loads the program, reusing the maps pinned by an earlier instance (refused if their layout
    /// differs, unless `replace_pins`). Nothing the running program sees changes: `CONFIG`
    /// keeps its settings (at most its flags are set to what the maps hold), and the program is
    /// attached only by [`Xdp::attach`], once the maps have been rebuilt.
    pub fn open(cfg: &XdpConfig) -> Result<Self, XdpError> {
        ensure_bpffs(&cfg.pin_dir)?;
        std::fs::create_dir_all(&cfg.pin_dir).map_err(|e| XdpError::Bpffs {
            message: format!("cannot create {}: {e}", cfg.pin_dir.display()),
        })?;
        pins::refuse_bpffs_root(&cfg.pin_dir)?;
        pins::check_layout(&cfg.pin_dir, cfg.replace_pins)?;
        let log_level = cfg.ebpf_log.global();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&cfg.pin_dir)
            // aya-log-ebpf's default is "everything": always say what is wanted.
            .override_global(aya_log::LEVEL, &log_level, true)
            .load(OBJECT)
            .map_err(|e| XdpError::Load(Box::new(e)))?;
        {
            let prog = xdp_guard(&mut ebpf)?;
            load_retrying(|| prog.load()).map_err(|source| XdpError::Program {
                name: PROG_XDP_GUARD,
                source,
            })?;
        }
        let names = if cfg.interfaces.is_empty() {
            vec![default_route_interface()?]
        } else {
            cfg.interfaces.clone()
        };
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
        let config: Array<MapData, MapConfig> = take!(ebpf, MAP_CONFIG);
        // What the running program (if any) works with: kept until the start has succeeded.
        let running = config.get(&0, 0).map_err(map_err(MAP_CONFIG, "get"))?;
        let cost_ns = 1_000_000_000_u64
            .checked_div(cfg.rate_limit_pps)
            .unwrap_or(0);
        let burst = if cfg.rate_limit_burst == 0 {
            cfg.rate_limit_pps
        } else {
            cfg.rate_limit_burst
        };
        let mut xdp = Self {
            ebpf_log,
            dense,
            bans_v4: take!(ebpf, MAP_BANS_V4),
            bans_v6: take!(ebpf, MAP_BANS_V6),
            cidr_v4: take!(ebpf, MAP_CIDR_V4),
            cidr_v6: take!(ebpf, MAP_CIDR_V6),
            allow_v4: take!(ebpf, MAP_ALLOW_V4),
            allow_v6: take!(ebpf, MAP_ALLOW_V6),
            config,
            stats: take!(ebpf, MAP_STATS),
            events: Some(take!(ebpf, MAP_EVENTS)),
            tap_ports: take!(ebpf, MAP_TAP_PORTS),
            hot: take!(ebpf, MAP_HOT),
            tap_set: Vec::new(),
            ebpf,
            settings: running,
            written: running,
            wanted: MapConfig {
                flags: 0,
                cost_ns,
                cap_ns: cost_ns.saturating_mul(burst),
                event_window_ns: cfg.rate_event_window.as_nanos() as u64,
                generation: 0,
            },
            cidrs: HashSet::new(),
            allows: HashSet::new(),
            fill: Fill::default(),
            skipped: 0,
            links: Vec::new(),
            names,
            mode: cfg.mode,
            interfaces: Vec::new(),
            pin_dir: cfg.pin_dir.clone(),
        };
        // The flags follow what the pinned maps hold (an LPM key walk: bounded by the CIDR and
        // allowlist capacities); with maps as an earlier instance left them this writes nothing.
        xdp.read_cidrs_and_allows()?;
        xdp.write_config()?;
        Ok(xdp)
    }

    /// Attaches the program to each interface, atomically replacing the program of a link
    /// pinned by an earlier instance (which until then keeps enforcing with the same maps, or,
    /// after `--replace-pins`, with its own).
    pub fn attach(&mut self) -> Result<(), XdpError> {
        let prog = xdp_guard(&mut self.ebpf)?;
        for iface in &self.names {
            if self.links.iter().any(|(n, _)| n == iface) {
                continue;
            }
            let (link, mode) = attach(prog, iface, self.mode, &self.pin_dir)?;
            info!(interface = %iface, mode, "xdp_guard attached");
            self.interfaces.push((iface.clone(), mode));
            self.links.push((iface.clone(), link));
        }
        Ok(())
    }

    /// Applies this configuration's rate settings and starts a new hot-cache generation: called
    /// once the start has succeeded, so that a failed start leaves the running program's
    /// settings as they were.
    pub fn commit_settings(&mut self) -> Result<(), XdpError> {
        self.settings.cost_ns = self.wanted.cost_ns;
        self.settings.cap_ns = self.wanted.cap_ns;
        self.settings.event_window_ns = self.wanted.event_window_ns;
        self.settings.generation = self.settings.generation.wrapping_add(1);
        self.write_config()
    }

    /// The interfaces guard attaches to (known before [`Xdp::attach`]).
    #[must_use]
    pub fn interface_names(&self) -> &[String] {
        &self.names
    }

    /// Each ban and allowlist map's entries and capacity.
    #[must_use]
    pub fn fill(&self) -> Vec<MapFill> {
        self.fill.all()
    }

    /// Bans and allowlist entries the last rebuild of the maps could not fit (each was logged
    /// with its key).
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped
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
            load_retrying(|| prog.load()).map_err(err)?;
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

    /// Writes the settings, with the flags of what the maps hold, if they differ from what
    /// `CONFIG` holds.
    fn write_config(&mut self) -> Result<(), XdpError> {
        let mut flags = 0;
        for (which, bit) in [
            (Which::CidrV4, CFG_HAVE_CIDR_V4),
            (Which::CidrV6, CFG_HAVE_CIDR_V6),
            (Which::AllowV4, CFG_HAVE_ALLOW_V4),
            (Which::AllowV6, CFG_HAVE_ALLOW_V6),
        ] {
            if self.fill.entries(which) > 0 {
                flags |= bit;
            }
        }
        if self.dense.active() {
            flags |= CFG_HAVE_DENSE_V4;
        }
        self.settings.flags = flags;
        if self.settings == self.written {
            return Ok(());
        }
        self.config
            .set(0, self.settings, 0)
            .map_err(map_err(MAP_CONFIG, "set"))?;
        self.written = self.settings;
        Ok(())
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

    /// Detaches the program and removes the pins this instance made (maps, links, the layout
    /// link; nothing else in the directory). Used when `keep_attached = false`; otherwise the
    /// pins keep enforcing after exit.
    pub fn detach_and_unpin(self) {
        for (iface, link) in self.links {
            match link.unpin() {
                Ok(fd) => drop(fd),
                Err(e) => warn!(interface = %iface, "cannot unpin link: {e}"),
            }
        }
        pins::remove_own(&self.pin_dir, &self.names);
    }
}

#[cfg(test)]
mod tests;
