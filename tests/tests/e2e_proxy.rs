//! End to end for the reverse proxy (`[proxy]`): a real `guard run` in a namespace, the test app
//! (`guard_tests::proxy_app`, a real HTTP server) as its upstream, real clients (curl for
//! HTTP/2 over TLS with a certificate the test makes with `openssl`, raw sockets for the rest),
//! all on the namespace's loopback. Each test asserts what the app received or what the client
//! got back, and the counters of `guard stats`.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use guard_tests::proxy_app::{self, App};
use guard_tests::{Daemon, Link, Netns, require_root, sh, unique, wait_until};

const PORT: u16 = 8480;
const TLS_PORT: u16 = 8443;

struct Proxied {
    app: App,
    daemon: Daemon,
    certs: PathBuf,
    // Dropped last: the namespaces.
    link: Link,
}

impl Drop for Proxied {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}

/// A self-signed certificate for `cn` (and 127.0.0.1) in `dir`.
fn make_cert(dir: &Path, cn: &str) -> anyhow::Result<()> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName=DNS:{cn},IP:127.0.0.1"),
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &cert.to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// guard on the near side, proxying `127.0.0.1:PORT` (and `TLS_PORT`) to the app, or to
/// `upstream` when given.
fn setup(extra: &str, upstream: Option<SocketAddr>) -> anyhow::Result<Proxied> {
    let link = Link::new()?;
    let app = proxy_app::start(Some(&link.near), "127.0.0.1:0".parse()?, 2)?;
    let certs = std::env::temp_dir().join(unique("guard-proxy-certs"));
    std::fs::create_dir_all(&certs)?;
    make_cert(&certs, "guard.test")?;
    let upstream = upstream.unwrap_or(app.addr);
    let config = format!(
        "[proxy]\nlisten = [\"127.0.0.1:{PORT}\"]\ntls_listen = [\"127.0.0.1:{TLS_PORT}\"]\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\nupstream = \"http://{upstream}\"\n\
         header_timeout = \"1s\"\n{extra}",
        certs.join("cert.pem").display(),
        certs.join("key.pem").display(),
    );
    let daemon = Daemon::start(&link.near, &link.near_if, &config)?;
    Ok(Proxied {
        app,
        daemon,
        certs,
        link,
    })
}

/// Sends `request` from inside `ns` and reads until the server closes (or 10 s).
fn exchange(ns: &Netns, port: u16, request: Vec<u8>) -> anyhow::Result<String> {
    ns.run(move || -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&request)?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Ok(String::from_utf8_lossy(&out).into_owned())
    })?
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn proxy_stat(d: &Daemon, name: &str) -> anyhow::Result<u64> {
    let s = d.json(&["stats"])?;
    s["proxy"][name]
        .as_u64()
        .with_context(|| format!("no proxy.{name} in guard stats: {s}"))
}

