//! The keys bearer JWTs are verified with, as the tap (and the inline mode) use them: the
//! HS256 secret of `tap.jwt_hs256_key` and the RS256/ES256 public keys of the PEM file
//! `tap.jwt_public_key`, checked with `ring` through `guard_core::tap::jwt::PublicKeys` (the
//! parsing and the JWT rules are in the pure core; only the signature check is here).
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use guard_core::tap::TapConfig;
use guard_core::tap::jwt::{JwtAlg, JwtKeys, PublicKeys};
use guard_core::tap::pem::{MAX_PEM, PemError, PublicKey, parse_public_keys};
use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

/// Why the public key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_PEM} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: PemError,
    },
}

/// Signatures remembered as good, at most (32 bytes each, plus the map's overhead).
pub const VERIFIED_CACHE: usize = 8192;

/// RSA and P-256 public keys, checked with `ring`. A check costs about 55 µs (RS256) or 90 µs
/// (ES256) on the tap thread, and a client sends the same token with every request: the
/// digests of the last [`VERIFIED_CACHE`] good (algorithm, signed part, signature) triples are
/// remembered, so a token is checked once, not per request. Only good signatures are kept (a
/// bad one can be varied at will; keeping it would only let an attacker churn the cache).
#[derive(Debug, Default)]
pub struct RingKeys {
    /// PKCS#1 `RSAPublicKey` DER.
    rsa: Vec<Vec<u8>>,
    /// Uncompressed P-256 points.
    ec: Vec<Vec<u8>>,
    verified: Mutex<Verified>,
}

/// SHA-256 digests of good signatures, oldest dropped first.
#[derive(Debug, Default)]
struct Verified {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Verified {
    fn insert(&mut self, digest: [u8; 32]) {
        if self.set.insert(digest) {
            self.order.push_back(digest);
            if self.order.len() > VERIFIED_CACHE
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// The digest a good signature is remembered by: the algorithm, the signed part and the
/// signature, each length-prefixed so that no two triples share their bytes.
fn digest_of(alg: JwtAlg, signing_input: &[u8], signature: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[alg as u8]);
    ctx.update(&(signing_input.len() as u64).to_le_bytes());
    ctx.update(signing_input);
    ctx.update(signature);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl RingKeys {
    /// The keys parsed from PEM text (see `guard_core::tap::pem`, which checks their shape
    /// and the RSA sizes ring takes).
    #[must_use]
    pub fn from_keys(keys: Vec<PublicKey>) -> Self {
        let mut out = Self::default();
        for key in keys {
            match key {
                PublicKey::Rsa(der) => out.rsa.push(der),
                PublicKey::EcP256(point) => out.ec.push(point),
            }
        }
        out
    }

    /// RSA keys, P-256 keys.
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        (self.rsa.len(), self.ec.len())
    }
}

impl PublicKeys for RingKeys {
    fn verify(&self, alg: JwtAlg, signing_input: &[u8], signature: &[u8]) -> bool {
        if matches!(alg, JwtAlg::Hs256) {
            return false;
        }
        let digest = digest_of(alg, signing_input, signature);
        let lock = || self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if lock().set.contains(&digest) {
            return true;
        }
        let good = self.check(alg, signing_input, signature);
        if good {
            lock().insert(digest);
        }
        good
    }
}

impl RingKeys {
    fn check(&self, alg: JwtAlg, signing_input: &[u8], signature: &[u8]) -> bool {
        match alg {
            JwtAlg::Rs256 => self.rsa.iter().any(|k| {
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, k)
                    .verify(signing_input, signature)
                    .is_ok()
            }),
            JwtAlg::Es256 => self.ec.iter().any(|k| {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k)
                    .verify(signing_input, signature)
                    .is_ok()
            }),
            // Never with a public key: an HS256 token is checked with the HMAC secret only.
            JwtAlg::Hs256 => false,
        }
    }
}

/// Reads the public keys of the PEM file at `path`.
///
/// # Errors
/// [`JwtKeyError`] naming the file: unreadable, too large, no key block, a block that is not a
/// public key, a key type other than RSA or EC P-256, or an RSA key outside 2048-8192 bits.
pub fn load(path: &Path) -> Result<RingKeys, JwtKeyError> {
    let meta = std::fs::metadata(path).map_err(|source| JwtKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_PEM as u64 {
        return Err(JwtKeyError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| JwtKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let keys = parse_public_keys(&text).map_err(|source| JwtKeyError::Pem {
        path: path.to_owned(),
        source,
    })?;
    Ok(RingKeys::from_keys(keys))
}

/// Every JWT key `config` names: the HS256 secret and the public key file's keys.
///
/// # Errors
/// The public key file's [`JwtKeyError`].
pub fn keys_of(config: &TapConfig) -> Result<JwtKeys, JwtKeyError> {
    let public = match &config.jwt_public_key {
        Some(path) => Some(Arc::new(load(Path::new(path))?) as Arc<dyn PublicKeys>),
        None => None,
    };
    Ok(JwtKeys::new(
        config.jwt_hs256_key.as_deref().map(str::as_bytes),
        public,
    ))
}

#[cfg(test)]
mod tests;
