//! File modes of what guard keeps on disk. `guard run` works under umask 077 ([`private_umask`]),
//! so every file and directory it creates (the sled databases, the control socket, their
//! directories) is its user's alone from the start. The state directory is made 0700 and the
//! files in it 0600 at each start, whatever an earlier version or an operator left
//! ([`private_tree`]); the control socket's directory is checked more strictly: another owner
//! or a mode looser than guard would set refuses the start ([`check_private_dir`]).
use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, chown};

/// Errors making or checking a private directory.
#[derive(Debug, thiserror::Error)]
pub enum PermsError {
    #[error(
        "{what} {path} has mode {mode:04o} and owner uid {uid} (group {group}): it must be \
         owned by uid {want_uid} and open to nobody else{allowed}; {fix}"
    )]
    Unsafe {
        what: &'static str,
        path: PathBuf,
        mode: u32,
        uid: u32,
        group: String,
        want_uid: u32,
        /// What else is allowed (", 0750 with group guard-ro" or "").
        allowed: String,
        fix: String,
    },
    #[error("{what} {path} is not a directory")]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Sets the process's umask to 077 (files 0600, directories 0700) and returns the one before.
/// Process-wide: call it at the start of `guard run`, before any thread creates files.
#[must_use = "the umask before, to restore it (`guard run` keeps 077 to its end)"]
pub fn private_umask() -> u32 {
    umask(Mode::from_bits_truncate(0o077)).bits()
}

/// The permissions a private directory gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirSpec {
    /// Its mode: 0700, or 0750 with `group`.
    pub mode: u32,
    /// The group that may read it, if any.
    pub group: Option<u32>,
}

impl DirSpec {
    /// 0700, no group.
    pub const PRIVATE: Self = Self {
        mode: 0o700,
        group: None,
    };

    /// True when `mode`/`gid` are no looser than this spec: no bit for others, and group bits
    /// only those of the spec for its group.
    #[must_use]
    pub fn admits(&self, mode: u32, gid: u32) -> bool {
        let mode = mode & 0o7777;
        if mode & 0o007 != 0 || mode & 0o7000 & !0o1000 != 0 {
            return false;
        }
        let group_bits = mode & 0o070;
        group_bits == 0 || (self.group == Some(gid) && group_bits & !(self.mode & 0o070) == 0)
    }
}

