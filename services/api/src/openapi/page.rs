//! `GET /api/docs`: Swagger UI over `/api/openapi.json`. Its assets are the Swagger UI that
//! `utoipa-swagger-ui` embeds at build time (`vendored`: nothing downloaded, by the build or by
//! a browser); the page uses absolute paths and no inline script, so it also works under a
//! `script-src 'self'` Content-Security-Policy.

use std::sync::{Arc, LazyLock};

use axum::{
    extract::Path,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
};

use super::ErrorBody;
use crate::error::ApiError;

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
        (status = 404, description = "No such file", body = ErrorBody),
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
