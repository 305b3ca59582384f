//! Contract test: the exact JSON bodies upstream clients (Acexy and the earlier orchestrator's
//! proxies) send, in the order they send them, and every response field those clients read,
//! with the JSON types their decoders need (Go decodes `streams` as `[]string`, times as RFC 3339,
//! ports as integers).

mod common;

use std::collections::BTreeMap;

use acevisor::core::model::EnginePhase;
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

fn assert_fields(what: &str, v: &Value, fields: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    for f in fields {
        assert!(obj.contains_key(*f), "{what}: missing field {f:?} in {v}");
    }
}

fn assert_stream_state(what: &str, s: &Value) {
    assert_fields(
        what,
        s,
        &[
            "id",
            "key_type",
            "key",
            "container_id",
            "playback_session_id",
            "stat_url",
            "command_url",
            "is_live",
            "started_at",
            "ended_at",
            "status",
            "peers",
            "speed_down",
            "speed_up",
            "downloaded",
            "uploaded",
        ],
    );
    assert!(s["is_live"].is_boolean(), "{what}: is_live must be a bool");
    assert!(is_rfc3339(&s["started_at"]), "{what}: started_at");
    assert!(
        s["ended_at"].is_null() || is_rfc3339(&s["ended_at"]),
        "{what}: ended_at"
    );
    for f in [
        "id",
        "key",
        "container_id",
        "playback_session_id",
        "stat_url",
        "command_url",
    ] {
        assert!(s[f].is_string(), "{what}: {f} must be a string");
    }
}

