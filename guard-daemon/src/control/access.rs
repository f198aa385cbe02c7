//! Who may use the control socket. The file system keeps everyone else out (the socket's
//! directory is 0700 and the socket 0600, both root's; with `daemon.socket_group` 0750 and 0660
//! with that group), and each connection's caller is checked again with `SO_PEERCRED` (and
//! `SO_PEERGROUPS` for its supplementary groups): root may ask anything, a member of the group
//! only what changes nothing ([`Request::changes`]).
use std::os::fd::AsFd;

use nix::libc;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group};

use super::{ControlError, Request};
use crate::config::DaemonConfig;

/// `SO_PEERGROUPS` (Linux 4.13; the same number on every architecture guard builds for): the
/// peer's supplementary groups when it connected.
const SO_PEERGROUPS: libc::c_int = 59;

/// The group given read-only access (`daemon.socket_group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

/// Who may do what on the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Members may read; `None`: root only.
    group: Option<SocketGroup>,
    /// The daemon's own user, which may do everything too (root when run as a service).
    admin_uid: u32,
}

impl Default for Access {
    fn default() -> Self {
        Self::root_only()
    }
}

/// A caller, as the kernel saw it connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Its supplementary groups (`SO_PEERGROUPS`; empty if the kernel did not say).
    pub groups: Vec<u32>,
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Root (or the daemon's user): every request.
    Admin,
    /// A member of `daemon.socket_group`: requests that change nothing.
    Reader,
    /// Anyone else: nothing.
    Stranger,
}

impl Access {
    /// Root (and the daemon's own user) only.
    #[must_use]
    pub fn root_only() -> Self {
        Self {
            group: None,
            admin_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// Root, and the members of `group` for reading.
    #[must_use]
    pub fn with_group(group: SocketGroup) -> Self {
        Self {
            group: Some(group),
            ..Self::root_only()
        }
    }

    /// The access `daemon.socket_group` asks for; the group must exist (a name, or a number).
    pub fn from_config(daemon: &DaemonConfig) -> Result<Self, ControlError> {
        let Some(name) = daemon.socket_group.as_deref() else {
            return Ok(Self::root_only());
        };
        let unknown = |why: String| ControlError::UnknownGroup {
            name: name.to_owned(),
            why,
        };
        let gid = match Group::from_name(name) {
            Ok(Some(g)) => g.gid.as_raw(),
            Ok(None) => match name.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => return Err(unknown("no such group".into())),
            },
            Err(e) => return Err(unknown(e.desc().to_owned())),
        };
        Ok(Self::with_group(SocketGroup {
            name: name.to_owned(),
            gid,
        }))
    }

    /// The read-only group, if any.
    #[must_use]
    pub fn group(&self) -> Option<&SocketGroup> {
        self.group.as_ref()
    }

    /// The socket directory's mode: 0750 with a group, else 0700.
    #[must_use]
    pub fn dir_mode(&self) -> u32 {
        if self.group.is_some() { 0o750 } else { 0o700 }
    }

    /// The socket's mode: 0660 with a group, else 0600.
    #[must_use]
    pub fn socket_mode(&self) -> u32 {
        if self.group.is_some() { 0o660 } else { 0o600 }
    }

    /// What `peer` may do.
    #[must_use]
    pub fn role(&self, peer: &Peer) -> Role {
        if peer.uid == 0 || peer.uid == self.admin_uid {
            return Role::Admin;
        }
        match &self.group {
            Some(g) if peer.gid == g.gid || peer.groups.contains(&g.gid) => Role::Reader,
            _ => Role::Stranger,
        }
    }

    /// Why `peer` may not connect at all, if it may not.
    #[must_use]
    pub fn refuse_connection(&self, peer: &Peer) -> Option<String> {
        (self.role(peer) == Role::Stranger).then(|| match &self.group {
            Some(g) => format!(
                "permission denied: uid {} is neither root nor a member of group {} \
                 (daemon.socket_group)",
                peer.uid, g.name
            ),
            None => format!(
                "permission denied: the control socket is root-only (uid {}; set \
                 daemon.socket_group to let a group read)",
                peer.uid
            ),
        })
    }

    /// Why `peer` may not make `request`, if it may not.
    #[must_use]
    pub fn refuse_request(&self, peer: &Peer, request: &Request) -> Option<String> {
        match self.role(peer) {
            Role::Admin => None,
            Role::Reader if !request.changes() => None,
            Role::Reader => Some(format!(
                "permission denied: `{}` needs root; uid {} may only read",
                request.command(),
                peer.uid
            )),
            Role::Stranger => self.refuse_connection(peer),
        }
    }
}

impl Peer {
    /// The caller connected on `stream`, from the kernel.
    pub fn of(stream: &impl AsFd) -> std::io::Result<Self> {
        let cred = getsockopt(stream, PeerCredentials)?;
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            groups: peer_groups(stream).unwrap_or_default(),
        })
    }
}

/// The peer's supplementary groups (`SO_PEERGROUPS`).
fn peer_groups(stream: &impl AsFd) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_fd().as_raw_fd();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `groups` is a live buffer of `len` bytes, which the kernel writes at most;
        // `len` is a valid pointer it updates with the size written (or needed, on ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let n = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() {
            return Err(e);
        }
        groups.resize(n, 0);
    }
    Err(std::io::Error::from_raw_os_error(libc::ERANGE))
}

/// The group id of `name`, for messages and tests.
#[must_use]
pub fn gid_of(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The group `gid`'s name, or the number.
#[must_use]
pub fn group_name(gid: u32) -> String {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}
