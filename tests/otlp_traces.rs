//! Traces of incident A as an operator sees them in Jaeger, received by an in-process OTLP
//! receiver (gRPC and HTTP/protobuf): one trace from `vpn.failed` down to every engine removal,
//! another from `vpn.recovered` down to the forwarded engine created with the new port, nothing
//! at all while the daemon only polls, and an engine that dies on its own as its own trace.
//!
//! Real time with shrunk timings (the exporter's batch thread does not follow tokio's paused
//! clock); each test installs its subscriber for its own thread, and the current-thread runtime
//! keeps every actor on that thread.

mod otlp;
mod tree;

use acevisor::config::OtlpProtocol;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use otlp::{Received, VPN1, VPN2, check_incident_traces, config, incident_a};

async fn traced_incident_a(endpoint: String, protocol: OtlpProtocol, received: Received) {
    let cfg = config(&endpoint, protocol);
    // No environment: the test must not pick up an OTEL_* variable of the machine.
    let (subscriber, telemetry, problems) = acevisor::telemetry::build(&cfg, |_| None);
    assert!(problems.is_empty(), "{problems:?}");
    let target = telemetry.target().expect("exporting").clone();
    assert_eq!(target.protocol, protocol);
    if protocol == OtlpProtocol::HttpProtobuf {
        assert_eq!(target.endpoint, format!("{endpoint}/v1/traces"));
    }
    let _installed = tracing::subscriber::set_default(subscriber);

    let mem = MemoryRuntime::new();
    mem.add_vpn(VPN1, 55747, Some(DockerHealth::Healthy));
    mem.add_vpn(VPN2, 40000, Some(DockerHealth::Healthy));
    let (tree, _metrics) = otlp::start(&mem, cfg).await;
    let (idle_spans, snap) = incident_a(&tree, &received, &telemetry).await;
    assert_eq!(snap.counters.port_changed, 0);
    let victim = otlp::engine_dies(&tree, &telemetry).await;
    tree.stop().await;
    telemetry.shutdown().await;

    assert_eq!(idle_spans, 0, "an idle second of polling exported spans");
    let spans = received.spans();
    check_incident_traces(&spans, "otlp-test");
    otlp::check_engine_died(&spans, &victim);
    check_incident_log(&snap, &spans);
}

/// The dashboard's incident log: failure, emergency, recovery and its end, each carrying the id
/// of the trace it ran in, and the recovery and the emergency's end their durations.
fn check_incident_log(snap: &acevisor::actors::messages::SupervisorSnapshot, spans: &[otlp::Got]) {
    let trace_of = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span"))
            .trace
            .clone()
    };
    let log: Vec<_> = snap.incidents.iter().rev().collect();
    let kinds: Vec<_> = log.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            "vpn_failed",
            "emergency_entered",
            "vpn_recovered",
            "emergency_exited"
        ],
        "{log:?}"
    );
    let (failed, recovered) = (trace_of("vpn.failed"), trace_of("vpn.recovered"));
    assert_ne!(failed, recovered);
    for (i, trace) in log.iter().zip([&failed, &failed, &recovered, &recovered]) {
        assert_eq!(i.trace_id.as_ref(), Some(trace), "{i:?}");
    }
    assert_eq!(log[0].vpn.as_deref(), Some(VPN1));
    assert!(
        log[2].duration.is_some() && log[3].duration.is_some(),
        "{log:?}"
    );
    assert!(log[0].duration.is_none() && log[1].duration.is_none());
}

#[tokio::test]
async fn incident_a_traces_over_otlp_grpc() {
    let (endpoint, received, server) = otlp::grpc_receiver().await;
    traced_incident_a(endpoint, OtlpProtocol::Grpc, received).await;
    server.abort();
}

#[tokio::test]
async fn incident_a_traces_over_otlp_http() {
    let (endpoint, received, server) = otlp::http_receiver().await;
    traced_incident_a(endpoint, OtlpProtocol::HttpProtobuf, received).await;
    server.abort();
}
