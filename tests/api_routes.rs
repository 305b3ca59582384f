//! Every route through the real router (axum + `oneshot`), against a fake Supervisor with canned
//! snapshots and a real Streams actor: shapes, ordering, auth, provisioning answers, timeouts,
//! and the bad-input table.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use acevisor::actors::messages::ProvisionError;
use acevisor::core::emergency::EmergencyState;
use acevisor::core::intensity::SlotReport;
use acevisor::core::model::{EnginePhase, Readiness};
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};
use tokio::time::Instant;

fn pool() -> acevisor::actors::messages::SupervisorSnapshot {
    let mut busy = engine(2, EnginePhase::Ready, "172.18.0.2", 19008, false);
    busy.streams = 1;
    snapshot(vec![
        engine(3, EnginePhase::Ready, "172.18.0.2", 19004, false),
        busy,
        engine(1, EnginePhase::Ready, "172.18.0.2", 19012, true),
        engine(
            4,
            EnginePhase::Unhealthy {
                since: Instant::now(),
            },
            "172.18.0.2",
            19000,
            false,
        ),
        engine(5, EnginePhase::Starting, "172.18.0.2", 19016, false),
        engine(6, EnginePhase::Creating, "172.18.0.2", 19020, false),
    ])
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["container_name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn engines_lists_only_ready_engines_sorted_by_port() {
    let h = Harness::new(pool()).await;
    let (status, body) = h.get("/engines").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        names(&body),
        vec!["acestream-4", "acestream-3", "acestream-2", "acestream-1"]
    );
    let e = &body[3];
    assert_eq!(e["host"], "172.18.0.2");
    assert_eq!(e["port"], 19012);
    assert_eq!(e["forwarded"], true);
    assert_eq!(e["forwarded_port"], 55747);
    assert_eq!(e["p2p_port"], 55747);
    assert_eq!(e["ordinal"], 1);
    assert_eq!(e["state"], "ready");
    assert_eq!(e["health_status"], "healthy");
    assert_eq!(e["vpn_container"], "gluetun");
    assert_eq!(e["container_id"], "000000000001abcdef0123456789");
    assert_eq!(e["labels"]["acestream.forwarded"], "true");
    assert_eq!(e["labels"]["acestream.vpn_container"], "gluetun");
    assert_eq!(e["labels"]["host.http_port"], "19012");
    assert_eq!(e["labels"]["acevisor.ordinal"], "1");
    assert_eq!(e["streams"], json!([]));
    assert!(is_rfc3339(&e["first_seen"]) && is_rfc3339(&e["last_seen"]));
    assert_eq!(body[0]["health_status"], "unhealthy");
    assert_eq!(body[0]["state"], "unhealthy");
}

