//! The api's OpenAPI 3.1 description, generated from the code, and its human page.
//!
//! - [`ApiDoc`] gathers the `#[utoipa::path]` of every handler (each lists its own statuses),
//!   the request and response types (`ToSchema` derives, the shared ones behind the `shared`
//!   crate's `openapi` feature), and [`Conventions`], which adds what every route shares:
//!   the bearer scheme, 401 and 429 on protected routes, 414 and 503 everywhere, and
//!   `/api/batch` as the twin of `/api/sync` (one handler, two paths).
//! - [`answers`]: the error body and the shared error answers; [`bodies`]: doc-only schemas
//!   of the bodies built as JSON values;
//! - `GET /api/openapi.json` ([`document`]) serves it, serialised once; `GET /api/docs`
//!   ([`page`]) is a Swagger UI page whose assets are embedded in the binary at build time, so
//!   it works offline and loads nothing from elsewhere. Both are public and take no rate token.
//!
//! `tests/tests/openapi.rs` fails when the router and the document disagree on a route, and
//! CI runs schemathesis against a live api to check the answers against the document
//! (`.ci/schemathesis.sh`).

pub mod answers;
pub mod bodies;
pub mod page;

use std::sync::LazyLock;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tasksync_shared::{OpKind, SyncStatus, Task, operation::ItemStatus};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Ref, RefOr,
        path::{Operation, ParameterIn, PathItem},
        schema::{Schema, SchemaType, Type},
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

pub use answers::*;
pub use page::{docs_asset, docs_page};

use crate::{
    auth::middleware::is_protected,
    error::ApiError,
    routes::{changes, events, health, operations, status, sync, tasks},
};

/// The document: every route of [`crate::routes::router`].
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
        tasks::patch,
        tasks::delete,
        sync::push,
        changes::changes,
        events::events,
        operations::operation,
        status::status,
        health::health,
        health::ready,
        document,
        page::docs_page,
        page::docs_asset,
        crate::metrics::render,
    ),
    components(
        schemas(ErrorBody, Task, SyncStatus, ItemStatus, OpKind),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            PreconditionFailed,
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
