//! `JWT_JWKS_URL`: the issuer's key set, fetched at start (retried in the background until it
//! answers) and again when a token names a `kid` the cached set lacks — at most once per
//! [`REFETCH_INTERVAL`], so a stream of made-up `kid`s costs the issuer one request per
//! interval. Each fetch is bounded by [`FETCH_TIMEOUT`] and [`MAX_DOCUMENT_BYTES`]. A fetch that
//! fails keeps the keys already held; one that succeeds replaces them (a key the issuer
//! retired stops verifying).
//!
//! Only signing keys the api can pin are kept: RSA (RS256) and P-256 (ES256) keys with a
//! `kid`, whose `alg`, when given, says the same; the rest of the set is skipped.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use tasksync_shared::{amqp::Backoff, config::SecretUrl, shutdown::stopped};
use tokio::{sync::watch, time::Instant};

use super::keys::PinnedKey;

pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The cached key set of one JWKS URL.
#[derive(Debug)]
pub struct Jwks {
    url: SecretUrl,
    http: reqwest::Client,
    held: RwLock<Held>,
    /// When the last fetch started; held across a fetch, so that fetches never overlap.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Counts the fetches that changed the set of key ids (tokens verified earlier are
    /// checked again: see `super::cache`).
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    keys: HashMap<String, PinnedKey>,
    /// Why the last fetch failed, while it is the latest word.
    error: Option<String>,
}

/// What a `kid` finds.
#[derive(Debug)]
pub enum Lookup {
    Found(PinnedKey),
    /// The set is held and lacks it, also after a refetch.
    Unknown,
    /// No key could be fetched yet.
    Unavailable,
}

impl Jwks {
    pub fn new(url: SecretUrl) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(Self {
            url,
            http,
            held: RwLock::new(Held::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// The key of `kid`, refetching the set (rate-limited) when it is not held.
    pub async fn lookup(&self, kid: &str) -> Lookup {
        if let Some(key) = self.cached(kid) {
            return Lookup::Found(key);
        }
        {
            let mut last = self.last_fetch.lock().await;
            if last.is_none_or(|at| at.elapsed() >= REFETCH_INTERVAL) {
                *last = Some(Instant::now());
                self.fetch().await;
            }
        }
        match self.cached(kid) {
            Some(key) => Lookup::Found(key),
            None if self.key_count() == 0 => Lookup::Unavailable,
            None => Lookup::Unknown,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn cached(&self, kid: &str) -> Option<PinnedKey> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        held.keys.get(kid).cloned()
    }

    fn key_count(&self) -> usize {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        held.keys.len()
    }

    /// For `/api/ready`: the number of keys held, or why there are none.
    pub fn status(&self) -> Result<usize, String> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        match (held.keys.len(), &held.error) {
            (0, Some(error)) => Err(format!("no keys fetched from JWT_JWKS_URL: {error}")),
            (0, None) => Err("no usable keys in the JWT_JWKS_URL document yet".into()),
            (n, _) => Ok(n),
        }
    }

    /// Fetches until the set holds a key (or `stop`), then returns; later fetches happen on
    /// demand in [`Jwks::lookup`].
    pub async fn fetch_until_held(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new();
        loop {
            {
                let mut last = self.last_fetch.lock().await;
                *last = Some(Instant::now());
                self.fetch().await;
            }
            if self.key_count() > 0 {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    async fn fetch(&self) {
        let result = self.download().await.and_then(|body| parse_set(&body));
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), url = %self.url.redacted(), "JWKS fetched");
                held.error = (keys.is_empty()).then(|| "the document holds no usable key".into());
                let same = keys.len() == held.keys.len()
                    && keys.keys().all(|kid| held.keys.contains_key(kid));
                held.keys = keys;
                if !same {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(error) => {
                tracing::warn!(%error, url = %self.url.redacted(), "JWKS fetch failed");
                held.error = Some(error);
            }
        }
    }

    async fn download(&self) -> Result<Vec<u8>, String> {
        let mut response = self
            .http
            .get(self.url.expose())
            .send()
            .await
            .map_err(|e| without_url(&e))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| without_url(&e))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("document over {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// reqwest's message names the URL, which may carry a password; the kind is enough.
fn without_url(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {} s", FETCH_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[derive(serde::Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS document by `kid`; an entry the api cannot use is skipped.
pub fn parse_set(body: &[u8]) -> Result<HashMap<String, PinnedKey>, String> {
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    Ok(document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, pinned(&jwk)?)))
        .collect())
}

fn pinned(jwk: &Jwk) -> Option<PinnedKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(PinnedKey { key, algorithm })
}
