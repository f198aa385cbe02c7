//! End to end for plan quotas (`[quotas]`): a real `guard run` in a namespace with the reverse
//! proxy in front of the test app (`guard_tests::proxy_app`) and the forward-auth endpoint,
//! real clients on the namespace's loopback, each "client" a source address of its own
//! (127.0.0.x), counted under the default plan. Each test asserts what the clients got back,
//! what the app saw and guard's counters.
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use guard_tests::nginx::Nginx;
use guard_tests::proxy_app::{self, App};
use guard_tests::{Daemon, Link, Netns, Tmpfs, connect_from, require_root, wait_until};

const PORT: u16 = 8481;
/// The forward-auth endpoint (where `dist/nginx-guard-auth.conf` asks).
const AUTH_PORT: u16 = 9180;
const NGINX_PORT: u16 = 8482;
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
/// The forward-auth endpoint's front end (a trusted proxy naming clients in X-Forwarded-For).
const FRONT: &str = "127.0.0.9";

const QUOTAS: &str = r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/api/v1/items/{id}"
per_minute = 5
[[quotas.plans.anonymous.rules]]
path = "/api/v1/burst"
per_second = 2
[[quotas.plans.anonymous.rules]]
path = "/api/v1/once/*"
lifetime = 50
[[quotas.plans.anonymous.rules]]
path = "/api/v1/life"
per_minute = 100
lifetime = 4
[[quotas.plans.anonymous.rules]]
path = "/api/v1/plan"
lifetime = 2
[[quotas.plans.pro.rules]]
path = "/api/v1/plan"
lifetime = 5
"#;

struct Guarded {
    app: App,
    daemon: Daemon,
    // Dropped last: the namespaces.
    link: Link,
}

/// guard proxying `127.0.0.1:PORT` to the app and answering forward-auth on `AUTH_PORT`, with
/// bearer JWTs checked with the test key (`guard-core/testdata/jwt`) and the engine's rate
/// rules out of reach (only the validator and the quotas refuse); `trusted`:
/// the trusted proxy (the forward-auth endpoint's front end).
fn setup_with(trusted: &str) -> anyhow::Result<Guarded> {
    let link = Link::new()?;
    let app = proxy_app::start(Some(&link.near), "127.0.0.1:0".parse()?, 4)?;
    let daemon = Daemon::start(&link.near, &link.near_if, &config(trusted, &app, QUOTAS))?;
    Ok(Guarded { app, daemon, link })
}

/// guard's configuration (see [`setup_with`]) with `quotas` as its `[quotas]`.
fn config(trusted: &str, app: &App, quotas: &str) -> String {
    let jwt_key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guard-core/testdata/jwt/ec-public.pem");
    format!(
        "[tap]\nhttp_ports = [9]\ntrusted_proxies = [\"{trusted}\"]\njwt_public_key = \"{}\"\n\n\
         [engine.black]\nrequests_10s = 1000000\nflood_requests_10s = 1000000\n\n\
         [engine.grey]\ngrace_requests_24h = 1000000\n\n\
         [proxy]\nlisten = [\"127.0.0.1:{PORT}\"]\nauth_listen = \"127.0.0.1:{AUTH_PORT}\"\n\
         upstream = \"http://{}\"\nheader_timeout = \"2s\"\n{quotas}",
        jwt_key.display(),
        app.addr
    )
}

/// [`setup`] with `on_store_error` set and the state directory on a 4 MiB tmpfs (a disk the
/// test can fill). The tmpfs goes after the daemon.
fn setup_small_disk(on_store_error: &str) -> anyhow::Result<(Guarded, Tmpfs)> {
    let link = Link::new()?;
    let app = proxy_app::start(Some(&link.near), "127.0.0.1:0".parse()?, 4)?;
    let quotas = QUOTAS.replacen(
        "[quotas]\n",
        &format!("[quotas]\non_store_error = \"{on_store_error}\"\n"),
        1,
    );
    let mut daemon = Daemon::prepare(&link.near, &link.near_if, &config(FRONT, &app, &quotas))?;
    let disk = Tmpfs::mount(&daemon.state_dir, "4m")?;
    daemon.spawn()?;
    Ok((Guarded { app, daemon, link }, disk))
}