#[tokio::test]
async fn prefer_free_puts_healthy_forwarded_then_least_loaded_first() {
    let h = Harness::new(pool()).await;
    // Load acestream-3 with a real stream so the Streams actor's counts drive the order.
    let (status, _) = h
        .post(
            "/events/stream_started",
            &started_body("172.18.0.2", 19004, "s-a", "http://127.0.0.1:9/stat"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.get("/engines?prefer=free").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        names(&body),
        vec!["acestream-1", "acestream-2", "acestream-3", "acestream-4"]
    );
    assert_eq!(body[2]["streams"], json!(["s-a"]));
    assert_eq!(body[2]["active_streams"], 1);
    assert!(is_rfc3339(&body[2]["last_stream_usage"]));
}

#[tokio::test]
async fn engine_detail_by_name_or_id_with_its_streams() {
    let h = Harness::new(pool()).await;
    h.post(
        "/events/stream_started",
        &started_body("172.18.0.2", 19004, "s-1", "http://127.0.0.1:9/stat"),
    )
    .await;
    let (status, body) = h.get("/engines/acestream-3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["engine"]["container_name"], "acestream-3");
    assert_eq!(body["streams"][0]["id"], "s-1");
    let (status, by_short_id) = h.get("/engines/000000000003").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_short_id["engine"]["container_name"], "acestream-3");
    // Engines that are not ready yet are still found by id (the operator's view).
    let (status, starting) = h.get("/engines/acestream-5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(starting["engine"]["state"], "starting");
    let (status, body) = h.get("/engines/acestream-99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn streams_filters_and_stats_of_unknown_and_known_streams() {
    let h = Harness::new(pool()).await;
    for (id, port) in [("a", 19004), ("b", 19008)] {
        let (s, _) = h
            .post(
                "/events/stream_started",
                &started_body("172.18.0.2", port, id, "http://127.0.0.1:9/stat"),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    h.post("/events/stream_ended", &json!({"stream_id": "a"}))
        .await;
    let (_, all) = h.get("/streams").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, started) = h.get("/streams?status=started").await;
    assert_eq!(started[0]["id"], "b");
    let (_, ended) = h.get("/streams?status=ended").await;
    assert_eq!(ended[0]["id"], "a");
    assert!(is_rfc3339(&ended[0]["ended_at"]));
    let (_, on_engine) = h.get("/streams?container_id=acestream-2").await;
    assert_eq!(on_engine[0]["id"], "b");
    let (_, by_id) = h
        .get("/streams?container_id=000000000002abcdef0123456789&status=started")
        .await;
    assert_eq!(by_id[0]["id"], "b");
    let (status, stats) = h.get("/streams/b/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats, json!([]));
    let (status, _) = h
        .get("/streams/b/stats?since=2026-01-01T00:00:00%2B01:00")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn stream_ids_with_reserved_characters_work_percent_encoded() {
    let h = Harness::new(pool()).await;
    let mut body = started_body("172.18.0.2", 19004, "", "http://127.0.0.1:9/stat");
    body["labels"] = json!({});
    let (status, s) = h.post("/events/stream_started", &body).await;
    assert_eq!(status, StatusCode::OK);
    let id = s["id"].as_str().unwrap();
    assert_eq!(id, "0123456789abcdef0123456789abcdef01234567|session-");
    let (status, _) = h
        .get("/streams/0123456789abcdef0123456789abcdef01234567%7Csession-/stats")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn provision_answers_the_engine_or_the_upstream_503_detail() {
    let h = Harness::new(pool()).await;
    let mut new = engine(7, EnginePhase::Ready, "172.18.0.2", 19024, false);
    new.p2p_port = 40007;
    h.set_provision(Ok(new));
    let body = json!({"labels": {}, "env": {}, "host_port": null});
    let (status, ok) = h.post("/provision/acestream", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok["container_name"], "acestream-7");
    assert_eq!(ok["container_id"], "000000000007abcdef0123456789");
    assert_eq!(ok["host_http_port"], 19024);
    assert_eq!(ok["container_http_port"], 19024);
    assert_eq!(ok["container_https_port"], 19025);
    assert_eq!(ok["host"], "172.18.0.2");

    let cases = [
        (
            ProvisionError::VpnDisconnected {
                recovery_eta_seconds: Some(42),
            },
            "vpn_disconnected",
            json!(42),
            true,
        ),
        (
            ProvisionError::CircuitBreaker {
                retry_after_seconds: 90,
            },
            "circuit_breaker",
            json!(90),
            false,
        ),
        (
            ProvisionError::MaxCapacity,
            "max_capacity",
            json!(null),
            true,
        ),
        (
            ProvisionError::VpnDisconnected {
                recovery_eta_seconds: None,
            },
            "vpn_disconnected",
            json!(null),
            true,
        ),
        (
            ProvisionError::TimedOut { waited_seconds: 25 },
            "provisioning_timeout",
            json!(null),
            true,
        ),
    ];
    for (err, code, eta, can_retry) in cases {
        h.set_provision(Err(err));
        let (status, body) = h.post("/provision/acestream", &body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{code}");
        let d = &body["detail"];
        assert_eq!(d["code"], code);
        assert_eq!(d["error"], "provisioning_blocked");
        assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(d["recovery_eta_seconds"], eta);
        assert_eq!(d["can_retry"], can_retry);
        assert_eq!(d["should_wait"], true);
    }
    // An empty body is the same request with no options.
    h.set_provision(Err(ProvisionError::MaxCapacity));
    let auth = format!("Bearer {KEY}");
    let (status, _) = send(
        &h.app,
        "POST",
        "/provision/acestream",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn vpn_status_shape_in_normal_and_emergency_mode() {
    let h = Harness::new(pool()).await;
    let (status, body) = h.get("/vpn/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["mode"], "single");
    assert_eq!(body["vpn1"]["container_name"], "gluetun");
    assert_eq!(body["vpn1"]["status"], "up");
    assert_eq!(body["vpn1"]["health"], "healthy");
    assert_eq!(body["vpn1"]["connected"], true);
    assert_eq!(body["vpn1"]["forwarded_port"], 55747);
    assert!(is_rfc3339(&body["vpn1"]["last_check_at"]));
    assert_eq!(body["vpn2"], Value::Null);
    assert_eq!(body["vpns"].as_array().unwrap().len(), 1);
    assert_eq!(body["emergency_mode"]["active"], false);
    assert_eq!(body["emergency_mode"]["failed_vpn"], Value::Null);

    h.set_snapshot(|s| {
        s.vpns = vec![
            vpn("gluetun", false, None),
            vpn("gluetun_2", true, Some(34817)),
        ];
        s.emergency = EmergencyState::Emergency {
            failed: vec!["gluetun".into()],
            healthy: vec!["gluetun_2".into()],
            since: Instant::now() - Duration::from_secs(76),
        };
    });
    let (_, body) = h.get("/vpn/status").await;
    let em = &body["emergency_mode"];
    assert_eq!(em["active"], true);
    assert_eq!(em["failed_vpn"], "gluetun");
    assert_eq!(em["healthy_vpn"], "gluetun_2");
    assert!(em["duration_seconds"].as_u64().unwrap() >= 76);
    assert!(is_rfc3339(&em["entered_at"]));
    assert_eq!(body["vpn2"]["forwarded_port"], 34817);
    assert_eq!(body["vpn2"]["forwarded_ports"], json!([34817]));
    assert_eq!(body["vpn1"]["connected"], false);
    assert_eq!(body["vpn1"]["forwarded_ports"], json!([]));

    // A VPN forwarding several ports: every port, lowest first; the single-port fields keep the
    // lowest.
    h.set_snapshot(|s| {
        let mut v = vpn("gluetun", true, None);
        v.lane.readiness = Readiness::up(acevisor::core::port_set::PortSet::new([9876, 5678]));
        s.vpns = vec![v];
        s.emergency = EmergencyState::Normal;
    });
    let (_, body) = h.get("/vpn/status").await;
    assert_eq!(body["vpn1"]["forwarded_port"], 5678);
    assert_eq!(body["vpn1"]["forwarded_ports"], json!([5678, 9876]));
    assert_eq!(body["forwarded_port"], 5678);
    assert_eq!(body["forwarded_ports"], json!([5678, 9876]));
    let (_, body) = h.get("/orchestrator/status").await;
    assert_eq!(
        body["vpn"]["vpns"][0]["forwarded_ports"],
        json!([5678, 9876])
    );
    let (_, state) = h.get("/ui/state").await;
    assert_eq!(state["vpns"][0]["forwarded_ports"], json!([5678, 9876]));
    assert_eq!(state["vpns"][0]["forwarded_port"], 5678);
}

#[tokio::test]
async fn orchestrator_status_says_whether_provisioning_can_work() {
    let h = Harness::new(pool()).await;
    let (status, body) = h.get("/orchestrator/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded"); // acestream-4 is unhealthy
    assert_eq!(body["engines"]["running"], 4);
    assert_eq!(body["engines"]["unhealthy"], 1);
    assert_eq!(body["capacity"]["total"], 4);
    assert_eq!(body["capacity"]["used"], 1);
    assert_eq!(body["capacity"]["available"], 3);
    assert_eq!(body["vpn"]["connected"], true);
    assert_eq!(body["provisioning"]["can_provision"], true);
    assert_eq!(body["provisioning"]["blocked_reason"], Value::Null);

    h.set_snapshot(|s| {
        s.vpns = vec![vpn("gluetun", false, None)];
        s.emergency = EmergencyState::Outage {
            failed: vec!["gluetun".into()],
            since: Instant::now(),
        };
        // The Supervisor's verdict is what the route reports.
        s.provision_block = Some(ProvisionError::VpnDisconnected {
            recovery_eta_seconds: None,
        });
    });
    let (_, body) = h.get("/orchestrator/status").await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["vpn"]["connected"], false);
    assert_eq!(body["provisioning"]["can_provision"], false);
    assert_eq!(
        body["provisioning"]["blocked_reason_details"]["code"],
        "vpn_disconnected"
    );
    assert!(body["provisioning"]["blocked_reason"].is_string());
}

#[tokio::test]
async fn health_status_shows_intensity_and_holds() {
    let h = Harness::new(pool()).await;
    let later = Instant::now() + Duration::from_secs(120);
    h.set_snapshot(|s| {
        s.intensity = vec![
            SlotReport {
                slot: "acestream-2".into(),
                restarts_in_window: 3,
                backing_off_until: Some(later),
            },
            SlotReport {
                slot: "acestream-3".into(),
                restarts_in_window: 1,
                backing_off_until: None,
            },
        ];
        s.holds = vec![("gluetun".into(), later)];
    });
    let (status, body) = h.get("/health/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["engines"]["healthy"], 3);
    assert_eq!(body["engines"]["unhealthy"], 1);
    let slots = body["restart_intensity"]["slots"].as_array().unwrap();
    assert_eq!(slots[0]["slot"], "acestream-2");
    assert_eq!(slots[0]["restarts_in_window"], 3);
    assert_eq!(slots[0]["backing_off"], true);
    assert!(is_rfc3339(&slots[0]["backing_off_until"]));
    assert_eq!(slots[1]["backing_off"], false);
    assert_eq!(body["restart_intensity"]["backing_off"], 1);
    assert_eq!(body["creation_holds"][0]["vpn"], "gluetun");
    assert_eq!(body["circuit_breaker"]["state"], "closed");
}

#[tokio::test]
async fn livez_and_readyz() {
    let h = Harness::new(pool()).await;
    assert_eq!(h.get("/livez").await.0, StatusCode::OK);
    let (status, body) = h.get("/readyz").await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );
    h.set_snapshot(|s| s.ready = false);
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["detail"].as_str().unwrap().contains("reconcile"));
    h.set_snapshot(|s| {
        s.ready = true;
        s.docker_error = Some("connection refused".into());
    });
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
}

#[tokio::test]
async fn a_stuck_supervisor_is_a_503_not_a_hang() {
    let mut h = Harness::new(pool()).await;
    h.ctx.call_timeout = Duration::from_millis(100);
    h.ctx.provision_timeout = Duration::from_millis(100);
    h.ctx.create_timeout = Duration::from_millis(100);
    h.app = acevisor::api::router(h.ctx.clone());
    h.set_hang(true);
    let all = async {
        for path in [
            "/engines",
            "/vpn/status",
            "/orchestrator/status",
            "/health/status",
            "/readyz",
        ] {
            let (status, body) = h.get(path).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert!(!body["detail"].is_null(), "{path}: {body}");
        }
        // Provisioning has its own bound and answers the structured detail.
        let (status, body) = h.post("/provision/acestream", &json!({})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["detail"]["can_retry"], true);
        assert_eq!(body["detail"]["error"], "provisioning_unavailable");
        assert!(
            body["detail"]["message"]
                .as_str()
                .unwrap()
                .contains("did not answer")
        );
        // Liveness is the actors answering: a supervisor that does not is not alive.
        let (status, body) = h.get("/livez").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "dead");
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("a request hung");
    h.set_hang(false);
    assert_eq!(h.get("/engines").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_stopped_streams_actor_is_a_503() {
    let h = Harness::new(pool()).await;
    h.streams.stop(None);
    // Stopping is asynchronous; wait until the actor is gone.
    tokio::time::timeout(Duration::from_secs(30), async {
        while h.streams.get_status() != ractor::ActorStatus::Stopped {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let (status, body) = h.get("/streams").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["detail"].as_str().unwrap().contains("not running"));
}

#[tokio::test]
async fn open_api_when_no_key_is_configured() {
    let h = Harness::with(pool(), None, Duration::ZERO).await;
    let (status, _) = send(
        &h.app,
        "POST",
        "/events/stream_ended",
        &[],
        Some(br#"{"stream_id":"x"}"#.to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// The bad-input table: every case answers its documented code with a JSON `detail`, and the
/// router keeps serving afterwards.
#[tokio::test]
async fn bad_input_table() {
    let h = Harness::new(pool()).await;
    let bearer = format!("Bearer {KEY}");
    let good = &[("authorization", bearer.as_str())][..];
    let valid_started = started_body("172.18.0.2", 19004, "ok", "http://127.0.0.1:9/stat");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = valid_started.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    let huge = vec![b' '; 200 * 1024];
    let mut huge_json = b"{\"labels\":{\"x\":\"".to_vec();
    huge_json.extend(std::iter::repeat_n(b'a', 100 * 1024));
    huge_json.extend(b"\"}}");

    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        &str,
        &str,
        &[(&str, &str)],
        Option<Vec<u8>>,
        StatusCode,
    )> = vec![
        (
            "malformed JSON",
            "POST",
            "/events/stream_started",
            good,
            Some(b"{not json".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "truncated JSON",
            "POST",
            "/events/stream_started",
            good,
            Some(b"{\"engine\":".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty body",
            "POST",
            "/events/stream_started",
            good,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "array instead of object",
            "POST",
            "/events/stream_started",
            good,
            Some(b"[]".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "port is a string",
            "POST",
            "/events/stream_started",
            good,
            Some(with(&|v| v["engine"]["port"] = json!("abc"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "port out of range",
            "POST",
            "/events/stream_started",
            good,
            Some(with(&|v| v["engine"]["port"] = json!(70000))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing session",
            "POST",
            "/events/stream_started",
            good,
            Some(with(&|v| {
                v.as_object_mut().unwrap().remove("session");
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown key_type",
            "POST",
            "/events/stream_started",
            good,
            Some(with(&|v| v["stream"]["key_type"] = json!("torrent"))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty key",
            "POST",
            "/events/stream_started",
            good,
            Some(with(&|v| v["stream"]["key"] = json!(""))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "labels not strings",
            "POST",
            "/events/stream_started",
            good,
            Some(with(&|v| v["labels"] = json!({"stream_id": 5}))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown engine",
            "POST",
            "/events/stream_started",
            good,
            Some(with(&|v| {
                v["engine"] = json!({"host": "10.9.9.9", "port": 1})
            })),
            StatusCode::NOT_FOUND,
        ),
        (
            "huge body",
            "POST",
            "/events/stream_started",
            good,
            Some(huge.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "huge JSON",
            "POST",
            "/provision/acestream",
            good,
            Some(huge_json),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "huge body without key",
            "POST",
            "/events/stream_started",
            &[],
            Some(huge),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "stream_id is a number",
            "POST",
            "/events/stream_ended",
            good,
            Some(br#"{"stream_id":5}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ended malformed",
            "POST",
            "/events/stream_ended",
            good,
            Some(b"stream_id=5".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "provision host_port wrong type",
            "POST",
            "/provision/acestream",
            good,
            Some(br#"{"labels":{},"env":{},"host_port":"x"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "provision env not a map",
            "POST",
            "/provision/acestream",
            good,
            Some(br#"{"env":[1]}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "provision malformed",
            "POST",
            "/provision/acestream",
            good,
            Some(b"{".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing key",
            "POST",
            "/events/stream_started",
            &[],
            Some(valid_started.to_string().into_bytes()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "missing key, provision",
            "POST",
            "/provision/acestream",
            &[],
            Some(b"{}".to_vec()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "missing key, ended",
            "POST",
            "/events/stream_ended",
            &[],
            Some(b"{}".to_vec()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "basic auth is no key",
            "POST",
            "/events/stream_ended",
            &[("authorization", "Basic dXNlcjpwYXNz")],
            Some(b"{}".to_vec()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "empty bearer",
            "POST",
            "/events/stream_ended",
            &[("authorization", "Bearer ")],
            Some(b"{}".to_vec()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong bearer",
            "POST",
            "/events/stream_started",
            &[("authorization", "Bearer wrong")],
            Some(valid_started.to_string().into_bytes()),
            StatusCode::FORBIDDEN,
        ),
        (
            "wrong X-API-Key",
            "POST",
            "/provision/acestream",
            &[("X-API-Key", "wrong")],
            Some(b"{}".to_vec()),
            StatusCode::FORBIDDEN,
        ),
        (
            "wrong X-API-KEY",
            "POST",
            "/events/stream_ended",
            &[("X-API-KEY", "t0p-s3cret-")],
            Some(b"{}".to_vec()),
            StatusCode::FORBIDDEN,
        ),
        (
            "key prefix",
            "POST",
            "/events/stream_ended",
            &[("x-api-key", "t0p")],
            Some(b"{}".to_vec()),
            StatusCode::FORBIDDEN,
        ),
        (
            "unknown engine id",
            "GET",
            "/engines/nope",
            &[],
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown stream id",
            "GET",
            "/streams/nope/stats",
            &[],
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "bad since",
            "GET",
            "/streams/nope/stats?since=yesterday",
            &[],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad status filter",
            "GET",
            "/streams?status=running",
            &[],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad prefer",
            "GET",
            "/engines?prefer=busy",
            &[],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "malformed query",
            "GET",
            "/streams?status=%ZZ",
            &[],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "invalid UTF-8 in an id",
            "GET",
            "/engines/%FF%FE",
            &[],
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "invalid UTF-8 in a stream id",
            "GET",
            "/streams/%C3%28/stats",
            &[],
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown route",
            "GET",
            "/nope",
            &[],
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            "DELETE",
            "/engines",
            &[],
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET on a POST route",
            "GET",
            "/provision/acestream",
            &[],
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (what, method, path, headers, body, want) in cases {
        let (status, json) = send(&h.app, method, path, headers, body).await;
        assert_eq!(status, want, "{what}: {json}");
        assert!(
            !json["detail"].is_null(),
            "{what}: no JSON detail in {json}"
        );
        if want == StatusCode::UNAUTHORIZED {
            assert_eq!(json["detail"], "missing API key", "{what}");
        }
    }
    // Still serving, and the accepted key forms work.
    assert_eq!(h.get("/engines").await.0, StatusCode::OK);
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("Authorization", "bearer t0p-s3cret")],
        vec![("X-API-Key", KEY)],
        vec![("X-API-KEY", KEY)],
        vec![("x-api-key", KEY)],
    ] {
        let (status, body) = send(
            &h.app,
            "POST",
            "/events/stream_started",
            &headers,
            Some(valid_started.to_string().into_bytes()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
    }
    let mut counts = h.counts.clone();
    counts_become(
        &mut counts,
        BTreeMap::from([("000000000003abcdef0123456789".into(), 1)]),
    )
    .await;
}

#[tokio::test]
async fn first_seen_is_stable_across_requests() {
    let h = Harness::new(pool()).await;
    let (_, a) = h.get("/engines").await;
    let (_, b) = h.get("/engines").await;
    for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert_eq!(x["first_seen"], y["first_seen"], "{}", x["container_name"]);
    }
}

#[tokio::test]
async fn serve_over_tcp_and_shut_down_gracefully() {
    let h = Harness::new(pool()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(acevisor::api::serve(listener, h.ctx.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}");
    let r = http.get(format!("{base}/engines")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .post(format!("{base}/events/stream_started"))
        .header("X-API-Key", KEY)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("malformed JSON"));
    let r = http
        .post(format!("{base}/events/stream_started"))
        .header("X-API-Key", KEY)
        .body(vec![b'x'; 96 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Still serving.
    let r = http.get(format!("{base}/livez")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn launch_reads_the_key_env_and_serves_on_api_listen() {
    let h = Harness::new(pool()).await;
    // A variable name no other test uses; set before anything reads the environment.
    let var = "ACEVISOR_TEST_API_KEY_LAUNCH";
    // SAFETY: only this test touches this variable.
    unsafe { std::env::set_var(var, KEY) };
    let cfg = acevisor::config::Config::parse(&format!(
        "[vpn]\nmode = \"none\"\n[api]\nlisten = \"127.0.0.1:0\"\napi_key_env = \"{var}\"\n"
    ))
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = acevisor::api::launch(&cfg, h.supervisor.clone(), Default::default(), async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let base = format!("http://{}", api.local_addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!("{base}/events/stream_ended"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "the key from the env is required");
    let r = http
        .post(format!("{base}/events/stream_ended"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http.get(format!("{base}/engines")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), api.server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn provision_waits_for_the_container_by_default_and_for_readiness_when_asked() {
    let h = Harness::new(pool()).await;
    let new = engine(7, EnginePhase::Starting, "172.18.0.2", 19024, false);
    h.set_provision(Ok(new));
    let body = json!({"labels": {}, "env": {}, "host_port": null});
    let (status, ok) = h.post("/provision/acestream", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok["state"], "starting");
    let (status, _) = h.post("/provision/acestream?wait=ready", &body).await;
    assert_eq!(status, StatusCode::OK);
    let (status, generic) = h
        .post("/provision", &json!({"image": "x", "labels": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{generic}");
    assert_eq!(generic["container_name"], "acestream-7");
    assert_eq!(generic["container_id"], "000000000007abcdef0123456789");
    assert_eq!(
        h.world.lock().unwrap().provision_waits,
        vec![
            acevisor::actors::messages::ProvisionWait::Created,
            acevisor::actors::messages::ProvisionWait::Ready,
            acevisor::actors::messages::ProvisionWait::Created,
        ]
    );
    let (status, body) = h.post("/provision/acestream?wait=forever", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn the_key_as_a_query_parameter_and_every_operator_route_needs_it() {
    let h = Harness::new(pool()).await;
    let (status, _) = send(
        &h.app,
        "POST",
        &format!("/events/stream_ended?key={KEY}"),
        &[],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "?key= is accepted");
    let (status, _) = send(
        &h.app,
        "POST",
        "/events/stream_ended?key=wrong",
        &[],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (method, path) in [
        ("POST", "/provision"),
        ("POST", "/scale/3"),
        ("POST", "/gc"),
        ("POST", "/health/circuit-breaker/reset"),
        ("DELETE", "/containers/acestream-1"),
        ("GET", "/by-label?key=acevisor.role&value=engine"),
    ] {
        let (status, body) = send(&h.app, method, path, &[], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        let (status, _) = send(&h.app, method, path, &[("x-api-key", "wrong")], None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // On /by-label, `key` names the label: the API key must come in a header.
    let (status, _) = send(
        &h.app,
        "GET",
        &format!("/by-label?key={KEY}&value=x"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Reading a container needs no key (it is not ours: 404 once the Supervisor answers).
    let (status, _) = send(&h.app, "GET", "/containers/acestream-1", &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn streams_of_an_unknown_engine_are_a_404() {
    let h = Harness::new(pool()).await;
    let (status, body) = h.get("/streams?container_id=acestream-99").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = h
        .get("/streams?container_id=ffffffffffffffffffff&status=started")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = h
        .get("/streams?container_id=acestream-3&status=started")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn engines_show_the_containers_real_labels() {
    let h = Harness::new(pool()).await;
    let (_, body) = h.get("/engines").await;
    for e in body.as_array().unwrap() {
        assert_eq!(e["labels"]["acevisor.managed"], "test-instance", "{e}");
    }
}

/// With an API key set, the engine URLs of a stream (`command_url` stops its playback) are shown
/// only to readers with the key, on every open route that lists streams; without a key set,
/// everyone sees them. Before this, `GET /streams` handed `command_url` to anyone.
#[tokio::test]
async fn stream_engine_urls_only_for_readers_with_the_key() {
    let stat = "http://172.18.0.2:19004/ace/stat/s-1";
    let cmd = "http://172.18.0.2:19004/ace/cmd/s-1";
    for key in [Some(KEY), None] {
        let h = Harness::with(pool(), key, Duration::ZERO).await;
        let (status, s) = h
            .post(
                "/events/stream_started",
                &started_body("172.18.0.2", 19004, "s-1", stat),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert_eq!(
            (s["stat_url"].as_str(), s["command_url"].as_str()),
            (Some(stat), Some(cmd))
        );
        let bearer = format!("Bearer {KEY}");
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: [(&str, Headers, bool); 5] = [
            ("/streams", &[], key.is_none()),
            ("/streams", &[("x-api-key", "wrong")], key.is_none()),
            ("/streams", &[("authorization", &bearer)], true),
            (&format!("/streams?status=started&key={KEY}"), &[], true),
            ("/engines/acestream-3", &[], key.is_none()),
        ];
        for (path, headers, shown) in cases {
            let (status, body) = send(&h.app, "GET", path, headers, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            let stream = if path.starts_with("/engines") {
                &body["streams"][0]
            } else {
                &body[0]
            };
            assert_eq!(stream["id"], "s-1", "{path}: {body}");
            let want = |url: &'static str| if shown { url } else { "" };
            assert_eq!(
                (stream["stat_url"].as_str(), stream["command_url"].as_str()),
                (Some(want(stat)), Some(want(cmd))),
                "{path} with {headers:?}, key set: {}",
                key.is_some()
            );
        }
        let engine = &pool().engines[0];
        let (_, with_key) = send(
            &h.app,
            "GET",
            &format!("/engines/{}", engine.container_id.as_deref().unwrap()),
            &[("authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(with_key["streams"][0]["command_url"], cmd);
        // The dashboard takes no key: it never shows them while a key is set.
        let (_, state) = h.get("/ui/state").await;
        let shown = &state["streams"]["active"][0];
        assert_eq!(shown["id"], "s-1", "{state}");
        assert_eq!(shown["command_url"], if key.is_some() { "" } else { cmd });
    }
}
