//! In-process OTLP receivers (gRPC with opentelemetry-proto's `TraceServiceServer`, HTTP/protobuf
//! with axum on `/v1/traces`) and incident A replayed in real time with shrunk timings, for the
//! trace tests. No external collector: everything listens on 127.0.0.1:0.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acevisor::actors::messages::SupervisorSnapshot;
use acevisor::actors::supervisor::Deps;
use acevisor::config::{Config, OtlpProtocol};
use acevisor::core::emergency::EmergencyState;
use acevisor::metrics::Metrics;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::instrumented::Instrumented;
use acevisor::runtime::memory::MemoryRuntime;
use acevisor::telemetry::Telemetry;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use crate::tree::{Tree, VPN1, VPN2, full};

/// Every export request received, in order.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    fn push(&self, r: ExportTraceServiceRequest) {
        self.0.lock().unwrap().push(r);
    }

    /// All spans received so far, flattened.
    pub fn spans(&self) -> Vec<Got> {
        let mut out = Vec::new();
        for req in self.0.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let resource: BTreeMap<String, String> = rs
                    .resource
                    .as_ref()
                    .map(|r| attrs(&r.attributes))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(Got {
                            trace: hex(&s.trace_id),
                            id: hex(&s.span_id),
                            parent: hex(&s.parent_span_id),
                            name: s.name.clone(),
                            attrs: attrs(&s.attributes),
                            events: s.events.iter().map(|e| e.name.clone()).collect(),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

/// One received span, with attributes rendered as strings.
#[derive(Clone, Debug)]
pub struct Got {
    pub trace: String,
    pub id: String,
    /// Empty for a root span.
    pub parent: String,
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    /// Span event names (log lines emitted inside the span).
    pub events: Vec<String>,
    pub resource: BTreeMap<String, String>,
}

impl Got {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver; returns its endpoint (`http://127.0.0.1:N`).
pub async fn grpc_receiver() -> (String, Received, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let service = TraceServiceServer::new(Collector(received.clone()));
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("gRPC receiver serves");
    });
    (format!("http://{addr}"), received, task)
}

/// An OTLP/HTTP receiver decoding protobuf on `/v1/traces`; returns its base URL.
pub async fn http_receiver() -> (String, Received, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let r = r.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        r.push(req);
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportTraceServiceRequest".to_vec(),
                    ),
                }
            }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("HTTP receiver serves");
    });
    (format!("http://{addr}"), received, task)
}

/// Redundant mode, 10 engines, timings shrunk so incident A runs in real time in about a second.
pub fn config(endpoint: &str, protocol: OtlpProtocol) -> Config {
    let text = format!(
        r#"
instance = "otlp-test"
[engines]
min_replicas = 10
max_replicas = 20
min_free = 0
# Two at a time: the start and the recovery each need creations that follow others' reports.
create_concurrency = 2
variant = "custom"
image = "acevisor-testbed/engine:dev"
command = ["--http-port", "{{http_port}}", "--https-port", "{{https_port}}", "--port", "{{p2p_port}}"]
ready_timeout = "30s"
[engines.health]
interval = "100ms"
failure_threshold = 2
unhealthy_grace = "10s"
max_restarts = 3
restart_window = "5m"
[vpn]
mode = "redundant"
poll_interval = "50ms"
port_settle = "200ms"
tunnel_grace = "60s"
[[vpn.gluetun]]
container = "{VPN1}"
engine_ports = "19000-19499"
[[vpn.gluetun]]
container = "{VPN2}"
engine_ports = "19500-19999"
[telemetry]
otlp_endpoint = "{endpoint}"
otlp_protocol = "{}"
"#,
        match protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    );
    let cfg = Config::parse(&text).expect("test config parses");
    cfg.validate().expect("test config is valid");
    cfg
}

/// A tree whose Docker calls go through `Instrumented` (spans and latency metrics), as the
/// daemon's do; the rest of the harness is `tests/tree`.
pub async fn start(mem: &MemoryRuntime, cfg: Config) -> (Tree, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let deps = Deps {
        runtime: Arc::new(Instrumented::new(mem.clone(), metrics.clone())),
        control: Arc::new(mem.clone()),
        engine_api: Arc::new(mem.clone()),
        name_registry: None,
    };
    let keys = vec![None; cfg.vpn.gluetun.len()];
    let mut tree = Tree::start_with(deps, cfg, keys).await;
    tree.mem = mem.clone();
    (tree, metrics)
}

