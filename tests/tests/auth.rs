//! Authentication and isolation (SPEC §8), against the real stack with authentication on:
//! every invalid token is a 401 with the reason, two users see and change nothing of each
//! other's on any path, and a JWKS is fetched, refetched for a new `kid`, and reported by
//! `/api/ready` while it cannot be fetched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "auth/isolation.rs"]
mod isolation;
#[path = "auth/jwks.rs"]
mod jwks;
#[path = "auth/tokens.rs"]
mod tokens;

use tasksync_tests::Reply;

/// A 401 with the error body for `path`; returns the message.
pub fn unauthorized(reply: &Reply, path: &str) -> String {
    assert_eq!(reply.status, 401, "{reply:?}");
    reply.error_message(path)
}

/// A 401 for an invalid token: `error="invalid_token"` in `WWW-Authenticate`, and the reason
/// both there and in the body.
pub fn invalid_token(reply: &Reply, path: &str, reason: &str) {
    let message = unauthorized(reply, path);
    assert!(message.contains(reason), "{message:?} lacks {reason:?}");
    let challenge = reply.header("www-authenticate").expect("WWW-Authenticate");
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{challenge}"
    );
    assert!(challenge.contains(reason), "{challenge}");
}
