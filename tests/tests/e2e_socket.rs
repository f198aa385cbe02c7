//! End to end: the control socket and the state directory are private. A socket directory
//! open to others or owned by another user refuses the start (before XDP is touched); a member
//! of `daemon.socket_group` may read but not change, anyone else cannot connect; a request over
//! 1 MiB, a silent client and 200 idle connections neither break nor block the daemon; the
//! state directory is 0700 and sled's files 0600 after a start.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use guard_tests::{Daemon, Link, guard_bin, require_root, sh, unique};

/// The user the non-root callers run as.
const NOBODY: u32 = 65534;

/// A group made for the test, deleted on drop.
struct TempGroup {
    name: String,
    gid: u32,
}

impl TempGroup {
    fn new() -> anyhow::Result<Self> {
        let name = unique("guardro");
        sh("groupadd", &[&name])?;
        let out = sh("getent", &["group", &name])?;
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let gid = line
            .trim()
            .split(':')
            .nth(2)
            .and_then(|g| g.parse().ok())
            .with_context(|| format!("no gid in {line:?}"))?;
        Ok(Self { name, gid })
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

/// How a non-root caller is set up with `setpriv`.
enum Groups {
    /// No group at all.
    None,
    /// `gid` as its only supplementary group (primary group nobody's).
    Supplementary(u32),
    /// `gid` as its primary group.
    Primary(u32),
}

/// `guard <args>` run as uid `NOBODY` with `groups`.
fn guard_as_nobody(socket: &Path, groups: &Groups, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"));
    match groups {
        Groups::None => cmd.args([format!("--regid={NOBODY}"), "--clear-groups".into()]),
        Groups::Supplementary(g) => {
            cmd.args([format!("--regid={NOBODY}"), format!("--groups={g}")])
        }
        Groups::Primary(g) => cmd.args([format!("--regid={g}"), "--clear-groups".into()]),
    };
    let out = cmd
        .arg(guard_bin()?)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .context("running setpriv")?;
    Ok(out)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).map_or(0, |m| m.mode() & 0o7777)
}

fn socket_dir(d: &Daemon) -> PathBuf {
    d.socket.parent().map(Path::to_owned).unwrap_or_default()
}

#[test]
fn e2e_socket_a_loose_or_foreign_directory_refuses_the_start() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let mut d = Daemon::prepare(&link.near, &link.near_if, "")?;
    let dir = socket_dir(&d);
    // Open to others: refused, naming the path, the mode and the owner.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let e = d
        .spawn()
        .expect_err("started with a 0755 socket directory")
        .to_string();
    assert!(
        e.contains("control socket directory")
            && e.contains(&dir.display().to_string())
            && e.contains("mode 0755")
            && e.contains("owner uid 0"),
        "{e}"
    );
    // Refused before XDP: nothing was pinned.
    assert!(!d.pin_dir.exists(), "pins made by a refused start");
    // Owned by another user, even with mode 0700: refused.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(&dir, Some(1000), None)?;
    let e = d
        .spawn()
        .expect_err("started in a directory of uid 1000")
        .to_string();
    assert!(
        e.contains(&dir.display().to_string()) && e.contains("owner uid 1000"),
        "{e}"
    );
    assert!(!d.pin_dir.exists());
    // Root's and 0700: it starts, and the socket is 0600.
    std::os::unix::fs::chown(&dir, Some(0), None)?;
    d.spawn()?;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&d.socket), 0o600);
    Ok(())
}

