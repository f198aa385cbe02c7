//! Finds the eBPF object that `cargo xtask build` produced and embeds it. When it is missing (a
//! fresh clone with stable Rust only) or older than its sources, an empty stub is embedded instead
//! and the `guard_ebpf_stub` cfg is set: everything builds, checks and tests, and `guard run`
//! refuses to start, saying how to build the real programs. A stale object is never embedded.
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

/// Why the real object cannot be embedded, if it cannot.
fn unusable(object: &Path, sources: &[PathBuf]) -> Option<String> {
    let Ok(meta) = std::fs::metadata(object) else {
        return Some(format!("the eBPF object {} is missing", object.display()));
    };
    let built = meta.modified().ok();
    let source_time = sources.iter().filter_map(|s| newest(s)).max();
    match (built, source_time) {
        (Some(built), Some(src)) if src > built => Some(format!(
            "the eBPF object {} is older than guard-ebpf's sources",
            object.display()
        )),
        _ => None,
    }
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(guard_ebpf_stub)");
    println!("cargo::rerun-if-env-changed=GUARD_EBPF_DIR");
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let sources = [
        manifest.join("../guard-ebpf/src"),
        manifest.join("../guard-common/src"),
    ];
    for s in &sources {
        println!("cargo::rerun-if-changed={}", s.display());
    }
    let object =
        std::env::var_os("GUARD_EBPF_DIR").map(|dir| PathBuf::from(dir).join("guard-ebpf"));
    if let Some(object) = &object {
        println!("cargo::rerun-if-changed={}", object.display());
    }
    let why = match &object {
        None => Some("GUARD_EBPF_DIR is not set".to_owned()),
        Some(object) => unusable(object, &sources),
    };
    let embedded = match why {
        None => object.expect("checked above"),
        Some(why) => {
            println!(
                "cargo::warning={why}: building guard with a stub instead (it refuses `guard run`); \
                 `cargo xtask build` sets up the BPF toolchain and builds the real programs"
            );
            println!("cargo::rustc-cfg=guard_ebpf_stub");
            let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
            let stub = out.join("guard-ebpf.stub");
            std::fs::write(&stub, b"").expect("writing the stub object into OUT_DIR");
            stub
        }
    };
    println!("cargo::rustc-env=GUARD_EBPF_OBJECT={}", embedded.display());
}
