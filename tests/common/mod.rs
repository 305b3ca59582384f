//! Shared pieces of the API tests: a fake Supervisor actor answering canned snapshots and
//! provisioning results, a Streams actor wired to it, the router, and a request helper that goes
//! through the whole axum stack with `tower::ServiceExt::oneshot`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use acevisor::actors::messages::{
    Counters, EngineView, ProvisionError, ProvisionWait, SupervisorMsg, SupervisorSnapshot,
    VpnStatus,
};
use acevisor::actors::streams::{Streams, StreamsArgs, StreamsMsg};
use acevisor::api::{ApiContext, router};
use acevisor::clients::engine::EngineClient;
use acevisor::config::VpnMode;
use acevisor::core::emergency::EmergencyState;
use acevisor::core::model::{EnginePhase, Readiness, VpnView};
use acevisor::core::streams::StreamLimits;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

pub const KEY: &str = "t0p-s3cret";

/// What the fake Supervisor answers, changeable by the test.
pub struct FakeWorld {
    pub snapshot: SupervisorSnapshot,
    pub provision: Result<EngineView, ProvisionError>,
    /// Keep reply ports unanswered (a Supervisor stuck on something).
    pub hang: bool,
    /// The `wait` of every provisioning request received.
    pub provision_waits: Vec<ProvisionWait>,
    held: Vec<RpcReplyPort<SupervisorSnapshot>>,
    held_provisions: Vec<RpcReplyPort<Result<EngineView, ProvisionError>>>,
}

pub struct FakeSupervisor;

pub struct FakeArgs {
    pub world: Arc<Mutex<FakeWorld>>,
    pub counts: watch::Sender<BTreeMap<String, u32>>,
}

impl Actor for FakeSupervisor {
    type Msg = SupervisorMsg;
    type State = FakeArgs;
    type Arguments = FakeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: FakeArgs,
    ) -> Result<FakeArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut FakeArgs,
    ) -> Result<(), ActorProcessingErr> {
        // `api::launch` starts its Streams actor through the Supervisor.
        if let SupervisorMsg::SuperviseStreams { spawn, reply } = msg {
            let _ = reply.send((spawn.0)(myself.get_cell()).await.map(|_| ()));
            return Ok(());
        }
        let mut world = st.world.lock().unwrap();
        match msg {
            SupervisorMsg::Snapshot(reply) => {
                if world.hang {
                    world.held.push(reply);
                } else {
                    let _ = reply.send(world.snapshot.clone());
                }
            }
            SupervisorMsg::Provision { reply, .. } if world.hang => {
                world.held_provisions.push(reply)
            }
            SupervisorMsg::Provision { wait, reply } => {
                world.provision_waits.push(wait);
                let _ = reply.send(world.provision.clone());
            }
            SupervisorMsg::Inspect { reply, .. } => {
                let _ = reply.send(None);
            }
            // The fake world knows no container by id and has no connected VPN: the answers of
            // the real Supervisor for that world.
            SupervisorMsg::ByLabel { reply, .. } => {
                let _ = reply.send(Vec::new());
            }
            SupervisorMsg::Delete { reply, .. } => {
                let _ = reply.send(acevisor::actors::messages::DeleteOutcome::NotFound);
            }
            SupervisorMsg::Scale { demand, reply } => {
                let _ = reply.send(acevisor::actors::messages::ScaleOutcome {
                    target: demand,
                    engines: world.snapshot.engines.len() as u32,
                });
            }
            SupervisorMsg::Gc(reply) => {
                let _ = reply.send(Vec::new());
            }
            SupervisorMsg::ResetBreaker(reply) => {
                let _ = reply.send("closed");
            }
            SupervisorMsg::PublicIp(reply) => {
                let _ = reply.send(Err("no VPN is connected".into()));
            }
            SupervisorMsg::StreamCounts(counts) => {
                let _ = st.counts.send(counts);
            }
            SupervisorMsg::PortHook { vpn, reply } => {
                let _ = reply.send(vpn == "gluetun");
            }
            // The stream proxy gets the first ready engine of the snapshot.
            SupervisorMsg::ReserveEngine { reply, .. } => {
                let _ = reply.send(
                    world
                        .snapshot
                        .engines
                        .iter()
                        .find(|e| e.phase == EnginePhase::Ready)
                        .cloned(),
                );
            }
            _ => {}
        }
        Ok(())
    }
}

