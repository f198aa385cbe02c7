//! End to end for user bans, on a real daemon: `guard ban add|ls|rm --user` over the control
//! socket, a user ban that survives a restart, one that expires while guard runs and one that
//! ends while it is stopped, and the engine banning a
//! verified user (an ES256 JWT checked with the key file of `tap.jwt_public_key`) together with
//! its address when the user attacks through the tap — while a client with a forged token gets
//! only its address banned.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use guard_tests::http::{Client, start_server};
use guard_tests::{Daemon, Link, require_root, wait_until};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

const PORT: u16 = 8080;

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guard-core/testdata/jwt")
        .join(name)
}

/// `guard ban ls --user --json`: one JSON object per user ban.
fn user_bans(d: &Daemon) -> anyhow::Result<Vec<serde_json::Value>> {
    let v = d.json(&["ban", "ls", "--user"])?;
    v.as_array()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("ban ls --user is not a list: {v}"))
}

fn ids(bans: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = bans
        .iter()
        .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

fn cli(d: &Daemon, args: &[&str]) -> anyhow::Result<String> {
    d.cli(args).map_err(anyhow::Error::msg)
}

#[test]
fn user_bans_are_listed_survive_a_restart_expire_and_are_lifted() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let mut d = Daemon::start(&link.near, &link.near_if, "[tap]\nhttp_ports = []\n")?;

    let out = cli(
        &d,
        &[
            "ban", "add", "--user", "alice", "--ttl", "1h", "--reason", "abuse",
        ],
    )?;
    assert!(out.contains("banned user alice until"), "{out}");
    cli(
        &d,
        &["ban", "add", "--user", "bob@example.org", "--ttl", "0"],
    )?;
    cli(&d, &["ban", "add", "--user", "brief", "--ttl", "2s"])?;
    let listed = user_bans(&d)?;
    assert_eq!(ids(&listed), ["alice", "bob@example.org", "brief"]);
    let alice = listed.iter().find(|b| b["id"] == "alice").expect("alice");
    assert_eq!(alice["reason"], "abuse");
    assert_eq!(alice["origin"], "cli");
    assert!(alice["expires_at"].is_u64());
    let bob = listed
        .iter()
        .find(|b| b["id"] == "bob@example.org")
        .expect("bob");
    assert!(bob["expires_at"].is_null(), "--ttl 0 is permanent: {bob}");
    // The table says the same.
    let table = cli(&d, &["ban", "ls", "--user"])?;
    assert!(table.contains("USER") && table.contains("alice") && table.contains("never"));
    // User bans are not address bans.
    assert_eq!(d.json(&["ban", "ls"])?.as_array().map(Vec::len), Some(0));
    // Ids the network or a typo could produce are refused, by the CLI and by the daemon.
    let long = "x".repeat(257);
    for bad in [long.as_str(), "eve\nforged line", ""] {
        let e = d
            .cli(&["ban", "add", "--user", bad])
            .expect_err("a bad id is refused");
        assert!(e.contains("user id"), "{bad:?}: {e}");
    }

    // The 2 s ban ends by itself, on the monotonic clock.
    let gone = wait_until(Duration::from_secs(6), || {
        user_bans(&d).is_ok_and(|b| !ids(&b).contains(&"brief".to_owned()))
    });
    assert!(gone.is_some(), "the 2 s user ban did not expire");

    // One that ends while guard is stopped is gone when it starts again.
    cli(&d, &["ban", "add", "--user", "while-down", "--ttl", "2s"])?;
    d.stop()?;
    std::thread::sleep(Duration::from_millis(2500));
    d.spawn()?;
    let after = user_bans(&d)?;
    assert_eq!(
        ids(&after),
        ["alice", "bob@example.org"],
        "kept over the restart"
    );
    assert_eq!(
        after
            .iter()
            .find(|b| b["id"] == "alice")
            .map(|b| &b["expires_at"]),
        Some(&alice["expires_at"]),
        "the end of a timed ban is kept"
    );

    let out = cli(&d, &["ban", "rm", "--user", "alice"])?;
    assert!(out.contains("unbanned user alice"), "{out}");
    assert_eq!(ids(&user_bans(&d)?), ["bob@example.org"]);
    let e = d
        .cli(&["ban", "rm", "--user", "alice"])
        .expect_err("not banned any more");
    assert!(e.contains("not banned"), "{e}");
    // Lifted for good: not back after another restart.
    d.stop()?;
    d.spawn()?;
    assert_eq!(ids(&user_bans(&d)?), ["bob@example.org"]);
    Ok(())
}

