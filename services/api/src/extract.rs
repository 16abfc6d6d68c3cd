//! Extractors whose rejections come out as [`ApiError`]s, so that bad JSON, a wrong content
//! type, an oversized or late body or a malformed id get our error body and the right status.
//!
//! JSON bodies follow one rule everywhere (REST and pushes): a key may appear once per object,
//! and a REST body is an object.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{
        FromRequest, FromRequestParts, OriginalUri, Request,
        rejection::{BytesRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::Response,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tasksync_shared::config::DEFAULT_USER;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    auth::{Authenticator, Refusal},
    error::ApiError,
    json::{self, Parsed},
    state::AppState,
};

/// When a request's body must have arrived in full; set by [`crate::limits::guard`] from
/// `HTTP_REQUEST_TIMEOUT_MS`.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline {
    pub at: Instant,
    pub timeout: Duration,
}

/// A JSON body, read within the body limit and the request's [`BodyDeadline`], parsed
/// strictly: its repeated keys are listed, not dropped ([`json::parse`]). Any JSON value.
#[derive(Debug)]
pub struct JsonBody(pub Parsed);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a body with Content-Type: application/json".into(),
            ));
        }
        let deadline = request.extensions().get::<BodyDeadline>().copied();
        let read = Bytes::from_request(request, state);
        let bytes = match deadline {
            Some(BodyDeadline { at, timeout }) => {
                tokio::time::timeout_at(at, read).await.map_err(|_| {
                    ApiError::RequestTimeout(format!(
                        "the request body did not arrive within {} ms",
                        timeout.as_millis()
                    ))
                })?
            }
            None => read.await,
        }
        .map_err(body_rejection)?;
        json::parse(&bytes)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
    }
}

/// A JSON object body read into `T`: a repeated key, a body that is not an object, or a field
/// of the wrong type is a 400 naming the field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(Parsed { value, duplicates }) = JsonBody::from_request(request, state).await?;
        if let Some(path) = duplicates.first() {
            return Err(ApiError::BadRequest(json::repeated_key(path)));
        }
        if !value.is_object() {
            // serde would read a struct from an array by position: `["x", null, true]`.
            return Err(ApiError::BadRequest(format!(
                "invalid request body: must be a JSON object, got {}",
                json::kind_of(&value)
            )));
        }
        serde_path_to_error::deserialize::<Value, T>(value)
            .map(Self)
            .map_err(|e| ApiError::BadRequest(json::describe(&e.path().to_string(), e.inner())))
    }
}

/// `application/json` or any `application/*+json`, as axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("request body too large".into())
    } else {
        ApiError::BadRequest("the request body could not be read in full".into())
    }
}

/// The task id of a `/{id}` route.
#[derive(Debug)]
pub struct TaskId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<Uuid>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Self(id))
            .map_err(|e: PathRejection| {
                ApiError::BadRequest(format!("id: not a valid UUID ({})", e.body_text()))
            })
    }
}

/// `axum::extract::Query` with our rejections.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Self(q))
            .map_err(|e: QueryRejection| {
                ApiError::BadRequest(format!("invalid query string: {}", e.body_text()))
            })
    }
}

/// The user a request acts for, put in the request's extensions by the authentication layer
/// ([`crate::auth::authenticate`]): the token's `sub`, or the default user in development
/// mode. Without it — a route the layer does not cover — only development mode falls back to
/// the default user; with authentication on, the request is refused.
#[derive(Clone, Debug)]
pub struct CurrentUser(pub String);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if let Some(user) = parts.extensions.get::<Self>() {
            return Ok(user.clone());
        }
        match state.auth {
            Authenticator::Off => Ok(Self(DEFAULT_USER.to_string())),
            Authenticator::Tokens(_) => {
                let path = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or_else(|| parts.uri.path(), |OriginalUri(uri)| uri.path());
                Err(Refusal::Missing {
                    other_scheme: false,
                }
                .response(path))
            }
        }
    }
}
