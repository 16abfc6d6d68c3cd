//! The authentication layer: wraps the whole router, so it sees each request's full path. For
//! a protected path it verifies the bearer token and puts `CurrentUser(sub)` in the request's
//! extensions, or answers the refusal itself; in development mode every request gets
//! `CurrentUser(DEFAULT_USER)`. Paths outside `/api` (future `/metrics`, unknown paths that
//! end in 404) are not its business.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use tasksync_shared::config::DEFAULT_USER;

use super::{Authenticator, bearer};
use crate::extract::CurrentUser;

/// `/api` paths open to anyone: probes and the api's own description. Matched exactly, on the
/// raw path, as the router matches them (so `/api/%68ealth` is protected, and a 404).
pub const PUBLIC_PATHS: [&str; 4] = [
    "/api/health",
    "/api/ready",
    "/api/openapi.json",
    "/api/docs",
];

pub fn is_protected(path: &str) -> bool {
    let under_api = path == "/api" || path.starts_with("/api/");
    let public = PUBLIC_PATHS.contains(&path) || path.starts_with("/api/docs/");
    under_api && !public
}

pub async fn authenticate(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    match &auth {
        Authenticator::Off => {
            request
                .extensions_mut()
                .insert(CurrentUser(DEFAULT_USER.to_string()));
        }
        Authenticator::Tokens(verifier) if is_protected(request.uri().path()) => {
            let verified = match bearer::token(request.headers()) {
                Ok(token) => verifier.verify(token).await,
                Err(refusal) => Err(refusal),
            };
            match verified {
                Ok(user) => {
                    request.extensions_mut().insert(CurrentUser(user));
                }
                Err(refusal) => {
                    // Debug only: anyone can send bad tokens, and logs must not flood.
                    let path = request.uri().path();
                    tracing::debug!(%path, ?refusal, "request refused by authentication");
                    return refusal.response(path);
                }
            }
        }
        Authenticator::Tokens(_) => {}
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_docs_are_public_and_everything_else_under_api_is_not() {
        for public in [
            "/api/health",
            "/api/ready",
            "/api/openapi.json",
            "/api/docs",
            "/api/docs/app.js",
        ] {
            assert!(!is_protected(public), "{public}");
        }
        for protected in [
            "/api/tasks",
            "/api/tasks/x",
            "/api/status",
            "/api",
            "/api/",
            "/api/health/",
            "/api/%68ealth",
            "/api/sync/operations/x",
        ] {
            assert!(is_protected(protected), "{protected}");
        }
        assert!(!is_protected("/metrics"));
    }
}
