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

/// The API over a running tree, with its own Streams actor (no collector rounds: anything that
/// ends a stream here is not a stats tick).
/// The tree over `memrt` with `cfg` once `n` engines are ready, and its API.
async fn ready_api(
    memrt: &MemoryRuntime,
    cfg: &acevisor::config::Config,
    n: usize,
) -> (Tree, axum::Router) {
    let tree = Tree::start(memrt, cfg.clone()).await;
    tree.wait(
        &format!("{n} ready engines"),
        Duration::from_secs(120),
        |s| s.ready_count() == n,
    )
    .await;
    let app = api_over(&tree, cfg).await;
    (tree, app)
}

async fn api_over(tree: &Tree, cfg: &acevisor::config::Config) -> axum::Router {
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
    router(ApiContext::from_config(
        cfg,
        tree.sup.clone(),
        streams,
        Some(KEY.into()),
    ))
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let bearer = format!("Bearer {KEY}");
    send(
        app,
        method,
        path,
        &[("authorization", bearer.as_str())],
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

/// `/orchestrator/status`'s `can_provision` (and its blocked code), then what provisioning
/// answers right after; they must agree. Returns the code (`None` = provisioned).
async fn status_then_provision(app: &axum::Router, state: &str) -> Option<String> {
    let (_, o) = call(app, "GET", "/orchestrator/status", None).await;
    let p = &o["provisioning"];
    let predicted = p["blocked_reason_details"]["code"]
        .as_str()
        .map(str::to_string);
    assert_eq!(
        p["can_provision"].as_bool(),
        Some(predicted.is_none()),
        "{state}: {o}"
    );
    let (status, answer) = call(app, "POST", "/provision/acestream", Some(json!({}))).await;
    let answered = match status {
        StatusCode::OK => None,
        StatusCode::SERVICE_UNAVAILABLE => answer["detail"]["code"].as_str().map(str::to_string),
        other => panic!("{state}: provisioning answered {other}: {answer}"),
    };
    assert_eq!(
        predicted, answered,
        "{state}: /orchestrator/status predicted {predicted:?}, provisioning answered {answered:?}"
    );
    answered
}

#[tokio::test(start_paused = true)]
async fn can_provision_agrees_with_provisioning_in_every_state() {
    let memrt = MemoryRuntime::new();
    memrt.add_vpn(VPN1, 55747, Some(DockerHealth::Healthy));
    let mut cfg = config("single", 2, "");
    cfg.engines.max_replicas = 3;
    let (tree, app) = ready_api(&memrt, &cfg, 2).await;

    // Below max_replicas: taken.
    assert_eq!(status_then_provision(&app, "below max").await, None);
    // At max_replicas, with idle engines: refused, and the status says so.
    assert_eq!(
        status_then_provision(&app, "at max").await.as_deref(),
        Some("max_capacity")
    );

    // Creation keeps failing: the breaker opens.
    let three = tree.snap().await;
    let newest = three.engines.iter().max_by_key(|e| e.ordinal).unwrap();
    let (status, _) = call(
        &app,
        "DELETE",
        &format!("/containers/{}", newest.name),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tree.wait("back to two engines", Duration::from_secs(60), |s| {
        s.engines.len() == 2
    })
    .await;
    memrt.fail_next("create", 1_000);
    let (status, _) = call(&app, "POST", "/scale/3", None).await;
    assert_eq!(status, StatusCode::OK);
    tree.wait("breaker open", Duration::from_secs(300), |s| {
        matches!(s.breaker, acevisor::core::breaker::BreakerState::Open { until } if until > tokio::time::Instant::now() + Duration::from_secs(1))
    })
    .await;
    assert_eq!(
        status_then_provision(&app, "breaker open").await.as_deref(),
        Some("circuit_breaker")
    );

    // An operator resets it: provisioning works again, and the status knew it first.
    memrt.fail_next("create", 0);
    let (status, r) = call(&app, "POST", "/health/circuit-breaker/reset", None).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["message"], "Circuit breaker all reset successfully");
    status_then_provision(&app, "after the reset").await;
    tree.wait("three engines again", Duration::from_secs(120), |s| {
        s.engines.len() == 3
    })
    .await;
    let (_, o) = call(&app, "GET", "/orchestrator/status", None).await;
    assert_eq!(o["provisioning"]["circuit_breaker_state"], "closed");

    // Outage: the only VPN is down.
    memrt.kill(VPN1);
    tree.wait("VPN failed", Duration::from_secs(60), |s| {
        s.vpns[0].lane.failed
    })
    .await;
    assert_eq!(
        status_then_provision(&app, "outage").await.as_deref(),
        Some("vpn_disconnected")
    );
    // No connected VPN can tell its public IP.
    let (status, body) = call(&app, "GET", "/vpn/publicip", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("public IP"));
    tree.stop().await;
}

#[tokio::test(start_paused = true)]
async fn provisioning_answers_before_the_engine_is_ready_and_it_joins_engines_later() {
    let memrt = MemoryRuntime::new();
    memrt.add_vpn(VPN1, 55747, Some(DockerHealth::Healthy));
    let cfg = config("single", 1, "");
    let (tree, app) = ready_api(&memrt, &cfg, 1).await;
    memrt.new_engines_hung(true);
    let body = json!({"labels": {}, "env": {}, "host_port": null});
    let (status, p) = call(&app, "POST", "/provision/acestream", Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    for f in [
        "container_id",
        "container_name",
        "host_http_port",
        "container_http_port",
        "container_https_port",
    ] {
        assert!(!p[f].is_null(), "{f} missing in {p}");
    }
    assert_eq!(p["state"], "starting");
    assert!(!p["container_id"].as_str().unwrap().is_empty());
    let name = p["container_name"].as_str().unwrap().to_string();
    // Not in /engines until its API answers.
    let (_, engines) = call(&app, "GET", "/engines", None).await;
    assert!(
        engines
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["container_name"] != name.as_str()),
        "{engines}"
    );
    memrt.unhang(&name);
    tree.wait("the new engine ready", Duration::from_secs(60), |s| {
        s.engines
            .iter()
            .any(|e| e.name == name && e.phase == EnginePhase::Ready)
    })
    .await;
    let (_, engines) = call(&app, "GET", "/engines", None).await;
    assert!(
        engines
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["container_name"] == name.as_str()),
        "{engines}"
    );
    // ?wait=ready answers with a ready engine.
    memrt.new_engines_hung(false);
    let (status, p) = call(
        &app,
        "POST",
        "/provision/acestream?wait=ready",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["state"], "ready");
    // The generic route provisions the same way, in the generic shape.
    let (status, g) = call(&app, "POST", "/provision", Some(json!({"image": "x"}))).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert!(g["container_id"].is_string() && g["container_name"].is_string());
    tree.stop().await;
}

#[tokio::test(start_paused = true)]
async fn operator_routes_and_stream_end_on_removal_over_the_real_tree() {
    let memrt = MemoryRuntime::new();
    memrt.add_vpn(VPN1, 55747, Some(DockerHealth::Healthy));
    let cfg = config("single", 2, "");
    let (tree, app) = ready_api(&memrt, &cfg, 2).await;

    // /engines shows the container's real labels: managed = the instance id.
    let (_, engines) = call(&app, "GET", "/engines", None).await;
    let fwd = engines
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["forwarded"] == true)
        .unwrap()
        .clone();
    assert_eq!(fwd["labels"]["acevisor.managed"], "memtest", "{fwd}");
    let name = fwd["container_name"].as_str().unwrap().to_string();
    let id = fwd["container_id"].as_str().unwrap().to_string();

    // GET /containers/{id}: by name or ID; unknown is a 404.
    let (status, c) = call(&app, "GET", &format!("/containers/{name}"), None).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["name"], name.as_str());
    assert_eq!(c["status"], "running");
    assert_eq!(c["labels"]["acevisor.managed"], "memtest");
    for f in ["image", "created", "ports"] {
        assert!(c.get(f).is_some(), "{f} missing in {c}");
    }
    let (status, _) = call(&app, "GET", &format!("/containers/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "GET", "/containers/not-ours", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // GET /by-label.
    let (status, found) = call(
        &app,
        "GET",
        "/by-label?key=acevisor.forwarded&value=true",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["name"], name.as_str());
    let (_, all) = call(
        &app,
        "GET",
        "/by-label?key=acevisor.managed&value=memtest",
        None,
    )
    .await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (status, _) = call(&app, "GET", "/by-label?key=acevisor.role", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // /vpn/publicip and /vpn/status's top-level summary.
    let (status, ip) = call(&app, "GET", "/vpn/publicip", None).await;
    assert_eq!(status, StatusCode::OK, "{ip}");
    assert_eq!(ip["public_ip"], "203.0.113.7");
    let (_, v) = call(&app, "GET", "/vpn/status", None).await;
    assert_eq!(v["status"], "running");
    assert_eq!(v["health"], "healthy");
    assert_eq!(v["container_name"], VPN1);
    assert_eq!(v["container"], VPN1);
    assert!(common::is_rfc3339(&v["last_check"]));
    assert_eq!(v["vpn1"]["container_name"], VPN1);

    // A stream on the forwarded engine; DELETE /containers/{id} ends it at once (this API's
    // Streams actor runs no stats rounds), and /streams for the gone engine is a 404.
    let body = started_body(
        fwd["host"].as_str().unwrap(),
        fwd["port"].as_u64().unwrap() as u16,
        "on-deleted",
        "http://127.0.0.1:9/stat",
    );
    let (status, _) = call(&app, "POST", "/events/stream_started", Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, d) = call(&app, "DELETE", &format!("/containers/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["deleted"], id.as_str());
    let ended = async {
        loop {
            let (_, s) = call(&app, "GET", "/streams?status=ended", None).await;
            if s.as_array().is_some_and(|a| !a.is_empty()) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the stream ended with its engine's removal");
    assert_eq!(ended[0]["id"], "on-deleted");
    assert_eq!(ended[0]["end_reason"], "engine_gone");
    tree.wait("the deleted engine gone", Duration::from_secs(60), |s| {
        s.engines
            .iter()
            .all(|e| e.container_id.as_deref() != Some(id.as_str()))
    })
    .await;
    let (status, _) = call(&app, "GET", &format!("/streams?container_id={id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "DELETE", &format!("/containers/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // POST /scale/{demand}: up to the demand now; POST /gc answers what it removes.
    let (status, sc) = call(&app, "POST", "/scale/4", None).await;
    assert_eq!(status, StatusCode::OK, "{sc}");
    assert_eq!(sc["scaled_to"], 4);
    assert_eq!(sc["target"], 4);
    tree.wait("four engines", Duration::from_secs(120), |s| {
        s.ready_count() == 4
    })
    .await;
    let (status, gc) = call(&app, "POST", "/gc", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gc["status"], "ok");
    let (status, _) = call(&app, "POST", "/scale/many", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    tree.stop().await;
}

#[tokio::test(start_paused = true)]
async fn streams_end_when_a_failed_vpn_takes_their_engine() {
    let memrt = MemoryRuntime::new();
    tree::two_vpns(&memrt, 55747, 34817);
    let cfg = config("redundant", 2, "");
    let (tree, app) = ready_api(&memrt, &cfg, 2).await;
    let s = tree.snap().await;
    let on_vpn2 = s.engines_on(tree::VPN2)[0].clone();
    let body = started_body(
        on_vpn2.host.as_deref().unwrap(),
        on_vpn2.http_port,
        "on-vpn2",
        "http://127.0.0.1:9/stat",
    );
    let (status, _) = call(&app, "POST", "/events/stream_started", Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    // VPN 2 dies: acevisor removes its engine (emergency mode), and the stream ends with it
    // (this API's Streams actor runs no stats rounds).
    memrt.kill(tree::VPN2);
    tree.wait("emergency", Duration::from_secs(60), |s| {
        s.engines
            .iter()
            .all(|e| e.name != on_vpn2.name || e.phase == EnginePhase::Removing)
    })
    .await;
    let ended = async {
        loop {
            let (_, s) = call(&app, "GET", "/streams?status=ended", None).await;
            if s.as_array().is_some_and(|a| !a.is_empty()) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the stream ended with its engine's removal");
    assert_eq!(ended[0]["id"], "on-vpn2");
    assert_eq!(ended[0]["end_reason"], "engine_gone");
    tree.stop().await;
}
