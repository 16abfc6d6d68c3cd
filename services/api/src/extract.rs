//! Extractors whose rejections come out as [`ApiError`]s, so that bad JSON, a wrong content
//! type, an oversized body or a malformed id get our error body and the right status.

use axum::{
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use tasksync_shared::config::DEFAULT_USER;
use uuid::Uuid;

use crate::error::ApiError;

/// `axum::Json` with our rejections.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::BadRequest(format!(
            "invalid request body: {}",
            std::error::Error::source(&e).map_or_else(|| e.body_text(), ToString::to_string)
        )),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!(
            "malformed JSON: {}",
            std::error::Error::source(&e).map_or_else(|| e.body_text(), ToString::to_string)
        )),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "expected a body with Content-Type: application/json".into(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("request body too large".into())
        }
        other => ApiError::BadRequest(other.body_text()),
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

/// The user a request acts for. Until authentication exists, every request is the default
/// user; an auth layer will replace this extractor's body.
#[derive(Clone, Debug)]
pub struct CurrentUser(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(DEFAULT_USER.to_string()))
    }
}
