//! Bearer tokens for tests: fixed key pairs made for these tests only (RSA 2048 × 2, P-256,
//! and a P-384 public key the api must refuse), a signer of any claims with any header, JWKS
//! entries, and [`TestStack`] constructors and clients with authentication on.

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};
use tasksync_shared::config::{JwtKey, JwtSecret, JwtSettings};

use crate::{ApiClient, TestStack};

/// An HS256 secret of 40 bytes.
pub const SECRET: &str = "test-secret-of-forty-bytes-0123456789abc";
pub const RSA1_PRIVATE: &str = include_str!("keys/rsa1.key");
pub const RSA1_PUBLIC: &str = include_str!("keys/rsa1.pub");
pub const RSA2_PRIVATE: &str = include_str!("keys/rsa2.key");
pub const RSA2_PUBLIC: &str = include_str!("keys/rsa2.pub");
pub const EC1_PRIVATE: &str = include_str!("keys/ec1.key");
pub const EC1_PUBLIC: &str = include_str!("keys/ec1.pub");
pub const EC384_PUBLIC: &str = include_str!("keys/ec384.pub");

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a token for `sub` valid for the next hour.
pub fn claims_for(sub: &str) -> Value {
    json!({ "sub": sub, "iat": now(), "exp": now() + 3600 })
}

/// A token signed with `key` under `alg`, with `kid` in its header when given.
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign a token")
}

/// An HS256 token of [`SECRET`] with these claims.
pub fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

pub fn rsa_key(private_pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA key")
}

pub fn ec_key(private_pem: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC key")
}

/// The public JWK of a private key, with its `kid`.
pub fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("JWK");
    jwk.common.key_id = Some(kid.to_string());
    serde_json::to_value(jwk).expect("JWK as JSON")
}

/// An unsigned token (`alg: none`), as an attacker would forge one.
pub fn unsigned(claims: &Value) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// JWT settings that verify HS256 tokens of [`SECRET`].
pub fn secret_settings() -> JwtSettings {
    JwtSettings {
        key: Some(JwtKey::Secret(JwtSecret::new(SECRET))),
        ..JwtSettings::default()
    }
}

impl TestStack {
    /// A stack whose api checks tokens as `jwt` says (the worker ignores it).
    pub async fn start_with_auth(jwt: JwtSettings) -> Self {
        Self::start_with(|settings| settings.jwt = jwt).await
    }

    /// A client of the stack's api that sends `Authorization: Bearer <token>` on every request.
    pub fn client_with_token(&self, token: &str) -> ApiClient {
        client_with_token(&self.base, token)
    }

    /// A client acting as `user`, with an HS256 token of [`SECRET`] valid for an hour.
    pub fn client_as(&self, user: &str) -> ApiClient {
        self.client_with_token(&hs256(&claims_for(user)))
    }
}

/// A client of the api at `base` sending this bearer token.
pub fn client_with_token(base: &str, token: &str) -> ApiClient {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().expect("header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client");
    ApiClient::new(http, base.to_string())
}
