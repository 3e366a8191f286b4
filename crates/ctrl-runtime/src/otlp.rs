//! Span export to an OpenTelemetry collector over OTLP/gRPC (`[log]
//! otlp_endpoint`): the `tracing` spans every service already opens — a
//! request, a Restate handler, an apply, with their `deployment_id` — become
//! traces, batched and sent in the background.
//!
//! The batch processor runs as a task on the service's Tokio runtime: the
//! SDK's default one exports from a plain thread, where tonic has no
//! reactor and every export fails.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, Sampler, SdkTracerProvider, span_processor_with_async_runtime,
};

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long exit waits for the last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the queued spans are sent.
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A provider exporting `service`'s spans to `endpoint` (an `http://` URL);
/// `ratio` of the traces are kept, following the parent's decision. Call
/// it inside the Tokio runtime.
pub fn tracer_provider(
    endpoint: &str,
    service: &'static str,
    ratio: f64,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let batch = span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_scheduled_delay(EXPORT_INTERVAL)
            .with_max_queue_size(8192)
            .build(),
    )
    .build();
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Exports what is queued and stops the exporter, waiting at most
/// [`SHUTDOWN_TIMEOUT`]. Must not run on a Tokio worker thread of a
/// current-thread runtime (the export task could never run).
pub fn shutdown(provider: &SdkTracerProvider) {
    if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
        eprintln!("the last spans were not exported: {e}");
    }
}
