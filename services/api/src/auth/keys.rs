//! The key of `JWT_SECRET` or `JWT_PUBLIC_KEY_FILE`, with the one algorithm it verifies. The
//! algorithm comes from the key, never from a token: a PEM file holds an RSA key (RS256) or a
//! P-256 key (ES256), told apart by the key's own algorithm identifier.

use std::path::Path;

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A key and the only algorithm accepted with it.
#[derive(Clone)]
pub struct PinnedKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself (an HS256 secret) is never printed.
        write!(f, "PinnedKey({:?})", self.algorithm)
    }
}

/// DER of the algorithm identifiers looked for in a `PUBLIC KEY` (SubjectPublicKeyInfo).
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const PRIME256V1: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

pub fn secret(secret: &[u8]) -> PinnedKey {
    PinnedKey {
        key: DecodingKey::from_secret(secret),
        algorithm: Algorithm::HS256,
    }
}

/// Reads and checks `JWT_PUBLIC_KEY_FILE`; every error names the variable and the file.
pub fn public_key_file(path: &Path) -> anyhow::Result<PinnedKey> {
    let context = || format!("JWT_PUBLIC_KEY_FILE={:?} is invalid", path.display());
    let text = std::fs::read(path)
        .map_err(anyhow::Error::from)
        .with_context(context)?;
    public_key_pem(&text).with_context(context)
}

/// An RSA (RS256) or P-256 (ES256) public key in PEM.
pub fn public_key_pem(text: &[u8]) -> anyhow::Result<PinnedKey> {
    let block = pem::parse(text).context("not a PEM file")?;
    let der = block.contents();
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let (key, algorithm) = match block.tag() {
        "RSA PUBLIC KEY" => (DecodingKey::from_rsa_pem(text)?, Algorithm::RS256),
        "PUBLIC KEY" if has(RSA_ENCRYPTION) => (DecodingKey::from_rsa_pem(text)?, Algorithm::RS256),
        "PUBLIC KEY" if has(EC_PUBLIC_KEY) && has(PRIME256V1) => {
            (DecodingKey::from_ec_pem(text)?, Algorithm::ES256)
        }
        "PUBLIC KEY" if has(EC_PUBLIC_KEY) => {
            bail!("an EC key on a curve other than P-256: only ES256 (P-256) is supported")
        }
        "PUBLIC KEY" => {
            bail!("a public key of an unsupported type: use RSA (RS256) or P-256 (ES256)")
        }
        tag if tag.contains("PRIVATE") => {
            bail!("a private key ({tag}): give the public key only")
        }
        tag => bail!("a PEM block of type {tag:?}: expected PUBLIC KEY"),
    };
    Ok(PinnedKey { key, algorithm })
}
