//! The api's OpenAPI 3.1 description, generated from the code, and its human page.
//!
//! - [`ApiDoc`] gathers the `#[utoipa::path]` of every handler (each lists its own statuses),
//!   the request and response types (`ToSchema` derives, the shared ones behind the `shared`
//!   crate's `openapi` feature), and [`Conventions`], which adds what every route shares:
//!   the bearer scheme, 401 and 429 on protected routes, 414 and 503 everywhere, and
//!   `/api/batch` as the twin of `/api/sync` (one handler, two paths).
//! - `GET /api/openapi.json` ([`document`]) serves it, serialised once; `GET /api/docs`
//!   ([`docs_page`]) is a Swagger UI page whose assets ([`docs_asset`]) are embedded in the
//!   binary at build time, so it works offline and loads nothing from elsewhere (absolute
//!   paths, no inline script). Both are public and take no rate token.
//!
//! `tests/tests/openapi.rs` fails when the router and the document disagree on a route, and
//! CI runs schemathesis against a live api to check the answers against the document
//! (`.ci/schemathesis.sh`).

use std::sync::{Arc, LazyLock};

use axum::{
    extract::Path,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasksync_shared::{OpKind, SyncStatus, Task, operation::ItemStatus};
use utoipa::{
    Modify, OpenApi, ToResponse, ToSchema,
    openapi::{
        Ref, RefOr,
        path::{Operation, ParameterIn, PathItem},
        schema::{Schema, SchemaType, Type},
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};
use uuid::Uuid;

use crate::{
    auth::middleware::is_protected,
    error::ApiError,
    routes::{changes, health, operations, status, sync, tasks},
};

/// The document: every route of [`crate::routes::router`] and these two.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Task Sync api",
        description = "REST task operations and offline sync for an offline-first task app. \
            Writes are published to a queue and applied by a worker: they answer once applied \
            (201/200/204) or with 202 when that takes longer (or at once with \
            `Prefer: respond-async`). Every error answers the JSON body `ErrorBody`.\n\n\
            Authentication: with a key configured, every route except `/api/health`, \
            `/api/ready`, `/api/openapi.json` and `/api/docs` needs `Authorization: Bearer \
            <JWT>`, whose `sub` is the user. Without one (development mode) every request acts \
            as the user `default` and no token is needed.",
        license(name = "MIT"),
    ),
    paths(
        tasks::list,
        tasks::create,
        tasks::get_one,
        tasks::update,
        tasks::delete,
        sync::push,
        changes::changes,
        operations::operation,
        status::status,
        health::health,
        health::ready,
        document,
        docs_page,
        docs_asset,
    ),
    components(
        schemas(ErrorBody, Task, SyncStatus, ItemStatus, OpKind),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            RequestTimeout,
            PayloadTooLarge,
            UriTooLong,
            UnsupportedMediaType,
            TooManyRequests,
            OperationFailed,
            Unavailable,
        ),
    ),
    modifiers(&Conventions),
    security(("bearer" = [])),
    tags(
        (name = "tasks", description = "Task CRUD: reads from the database, writes through the queue"),
        (name = "sync", description = "Offline sync: push queued operations, pull changes, follow one operation"),
        (name = "service", description = "Probes and the service's own figures"),
        (name = "docs", description = "This description and its page"),
    ),
)]
pub struct ApiDoc;

/// The JSON the api answers for every error (SPEC §3).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // describes `error::error_body`'s output; never built
pub struct ErrorBody {
    /// What went wrong; a 400 starts with the offending field (`title: must not be blank`).
    error: String,
    timestamp: DateTime<Utc>,
    /// The request's path.
    path: String,
}

// The shared error answers, referenced by status from the operations (`response = …`) and by
// [`Conventions`]. Descriptions only: the answers are rendered by `error.rs` and `auth/reject.rs`.
#[allow(dead_code)]
mod answers {
    use super::*;

    /// Bad input; the message names the offending field or parameter.
    #[derive(Debug, ToResponse)]
    pub struct BadRequest(ErrorBody);

    /// No valid bearer token (only with authentication on). `WWW-Authenticate` says why:
    /// `Bearer` when none was sent, `Bearer error="invalid_token", error_description="…"` for
    /// an invalid one.
    #[derive(Debug, ToResponse)]
    #[response(headers(("WWW-Authenticate" = String, description = "The bearer challenge")))]
    pub struct Unauthorized(ErrorBody);

    /// No such task for the caller (another user's task answers the same).
    #[derive(Debug, ToResponse)]
    pub struct NotFound(ErrorBody);

    /// The body did not arrive within `HTTP_REQUEST_TIMEOUT_MS`.
    #[derive(Debug, ToResponse)]
    pub struct RequestTimeout(ErrorBody);

    /// The body is over `BODY_LIMIT_BYTES`, or a push has more than `MAX_BATCH_ITEMS` items.
    #[derive(Debug, ToResponse)]
    pub struct PayloadTooLarge(ErrorBody);

