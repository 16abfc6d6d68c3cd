//! Each invalid token, header and key case is a 401 naming the reason; valid tokens of each
//! key kind are accepted; development mode says so in `/api/status`.

use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Method, header::HeaderValue};
use serde_json::json;
use tasksync_shared::config::{JwtKey, JwtSettings};
use tasksync_tests::{TestStack, tokens::*};

use super::{invalid_token, unauthorized};

const PATH: &str = "/api/tasks";

fn strict_settings() -> JwtSettings {
    JwtSettings {
        issuer: Some("https://issuer.test".into()),
        audience: Some("tasksync".into()),
        ..secret_settings()
    }
}

/// Claims that pass `strict_settings`.
fn good(sub: &str) -> serde_json::Value {
    let mut claims = claims_for(sub);
    claims["iss"] = json!("https://issuer.test");
    claims["aud"] = json!("tasksync");
    claims
}

#[tokio::test]
async fn every_invalid_token_is_a_401_naming_the_reason() {
    let stack = TestStack::start_with_auth(strict_settings()).await;
    let stack = &stack;
    let with = |token: String| async move { stack.client_with_token(&token).list_tasks().await };
    let valid = with(hs256(&good("alice"))).await;
    assert_eq!(valid.status, 200, "{valid:?}");

    let mut expired = good("alice");
    expired["exp"] = json!(now() - 120);
    invalid_token(&with(hs256(&expired)).await, PATH, "the token has expired");
    let mut early = good("alice");
    early["nbf"] = json!(now() + 300);
    invalid_token(&with(hs256(&early)).await, PATH, "not valid yet");
    let other_secret = EncodingKey::from_secret(b"another-secret-of-forty-bytes-012345678");
    let forged = sign(Algorithm::HS256, &other_secret, None, &good("alice"));
    invalid_token(&with(forged).await, PATH, "the signature does not match");
    invalid_token(&with(unsigned(&good("alice"))).await, PATH, "alg none");
    let mut wrong_issuer = good("alice");
    wrong_issuer["iss"] = json!("https://evil.test");
    invalid_token(&with(hs256(&wrong_issuer)).await, PATH, "wrong issuer");
    let mut wrong_audience = good("alice");
    wrong_audience["aud"] = json!("another-api");
    invalid_token(&with(hs256(&wrong_audience)).await, PATH, "wrong audience");
    let mut no_sub = good("alice");
    no_sub.as_object_mut().unwrap().remove("sub");
    invalid_token(&with(hs256(&no_sub)).await, PATH, "no sub claim");
    let mut no_exp = good("alice");
    no_exp.as_object_mut().unwrap().remove("exp");
    invalid_token(&with(hs256(&no_exp)).await, PATH, "no exp claim");
    for bad_sub in [json!(""), json!("a\u{7}b"), json!("x".repeat(256))] {
        let mut claims = good("alice");
        claims["sub"] = bad_sub;
        invalid_token(&with(hs256(&claims)).await, PATH, "the sub claim");
    }
    let rs256 = sign(
        Algorithm::RS256,
        &rsa_key(RSA1_PRIVATE),
        None,
        &good("alice"),
    );
    invalid_token(&with(rs256).await, PATH, "algorithm RS256 is not accepted");
    invalid_token(&with("not-a-jwt".into()).await, PATH, "malformed");
}

#[tokio::test]
async fn missing_and_malformed_authorization_headers_are_401s_never_5xx() {
    let stack = TestStack::start_with_auth(secret_settings()).await;
    let client = stack.client();
    let missing = client.list_tasks().await;
    unauthorized(&missing, PATH);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let basic = client
        .request(
            Method::GET,
            "/tasks",
            None,
            &[("authorization", "Basic YWxpY2U6cHc=")],
        )
        .await;
    let message = unauthorized(&basic, PATH);
    assert!(message.contains("Bearer scheme"), "{message}");
    assert_eq!(basic.header("www-authenticate"), Some("Bearer"));
    let empty = client
        .request(Method::GET, "/tasks", None, &[("authorization", "")])
        .await;
    unauthorized(&empty, PATH);
    assert_eq!(empty.header("www-authenticate"), Some("Bearer"));
    for (value, reason) in [
        ("Bearer", "the bearer token is empty"),
        ("Bearer    ", "the bearer token is empty"),
        ("Bearer a b c", "malformed bearer token"),
        ("Bearer a.b", "malformed token"),
        ("Bearer ...", "malformed token"),
        ("Bearer e30.e30.e30", "no alg"),
    ] {
        let reply = client
            .request(Method::GET, "/tasks", None, &[("authorization", value)])
            .await;
        invalid_token(&reply, PATH, reason);
    }
    // Bytes reqwest's &str headers cannot carry: non-ASCII, and a 12 KiB and a 20 KiB token.
    let raw = |value: Vec<u8>| {
        let request = stack
            .http
            .get(format!("{}/tasks", stack.base))
            .header("authorization", HeaderValue::from_bytes(&value).unwrap());
        async move { request.send().await.unwrap() }
    };
    let answer = raw("Bearer ünïcødé".as_bytes().to_vec()).await;
    assert_eq!(answer.status(), 401);
    let huge = raw(format!("Bearer {}", "a".repeat(20_000)).into_bytes()).await;
    assert_eq!(huge.status(), 401);
    let long =
        raw(format!("Bearer {}.{}.x", "e".repeat(6000), "f".repeat(6000)).into_bytes()).await;
    assert_eq!(long.status(), 401);
    // Probes stay open.
    assert_eq!(client.health().await.status, 200);
    assert_eq!(client.ready().await.status, 200);
}

