//! The HTTP routes, one file per concern.

pub mod changes;
pub mod conflicts;
pub mod devices;
pub mod events;
pub mod health;
pub mod operations;
pub mod status;
pub mod sync;
pub mod tasks;

use axum::routing::post;
use axum::{Router, extract::DefaultBodyLimit, middleware, routing::get};
use tower_http::trace::TraceLayer;

use crate::{
    error::{ApiError, render_errors},
    limits::{self, RequestLimits},
    openapi,
    state::AppState,
    throttle::{self, Throttle},
};

/// The whole api under `/api`. Every route is in the OpenAPI document ([`openapi::ApiDoc`]):
/// `tests/tests/openapi.rs` fails otherwise.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.body_limit;
    let limits = RequestLimits {
        body_limit,
        request_timeout: state.settings.http_request_timeout,
    };
    // The `Device-Id` header is checked on every route (outermost here, so a bad one costs no
    // rate token and reaches no handler).
    let api = Router::new()
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route(
            "/tasks/{id}",
            get(tasks::get_one)
                .put(tasks::update)
                .patch(tasks::patch)
                .delete(tasks::delete),
        )
        .route("/tasks/{id}/conflicts", get(conflicts::conflicts))
        .route("/devices", get(devices::devices))
        .route("/batch", post(sync::push))
        .route("/sync", post(sync::push))
        .route("/changes", get(changes::changes))
        .route("/events", get(events::events))
        .route("/sync/operations/{op_id}", get(operations::operation))
        .route("/status", get(status::status))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::docs_page))
        .route("/docs/{file}", get(openapi::docs_asset))
        // Keep this layer before (inside) authentication's: a 401 costs no user a rate token.
        .layer(middleware::from_fn_with_state(
            Throttle::new(&state.settings.edge, state.broker.clone()),
            throttle::guard,
        ))
        .layer(middleware::from_fn(crate::device::check_header));
    Router::new()
        .nest("/api", api)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside `render_errors`, so that its 413, 408 and 503 get the error body.
        .layer(middleware::from_fn_with_state(limits, limits::guard))
        .layer(middleware::from_fn(render_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