/// An ES256 JWT for `sub`, signed with the test key whose public half the daemon is given.
fn es256_token(sub: &str) -> anyhow::Result<String> {
    let pk8 = std::fs::read(testdata("ec-private.pk8"))?;
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pk8, &rng)
        .map_err(|e| anyhow::anyhow!("test key: {e}"))?;
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
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

/// Backdoor probes (two make a ban) from `src` with `Authorization: Bearer token`, one per
/// connection, until the client is cut off; returns the requests answered.
fn probe(link: &Link, src: IpAddr, dst: SocketAddr, token: String) -> usize {
    let ns = link.far.path();
    let client = std::thread::spawn(move || {
        let _ = guard_tests::enter(&ns);
        let mut answered = 0;
        for path in ["/shell.php", "/c99.php", "/r57.php", "/wso.php"] {
            let Some(s) = guard_tests::connect_from(src, dst, Duration::from_secs(1)) else {
                break;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut c = Client { stream: s };
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: guard.test\r\nUser-Agent: Mozilla/5.0\r\nAuthorization: Bearer {token}\r\n\r\n"
            );
            if c.send(req.as_bytes())
                .and_then(|()| c.responses(1))
                .is_err()
            {
                break;
            }
            answered += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        answered
    });
    client.join().unwrap_or(0)
}

#[test]
fn the_engine_bans_a_verified_user_with_its_address() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    start_server(&link.near, PORT)?;
    let pem = testdata("ec-public.pem");
    let d = Daemon::start(
        &link.near,
        &link.near_if,
        &format!(
            "[tap]\nhttp_ports = [{PORT}]\njwt_public_key = \"{}\"\n",
            pem.display()
        ),
    )?;
    let dst = SocketAddr::new(link.near_v4, PORT);

    // Eve holds a valid ES256 token and probes for backdoors.
    let eve = link.far_v4;
    probe(&link, eve, dst, es256_token("eve")?);
    let banned = wait_until(Duration::from_secs(10), || {
        user_bans(&d).is_ok_and(|b| ids(&b).contains(&"eve".to_owned()))
    });
    assert!(banned.is_some(), "eve was not banned: {}", d.log_text());
    let bans = user_bans(&d)?;
    let ban = bans.iter().find(|b| b["id"] == "eve").expect("eve");
    assert_eq!(ban["origin"], "engine", "{ban}");
    assert_eq!(
        ban["addr"],
        eve.to_string(),
        "listed with its address: {ban}"
    );
    assert!(ban["expires_at"].is_u64(), "an engine ban ends: {ban}");
    let addr_bans = d.json(&["ban", "ls"])?;
    let addr_ban = addr_bans
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["addr"] == eve.to_string())
        .unwrap_or_else(|| panic!("eve's address is not banned: {addr_bans}"));
    assert_eq!(addr_ban["evidence"]["user"], "eve", "{addr_ban}");
    println!(
        "eve banned as user and address: user {} until {}, address {} ({})",
        ban["id"], ban["expires_at"], addr_ban["addr"], addr_ban["reason"]
    );

    // Mallory's token claims a user but its signature is forged (signed for another payload):
    // the address is banned, the claimed user never.
    let mallory = link.add_far_v4(41)?;
    let real = es256_token("someone")?;
    let parts: Vec<&str> = real.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(r#"{"sub":"mallory"}"#),
        parts[2]
    );
    probe(&link, mallory, dst, forged);
    let addr_banned = wait_until(Duration::from_secs(10), || {
        d.json(&["ban", "ls"]).is_ok_and(|v| {
            v.as_array()
                .into_iter()
                .flatten()
                .any(|b| b["addr"] == mallory.to_string())
        })
    });
    assert!(
        addr_banned.is_some(),
        "mallory's address was not banned: {}",
        d.log_text()
    );
    assert_eq!(
        ids(&user_bans(&d)?),
        ["eve"],
        "a claimed user is never banned"
    );
    Ok(())
}

#[test]
fn a_key_file_that_cannot_be_used_stops_the_start() -> anyhow::Result<()> {
    require_root!();
    let link = Link::new()?;
    let mut d = Daemon::prepare(
        &link.near,
        &link.near_if,
        &format!(
            "[tap]\nhttp_ports = [{PORT}]\njwt_public_key = \"{}\"\n",
            testdata("rsa1024-public.pem").display()
        ),
    )?;
    let e = d
        .spawn_within(Duration::from_secs(10))
        .expect_err("refused");
    let text = format!("{e:#}");
    assert!(
        text.contains("tap.jwt_public_key") && text.contains("1024 bits"),
        "{text}"
    );
    Ok(())
}