#[tokio::test]
async fn public_keys_pin_their_algorithm_and_refuse_the_hs256_confusion() {
    let stack = TestStack::start().await;
    let dir = std::env::temp_dir().join(format!("tasksync-keys-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, public, private, alg) in [
        (
            "rsa.pem",
            RSA1_PUBLIC,
            rsa_key(RSA1_PRIVATE),
            Algorithm::RS256,
        ),
        ("ec.pem", EC1_PUBLIC, ec_key(EC1_PRIVATE), Algorithm::ES256),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, public).unwrap();
        let mut settings = stack.settings.clone();
        settings.jwt = JwtSettings {
            key: Some(JwtKey::PublicKeyFile(file)),
            ..JwtSettings::default()
        };
        let api = stack.spawn_api(settings).await;
        let with = |token: String| tasksync_tests::tokens::client_with_token(&api.base, &token);
        let ok = with(sign(alg, &private, None, &claims_for("alice")))
            .status()
            .await;
        assert_eq!(ok.status, 200, "{alg:?}: {ok:?}");
        assert_eq!(
            (ok.body["auth"].as_str(), ok.body["user"].as_str()),
            (Some("jwt"), Some("alice"))
        );
        // The key-confusion attack: HS256 "signed" with the public key's PEM text.
        let hmac = EncodingKey::from_secret(public.as_bytes());
        let confused = sign(Algorithm::HS256, &hmac, None, &claims_for("alice"));
        invalid_token(
            &with(confused).status().await,
            "/api/status",
            "algorithm HS256 is not accepted",
        );
        invalid_token(
            &with(unsigned(&claims_for("alice"))).status().await,
            "/api/status",
            "alg none",
        );
        api.stop().await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn unusable_key_settings_stop_the_start_naming_the_variable() {
    let dir = std::env::temp_dir().join(format!("tasksync-keys-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("p384.pem", EC384_PUBLIC, "P-256"),
        ("private.pem", RSA1_PRIVATE, "private key"),
        ("garbage.pem", "not a key", "not a PEM"),
    ];
    for (name, text, reason) in cases {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let jwt = JwtSettings {
            key: Some(JwtKey::PublicKeyFile(file)),
            ..JwtSettings::default()
        };
        let error = format!(
            "{:#}",
            api::auth::Authenticator::from_settings(&jwt).unwrap_err()
        );
        assert!(
            error.contains("JWT_PUBLIC_KEY_FILE") && error.contains(reason),
            "{error}"
        );
    }
    let missing = JwtSettings {
        key: Some(JwtKey::PublicKeyFile(dir.join("absent.pem"))),
        ..JwtSettings::default()
    };
    let error = format!(
        "{:#}",
        api::auth::Authenticator::from_settings(&missing).unwrap_err()
    );
    assert!(error.contains("JWT_PUBLIC_KEY_FILE"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn development_mode_says_authentication_is_off_and_ignores_tokens() {
    let stack = TestStack::start().await;
    let status = stack.status().await;
    assert_eq!(status.body["auth"], "off", "{status:?}");
    assert_eq!(status.body["user"], "default");
    let with_token = stack.client_as("alice").status().await;
    assert_eq!(with_token.body["user"], "default", "{with_token:?}");
}

/// The api binary with the usual unreachable dependencies and `extra`.
fn api_process(extra: &[(&str, &str)]) -> tasksync_tests::processes::BareProcess {
    let mut vars = vec![
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/tasksync_nowhere",
        ),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("RUST_LOG", "info"),
    ];
    vars.extend_from_slice(extra);
    tasksync_tests::processes::BareProcess::spawn("api", &vars)
}

#[tokio::test]
async fn the_api_binary_refuses_unusable_jwt_settings_and_warns_in_development_mode() {
    let limit = std::time::Duration::from_secs(15);
    type Vars<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Vars, &[&str]); 3] = [
        (
            &[("JWT_SECRET", "short-secret")],
            &["JWT_SECRET", "at least 32 bytes"],
        ),
        (
            &[
                ("JWT_SECRET", SECRET),
                ("JWT_JWKS_URL", "https://issuer.test/jwks"),
            ],
            &["JWT_SECRET, JWT_JWKS_URL"],
        ),
        (
            &[("JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")],
            &["JWT_PUBLIC_KEY_FILE"],
        ),
    ];
    for (vars, words) in cases {
        let mut api = api_process(vars);
        let status = api.wait_exit(limit).await.expect("the api should stop");
        assert!(!status.success());
        let stderr = api.stderr();
        for word in words {
            assert!(stderr.contains(word), "{vars:?}: {stderr}");
        }
        assert!(
            !stderr.contains("short-secret") && !stderr.contains(SECRET),
            "{stderr}"
        );
    }
    let mut development = api_process(&[("JWT_SECRET", "")]);
    assert!(
        development
            .wait_for_stdout("authentication is OFF", limit)
            .await,
        "{}",
        development.stdout()
    );
    development.terminate();
    assert!(development.wait_exit(limit).await.is_some());
}