pub fn engine(
    n: u32,
    phase: EnginePhase,
    host: &str,
    http_port: u16,
    forwarded: bool,
) -> EngineView {
    EngineView {
        name: format!("acestream-{n}"),
        ordinal: n,
        vpn: Some("gluetun".into()),
        vpn_id: Some("vpnid0000001".into()),
        forwarded,
        p2p_port: if forwarded { 55747 } else { 40000 + n as u16 },
        http_port,
        phase,
        container_id: Some(format!("{n:0>12}abcdef0123456789")),
        host: Some(host.into()),
        streams: 0,
        labels: BTreeMap::from([
            ("acevisor.managed".to_string(), "test-instance".to_string()),
            ("acevisor.role".to_string(), "engine".to_string()),
            ("acevisor.ordinal".to_string(), n.to_string()),
        ]),
        reserved: 0,
    }
}

/// A VPN that is up with `port` forwarded, or down and failed.
pub fn vpn(name: &str, connected: bool, port: Option<u16>) -> VpnStatus {
    VpnStatus {
        lane: VpnView {
            name: Some(name.into()),
            container_id: Some(format!("{name}-id")),
            started_at: None,
            readiness: if connected {
                Readiness::up(port)
            } else {
                Readiness::Down
            },
            failed: !connected,
            forwarding: true,
            port_wait_expired: false,
            engine_ports: acevisor::core::ports::PortRange {
                start: 40000,
                end: 40999,
            },
        },
        status: if connected { "up" } else { "down" },
        health: if connected { "healthy" } else { "unhealthy" },
        connected,
        ip: Some("172.18.0.2".into()),
        public_ip: connected.then(|| "203.0.113.7".into()),
        last_check_at: Some(SystemTime::now()),
        last_error: None,
    }
}

pub fn snapshot(engines: Vec<EngineView>) -> SupervisorSnapshot {
    SupervisorSnapshot {
        engines,
        lanes: Vec::new(),
        vpns: vec![vpn("gluetun", true, Some(55747))],
        emergency: EmergencyState::Normal,
        counters: Counters::default(),
        intensity: Vec::new(),
        holds: Vec::new(),
        ready: true,
        docker_error: None,
        breaker: acevisor::core::breaker::BreakerState::Closed,
        pending_provisions: 0,
        provision_block: None,
        incidents: Vec::new(),
    }
}

/// A running API over a fake Supervisor and a real Streams actor.
pub struct Harness {
    pub app: Router,
    pub world: Arc<Mutex<FakeWorld>>,
    pub counts: watch::Receiver<BTreeMap<String, u32>>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub streams: ActorRef<StreamsMsg>,
    pub ctx: ApiContext,
}

impl Harness {
    pub async fn new(snap: SupervisorSnapshot) -> Harness {
        Harness::with(snap, Some(KEY), Duration::ZERO).await
    }

    pub async fn with(
        snap: SupervisorSnapshot,
        key: Option<&str>,
        collect_interval: Duration,
    ) -> Harness {
        Harness::with_limits(snap, key, collect_interval, StreamLimits::default()).await
    }

