//! Helpers for guard's end-to-end tests and benchmarks: network namespaces, veth pairs, the
//! daemon process and its CLI, and real traffic — each behind an RAII guard that removes what it
//! made, also when a test fails. Everything stays inside namespaces the test created.
pub mod ai_server;
pub mod crowdsec;
pub mod http;
pub mod maps;
pub mod nginx;
pub mod ping;
pub mod proxy_app;
pub mod rawtcp;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `<prefix><pid><n>` (interface names are at most 15 bytes).
#[must_use]
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, failing with its stderr if it does not succeed.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out)
}

/// Returns why end-to-end tests cannot run here, if they cannot (not root, no `ip`).
#[must_use]
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, XDP): run `cargo xtask test`".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs iproute2 (`ip`)".into());
    }
    None
}

/// Skips the calling test (returning early) with its reason printed, if it cannot run here.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = $crate::skip_reason() {
            println!("SKIPPED: {why}");
            return Ok(());
        }
    };
}

/// How a namespace test shares the machine with the others (threads of this test binary, and
/// other test processes on the host): see [`MachineLock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Runs beside other shared tests.
    Shared,
    /// Runs alone: floods, and tests that measure a time.
    Exclusive,
}

/// A reader-writer lock over the namespace tests of the whole host, on two files in the temp
/// directory: shared tests run together, an exclusive one (a packet flood, a timing window)
/// runs alone, so neither disturbs the other on a small machine. A waiting exclusive test
/// holds the gate, so new shared tests queue behind it instead of starving it. Released on drop.
///
/// A test takes one (through its one [`Link`]); taking a second while holding the first can
/// wait forever behind an exclusive test that waits for the first.
pub struct MachineLock {
    _held: std::fs::File,
}

impl MachineLock {
    /// Waits for the host's lock in `mode`.
    pub fn acquire(mode: Share) -> anyhow::Result<Self> {
        Self::acquire_in(&std::env::temp_dir(), mode, true)
            .and_then(|l| l.context("a blocking flock returned without the lock"))
    }

    /// The lock whose files are in `dir`; with `wait` false, `None` when it is taken.
    pub fn acquire_in(dir: &Path, mode: Share, wait: bool) -> anyhow::Result<Option<Self>> {
        let gate = lock_file(&dir.join("guard-tests.gate"))?;
        let held = lock_file(&dir.join("guard-tests.lock"))?;
        let op = match mode {
            Share::Shared => libc::LOCK_SH,
            Share::Exclusive => libc::LOCK_EX,
        } | if wait { 0 } else { libc::LOCK_NB };
        if !flock(&gate, op)? || !flock(&held, op)? {
            return Ok(None);
        }
        // The gate is released when `gate` closes here; `held` stays locked.
        Ok(Some(Self { _held: held }))
    }
}

