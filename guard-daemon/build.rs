//! Finds the eBPF object that `cargo xtask build` produced and fails loudly if it is missing
//! or older than its sources, so a stale program is never embedded silently.
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        best = best.max(t);
    }
    best
}

fn main() {
    println!("cargo:rerun-if-env-changed=GUARD_EBPF_DIR");
    let dir = PathBuf::from(std::env::var("GUARD_EBPF_DIR").unwrap_or_else(|_| {
        panic!(
            "GUARD_EBPF_DIR is not set: build guard with `cargo xtask build` (or `cargo xtask run`)"
        )
    }));
    let object = dir.join("guard-ebpf");
    println!("cargo:rerun-if-changed={}", object.display());
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let sources = [
        manifest.join("../guard-ebpf/src"),
        manifest.join("../guard-common/src"),
    ];
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    let Ok(meta) = std::fs::metadata(&object) else {
        panic!(
            "the eBPF object {} is missing: run `cargo xtask build` first (it sets up the BPF toolchain and builds guard-ebpf)",
            object.display()
        );
    };
    let built = meta.modified().ok();
    let source_time = sources.iter().filter_map(|s| newest(s)).max();
    if let (Some(built), Some(src)) = (built, source_time) {
        assert!(
            src <= built,
            "the eBPF object {} is older than guard-ebpf's sources: run `cargo xtask build` to rebuild it",
            object.display()
        );
    }
}