    /// A harness whose Streams actor keeps these limits.
    pub async fn with_limits(
        snap: SupervisorSnapshot,
        key: Option<&str>,
        collect_interval: Duration,
        limits: StreamLimits,
    ) -> Harness {
        let world = Arc::new(Mutex::new(FakeWorld {
            snapshot: snap,
            provision: Err(ProvisionError::MaxCapacity),
            hang: false,
            provision_waits: Vec::new(),
            held: Vec::new(),
            held_provisions: Vec::new(),
        }));
        let (tx, rx) = watch::channel(BTreeMap::new());
        let (supervisor, _) = Actor::spawn(
            None,
            FakeSupervisor,
            FakeArgs {
                world: world.clone(),
                counts: tx,
            },
        )
        .await
        .unwrap();
        // Generous: the in-test servers must answer even on a loaded machine.
        let call_timeout = Duration::from_secs(5);
        let (streams, _) = Actor::spawn(
            None,
            Streams,
            StreamsArgs {
                supervisor: supervisor.clone(),
                engine_client: Arc::new(EngineClient::new(Duration::from_secs(5)).unwrap()),
                collect_interval,
                call_timeout,
                limits,
            },
        )
        .await
        .unwrap();
        let ctx = ApiContext {
            supervisor: supervisor.clone(),
            streams: streams.clone().into(),
            api_key: key.map(str::to_string),
            mode: VpnMode::Single,
            started_at: SystemTime::now(),
            call_timeout,
            create_timeout: call_timeout,
            provision_timeout: call_timeout,
            label_prefix: "acevisor".into(),
            min_replicas: 1,
            max_replicas: 4,
            metrics: Default::default(),
            timeouts: Default::default(),
            trace_ui_url: Some("http://jaeger:16686/trace/{trace_id}".into()),
            proxy: None,
        };
        Harness {
            app: router(ctx.clone()),
            world,
            counts: rx,
            supervisor,
            streams,
            ctx,
        }
    }

    pub fn set_snapshot(&self, f: impl FnOnce(&mut SupervisorSnapshot)) {
        f(&mut self.world.lock().unwrap().snapshot);
    }

    pub fn set_provision(&self, answer: Result<EngineView, ProvisionError>) {
        self.world.lock().unwrap().provision = answer;
    }

    pub fn set_hang(&self, hang: bool) {
        self.world.lock().unwrap().hang = hang;
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(&self.app, "GET", path, &[], None).await
    }

    /// POST with the key as a Bearer token.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let auth = format!("Bearer {KEY}");
        send(
            &self.app,
            "POST",
            path,
            &[("authorization", auth.as_str())],
            Some(body.to_string().into_bytes()),
        )
        .await
    }
}

/// One request through the router; the answer's status and JSON body (`Value::Null` when the
/// body is not JSON, which every route must avoid).
pub async fn send(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Body::from(body.unwrap_or_default())).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 10 * 1024 * 1024)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

/// The body an Acexy-style proxy sends on `stream_started`.
pub fn started_body(host: &str, port: u16, stream_id: &str, stat_url: &str) -> Value {
    serde_json::json!({
        "container_id": "proxycontainer01",
        "engine": {"host": host, "port": port},
        "stream": {"key_type": "content_id", "key": "0123456789abcdef0123456789abcdef01234567"},
        "session": {
            "playback_session_id": format!("session-{stream_id}"),
            "stat_url": stat_url,
            "command_url": format!("http://{host}:{port}/ace/cmd/{stream_id}"),
            "is_live": 1
        },
        "labels": {"stream_id": stream_id}
    })
}

/// Waits until the Streams actor has told the Supervisor these counts (by container ID).
pub async fn counts_become(
    rx: &mut watch::Receiver<BTreeMap<String, u32>>,
    want: BTreeMap<String, u32>,
) {
    let wait = rx.wait_for(|c| *c == want);
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("stream counts never reached the expected value")
        .expect("supervisor gone");
}

pub fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| humantime::parse_rfc3339(s).is_ok())
}

/// One request through the router exactly as given (no Content-Type added); the answer's
/// status, headers and JSON body (`Value::Null` when not JSON).
pub async fn send_raw(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body)).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