fn lock_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// `flock(2)`: `false` when `op` has `LOCK_NB` and the lock is taken.
fn flock(file: &std::fs::File, op: i32) -> anyhow::Result<bool> {
    loop {
        // SAFETY: flock on an fd this function borrows for the call's duration.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(err).context("flock on the test lock"),
        }
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = unique(prefix);
        sh("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Path of the namespace file, for `setns`/`nsenter`.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME …`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// A command that runs inside this namespace (network only; mounts stay the host's, so
    /// bpffs pins are shared with the test).
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg(program);
        c
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it makes live there.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = self.path();
        std::thread::spawn(move || -> anyhow::Result<T> {
            enter(&path)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// Spawns a long-lived thread inside this namespace (servers).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let path = self.path();
        std::thread::spawn(move || {
            if enter(&path).is_ok() {
                f();
            }
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid fd; affects only the calling thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Two namespaces joined by a veth pair: `near` (where guard runs) and `far` (the clients).
/// Addresses: 10.201.N.1/24 + `fd20:N::1/64` near, .2 / `::2` far; extra far addresses on request.
pub struct Link {
    pub far: Netns,
    pub near: Netns,
    pub near_if: String,
    pub far_if: String,
    pub near_v4: IpAddr,
    pub far_v4: IpAddr,
    pub near_v6: IpAddr,
    pub far_v6: IpAddr,
    subnet: u32,
    /// Held while the namespaces exist (dropped last).
    _machine: MachineLock,
}

impl Link {
    /// A link for a test that runs beside other shared tests.
    pub fn new() -> anyhow::Result<Self> {
        Self::with(Share::Shared)
    }

    /// A link for a test that must run alone (a flood, a timing window).
    pub fn exclusive() -> anyhow::Result<Self> {
        Self::with(Share::Exclusive)
    }

    fn with(share: Share) -> anyhow::Result<Self> {
        let machine = MachineLock::acquire(share)?;
        let near = Netns::new("gn")?;
        let far = Netns::new("gf")?;
        let near_if = unique("gvn");
        let far_if = unique("gvf");
        let subnet = SEQ.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        sh(
            "ip",
            &[
                "link", "add", &near_if, "netns", &near.name, "type", "veth", "peer", "name",
                &far_if, "netns", &far.name,
            ],
        )?;
        let (n4, f4) = (format!("10.201.{subnet}.1"), format!("10.201.{subnet}.2"));
        let (n6, f6) = (format!("fd20:{subnet}::1"), format!("fd20:{subnet}::2"));
        near.ip(&["addr", "add", &format!("{n4}/24"), "dev", &near_if])?;
        far.ip(&["addr", "add", &format!("{f4}/24"), "dev", &far_if])?;
        near.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{n6}/64"),
            "dev",
            &near_if,
            "nodad",
        ])?;
        far.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{f6}/64"),
            "dev",
            &far_if,
            "nodad",
        ])?;
        near.ip(&["link", "set", &near_if, "up"])?;
        far.ip(&["link", "set", &far_if, "up"])?;
        Ok(Self {
            near_v4: n4.parse()?,
            far_v4: f4.parse()?,
            near_v6: n6.parse()?,
            far_v6: f6.parse()?,
            far,
            near,
            near_if,
            far_if,
            subnet,
            _machine: machine,
        })
    }

    /// Adds another IPv4 address (`10.201.N.host`) on the far side and returns it.
    pub fn add_far_v4(&self, host: u8) -> anyhow::Result<IpAddr> {
        let a = format!("10.201.{}.{host}", self.subnet);
        self.far
            .ip(&["addr", "add", &format!("{a}/24"), "dev", &self.far_if])?;
        Ok(a.parse()?)
    }

    /// Adds `10.<net>.N.<host>/24` on the far side, in a /24 of its own (`net` other than 201),
    /// with a route to it from the near side; returns the address.
    pub fn add_far_v4_in(&self, net: u8, host: u8) -> anyhow::Result<IpAddr> {
        let a = format!("10.{net}.{}.{host}", self.subnet);
        self.far
            .ip(&["addr", "add", &format!("{a}/24"), "dev", &self.far_if])?;
        let route = format!("10.{net}.{}.0/24", self.subnet);
        self.near
            .ip(&["route", "replace", &route, "dev", &self.near_if])?;
        Ok(a.parse()?)
    }

    /// Adds another IPv6 address (`fd20:N::<suffix>`) on the far side and returns it.
    pub fn add_far_v6(&self, suffix: &str) -> anyhow::Result<IpAddr> {
        let a = format!("fd20:{}::{suffix}", self.subnet);
        self.far.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/64"),
            "dev",
            &self.far_if,
            "nodad",
        ])?;
        Ok(a.parse()?)
    }

    /// The /64 of this link's IPv6 addresses, without the length (`fd20:N::`).
    #[must_use]
    pub fn v6_prefix(&self) -> String {
        format!("fd20:{}::", self.subnet)
    }

    /// The /24 of this link's IPv4 addresses.
    #[must_use]
    pub fn v4_subnet(&self) -> String {
        format!("10.201.{}.0/24", self.subnet)
    }
}

