//! Optional export of the services' spans to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf), when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; nothing at all otherwise.
//!
//! - The `tracing` spans become OpenTelemetry spans through `tracing-opentelemetry`, a layer
//!   beside the log output (same `RUST_LOG` filter).
//! - They continue the W3C trace the services already carry ([`super::traceparent`]): the api's
//!   `request` span takes the request's `traceparent` as its remote parent, the worker's
//!   `delivery` span the one in the message headers ([`continue_trace`]), so one operation's
//!   spans on both sides share the request's trace id.
//! - Spans leave through the SDK's batch processor: a bounded queue (2048 spans; more are
//!   dropped) emptied by its own thread, so a collector that is slow or unreachable never
//!   blocks or fails a request; export errors are the SDK's to swallow, never a panic of ours.
//! - [`Telemetry::shutdown`] sends what is queued, bounded by [`FLUSH_LIMIT`].

use std::{io::Write, time::Duration};

use opentelemetry::{
    Context,
    trace::{
        SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
        TraceState, TracerProvider as _,
    },
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::Registry;

use super::traceparent::{SpanId, TraceId, TraceParent};
use crate::Settings;

/// Longest wait for the last spans to leave at shutdown.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// The export pipeline, if any: keep it until the end, then [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued and stops the exporter (at most [`FLUSH_LIMIT`]; a
    /// collector that does not answer loses them, with a warning).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(FLUSH_LIMIT)
        {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// The OpenTelemetry layer for the subscriber, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
/// A pipeline that cannot be built is reported on standard error (there is no subscriber yet)
/// and left out: exporting traces is never a reason not to serve.
pub(super) fn start(
    settings: &Settings,
    service: &'static str,
) -> (
    Telemetry,
    Option<OpenTelemetryLayer<Registry, opentelemetry_sdk::trace::Tracer>>,
) {
    let Some(endpoint) = &settings.otlp_endpoint else {
        return (Telemetry::default(), None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.expose()))
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            // No subscriber yet to log through; a closed stderr loses the line, never panics.
            let _ = writeln!(
                std::io::stderr(),
                "OTEL_EXPORTER_OTLP_ENDPOINT: spans will not be exported: {error}"
            );
            return (Telemetry::default(), None);
        }
    };
    let name = settings
        .otel_service_name
        .clone()
        .unwrap_or_else(|| service.to_string());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build();
    let tracer = provider.tracer(service);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false);
    (
        Telemetry {
            provider: Some(provider),
        },
        Some(layer),
    )
}

/// Makes `span` (not yet entered) continue `parent`'s trace in the export, or start a trace of
/// its own when there is no parent (whatever span encloses it). Answers the `traceparent` to
/// pass on (the same trace, from `span`) when spans are exported, `None` when they are not.
pub fn continue_trace(span: &Span, parent: Option<&TraceParent>) -> Option<TraceParent> {
    let context = match parent {
        Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
            OtelTraceId::from_bytes(parent.trace_id.0),
            OtelSpanId::from_bytes(parent.parent_id.0),
            TraceFlags::new(parent.flags & TraceFlags::SAMPLED.to_u8()),
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    span.set_parent(context).ok()?;
    let context = span.context();
    let otel = context.span();
    let ids = otel.span_context();
    ids.is_valid().then(|| TraceParent {
        trace_id: TraceId(ids.trace_id().to_bytes()),
        parent_id: SpanId(ids.span_id().to_bytes()),
        flags: ids.trace_flags().to_u8(),
    })
}
