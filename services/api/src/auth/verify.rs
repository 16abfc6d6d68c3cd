//! Verifying one bearer token: its header read by hand first (so that `alg: none` and an
//! algorithm other than the key's are refused by name, before any key is used), then
//! `jsonwebtoken` with the algorithm pinned to the key, `exp` required, `nbf` honoured, and
//! [`LEEWAY_SECONDS`] of clock skew either way; then the `sub` rules of [`check_subject`].

use std::{str::FromStr, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use tasksync_shared::config::JwtSettings;

use super::{
    Refusal,
    cache::VerifiedTokens,
    jwks::{Jwks, Lookup},
    keys::PinnedKey,
};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// Longest user id (`sub`) accepted, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 255;

/// Where the key of a token comes from.
#[derive(Debug)]
pub enum KeySource {
    Pinned(PinnedKey),
    Jwks(Arc<Jwks>),
}

/// Checks tokens against one key source and the configured issuer and audience.
#[derive(Debug)]
pub struct Verifier {
    source: KeySource,
    issuer: Option<String>,
    audience: Option<String>,
    verified: VerifiedTokens,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
    /// Checked by `jsonwebtoken`; read again only to bound the cache entry.
    exp: Option<serde_json::Value>,
}

/// The two header fields that matter, read before any key is chosen.
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

impl Verifier {
    pub fn new(source: KeySource, settings: &JwtSettings) -> Self {
        Self {
            source,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            verified: VerifiedTokens::default(),
        }
    }

    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &self.source {
            KeySource::Jwks(jwks) => Some(jwks),
            KeySource::Pinned(_) => None,
        }
    }

    /// The user id a valid token names; a token verified before is looked up, not checked
    /// again ([`VerifiedTokens`]).
    pub async fn verify(&self, token: &str) -> Result<String, Refusal> {
        let generation = self.jwks().map_or(0, |jwks| jwks.generation());
        if let Some(user) = self.verified.get(token, generation) {
            return Ok(user);
        }
        let (user, exp) = self.verify_signed(token).await?;
        if let Some(exp) = exp {
            let until = exp.saturating_add(LEEWAY_SECONDS);
            self.verified.insert(token, &user, until, generation);
        }
        Ok(user)
    }

    /// The full check of a token: its user and its `exp`.
    pub async fn verify_signed(&self, token: &str) -> Result<(String, Option<u64>), Refusal> {
        let header = read_header(token)?;
        let key = match &self.source {
            KeySource::Pinned(key) => key.clone(),
            KeySource::Jwks(jwks) => {
                let kid = header.kid.as_deref().ok_or(Refusal::invalid(
                    "the token names no key (kid), which this api's key set needs",
                ))?;
                match jwks.lookup(kid).await {
                    Lookup::Found(key) => key,
                    Lookup::Unknown => return Err(Refusal::invalid("unknown key id (kid)")),
                    Lookup::Unavailable => return Err(Refusal::KeysUnavailable),
                }
            }
        };
        if Algorithm::from_str(&header.alg).ok() != Some(key.algorithm) {
            return Err(Refusal::Invalid(format!(
                "algorithm {} is not accepted: this api verifies {:?} only",
                printable(&header.alg),
                key.algorithm
            )));
        }
        let validation = self.validation(key.algorithm);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| Refusal::Invalid(reason(e.kind())))?;
        let exp = data.claims.exp.as_ref().and_then(serde_json::Value::as_u64);
        Ok((check_subject(data.claims.sub)?, exp))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // Without JWT_AUDIENCE a token's `aud` is not checked (jsonwebtoken would refuse any).
        validation.validate_aud = self.audience.is_some();
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

fn read_header(token: &str) -> Result<TokenHeader, Refusal> {
    let malformed = || Refusal::invalid("malformed token: expected three base64url parts");
    let mut parts = token.split('.');
    let (Some(first), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = URL_SAFE_NO_PAD.decode(first).map_err(|_| malformed())?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let alg = header["alg"]
        .as_str()
        .ok_or(Refusal::invalid("the token header has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(Refusal::invalid(
            "unsigned tokens (alg none) are not accepted",
        ));
    }
    Ok(TokenHeader {
        alg: alg.to_string(),
        kid: header["kid"].as_str().map(str::to_string),
    })
}

/// `sub` is the user id: present, not blank, at most [`MAX_SUBJECT_BYTES`], no control
/// characters (it travels in message headers and log lines).
pub fn check_subject(sub: Option<String>) -> Result<String, Refusal> {
    match sub {
        None => Err(Refusal::invalid("the token has no sub claim")),
        Some(s) if s.trim().is_empty() => Err(Refusal::invalid("the sub claim is empty")),
        Some(s) if s.len() > MAX_SUBJECT_BYTES => Err(Refusal::Invalid(format!(
            "the sub claim is longer than {MAX_SUBJECT_BYTES} bytes"
        ))),
        Some(s) if s.chars().any(char::is_control) => Err(Refusal::invalid(
            "the sub claim contains control characters",
        )),
        Some(s) => Ok(s),
    }
}

fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the signature does not match".into(),
        ErrorKind::InvalidAlgorithm => "the algorithm does not match the key".into(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".into(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".into(),
        // Only the names we require: exp, sub, iss, aud.
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("the token has no {} claim", printable(claim))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            format!("the {} claim is malformed", printable(claim))
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "malformed token".into()
        }
        ErrorKind::Json(_) => "malformed token: its claims are not the expected JSON".into(),
        other => {
            tracing::warn!(error = ?other, "a token could not be verified");
            "the token could not be verified".into()
        }
    }
}

/// Text from a token, made safe to quote in a header and short.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(20)
        .collect()
}
