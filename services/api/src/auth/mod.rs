//! Bearer-token authentication (SPEC §8).
//!
//! With a key configured — `JWT_SECRET` (HS256), `JWT_PUBLIC_KEY_FILE` (RS256 or ES256) or
//! `JWT_JWKS_URL` — every `/api` route except [`middleware::PUBLIC_PATHS`] needs a valid
//! token, and the user a request acts for is its `sub`. Without one, the api runs in
//! single-user development mode: every request is [`DEFAULT_USER`], and start-up logs a
//! warning.
//!
//! Layout:
//! - [`middleware`]: the layer that puts a [`CurrentUser`] in each request's extensions (the
//!   [`crate::extract::CurrentUser`] extractor and the per-user limits read it there);
//! - [`bearer`]: reading the `Authorization` header; [`verify`]: checking a token;
//!   [`cache`]: tokens already verified (a signature is checked once per token, not per request);
//! - [`keys`]: a secret or a PEM public key, pinned to its algorithm; [`jwks`]: a fetched,
//!   cached key set;
//! - [`reject`]: the 401 / 503 answers; [`mint`]: tokens for local testing (`api token`).
//!
//! [`CurrentUser`]: crate::extract::CurrentUser
//! [`DEFAULT_USER`]: tasksync_shared::config::DEFAULT_USER

pub mod bearer;
pub mod cache;
pub mod jwks;
pub mod keys;
pub mod middleware;
pub mod mint;
pub mod reject;
pub mod verify;

use std::sync::Arc;

use tasksync_shared::config::{JwtKey, JwtSettings};
use tokio::sync::watch;

pub use middleware::authenticate;
pub use reject::Refusal;
pub use verify::Verifier;

/// How requests are authenticated; cheap to clone.
#[derive(Clone, Debug)]
pub enum Authenticator {
    /// Development mode: no key configured, every request is the default user.
    Off,
    /// Every protected request needs a token this verifier accepts.
    Tokens(Arc<Verifier>),
}

impl Authenticator {
    /// Loads the configured key (reading `JWT_PUBLIC_KEY_FILE` now, so that a bad file stops
    /// the start naming the variable). A JWKS is fetched later, by [`Authenticator::run`].
    pub fn from_settings(settings: &JwtSettings) -> anyhow::Result<Self> {
        let source = match &settings.key {
            None => {
                tracing::warn!(
                    "authentication is OFF: no JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL \
                     is set, so every request acts as the one default user (development mode; \
                     never expose this api to others)"
                );
                return Ok(Self::Off);
            }
            Some(JwtKey::Secret(secret)) => {
                verify::KeySource::Pinned(keys::secret(secret.expose()))
            }
            Some(JwtKey::PublicKeyFile(path)) => {
                verify::KeySource::Pinned(keys::public_key_file(path)?)
            }
            Some(JwtKey::JwksUrl(url)) => {
                verify::KeySource::Jwks(Arc::new(jwks::Jwks::new(url.clone())?))
            }
        };
        Ok(Self::Tokens(Arc::new(Verifier::new(source, settings))))
    }

    /// `"off"` in development mode, `"jwt"` otherwise (for `/api/status`).
    /// Whether callers are told apart by their tokens.
    pub fn is_on(&self) -> bool {
        matches!(self, Self::Tokens(_))
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Tokens(_) => "jwt",
        }
    }

    /// For `/api/ready`: `None` without a key set, else its keys or why there are none.
    pub fn key_set_status(&self) -> Option<Result<usize, String>> {
        match self {
            Self::Tokens(verifier) => verifier.jwks().map(|jwks| jwks.status()),
            Self::Off => None,
        }
    }

    /// Background work: fetching the key set until it holds a key (or `stop`).
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let jwks = match &self {
            Self::Tokens(verifier) => verifier.jwks().cloned(),
            Self::Off => None,
        };
        if let Some(jwks) = jwks {
            jwks.fetch_until_held(stop).await;
        }
    }
}
