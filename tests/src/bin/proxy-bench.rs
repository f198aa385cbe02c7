//! `cargo xtask bench proxy`: wrk drives, in one run and on one namespace's loopback, the test
//! app (`guard_tests::proxy_app`) directly, through guard's reverse proxy (`guard run` with a
//! `[proxy]` listener judging every request with the validator and the engine, the engine's
//! rate rules set out of reach), and through nginx
//! (`proxy_pass` to the same app with an upstream keep-alive pool, its own prefix, killed at
//! the end).
//!
//! 1. Maximum rate: `wrk -t2 -c64 --latency` on each target for `--duration` seconds; prints
//!    requests/s, p50 and p99, and the ratios guard/nginx and guard/direct.
//! 2. Latency at half of nginx's maximum rate: wrk has no fixed-rate mode (wrk2 is not in
//!    Debian), so each connection waits a fixed delay after each response (a Lua `delay()`),
//!    chosen so that 64 connections offer about half of nginx's measured rate; the rate each
//!    target actually reached is printed beside its p99. The added p99 is guard's (and
//!    nginx's) p99 minus the app's own at the same offered load. wrk measures from the request
//!    being written, so queueing behind a slow response is not counted (no correction for
//!    coordinated omission).
//!
//! Everything (wrk, the app, guard or nginx) shares the machine's cores; the run fails if any
//! target answered anything but 2xx, since its rate would then mean nothing.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use guard_tests::proxy_app;
use guard_tests::{Daemon, Link, Netns, skip_reason, unique, wait_until};

const GUARD_PORT: u16 = 8480;
const NGINX_PORT: u16 = 8481;
const CONNECTIONS: u32 = 64;

/// The engine judges every request but its rate rules never fire: one wrk client sending
/// 100,000 requests a second is exactly the flood they exist to stop, and refused requests
/// would make the rates meaningless.
const ENGINE_LIMITS: &str = "[engine.black]\nrequests_10s = 1000000000\n\
                             flood_requests_10s = 1000000000\n\n\
                             [engine.grey]\nelevated_requests_10s = 1000000000\n\
                             idle_burst_requests_10s = 1000000000\n";

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() -> anyhow::Result<()> {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return Ok(());
    }
    let mut secs = 10u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--duration" => {
                secs = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--duration needs seconds")?;
            }
            other => bail!("unknown argument {other:?}: expected --duration SECS"),
        }
    }
    let link = Link::exclusive()?;
    let ns = &link.near;
    let app = proxy_app::start(Some(ns), "127.0.0.1:0".parse()?, 2)?;
    let daemon = Daemon::start(
        ns,
        &link.near_if,
        &format!(
            "[proxy]\nlisten = [\"127.0.0.1:{GUARD_PORT}\"]\nupstream = \"http://{}\"\n\n\
             {ENGINE_LIMITS}",
            app.addr
        ),
    )?;
    let nginx = Nginx::start(ns, app.addr)?;
    let scratch = nginx.prefix.clone();
    let script = scratch.join("delay.lua");

    let targets = [
        ("direct", app.addr.port()),
        ("guard", GUARD_PORT),
        ("nginx", NGINX_PORT),
    ];
    println!(
        "maximum rate: wrk -t2 -c{CONNECTIONS} -d{secs}s GET /hello ({} cores shared by wrk, the \
         app, and guard or nginx)",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let mut max = Vec::new();
    for (name, port) in targets {
        // A short warm-up (pools, caches), then the measured run.
        wrk(ns, port, 2, None)?;
        let r = wrk(ns, port, secs, None)?;
        println!(
            "  {name:<7} {:>10.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
            r.rps, r.p50_ms, r.p99_ms
        );
        max.push(r);
    }
    let (direct, guard, ngx) = (max[0], max[1], max[2]);
    println!(
        "  throughput guard/nginx {:.2}x (goal >= 1.0x, floor 0.8x), guard/direct {:.2}x, \
         nginx/direct {:.2}x",
        guard.rps / ngx.rps,
        guard.rps / direct.rps,
        ngx.rps / direct.rps
    );

    // Half of nginx's rate, offered by CONNECTIONS connections that each wait `delay` ms
    // after every response (wrk's delay is in whole milliseconds).
    let half = ngx.rps / 2.0;
    let delay_ms = (f64::from(CONNECTIONS) * 1000.0 / half).round().max(1.0) as u64;
    std::fs::write(
        &script,
        format!("function delay()\n  return {delay_ms}\nend\n"),
    )?;
    println!(
        "latency at half of nginx's rate ({half:.0} req/s): {CONNECTIONS} connections, each \
         waiting {delay_ms} ms after every response (offers at most {:.0} req/s)",
        f64::from(CONNECTIONS) * 1000.0 / delay_ms as f64
    );
    let mut paced = Vec::new();
    for (name, port) in targets {
        let r = wrk(ns, port, secs, Some(&script))?;
        println!(
            "  {name:<7} {:>10.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
            r.rps, r.p50_ms, r.p99_ms
        );
        paced.push(r);
    }
    println!(
        "  added p99: guard {:+.3} ms (goal <= 1 ms), nginx {:+.3} ms",
        paced[1].p99_ms - paced[0].p99_ms,
        paced[2].p99_ms - paced[0].p99_ms
    );
    let stats = daemon.json(&["stats"])?;
    println!(
        "guard's proxy counters: requests {}, answered by the gate {}, upstream errors {}",
        stats["proxy"]["requests"], stats["proxy"]["answered"], stats["proxy"]["upstream_errors"]
    );
    drop(nginx);
    drop(daemon);
    Ok(())
}

