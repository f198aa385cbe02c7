//! Attaching `xdp_guard` to interfaces (replacing the program of a link an earlier instance
//! pinned), pinning links, and making sure the pin directory is on a bpffs.
use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp as XdpProgram, XdpMode as AyaMode};
use tracing::{info, warn};

use nix::mount::{MsFlags, mount};
use nix::net::if_::if_nametoindex;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use super::XdpError;
use crate::config::XdpMode;

/// Attaches `prog` to `iface`, replacing the program of a link pinned there by an earlier
/// instance, and pins the new link. Returns the pinned link and the mode name.
pub(super) fn attach(
    prog: &mut XdpProgram,
    iface: &str,
    mode: XdpMode,
    pin_dir: &Path,
) -> Result<(PinnedLink, &'static str), XdpError> {
    let ifindex = if_nametoindex(iface)
        .ok()
        .filter(|&i| i != 0)
        .ok_or_else(|| XdpError::UnknownInterface {
            name: iface.to_owned(),
        })?;
    let pin = pin_dir.join(format!("link_{iface}"));
    let mode_file = pin_dir.join(format!("link_{iface}.mode"));
    // An earlier instance left its link pinned: swap our program into it atomically.
    if let Ok(old) = PinnedLink::from_pin(&pin) {
        let replaced = old
            .unpin()
            .map_err(|e| e.to_string())
            .and_then(|fd| XdpLink::try_from(fd).map_err(|e| e.to_string()))
            .and_then(|link| prog.attach_to_link(link).map_err(|e| e.to_string()));
        match replaced {
            Ok(id) => {
                // bpffs holds no regular files: the mode is the target of a symbolic link.
                let mode = std::fs::read_link(&mode_file).ok().map_or("native", |m| {
                    if m.as_os_str() == "generic" {
                        "generic"
                    } else {
                        "native"
                    }
                });
                return Ok((pin_link(prog, id, &pin)?, mode));
            }
            Err(e) => warn!(
                interface = iface,
                "pinned link unusable ({e}); attaching afresh"
            ),
        }
    }
    let (id, name) = match mode {
        XdpMode::Generic => (
            try_attach(prog, ifindex, iface, AyaMode::Skb, "generic")?,
            "generic",
        ),
        XdpMode::Native => (
            try_attach(prog, ifindex, iface, AyaMode::Driver, "native")?,
            "native",
        ),
        XdpMode::Auto => match prog.attach_to_if_index(ifindex, AyaMode::Driver) {
            Ok(id) => (id, "native"),
            Err(e) => {
                warn!(
                    interface = iface,
                    "native XDP unavailable ({e}); falling back to generic mode"
                );
                (
                    try_attach(prog, ifindex, iface, AyaMode::Skb, "generic")?,
                    "generic",
                )
            }
        },
    };
    let _ = std::fs::remove_file(&mode_file);
    if let Err(e) = std::os::unix::fs::symlink(name, &mode_file) {
        warn!(
            interface = iface,
            "cannot record the XDP mode in {}: {e}",
            mode_file.display()
        );
    }
    Ok((pin_link(prog, id, &pin)?, name))
}

fn try_attach(
    prog: &mut XdpProgram,
    ifindex: u32,
    iface: &str,
    mode: AyaMode,
    name: &'static str,
) -> Result<aya::programs::xdp::XdpLinkId, XdpError> {
    prog.attach_to_if_index(ifindex, mode)
        .map_err(|source| XdpError::Attach {
            iface: iface.to_owned(),
            mode: name,
            source,
        })
}

fn pin_link(
    prog: &mut XdpProgram,
    id: aya::programs::xdp::XdpLinkId,
    pin: &Path,
) -> Result<PinnedLink, XdpError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| XdpError::Pin {
        path: pin.to_owned(),
        source,
    };
    let link = prog.take_link(id).map_err(|e| err(Box::new(e)))?;
    let fd = FdLink::try_from(link).map_err(|e| err(Box::new(e)))?;
    fd.pin(pin).map_err(|e| err(Box::new(e)))
}

/// Makes sure `dir` lies on a bpffs, mounting one at /sys/fs/bpf if nothing is mounted there.
pub(super) fn ensure_bpffs(dir: &Path) -> Result<(), XdpError> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if on_bpffs(&probe) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !on_bpffs(root) {
        let _ = std::fs::create_dir_all(root);
        return match mount(
            Some("bpf"),
            root,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        ) {
            Ok(()) => {
                info!("mounted bpffs at /sys/fs/bpf");
                Ok(())
            }
            Err(e) => Err(XdpError::Bpffs {
                message: format!("cannot mount bpffs at /sys/fs/bpf: {e}"),
            }),
        };
    }
    Err(XdpError::Bpffs {
        message: format!(
            "{} is not on a bpffs mount (set xdp.pin_dir under /sys/fs/bpf)",
            dir.display()
        ),
    })
}

fn on_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// The interface of the IPv4 default route, from /proc/net/route.
pub fn default_route_interface() -> Result<String, XdpError> {
    let table = std::fs::read_to_string("/proc/net/route").map_err(|_| XdpError::NoDefaultRoute)?;
    parse_default_route(&table).ok_or(XdpError::NoDefaultRoute)
}

pub(super) fn parse_default_route(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let (iface, dest) = (f.next()?, f.next()?);
        (dest == "00000000").then(|| iface.to_owned())
    })
}
