//! `Instrumented<R>`: a `ContainerRuntime` wrapper that measures every call (latency histogram
//! by operation and outcome in `calls::Metrics`), counts event-stream reconnects and, for
//! runtimes that do not trace themselves, records a `docker.<op>` span per call.
//!
//! Spans are opened only inside another span (an incident, a reconcile, an engine's work): the
//! VpnMonitor's safety-net inspections start no trace of their own. `DockerRuntime` already
//! emits its own `docker.<op>` spans, so the daemon wraps it with [`Instrumented::without_spans`];
//! tests wrap the in-memory runtime with spans on.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{Instrument, Span, field};

use super::calls::{Metrics, op_span};
use super::{
    ContainerBrief, ContainerInfo, ContainerRuntime, ContainerSpec, EventStream, ListQuery,
    RuntimeError, RuntimeResult,
};

/// A runtime whose calls are measured (and traced).
pub struct Instrumented<R> {
    inner: R,
    metrics: Arc<Metrics>,
    spans: bool,
}

impl<R: ContainerRuntime> Instrumented<R> {
    /// Measures and traces every call of `inner`.
    pub fn new(inner: R, metrics: Arc<Metrics>) -> Self {
        Instrumented {
            inner,
            metrics,
            spans: true,
        }
    }

    /// Measures only: for a runtime that opens its own `docker.<op>` spans.
    pub fn without_spans(mut self) -> Self {
        self.spans = false;
        self
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn span(&self, op: &'static str, container: &str) -> Span {
        // Inside actors the current span is at least ractor's `Actor` span: only a span of
        // acevisor's own (an incident, a decision) makes a Docker call worth a span.
        let inside_ours = Span::current()
            .metadata()
            .is_some_and(|m| m.target().starts_with("acevisor"));
        if !self.spans || !inside_ours {
            return Span::none();
        }
        op_span(op, container)
    }

    async fn call<T>(
        &self,
        op: &'static str,
        container: &str,
        fut: impl Future<Output = RuntimeResult<T>>,
    ) -> RuntimeResult<T> {
        let span = self.span(op, container);
        let started = Instant::now();
        let result = fut.instrument(span.clone()).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => {
                span.record("error", field::display(e));
                span.record("otel.status_code", "error");
                outcome_of(e)
            }
        };
        self.metrics
            .observe_docker_call(op, outcome, started.elapsed());
        result
    }
}

/// The metric label of an error.
pub fn outcome_of(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Timeout { .. } => "timeout",
        RuntimeError::NotFound { .. } => "not_found",
        RuntimeError::Conflict { .. } => "conflict",
        RuntimeError::Api { .. } => "api_error",
        RuntimeError::Unreachable { .. } => "unreachable",
    }
}

#[async_trait]
impl<R: ContainerRuntime> ContainerRuntime for Instrumented<R> {
    async fn ping(&self) -> RuntimeResult<()> {
        self.call("ping", "", self.inner.ping()).await
    }

    async fn list(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerInfo>> {
        let name = query.name.as_deref().unwrap_or("");
        self.call("list_containers", name, self.inner.list(query))
            .await
    }

    async fn list_brief(&self, query: &ListQuery) -> RuntimeResult<Vec<ContainerBrief>> {
        let name = query.name.as_deref().unwrap_or("");
        self.call("list_containers", name, self.inner.list_brief(query))
            .await
    }

    async fn inspect(&self, id_or_name: &str) -> RuntimeResult<Option<ContainerInfo>> {
        self.call(
            "inspect_container",
            id_or_name,
            self.inner.inspect(id_or_name),
        )
        .await
    }

    async fn start_new(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        let span = self.span("create_container", &spec.name);
        let started = Instant::now();
        let result = self.inner.start_new(spec).instrument(span.clone()).await;
        let outcome = match &result {
            Ok(id) => {
                span.record("id", id.as_str());
                "ok"
            }
            Err(e) => {
                span.record("error", field::display(e));
                span.record("otel.status_code", "error");
                outcome_of(e)
            }
        };
        self.metrics
            .observe_docker_call("create_container", outcome, started.elapsed());
        result
    }

    async fn confirm_start(&self, id: &str) -> RuntimeResult<()> {
        self.call("confirm_start", id, self.inner.confirm_start(id))
            .await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> RuntimeResult<()> {
        self.call("stop_container", id, self.inner.stop(id, timeout))
            .await
    }

    async fn rename(&self, id: &str, new_name: &str) -> RuntimeResult<()> {
        self.call("rename_container", id, self.inner.rename(id, new_name))
            .await
    }

    async fn remove(&self, id: &str) -> RuntimeResult<()> {
        self.call("remove_container", id, self.inner.remove(id))
            .await
    }

    async fn restart(&self, id: &str) -> RuntimeResult<()> {
        self.call("restart_container", id, self.inner.restart(id))
            .await
    }

    async fn events(&self) -> RuntimeResult<EventStream> {
        let result = self.call("events", "", self.inner.events()).await;
        if result.is_ok() {
            self.metrics.event_stream_subscribed();
        }
        result
    }
}
