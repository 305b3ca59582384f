//! The dashboard at the HTTP level, over the real router with a fake Supervisor and the API key
//! set: the page and its assets are served without the key and stay small, `/ui/state` agrees
//! with `/engines`, `/vpn/status` and `/streams`, `/ui/events` sends the state at once and again
//! after each change (and nothing while nothing changes), incidents link to their traces, and the
//! number of SSE clients is bounded.

mod common;

use std::time::{Duration, SystemTime};

use acevisor::api::ui::MAX_SSE_CLIENTS;
use acevisor::core::emergency::EmergencyState;
use acevisor::core::incidents::Incident;
use acevisor::core::model::EnginePhase;
use axum::http::StatusCode;
use common::*;
use serde_json::Value;
use tokio::time::Instant;

fn pool() -> acevisor::actors::messages::SupervisorSnapshot {
    snapshot(vec![
        engine(1, EnginePhase::Ready, "172.18.0.2", 19000, true),
        engine(2, EnginePhase::Ready, "172.18.0.2", 19004, false),
        engine(3, EnginePhase::Creating, "172.18.0.2", 19008, false),
    ])
}

/// A real server over the harness's router (SSE needs a streaming connection).
async fn serve(h: &Harness) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = h.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Reads SSE events off a streaming response: `(event, data)`.
struct Events {
    response: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(base: &str) -> Events {
        let response = reqwest::get(format!("{base}/ui/events")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            response,
            buf: String::new(),
        }
    }

