//! Minting HS256 tokens with `JWT_SECRET`, for trying the api locally (`api token --sub alice`)
//! and for tests. Real deployments get tokens from their identity provider.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// A token for `sub`, valid from now for `ttl_seconds`, with `iss`/`aud` when given.
pub fn hs256_token(
    secret: &[u8],
    sub: &str,
    ttl_seconds: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = json!({ "sub": sub, "iat": now, "nbf": now, "exp": now + ttl_seconds });
    if let Some(issuer) = issuer {
        claims["iss"] = json!(issuer);
    }
    if let Some(audience) = audience {
        claims["aud"] = json!(audience);
    }
    let key = EncodingKey::from_secret(secret);
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}