    /// The path and query are over 8 KiB.
    #[derive(Debug, ToResponse)]
    pub struct UriTooLong(ErrorBody);

    /// The body is not `application/json` (nor `application/*+json`).
    #[derive(Debug, ToResponse)]
    pub struct UnsupportedMediaType(ErrorBody);

    /// Slow down: the caller's rate limit (`RATE_LIMIT_RPS`), or, for writes, a work queue
    /// over `QUEUE_HIGH_WATER`. Nothing of the request was published.
    #[derive(Debug, ToResponse)]
    #[response(headers(("Retry-After" = u64, description = "Whole seconds to wait, at least 1")))]
    pub struct TooManyRequests(ErrorBody);

    /// The worker tried the operation every time and parked it for operators.
    #[derive(Debug, ToResponse)]
    pub struct OperationFailed(ErrorBody);

    /// A dependency is unavailable (the message names it; a write was not accepted and may be
    /// retried), or the answer was not ready within `HTTP_REQUEST_TIMEOUT_MS`.
    #[derive(Debug, ToResponse)]
    #[response(headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))]
    pub struct Unavailable(ErrorBody);
}
pub use answers::*;

/// What every operation shares, added to the derived paths.
#[derive(Debug)]
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".into());
        bearer.description = Some(
            "A JWT (HS256, RS256 or ES256, as the api's key says) with `sub` (the user) and `exp`"
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));

        // `POST /api/batch` is `POST /api/sync` under another name.
        if let Some(mut batch) = doc.paths.paths.get("/api/sync").cloned() {
            if let Some(push) = batch.post.as_mut() {
                push.operation_id = Some("push_batch".into());
                push.summary = Some("Push queued operations (the same as /api/sync)".into());
            }
            doc.paths.paths.insert("/api/batch".into(), batch);
        }

        for (path, item) in doc.paths.paths.iter_mut() {
            let protected = is_protected(path);
            for operation in operations(item) {
                never_null_headers(operation);
                let mut shared = vec![("414", "UriTooLong"), ("503", "Unavailable")];
                if protected {
                    shared.extend([("401", "Unauthorized"), ("429", "TooManyRequests")]);
                } else {
                    // Public: no token needed, whatever the document-wide requirement says.
                    operation.security = Some(Vec::new());
                }
                for (status, name) in shared {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// An optional header is absent, never `null`: `Option<String>` params say "string or null".
fn never_null_headers(operation: &mut Operation) {
    let headers = operation.parameters.iter_mut().flatten();
    for parameter in headers.filter(|p| p.parameter_in == ParameterIn::Header) {
        if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
            if let SchemaType::Array(types) = &object.schema_type {
                if let [only] = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    object.schema_type = SchemaType::Type((*only).clone());
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The document as served, serialised once.
static DOCUMENT: LazyLock<Result<String, String>> = LazyLock::new(|| {
    let mut document = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
    link_writes_to_their_operation(&mut document);
    serde_json::to_string(&document).map_err(|e| e.to_string())
});

/// Every answer that names its operation (`Operation-Id`) links to where the operation
/// stands, so that clients (and schemathesis' stateful phase) can follow a write to its
/// outcome. Added to the JSON: utoipa 5 writes a link's fields in snake_case
/// (`operation_id`), which OpenAPI tools do not read.
fn link_writes_to_their_operation(document: &mut Value) {
    let link = json!({
        "operation": {
            "operationId": "get_operation",
            "parameters": { "op_id": "$response.header.Operation-Id" },
            "description": "Where the operation stands",
        }
    });
    let operations = document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let answers = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|answers| answers.values_mut());
        for answer in answers {
            if answer.pointer("/headers/Operation-Id").is_some() {
                answer["links"] = link.clone();
            }
        }
    }
}

/// The OpenAPI document of this api
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi_document",
    tag = "docs",
    description = "This document (OpenAPI 3.1), generated from the api's code. Public.",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)),
)]
pub async fn document() -> Result<Response, ApiError> {
    let json = DOCUMENT
        .as_ref()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("OpenAPI document: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json.clone(),
    )
        .into_response())
}

/// The page: Swagger UI over `/api/openapi.json`, every asset from [`docs_asset`].
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Task Sync api</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
  <link rel="stylesheet" href="/api/docs/index.css">
  <link rel="icon" type="image/png" href="/api/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/swagger-initializer.js"></script>
</body>
</html>
"#;

/// A page to read and try the api
#[utoipa::path(
    get,
    path = "/api/docs",
    operation_id = "docs_page",
    tag = "docs",
    description = "Swagger UI over this document; its assets are served by the api itself. Public.",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
)]
pub async fn docs_page() -> Html<&'static str> {
    Html(PAGE)
}

/// The files [`PAGE`] loads, with their content types: served from the Swagger UI embedded
/// at build time, and nothing else.
const ASSETS: [(&str, &str); 6] = [
    ("swagger-ui.css", "text/css"),
    ("index.css", "text/css"),
    ("favicon-32x32.png", "image/png"),
    ("swagger-ui-bundle.js", "text/javascript"),
    ("swagger-ui-standalone-preset.js", "text/javascript"),
    ("swagger-initializer.js", "text/javascript"),
];