#[tokio::test]
async fn acexy_flow_with_upstream_bodies() {
    let h = Harness::new(snapshot(vec![
        engine(1, EnginePhase::Ready, "172.18.0.2", 19000, true),
        engine(2, EnginePhase::Ready, "172.18.0.2", 19004, false),
    ]))
    .await;
    let mut counts = h.counts.clone();

    // 1. GET /engines: the fields Acexy's engineState decodes.
    let (status, engines) = h.get("/engines").await;
    assert_eq!(status, StatusCode::OK);
    let list = engines.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for e in list {
        assert_fields(
            "engine",
            e,
            &[
                "container_id",
                "container_name",
                "host",
                "port",
                "labels",
                "forwarded",
                "first_seen",
                "last_seen",
                "streams",
                "health_status",
                "last_health_check",
                "last_stream_usage",
                "vpn_container",
            ],
        );
        assert!(e["container_id"].is_string() && e["host"].is_string());
        assert!(e["port"].is_u64() && e["forwarded"].is_boolean());
        assert!(e["labels"].is_object());
        assert!(e["streams"].is_array(), "streams must be a list of ids");
        assert!(is_rfc3339(&e["first_seen"]) && is_rfc3339(&e["last_seen"]));
        assert!(e["last_health_check"].is_null() || is_rfc3339(&e["last_health_check"]));
        assert!(
            ["healthy", "unhealthy", "unknown"].contains(&e["health_status"].as_str().unwrap())
        );
    }
    let chosen = &list[1];
    let (host, port) = (
        chosen["host"].as_str().unwrap().to_string(),
        chosen["port"].as_u64().unwrap() as u16,
    );
    let engine_id = chosen["container_id"].as_str().unwrap().to_string();

    // 2. POST /events/stream_started exactly as Acexy's EmitStarted builds it: its *own*
    //    container id, the engine address, is_live as 1, and labels.stream_id.
    let started = json!({
        "container_id": "a1b2c3d4e5f6",
        "engine": {"host": host, "port": port},
        "stream": {"key_type": "content_id", "key": "94c2fd8fb9bc8f2fc71a2cbe9d4b866f227a0209"},
        "session": {
            "playback_session_id": "b4d3f0e1c2a3",
            "stat_url": format!("http://{host}:{port}/ace/stat/b4d3f0e1c2a3"),
            "command_url": format!("http://{host}:{port}/ace/cmd/b4d3f0e1c2a3"),
            "is_live": 1
        },
        "labels": {"stream_id": "94c2fd8f-1700000000"}
    });
    let (status, s) = h.post("/events/stream_started", &started).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_stream_state("stream_started answer", &s);
    assert_eq!(s["id"], "94c2fd8f-1700000000");
    assert_eq!(s["container_id"], engine_id.as_str());
    assert_eq!(s["key_type"], "content_id");
    assert_eq!(s["is_live"], true);
    assert_eq!(s["status"], "started");
    counts_become(
        &mut counts,
        BTreeMap::from([("000000000002abcdef0123456789".into(), 1)]),
    )
    .await;

    // 3. GET /streams?container_id=<engine>&status=started, as Acexy's GetEngineStreams.
    let (status, streams) = h
        .get(&format!("/streams?container_id={engine_id}&status=started"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(streams.as_array().unwrap().len(), 1);
    assert_stream_state("listed stream", &streams[0]);

    // /engines now shows the stream id on that engine.
    let (_, engines) = h.get("/engines").await;
    assert_eq!(engines[1]["streams"], json!(["94c2fd8f-1700000000"]));
    assert!(is_rfc3339(&engines[1]["last_stream_usage"]));

    // 4. POST /events/stream_ended as Acexy's EmitEnded: stream_id, its own container id, reason.
    let ended = json!({"container_id": "a1b2c3d4e5f6", "stream_id": "94c2fd8f-1700000000", "reason": "client_disconnected"});
    let (status, r) = h.post("/events/stream_ended", &ended).await;
    assert_eq!(status, StatusCode::OK);
    assert_fields("stream_ended answer", &r, &["updated", "stream"]);
    assert_eq!(r["updated"], true);
    assert_stream_state("ended stream", &r["stream"]);
    assert_eq!(r["stream"]["status"], "ended");
    assert!(is_rfc3339(&r["stream"]["ended_at"]));
    counts_become(&mut counts, BTreeMap::new()).await;

    // Idempotent: again, and by stream_id only (how Acexy ends when it has no container id).
    let (status, again) = h
        .post(
            "/events/stream_ended",
            &json!({"stream_id": "94c2fd8f-1700000000"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["updated"], false);
    let (_, unknown) = h
        .post(
            "/events/stream_ended",
            &json!({"stream_id": "never-started"}),
        )
        .await;
    assert_eq!(unknown, json!({"updated": false, "stream": null}));

    // 5. The stats route answers a list of snapshots.
    let (status, stats) = h
        .get("/streams/94c2fd8f-1700000000/stats?since=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(stats.is_array());
}

#[tokio::test]
async fn stream_started_without_stream_id_label_and_ended_by_container() {
    let h = Harness::new(snapshot(vec![engine(
        1,
        EnginePhase::Ready,
        "172.18.0.2",
        19000,
        true,
    )]))
    .await;
    // The earlier orchestrator's own proxy: no labels, the engine's container id, is_live 0.
    let body = json!({
        "container_id": "000000000001abcdef0123456789",
        "engine": {"host": "172.18.0.2", "port": 19000},
        "stream": {"key_type": "infohash", "key": "ab12"},
        "session": {"playback_session_id": "p1", "stat_url": "http://172.18.0.2:19000/ace/stat/p1", "command_url": "http://172.18.0.2:19000/ace/cmd/p1", "is_live": 0},
        "labels": {}
    });
    let (status, s) = h.post("/events/stream_started", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["id"], "ab12|p1");
    assert_eq!(s["is_live"], false);
    let (status, r) = h
        .post(
            "/events/stream_ended",
            &json!({"container_id": "000000000001abcdef0123456789"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["updated"], true);
    assert_eq!(r["stream"]["id"], "ab12|p1");
}

#[tokio::test]
async fn provision_contract_success_and_blocked() {
    let h = Harness::new(snapshot(vec![])).await;
    let body = json!({"labels": {}, "env": {}, "host_port": null});
    h.set_provision(Ok(engine(1, EnginePhase::Ready, "172.18.0.2", 19000, true)));
    let (status, p) = h.post("/provision/acestream", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_fields(
        "provision answer",
        &p,
        &[
            "container_id",
            "container_name",
            "host_http_port",
            "container_http_port",
            "container_https_port",
        ],
    );
    for f in [
        "host_http_port",
        "container_http_port",
        "container_https_port",
    ] {
        assert!(p[f].is_u64(), "{f} must be an integer");
    }
    // Acexy also sends `image` and omits `host_port`.
    let (status, _) = h
        .post(
            "/provision/acestream",
            &json!({"image": "ghcr.io/x/acestream", "labels": {"a": "b"}, "env": {"K": "V"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    h.set_provision(Err(acevisor::actors::messages::ProvisionError::MaxCapacity));
    let (status, blocked) = h.post("/provision/acestream", &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_fields(
        "503 detail",
        &blocked["detail"],
        &[
            "error",
            "code",
            "message",
            "recovery_eta_seconds",
            "can_retry",
            "should_wait",
        ],
    );
}

#[tokio::test]
async fn status_routes_contract() {
    let h = Harness::new(snapshot(vec![engine(
        1,
        EnginePhase::Ready,
        "172.18.0.2",
        19000,
        true,
    )]))
    .await;
    // Acexy's orchestratorStatus.
    let (status, o) = h.get("/orchestrator/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_fields(
        "orchestrator",
        &o,
        &["status", "vpn", "provisioning", "capacity"],
    );
    assert!(["healthy", "degraded", "unavailable"].contains(&o["status"].as_str().unwrap()));
    assert!(o["vpn"]["connected"].is_boolean());
    assert_fields(
        "provisioning",
        &o["provisioning"],
        &["can_provision", "blocked_reason", "blocked_reason_details"],
    );
    assert!(o["provisioning"]["can_provision"].is_boolean());
    for f in ["total", "used", "available"] {
        assert!(o["capacity"][f].is_u64(), "capacity.{f}");
    }
    // /vpn/status.
    let (_, v) = h.get("/vpn/status").await;
    assert_fields(
        "vpn",
        &v,
        &["mode", "vpns", "vpn1", "vpn2", "emergency_mode"],
    );
    // The earlier orchestrator's top-level summary, which its panel reads.
    assert_fields(
        "vpn top level",
        &v,
        &[
            "enabled",
            "status",
            "container_name",
            "container",
            "health",
            "connected",
            "forwarded_port",
            "last_check",
            "last_check_at",
        ],
    );
    assert_eq!(v["status"], "running");
    assert_eq!(v["health"], "healthy");
    assert_eq!(v["container"], "gluetun");
    assert!(is_rfc3339(&v["last_check_at"]));
    assert_fields(
        "emergency_mode",
        &v["emergency_mode"],
        &[
            "active",
            "failed_vpn",
            "healthy_vpn",
            "duration_seconds",
            "entered_at",
        ],
    );
    assert_fields(
        "vpn1",
        &v["vpn1"],
        &[
            "container_name",
            "status",
            "health",
            "connected",
            "forwarded_port",
            "last_check_at",
        ],
    );
    // Every error is {"detail": ...}.
    let (_, e) = h.get("/engines/none").await;
    assert_fields("404", &e, &["detail"]);
}
