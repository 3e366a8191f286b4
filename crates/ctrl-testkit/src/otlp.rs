//! An OpenTelemetry collector's trace intake on loopback: the OTLP/gRPC
//! `TraceService` generated from the protocol's own definitions
//! (opentelemetry-proto), keeping every span it receives, so a test checks
//! what a service really exported over the wire.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio_stream::wrappers::TcpListenerStream;

use crate::Error;

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub name: String,
    /// The span's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
}

#[derive(Debug, Default)]
struct Intake {
    spans: Mutex<Vec<ReceivedSpan>>,
}

#[tonic::async_trait]
impl TraceService for Intake {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(value_of)
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_of(kv)))
                        .collect(),
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                });
            }
        }
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn value_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The intake, serving on a loopback port until dropped.
#[derive(Debug)]
pub struct OtlpCollector {
    port: u16,
    intake: Arc<Intake>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpCollector {
    /// Starts the intake on a free loopback port.
    pub async fn start() -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::io("bind the OTLP intake", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("the OTLP intake's address", e))?
            .port();
        let intake = Arc::new(Intake::default());
        let service = TraceServiceServer::from_arc(intake.clone());
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            if let Err(e) = served {
                tracing::warn!("the OTLP intake stopped: {e}");
            }
        });
        Ok(Self { port, intake, task })
    }

    /// The endpoint a service exports to (`[log] otlp_endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.intake
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until a received span matches `wanted`; fails after `limit`
    /// naming what did arrive.
    pub async fn wait_for(
        &self,
        limit: Duration,
        wanted: impl Fn(&ReceivedSpan) -> bool,
    ) -> Result<ReceivedSpan, Error> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| wanted(s)) {
                return Ok(span);
            }
            if tokio::time::Instant::now() > deadline {
                let names: Vec<String> = self
                    .spans()
                    .iter()
                    .map(|s| format!("{}/{}", s.service, s.name))
                    .collect();
                return Err(Error::request(
                    "waiting for a span",
                    format!("none matched after {limit:?}; received {names:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