fn setup() -> anyhow::Result<Guarded> {
    setup_with(FRONT)
}

/// Sends `request` from `src` to `127.0.0.1:port` (in the caller's namespace) and reads the
/// answer until the server closes.
fn send_here(src: &str, port: u16, request: &[u8]) -> anyhow::Result<String> {
    let src: IpAddr = src.parse()?;
    let dst = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = connect_from(src, dst, Duration::from_secs(5))
        .with_context(|| format!("connecting from {src} to {dst}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn send(ns: &Netns, src: &str, port: u16, request: Vec<u8>) -> anyhow::Result<String> {
    let src = src.to_owned();
    ns.run(move || send_here(&src, port, &request))?
}

/// A GET of `path` through the proxy, with `extra` header lines.
fn get(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: {UA}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The value of header `name` in a raw HTTP/1.1 response.
fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Seconds until the current UTC minute ends (1..=60).
fn to_minute_end() -> u64 {
    60 - now().as_secs() % 60
}

fn app_requests(app: &App) -> u64 {
    app.seen.requests.load(Ordering::Relaxed)
}

/// The 429 of a spent minute: exact `RateLimit-Policy`, `RateLimit` with `t` the seconds to the
/// minute's end (within 1 s of what the test's own clock says), the same `Retry-After`.
fn assert_minute_refusal(reply: &str, expected_t: u64) -> anyhow::Result<()> {
    ensure!(status_of(reply) == 429, "{reply}");
    ensure!(
        header_of(reply, "ratelimit-policy") == Some("\"minute\";q=5;w=60"),
        "{reply}"
    );
    let ratelimit = header_of(reply, "ratelimit").context("no RateLimit")?;
    let t: u64 = ratelimit
        .strip_prefix("\"minute\";r=0;t=")
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("RateLimit: {ratelimit}"))?;
    ensure!(
        t.abs_diff(expected_t) <= 1 && (1..=60).contains(&t),
        "t={t}, the minute ends in {expected_t} s: {reply}"
    );
    let retry: u64 = header_of(reply, "retry-after")
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("no Retry-After: {reply}"))?;
    ensure!(retry == t, "Retry-After {retry} != t {t}");
    Ok(())
}

/// An admitted request's answer under `per_minute = 5` (`quotas.headers_on_admit`, on by
/// default): `RateLimit-Policy` and `RateLimit` with exactly `left` requests left and `t` the
/// seconds to the minute's end (within 1 s of the test's clock); no `Retry-After`.
fn assert_minute_admitted(reply: &str, left: u64, expected_t: u64) -> anyhow::Result<()> {
    ensure!(
        header_of(reply, "ratelimit-policy") == Some("\"minute\";q=5;w=60"),
        "{reply}"
    );
    let ratelimit = header_of(reply, "ratelimit").context("no RateLimit")?;
    let t: u64 = ratelimit
        .strip_prefix(&format!("\"minute\";r={left};t="))
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("RateLimit: {ratelimit}, {left} left expected"))?;
    ensure!(
        t.abs_diff(expected_t) <= 1 && (1..=60).contains(&t),
        "t={t}, the minute ends in {expected_t} s: {reply}"
    );
    ensure!(header_of(reply, "retry-after").is_none(), "{reply}");
    Ok(())
}

