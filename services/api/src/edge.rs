//! What every answer carries for browsers: CORS (`CORS_ALLOWED_ORIGINS`) and basic security
//! headers. Both wrap the whole router, outside authentication and the limits, so that a
//! preflight is answered before anything else looks at the request (it carries no token and
//! costs no rate token), and so that a browser app can read our 401 and 429 answers.
//!
//! - CORS: off unless `CORS_ALLOWED_ORIGINS` lists origins (or is `*`). Allowed: the methods
//!   and request headers the api uses; exposed: the response headers a client needs. Never
//!   `Access-Control-Allow-Credentials`: the api reads bearer tokens, not cookies, so a browser
//!   app sends `Authorization` without credentials mode, and `*` stays safe. An answer to an
//!   origin not listed (or to a request without `Origin`) carries no `Access-Control-*` header
//!   at all: its preflight is answered 200 with nothing allowed, which the browser takes as a
//!   refusal. `Vary: Origin` keeps caches from mixing the two.
//! - Security headers, on success and error answers alike, unless a handler set its own:
//!   `X-Content-Type-Options: nosniff` (a JSON body is never sniffed into HTML),
//!   `Referrer-Policy: no-referrer`, `Cache-Control: no-store` (answers hold one user's tasks;
//!   no shared or browser cache keeps them). hyper sends no `Server` header, and none is added.
//!   hyper's own answers to requests it cannot parse (see [`crate::server`]) carry none of this.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{self, Next},
    response::Response,
};
use tasksync_shared::config::AllowedOrigins;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
};

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layers, built at start (an origin that cannot be a header value stops the start).
#[derive(Clone, Debug, Default)]
pub struct Edge {
    cors: Option<CorsLayer>,
    /// The listed origins; `None` for none or any.
    listed: Option<Listed>,
}

type Listed = Arc<[HeaderValue]>;

impl Edge {
    pub fn new(origins: &AllowedOrigins) -> anyhow::Result<Self> {
        let (allow_origin, listed) = match origins {
            AllowedOrigins::None => return Ok(Self::default()),
            AllowedOrigins::Any => (AllowOrigin::any(), None),
            AllowedOrigins::List(list) => {
                let listed = header_values(list)?;
                (AllowOrigin::list(listed.iter().cloned()), Some(listed))
            }
        };
        Ok(Self {
            cors: Some(cors(allow_origin)),
            listed,
        })
    }

    /// `router` with CORS (when origins are configured) inside the security headers, so that
    /// a preflight's answer gets them too.
    pub fn wrap(self, router: Router) -> Router {
        let router = match self.cors {
            Some(cors) => router.layer(cors),
            None => router,
        };
        let router = match self.listed {
            Some(listed) => router.layer(middleware::from_fn_with_state(listed, only_listed)),
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

/// Takes every `Access-Control-*` header off an answer to an origin not listed: tower-http
/// leaves out only `Access-Control-Allow-Origin`, and lists the rest whoever asks.
async fn only_listed(State(listed): State<Listed>, request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|origin| listed.contains(origin));
    let mut response = next.run(request).await;
    if !allowed {
        let headers = response.headers_mut();
        let cors: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }
    response
}

fn header_values(origins: &[String]) -> anyhow::Result<Listed> {
    origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin).map_err(|_| {
                anyhow::anyhow!("CORS_ALLOWED_ORIGINS: {origin:?} cannot be sent as a header value")
            })
        })
        .collect()
}

/// CORS for the api's methods and headers, from `allow_origin`.
///
/// Allowed request headers: the token and body type, the preconditions (`If-Match`,
/// `If-None-Match`), `Prefer`, the event stream's `Last-Event-ID`, the diagnosis headers
/// (`traceparent`, `X-Request-Id`) and `Device-Id`. Exposed answer headers: everything a client
/// reads off an answer (where a task is, its operation and entity tag, when to retry, which
/// preference was applied, the next page) and the diagnosis headers, so that a browser app can
/// quote the trace and request id of a failure.
fn cors(allow_origin: AllowOrigin) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("prefer"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("device-id"),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            HeaderName::from_static("operation-id"),
            header::RETRY_AFTER,
            HeaderName::from_static("preference-applied"),
            header::LINK,
            HeaderName::from_static("x-next-cursor"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("traceparent"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}
