//! The OpenAPI document (`GET /api/openapi.json`) against the router, and its page
//! (`/api/docs`): every route the router serves is in the document with the same methods and
//! path template, and every documented operation is served; the document is OpenAPI 3.x whose
//! references all resolve; both are public and take no rate token. What the answers hold is
//! checked against the document by schemathesis in CI (`.ci/schemathesis.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeSet, HashSet},
    num::NonZeroU32,
};

use api::Application;
use reqwest::Method;
use serde_json::Value;
use tasksync_shared::config::RateLimit;
use tasksync_tests::{
    TestStack,
    tokens::{claims_for, hs256, secret_settings},
};

/// Methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

type Route = (String, String);

#[tokio::test]
async fn the_router_and_the_document_list_the_same_routes() {
    let stack = TestStack::start().await;
    let document = served_document(&stack).await;
    let documented = documented_routes(&document);

    let root = stack.base.trim_end_matches("/api").to_string();
    let mut served = BTreeSet::new();
    for path in router_paths(&stack).await {
        for method in methods_served(&stack.http, &root, &path).await {
            served.insert((method, path.clone()));
        }
    }

    let undocumented: Vec<&Route> = served.difference(&documented).collect();
    let unserved: Vec<&Route> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in the document: {undocumented:?}\n\
         in the document but not served: {unserved:?}"
    );
    // Every route of the api, and nothing was lost by the reading above.
    assert!(served.len() >= 15, "{served:?}");
}

#[tokio::test]
async fn the_served_document_is_openapi_3_whose_references_resolve() {
    let stack = TestStack::start().await;
    let document = served_document(&stack).await;

    let version = document["openapi"].as_str().expect("openapi version");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts[0] == "3" && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "{version}"
    );
    assert!(document["info"]["title"].is_string());
    assert!(document["info"]["version"].is_string());

    let mut operation_ids = HashSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        // `/metrics` alone is served outside `/api` (Prometheus scrapes it like a probe).
        assert!(path.starts_with("/api/") || path == "/metrics", "{path}");
        for (method, operation) in item.as_object().expect("path item") {
            assert!(METHODS.contains(&method.as_str()), "{method} {path}");
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(
                operation_ids.insert(id.to_string()),
                "operationId {id} twice"
            );
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {path} has no success answer"
            );
            // Each `{param}` of the template is a path parameter of the operation.
            for name in template_params(path) {
                let declared = operation["parameters"].as_array().is_some_and(|params| {
                    params
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true)
                });
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} not declared"
                );
            }
        }
    }

    // Links name operations that exist, in the spelling OpenAPI tools read.
    let mut links = 0;
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for answer in operation["responses"].as_object().unwrap().values() {
                for link in answer["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = link["operationId"].as_str().expect("link operationId");
                    assert!(operation_ids.contains(target), "link to {target}");
                    links += 1;
                }
            }
        }
    }
    assert!(links > 0, "writes link to their operation");

    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external reference {reference}"));
        assert!(
            document.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
}

/// Every operation takes the diagnosis headers (`traceparent`, `X-Request-Id`), and every
/// answer, its own or a shared one, says it carries them.
#[tokio::test]
async fn every_operation_documents_the_trace_and_request_id_headers() {
    let stack = TestStack::start().await;
    let document = served_document(&stack).await;
    let resolve = |value: &Value| -> Value {
        match value["$ref"].as_str() {
            Some(reference) => document
                .pointer(reference.strip_prefix('#').unwrap())
                .unwrap_or_else(|| panic!("{reference} does not resolve"))
                .clone(),
            None => value.clone(),
        }
    };
    let mut answers = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let parameters: Vec<Value> = operation["parameters"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
                .iter()
                .map(resolve)
                .collect();
            for name in ["traceparent", "X-Request-Id"] {
                assert!(
                    parameters
                        .iter()
                        .any(|p| p["in"] == "header" && p["name"] == name),
                    "{method} {path} does not take {name}"
                );
            }
            for (status, answer) in operation["responses"].as_object().expect("responses") {
                let answer = resolve(answer);
                for name in ["traceparent", "X-Request-Id"] {
                    let header = resolve(&answer["headers"][name]);
                    assert_eq!(
                        header["schema"]["type"], "string",
                        "{method} {path} {status} does not answer {name}"
                    );
                }
                answers += 1;
            }
        }
    }
    assert!(answers > 50, "{answers}");
}