#[test]
fn e2e_socket_a_group_member_may_read_and_nobody_else_connects() -> anyhow::Result<()> {
    require_root!();
    let group = TempGroup::new()?;
    let link = Link::new()?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[daemon]\nsocket_group = \"{}\"\n", group.name),
    )?;
    let dir = socket_dir(&d);
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(std::fs::metadata(&dir)?.gid(), group.gid);
    assert_eq!(mode(&d.socket), 0o660);
    assert_eq!(std::fs::metadata(&d.socket)?.gid(), group.gid);

    for member in [Groups::Supplementary(group.gid), Groups::Primary(group.gid)] {
        // Reads are answered.
        let out = guard_as_nobody(&d.socket, &member, &["stats", "--json"])?;
        ensure!(out.status.success(), "stats as a member: {}", text(&out));
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert!(stats["xdp"].is_object(), "{stats}");
        for args in [
            &["status"][..],
            &["ban", "ls"],
            &["allow", "ls"],
            &["tap", "ports"],
            &["logs"],
        ] {
            let out = guard_as_nobody(&d.socket, &member, args)?;
            assert!(out.status.success(), "{args:?} as a member: {}", text(&out));
        }
        // Changes are refused, with the reason, and nothing changes.
        let out = guard_as_nobody(
            &d.socket,
            &member,
            &["ban", "add", "192.0.2.77", "--ttl", "1h"],
        )?;
        assert!(!out.status.success(), "a member banned");
        let e = text(&out);
        assert!(
            e.contains(&format!(
                "permission denied: `ban add` needs root; uid {NOBODY} may only read"
            )),
            "{e}"
        );
        let out = guard_as_nobody(&d.socket, &member, &["allow", "add", "192.0.2.78"])?;
        assert!(
            text(&out).contains("`allow add` needs root"),
            "{}",
            text(&out)
        );
        let out = guard_as_nobody(&d.socket, &member, &["tap", "ports", "8080"])?;
        assert!(!out.status.success(), "a member changed the tap's ports");
    }
    let bans = d.json(&["ban", "ls"])?;
    assert_eq!(bans.as_array().map(Vec::len), Some(0), "{bans}");
    let allows = d.json(&["allow", "ls"])?;
    assert!(!allows.to_string().contains("192.0.2.78"), "{allows}");
    // Root may change what members may not.
    d.cli(&["ban", "add", "192.0.2.77", "--ttl", "1h"])
        .map_err(anyhow::Error::msg)?;

    // Without the group: cannot connect at all.
    let out = guard_as_nobody(&d.socket, &Groups::None, &["status"])?;
    assert!(!out.status.success(), "a stranger was answered");
    let e = text(&out);
    assert!(e.contains("permission denied"), "{e}");
    // The daemon said why it refused the member's changes.
    assert!(
        d.log_text().contains("control request refused"),
        "{}",
        d.log_text()
    );
    Ok(())
}

/// Sends `line` on a fresh connection (a write cut short by the daemon is fine) and returns
/// its answer line.
fn raw_request(socket: &Path, line: &[u8]) -> anyhow::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    let _ = s.write_all(line);
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    Ok(answer)
}

#[test]
fn e2e_socket_large_silent_and_idle_clients_do_not_stop_the_daemon() -> anyhow::Result<()> {
    require_root!();
    let group = TempGroup::new()?;
    let link = Link::new()?;
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!("[daemon]\nsocket_group = \"{}\"\n", group.name),
    )?;

    // 2 MiB: the size error, and the daemon still answers.
    let mut big = br#"{"op":"logs","path_prefix":""#.to_vec();
    big.resize(2 << 20, b'a');
    big.extend_from_slice(b"\"}\n");
    let answer = raw_request(&d.socket, &big)?;
    assert!(
        answer.contains("\"ok\":false") && answer.contains("larger than 1048576 bytes"),
        "{answer}"
    );
    d.cli(&["status"]).map_err(anyhow::Error::msg)?;

    // A client that says nothing, and 200 idle root connections (over the cap of 64).
    let silent = UnixStream::connect(&d.socket)?;
    let opened = Instant::now();
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&d.socket))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(300));
    // A new `guard status` is answered, or told the daemon is busy, at once: never a hang.
    let t = Instant::now();
    match d.cli(&["status"]) {
        Ok(_) => {}
        Err(e) => assert!(e.contains("busy: 64 control connections"), "{e}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let log = d.log_text();
    assert!(log.contains("control socket busy"), "{log}");
    // The silent client is dropped after the 10 s read timeout, with a message.
    silent.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut answer = String::new();
    BufReader::new(&silent).read_line(&mut answer)?;
    let waited = opened.elapsed();
    assert!(answer.contains("no request line within 10 s"), "{answer}");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    // The idle ones were dropped with it; root is served again.
    std::thread::sleep(Duration::from_millis(500));
    let status = d.json(&["status"])?;
    assert!(status["pid"].as_u64().is_some(), "{status}");
    drop(idle);

    // 200 idle connections from a member of the read-only group do not keep root out: its
    // share is its own.
    let mut holder = Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            format!("--groups={}", group.gid),
        ])
        .args([
            "perl",
            "-MIO::Socket::UNIX",
            "-e",
            "my @s; for (1..200) { my $c = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die \"connect: $!\"; push @s, $c } $| = 1; print \"held\\n\"; sleep 30",
        ])
        .arg(&d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning the idle reader")?;
    let mut said = String::new();
    let stdout = holder.stdout.take().context("no stdout")?;
    BufReader::new(stdout).read_line(&mut said)?;
    assert_eq!(said.trim(), "held", "the reader could not connect");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let out = d.cli(&["status"]);
    let took = t.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    out.map_err(|e| {
        anyhow::anyhow!("root was not served beside 200 idle reader connections: {e}")
    })?;
    assert!(took < Duration::from_secs(3), "{took:?}");
    Ok(())
}

