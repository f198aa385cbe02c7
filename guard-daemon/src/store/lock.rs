//! Who holds a database: sled takes an exclusive `flock` on its `db` file, so a second guard on
//! the same state directory cannot open it. This finds the holder's pid in `/proc/locks`, so
//! that the refusal can name it.
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// True when `e` is sled's refusal to open a database another process holds locked.
pub(super) fn is_locked(e: &sled::Error) -> bool {
    let sled::Error::Io(io) = e else {
        return false;
    };
    io.raw_os_error() == Some(nix::libc::EWOULDBLOCK)
        || io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock")
}

/// The pid holding a lock on the database in `dir` (its `db` file), if `/proc/locks` says.
pub(super) fn holder(dir: &Path) -> Option<u32> {
    let meta = std::fs::metadata(dir.join("db")).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.dev(), meta.ino())
}

/// The pid of the first lock in `locks` (the text of `/proc/locks`) on the file `dev`:`ino`.
/// Lines read `1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF`; a waiter's line has `->`
/// after the number and holds nothing.
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // Linux's encoding of a device number (see `major(3)`).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            return None;
        }
        (fields.get(5)? == &want).then(|| fields.get(4)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 fe:00:1254 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 fe:01:77 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5151 fe:01:77 0 EOF\n";
        let dev = (0xfe << 8) | 0x01;
        assert_eq!(holder_in(locks, dev, 77), Some(4242));
        assert_eq!(holder_in(locks, dev, 78), None);
        assert_eq!(holder_in(locks, 0xfe << 8, 1254), Some(99));
    }

    /// A real second open of a sled database: refused as locked, and the holder is this
    /// process (sled holds the lock in it).
    #[test]
    fn a_second_open_is_locked_and_names_its_holder() {
        let dir = std::env::temp_dir().join(format!("guard-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = sled::Config::new().path(&dir).open().unwrap();
        let second = sled::Config::new().path(&dir).open();
        let Err(e) = second else {
            panic!("a second open of a locked database succeeded")
        };
        assert!(is_locked(&e), "{e:?}");
        assert_eq!(holder(&dir), Some(std::process::id()));
        drop(first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