/// One wrk run against `127.0.0.1:port/hello` inside `ns`.
fn wrk(ns: &Netns, port: u16, secs: u32, script: Option<&Path>) -> anyhow::Result<Run> {
    let mut c = ns.command("wrk");
    c.args([
        "-t2",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{secs}s"),
        "--latency",
        "-H",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) proxy-bench",
    ]);
    if let Some(s) = script {
        c.arg("-s").arg(s);
    }
    c.arg(format!("http://127.0.0.1:{port}/hello"));
    let out = c.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "errors on port {port}: {text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in: {text}"))?;
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .and_then(|v| millis(v.trim()))
            .with_context(|| format!("no {p} latency in: {text}"))
    };
    Ok(Run {
        rps,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
    })
}

/// wrk's `1.23ms`, `456.00us`, `1.01s` in milliseconds.
fn millis(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Debian's nginx with a configuration of the benchmark's own, in a prefix of its own.
struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    fn start(ns: &Netns, app: SocketAddr) -> anyhow::Result<Self> {
        let prefix = std::env::temp_dir().join(unique("guard-bench-nginx"));
        std::fs::create_dir_all(prefix.join("logs"))?;
        let conf = prefix.join("nginx.conf");
        // The usual reverse-proxy set-up: workers per core, upstream keep-alive, no access log
        // (guard writes none for a passed request either).
        std::fs::write(
            &conf,
            format!(
                "worker_processes auto;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  \
                 proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  \
                 uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  \
                 upstream app {{ server {app}; keepalive 128; }}\n  \
                 server {{\n    listen 127.0.0.1:{NGINX_PORT};\n    location / {{\n      \
                 proxy_pass http://app;\n      proxy_http_version 1.1;\n      \
                 proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
                 proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n  }}\n}}\n",
                p = prefix.display()
            ),
        )?;
        let child = ns
            .command("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let n = Self { child, prefix };
        let up = wait_until(Duration::from_secs(5), || {
            ns.run(|| std::net::TcpStream::connect(("127.0.0.1", NGINX_PORT)).is_ok())
                .unwrap_or(false)
        });
        if up.is_none() {
            let log = std::fs::read_to_string(n.prefix.join("logs/error.log")).unwrap_or_default();
            bail!("nginx did not start: {log}");
        }
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx -g 'daemon off;' is the master; SIGTERM stops it and its workers.
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if wait_until(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}
