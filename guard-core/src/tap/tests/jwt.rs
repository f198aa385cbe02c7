//! Bearer JWTs: which tokens verify (alg and key type must match, times hold, the signature
//! checks) and the PEM/SPKI parsing of public keys. The public-key check itself is a fake here
//! (the pure core has no crypto library); the daemon's tests check real RS256/ES256 signatures.
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac as _;

use crate::tap::jwt::{JwtAlg, JwtKeys, LEEWAY_SECS, PublicKeys};
use crate::tap::pem::{PemError, PublicKey, parse_public_keys};

const NOW: u64 = 1_800_000_000;

/// Accepts the signature `good` for the algorithms it holds keys of; records what it was asked.
struct Fake {
    algs: Vec<JwtAlg>,
    asked: Mutex<Vec<JwtAlg>>,
}

impl PublicKeys for Fake {
    fn verify(&self, alg: JwtAlg, _input: &[u8], signature: &[u8]) -> bool {
        self.asked.lock().unwrap().push(alg);
        self.algs.contains(&alg) && signature == b"good"
    }
}

fn fake(algs: &[JwtAlg]) -> Arc<Fake> {
    Arc::new(Fake {
        algs: algs.to_vec(),
        asked: Mutex::default(),
    })
}

fn token(header: &str, claims: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header),
        B64.encode(claims),
        B64.encode(signature)
    )
}

