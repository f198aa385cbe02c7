//! Pings from a namespace: a pinger that runs while a test changes things, and one echo.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::Netns;

/// `ping -i 0.01` from one source, its replies read back when stopped.
pub struct Pinger {
    child: Child,
    out: PathBuf,
    src: IpAddr,
}

/// What a stopped pinger saw.
pub struct Seen {
    pub transmitted: u32,
    /// Sequence numbers that were answered.
    pub replies: BTreeSet<u32>,
}

impl Pinger {
    pub fn start(ns: &Netns, src: IpAddr, dst: IpAddr) -> anyhow::Result<Self> {
        let out = std::env::temp_dir().join(format!("guard-ping-{}", crate::unique("p")));
        let file = std::fs::File::create(&out)?;
        let child = ns
            .command("ping")
            .args(["-n", "-i", "0.01", "-W", "1", "-I"])
            .arg(src.to_string())
            .arg(dst.to_string())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { child, out, src })
    }

    /// Stops the pinger (SIGINT: it prints its summary) and reads what it saw.
    pub fn stop(mut self) -> anyhow::Result<Seen> {
        // SAFETY: kill on our own child's pid (nsenter execs ping in place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.out)?;
        let _ = std::fs::remove_file(&self.out);
        let mut replies = BTreeSet::new();
        let mut transmitted = None;
        for line in text.lines() {
            if line.contains("bytes from")
                && let Some(seq) = field(line, "icmp_seq=")
            {
                replies.insert(seq);
            }
            if let Some((n, _)) = line.split_once(" packets transmitted") {
                transmitted = n.trim().parse().ok();
            }
        }
        let transmitted = transmitted
            .ok_or_else(|| anyhow::anyhow!("ping from {} printed no summary: {text}", self.src))?;
        Ok(Seen {
            transmitted,
            replies,
        })
    }
}

fn field(line: &str, key: &str) -> Option<u32> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// One echo from `src`: answered within a second?
#[must_use]
pub fn ping_from(ns: &Netns, src: IpAddr, dst: IpAddr) -> bool {
    ns.command("ping")
        .args(["-n", "-c", "1", "-W", "1", "-q", "-I"])
        .arg(src.to_string())
        .arg(dst.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