fn curl(ns: &Netns, args: &[&str]) -> anyhow::Result<(String, String)> {
    let out = ns
        .command("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn http1_and_http2_reach_the_app_with_hop_by_hop_headers_removed() -> anyhow::Result<()> {
    require_root!();
    let p = setup("", None)?;
    let ns = &p.link.near;
    let reply = exchange(
        ns,
        PORT,
        b"GET /echo?x=1 HTTP/1.1\r\nHost: site.test\r\nConnection: close, X-Hop\r\n\
          X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
          X-Forwarded-For: 203.0.113.9\r\nX-Kept: yes\r\n\r\n"
            .to_vec(),
    )?;
    ensure!(status_of(&reply) == 200, "{reply}");
    let seen = p.app.seen.last();
    println!("the app received:\n{seen}");
    ensure!(seen.starts_with("GET /echo?x=1\n"), "{seen}");
    for gone in ["x-hop", "keep-alive", "proxy-authorization", "connection"] {
        ensure!(
            !seen.contains(&format!("{gone}:")),
            "{gone} reached the app: {seen}"
        );
    }
    for kept in [
        "host: site.test\n",
        "x-kept: yes\n",
        "x-forwarded-for: 203.0.113.9, 127.0.0.1\n",
        "x-forwarded-proto: http\n",
        "forwarded: for=127.0.0.1;host=\"site.test\";proto=http\n",
    ] {
        ensure!(seen.contains(kept), "{kept:?} missing at the app: {seen}");
    }

    // HTTP/2 over TLS (ALPN h2), with the test's certificate.
    let cafile = p.certs.join("cert.pem");
    let (out, err) = curl(
        ns,
        &[
            "--http2",
            "--cacert",
            &cafile.to_string_lossy(),
            "--resolve",
            &format!("guard.test:{TLS_PORT}:127.0.0.1"),
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("https://guard.test:{TLS_PORT}/h2?y=2"),
        ],
    )?;
    ensure!(out.ends_with("\n2 200"), "curl over TLS: {out} {err}");
    ensure!(out.contains("GET /h2?y=2\n"), "{out}");
    ensure!(out.contains("x-forwarded-proto: https\n"), "{out}");
    ensure!(out.contains("host: guard.test:8443\n"), "{out}");
    // HTTP/2 with prior knowledge on the plain listener.
    let (out, err) = curl(
        ns,
        &[
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("http://127.0.0.1:{PORT}/plain-h2"),
        ],
    )?;
    ensure!(out.ends_with("\n2 200"), "curl h2c: {out} {err}");
    ensure!(p.app.seen.requests.load(Ordering::Relaxed) == 3);
    ensure!(proxy_stat(&p.daemon, "requests")? == 3);
    Ok(())
}

#[test]
fn a_websocket_echo_goes_through() -> anyhow::Result<()> {
    require_root!();
    let p = setup("", None)?;
    let got = p.link.near.run(|| -> anyhow::Result<(String, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte)?;
            head.push(byte[0]);
        }
        s.write_all(&proxy_app::frame(
            1,
            b"hello through guard",
            Some([1, 2, 3, 4]),
        ))?;
        let mut reply = [0u8; 2 + 19];
        s.read_exact(&mut reply)?;
        s.write_all(&proxy_app::frame(8, b"", Some([9, 9, 9, 9])))?;
        Ok((String::from_utf8_lossy(&head).into_owned(), reply.to_vec()))
    })??;
    let (head, reply) = got;
    ensure!(head.starts_with("HTTP/1.1 101 "), "{head}");
    ensure!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    ensure!(
        reply[0] == 0x81 && reply[1] == 19,
        "frame header {:?}",
        &reply[..2]
    );
    ensure!(&reply[2..] == b"hello through guard", "{reply:?}");
    ensure!(proxy_stat(&p.daemon, "upgrades")? == 1);
    Ok(())
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u64) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

