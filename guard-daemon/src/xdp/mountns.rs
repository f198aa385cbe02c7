//! Whether guard's pins outlive it. XDP stays attached and bans stay enforced after guard exits
//! only because its maps and link are pinned on a bpffs; a bpffs mounted inside a mount
//! namespace of guard's own (as `ip netns exec` or `unshare -m` make one, with a fresh `/sys`)
//! goes away with the last process in that namespace, and the pins, the link and the program
//! with it. Seen from the host's mount namespace (through `/proc/1/root`, or kthreadd's
//! `/proc/2/root` where pid 1 is closed to guard), such a pin directory is missing or is
//! another directory: that is what [`pins_outlive_process`] checks.
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Where guard's pins live, as far as outliving guard goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinScope {
    /// The host sees the same pin directory: the pins outlive guard.
    Shared,
    /// The host does not see this pin directory: the pins end with guard's mount namespace.
    Private {
        /// This process's and the host's mount namespaces (`mnt:[4026531841]`), when readable.
        own_ns: Option<String>,
        host_ns: Option<String>,
    },
    /// It cannot be told (no access to the host's view).
    Unknown,
}

/// A process of the host's mount namespace whose view guard can read: pid 1, or else
/// kthreadd (pid 2), since kernel threads always live in the initial mount namespace (some
/// sandboxes close pid 1 to other processes).
fn host_proc() -> Option<PathBuf> {
    let readable = |dir: &Path| std::fs::metadata(dir.join("root/")).is_ok();
    let init = Path::new("/proc/1");
    if readable(init) {
        return Some(init.to_owned());
    }
    let kthreadd = Path::new("/proc/2");
    let comm = std::fs::read_to_string(kthreadd.join("comm")).ok()?;
    (comm.trim() == "kthreadd" && readable(kthreadd)).then(|| kthreadd.to_owned())
}

/// Looks at `pin_dir` from this process and from the host's mount namespace.
#[must_use]
pub fn pins_outlive_process(pin_dir: &Path) -> PinScope {
    let Ok(own) = std::fs::metadata(pin_dir) else {
        return PinScope::Unknown;
    };
    let (Ok(relative), Some(host)) = (pin_dir.strip_prefix("/"), host_proc()) else {
        return PinScope::Unknown;
    };
    let from_host = host.join("root").join(relative);
    let private = || PinScope::Private {
        own_ns: ns_of(Path::new("/proc/self/ns/mnt")),
        host_ns: ns_of(&host.join("ns/mnt")),
    };
    match std::fs::metadata(&from_host) {
        Ok(host) if host.dev() == own.dev() && host.ino() == own.ino() => PinScope::Shared,
        Ok(_) => private(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => private(),
        Err(_) => PinScope::Unknown,
    }
}

fn ns_of(link: &Path) -> Option<String> {
    std::fs::read_link(link)
        .ok()
        .map(PathBuf::into_os_string)
        .and_then(|s| s.into_string().ok())
}

impl PinScope {
    /// The warning given at start when the pins end with guard, `None` otherwise.
    #[must_use]
    pub fn warning(&self, pin_dir: &Path) -> Option<String> {
        let Self::Private { own_ns, host_ns } = self else {
            return None;
        };
        let namespaces = match (own_ns, host_ns) {
            (Some(own), Some(host)) if own != host => {
                format!(" (guard runs in mount namespace {own}, the host in {host})")
            }
            _ => String::new(),
        };
        Some(format!(
            "xdp.pin_dir {} is on a bpffs that only guard's own mount namespace sees{namespaces}, \
             as when started under `ip netns exec` or `unshare -m`: enforcement ends with this \
             process, since the pins, the XDP program and its bans go with that namespace when \
             guard exits; to keep XDP attached across restarts, start guard in the host's mount \
             namespace (for `ip netns exec`, `nsenter --net=/run/netns/NAME guard run` instead)",
            pin_dir.display()
        ))
    }

    /// True when the pins end with this process.
    #[must_use]
    pub fn ends_with_process(&self) -> bool {
        matches!(self, Self::Private { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_scope_warns_naming_the_directory_and_namespaces() {
        let dir = Path::new("/sys/fs/bpf/guard");
        let w = PinScope::Private {
            own_ns: Some("mnt:[4026532300]".into()),
            host_ns: Some("mnt:[4026531841]".into()),
        }
        .warning(dir)
        .unwrap();
        assert!(
            w.starts_with(
                "xdp.pin_dir /sys/fs/bpf/guard is on a bpffs that only guard's own mount \
                 namespace sees (guard runs in mount namespace mnt:[4026532300], the host in \
                 mnt:[4026531841])"
            ),
            "{w}"
        );
        assert!(w.contains("enforcement ends with this process"), "{w}");
        assert_eq!(PinScope::Shared.warning(dir), None);
        assert_eq!(PinScope::Unknown.warning(dir), None);
        assert!(!PinScope::Unknown.ends_with_process());
    }

    /// A directory that is not there is not called private.
    #[test]
    fn a_missing_directory_cannot_be_told() {
        assert_eq!(
            pins_outlive_process(Path::new("/nonexistent/guard-pins")),
            PinScope::Unknown
        );
    }
}