/// Creates `dir` (its missing parents too, 0700) to `spec`, or checks the existing one: it must
/// be a directory owned by this process's user, with no more permission than `spec` gives
/// (refused otherwise, with the path, mode and owner and how to fix it); then its mode and
/// group are set to exactly `spec`. `what` names it in messages ("control socket directory").
pub fn check_private_dir(dir: &Path, spec: DirSpec, what: &'static str) -> Result<(), PermsError> {
    let io = |source| PermsError::Io {
        what,
        path: dir.to_owned(),
        source,
    };
    let created = match std::fs::symlink_metadata(dir) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
            true
        }
        Err(e) => return Err(io(e)),
    };
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(PermsError::NotADirectory {
            what,
            path: dir.to_owned(),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if !created && (meta.uid() != me || !spec.admits(meta.mode(), meta.gid())) {
        let allowed = spec.group.map_or_else(String::new, |g| {
            format!(
                ", or {:04o} with group {}",
                spec.mode,
                crate::control::group_name(g)
            )
        });
        let fix = if meta.uid() == me {
            format!("fix it with `chmod {:o} {}`", spec.mode, dir.display())
        } else {
            format!(
                "remove it or give it to uid {me} (`chown {me} {}`), or choose another path",
                dir.display()
            )
        };
        return Err(PermsError::Unsafe {
            what,
            path: dir.to_owned(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            group: crate::control::group_name(meta.gid()),
            want_uid: me,
            allowed,
            fix,
        });
    }
    if let Some(gid) = spec.group {
        chown(dir, None, Some(Gid::from_raw(gid))).map_err(|e| io(e.into()))?;
    }
    std::fs::set_permissions(dir, Permissions::from_mode(spec.mode)).map_err(io)
}

/// What [`private_tree`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tightened {
    /// Files and directories whose mode was narrowed.
    pub entries: usize,
}

/// Makes `dir` (created if missing) and everything in it private: the directory and those in
/// it 0700, files 0600 (only group and other bits are taken away). `dir` must be owned by this
/// process's user, else the start is refused: another user could swap the database's files.
/// Symbolic links are not followed.
pub fn private_tree(dir: &Path, what: &'static str) -> Result<Tightened, PermsError> {
    let io = |path: &Path, source| PermsError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io(dir, e))?;
    if !meta.is_dir() {
        return Err(PermsError::NotADirectory {
            what,
            path: dir.to_owned(),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PermsError::Unsafe {
            what,
            path: dir.to_owned(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            group: crate::control::group_name(meta.gid()),
            want_uid: me,
            allowed: String::new(),
            fix: format!("give it to uid {me} (`chown -R {me} {}`)", dir.display()),
        });
    }
    let mut done = Tightened::default();
    let mut stack = vec![dir.to_owned()];
    tighten(dir, &meta, &mut done).map_err(|e| io(dir, e))?;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let entry = entry.map_err(|e| io(&d, e))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            if meta.file_type().is_symlink() {
                continue;
            }
            tighten(&path, &meta, &mut done).map_err(|e| io(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(done)
}

/// Takes the group and other bits off one file or directory.
#[expect(
    clippy::verbose_bit_mask,
    reason = "modes read best in octal, as chmod writes them"
)]
fn tighten(path: &Path, meta: &std::fs::Metadata, done: &mut Tightened) -> std::io::Result<()> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode & 0o700))?;
    done.entries += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("guard-perms-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn specs_admit_only_what_they_give() {
        let private = DirSpec::PRIVATE;
        assert!(private.admits(0o700, 0));
        assert!(private.admits(0o500, 0));
        assert!(private.admits(0o40700, 5), "the file type bits are ignored");
        assert!(!private.admits(0o750, 0));
        assert!(!private.admits(0o701, 0));
        assert!(!private.admits(0o755, 0));
        assert!(!private.admits(0o1777, 0));
        assert!(!private.admits(0o4700, 0), "setuid is refused");
        let group = DirSpec {
            mode: 0o750,
            group: Some(42),
        };
        assert!(group.admits(0o750, 42));
        assert!(group.admits(0o700, 7), "no group bits: any group");
        assert!(!group.admits(0o750, 43), "another group");
        assert!(!group.admits(0o770, 42), "the group may not write");
        assert!(!group.admits(0o755, 42));
    }

    #[test]
    fn a_private_dir_is_created_0700_and_a_loose_one_refused() {
        let t = TempDir::new("dir");
        let dir = t.0.join("a/b");
        check_private_dir(&dir, DirSpec::PRIVATE, "control socket directory").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            mode(&t.0.join("a")),
            0o700,
            "missing parents are made private too"
        );
        // Checked again: fine, and still 0700.
        check_private_dir(&dir, DirSpec::PRIVATE, "control socket directory").unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let e = check_private_dir(&dir, DirSpec::PRIVATE, "control socket directory")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&dir.display().to_string())
                && e.contains("mode 0755")
                && e.contains("owner uid"),
            "{e}"
        );
        assert!(e.contains("chmod 700"), "{e}");
        assert_eq!(mode(&dir), 0o755, "a refused directory is left as it was");
        // A tighter one is accepted and set to the spec.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o500)).unwrap();
        check_private_dir(&dir, DirSpec::PRIVATE, "control socket directory").unwrap();
        assert_eq!(mode(&dir), 0o700);
        // A file where the directory should be.
        let file = t.0.join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = check_private_dir(&file, DirSpec::PRIVATE, "control socket directory").unwrap_err();
        assert!(matches!(e, PermsError::NotADirectory { .. }), "{e}");
    }

    #[test]
    fn a_tree_is_tightened_without_following_links() {
        let t = TempDir::new("tree");
        std::fs::create_dir_all(t.0.join("logs/0")).unwrap();
        std::fs::set_permissions(&t.0, Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(t.0.join("logs"), Permissions::from_mode(0o755)).unwrap();
        std::fs::write(t.0.join("db"), b"x").unwrap();
        std::fs::set_permissions(t.0.join("db"), Permissions::from_mode(0o644)).unwrap();
        std::fs::write(t.0.join("logs/0/conf"), b"x").unwrap();
        std::fs::set_permissions(t.0.join("logs/0/conf"), Permissions::from_mode(0o666)).unwrap();
        let outside = TempDir::new("outside");
        std::fs::write(&outside.0, b"x").unwrap();
        std::fs::set_permissions(&outside.0, Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside.0, t.0.join("link")).unwrap();
        let done = private_tree(&t.0, "state directory").unwrap();
        assert_eq!(done.entries, 5, "the directory, logs, logs/0, db and conf");
        assert_eq!(mode(&t.0), 0o700);
        assert_eq!(mode(&t.0.join("logs")), 0o700);
        assert_eq!(mode(&t.0.join("db")), 0o600);
        assert_eq!(mode(&t.0.join("logs/0/conf")), 0o600);
        assert_eq!(mode(&outside.0), 0o644, "a link's target is not touched");
        assert_eq!(private_tree(&t.0, "state directory").unwrap().entries, 0);
        // Missing: created 0700.
        let fresh = t.0.join("fresh");
        private_tree(&fresh, "state directory").unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let _ = std::fs::remove_file(&outside.0);
    }
}