/// Through the proxy, `per_minute = 5` on `/api/v1/items/{id}`: five pass, the sixth gets 429
/// with exact headers and never reaches the app; a SQL injection to that path gets 403 and
/// spends nothing (a fresh client still has five); admitted answers carry `RateLimit` with
/// the exact count left; another path is not limited; a
/// `per_second = 2` rule admits again in the next second. The forward-auth endpoint answers
/// a spent quota the same way (403 and `X-Guard-Status: 429` for nginx, with the headers).
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one daemon, one scenario: minute, injection, other path, next window, forward-auth"
)]
fn a_minute_quota_refuses_the_sixth_with_exact_headers() -> anyhow::Result<()> {
    require_root!();
    let g = setup()?;
    let ns = &g.link.near;
    // The six requests must fall in one minute: start early in it.
    if to_minute_end() < 10 {
        std::thread::sleep(Duration::from_secs(to_minute_end()) + Duration::from_millis(200));
    }
    for i in 0..5 {
        let expected_t = to_minute_end();
        let reply = send(
            ns,
            "127.0.0.1",
            PORT,
            get(&format!("/api/v1/items/{i}"), ""),
        )?;
        ensure!(status_of(&reply) == 200, "request {i}: {reply}");
        assert_minute_admitted(&reply, 4 - i, expected_t)?;
    }
    ensure!(app_requests(&g.app) == 5);
    let expected_t = to_minute_end();
    let reply = send(
        ns,
        "127.0.0.1",
        PORT,
        get("/api/v1/items/6", "Accept: application/json\r\n"),
    )?;
    println!("the sixth request's answer:\n{reply}");
    assert_minute_refusal(&reply, expected_t)?;
    ensure!(
        header_of(&reply, "content-type") == Some("application/problem+json"),
        "{reply}"
    );
    let problem: serde_json::Value = serde_json::from_str(body_of(&reply))?;
    ensure!(
        problem["violated_policies"] == serde_json::json!(["minute"]),
        "{problem}"
    );
    ensure!(problem["status"] == 429, "{problem}");
    ensure!(header_of(&reply, "x-guard-problem").is_none(), "{reply}");
    ensure!(app_requests(&g.app) == 5, "the app saw the sixth");
    // An HTML client gets the page, with the same headers.
    let reply = send(ns, "127.0.0.1", PORT, get("/api/v1/items/7", ""))?;
    assert_minute_refusal(&reply, to_minute_end())?;
    ensure!(
        header_of(&reply, "content-type").is_some_and(|c| c.starts_with("text/html")),
        "{reply}"
    );
    // Another path is not limited.
    let reply = send(ns, "127.0.0.1", PORT, get("/api/v1/other", ""))?;
    ensure!(status_of(&reply) == 200, "another path: {reply}");
    ensure!(app_requests(&g.app) == 6);

    // A SQL injection to the limited path from a fresh client: 403, and it spends nothing.
    let sqli = "/api/v1/items/1?id=1%27%20UNION%20SELECT%20password%20FROM%20users--";
    let reply = send(ns, "127.0.0.2", PORT, get(sqli, ""))?;
    ensure!(status_of(&reply) == 403, "SQL injection: {reply}");
    ensure!(app_requests(&g.app) == 6, "the app saw the SQL injection");
    if to_minute_end() < 3 {
        std::thread::sleep(Duration::from_secs(to_minute_end()) + Duration::from_millis(200));
    }
    for i in 0..5 {
        let reply = send(
            ns,
            "127.0.0.2",
            PORT,
            get(&format!("/api/v1/items/{i}"), ""),
        )?;
        ensure!(
            status_of(&reply) == 200,
            "fresh client, request {i} after its injection: {reply}"
        );
    }
    let expected_t = to_minute_end();
    let reply = send(ns, "127.0.0.2", PORT, get("/api/v1/items/9", ""))?;
    assert_minute_refusal(&reply, expected_t)?;
    ensure!(app_requests(&g.app) == 11);

    // The next window admits again (a second-long window, to keep the test short).
    let burst = |src: &str| send(ns, src, PORT, get("/api/v1/burst", ""));
    let wait_second_start = || {
        let into = now().subsec_millis();
        std::thread::sleep(Duration::from_millis(u64::from(1000 - into) + 20));
    };
    wait_second_start();
    let statuses = [
        status_of(&burst("127.0.0.3")?),
        status_of(&burst("127.0.0.3")?),
    ];
    let third = burst("127.0.0.3")?;
    let ended_early = now().subsec_millis() < 20;
    ensure!(statuses == [200, 200], "{statuses:?}");
    if !ended_early {
        ensure!(status_of(&third) == 429, "third in one second: {third}");
        ensure!(
            header_of(&third, "ratelimit-policy") == Some("\"second\";q=2;w=1"),
            "{third}"
        );
        ensure!(
            header_of(&third, "ratelimit") == Some("\"second\";r=0;t=1"),
            "{third}"
        );
        ensure!(header_of(&third, "retry-after") == Some("1"), "{third}");
    }
    wait_second_start();
    let again = burst("127.0.0.3")?;
    ensure!(status_of(&again) == 200, "the next second: {again}");

    // The forward-auth endpoint, asked as nginx asks it for a client with a spent quota.
    let auth = format!(
        "GET /.guard-auth HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: {UA}\r\n\
         X-Original-URI: /api/v1/items/3\r\nX-Original-Method: GET\r\n\
         X-Forwarded-For: 127.0.0.2\r\nConnection: close\r\n\r\n"
    );
    if to_minute_end() >= 2 {
        let expected_t = to_minute_end();
        let reply = send(ns, FRONT, AUTH_PORT, auth.clone().into_bytes())?;
        println!("forward-auth for the spent client:\n{reply}");
        ensure!(status_of(&reply) == 403, "{reply}");
        ensure!(
            header_of(&reply, "x-guard-status") == Some("429"),
            "{reply}"
        );
        let problem: serde_json::Value = serde_json::from_str(
            header_of(&reply, "x-guard-problem").context("no X-Guard-Problem")?,
        )?;
        ensure!(
            problem["violated_policies"] == serde_json::json!(["minute"]),
            "{problem}"
        );
        let as_429 = reply.replacen(" 403 ", " 429 ", 1);
        assert_minute_refusal(&as_429, expected_t)?;
    }
    // A client with quota left is allowed by forward-auth (and charged): its 200 carries what
    // is left, for nginx to hand on.
    let fresh = auth.replace(
        "X-Forwarded-For: 127.0.0.2",
        "X-Forwarded-For: 198.51.100.4",
    );
    let expected_t = to_minute_end();
    let reply = send(ns, FRONT, AUTH_PORT, fresh.into_bytes())?;
    ensure!(
        status_of(&reply) == 200,
        "forward-auth, fresh client: {reply}"
    );
    assert_minute_admitted(&reply, 4, expected_t)?;

    let stats = g.daemon.json(&["stats"])?;
    let inline = &stats["inline"];
    println!("inline counters: {inline}");
    ensure!(
        inline["quota_refused"].as_u64().unwrap_or(0) >= 4,
        "{inline}"
    );
    ensure!(
        inline["quotas"]["refused"] == inline["quota_refused"],
        "{inline}"
    );
    Ok(())
}

