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
use tasksync_shared::{OpKind, OutcomeStatus, SyncStatus, Task, operation::ItemStatus};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Ref, RefOr, Required,
        path::{Operation, Parameter, ParameterIn, PathItem},
        schema::{Object, Schema, SchemaType, Type},
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

pub use answers::*;
pub use page::{docs_asset, docs_page};

use crate::{
    auth::middleware::is_protected,
    error::ApiError,
    routes::{changes, conflicts, devices, events, health, operations, status, sync, tasks},
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
        conflicts::conflicts,
        sync::push,
        changes::changes,
        devices::devices,
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
        schemas(ErrorBody, Task, SyncStatus, ItemStatus, OpKind, OutcomeStatus),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            CursorExpired,
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
                if protected {
                    device_header(operation);
                }
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

/// The `Device-Id` header, checked on every `/api` route, documented on the protected ones
/// that answer 400 (those without it in their own parameters get this general description).
fn device_header(operation: &mut Operation) {
    if !operation.responses.responses.contains_key("400") {
        return;
    }
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    if parameters.iter().any(|p| p.name == "Device-Id") {
        return;
    }
    let mut schema = Object::with_type(Type::String);
    schema.min_length = Some(1);
    schema.max_length = Some(64);
    schema.pattern = Some("^[A-Za-z0-9._:-]{1,64}$".into());
    let mut parameter = Parameter::new("Device-Id");
    parameter.parameter_in = ParameterIn::Header;
    parameter.required = Required::False;
    parameter.description = Some(
        "The calling device's name (1 to 64 characters of `A-Z a-z 0-9 . _ : -`; otherwise \
         400). A write carries it to the operation log and counts for the device \
         (`GET /api/devices`)."
            .into(),
    );
    parameter.schema = Some(RefOr::T(Schema::Object(schema)));
    parameters.push(parameter);
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
    diagnosis_headers(&mut document);
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

/// `traceparent` and `X-Request-Id`, which every request may send and every answer carries
/// ([`crate::trace`]): shared components (`components.headers`, `components.parameters`)
/// referenced by every operation and every answer. Added to the JSON, as utoipa 5 has no header
/// components.
fn diagnosis_headers(document: &mut Value) {
    const TRACEPARENT: &str = "W3C Trace Context: `00-<32 hex trace id>-<16 hex span id>-<2 hex \
        flags>`, lower-case hex";
    const REQUEST_ID: &str = "1 to 128 visible ASCII characters";
    let header = |description: &str, pattern: &str| {
        json!({
            "description": description,
            "required": true,
            "schema": { "type": "string", "pattern": pattern },
        })
    };
    let parameter = |name: &str, description: &str| {
        json!({
            "name": name,
            "in": "header",
            "required": false,
            "description": description,
            "schema": { "type": "string" },
        })
    };
    let Some(root) = document.as_object_mut() else {
        return;
    };
    let components = root
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(components) = components {
        components.insert(
            "headers".into(),
            json!({
                "traceparent": header(
                    &format!(
                        "The api's span in the request's trace (continued from the request's \
                         `traceparent`, or started). {TRACEPARENT}"
                    ),
                    "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                ),
                "X-Request-Id": header(
                    "The request's id: the client's `X-Request-Id` when it sent a usable one, \
                     generated otherwise; also in the access log line",
                    "^[!-~]{1,128}$",
                ),
            }),
        );
        let parameters = components.entry("parameters").or_insert_with(|| json!({}));
        if let Some(parameters) = parameters.as_object_mut() {
            parameters.insert(
                "traceparent".into(),
                parameter(
                    "traceparent",
                    &format!(
                        "Continue this trace (optional). {TRACEPARENT}; an invalid value starts \
                         a new trace and is never refused"
                    ),
                ),
            );
            parameters.insert(
                "X-Request-Id".into(),
                parameter(
                    "X-Request-Id",
                    &format!(
                        "The client's id for this request (optional), echoed when it has \
                         {REQUEST_ID}; replaced by a generated one otherwise"
                    ),
                ),
            );
        }
    }
    let answer_headers = json!({
        "traceparent": { "$ref": "#/components/headers/traceparent" },
        "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" },
    });
    let add_headers = |answer: &mut Value| {
        // An answer by reference gets them from its component.
        if let Some(answer) = answer.as_object_mut().filter(|a| !a.contains_key("$ref")) {
            let headers = answer.entry("headers").or_insert_with(|| json!({}));
            if let (Some(headers), Some(shared)) =
                (headers.as_object_mut(), answer_headers.as_object())
            {
                for (name, value) in shared {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
    };
    let shared_answers = root
        .get_mut("components")
        .and_then(|c| c.get_mut("responses"))
        .and_then(Value::as_object_mut);
    for answer in shared_answers.into_iter().flat_map(|a| a.values_mut()) {
        add_headers(answer);
    }
    let operations = root
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut);
    for operation in operations {
        let parameters = operation.entry("parameters").or_insert_with(|| json!([]));
        if let Some(parameters) = parameters.as_array_mut() {
            for name in ["traceparent", "X-Request-Id"] {
                parameters.push(json!({ "$ref": format!("#/components/parameters/{name}") }));
            }
        }
        let answers = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|answers| answers.values_mut());
        for answer in answers {
            add_headers(answer);
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
