//! How one Docker call is observed, for both runtimes: its `docker.<op>` span (the one table of
//! operation -> span name) and its latency by operation and outcome in [`Metrics`], with the
//! event-stream reconnects. `DockerRuntime` opens its own spans; `Instrumented` measures every
//! runtime and opens the spans for those that do not. `metrics` renders [`Metrics`] at scrape time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tracing::{Span, field};

/// The `docker.<op>` span of one call of operation `op` (the metric's `op` label) on
/// `container`, with every field either runtime records; `docker.call` for an unknown `op`.
pub fn op_span(op: &'static str, container: &str) -> Span {
    // Span names must be literals for `tracing`, hence one arm per operation.
    macro_rules! span {
        ($n:literal) => {
            tracing::info_span!(
                $n,
                container = container,
                id = field::Empty,
                count = field::Empty,
                inspected = field::Empty,
                waited_for_name = field::Empty,
                cleanup_error = field::Empty,
                conflict = field::Empty,
                error = field::Empty,
                otel.status_code = field::Empty,
            )
        };
    }
    match op {
        "ping" => span!("docker.ping"),
        "list_containers" => span!("docker.list_containers"),
        "inspect_container" => span!("docker.inspect_container"),
        "create_container" => span!("docker.create_container"),
        "confirm_start" => span!("docker.confirm_start"),
        "stop_container" => span!("docker.stop_container"),
        "rename_container" => span!("docker.rename_container"),
        "remove_container" => span!("docker.remove_container"),
        "restart_container" => span!("docker.restart_container"),
        "events" => span!("docker.events"),
        "create_network" => span!("docker.create_network"),
        "remove_network" => span!("docker.remove_network"),
        _ => span!("docker.call"),
    }
}

/// Upper bounds (seconds) of the Docker call latency buckets: 1 ms to ~30 s.
const DOCKER_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Labels of a Docker call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DockerCallLabels {
    /// `create_container`, `remove_container`, `inspect_container`, ...
    pub op: &'static str,
    /// `ok`, or the error kind: `timeout`, `not_found`, `conflict`, `api_error`, `unreachable`.
    pub outcome: &'static str,
}

/// What is recorded live (shared by the runtime wrapper and the `/metrics` handler).
#[derive(Debug)]
pub struct Metrics {
    docker_calls: Family<DockerCallLabels, Histogram>,
    event_stream_reconnects: Counter,
    subscribed_once: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            docker_calls: Family::new_with_constructor(|| Histogram::new(DOCKER_BUCKETS)),
            event_stream_reconnects: Counter::default(),
            subscribed_once: AtomicBool::new(false),
        }
    }

    /// One Docker call took `elapsed` and ended with `outcome`.
    pub fn observe_docker_call(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        self.docker_calls
            .get_or_create(&DockerCallLabels { op, outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// The events stream was (re)subscribed; every subscription after the first is a reconnect.
    pub fn event_stream_subscribed(&self) {
        if self.subscribed_once.swap(true, Ordering::Relaxed) {
            self.event_stream_reconnects.inc();
        }
    }

    /// Adds the Docker call latencies and the event-stream reconnects to a scrape.
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "acevisor_docker_call_duration",
            "Latency of Docker API calls by operation and outcome",
            Unit::Seconds,
            self.docker_calls.clone(),
        );
        r.register(
            "acevisor_docker_event_stream_reconnects",
            "Times the Docker events stream was subscribed again after the first subscription",
            self.event_stream_reconnects.clone(),
        );
    }

    /// Docker calls observed so far for `op` with `outcome` (for tests).
    pub fn docker_calls(&self, op: &'static str, outcome: &'static str) -> u64 {
        // Encoding is the only read access prometheus-client gives to a histogram's count.
        let mut registry = Registry::default();
        registry.register("c", "", self.docker_calls.clone());
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        let needle = format!("c_count{{op=\"{op}\",outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_count_only_after_the_first_subscription() {
        let m = Metrics::new();
        m.event_stream_subscribed();
        assert_eq!(m.event_stream_reconnects.get(), 0);
        m.event_stream_subscribed();
        m.event_stream_subscribed();
        assert_eq!(m.event_stream_reconnects.get(), 2);
    }

    #[test]
    fn docker_call_counts_are_readable() {
        let m = Metrics::new();
        m.observe_docker_call("remove_container", "ok", Duration::from_millis(3));
        m.observe_docker_call("remove_container", "ok", Duration::from_millis(4));
        m.observe_docker_call("remove_container", "timeout", Duration::from_secs(10));
        assert_eq!(m.docker_calls("remove_container", "ok"), 2);
        assert_eq!(m.docker_calls("remove_container", "timeout"), 1);
        assert_eq!(m.docker_calls("create_container", "ok"), 0);
    }
}
