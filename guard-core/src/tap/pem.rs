//! Public keys for RS256 and ES256 JWTs, read from PEM text: each `PUBLIC KEY` block (an X.509
//! `SubjectPublicKeyInfo`, what `openssl pkey -pubout` writes) holding an RSA or a P-256 key, and
//! each `RSA PUBLIC KEY` block (PKCS#1). Several blocks may follow each other (key rotation:
//! a token is verified if one key of its type checks it). Pure parsing, no crypto: the result is
//! the key bytes in the forms `ring` verifies with (PKCS#1 `RSAPublicKey` DER, and the
//! uncompressed P-256 point), handed to the daemon's [`super::jwt::PublicKeys`].
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Largest PEM text read (a few dozen keys).
pub const MAX_PEM: usize = 256 * 1024;

/// One public key, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// DER of PKCS#1 `RSAPublicKey` (`SEQUENCE { n, e }`).
    Rsa(Vec<u8>),
    /// The uncompressed P-256 point `04 || x || y` (65 bytes).
    EcP256(Vec<u8>),
}

/// Why PEM text gives no usable keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("the file is larger than {MAX_PEM} bytes")]
    TooLarge,
    #[error("no PEM block (-----BEGIN PUBLIC KEY----- …) found")]
    NoBlock,
    #[error("block {block}: `{label}` is not a public key (expected PUBLIC KEY or RSA PUBLIC KEY)")]
    Label { block: usize, label: String },
    #[error("block {block}: no -----END {label}----- line")]
    Unterminated { block: usize, label: String },
    #[error("block {block}: the base64 does not decode")]
    Base64 { block: usize },
    #[error("block {block}: not a DER public key ({what})")]
    Der { block: usize, what: &'static str },
    #[error(
        "block {block}: unsupported key type (only RSA and EC P-256 keys verify RS256 and ES256)"
    )]
    Unsupported { block: usize },
    #[error("block {block}: an RSA key of {bits} bits (2048 to 8192 are accepted)")]
    RsaSize { block: usize, bits: usize },
}

/// The public keys of PEM text, in order.
///
/// # Errors
/// [`PemError`] for text without a block, a block of another kind (a private key, a
/// certificate), or a key that is neither RSA nor EC P-256: a key file that cannot be used is
/// refused whole rather than silently verifying nothing.
pub fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, PemError> {
    if text.len() > MAX_PEM {
        return Err(PemError::TooLarge);
    }
    let mut keys = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let block = keys.len() + 1;
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut ended = false;
        for line in lines.by_ref() {
            if line == end {
                ended = true;
                break;
            }
            // RFC 7468 allows no headers in these blocks; a `Key: value` line is not base64.
            b64.push_str(line);
        }
        if !ended {
            return Err(PemError::Unterminated {
                block,
                label: label.to_owned(),
            });
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| PemError::Base64 { block })?;
        let key = match label {
            "PUBLIC KEY" => spki(&der).map_err(|e| e.at(block))?,
            "RSA PUBLIC KEY" => {
                rsa_public_key(&der).map_err(|e| e.at(block))?;
                PublicKey::Rsa(der)
            }
            other => {
                return Err(PemError::Label {
                    block,
                    label: other.chars().take(64).collect(),
                });
            }
        };
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(PemError::NoBlock);
    }
    Ok(keys)
}

/// `rsaEncryption` 1.2.840.113549.1.1.1.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// `id-ecPublicKey` 1.2.840.10045.2.1.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1` (P-256) 1.2.840.10045.3.1.7.
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
const INTEGER: u8 = 0x02;

/// A block's error before its number is known.
enum KeyError {
    Der(&'static str),
    Unsupported,
    RsaSize(usize),
}

impl KeyError {
    fn at(self, block: usize) -> PemError {
        match self {
            Self::Der(what) => PemError::Der { block, what },
            Self::Unsupported => PemError::Unsupported { block },
            Self::RsaSize(bits) => PemError::RsaSize { block, bits },
        }
    }
}

impl From<&'static str> for KeyError {
    fn from(what: &'static str) -> Self {
        Self::Der(what)
    }
}

/// `SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT
/// STRING }`, `AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY }`.
fn spki(der: &[u8]) -> Result<PublicKey, KeyError> {
    let mut outer = Der::new(der);
    let mut info = Der::new(outer.take(SEQUENCE).map_err(KeyError::Der)?);
    outer.end().map_err(KeyError::Der)?;
    let mut alg = Der::new(info.take(SEQUENCE).map_err(KeyError::Der)?);
    let bits = info.take(BIT_STRING).map_err(KeyError::Der)?;
    info.end().map_err(KeyError::Der)?;
    let oid = alg.take(OID).map_err(KeyError::Der)?;
    let Some((0, key)) = bits.split_first() else {
        return Err(KeyError::Der("a bit string with unused bits"));
    };
    if oid == OID_RSA {
        // parameters: NULL (or absent, as some writers do).
        rsa_public_key(key)?;
        return Ok(PublicKey::Rsa(key.to_vec()));
    }
    if oid == OID_EC {
        let curve = alg.take(OID).map_err(KeyError::Der)?;
        alg.end().map_err(KeyError::Der)?;
        if curve != OID_P256 {
            return Err(KeyError::Unsupported);
        }
        if key.len() != 65 || key[0] != 4 {
            return Err(KeyError::Der(
                "a P-256 key that is not an uncompressed point",
            ));
        }
        return Ok(PublicKey::EcP256(key.to_vec()));
    }
    Err(KeyError::Unsupported)
}

/// Checks `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, with a
/// modulus of 2048 to 8192 bits (what `ring` verifies RS256 with).
fn rsa_public_key(der: &[u8]) -> Result<(), KeyError> {
    let mut outer = Der::new(der);
    let mut seq = Der::new(outer.take(SEQUENCE)?);
    outer.end()?;
    let modulus = seq.take(INTEGER)?;
    seq.take(INTEGER)?;
    seq.end()?;
    let significant = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => &[],
    };
    let bits = significant.first().map_or(0, |top| {
        (significant.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if (2048..=8192).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::RsaSize(bits))
    }
}

/// A DER reader: definite lengths only, as DER has.
struct Der<'a> {
    buf: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The contents of the next element, which must have `tag`.
    fn take(&mut self, tag: u8) -> Result<&'a [u8], &'static str> {
        let (&t, rest) = self.buf.split_first().ok_or("truncated")?;
        if t != tag {
            return Err("an unexpected element");
        }
        let (&first, mut rest) = rest.split_first().ok_or("truncated")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err("a bad length");
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err("truncated");
        }
        let (content, after) = rest.split_at(len);
        self.buf = after;
        Ok(content)
    }

    fn end(&self) -> Result<(), &'static str> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err("bytes after the end")
        }
    }
}