    /// The next event within `within`, or `None` when none came.
    async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if event.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((event, serde_json::from_str(&data).expect("data is JSON")));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("stream readable")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn names(v: &Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[key].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn the_page_is_served_without_the_key_and_stays_small() {
    let h = Harness::new(pool()).await;
    let base = serve(&h).await;
    let http = reqwest::Client::new();
    let mut total = 0;
    for (path, ty) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/app.css", "text/css"),
        ("/ui/app.js", "text/javascript"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} with no key while the API has one");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with(ty), "{path}: {content_type}");
        let body = r.text().await.unwrap();
        if path != "/ui" {
            total += body.len();
        }
        if path == "/" {
            for hook in [
                "/ui/app.js",
                "/ui/app.css",
                "id=\"engines\"",
                "id=\"alerts\"",
            ] {
                assert!(body.contains(hook), "the page lacks {hook}");
            }
        }
        if path == "/ui/app.js" {
            for hook in ["emergency-banner", "engine-row", "vpn-card", "/ui/events"] {
                assert!(body.contains(hook), "the script lacks {hook}");
            }
        }
    }
    assert!(total < 150 * 1024, "page weight {total} bytes");
    // The mutating routes still need the key.
    let r = http
        .post(format!("{base}/provision/acestream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, state) = h.get("/ui/state").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["status"], "healthy", "{state}");
}

#[tokio::test]
async fn the_state_agrees_with_the_json_routes() {
    let h = Harness::new(pool()).await;
    h.post(
        "/events/stream_started",
        &started_body("172.18.0.2", 19004, "s1", "http://127.0.0.1:9/stat"),
    )
    .await;
    let (_, state) = h.get("/ui/state").await;
    let (_, engines) = h.get("/engines").await;
    let (_, vpn) = h.get("/vpn/status").await;
    let (_, streams) = h.get("/streams").await;

    // Every engine is a row; the listed ones are exactly /engines, field for field.
    let rows = state["engines"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let listed: Vec<&Value> = rows.iter().filter(|e| e["listed"] == true).collect();
    assert_eq!(listed.len(), engines.as_array().unwrap().len());
    for e in engines.as_array().unwrap() {
        let row = listed
            .iter()
            .find(|r| r["container_name"] == e["container_name"])
            .unwrap_or_else(|| panic!("no row for {e}"));
        for key in [
            "container_id",
            "host",
            "port",
            "p2p_port",
            "forwarded",
            "active_streams",
            "health_status",
            "vpn_container",
            "state",
        ] {
            assert_eq!(row[key], e[key], "{key} of {}", e["container_name"]);
        }
    }
    assert_eq!(rows[2]["state"], "creating");
    assert_eq!(rows[1]["active_streams"], 1);
    // VPN cards and the emergency block are /vpn/status's.
    assert_eq!(state["vpns"].as_array().unwrap().len(), 1);
    let card = &state["vpns"][0];
    let entry = &vpn["vpns"][0];
    assert_eq!(card["name"], entry["container_name"]);
    assert_eq!(card["status"], entry["status"]);
    assert_eq!(card["forwarded_port"], entry["forwarded_port"]);
    assert_eq!(card["forwarded_ports"], entry["forwarded_ports"]);
    assert_eq!(card["ip"], "172.18.0.2");
    assert_eq!(
        names(
            &card["engines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| serde_json::json!({"n": n}))
                .collect(),
            "n"
        ),
        vec!["acestream-1", "acestream-2", "acestream-3"]
    );
    let mut emergency = vpn["emergency_mode"].clone();
    emergency
        .as_object_mut()
        .unwrap()
        .remove("duration_seconds");
    assert_eq!(state["emergency"], emergency);
    // Streams are /streams's.
    assert_eq!(state["streams"]["active"], streams);
    assert_eq!(state["breaker"]["state"], "closed");
    assert_eq!(state["docker"]["ok"], true);
}

#[tokio::test]
async fn events_push_the_state_and_every_change_only() {
    let h = Harness::new(pool()).await;
    let base = serve(&h).await;
    let mut events = Events::open(&base).await;
    let (name, first) = events
        .next(Duration::from_secs(10))
        .await
        .expect("a first state");
    assert_eq!(name, "state");
    assert!(is_rfc3339(&first["generated_at"]), "{first}");
    assert_eq!(first["engines"].as_array().unwrap().len(), 3);
    assert_eq!(first["emergency"]["active"], false);
    // Nothing changes: nothing is sent (the publisher polls every 250 ms).
    assert!(
        events.next(Duration::from_millis(1200)).await.is_none(),
        "an unchanged state was sent again"
    );

    // An emergency, an incident with its trace and an engine gone: one new state with all.
    let at = SystemTime::now();
    h.set_snapshot(|s| {
        s.vpns.push(vpn("gluetun-2", false, None));
        s.emergency = EmergencyState::Emergency {
            failed: vec!["gluetun-2".into()],
            healthy: vec!["gluetun".into()],
            since: Instant::now(),
        };
        s.engines.pop();
        s.incidents = vec![Incident {
            seq: 1,
            at,
            kind: "vpn_failed",
            vpn: Some("gluetun-2".into()),
            detail: "container gone".into(),
            duration: None,
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
        }];
    });
    let (_, next) = events
        .next(Duration::from_secs(10))
        .await
        .expect("the change is pushed");
    assert_eq!(next["emergency"]["state"], "emergency");
    assert_eq!(next["emergency"]["failed_vpns"][0], "gluetun-2");
    assert_eq!(next["engines"].as_array().unwrap().len(), 2);
    assert_eq!(next["vpns"][1]["status"], "down");
    let incident = &next["incidents"][0];
    assert_eq!(incident["kind"], "vpn_failed");
    assert_eq!(
        incident["trace_url"],
        "http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c"
    );

    // A second client gets the current state at once from the shared publisher.
    let mut second = Events::open(&base).await;
    let (_, now) = second.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(now["emergency"]["state"], "emergency");
}

#[tokio::test]
async fn sse_clients_are_bounded() {
    let h = Harness::new(pool()).await;
    let base = serve(&h).await;
    let mut open = Vec::new();
    for _ in 0..MAX_SSE_CLIENTS {
        open.push(Events::open(&base).await);
    }
    let r = reqwest::get(format!("{base}/ui/events")).await.unwrap();
    assert_eq!(r.status(), 503, "client {} is refused", MAX_SSE_CLIENTS + 1);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("dashboard clients")
    );
    // One leaves: a place is free again.
    drop(open.pop());
    support_wait(|| async {
        reqwest::get(format!("{base}/ui/events"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Waits up to 10 s for `condition`.
async fn support_wait<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
