//! Detects and, where it can, installs what building and testing guard needs: an eBPF-capable
//! Rust toolchain, bpf-linker, and the system tools the tests use. Prints what it checks and
//! what it does; a second run finds everything present and does nothing.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// bpf-linker version guard is known to build with.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Name under which Debian's rustc-web is linked into rustup.
pub const DEBIAN_TOOLCHAIN: &str = "debian-bpf";
/// Debian packages: Rust with precompiled core for bpfel, LLVM for bpf-linker.
const DEBIAN_BPF_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libzstd-dev",
];
/// Tools the tests and benchmarks use.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
    ("ethtool", "ethtool"),
    ("tc", "iproute2"),
    ("curl", "curl"),
    // e2e_forward_auth: nginx `auth_request` in front of a test app, asking guard.
    ("nginx", "nginx"),
    ("openssl", "openssl"),
    // e2e_detect: real attack tools against a small app behind guard (a missing one is a
    // printed skip).
    ("hydra", "hydra"),
    ("nmap", "nmap"),
];

/// How the eBPF crate gets built on this machine.
#[derive(Debug, Clone)]
pub enum BpfToolchain {
    /// Debian's rustc-web with its precompiled `core` for bpfel: no build-std needed.
    Debian,
    /// A rustup nightly with rust-src: `-Z build-std=core`.
    Nightly,
}

impl BpfToolchain {
    /// The cargo command line prefix for building the eBPF crate.
    pub fn cargo(&self) -> Command {
        let mut c = Command::new("cargo");
        // Whatever toolchain ran xtask must not leak into the eBPF build.
        for var in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
        ] {
            c.env_remove(var);
        }
        match self {
            Self::Debian => {
                c.arg(format!("+{DEBIAN_TOOLCHAIN}"))
                    .env("RUSTC_BOOTSTRAP", "1");
            }
            Self::Nightly => {
                c.arg("+nightly");
            }
        }
        c
    }

    /// Extra arguments for `cargo build`.
    pub fn build_args(&self) -> &'static [&'static str] {
        match self {
            Self::Debian => &[],
            Self::Nightly => &["-Z", "build-std=core"],
        }
    }
}

fn say(msg: &str) {
    eprintln!("[setup] {msg}");
}

/// True when running as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
        || Path::new("/usr/sbin").join(cmd).exists()
        || Path::new("/sbin").join(cmd).exists()
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Runs a command to completion, failing with `what` if it does not succeed.
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    if pkgs.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!(
            "missing packages {} and no apt-get to install them: install them by hand",
            pkgs.join(" ")
        );
    }
    if !is_root() {
        bail!(
            "missing packages {}: run as root, or `sudo apt-get install {}`",
            pkgs.join(" "),
            pkgs.join(" ")
        );
    }
    say(&format!("installing Debian packages: {}", pkgs.join(" ")));
    run(
        Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=300", "update", "-qq"]),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
            ])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

fn nightly_has_rust_src() -> bool {
    let Ok(out) = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    root.join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

fn rustup_toolchains() -> String {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Makes sure the eBPF toolchain is usable and returns how to invoke it.
pub fn bpf_toolchain() -> anyhow::Result<BpfToolchain> {
    if !have("rustup") {
        bail!(
            "rustup is required (it provides `cargo +TOOLCHAIN`); install it from your distribution or rustup.rs"
        );
    }
    let chain = if rustup_toolchains().contains(DEBIAN_TOOLCHAIN)
        && Path::new("/usr/lib/rustlib/bpfel-unknown-none").exists()
    {
        say(&format!(
            "eBPF toolchain: Debian rustc-web linked as `{DEBIAN_TOOLCHAIN}` (precompiled core for bpfel)"
        ));
        BpfToolchain::Debian
    } else if nightly_has_rust_src() {
        say("eBPF toolchain: rustup nightly with rust-src (build-std)");
        BpfToolchain::Nightly
    } else if have("apt-get") {
        say(
            "eBPF toolchain: none usable (no nightly with rust-src); setting up Debian's rustc-web with precompiled bpfel core",
        );
        let missing: Vec<&str> = DEBIAN_BPF_PACKAGES
            .iter()
            .copied()
            .filter(|p| !dpkg_installed(p))
            .collect();
        apt_install(&missing)?;
        if !rustup_toolchains().contains(DEBIAN_TOOLCHAIN) {
            say(&format!("linking /usr into rustup as `{DEBIAN_TOOLCHAIN}`"));
            run(
                Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]),
                "rustup toolchain link",
            )?;
        }
        BpfToolchain::Debian
    } else {
        bail!(
            "no eBPF-capable Rust toolchain: install a nightly with rust-src \
             (`rustup toolchain install nightly --component rust-src`) or, on Debian, the packages {}",
            DEBIAN_BPF_PACKAGES.join(" ")
        );
    };
    ensure_bpf_linker(&chain)?;
    Ok(chain)
}

fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn ensure_bpf_linker(chain: &BpfToolchain) -> anyhow::Result<()> {
    if let Some(v) = bpf_linker_version() {
        if v.contains(BPF_LINKER_VERSION) {
            say(&format!("bpf-linker: {v}"));
            return Ok(());
        }
        say(&format!(
            "bpf-linker: found {v:?}, want {BPF_LINKER_VERSION}; reinstalling"
        ));
    } else {
        say(&format!(
            "bpf-linker: missing; installing {BPF_LINKER_VERSION} (about a minute)"
        ));
    }
    let mut cmd = Command::new("cargo");
    cmd.env_remove("RUSTUP_TOOLCHAIN").args([
        "install",
        "--locked",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--force",
    ]);
    match chain {
        BpfToolchain::Debian => {
            let missing: Vec<&str> = ["llvm-22-dev", "libzstd-dev"]
                .into_iter()
                .filter(|p| !dpkg_installed(p))
                .collect();
            apt_install(&missing)?;
            cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22").args([
                "--no-default-features",
                "--features",
                "llvm-22",
            ]);
        }
        BpfToolchain::Nightly => {}
    }
    run(&mut cmd, "cargo install bpf-linker")?;
    if bpf_linker_version().is_none() {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// Makes sure the command-line tools the tests use are present.
/// What `cargo xtask bench proxy` drives and compares with: wrk (the load) and nginx (the
/// reference reverse proxy), from Debian.
const PROXY_BENCH_PACKAGES: &[(&str, &str)] = &[("wrk", "wrk"), ("nginx", "nginx")];

/// Installs wrk and nginx when missing.
pub fn proxy_bench_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = PROXY_BENCH_PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install(&missing)
}

/// Where Debian's crowdsec package looks for central-API credentials: a non-empty file there
/// before the install skips its post-install registration, which fails offline.
const CROWDSEC_ONLINE_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";
/// Debian's hook that tells package scripts whether they may start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Installs Debian's crowdsec package for `e2e_crowdsec` (which runs its own LAPI-only instance
/// from a config it writes), without registering with the central API and without leaving a
/// crowdsec service running or enabled on this machine.
fn crowdsec() -> anyhow::Result<()> {
    if have("crowdsec") && have("cscli") {
        return Ok(());
    }
    if !is_root() || !have("apt-get") {
        return apt_install(&["crowdsec"]);
    }
    say("installing crowdsec (its LAPI is run by e2e_crowdsec only; no service is left running)");
    std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
    if std::fs::metadata(CROWDSEC_ONLINE_CREDENTIALS).map_or(true, |m| m.len() == 0) {
        std::fs::write(
            CROWDSEC_ONLINE_CREDENTIALS,
            "# guard's test set-up: no central API\n",
        )
        .with_context(|| format!("writing {CROWDSEC_ONLINE_CREDENTIALS}"))?;
    }
    // No service may start during the install: a policy that refuses, removed afterwards.
    let own_policy = !Path::new(POLICY_RC_D).exists();
    if own_policy {
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(
            POLICY_RC_D,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
    }
    let installed = apt_install(&["crowdsec"]);
    if own_policy {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    installed?;
    if have("systemctl") {
        // Works without a running systemd too (it only removes the links then).
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "crowdsec.service"])
            .status();
    }
    Ok(())
}

pub fn test_tools() -> anyhow::Result<()> {
    crowdsec()?;
    let mut missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        say("test tools: ip, nsenter, ping, nft, ethtool, tc, curl, nginx, openssl present");
        return Ok(());
    }
    apt_install(&missing)
}
