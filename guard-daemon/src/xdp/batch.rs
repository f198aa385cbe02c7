//! A BPF hash map's whole content in a few system calls (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+),
//! which aya 0.14 does not offer: reading a million bans one key at a time (`get_next_key`,
//! then a lookup each) took seconds of a restart. Callers fall back to aya's iteration when
//! the kernel refuses the command.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::Pod;
use nix::libc;

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// Entries asked for per call (the kernel may need more room for one full bucket: then it
/// says `ENOSPC` and the room is doubled).
const CHUNK: usize = 16_384;

/// Every `(key, value)` of the hash map behind `fd` (a plain hash map, not per-CPU). `Err`
/// with the OS error when the kernel cannot (for example `EINVAL` before Linux 5.6).
pub fn dump<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> std::io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut room = CHUNK;
    let (mut keys, mut values): (Vec<K>, Vec<V>) = (vec![zeroed(); room], vec![zeroed(); room]);
    // The kernel's position token (a bucket number, 4 bytes for hash maps; room for 8).
    let (mut token, mut next) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(room).unwrap_or(u32::MAX),
            map_fd: u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX),
            ..BatchAttr::default()
        };
        // SAFETY: the bpf syscall reads `attr` and writes at most `count` keys and values into
        // the buffers it points to, which hold `room` of each, and the token into `next`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let got = (attr.count as usize).min(room);
        let err = (r < 0).then(std::io::Error::last_os_error);
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            // A bucket holds more entries than the room: nothing was copied; more room.
            Some(libc::ENOSPC) => {
                room *= 2;
                keys.resize(room, zeroed());
                values.resize(room, zeroed());
                continue;
            }
            Some(libc::ENOENT) | None => {
                out.extend(
                    keys[..got]
                        .iter()
                        .copied()
                        .zip(values[..got].iter().copied()),
                );
                // ENOENT: the end of the map (nothing more: also the end).
                if err.is_some() || got == 0 {
                    return Ok(out);
                }
            }
            Some(_) => return Err(err.unwrap_or_else(std::io::Error::last_os_error)),
        }
        token = next;
        first = false;
    }
}

/// A value of all zero bytes.
fn zeroed<T: Pod>() -> T {
    // SAFETY: T is Pod: any bytes, zeroes included, make a valid value.
    unsafe { std::mem::zeroed() }
}
