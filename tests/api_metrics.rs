//! `GET /metrics` through the API router over a fake Supervisor: Prometheus text with the right
//! content type, values from the snapshot and the live metrics, 503 when the Supervisor hangs.

mod common;

use std::time::Duration;

use acevisor::core::model::EnginePhase;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use tower::ServiceExt;

async fn scrape(h: &Harness) -> (StatusCode, String, String) {
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn metrics_route_renders_the_snapshot_and_live_metrics() {
    let mut busy = engine(2, EnginePhase::Ready, "172.18.0.2", 19008, false);
    busy.streams = 2;
    let h = Harness::new(snapshot(vec![
        engine(1, EnginePhase::Ready, "172.18.0.2", 19012, true),
        busy,
        engine(3, EnginePhase::Starting, "172.18.0.2", 19004, false),
    ]))
    .await;
    h.ctx
        .metrics
        .observe_docker_call("create_container", "ok", Duration::from_millis(40));
    // The router was built with a clone of the same context: the same live metrics.
    let (status, content_type, text) = scrape(&h).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, acevisor::metrics::CONTENT_TYPE);
    for line in [
        "orch_healthy_engines 2",
        "orch_used_engines 1",
        "orch_total_streams 2",
        "acevisor_engines{vpn=\"gluetun\",state=\"starting\"} 1",
        "acevisor_engine_streams{engine=\"acestream-2\"} 2",
        "acevisor_docker_call_duration_seconds_count{op=\"create_container\",outcome=\"ok\"} 1",
        "acevisor_ready 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }

    h.set_hang(true);
    let (status, _, body) = scrape(&h).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("detail"), "{body}");
}
