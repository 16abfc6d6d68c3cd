//! The answers of a request that authentication refused, in the api's error body
//! (`{"error", "code", "timestamp", "path"}`) — rendered here, since the authentication layer runs
//! outside the error-rendering middleware.
//!
//! | refusal | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no token (no header, empty, or another scheme such as Basic) | 401 | `Bearer` |
//! | a token that is not valid | 401 | `Bearer error="invalid_token", error_description="…"` |
//! | a valid-looking token while no key could be fetched (`JWT_JWKS_URL`) | 503, `Retry-After` | — |

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::Response,
};

use crate::error::error_body;

/// Why a request is not let through.
#[derive(Debug)]
pub enum Refusal {
    /// No bearer token: no header, an empty one, or another scheme.
    Missing { other_scheme: bool },
    /// A token (or header) that is not valid; the reason is safe to show.
    Invalid(String),
    /// The key set could not be fetched yet, so no token can be checked.
    KeysUnavailable,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { .. } => f.write_str("no bearer token"),
            Self::Invalid(reason) => f.write_str(reason),
            Self::KeysUnavailable => f.write_str("token keys unavailable"),
        }
    }
}

impl Refusal {
    pub fn invalid(reason: &str) -> Self {
        Self::Invalid(reason.to_string())
    }

    /// The answer for a request to `path`.
    pub fn response(&self, path: &str) -> Response {
        let (status, code, message, challenge) = match self {
            Self::Missing { other_scheme } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                if *other_scheme {
                    "authentication required: the Authorization header must use the Bearer scheme"
                        .to_string()
                } else {
                    "authentication required: send Authorization: Bearer <token>".to_string()
                },
                Some("Bearer".to_string()),
            ),
            Self::Invalid(reason) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("invalid token: {reason}"),
                Some(format!(
                    "Bearer error=\"invalid_token\", error_description=\"{reason}\""
                )),
            ),
            Self::KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "token keys unavailable: the key set could not be fetched yet, retry".to_string(),
                None,
            ),
        };
        let mut response = error_body(status, code, &message, path);
        let headers = response.headers_mut();
        match challenge.map(|c| HeaderValue::from_str(&c)) {
            Some(Ok(value)) => {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
            // Reasons are our own ASCII text; should one not fit a header, the bare challenge.
            Some(Err(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            None => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
        }
        response
    }
}
