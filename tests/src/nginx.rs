//! nginx (the Debian package) with guard's forward-auth snippet (`dist/nginx-guard-auth.conf`,
//! which asks guard on `127.0.0.1:9180`) in front of an app, for the forward-auth tests.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::{Netns, wait_until};

/// nginx in a namespace; stopped on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Whether the nginx binary is installed (`cargo xtask test` installs it).
    #[must_use]
    pub fn installed() -> bool {
        Path::new("/usr/sbin/nginx").exists()
    }

    /// nginx in `ns` on `listen`, with guard's snippet, proxying what guard allows to
    /// `upstream`.
    pub fn start(ns: &Netns, listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique("guard-nginx-"));
        std::fs::create_dir_all(&dir)?;
        let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/nginx-guard-auth.conf");
        let snippet = snippet
            .canonicalize()
            .with_context(|| format!("{}", snippet.display()))?;
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             server {{\n    listen {listen};\n    include {};\n    \
             location / {{ proxy_pass http://{upstream}; }}\n  }}\n}}\n",
            snippet.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = ns
            .command("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        Ok(Self { child, dir })
    }

    /// nginx's error log so far.
    #[must_use]
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop (the master stops its workers).
        // SAFETY: kill on our own child's pid (nsenter execs nginx in place).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        if wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
