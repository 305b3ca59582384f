//! The HTTP API over a real acevisor against real Docker: a media proxy's whole round trip
//! (provision -> stream_started -> stats collected from the fake engine -> stream_ended -> the idle
//! engine removed after idle_grace while min_free stays kept), and /readyz.

mod docker_world;
mod support;
mod tree;

use std::time::Duration;

use docker_world::World;
use serde_json::{Value, json};
use tree::full;

const SEC: Duration = Duration::from_secs(1);
const KEY: &str = "proxy-key";

struct Api {
    base: String,
    http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    running: acevisor::api::RunningApi,
}

impl Api {
    /// The API of `tree` served on `cfg.api.listen` (with `key`, if any) until `shut_down`.
    async fn serve(cfg: &acevisor::config::Config, tree: &tree::Tree, key: Option<&str>) -> Api {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let running = acevisor::api::launch_with_key(
            cfg,
            tree.sup.clone(),
            key.map(str::to_string),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )
        .await
        .expect("API starts");
        Api {
            base: format!("http://{}", running.local_addr),
            http: reqwest::Client::new(),
            stop,
            running,
        }
    }

    async fn shut_down(self) {
        let _ = self.stop.send(true);
        let _ = self.running.server.await;
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("API answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The `/engines` entry of this container, if listed.
    async fn listed(&self, container_id: &str) -> Option<Value> {
        let (_, engines) = self.get("/engines").await;
        engines
            .as_array()?
            .iter()
            .find(|e| e["container_id"] == container_id)
            .cloned()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .expect("API answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_round_trip_with_autoscaling() {
    let Some(w) = World::new(&[35001], None).await else {
        return;
    };
    let mut cfg = w.config("single", 1, "", "");
    cfg.engines.min_free = 1;
    cfg.engines.idle_grace = 2 * SEC;
    cfg.api.listen = "127.0.0.1:0".into();
    cfg.api.stats_interval = Duration::from_millis(300);
    let api_cfg = cfg.clone();
    let tree = w.acevisor(cfg, vec![None]).await;
    let api = Api::serve(&api_cfg, &tree, Some(KEY)).await;
    tree.wait("1 engine", 60 * SEC, |s| full(s, w.vpn(0), 1, 35001))
        .await;
    support::wait_until(30 * SEC, "readyz", || async {
        api.get("/readyz").await.0 == 200
    })
    .await;

    // Provision: one more engine, answered once it is ready (`?wait=ready`).
    let (status, engine) = api
        .post(
            "/provision/acestream?wait=ready",
            json!({"labels": {}, "env": {}, "host_port": null}),
        )
        .await;
    assert_eq!(status, 200, "{engine}");
    assert_eq!(engine["state"], "ready");
    let container_id = engine["container_id"].as_str().unwrap().to_string();
    let port = engine["container_http_port"].as_u64().unwrap() as u16;
    let listed = api.listed(&container_id).await.expect("listed once ready");
    let host = listed["host"].as_str().unwrap().to_string();
    assert_eq!(listed["port"].as_u64(), Some(u64::from(port)));

    // The proxy asks the engine itself for a stream, then reports it.
    let getstream: Value = reqwest::get(format!(
        "http://{host}:{port}/ace/getstream?id=demo-content&format=json"
    ))
    .await
    .expect("engine answers")
    .json()
    .await
    .unwrap();
    let session = &getstream["response"];
    let (status, stream) = api
        .post(
            "/events/stream_started",
            json!({
                "container_id": container_id,
                "engine": {"host": host, "port": port},
                "stream": {"key_type": "content_id", "key": "demo-content"},
                "session": {
                    "playback_session_id": session["playback_session_id"],
                    "stat_url": session["stat_url"],
                    "command_url": session["command_url"],
                    "is_live": 1
                },
                "labels": {"stream_id": "s-1"}
            }),
        )
        .await;
    assert_eq!(status, 200, "{stream}");
    assert_eq!(stream["id"], "s-1");

    // The collector reads the fake engine's stats into the stream's history.
    support::wait_until(30 * SEC, "stats collected", || async {
        let (_, stats) = api.get("/streams/s-1/stats").await;
        stats.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    // While the stream plays, min_free keeps one idle engine besides the busy one.
    let s = tree
        .hold(
            4 * SEC,
            |s| s.engines.len() == 2,
            "busy engine plus one free",
        )
        .await;
    assert!(s.engines.iter().any(|e| e.streams == 1));

    let (status, ended) = api
        .post("/events/stream_ended", json!({"stream_id": "s-1"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ended["updated"], true);
    let (_, again) = api
        .post("/events/stream_ended", json!({"stream_id": "s-1"}))
        .await;
    assert_eq!(again["updated"], false, "idempotent");

    // Both idle now: the surplus one goes after idle_grace; min_free (1) and min_replicas (1) stay.
    let s = tree
        .wait("back to one idle engine", 60 * SEC, |s| {
            s.engines.len() == 1 && full(s, w.vpn(0), 1, 35001)
        })
        .await;
    assert_eq!(s.counters.engines_removed.get("surplus"), Some(&1));
    let s = tree
        .hold(
            3 * SEC,
            |s| s.engines.len() == 1,
            "min_free kept, no flapping",
        )
        .await;
    assert_eq!(s.counters.engines_removed.get("surplus"), Some(&1));

    api.shut_down().await;
    tree.stop().await;
}

/// Provisioning answers once Docker runs the new container, not once the engine is ready: the
/// fake engines here take 5 s before their API answers, and the answer comes while the new one
/// is still starting (not listed in /engines); it joins /engines when its API answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_answers_before_a_slow_engine_is_ready() {
    let Some(w) = World::new(&[35201], None).await else {
        return;
    };
    let mut cfg = w.config("single", 1, "", "");
    cfg.engines
        .env
        .insert("FAKE_STARTUP_MS".into(), "5000".into());
    cfg.api.listen = "127.0.0.1:0".into();
    let api_cfg = cfg.clone();
    let tree = w.acevisor(cfg, vec![None]).await;
    let api = Api::serve(&api_cfg, &tree, Some(KEY)).await;
    tree.wait("1 engine", 60 * SEC, |s| full(s, w.vpn(0), 1, 35201))
        .await;
    let (_, status) = api.get("/orchestrator/status").await;
    assert_eq!(status["provisioning"]["can_provision"], true, "{status}");

    let (status, engine) = api
        .post(
            "/provision/acestream",
            json!({"labels": {}, "env": {}, "host_port": null}),
        )
        .await;
    assert_eq!(status, 200, "{engine}");
    assert_eq!(
        engine["state"], "starting",
        "answered before readiness: {engine}"
    );
    let container_id = engine["container_id"].as_str().unwrap().to_string();
    assert!(!container_id.is_empty());
    assert!(engine["host_http_port"].as_u64().is_some_and(|p| p > 0));
    assert!(
        engine["container_https_port"]
            .as_u64()
            .is_some_and(|p| p > 0)
    );
    // Docker runs it: the container exists and is running.
    let running_state = support::docker_ok(&["inspect", "-f", "{{.State.Running}}", &container_id]);
    assert_eq!(running_state.trim(), "true");
    assert!(
        api.listed(&container_id).await.is_none(),
        "not listed before its API answers"
    );
    support::wait_until(60 * SEC, "the new engine joins /engines", || async {
        api.listed(&container_id).await.is_some()
    })
    .await;

    api.shut_down().await;
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_engine_replaced_and_crashing_engine_backs_off_visibly() {
    let Some(w) = World::new(&[35501], None).await else {
        return;
    };
    let mut cfg = w.config("single", 2, "", "max_restarts = 2\nrestart_window = \"5m\"");
    cfg.api.listen = "127.0.0.1:0".into();
    let api_cfg = cfg.clone();
    let tree = w.acevisor(cfg, vec![None]).await;
    let api = Api::serve(&api_cfg, &tree, None).await;
    let s = tree
        .wait("2 engines", 60 * SEC, |s| full(s, w.vpn(0), 2, 35501))
        .await;

    // A hung engine (accepts connections, never answers) is found by the probes and replaced.
    let victim = s.engines.iter().find(|e| !e.forwarded).unwrap().clone();
    let host = victim.host.clone().unwrap();
    let hang = reqwest::Client::new()
        .put(format!("http://{host}:{}/testbed/hang", victim.http_port))
        .send()
        .await
        .expect("fake engine answers");
    assert!(hang.status().is_success());
    let s = tree
        .wait("hung engine replaced", 60 * SEC, |s| {
            s.counters.engines_removed.get("unhealthy") == Some(&1) && full(s, w.vpn(0), 2, 35501)
        })
        .await;
    assert!(
        s.engines
            .iter()
            .all(|e| e.container_id != victim.container_id)
    );

    // An engine that keeps exiting: replaced twice (max_restarts), then its slot backs off.
    for round in 0..3 {
        let s = tree
            .wait("pool full", 60 * SEC, |s| full(s, w.vpn(0), 2, 35501))
            .await;
        let e = s.engines.iter().find(|e| !e.forwarded).unwrap().clone();
        let lost = s.counters.engines_lost;
        let _ = reqwest::Client::new()
            .post(format!(
                "http://{}:{}/testbed/exit",
                e.host.as_deref().unwrap(),
                e.http_port
            ))
            .json(&json!({"code": 3}))
            .send()
            .await;
        tree.wait(&format!("exit {round} noticed"), 30 * SEC, |s| {
            s.counters.engines_lost > lost
        })
        .await;
    }
    tree.wait("backing off", 30 * SEC, |s| {
        s.counters.restarts_suppressed >= 1
    })
    .await;
    let (status, health) = api.get("/health/status").await;
    assert_eq!(status, 200);
    assert!(
        health["restart_intensity"]["backing_off"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{health}"
    );
    assert!(
        !health["creation_holds"]
            .as_array()
            .map(Vec::is_empty)
            .unwrap_or(true),
        "{health}"
    );
    assert_eq!(api.get("/livez").await.0, 200, "the daemon stays up");

    api.shut_down().await;
    tree.stop().await;
}