/// Swagger UI's settings: the one document, at its absolute path.
static SWAGGER: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::new(["/api/openapi.json"])));

/// One asset of the page
#[utoipa::path(
    get,
    path = "/api/docs/{file}",
    operation_id = "docs_asset",
    tag = "docs",
    description = "A file the page loads (Swagger UI, embedded in the api). Public.",
    params(("file" = String, Path, description = "The file's name", example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/css"),
            (String = "text/javascript"),
            ([u8] = "image/png"),
        )),
        (status = 404, response = NotFound),
    ),
)]
pub async fn docs_asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let Some(&(name, content_type)) = ASSETS.iter().find(|(name, _)| *name == file) else {
        return Err(ApiError::NotFound(format!("no such file: {file}")));
    };
    let served = utoipa_swagger_ui::serve(name, SWAGGER.clone())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("Swagger UI asset {name}: {e}")))?
        .ok_or_else(|| ApiError::NotFound(format!("no such file: {file}")))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        served.bytes.into_owned(),
    )
        .into_response())
}

/// Doc-only schemas of bodies that handlers build as JSON values or read loosely; their
/// faithfulness is checked against live answers by schemathesis (`response_schema_conformance`).
#[allow(dead_code)]
pub mod bodies {
    use super::*;

    /// `GET /api/health`.
    #[derive(Debug, ToSchema)]
    pub struct Health {
        #[schema(value_type = String, pattern = "^ok$")]
        status: &'static str,
        timestamp: DateTime<Utc>,
    }

    /// One dependency's state.
    #[derive(Debug, ToSchema)]
    pub struct Check {
        #[schema(value_type = String, pattern = "^(up|down)$")]
        status: &'static str,
        /// Why it is down.
        error: Option<String>,
    }

    /// The dependencies checked by `/api/ready`.
    #[derive(Debug, ToSchema)]
    pub struct Checks {
        postgres: Check,
        rabbitmq: Check,
        /// Only with `JWT_JWKS_URL`: whether the key set has been fetched.
        jwks: Option<Check>,
    }

    /// `GET /api/ready`; when not ready, also the error fields (`error` names what is down).
    #[derive(Debug, ToSchema)]
    pub struct Readiness {
        #[schema(value_type = String, pattern = "^(ready|unavailable)$")]
        status: &'static str,
        timestamp: DateTime<Utc>,
        checks: Checks,
        error: Option<String>,
        path: Option<String>,
    }

    /// `GET /api/status`. `null` means unknown: the dependency did not answer. The queue
    /// figures are the service's backlog over every user; the sync figures are the caller's.
    #[derive(Debug, ToSchema)]
    pub struct StatusReport {
        /// `jwt` (bearer tokens) or `off` (development mode).
        #[schema(value_type = String, pattern = "^(jwt|off)$")]
        auth: &'static str,
        /// The caller.
        user: String,
        /// Operations accepted, not yet decided, that the broker holds ready (work queue plus
        /// delay queues).
        pending_sync_count: Option<u32>,
        sync_queue_size: Option<u32>,
        retry_queue_size: Option<u32>,
        /// Operations parked for good (the caller's with authentication on).
        dead_letter_count: Option<i64>,
        worker_count: Option<u32>,
        error_task_count: Option<i64>,
        last_sync_timestamp: Option<DateTime<Utc>>,
        is_online: bool,
        broker_online: bool,
        database_online: bool,
        server_time: DateTime<Utc>,
    }

    /// The body of `POST /api/sync` and `POST /api/batch`.
    #[derive(Debug, ToSchema)]
    pub struct PushRequest {
        /// The operations, answered each in its slot (at most `MAX_BATCH_ITEMS`, default 1000).
        items: Vec<PushItem>,
        /// The device's clock when it sent the push (informative).
        client_timestamp: Option<DateTime<Utc>>,
    }

    /// One queued operation. A bad item is an `error` in its own slot; the others go on.
    #[derive(Debug, ToSchema)]
    pub struct PushItem {
        /// The op id: the client's UUID, the idempotency key of the operation.
        id: Uuid,
        task_id: Uuid,
        operation: OpKind,
        /// The fields to set (ignored for a delete).
        data: Option<PushData>,
        /// When the device queued the operation; its write time unless `data.updated_at`
        /// says when the task changed. Required unless `data.updated_at` is given.
        created_at: Option<DateTime<Utc>>,
        /// The device's own retry counter (informative).
        retry_count: Option<i64>,
    }

    /// The fields of a pushed operation; `null` for `title` or `completed` means not given,
    /// `null` for `description` clears it.
    #[derive(Debug, ToSchema)]
    pub struct PushData {
        #[schema(max_length = 500)]
        title: Option<String>,
        #[schema(max_length = 10000)]
        description: Option<String>,
        completed: Option<bool>,
        /// When the device changed the task.
        updated_at: Option<DateTime<Utc>>,
    }
}
