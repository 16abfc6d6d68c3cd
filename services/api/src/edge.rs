//! What every answer carries for browsers: CORS (`CORS_ALLOWED_ORIGINS`) and basic security
//! headers. Both wrap the whole router, outside authentication and the limits, so that a
//! preflight is answered before anything else looks at the request (it carries no token and
//! costs no rate token), and so that a browser app can read our 401 and 429 answers.
//!
//! - CORS: off unless `CORS_ALLOWED_ORIGINS` lists origins (or is `*`). Allowed: the methods
//!   and request headers the api uses; exposed: the response headers a client needs. Never
//!   `Access-Control-Allow-Credentials`: the api reads bearer tokens, not cookies, so a browser
//!   app sends `Authorization` without credentials mode, and `*` stays safe. A preflight from
//!   an origin not listed is answered without any `Access-Control-Allow-*` header, which the
//!   browser takes as a refusal.
//! - Security headers, on success and error answers alike, unless a handler set its own:
//!   `X-Content-Type-Options: nosniff` (a JSON body is never sniffed into HTML),
//!   `Referrer-Policy: no-referrer`, `Cache-Control: no-store` (answers hold one user's tasks;
//!   no shared or browser cache keeps them). hyper sends no `Server` header, and none is added.
//!   hyper's own answers to requests it cannot parse (see [`crate::server`]) carry none of this.

use std::time::Duration;

use axum::{
    Router,
    http::{HeaderName, HeaderValue, Method, header},
};
use tasksync_shared::config::AllowedOrigins;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
};

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layers, built at start (an origin that cannot be a header value stops the start).
#[derive(Clone, Debug)]
pub struct Edge {
    cors: Option<CorsLayer>,
}

impl Edge {
    pub fn new(origins: &AllowedOrigins) -> anyhow::Result<Self> {
        Ok(Self {
            cors: cors(origins)?,
        })
    }

    /// `router` with CORS (when origins are configured) inside the security headers, so that
    /// a preflight's answer gets them too.
    pub fn wrap(self, router: Router) -> Router {
        let router = match self.cors {
            Some(cors) => router.layer(cors),
            None => router,
        };
        security_headers(router)
    }
}

fn security_headers(router: Router) -> Router {
    let headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    headers.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}

/// The CORS layer for `origins`, `None` when no origin is allowed.
fn cors(origins: &AllowedOrigins) -> anyhow::Result<Option<CorsLayer>> {
    let allow_origin = match origins {
        AllowedOrigins::None => return Ok(None),
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .map(|origin| {
                    HeaderValue::from_str(origin).map_err(|_| {
                        anyhow::anyhow!(
                            "CORS_ALLOWED_ORIGINS: {origin:?} cannot be sent as a header value"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("prefer"),
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([
                header::LOCATION,
                HeaderName::from_static("operation-id"),
                header::RETRY_AFTER,
                header::LINK,
                HeaderName::from_static("x-next-cursor"),
            ])
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}
