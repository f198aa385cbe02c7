//! The allocator's hold on memory. glibc's malloc keeps freed memory for reuse, and gives each
//! thread that allocates under contention an arena of its own; after a start or an import of a
//! million bans (large temporary tables, freed again, on threads of the blocking pool) the
//! daemon kept hundreds of MB it no longer used. Other C libraries: nothing to do.

/// Caps glibc's malloc arenas at two (instead of eight per core), before threads start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; it is called before the daemon's
    // threads start allocating.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

/// Gives memory the allocator holds free back to the system (after a large operation).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