/// Starts a TCP accept loop and a UDP echo server on `port` in `ns` (all addresses).
pub fn start_servers(ns: &Netns, port: u16) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let tcp = TcpListener::bind(("::", port));
        let udp = UdpSocket::bind(("::", port));
        let ok = tcp.is_ok() && udp.is_ok();
        let _ = tx.send(ok);
        let (Ok(tcp), Ok(udp)) = (tcp, udp) else {
            return;
        };
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        for stream in tcp.incoming() {
            drop(stream);
        }
    });
    ensure!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false),
        "servers did not start in {}",
        ns.name
    );
    Ok(())
}

/// Does a TCP connection from `ns` (optionally from `src`) to `dst` succeed within `timeout`?
///
/// Only an unanswered SYN reads as `false`. A probe that cannot run (no such namespace, a
/// source address the far side does not have) or that the server refuses (nothing listens:
/// the packet got through) fails the test instead, so a broken setup never passes for a drop.
///
/// # Panics
/// When the probe cannot run or is refused, as above.
#[must_use]
pub fn tcp_ok(ns: &Netns, src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> bool {
    let probe = ns
        .run(move || try_connect(src, dst, timeout).map(|s| s.is_some()))
        .and_then(|r| r.map_err(anyhow::Error::from));
    match probe {
        Ok(connected) => connected,
        Err(e) => panic!("the TCP probe from {src:?} to {dst} did not run: {e:#}"),
    }
}

/// A TCP connection from a chosen source address (std cannot bind before connecting); `None`
/// when it fails for any reason.
#[must_use]
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    try_connect(Some(src), dst, timeout).ok().flatten()
}

