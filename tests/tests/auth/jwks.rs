//! `JWT_JWKS_URL` against a small local key server: `/api/ready` is 503 naming the key set
//! while it cannot be fetched at start, a rotated-in `kid` is fetched on demand, a retired one
//! stops verifying, and made-up `kid`s cost the server at most one fetch per interval.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Json, Router, extract::State, routing::get};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tasksync_shared::config::{JwtKey, JwtSettings};
use tasksync_tests::{TestStack, tokens::*};
use tokio::net::TcpListener;

#[derive(Clone, Default)]
struct KeyServer {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    fn serve(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn document(State(server): State<KeyServer>) -> Json<Value> {
    server.fetches.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "keys": *server.keys.lock().unwrap() }))
}

#[tokio::test]
async fn a_key_set_down_at_start_makes_ready_503_and_rotated_keys_are_fetched_on_demand() {
    let stack = TestStack::start().await;
    // A port nothing listens on yet: the key server starts later.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = stack.settings.clone();
    settings.jwt = JwtSettings {
        key: Some(JwtKey::JwksUrl(
            format!("http://127.0.0.1:{port}/jwks").into(),
        )),
        ..JwtSettings::default()
    };
    let api = stack.spawn_api(settings).await;
    let (k1, k2) = (rsa_key(RSA1_PRIVATE), ec_key(EC1_PRIVATE));
    fn token(key: &jsonwebtoken::EncodingKey, alg: Algorithm, kid: &str) -> String {
        sign(alg, key, Some(kid), &claims_for("alice"))
    }
    let as_k1 = client_with_token(&api.base, &token(&k1, Algorithm::RS256, "k1"));

    stack
        .eventually("the api answers", || async {
            api.api
                .http
                .get(format!("{}/health", api.base))
                .send()
                .await
                .is_ok()
        })
        .await;
    let ready = api.api.ready().await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.body["checks"]["jwks"]["status"], "down", "{ready:?}");
    let error = ready.error_message("/api/ready");
    assert!(
        error.contains("jwks") && error.contains("JWT_JWKS_URL"),
        "{error}"
    );
    let unavailable = as_k1.status().await;
    assert_eq!(unavailable.status, 503, "{unavailable:?}");
    assert!(unavailable.header("retry-after").is_some());

    // The key server comes up with k1 only.
    let server = KeyServer::default();
    server.serve(vec![jwk(&k1, Algorithm::RS256, "k1")]);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = Router::new()
        .route("/jwks", get(document))
        .with_state(server.clone());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    stack
        .eventually("ready once the key set is fetched", || async {
            api.api.is_ready().await
        })
        .await;
    assert_eq!(as_k1.status().await.body["user"], "alice");

    // Rotation: the issuer now signs with k2 and has retired k1.
    server.serve(vec![jwk(&k2, Algorithm::ES256, "k2")]);
    let as_k2 = client_with_token(&api.base, &token(&k2, Algorithm::ES256, "k2"));
    let before = server.fetches();
    stack
        .eventually("a token of the new kid is accepted", || async {
            as_k2.status().await.status == 200
        })
        .await;
    assert_eq!(server.fetches(), before + 1, "one fetch for the new kid");
    super::invalid_token(&as_k1.status().await, "/api/status", "unknown key id");

    // Made-up kids: refused, and at most one more fetch within the interval.
    let before = server.fetches();
    for n in 0..30 {
        let kid = format!("made-up-{n}");
        let forged = client_with_token(&api.base, &token(&k1, Algorithm::RS256, &kid));
        super::invalid_token(&forged.status().await, "/api/status", "unknown key id");
    }
    assert!(
        server.fetches() <= before + 1,
        "{} fetches",
        server.fetches() - before
    );
    // An HS256 token naming a held kid: the key's algorithm wins.
    let hmac = jsonwebtoken::EncodingKey::from_secret(b"whatever-secret-of-some-length-000000");
    let confused = client_with_token(
        &api.base,
        &sign(Algorithm::HS256, &hmac, Some("k2"), &claims_for("alice")),
    );
    super::invalid_token(
        &confused.status().await,
        "/api/status",
        "algorithm HS256 is not accepted",
    );

    api.stop().await;
    serving.abort();
}
