//! Bearer JWTs (compact JWS): the `sub` claim, and whether the token is *verified* — its
//! signature checks with a configured key of the type its `alg` names, and it is inside its
//! `exp`/`nbf` window.
//!
//! - **HS256** is checked here (HMAC-SHA256 with `tap.jwt_hs256_key`).
//! - **RS256 and ES256** go through [`PublicKeys`], a small trait the daemon implements with
//!   `ring` over the keys of `tap.jwt_public_key` (a PEM file, parsed by [`super::pem`]). The
//!   crypto library stays out of this crate: `ring` needs `getrandom` and with it `libc`, which
//!   the pure core must not pull in; everything before the signature check (splitting, base64,
//!   JSON, `alg`, times) is here, with the clock passed in.
//!
//! The rules, each a refusal to verify (the `sub` is then only a claim of the client):
//! `alg` must be exactly `HS256`, `RS256` or `ES256`, and a key of that type must be configured
//! (`none`, `HS384`, `PS256`… never verify); an HS256 token is checked only with the HMAC key and
//! an RS256/ES256 token only with public keys of its own type, so a public key can never be used
//! as an HMAC secret (the "alg confusion" attack); a `crit` header is refused (no extension is
//! understood); `exp` and `nbf`, when present, must be numbers and hold at `now` within
//! [`LEEWAY_SECS`].
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Longest JWT decoded; a longer token gives no user id.
pub const MAX_JWT: usize = 8192;

/// Clock difference allowed around `exp` and `nbf`, in seconds (the issuer's clock and guard's
/// are not the same clock).
pub const LEEWAY_SECS: u64 = 30;

/// The signature algorithms guard verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlg {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (an RSA public key, 2048 bits or more).
    Rs256,
    /// ECDSA on P-256 with SHA-256, the signature as the 64 bytes `r || s` (RFC 7518 §3.4).
    Es256,
}

impl JwtAlg {
    /// The `alg` value of a JOSE header; `None` for anything guard does not verify.
    #[must_use]
    pub fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }
}

/// Public-key signature checks, implemented outside the pure core (the daemon uses `ring`).
pub trait PublicKeys: Send + Sync {
    /// Whether `signature` over `signing_input` checks with one of the configured keys made for
    /// `alg` (`Rs256`: the RSA keys, `Es256`: the P-256 keys; never anything for `Hs256`).
    fn verify(&self, alg: JwtAlg, signing_input: &[u8], signature: &[u8]) -> bool;
}

/// The keys bearer JWTs are checked with: an HS256 secret and public keys, each optional.
#[derive(Clone, Default)]
pub struct JwtKeys {
    hs256: Option<Arc<[u8]>>,
    public: Option<Arc<dyn PublicKeys>>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret is never printed.
        f.debug_struct("JwtKeys")
            .field("hs256", &self.hs256.is_some())
            .field("public", &self.public.is_some())
            .finish()
    }
}

impl JwtKeys {
    /// Keys: an HS256 secret, public keys, both or neither (then no token is verified).
    #[must_use]
    pub fn new(hs256: Option<&[u8]>, public: Option<Arc<dyn PublicKeys>>) -> Self {
        Self {
            hs256: hs256.map(Arc::from),
            public,
        }
    }

    /// The same HS256 key, with `public` keys.
    #[must_use]
    pub fn with_public(self, public: Arc<dyn PublicKeys>) -> Self {
        Self {
            public: Some(public),
            ..self
        }
    }

    /// Whether any key is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hs256.is_none() && self.public.is_none()
    }

    /// The `sub` claim of `token` (a string, or a number as its decimal text), and whether the
    /// token is verified at `now_secs` (Unix seconds). `None` when the token is not a JWT with a
    /// `sub` (then there is no user at all).
    #[must_use]
    pub fn check(&self, token: &str, now_secs: u64) -> Option<(String, bool)> {
        self.check_at(token, Some(now_secs))
    }

    /// [`JwtKeys::check`], with `exp`/`nbf` checked only when `now_secs` is given.
    pub(crate) fn check_at(&self, token: &str, now_secs: Option<u64>) -> Option<(String, bool)> {
        let jwt = Jwt::split(token)?;
        let claims: Value = serde_json::from_slice(&b64(jwt.payload)?).ok()?;
        let sub = match claims.get("sub")? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let verified =
            self.signature_checks(&jwt) && now_secs.is_none_or(|now| in_time(&claims, now));
        Some((sub, verified))
    }

    fn signature_checks(&self, jwt: &Jwt<'_>) -> bool {
        let Some(header) = b64(jwt.header).and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        else {
            return false;
        };
        if header.get("crit").is_some() {
            return false;
        }
        let Some(alg) = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(JwtAlg::from_header)
        else {
            return false;
        };
        let Some(signature) = b64(jwt.signature) else {
            return false;
        };
        match alg {
            JwtAlg::Hs256 => self.hs256.as_deref().is_some_and(|key| {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                    return false;
                };
                mac.update(jwt.signing_input.as_bytes());
                mac.verify_slice(&signature).is_ok()
            }),
            JwtAlg::Rs256 | JwtAlg::Es256 => self
                .public
                .as_deref()
                .is_some_and(|keys| keys.verify(alg, jwt.signing_input.as_bytes(), &signature)),
        }
    }
}

/// A compact JWS cut into its parts.
struct Jwt<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
}

impl<'a> Jwt<'a> {
    fn split(token: &'a str) -> Option<Self> {
        if token.len() > MAX_JWT {
            return None;
        }
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        if payload.contains('.') {
            return None;
        }
        Some(Self {
            header,
            payload,
            signature,
            signing_input,
        })
    }
}

/// Whether `exp` and `nbf`, when present, hold at `now` (within [`LEEWAY_SECS`]). A present
/// time that is not a non-negative number fails.
fn in_time(claims: &Value, now: u64) -> bool {
    let time = |name: &str| -> Result<Option<u64>, ()> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                // A fractional NumericDate (allowed by RFC 7519) counts by its whole seconds.
                .or_else(|| {
                    v.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| {
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss,
                            reason = "finite and non-negative; saturates past u64::MAX"
                        )]
                        let secs = f as u64;
                        secs
                    })
                })
                .map(Some)
                .ok_or(()),
        }
    };
    let (Ok(exp), Ok(nbf)) = (time("exp"), time("nbf")) else {
        return false;
    };
    exp.is_none_or(|exp| now < exp.saturating_add(LEEWAY_SECS))
        && nbf.is_none_or(|nbf| nbf <= now.saturating_add(LEEWAY_SECS))
}

fn b64(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}