/// Incident A on the tree, with an idle period before it. Returns how many spans arrived during
/// the idle period (must be 0) and the tree's final snapshot.
pub async fn incident_a(
    tree: &Tree,
    received: &Received,
    telemetry: &Telemetry,
) -> (usize, SupervisorSnapshot) {
    let m = &tree.mem;
    let sec = Duration::from_secs(1);
    tree.wait("10 engines 5/5", 10 * sec, |s| {
        full(s, VPN1, 5, 55747) && full(s, VPN2, 5, 40000)
    })
    .await;

    // Idle: 20 VpnMonitor polls, 10 health probes per engine, 20 Supervisor ticks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    telemetry.flush().await;
    let before = received.spans().len();
    tokio::time::sleep(sec).await;
    telemetry.flush().await;
    let idle_spans = received.spans().len() - before;

    m.kill(VPN1);
    tree.wait("emergency with VPN1's engines gone", 5 * sec, |s| {
        matches!(s.emergency, EmergencyState::Emergency { .. }) && s.engines_on(VPN1).is_empty()
    })
    .await;
    m.start(VPN1);
    m.set_health(VPN1, DockerHealth::Healthy);
    tree.wait("emergency over, VPN1 up without a port", 5 * sec, |s| {
        s.emergency == EmergencyState::Normal
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.set_port(VPN1, 34817);
    let s = tree
        .wait("VPN1 full again", 10 * sec, |s| {
            full(s, VPN1, 5, 34817) && full(s, VPN2, 5, 40000)
        })
        .await;
    telemetry.flush().await;
    (idle_spans, s)
}

/// The trace assertions shared by the gRPC and HTTP tests.
pub fn check_incident_traces(spans: &[Got], instance: &str) {
    let by_id: BTreeMap<&str, &Got> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let parent_of = |s: &Got| by_id.get(s.parent.as_str()).copied();
    let ancestors = |s: &Got| {
        let mut out = Vec::new();
        let mut cur = parent_of(s);
        while let Some(p) = cur {
            out.push(p.name.clone());
            cur = parent_of(p);
        }
        out
    };
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);

    // A creation decided once another engine reported is traced beside it, under what caused
    // them both, never under the other's creation (a chain as deep as the pool).
    for c in named("engine.create") {
        let up = ancestors(c);
        assert!(!up.iter().any(|n| n == "engine.create"), "{up:?}");
    }

    for s in spans {
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("acevisor")
        );
        assert_eq!(
            s.resource.get("service.instance.id").map(String::as_str),
            Some(instance)
        );
        assert!(s.resource.contains_key("service.version"));
    }

    // The failure: one trace from vpn.failed down to every removal's Docker call.
    let failed: Vec<&Got> = named("vpn.failed").collect();
    assert_eq!(failed.len(), 1, "one vpn.failed span: {failed:#?}");
    let failed = failed[0];
    assert!(failed.parent.is_empty(), "vpn.failed is a root");
    assert_eq!(failed.attr("vpn"), Some(VPN1));
    assert_eq!(failed.attr("cause"), Some("container_gone"));
    assert!(
        failed.events.iter().any(|e| e == "VPN failed"),
        "{failed:#?}"
    );
    let t1 = failed.trace.as_str();
    let enter: Vec<&Got> = named("emergency.enter").collect();
    assert_eq!(enter.len(), 1);
    assert_eq!(enter[0].trace, t1);
    assert_eq!(
        enter[0].parent, failed.id,
        "emergency.enter under vpn.failed"
    );
    assert_eq!(enter[0].attr("failed"), Some(VPN1));
    assert_eq!(enter[0].attr("healthy"), Some(VPN2));
    let removals: Vec<&Got> = named("engine.remove").collect();
    assert_eq!(removals.len(), 5, "{removals:#?}");
    for r in &removals {
        assert_eq!(r.trace, t1, "removal in the failure's trace");
        let parent = parent_of(r).expect("removal has a parent");
        assert_eq!(parent.name, "reconcile");
        assert_eq!(
            parent.parent, enter[0].id,
            "reconcile under emergency.enter"
        );
        assert_eq!(r.attr("vpn"), Some(VPN1));
        assert_eq!(r.attr("reason"), Some("vpn_failed"));
        assert!(r.attr("ordinal").is_some() && r.attr("engine").is_some());
        assert!(r.attr("container_id").is_some_and(|c| !c.is_empty()));
        let calls: Vec<&Got> = spans
            .iter()
            .filter(|s| s.parent == r.id && s.name == "docker.remove_container")
            .collect();
        assert_eq!(calls.len(), 1, "one docker.remove_container under {r:#?}");
    }
    let fw: Vec<&&Got> = removals
        .iter()
        .filter(|r| r.attr("forwarded") == Some("true"))
        .collect();
    assert_eq!(fw.len(), 1);
    assert_eq!(fw[0].attr("p2p_port"), Some("55747"));

    // The recovery: another trace, down to the forwarded engine created with the new port.
    let recovered: Vec<&Got> = named("vpn.recovered").collect();
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    let recovered = recovered[0];
    assert!(recovered.parent.is_empty());
    assert_eq!(recovered.attr("vpn"), Some(VPN1));
    let t2 = recovered.trace.as_str();
    assert_ne!(t1, t2, "failure and recovery are two traces");
    let exit: Vec<&Got> = named("emergency.exit").collect();
    assert_eq!(exit.len(), 1);
    assert_eq!(
        exit[0].parent, recovered.id,
        "emergency.exit under vpn.recovered"
    );
    let known: Vec<&Got> = named("vpn.port_known").collect();
    assert_eq!(known.len(), 1);
    assert_eq!(
        known[0].parent, recovered.id,
        "vpn.port_known under vpn.recovered"
    );
    assert_eq!(known[0].attr("forwarded_port"), Some("34817"));
    let creates: Vec<&Got> = named("engine.create")
        .filter(|c| c.attr("vpn") == Some(VPN1) && c.trace == t2)
        .collect();
    assert_eq!(
        creates.len(),
        5,
        "5 creates in the recovery trace: {creates:#?}"
    );
    for c in &creates {
        let up = ancestors(c);
        assert_eq!(up.first().map(String::as_str), Some("reconcile"), "{up:?}");
        assert!(up.iter().any(|n| n == "vpn.port_known"), "{up:?}");
        assert_eq!(
            up.last().map(String::as_str),
            Some("vpn.recovered"),
            "{up:?}"
        );
        let calls: Vec<&Got> = spans
            .iter()
            .filter(|s| s.parent == c.id && s.name == "docker.create_container")
            .collect();
        assert_eq!(calls.len(), 1, "one docker.create_container under {c:#?}");
        assert!(
            calls[0].attr("id").is_some_and(|id| !id.is_empty()),
            "the created container's id on the Docker span"
        );
        assert_eq!(c.attr("container_id"), calls[0].attr("id"));
    }
    let fw: Vec<&&Got> = creates
        .iter()
        .filter(|c| c.attr("forwarded") == Some("true"))
        .collect();
    assert_eq!(fw.len(), 1, "one forwarded engine created");
    assert_eq!(fw[0].attr("p2p_port"), Some("34817"));
    assert_eq!(
        parent_of(fw[0]).and_then(parent_of).map(|p| p.id.as_str()),
        Some(known[0].id.as_str()),
        "the forwarded engine is decided by the reconcile the port triggered"
    );

    assert_eq!(named("vpn.port_changed").count(), 0, "no port change");
    // Nothing in either incident trace after recovery removed an engine.
    assert!(named("engine.remove").all(|r| r.trace == t1));
}