/// Connects to `dst` (from `src` if given): `Ok(None)` when the attempt goes unanswered
/// within `timeout`, an error when the socket cannot be made or bound or the server refuses.
fn try_connect(
    src: Option<IpAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<Option<TcpStream>> {
    let unanswered = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            Err(std::io::Error::new(
                e.kind(),
                format!("{dst} refused the connection: nothing listens there"),
            ))
        } else {
            Ok(None)
        }
    };
    let Some(src) = src else {
        return TcpStream::connect_timeout(&dst, timeout).map_or_else(unanswered, |s| Ok(Some(s)));
    };
    let domain = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let last = std::io::Error::last_os_error;
    // SAFETY: plain socket syscalls on an fd we own and close.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last());
        }
        let stream = std::os::fd::FromRawFd::from_raw_fd(fd);
        let stream: TcpStream = stream;
        let (sa, len) = sockaddr(SocketAddr::new(src, 0));
        if libc::bind(fd, (&raw const sa).cast(), len) != 0 {
            let e = last();
            return Err(std::io::Error::new(e.kind(), format!("binding {src}: {e}")));
        }
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as i64,
            tv_usec: i64::from(timeout.subsec_micros()),
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        );
        let (sa, len) = sockaddr(dst);
        if libc::connect(fd, (&raw const sa).cast(), len) == 0 {
            Ok(Some(stream))
        } else {
            unanswered(last())
        }
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the family-specific view.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = (&raw mut ss).cast::<libc::sockaddr_in>();
            // SAFETY: sockaddr_storage is large and aligned enough for every sockaddr type, so
            // `sin` points to writable, aligned memory we own; plain integer field writes.
            unsafe {
                (*sin).sin_family = libc::AF_INET as u16;
                (*sin).sin_port = v4.port().to_be();
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            }
            (ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = (&raw mut ss).cast::<libc::sockaddr_in6>();
            // SAFETY: as for IPv4: `ss` holds any sockaddr, `sin6` points into it.
            unsafe {
                (*sin6).sin6_family = libc::AF_INET6 as u16;
                (*sin6).sin6_port = v6.port().to_be();
                (*sin6).sin6_addr.s6_addr = v6.ip().octets();
            }
            (ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// Does a UDP datagram from `ns` to `dst` come back echoed within `timeout`? A probe that
/// cannot run, or that meets no server (an ICMP port unreachable: the packet got through),
/// fails the test, as with [`tcp_ok`].
///
/// # Panics
/// When the probe cannot run or meets no server.
#[must_use]
pub fn udp_ok(ns: &Netns, dst: SocketAddr, timeout: Duration) -> bool {
    let probe = ns
        .run(move || -> std::io::Result<bool> {
            let bind = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(bind)?;
            s.set_read_timeout(Some(timeout))?;
            s.connect(dst)?;
            s.send(b"guard-probe")?;
            let mut buf = [0u8; 64];
            match s.recv(&mut buf) {
                Ok(n) => Ok(&buf[..n] == b"guard-probe"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(e),
                Err(_) => Ok(false),
            }
        })
        .and_then(|r| r.map_err(anyhow::Error::from));
    match probe {
        Ok(echoed) => echoed,
        Err(e) => panic!("the UDP probe to {dst} did not run: {e:#}"),
    }
}

/// Does one ping from `ns` to `dst` get an answer within a second? A ping that cannot run
/// (exit status other than 0 or 1) fails the test.
///
/// # Panics
/// When ping cannot run or fails for another reason than a missing answer.
#[must_use]
pub fn ping_ok(ns: &Netns, dst: IpAddr) -> bool {
    let status = ns
        .command("ping")
        .args(["-c", "1", "-W", "1", "-q", &dst.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status.map(|s| s.code()) {
        Ok(Some(0)) => true,
        Ok(Some(1)) => false,
        other => panic!("ping {dst} in {} did not run: {other:?}", ns.name),
    }
}

/// Path of the `guard` binary under test (set by `cargo xtask test`).
pub fn guard_bin() -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(
        std::env::var("GUARD_BIN")
            .context("GUARD_BIN is not set: run the tests with `cargo xtask test`")?,
    );
    ensure!(p.exists(), "GUARD_BIN={} does not exist", p.display());
    Ok(p)
}

/// A `guard run` process in a namespace with its own socket, state and bpffs directories;
/// on drop it is stopped and everything it made (pins, state, socket) is removed.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub config: PathBuf,
    /// Extra `guard run` arguments for the next [`Daemon::spawn`].
    pub args: Vec<String>,
    log: PathBuf,
    ns: PathBuf,
    iface: String,
    /// Extra environment of the daemon's process (set before [`Daemon::spawn`]).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts guard on `iface` inside `ns` with extra TOML config appended.
    pub fn start(ns: &Netns, iface: &str, extra_config: &str) -> anyhow::Result<Self> {
        let mut d = Self::prepare(ns, iface, extra_config)?;
        d.spawn()?;
        Ok(d)
    }

    /// Like [`Daemon::start`] without starting the process (call [`Daemon::spawn`]): its
    /// directories can be set up first.
    pub fn prepare(ns: &Netns, iface: &str, extra_config: &str) -> anyhow::Result<Self> {
        let id = unique("d");
        let base = std::env::temp_dir().join(format!("guard-test-{id}"));
        std::fs::create_dir_all(&base)?;
        // The socket's directory: guard refuses one open to other users.
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))?;
        let d = Self {
            child: None,
            socket: base.join("guard.sock"),
            state_dir: base.join("state"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/guard-test-{id}")),
            config: base.join("guard.toml"),
            args: Vec::new(),
            log: base.join("guard.log"),
            ns: ns.path(),
            iface: iface.to_owned(),
            env: Vec::new(),
        };
        std::fs::write(&d.config, extra_config)?;
        std::fs::create_dir_all(&d.state_dir)?;
        Ok(d)
    }

    /// (Re)starts the process and waits until its control socket answers (at most 20 s).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.spawn_within(Duration::from_secs(20))
    }

    /// [`Daemon::spawn`], waiting at most `limit` for the socket to answer.
    pub fn spawn_within(&mut self, limit: Duration) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .arg(guard_bin()?)
            .args(["run", "--config"])
            .arg(&self.config)
            .args(["--interface", &self.iface, "--socket"])
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning guard run")?;
        self.child = Some(child);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.cli(&["status"]).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("guard run exited with {status}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "guard run did not answer within {} s: {}",
            limit.as_secs(),
            self.log_text()
        )
    }

    /// Stops the process with SIGTERM and waits for it; pins and state stay.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = c.try_wait()? {
                    ensure!(
                        status.success(),
                        "guard run exited with {status}: {}",
                        self.log_text()
                    );
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    bail!("guard run did not stop on SIGTERM within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed, nothing detached) and
    /// waits for it; pins and state stay. Returns the pid it had.
    pub fn kill(&mut self) -> anyhow::Result<u32> {
        let mut c = self.child.take().context("guard run is not running")?;
        let pid = c.id();
        // SAFETY: kill on our own child's pid (nsenter execs guard in place).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let status = c.wait()?;
        ensure!(
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL),
            "guard run ended with {status}, not by SIGKILL: {}",
            self.log_text()
        );
        Ok(pid)
    }

    /// The daemon's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the guard CLI against this daemon; Ok(stdout) if it exits 0, Err(stderr) otherwise.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let bin = guard_bin().map_err(|e| e.to_string())?;
        let out = Command::new(bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `guard <args> --json`, parsed.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self
            .cli(&a)
            .map_err(|e| anyhow::anyhow!("guard {}: {e}", args.join(" ")))?;
        Ok(serde_json::from_str(&out)?)
    }

    /// An XDP counter from `guard stats --json`.
    pub fn xdp_stat(&self, name: &str) -> anyhow::Result<u64> {
        let s = self.json(&["stats"])?;
        s["xdp"][name]
            .as_u64()
            .with_context(|| format!("no xdp counter {name}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        if let Some(base) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// A small tmpfs mounted over a directory (a disk that fills up); lazily unmounted on drop.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &path.to_string_lossy(),
            ],
        )?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// Writes a file until the file system is full; returns its path.
    pub fn fill(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write as _;
        let file = self.path.join("filler");
        let mut f = std::fs::File::create(&file)?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever is left of a partial block too.
        while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
        Ok(file)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", &self.path.to_string_lossy()]);
    }
}

/// Polls `f` every 10 ms until it is true or `timeout` passes; returns the time it took.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{MachineLock, Share};

    #[test]
    fn shared_tests_run_together_an_exclusive_one_alone_and_a_waiting_one_goes_first() {
        let dir = std::env::temp_dir().join(format!("guard-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let take = |mode| MachineLock::acquire_in(&dir, mode, false).expect("flock");
        let a = take(Share::Shared).expect("free");
        let b = take(Share::Shared).expect("shared beside shared");
        assert!(take(Share::Exclusive).is_none(), "exclusive beside shared");
        drop((a, b));
        let x = take(Share::Exclusive).expect("free again");
        assert!(take(Share::Shared).is_none(), "shared beside exclusive");
        assert!(take(Share::Exclusive).is_none(), "two exclusive");
        drop(x);
        // An exclusive test waiting for the lock holds the gate: no new shared test gets in.
        let waiting = std::fs::File::open(dir.join("guard-tests.gate")).expect("gate");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&waiting);
        // SAFETY: flock on an fd we own, open for the whole call.
        let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
        assert_eq!(locked, 0);
        assert!(
            take(Share::Shared).is_none(),
            "a shared test overtook a waiting one"
        );
        drop(waiting);
        assert!(take(Share::Shared).is_some());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