/// 200 concurrent requests from one client against `lifetime = 50`, through the proxy: exactly
/// 50 admitted (and seen by the app), 150 answered 429 without `Retry-After`.
#[test]
fn two_hundred_concurrent_requests_against_lifetime_50_admit_exactly_50() -> anyhow::Result<()> {
    require_root!();
    let g = setup()?;
    let statuses = g.link.near.run(|| {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
        let threads: Vec<_> = (0..200)
            .map(|i| {
                let barrier = std::sync::Arc::clone(&barrier);
                std::thread::spawn(move || -> anyhow::Result<(u16, String)> {
                    let request = get(&format!("/api/v1/once/{i}"), "");
                    barrier.wait();
                    let reply = send_here("127.0.0.5", PORT, &request)?;
                    Ok((status_of(&reply), reply))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect::<Vec<_>>()
    })?;
    let mut admitted = 0;
    let mut refused = 0;
    for s in statuses {
        let (status, reply) = s?;
        match status {
            200 => admitted += 1,
            429 => {
                refused += 1;
                ensure!(
                    header_of(&reply, "ratelimit-policy") == Some("\"lifetime\";q=50"),
                    "{reply}"
                );
                ensure!(
                    header_of(&reply, "ratelimit") == Some("\"lifetime\";r=0"),
                    "{reply}"
                );
                ensure!(header_of(&reply, "retry-after").is_none(), "{reply}");
            }
            other => anyhow::bail!("unexpected status {other}: {reply}"),
        }
    }
    println!(
        "MEASURED 200 concurrent requests against lifetime 50: {admitted} admitted, {refused} refused"
    );
    ensure!(
        admitted == 50 && refused == 150,
        "{admitted} admitted, {refused} refused"
    );
    ensure!(
        app_requests(&g.app) == 50,
        "the app saw {}",
        app_requests(&g.app)
    );
    let inline = g.daemon.json(&["stats"])?["inline"].clone();
    ensure!(inline["quota_refused"] == 150, "{inline}");
    Ok(())
}

/// `lifetime = 4`: two requests, a clean restart (SIGTERM) right after them, one more, a
/// `kill -9` once it has been written (the counters are written every second), one more, and
/// the fifth is refused: the lifetime count survived both.
#[test]
fn lifetime_survives_a_restart_and_a_kill_9() -> anyhow::Result<()> {
    require_root!();
    let mut g = setup()?;
    let life = |g: &Guarded| -> anyhow::Result<u16> {
        Ok(status_of(&send(
            &g.link.near,
            "127.0.0.6",
            PORT,
            get("/api/v1/life", ""),
        )?))
    };
    ensure!([life(&g)?, life(&g)?] == [200, 200]);
    // A clean stop writes what is marked, however recent.
    g.daemon.stop()?;
    g.daemon.spawn()?;
    ensure!(
        g.daemon.log_text().contains("restored=1"),
        "no record restored: {}",
        g.daemon.log_text()
    );
    ensure!(life(&g)? == 200, "the third, after the restart");
    // A crash loses at most the last second: wait until the third is written, then kill -9.
    let written = wait_until(Duration::from_secs(10), || {
        g.daemon.json(&["stats"]).is_ok_and(|s| {
            s["inline"]["quotas"]["persist"]["written"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        })
    });
    ensure!(written.is_some(), "the counters were never written");
    g.daemon.kill()?;
    g.daemon.spawn()?;
    ensure!(life(&g)? == 200, "the fourth, after the kill");
    let reply = send(&g.link.near, "127.0.0.6", PORT, get("/api/v1/life", ""))?;
    ensure!(status_of(&reply) == 429, "the fifth: {reply}");
    ensure!(
        header_of(&reply, "ratelimit") == Some("\"lifetime\";r=0"),
        "{reply}"
    );
    ensure!(
        app_requests(&g.app) == 4,
        "the app saw {}",
        app_requests(&g.app)
    );
    Ok(())
}

/// Through real nginx and `dist/nginx-guard-auth.conf`: `per_minute = 5` lets five through to
/// the app, each answer with guard's `RateLimit` (the exact count left); the sixth is answered
/// 429 by nginx (guard's 403 with `X-Guard-Status: 429`), with guard's `Retry-After`,
/// `RateLimit` and `RateLimit-Policy` and guard's `application/problem+json` body naming the
/// minute (handed over in `X-Guard-Problem`), and never reaches the app.
#[test]
fn through_nginx_the_sixth_gets_429_with_the_same_headers() -> anyhow::Result<()> {
    require_root!();
    if !Nginx::installed() {
        println!(
            "SKIPPED: nginx is not installed (`cargo xtask test` installs the Debian package)"
        );
        return Ok(());
    }
    // nginx asks guard from 127.0.0.1 and names the client in X-Real-IP / X-Forwarded-For.
    let g = setup_with("127.0.0.1")?;
    let ns = &g.link.near;
    let nginx = Nginx::start(
        ns,
        SocketAddr::from(([127, 0, 0, 1], NGINX_PORT)),
        g.app.addr,
    )?;
    let ready = wait_until(Duration::from_secs(10), || {
        send(ns, "127.0.0.8", NGINX_PORT, get("/ready", "")).is_ok_and(|r| status_of(&r) == 200)
    });
    ensure!(
        ready.is_some(),
        "nginx never answered 200: {}",
        nginx.error_log()
    );
    if to_minute_end() < 10 {
        std::thread::sleep(Duration::from_secs(to_minute_end()) + Duration::from_millis(200));
    }
    let before = app_requests(&g.app);
    for i in 0..5 {
        let expected_t = to_minute_end();
        let reply = send(
            ns,
            "127.0.0.7",
            NGINX_PORT,
            get(&format!("/api/v1/items/{i}"), ""),
        )?;
        ensure!(status_of(&reply) == 200, "request {i}: {reply}");
        assert_minute_admitted(&reply, 4 - i, expected_t)?;
    }
    ensure!(app_requests(&g.app) == before + 5);
    let expected_t = to_minute_end();
    let reply = send(ns, "127.0.0.7", NGINX_PORT, get("/api/v1/items/6", ""))?;
    println!("nginx's answer to the sixth:\n{reply}");
    assert_minute_refusal(&reply, expected_t)?;
    // guard's problem+json body, which nginx cannot take from the auth subrequest, comes in
    // X-Guard-Problem and is what nginx answers with.
    ensure!(
        header_of(&reply, "content-type") == Some("application/problem+json"),
        "{reply}"
    );
    ensure!(header_of(&reply, "x-guard-problem").is_none(), "{reply}");
    let problem: serde_json::Value =
        serde_json::from_str(body_of(&reply)).with_context(|| format!("not JSON: {reply}"))?;
    ensure!(
        problem
            == serde_json::json!({
                "type": "about:blank",
                "title": "Too Many Requests",
                "status": 429,
                "detail": "quota exceeded: minute",
                "violated_policies": ["minute"],
                "request_id": header_of(&reply, "x-request-id").context("no X-Request-Id")?,
            }),
        "{problem}"
    );
    ensure!(app_requests(&g.app) == before + 5, "the app saw the sixth");
    Ok(())
}

/// An ES256 JWT for `sub`, signed with the test key whose public half the daemon is given.
fn es256_token(sub: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let pk8 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../guard-core/testdata/jwt/ec-private.pk8"),
    )?;
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pk8, &rng)
        .map_err(|e| anyhow::anyhow!("test key: {e}"))?;
    let exp = now().as_secs() + 3600;
    let input = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"ES256","typ":"JWT"}"#),
        B64.encode(format!(r#"{{"sub":"{sub}","exp":{exp}}}"#))
    );
    let sig = pair
        .sign(&rng, input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
}

/// The plan table and the counters over the CLI, on a running daemon: alice (a verified JWT
/// user without a plan) is anonymous, counted by address, `lifetime = 2`; `guard plan set
/// alice pro` gives her `lifetime = 5` at her next request, no restart; `guard quota show`
/// says 5 used, 0 left; `guard quota reset` admits her again; after a restart her plan and
/// the count after the reset are still there; `guard plan rm` makes her anonymous again.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one daemon, one story: plan set, show, reset, restart, plan rm"
)]
fn a_plan_set_by_the_cli_changes_a_users_limits_at_once_and_lasts() -> anyhow::Result<()> {
    require_root!();
    let mut g = setup()?;
    let bearer = format!("Authorization: Bearer {}\r\n", es256_token("alice")?);
    let plan = |g: &Guarded| -> anyhow::Result<String> {
        send(
            &g.link.near,
            "127.0.0.20",
            PORT,
            get("/api/v1/plan", &bearer),
        )
    };
    let statuses = [
        status_of(&plan(&g)?),
        status_of(&plan(&g)?),
        status_of(&plan(&g)?),
    ];
    ensure!(
        statuses == [200, 200, 429],
        "anonymous, lifetime 2: {statuses:?}"
    );

    let out = g
        .daemon
        .cli(&["plan", "set", "alice", "gold"])
        .expect_err("no plan gold");
    ensure!(
        out.contains("no plan named \"gold\"") && out.contains("anonymous, pro"),
        "{out}"
    );
    let out = g
        .daemon
        .cli(&["plan", "set", "alice", "pro"])
        .map_err(anyhow::Error::msg)?;
    ensure!(out.contains("user alice is on plan pro"), "{out}");
    let ls = g.daemon.json(&["plan", "ls"])?;
    ensure!(
        ls == serde_json::json!([{"user": "alice", "plan": "pro", "known": true}]),
        "{ls}"
    );
    let table = g.daemon.cli(&["plan", "ls"]).map_err(anyhow::Error::msg)?;
    ensure!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["alice", "pro"])),
        "{table}"
    );

    // On pro at once: five, each with what is left, then 429.
    for left in (0..5).rev() {
        let reply = plan(&g)?;
        ensure!(status_of(&reply) == 200, "pro, {left} left after: {reply}");
        ensure!(
            header_of(&reply, "ratelimit-policy") == Some("\"lifetime\";q=5")
                && header_of(&reply, "ratelimit") == Some(&format!("\"lifetime\";r={left}")),
            "{reply}"
        );
    }
    let reply = plan(&g)?;
    ensure!(status_of(&reply) == 429, "pro spent: {reply}");
    let show = g.daemon.json(&["quota", "show", "alice"])?;
    println!("quota show alice: {show}");
    ensure!(show["plan"] == "pro", "{show}");
    ensure!(
        !show["key"].as_str().unwrap_or("alice").contains("alice"),
        "{show}"
    );
    let rule = &show["rules"][0];
    ensure!(
        rule["plan"] == "pro" && rule["rule"] == "/api/v1/plan",
        "{show}"
    );
    ensure!(
        rule["windows"]
            == serde_json::json!([{"window": "lifetime", "limit": 5, "used": 5, "remaining": 0,
                "reset_secs": null, "resets_at": null}]),
        "{show}"
    );
    let table = g
        .daemon
        .cli(&["quota", "show", "alice"])
        .map_err(anyhow::Error::msg)?;
    println!("{table}");
    ensure!(
        table.lines().any(|l| l.split_whitespace().eq([
            "pro",
            "/api/v1/plan",
            "lifetime",
            "5",
            "5",
            "0",
            "never"
        ])),
        "{table}"
    );
    let addr = g.daemon.json(&["quota", "show", "127.0.0.20"])?;
    ensure!(addr["plan"] == "anonymous", "{addr}");

    let out = g
        .daemon
        .cli(&["quota", "reset", "alice", "--rule", "/api/v1/plan"])
        .map_err(anyhow::Error::msg)?;
    ensure!(
        out.contains("counters reset for pro: /api/v1/plan"),
        "{out}"
    );
    let reply = plan(&g)?;
    ensure!(status_of(&reply) == 200, "after the reset: {reply}");
    ensure!(
        header_of(&reply, "ratelimit") == Some("\"lifetime\";r=4"),
        "{reply}"
    );

    // A restart keeps the plan and the count after the reset.
    g.daemon.stop()?;
    g.daemon.spawn()?;
    ensure!(g.daemon.json(&["plan", "ls"])?[0]["plan"] == "pro");
    let reply = plan(&g)?;
    ensure!(status_of(&reply) == 200, "after the restart: {reply}");
    ensure!(
        header_of(&reply, "ratelimit") == Some("\"lifetime\";r=3"),
        "{reply}"
    );

    // Off the table: anonymous again, her address's two long spent.
    let out = g
        .daemon
        .cli(&["plan", "rm", "alice"])
        .map_err(anyhow::Error::msg)?;
    ensure!(
        out.contains("user alice is off the plan table (was on pro)"),
        "{out}"
    );
    let reply = plan(&g)?;
    ensure!(status_of(&reply) == 429, "anonymous again: {reply}");
    ensure!(
        header_of(&reply, "ratelimit-policy") == Some("\"lifetime\";q=2"),
        "{reply}"
    );
    let err = g
        .daemon
        .cli(&["plan", "rm", "alice"])
        .expect_err("not on the table");
    ensure!(
        err.contains("user \"alice\" has no plan in the plan table"),
        "{err}"
    );
    Ok(())
}