#[test]
fn e2e_socket_state_directory_and_sled_files_are_private() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let mut d = Daemon::start(&link.near, &link.near_if, "")?;
    d.cli(&["ban", "add", "192.0.2.9", "--ttl", "1h"])
        .map_err(anyhow::Error::msg)?;
    d.stop()?;
    // Opened up by hand (or left so by an earlier version): made private again at start.
    sh(
        "chmod",
        &["-R", "go+rX", &d.state_dir.display().to_string()],
    )?;
    assert_eq!(mode(&d.state_dir), 0o755);
    d.spawn()?;
    let mut files = 0;
    let mut stack = vec![d.state_dir.clone()];
    while let Some(dir) = stack.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                assert_eq!(
                    meta.mode() & 0o077,
                    0,
                    "{} is {:o}",
                    path.display(),
                    meta.mode() & 0o7777
                );
            }
        }
    }
    // The state database and the request log's, each with several files.
    assert!(files >= 4, "{files} files");
    assert!(
        d.log_text().contains("made 0700 and 0600"),
        "{}",
        d.log_text()
    );
    // The ban made before is still there.
    assert!(
        d.cli(&["ban", "ls"])
            .map_err(anyhow::Error::msg)?
            .contains("192.0.2.9")
    );
    Ok(())
}

/// 100,000 addresses (5.7 MB of import JSON, over five times the socket's limit) are imported
/// whole: the CLI sends them in pieces under 1 MiB (six), and its output is that of one
/// request.
#[test]
fn e2e_socket_an_import_of_100000_goes_in_pieces_under_the_limit() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let d = Daemon::start(&link.near, &link.near_if, "")?;
    let mut list = String::new();
    for i in 0..100_000u32 {
        let a = std::net::Ipv4Addr::from(0xc612_0000 + i); // 198.18.0.0/15
        list.push_str(&a.to_string());
        list.push('\n');
    }
    let file = std::env::temp_dir().join(format!("guard-import-{}.txt", unique("i")));
    std::fs::write(&file, &list)?;
    let t = Instant::now();
    let out = d.cli(&["ban", "import", &file.display().to_string()]);
    let took = t.elapsed();
    let _ = std::fs::remove_file(&file);
    let out = out.map_err(|e| anyhow::anyhow!("import: {e}"))?;
    assert_eq!(out.trim(), "imported 100000 of 100000 bans", "{out}");
    println!("ban import of 100,000 addresses in pieces: {took:?}");
    let status = d.json(&["status"])?;
    assert_eq!(status["bans"].as_u64(), Some(100_000), "{status}");
    assert!(!d.log_text().contains("larger than"), "{}", d.log_text());
    Ok(())
}
