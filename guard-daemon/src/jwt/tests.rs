//! Real RS256 and ES256 signatures, made here with ring's signing keys, checked through the
//! tap's JWT rules with the keys of PEM files.
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use guard_core::tap::jwt::{JwtKeys, PublicKeys};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};

use super::*;

const NOW: u64 = 1_800_000_000;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guard-core/testdata/jwt")
        .join(name)
}

fn rsa_pair() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(&std::fs::read(data("rsa-private.pk8")).unwrap()).unwrap()
}

fn ec_pair() -> EcdsaKeyPair {
    let pk8 = std::fs::read(data("ec-private.pk8")).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pk8, &SystemRandom::new()).unwrap()
}

fn input(alg: &str, claims: &str) -> String {
    format!(
        "{}.{}",
        B64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
        B64.encode(claims)
    )
}

fn rs256(claims: &str) -> String {
    let pair = rsa_pair();
    let input = input("RS256", claims);
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn es256(claims: &str) -> String {
    let input = input("ES256", claims);
    let sig = ec_pair()
        .sign(&SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

/// The keys of both public PEM files, as `tap.jwt_public_key` would hold them in one file.
fn keys() -> JwtKeys {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("guard-jwt-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.pem");
    let text = std::fs::read_to_string(data("ec-public.pem")).unwrap()
        + &std::fs::read_to_string(data("rsa-public.pem")).unwrap();
    std::fs::write(&file, text).unwrap();
    let keys = load(&file).unwrap();
    assert_eq!(keys.counts(), (1, 1));
    let _ = std::fs::remove_dir_all(&dir);
    JwtKeys::new(
        Some(b"hs-secret"),
        Some(Arc::new(keys) as Arc<dyn PublicKeys>),
    )
}

#[test]
fn rs256_and_es256_tokens_verify_with_the_pem_keys() {
    let keys = keys();
    let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 60);
    assert_eq!(
        keys.check(&rs256(&claims), NOW),
        Some(("alice".into(), true))
    );
    assert_eq!(
        keys.check(&es256(&claims), NOW),
        Some(("alice".into(), true))
    );
    // A key file with the other type only: the token is a claim.
    let ec_only = JwtKeys::new(
        None,
        Some(Arc::new(load(&data("ec-public.pem")).unwrap()) as Arc<dyn PublicKeys>),
    );
    assert!(!ec_only.check(&rs256(&claims), NOW).unwrap().1);
    assert!(ec_only.check(&es256(&claims), NOW).unwrap().1);
}

#[test]
fn expired_tampered_and_relabelled_tokens_do_not_verify() {
    let keys = keys();
    let expired = format!(r#"{{"sub":"alice","exp":{}}}"#, NOW - 3600);
    assert_eq!(
        keys.check(&rs256(&expired), NOW),
        Some(("alice".into(), false))
    );
    assert!(!keys.check(&es256(&expired), NOW).unwrap().1);
    let early = format!(r#"{{"sub":"alice","nbf":{}}}"#, NOW + 3600);
    assert!(!keys.check(&es256(&early), NOW).unwrap().1);
    for token in [rs256(r#"{"sub":"alice"}"#), es256(r#"{"sub":"alice"}"#)] {
        // Checked (and remembered as good) first: what is remembered is this token only.
        assert!(keys.check(&token, NOW).unwrap().1);
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(r#"{"sub":"admin"}"#),
            parts[2]
        );
        assert_eq!(keys.check(&tampered, NOW), Some(("admin".into(), false)));
        // The signature of one algorithm under the other's header.
        let other = if parts[0] == input("RS256", "").split('.').next().unwrap() {
            "ES256"
        } else {
            "RS256"
        };
        let relabelled = format!("{}.{}", input(other, r#"{"sub":"alice"}"#), parts[2]);
        assert!(!keys.check(&relabelled, NOW).unwrap().1, "{other}");
        // A flipped bit in the signature.
        let mut sig = B64.decode(parts[2]).unwrap();
        sig[10] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
        assert!(!keys.check(&flipped, NOW).unwrap().1);
    }
    // HS256 made with the RSA public key file as the secret (alg confusion): refused.
    let pem = std::fs::read(data("rsa-public.pem")).unwrap();
    let mut mac = <hmac_sha256::Mac>::new(&pem);
    let input = input("HS256", r#"{"sub":"mallory"}"#);
    mac.update(input.as_bytes());
    let forged = format!("{input}.{}", B64.encode(mac.finish()));
    assert!(!keys.check(&forged, NOW).unwrap().1);
}

#[test]
fn key_files_that_cannot_be_used_are_refused_naming_the_file() {
    let e = load(Path::new("/nonexistent/jwt.pem"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/jwt.pem"), "{e}");
    let e = load(&data("rsa1024-public.pem")).unwrap_err().to_string();
    assert!(e.contains("1024 bits"), "{e}");
    let e = load(&data("rsa-private.pk8")).unwrap_err().to_string();
    assert!(
        e.contains("no PEM block") || e.contains("cannot read"),
        "{e}"
    );
}

/// A minimal HMAC-SHA256 over ring, for the forged token above.
mod hmac_sha256 {
    pub struct Mac(ring::hmac::Context);

    impl Mac {
        pub fn new(key: &[u8]) -> Self {
            Self(ring::hmac::Context::with_key(&ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                key,
            )))
        }
        pub fn update(&mut self, data: &[u8]) {
            self.0.update(data);
        }
        pub fn finish(self) -> Vec<u8> {
            self.0.sign().as_ref().to_vec()
        }
    }
}

/// What a verified token costs the tap thread that checks it (one per request carrying it).
/// `cargo test -p guard-daemon --release --lib jwt_verify_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check"]
fn jwt_verify_cost() {
    let keys = keys();
    let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 60);
    for (name, token) in [
        ("HS256", {
            let input = input("HS256", &claims);
            let mut mac = hmac_sha256::Mac::new(b"hs-secret");
            mac.update(input.as_bytes());
            format!("{input}.{}", B64.encode(mac.finish()))
        }),
        ("RS256", rs256(&claims)),
        ("ES256", es256(&claims)),
    ] {
        // A new token each time: the signature is checked.
        let fresh: Vec<String> = (0..200)
            .map(|i| {
                let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 60 + i);
                match name {
                    "RS256" => rs256(&claims),
                    "ES256" => es256(&claims),
                    _ => token.replace("alice", &format!("alice{i}")),
                }
            })
            .collect();
        let start = std::time::Instant::now();
        for t in &fresh {
            let _ = keys.check(t, NOW);
        }
        let cold = start.elapsed() / 200;
        // The same token again (a client's next requests).
        assert!(keys.check(&token, NOW).unwrap().1, "{name}");
        let n = 5_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(keys.check(&token, NOW).unwrap().1);
        }
        println!(
            "{name}: first sight {cold:?} per token, again {:?} per token",
            start.elapsed() / n
        );
    }
}