#[tokio::test]
async fn the_document_and_its_page_are_public_take_no_rate_token_and_load_nothing_from_elsewhere() {
    let stack = TestStack::start_with(|settings| {
        settings.jwt = secret_settings();
        settings.edge.rate_limit = Some(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
        });
    })
    .await;
    let anonymous = stack.client();

    // Well over the burst of 1, without a token.
    for _ in 0..5 {
        let document = anonymous.get("/openapi.json").await;
        assert_eq!(document.status, 200, "{document:?}");
        assert!(document.body["paths"].is_object());
    }
    let page = stack
        .http
        .get(format!("{}/docs", stack.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let assets = linked_assets(&html);
    assert!(assets.len() >= 4, "{html}");
    let root = stack.base.trim_end_matches("/api");
    for asset in &assets {
        let answer = stack
            .http
            .get(format!("{root}{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{asset}");
        assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
        let kind = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let body = answer.bytes().await.unwrap();
        assert!(!body.is_empty(), "{asset}");
        if asset.ends_with(".js") {
            assert_eq!(kind, "text/javascript", "{asset}");
        }
        if asset.ends_with("swagger-initializer.js") {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("\"/api/openapi.json\""), "{text}");
        }
    }
    let missing = anonymous.get("/docs/no-such-file.js").await;
    assert_eq!(missing.status, 404, "{missing:?}");

    // Everything else still needs a token and takes rate tokens.
    assert_eq!(anonymous.get("/status").await.status, 401);
    let alice = stack.client_with_token(&hs256(&claims_for("alice")));
    let statuses = [alice.status().await.status, alice.status().await.status];
    assert_eq!(statuses, [200, 429]);
}

/// `GET /api/openapi.json`, as JSON.
async fn served_document(stack: &TestStack) -> Value {
    let reply = stack.get("/openapi.json").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:?}"
    );
    reply.body
}

/// (method, path template) of every documented operation, methods in capitals.
fn documented_routes(document: &Value) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// The path templates of the api's router, exactly as `Application` serves it.
///
/// axum has no public route listing; its `Debug` output prints the path table
/// (`path_router: … Node { paths: {RouteId(1): "/api/tasks", …} }`, then the fallback's),
/// which is read here. The test asserts
/// that known routes are found, so a change of that output fails it instead of passing it.
async fn router_paths(stack: &TestStack) -> BTreeSet<String> {
    let mut settings = stack.settings.clone();
    settings.port = 0;
    let app = Application::build(settings).await.expect("build the api");
    let debug = format!("{:?}", app.router());
    // The routes, not the fallback's catch-alls, which follow them.
    let (routes, _) = debug
        .split_once("fallback_router")
        .unwrap_or_else(|| panic!("no fallback_router in {debug}"));
    let mut paths = BTreeSet::new();
    let mut rest = routes;
    while let Some(at) = rest.find("RouteId(") {
        rest = rest[at + "RouteId(".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
        if let Some(quoted) = rest.strip_prefix("): \"") {
            if let Some(end) = quoted.find('"') {
                paths.insert(quoted[..end].to_string());
            }
        }
    }
    for known in ["/api/tasks", "/api/tasks/{id}", "/api/health"] {
        assert!(paths.contains(known), "{known} not read from {debug}");
    }
    paths
}

/// The methods the router serves on `template`: a request with a method no route takes
/// answers 405 with `Allow` listing them (HEAD, which axum adds to every GET, left out).
async fn methods_served(http: &reqwest::Client, root: &str, template: &str) -> Vec<String> {
    let path = template_params(template)
        .iter()
        .fold(template.to_string(), |path, name| {
            path.replace(
                &format!("{{{name}}}"),
                "00000000-0000-0000-0000-000000000000",
            )
        });
    let answer = http
        .request(Method::TRACE, format!("{root}{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405, "TRACE {path}");
    let allow = answer.headers()["allow"].to_str().unwrap().to_string();
    allow
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty() && m != "HEAD")
        .collect()
}

/// The `{name}`s of a path template.
fn template_params(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

/// Every `$ref` in `value`.
fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => refs.push(reference.clone()),
                    _ => collect_refs(inner, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

/// The `href="…"` and `src="…"` of a page.
fn linked_assets(html: &str) -> Vec<String> {
    let mut assets = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for part in html.split(attribute).skip(1) {
            if let Some((link, _)) = part.split_once('"') {
                assets.push(link.to_string());
            }
        }
    }
    assets
}