/// A counter of `guard stats --json` under `inline.quotas` (`persist.written` for a nested one).
fn quota_stat(g: &Guarded, path: &str) -> u64 {
    let Ok(stats) = g.daemon.json(&["stats"]) else {
        return 0;
    };
    let mut v = &stats["inline"]["quotas"];
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_u64().unwrap_or(0)
}

/// What [`through_a_failing_store`] saw.
struct StoreFailure {
    g: Guarded,
    /// The answers to three requests made while the store fails.
    during: Vec<String>,
    /// `guard quota show` of the client while the store fails: the lifetime rule's `used`.
    used: u64,
    /// The answer to one more request after space is freed and guard restarted.
    after: String,
}

/// The quota store on a disk that fills: a lifetime rule's request is admitted and written;
/// the disk fills and a large `guard ban import` into the same state database fails (sled
/// then refuses every write until it is reopened); the next write of the quota counters
/// fails, and `on_store_error` decides about the requests that follow. Then space is freed
/// and guard restarted.
fn through_a_failing_store(on_store_error: &str) -> anyhow::Result<StoreFailure> {
    use std::fmt::Write as _;
    let (mut g, disk) = setup_small_disk(on_store_error)?;
    let once = |g: &Guarded, i: u32| {
        send(
            &g.link.near,
            "127.0.0.30",
            PORT,
            get(&format!("/api/v1/once/{i}"), ""),
        )
    };
    ensure!(status_of(&once(&g, 0)?) == 200);
    let written = wait_until(Duration::from_secs(10), || {
        quota_stat(&g, "persist.written") >= 1
    });
    ensure!(written.is_some(), "the first charge was never written");
    let filler = disk.fill()?;
    let mut csv = String::new();
    let reason = "r".repeat(300);
    for i in 0..6000u32 {
        writeln!(
            csv,
            "100.{}.{}.{},1h,{reason}",
            64 + i / 65536,
            (i / 256) % 256,
            i % 256
        )?;
    }
    // One file per test: the tests of this file run at once in one process.
    let file = std::env::temp_dir().join(format!(
        "guard-quota-full-{on_store_error}-{}.csv",
        std::process::id()
    ));
    std::fs::write(&file, csv)?;
    let import = g
        .daemon
        .cli(&["ban", "import", file.to_str().unwrap_or_default()]);
    std::fs::remove_file(&file)?;
    let err = import.expect_err("an import onto a full disk must fail");
    ensure!(err.contains("No space left on device"), "{err}");
    // Charged in memory and marked (the store is not yet known to fail); its write fails.
    ensure!(status_of(&once(&g, 1)?) == 200);
    let failed = wait_until(Duration::from_secs(10), || {
        quota_stat(&g, "persist.errors") >= 1
    });
    ensure!(
        failed.is_some(),
        "the write onto the full disk never failed: {}",
        g.daemon.log_text()
    );
    let mut during = Vec::new();
    for i in 2..5 {
        during.push(once(&g, i)?);
    }
    let show = g.daemon.json(&["quota", "show", "127.0.0.30"])?;
    let used = show["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["rule"] == "/api/v1/once/*"))
        .and_then(|r| r["windows"][0]["used"].as_u64())
        .with_context(|| format!("{show}"))?;
    std::fs::remove_file(filler)?;
    g.daemon.stop()?;
    g.daemon.spawn()?;
    let after = once(&g, 9)?;
    drop(disk);
    Ok(StoreFailure {
        g,
        during,
        used,
        after,
    })
}

/// `on_store_error = "deny"`: while the store fails, a request under a rule with a lifetime
/// limit is answered 503 with `Retry-After: 1`, never reaches the app and charges nothing;
/// counted, logged once. After a restart on a freed disk: admitted.
#[test]
fn a_failing_store_with_deny_answers_503() -> anyhow::Result<()> {
    require_root!();
    let f = through_a_failing_store("deny")?;
    println!("a request while the store fails:\n{}", f.during[0]);
    for reply in &f.during {
        ensure!(status_of(reply) == 503, "{reply}");
        ensure!(header_of(reply, "retry-after") == Some("1"), "{reply}");
    }
    ensure!(f.used == 2, "the refused were charged: {} used", f.used);
    ensure!(status_of(&f.after) == 200, "after the restart: {}", f.after);
    ensure!(
        app_requests(&f.g.app) == 3,
        "the app saw {}",
        app_requests(&f.g.app)
    );
    let log = f.g.daemon.log_text();
    ensure!(
        log.matches("the quota store is failing").count() == 1,
        "{log}"
    );
    ensure!(
        log.contains("refused with 503 (quotas.on_store_error = deny"),
        "{log}"
    );
    Ok(())
}

/// `on_store_error = "admit"` (the default): while the store fails, requests are admitted and
/// charged in memory; counted, logged once.
#[test]
fn a_failing_store_with_admit_admits_counts_and_logs_once() -> anyhow::Result<()> {
    require_root!();
    let f = through_a_failing_store("admit")?;
    for reply in f.during.iter().chain([&f.after]) {
        ensure!(status_of(reply) == 200, "{reply}");
    }
    ensure!(f.used == 5, "{} used", f.used);
    ensure!(
        app_requests(&f.g.app) == 6,
        "the app saw {}",
        app_requests(&f.g.app)
    );
    let log = f.g.daemon.log_text();
    ensure!(
        log.matches("the quota store is failing").count() == 1,
        "{log}"
    );
    ensure!(log.contains("admitted and counted in memory"), "{log}");
    Ok(())
}
