//! A real CrowdSec Local API for the tests: Debian's `crowdsec` binary run LAPI-only
//! (`-no-cs`, no central API, no hub) inside a test namespace, with a config and a sqlite
//! database the test writes into a temporary directory; killed and removed on drop.
//! `cscli` runs against the same config, in the same namespace.
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::Netns;

/// Why the CrowdSec tests cannot run here, if they cannot.
#[must_use]
pub fn missing() -> Option<String> {
    for bin in ["crowdsec", "cscli"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "{bin} is not installed (Debian package crowdsec; `cargo xtask test` installs it)"
            ));
        }
    }
    None
}

/// A LAPI-only crowdsec process in a namespace.
pub struct Lapi {
    pub dir: PathBuf,
    pub config: PathBuf,
    ns: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Lapi {
    /// Writes the config into a fresh temporary directory and starts the LAPI on
    /// `127.0.0.1:port` inside `ns`; a machine for `cscli` is registered.
    pub fn start(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        Self::start_on(ns, "127.0.0.1", port)
    }

    /// Like [`Lapi::start`], listening on `listen` (`0.0.0.0`: reachable from other namespaces
    /// joined to `ns`).
    pub fn start_on(ns: &Netns, listen: &str, port: u16) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique("guard-lapi"));
        std::fs::create_dir_all(dir.join("data"))?;
        let d = dir.display();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: .
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
cscli:
  output: json
  color: \"no\"
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
api:
  client:
    insecure_skip_verify: false
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: {listen}:{port}
    profiles_path: {d}/profiles.yaml
    trusted_ips:
      - 127.0.0.1
prometheus:
  enabled: false
"
            ),
        )?;
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )?;
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n")?;
        let mut lapi = Self {
            dir,
            config,
            ns: ns.path(),
            port,
            child: None,
        };
        lapi.spawn()?;
        let creds = lapi.dir.join("local_api_credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "cscli-test",
            "--auto",
            "-f",
            &creds.display().to_string(),
        ])?;
        Ok(lapi)
    }

    /// The URL guard is given.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the process and waits until it accepts connections (at most 20 s).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("lapi.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .arg("crowdsec")
            .arg("-c")
            .arg(&self.config)
            .arg("-no-cs")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting crowdsec")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let ns = self.ns.clone();
        while Instant::now() < deadline {
            let p = ns.clone();
            let up = std::thread::spawn(move || {
                crate::enter(&p).is_ok()
                    && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .join()
            .unwrap_or(false);
            if up {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("crowdsec exited with {status}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the LAPI did not listen within 20 s: {}", self.log_text())
    }

    /// Kills the process (SIGKILL) and waits for it; its database stays.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The LAPI's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("lapi.log")).unwrap_or_default()
    }

    /// `cscli -c CONFIG args…` in the namespace; its stdout, or an error with its stderr.
    pub fn cscli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .arg("cscli")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .context("running cscli")?;
        ensure!(
            out.status.success(),
            "cscli {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Registers a bouncer and returns its key.
    pub fn bouncer(&self, name: &str) -> anyhow::Result<String> {
        let key = self.cscli(&["bouncers", "add", name, "-o", "raw"])?;
        let key = key.trim().to_owned();
        ensure!(!key.is_empty(), "cscli bouncers add printed no key");
        Ok(key)
    }

    /// Registers a machine with `password`.
    pub fn machine(&self, id: &str, password: &str) -> anyhow::Result<()> {
        self.cscli(&[
            "machines",
            "add",
            id,
            "--password",
            password,
            "-f",
            "/dev/null",
        ])?;
        Ok(())
    }

    /// `cscli decisions list -o json` (every origin), parsed; `[]` when there is none.
    pub fn decisions(&self) -> anyhow::Result<serde_json::Value> {
        let out = self.cscli(&["decisions", "list", "-o", "json"])?;
        if out.trim().is_empty() || out.trim() == "null" {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        Ok(serde_json::from_str(&out)?)
    }

    /// The directory of this LAPI's files.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
