//! The API over the real actor tree on the in-memory runtime (paused clock): readiness, the
//! engine list a proxy sees, stream events reaching the real Supervisor's per-engine counts, and
//! the status routes built from its real snapshot.

mod common;
mod tree;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use acevisor::actors::streams::{Streams, StreamsArgs};
use acevisor::api::{ApiContext, router};
use acevisor::clients::engine::EngineClient;
use acevisor::core::model::EnginePhase;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use axum::http::StatusCode;
use common::{KEY, send, started_body};
use ractor::Actor;
use serde_json::json;
use tree::{Tree, VPN1, config};

#[tokio::test(start_paused = true)]
async fn api_over_the_real_tree() {
    let memrt = MemoryRuntime::new();
    memrt.add_vpn(VPN1, 55747, Some(DockerHealth::Healthy));
    let cfg = config("single", 2, "");
    let tree = Tree::start(&memrt, cfg.clone()).await;
    tree.wait("two ready engines", Duration::from_secs(120), |s| {
        s.ready
            && s.engines
                .iter()
                .filter(|e| e.phase == EnginePhase::Ready)
                .count()
                == 2
    })
    .await;

    let (streams, _) = Actor::spawn(
        None,
        Streams,
        StreamsArgs {
            supervisor: tree.sup.clone(),
            engine_client: Arc::new(EngineClient::new(Duration::from_secs(5)).unwrap()),
            collect_interval: Duration::ZERO,
            call_timeout: Duration::from_secs(3),
            limits: Default::default(),
        },
    )
    .await
    .unwrap();
    let mut ctx = ApiContext::from_config(&cfg, tree.sup.clone(), streams, Some(KEY.into()));
    ctx.started_at = SystemTime::now();
    let app = router(ctx);
    let get = |path: &'static str| send(&app, "GET", path, &[], None);
    let bearer = format!("Bearer {KEY}");
    let auth = [("authorization", bearer.as_str())];

    let (status, _) = get("/readyz").await;
    assert_eq!(status, StatusCode::OK);

    let (status, engines) = get("/engines").await;
    assert_eq!(status, StatusCode::OK);
    let list = engines.as_array().unwrap();
    assert_eq!(list.len(), 2, "{engines}");
    assert_eq!(list.iter().filter(|e| e["forwarded"] == true).count(), 1);
    let fwd = list.iter().find(|e| e["forwarded"] == true).unwrap();
    assert_eq!(fwd["p2p_port"], 55747);
    assert_eq!(fwd["vpn_container"], VPN1);
    assert_eq!(fwd["health_status"], "healthy");
    let (host, port) = (
        fwd["host"].as_str().unwrap().to_string(),
        fwd["port"].as_u64().unwrap() as u16,
    );
    let name = fwd["container_name"].as_str().unwrap().to_string();

    // stream_started reaches the real Supervisor as a per-engine count.
    let body = started_body(&host, port, "mem-1", "http://127.0.0.1:9/stat");
    let (status, s) = send(
        &app,
        "POST",
        "/events/stream_started",
        &auth,
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["container_name"], name.as_str());
    tree.wait(
        "the stream counted on its engine",
        Duration::from_secs(30),
        |s| s.engines.iter().any(|e| e.name == name && e.streams == 1),
    )
    .await;
    let (_, o) = get("/orchestrator/status").await;
    assert_eq!(o["capacity"]["used"], 1);
    assert_eq!(o["streams"]["active"], 1);

    let (status, r) = send(
        &app,
        "POST",
        "/events/stream_ended",
        &auth,
        Some(json!({"stream_id": "mem-1"}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(
        (status, r["updated"].clone()),
        (StatusCode::OK, json!(true))
    );
    tree.wait("the count back to zero", Duration::from_secs(30), |s| {
        s.engines.iter().all(|e| e.streams == 0)
    })
    .await;

    let (status, v) = get("/vpn/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["mode"], "single");
    assert_eq!(v["vpn1"]["container_name"], VPN1);
    assert_eq!(v["vpn1"]["connected"], true);
    assert_eq!(v["vpn1"]["forwarded_port"], 55747);
    assert_eq!(v["emergency_mode"]["active"], false);

    let (status, h) = get("/health/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["engines"]["healthy"], 2);

    // Whatever the Supervisor answers, provisioning answers 200 or the upstream 503 detail.
    let (status, p) = send(
        &app,
        "POST",
        "/provision/acestream",
        &auth,
        Some(br#"{"labels":{},"env":{},"host_port":null}"#.to_vec()),
    )
    .await;
    match status {
        StatusCode::OK => assert!(p["container_name"].is_string()),
        StatusCode::SERVICE_UNAVAILABLE => assert!(
            [
                "vpn_disconnected",
                "circuit_breaker",
                "max_capacity",
                "general_error"
            ]
            .contains(&p["detail"]["code"].as_str().unwrap_or_default()),
            "{p}"
        ),
        other => panic!("provision answered {other}: {p}"),
    }
    tree.stop().await;
}
