//! What verifying one bearer token costs, per key kind (`cargo bench -p api --bench verify`):
//! the whole check — header read, key choice, signature, claims, `sub` rules — of a token's
//! first use, the cache lookup of every later use, and a forged token (refused at the
//! signature, never cached).
//!
//! Compare with the throughput of `GET /api/tasks/{id}` (docs/accounts.md has both figures):
//! at 10k requests per second per core a request has 100 µs, so 5 % of it is 5 µs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use api::auth::{Verifier, keys, verify::KeySource};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tasksync_shared::config::JwtSettings;

const SECRET: &[u8] = b"bench-secret-of-forty-bytes-0123456789ab";
const RSA_PRIVATE: &str = include_str!("../../../tests/src/keys/rsa1.key");
const RSA_PUBLIC: &str = include_str!("../../../tests/src/keys/rsa1.pub");
const EC_PRIVATE: &str = include_str!("../../../tests/src/keys/ec1.key");
const EC_PUBLIC: &str = include_str!("../../../tests/src/keys/ec1.pub");

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": "alice", "iat": now, "exp": now + 3600 });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

/// The token with the first character of its signature changed.
fn forge(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 1;
    let swapped = if token[at..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    format!("{}{swapped}{}", &token[..at], &token[at + 1..])
}

fn verifier(source: KeySource) -> Verifier {
    Verifier::new(source, &JwtSettings::default())
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cases = [
        (
            "HS256",
            verifier(KeySource::Pinned(keys::secret(SECRET))),
            token(Algorithm::HS256, &EncodingKey::from_secret(SECRET)),
        ),
        (
            "RS256",
            verifier(KeySource::Pinned(
                keys::public_key_pem(RSA_PUBLIC.as_bytes()).unwrap(),
            )),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            ),
        ),
        (
            "ES256",
            verifier(KeySource::Pinned(
                keys::public_key_pem(EC_PUBLIC.as_bytes()).unwrap(),
            )),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            ),
        ),
    ];
    for (name, verifier, token) in &cases {
        assert_eq!(runtime.block_on(verifier.verify(token)).unwrap(), "alice");
        // A token's first use: the whole check, signature included.
        c.bench_function(&format!("verify {name} first use"), |b| {
            b.iter(|| runtime.block_on(verifier.verify_signed(std::hint::black_box(token))))
        });
        // Every later request with the same token: a cache lookup.
        c.bench_function(&format!("verify {name} again"), |b| {
            b.iter(|| runtime.block_on(verifier.verify(std::hint::black_box(token))))
        });
        let forged = forge(token);
        assert!(runtime.block_on(verifier.verify(&forged)).is_err());
        c.bench_function(&format!("verify {name} forged"), |b| {
            b.iter(|| runtime.block_on(verifier.verify(std::hint::black_box(&forged))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