fn hs256(header: &str, claims: &str, key: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

const RS: &str = r#"{"alg":"RS256","typ":"JWT"}"#;
const ES: &str = r#"{"alg":"ES256"}"#;
const HS: &str = r#"{"alg":"HS256"}"#;

#[test]
fn public_key_tokens_verify_only_with_a_key_of_their_type() {
    let keys = JwtKeys::new(None, Some(fake(&[JwtAlg::Rs256]) as Arc<dyn PublicKeys>));
    let claims = r#"{"sub":"alice"}"#;
    assert_eq!(
        keys.check(&token(RS, claims, b"good"), NOW),
        Some(("alice".into(), true))
    );
    // Same signature, ES256 header: no P-256 key holds it.
    assert_eq!(
        keys.check(&token(ES, claims, b"good"), NOW),
        Some(("alice".into(), false))
    );
    assert!(!keys.check(&token(RS, claims, b"bad"), NOW).unwrap().1);
    // `none`, lower case, other algorithms: never verified, and never sent to the keys.
    let f = fake(&[JwtAlg::Rs256, JwtAlg::Es256]);
    let keys = JwtKeys::new(Some(b"secret"), Some(Arc::clone(&f) as Arc<dyn PublicKeys>));
    for alg in ["none", "rs256", "RS384", "PS256", "HS512", ""] {
        let t = token(&format!(r#"{{"alg":"{alg}"}}"#), claims, b"good");
        assert!(!keys.check(&t, NOW).unwrap().1, "{alg}");
    }
    let unsigned = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none"}"#),
        B64.encode(claims)
    );
    assert!(!keys.check(&unsigned, NOW).unwrap().1);
    assert!(f.asked.lock().unwrap().is_empty(), "no key asked");
}

#[test]
fn hs256_never_uses_a_public_key_and_public_algs_never_use_the_secret() {
    let pem = include_str!("../../../testdata/jwt/rsa-public.pem");
    let claims = r#"{"sub":"mallory"}"#;
    // The classic confusion: an HS256 token "signed" with the server's public key as the secret.
    let forged = hs256(HS, claims, pem.as_bytes());
    let f = fake(&[JwtAlg::Rs256]);
    let public_only = JwtKeys::new(None, Some(Arc::clone(&f) as Arc<dyn PublicKeys>));
    assert!(!public_only.check(&forged, NOW).unwrap().1);
    assert!(
        f.asked.lock().unwrap().is_empty(),
        "HS256 never reaches the public keys"
    );
    // An RS256 header over an HMAC made with the secret is not an RSA signature.
    let both = JwtKeys::new(
        Some(b"secret"),
        Some(fake(&[JwtAlg::Rs256]) as Arc<dyn PublicKeys>),
    );
    let real_hs = hs256(HS, claims, b"secret");
    assert!(both.check(&real_hs, NOW).unwrap().1);
    let sig = real_hs.rsplit('.').next().unwrap();
    let relabelled = format!("{}.{}.{sig}", B64.encode(RS), B64.encode(claims));
    assert!(!both.check(&relabelled, NOW).unwrap().1);
}

#[test]
fn exp_and_nbf_hold_when_present() {
    let keys = JwtKeys::new(Some(b"k"), None);
    let at = |claims: &str, now: u64| keys.check(&hs256(HS, claims, b"k"), now).unwrap().1;
    let exp = format!(r#"{{"sub":"a","exp":{NOW}}}"#);
    assert!(at(&exp, NOW - 1));
    assert!(at(&exp, NOW + LEEWAY_SECS - 1), "within the leeway");
    assert!(!at(&exp, NOW + LEEWAY_SECS), "expired");
    let nbf = format!(r#"{{"sub":"a","nbf":{NOW}}}"#);
    assert!(at(&nbf, NOW));
    assert!(at(&nbf, NOW - LEEWAY_SECS));
    assert!(!at(&nbf, NOW - LEEWAY_SECS - 1), "not yet valid");
    assert!(at(&format!(r#"{{"sub":"a","exp":{}.5}}"#, NOW + 10), NOW));
    for bad in [r#""tomorrow""#, "-5", "null", "[1]"] {
        assert!(!at(&format!(r#"{{"sub":"a","exp":{bad}}}"#), NOW), "{bad}");
    }
    assert!(at(r#"{"sub":"a"}"#, NOW), "no times: no limit");
}

#[test]
fn tampered_tokens_and_crit_headers_do_not_verify() {
    let keys = JwtKeys::new(Some(b"k"), None);
    let good = hs256(HS, r#"{"sub":"bob"}"#, b"k");
    assert_eq!(keys.check(&good, NOW), Some(("bob".into(), true)));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(r#"{"sub":"root"}"#),
        parts[2]
    );
    assert_eq!(keys.check(&tampered, NOW), Some(("root".into(), false)));
    let crit = hs256(
        r#"{"alg":"HS256","crit":["exp"]}"#,
        r#"{"sub":"bob"}"#,
        b"k",
    );
    assert!(!keys.check(&crit, NOW).unwrap().1);
    // Not a JWT at all: no user.
    for junk in ["", "a.b", "a.b.c.d", "!!!.???.***", &"a".repeat(9000)] {
        assert_eq!(keys.check(junk, NOW), None, "{junk:.20}");
    }
}

#[test]
fn pem_public_keys_parse_by_type() {
    let rsa = parse_public_keys(include_str!("../../../testdata/jwt/rsa-public.pem")).unwrap();
    let pkcs1 =
        parse_public_keys(include_str!("../../../testdata/jwt/rsa-public-pkcs1.pem")).unwrap();
    assert!(matches!(&rsa[..], [PublicKey::Rsa(_)]));
    assert_eq!(rsa, pkcs1, "SPKI and PKCS#1 give the same RSAPublicKey");
    let ec = parse_public_keys(include_str!("../../../testdata/jwt/ec-public.pem")).unwrap();
    let [PublicKey::EcP256(point)] = &ec[..] else {
        panic!("{ec:?}")
    };
    assert_eq!((point.len(), point[0]), (65, 4));
    // Several blocks, with text around them (as `openssl` and editors leave).
    let both = format!(
        "# rotation\n{}\nnotes\n{}",
        include_str!("../../../testdata/jwt/ec-public.pem"),
        include_str!("../../../testdata/jwt/rsa-public.pem")
    );
    assert_eq!(parse_public_keys(&both).unwrap().len(), 2);
}

#[test]
fn unusable_pem_is_refused_with_its_reason() {
    let err = |text: &str| parse_public_keys(text).unwrap_err();
    assert_eq!(err("hello"), PemError::NoBlock);
    assert!(matches!(
        err(include_str!("../../../testdata/jwt/ec-p384-public.pem")),
        PemError::Unsupported { block: 1 }
    ));
    assert!(matches!(
        err(include_str!("../../../testdata/jwt/ed25519-public.pem")),
        PemError::Unsupported { block: 1 }
    ));
    assert!(matches!(
        err(include_str!("../../../testdata/jwt/rsa1024-public.pem")),
        PemError::RsaSize {
            block: 1,
            bits: 1024
        }
    ));
    assert!(matches!(
        err("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        PemError::Label { block: 1, .. }
    ));
    assert!(matches!(
        err("-----BEGIN PUBLIC KEY-----\nAAAA\n"),
        PemError::Unterminated { block: 1, .. }
    ));
    assert!(matches!(
        err("-----BEGIN PUBLIC KEY-----\n*\n-----END PUBLIC KEY-----\n"),
        PemError::Base64 { block: 1 }
    ));
    // Every cut of a real key is an error, never a panic.
    let text = include_str!("../../../testdata/jwt/rsa-public.pem");
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            text.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    for cut in 0..der.len() {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der[..cut])
        );
        assert!(parse_public_keys(&pem).is_err(), "cut at {cut}");
    }
}
