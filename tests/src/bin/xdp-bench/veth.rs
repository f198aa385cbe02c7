//! Part 2's view of the veth pair: interface facts and counters, running code inside a
//! namespace, and the receiver's NAPI (GRO, threaded mode, pinning, CPU time).
use std::path::Path;

use anyhow::{Context, ensure};
use guard_tests::{Netns, enter, sh};

/// Interface facts read with `ip -j link`.
pub struct Iface {
    pub index: u32,
    pub mac: [u8; 6],
}

pub fn iface(ns: &Netns, name: &str) -> anyhow::Result<Iface> {
    let out = ns.ip(&["-j", "link", "show", "dev", name])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing ip -j link")?;
    let index = v[0]["ifindex"].as_u64().context("no ifindex")? as u32;
    let mac_text = v[0]["address"].as_str().context("no address")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(mac_text.split(':')) {
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {mac_text}"))?;
    }
    Ok(Iface { index, mac })
}

/// Packets the interface received (`ip -s`: for veth this counts frames arriving as XDP
/// frames too, before the stack sees them).
pub fn rx_packets(ns: &Netns, name: &str) -> anyhow::Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", name])?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing ip -s -j link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("no rx packet count")
}

/// Runs `f` on a scoped thread inside the namespace at `path` (XDP attach resolves interface
/// names and indices in the calling thread's namespace).
pub fn in_ns<T: Send>(
    path: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(path)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    })
}

pub fn set_gro(ns: &Netns, dev: &str, on: bool) -> anyhow::Result<()> {
    let out = ns
        .command("ethtool")
        .args(["-K", dev, "gro", if on { "on" } else { "off" }])
        .output()?;
    ensure!(
        out.status.success(),
        "ethtool -K {dev} gro: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Processes the receiver veth's NAPI in a kernel thread (`threaded`) so that it can run on the
/// other core than the generator, which then no longer shares the receiver's CPU time.
pub fn set_threaded_napi(ns: &Netns, dev: &str, on: bool) -> anyhow::Result<()> {
    // sysfs shows the namespace it was mounted in: `ip netns exec` remounts it.
    let cmd = format!("echo {} > /sys/class/net/{dev}/threaded", u8::from(on));
    sh("ip", &["netns", "exec", &ns.name, "sh", "-c", &cmd])?;
    Ok(())
}

/// Binds thread `pid` (0: the calling thread) to `cpu`.
pub fn pin(pid: libc::pid_t, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        ensure!(
            libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &raw const set) == 0,
            "sched_setaffinity({pid}, cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Pins the NAPI kernel threads of `dev` (named `napi/<dev>-<id>`, cut to 15 bytes) to `cpu`;
/// returns their ids. An error if there is none.
pub fn pin_napi_threads(dev: &str, cpu: usize) -> anyhow::Result<Vec<libc::pid_t>> {
    let want: String = format!("napi/{dev}-").chars().take(15).collect();
    let mut pinned = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&want) {
            pin(pid, cpu)?;
            pinned.push(pid);
        }
    }
    ensure!(!pinned.is_empty(), "no NAPI thread of {dev} found to pin");
    Ok(pinned)
}

/// Total time the threads `pids` have spent on a CPU, ns (`/proc/PID/schedstat`, first field).
pub fn run_time_ns(pids: &[libc::pid_t]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/schedstat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("{path}: unexpected content {text:?}"))?;
    }
    Ok(total)
}
