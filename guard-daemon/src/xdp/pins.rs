//! The pin directory: the layout version of the maps pinned in it, and removing exactly the pins
//! guard made there.
//!
//! bpffs holds no regular files, so the version is a symbolic link, `<pin_dir>/layout`, whose
//! target is [`LAYOUT_VERSION`] (computed from the map table in `guard_common::layout`). Maps
//! pinned under another version (or by a guard that wrote none, unless each of them is exactly
//! what this build creates) are never reused: the daemon
//! refuses to start, or, with `guard run --replace-pins`, unpins them and builds new ones from
//! the store. The old maps live on with the program that still uses them, so bans stay enforced
//! until the new program takes over the pinned link.
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use guard_common::layout::{LAYOUT_VERSION, PINNED_MAPS};
use nix::sys::stat::stat;
use tracing::{info, warn};

use super::XdpError;

/// Name of the layout link in the pin directory.
pub const LAYOUT_FILE: &str = "layout";

/// The version the pins in `dir` were made with: `None` when there is no layout link.
pub fn read_layout(dir: &Path) -> Result<Option<String>, XdpError> {
    match std::fs::read_link(dir.join(LAYOUT_FILE)) {
        Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(XdpError::Bpffs {
            message: format!("cannot read {}: {e}", dir.join(LAYOUT_FILE).display()),
        }),
    }
}

fn write_layout(dir: &Path) -> Result<(), XdpError> {
    let file = dir.join(LAYOUT_FILE);
    remove_if_present(&file)?;
    std::os::unix::fs::symlink(LAYOUT_VERSION, &file).map_err(|e| XdpError::Bpffs {
        message: format!("cannot write {}: {e}", file.display()),
    })
}

/// Before the maps are loaded: makes sure the maps pinned in `dir` (if any) have this build's
/// layout. Different ones are refused, or, with `replace`, unpinned so that the load creates
/// new ones.
pub fn check_layout(dir: &Path, replace: bool) -> Result<(), XdpError> {
    let found = read_layout(dir)?;
    let pinned: Vec<&str> = PINNED_MAPS
        .iter()
        .map(|m| m.name)
        .filter(|name| dir.join(name).exists())
        .collect();
    match &found {
        Some(v) if v == LAYOUT_VERSION => return Ok(()),
        None if pinned.is_empty() => return write_layout(dir),
        // Pinned by a guard that wrote no version (before versions existed): adopted only if
        // every pinned map is exactly what this build would create.
        None if pinned.iter().all(|name| matches_table(dir, name)) => {
            info!(
                dir = %dir.display(),
                "pins without a layout version match this build's maps: reused, version written"
            );
            return write_layout(dir);
        }
        _ => {}
    }
    let found = found.unwrap_or_else(|| {
        let differ: Vec<&str> = pinned
            .iter()
            .copied()
            .filter(|name| !matches_table(dir, name))
            .collect();
        format!(
            "none (pinned by a guard without layout versions; maps that differ: {})",
            differ.join(", ")
        )
    });
    if !replace {
        return Err(XdpError::Layout {
            dir: dir.to_owned(),
            found,
            want: LAYOUT_VERSION,
        });
    }
    warn!(
        dir = %dir.display(),
        found = %found,
        want = LAYOUT_VERSION,
        "--replace-pins: unpinning the maps of another layout; new ones are built from the store"
    );
    for name in pinned {
        remove_if_present(&dir.join(name))?;
    }
    write_layout(dir)
}

/// Whether the map pinned as `dir/name` has the type, sizes, capacity and flags the table gives.
fn matches_table(dir: &Path, name: &str) -> bool {
    let Some(want) = PINNED_MAPS.iter().find(|m| m.name == name) else {
        return false;
    };
    MapInfo::from_pin(dir.join(name)).is_ok_and(|info| {
        info.map_type().is_ok_and(|t| t as u32 == want.map_type)
            && info.key_size() == want.key_size
            && info.value_size() == want.value_size
            && info.max_entries() == want.max_entries
            && info.map_flags() == want.flags
    })
}

fn remove_if_present(path: &Path) -> Result<(), XdpError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(XdpError::Bpffs {
            message: format!("cannot remove {}: {e}", path.display()),
        }),
    }
}

/// The pins guard makes in a pin directory for the given interfaces.
#[must_use]
pub fn own_pins(dir: &Path, interfaces: &[String]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = PINNED_MAPS.iter().map(|m| dir.join(m.name)).collect();
    for iface in interfaces {
        out.push(dir.join(format!("link_{iface}")));
        out.push(dir.join(format!("link_{iface}.mode")));
    }
    out.push(dir.join(LAYOUT_FILE));
    out
}

/// Removes guard's own pins from `dir`, and `dir` itself only if nothing else is left in it.
pub fn remove_own(dir: &Path, interfaces: &[String]) {
    for path in own_pins(dir, interfaces) {
        if let Err(e) = remove_if_present(&path) {
            warn!("{e}");
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(_) => info!(
            dir = %dir.display(),
            "pin directory kept: it holds files guard did not make"
        ),
    }
}

/// Refuses a pin directory that is the root of a bpffs mount (`/sys/fs/bpf` itself): guard
/// needs a directory of its own there, since it creates and removes pins by name.
pub fn refuse_bpffs_root(dir: &Path) -> Result<(), XdpError> {
    let Some(parent) = dir.parent() else {
        return Err(XdpError::PinDirRoot {
            dir: dir.to_owned(),
        });
    };
    // A mount point has another device than its parent.
    if let (Ok(d), Ok(p)) = (stat(dir), stat(parent))
        && d.st_dev != p.st_dev
    {
        return Err(XdpError::PinDirRoot {
            dir: dir.to_owned(),
        });
    }
    Ok(())
}