/// An ordinary engine on VPN2 exits on its own; returns its name once it is replaced.
pub async fn engine_dies(tree: &Tree, telemetry: &Telemetry) -> String {
    let s = tree.snap().await;
    let victim = s
        .engines_on(VPN2)
        .iter()
        .find(|e| !e.forwarded)
        .expect("an ordinary engine on VPN2")
        .name
        .clone();
    tree.mem.exit(&victim, 1);
    tree.wait(
        "the dead engine replaced",
        10 * Duration::from_secs(1),
        |s| s.counters.engines_lost == 1 && full(s, VPN2, 5, 40000),
    )
    .await;
    telemetry.flush().await;
    victim
}

/// `engine.died` is the root of its own trace: the removal's Docker calls and the replacement's
/// creation hang under it.
pub fn check_engine_died(spans: &[Got], victim: &str) {
    let died: Vec<&Got> = spans.iter().filter(|s| s.name == "engine.died").collect();
    assert_eq!(died.len(), 1, "{died:#?}");
    let died = died[0];
    assert!(died.parent.is_empty(), "engine.died is a root");
    assert_eq!(died.attr("engine"), Some(victim));
    assert_eq!(died.attr("exit_code"), Some("1"));
    let in_trace: Vec<&Got> = spans.iter().filter(|s| s.trace == died.trace).collect();
    assert!(
        in_trace
            .iter()
            .any(|s| s.name == "docker.remove_container" && s.parent == died.id),
        "{in_trace:#?}"
    );
    let replacement: Vec<&&Got> = in_trace
        .iter()
        .filter(|s| s.name == "engine.create")
        .collect();
    assert_eq!(replacement.len(), 1, "{in_trace:#?}");
    assert_eq!(replacement[0].attr("vpn"), Some(VPN2));
    assert_eq!(replacement[0].attr("forwarded"), Some("false"));
}