#[test]
fn a_100_mb_upload_streams_and_guard_stays_small() -> anyhow::Result<()> {
    const SIZE: u64 = 100 << 20;
    require_root!();
    let p = setup("", None)?;
    let pid = p.daemon.json(&["status"])?["pid"]
        .as_u64()
        .context("no pid in guard status")?;
    // Warm up the paths (the pool, the TLS-less listener) before the baseline.
    let warm = exchange(
        &p.link.near,
        PORT,
        b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    )?;
    ensure!(status_of(&warm) == 200, "{warm}");
    let before = peak_rss_kib(pid)?;
    let start = Instant::now();
    let reply = p.link.near.run(move || -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", PORT))?;
        s.set_read_timeout(Some(Duration::from_mins(1)))?;
        s.write_all(
            format!(
                "POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )?;
        let chunk = vec![b'u'; 64 << 10];
        for _ in 0..SIZE / chunk.len() as u64 {
            s.write_all(&chunk)?;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        Ok(out)
    })??;
    let took = start.elapsed();
    let after = peak_rss_kib(pid)?;
    println!(
        "100 MiB upload through guard in {took:?}: guard's VmHWM {before} KiB before, {after} KiB \
         after (+{} KiB)",
        after.saturating_sub(before)
    );
    ensure!(status_of(&reply) == 200, "{reply}");
    ensure!(reply.ends_with(&format!("received {SIZE}\n")), "{reply}");
    ensure!(p.app.seen.sink_bytes.load(Ordering::Relaxed) == SIZE);
    // Streaming holds a few buffers per request, not the body: far less than its 100 MiB.
    ensure!(
        after.saturating_sub(before) < 24 << 10,
        "guard's peak RSS grew by {} KiB for a 100 MiB upload",
        after - before
    );
    Ok(())
}

#[test]
fn a_slow_head_is_cut_with_408() -> anyhow::Result<()> {
    require_root!();
    let p = setup("", None)?;
    let (reply, waited) = p.link.near.run(|| -> anyhow::Result<(String, Duration)> {
        let mut s = TcpStream::connect(("127.0.0.1", PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let start = Instant::now();
        // Half a head, then nothing (a slowloris).
        s.write_all(b"GET /slowloris HTTP/1.1\r\nHost: t\r\n")?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        Ok((out, start.elapsed()))
    })??;
    ensure!(reply.starts_with("HTTP/1.1 408 "), "{reply:?}");
    ensure!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "cut after {waited:?} with header_timeout = 1s"
    );
    ensure!(p.app.seen.requests.load(Ordering::Relaxed) == 0);
    ensure!(proxy_stat(&p.daemon, "status_408")? == 1);
    Ok(())
}

#[test]
fn a_dead_upstream_gives_502_with_a_log_line() -> anyhow::Result<()> {
    require_root!();
    // Nothing listens on port 1 of the namespace's loopback.
    let p = setup("", Some("127.0.0.1:1".parse()?))?;
    let reply = exchange(
        &p.link.near,
        PORT,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    )?;
    ensure!(status_of(&reply) == 502, "{reply}");
    ensure!(proxy_stat(&p.daemon, "status_502")? == 1);
    ensure!(proxy_stat(&p.daemon, "upstream_errors")? == 1);
    let log = p.daemon.log_text();
    ensure!(log.contains("cannot connect to the upstream"), "{log}");
    Ok(())
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() -> anyhow::Result<()> {
    require_root!();
    let mut p = setup("drain_timeout = \"8s\"\n", None)?;
    let path = p.link.near.path();
    let client = std::thread::spawn(move || -> anyhow::Result<String> {
        guard_tests::enter(&path)?;
        let mut s = TcpStream::connect(("127.0.0.1", PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        Ok(out)
    });
    ensure!(
        wait_until(Duration::from_secs(5), || p
            .app
            .seen
            .requests
            .load(Ordering::Relaxed)
            == 1)
        .is_some(),
        "the slow request never reached the app"
    );
    let start = Instant::now();
    p.daemon.stop()?;
    let reply = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(
        status_of(&reply) == 200,
        "the request in flight was cut: {reply:?}"
    );
    ensure!(
        start.elapsed() >= Duration::from_secs(1),
        "guard did not wait for it"
    );
    let log = p.daemon.log_text();
    ensure!(log.contains("proxy drained"), "{log}");
    Ok(())
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_is_refused() -> anyhow::Result<()> {
    require_root!();
    let p = setup("", None)?;
    let pid = p.daemon.json(&["status"])?["pid"]
        .as_u64()
        .context("no pid in guard status")?;
    let subject = |p: &Proxied| -> anyhow::Result<String> {
        let (out, err) = curl(
            &p.link.near,
            &[
                "-vk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("https://127.0.0.1:{TLS_PORT}/"),
            ],
        )?;
        ensure!(out == "200", "curl over TLS: {out} {err}");
        Ok(err
            .lines()
            .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("subject: "))
            .unwrap_or_default()
            .to_owned())
    };
    ensure!(subject(&p)? == "CN=guard.test");
    let hup = || {
        // SAFETY: kill on the daemon's pid, which this test started.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    };
    std::fs::write(p.certs.join("cert.pem"), "not a certificate\n")?;
    hup();
    ensure!(
        wait_until(Duration::from_secs(5), || {
            proxy_stat(&p.daemon, "tls_reload_failures").unwrap_or(0) == 1
        })
        .is_some(),
        "the bad certificate was not refused: {}",
        p.daemon.log_text()
    );
    ensure!(
        subject(&p)? == "CN=guard.test",
        "the old certificate is gone"
    );
    make_cert(&p.certs, "reloaded.test")?;
    hup();
    ensure!(
        wait_until(Duration::from_secs(5), || {
            proxy_stat(&p.daemon, "tls_reloads").unwrap_or(0) == 1
        })
        .is_some(),
        "the new certificate was not loaded: {}",
        p.daemon.log_text()
    );
    ensure!(subject(&p)? == "CN=reloaded.test");
    Ok(())
}

/// Every record of `guard logs --json`.
fn logs(d: &Daemon) -> Vec<serde_json::Value> {
    d.cli(&["logs", "--json"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The value of header `name` in a raw HTTP/1.1 response.
fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The enforcement path through `guard run`'s own gate: a SQL injection in the query is
/// answered before the app sees anything, a request naming a banned user too, a benign request
/// passes; each leaves an inline record in the request log under the id its answer carries,
/// the passed one with the app's own status.
#[test]
fn a_hostile_request_is_answered_and_the_app_never_sees_it() -> anyhow::Result<()> {
    require_root!();
    let p = setup("[tap]\nuser_header = \"x-user\"\n", None)?;
    let reply = exchange(
        &p.link.near,
        PORT,
        b"GET /item?id=1%27%20OR%20%271%27=%271%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1\r\n\
          Host: t\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )?;
    ensure!(status_of(&reply) == 403, "{reply}");
    let denied_id = header_of(&reply, "x-request-id")
        .with_context(|| format!("no X-Request-Id on the 403: {reply}"))?
        .to_owned();
    ensure!(
        p.app.seen.requests.load(Ordering::Relaxed) == 0,
        "the app saw it"
    );

    // A user ban, enforced per request: the banned user is refused, another user passes.
    p.daemon
        .cli(&[
            "ban", "add", "--user", "mallory", "--ttl", "1h", "--reason", "fraud",
        ])
        .map_err(anyhow::Error::msg)?;
    let as_user = |user: &str| {
        exchange(
            &p.link.near,
            PORT,
            format!(
                "GET /account HTTP/1.1\r\nHost: t\r\nX-User: {user}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
        )
    };
    let reply = as_user("mallory")?;
    ensure!(status_of(&reply) == 403, "banned user: {reply}");
    ensure!(
        p.app.seen.requests.load(Ordering::Relaxed) == 0,
        "the app saw the banned user"
    );
    let reply = as_user("alice")?;
    ensure!(status_of(&reply) == 200, "alice: {reply}");

    let reply = exchange(
        &p.link.near,
        PORT,
        b"GET /item?id=42 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    )?;
    ensure!(status_of(&reply) == 200, "{reply}");
    ensure!(p.app.seen.requests.load(Ordering::Relaxed) == 2);
    ensure!(proxy_stat(&p.daemon, "answered")? == 2);
    let inline = p.daemon.json(&["stats"])?["inline"].clone();
    ensure!(inline["banned_user"] == 1, "inline counters: {inline}");
    ensure!(inline["refused"] == 2, "inline counters: {inline}");

    // The log: the refusal under the id its answer gave, the passes with the app's 200.
    let found = wait_until(Duration::from_secs(10), || {
        let l = logs(&p.daemon);
        l.iter()
            .any(|r| r["request_id"].as_str() == Some(denied_id.as_str()))
            && l.iter()
                .filter(|r| r["mode"] == "inline" && r["status"] == 200)
                .count()
                == 2
    });
    ensure!(
        found.is_some(),
        "records missing (denied id {denied_id}): {:?}",
        logs(&p.daemon)
    );
    Ok(())
}

/// `proxy.mode = "shadow"`: the same SQL injection reaches the app and the client gets the
/// app's answer; the log record says what guard would have answered, with the app's status.
#[test]
fn shadow_mode_passes_and_logs_the_would_be_answer() -> anyhow::Result<()> {
    require_root!();
    let p = setup("mode = \"shadow\"\n", None)?;
    let reply = exchange(
        &p.link.near,
        PORT,
        b"GET /shadowed?id=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1\r\n\
          Host: t\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )?;
    ensure!(status_of(&reply) == 200, "{reply}");
    ensure!(
        p.app.seen.requests.load(Ordering::Relaxed) == 1,
        "shadow mode kept the request from the app"
    );
    ensure!(proxy_stat(&p.daemon, "answered")? == 0);
    let inline = p.daemon.json(&["stats"])?["inline"].clone();
    ensure!(inline["shadow_refusals"] == 1, "inline counters: {inline}");
    let find = || {
        logs(&p.daemon)
            .into_iter()
            .find(|r| r["path"] == "/shadowed")
    };
    let _ = wait_until(Duration::from_secs(10), || find().is_some());
    let r = find().context("no log record of the shadowed request")?;
    ensure!(r["mode"] == "inline" && r["blocked"] == false, "{r}");
    ensure!(r["status"] == 200, "the app's status: {r}");
    ensure!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("shadow: would answer 403: validator"),
        "{r}"
    );
    Ok(())
}
