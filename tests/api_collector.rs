//! The collector against an in-test fake engine serving `stat_url`: stats are read into the
//! stream's history (visible at `/streams/{id}/stats` and as the stream's latest numbers), and a
//! stream ends when the engine answers `unknown playback session id` or leaves the Supervisor's
//! view. Rounds are driven with `CollectNow` (answered once applied) or, in one test, by the
//! actor's own timer, awaiting the effect rather than sleeping.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acevisor::actors::streams::{CollectSummary, StreamsMsg};
use acevisor::core::model::EnginePhase;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::*;
use serde_json::json;

/// A fake engine: the first `live_reads` reads of a session's stats answer numbers, later ones
/// (or all, once `ended` is set) answer the engine's "unknown playback session id".
struct FakeEngine {
    live_reads: usize,
    reads: AtomicUsize,
    ended: Mutex<bool>,
    /// Answer 500 instead (a confused engine: no conclusion).
    broken: Mutex<bool>,
}

async fn stat(State(e): State<Arc<FakeEngine>>, Path(_session): Path<String>) -> impl IntoResponse {
    if *e.broken.lock().unwrap() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom".to_string()).into_response();
    }
    let n = e.reads.fetch_add(1, Ordering::SeqCst) + 1;
    if *e.ended.lock().unwrap() || n > e.live_reads {
        return axum::Json(json!({"response": null, "error": "unknown playback session id"}))
            .into_response();
    }
    axum::Json(json!({
        "response": {
            "status": "dl",
            "peers": 10 + n,
            "speed_down": 500 * n,
            "speedUp": 20,
            "downloaded": 1_000_000 * n,
            "uploaded": 1000,
            "livepos": {"pos": "1700000000"}
        },
        "error": null
    }))
    .into_response()
}

async fn fake_engine(live_reads: usize) -> (Arc<FakeEngine>, SocketAddr) {
    let e = Arc::new(FakeEngine {
        live_reads,
        reads: AtomicUsize::new(0),
        ended: Mutex::new(false),
        broken: Mutex::new(false),
    });
    let app = Router::new()
        .route("/ace/stat/{session}", axum::routing::get(stat))
        .with_state(e.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (e, addr)
}

async fn collect_now(h: &Harness) -> CollectSummary {
    ractor::call_t!(h.streams, StreamsMsg::CollectNow, 30_000).unwrap()
}

async fn start_stream(h: &Harness, addr: SocketAddr, id: &str) {
    let stat_url = format!("http://{addr}/ace/stat/{id}");
    let (status, body) = h
        .post(
            "/events/stream_started",
            &started_body(&addr.ip().to_string(), addr.port(), id, &stat_url),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn harness_snapshot(addr: SocketAddr) -> acevisor::actors::messages::SupervisorSnapshot {
    snapshot(vec![engine(
        1,
        EnginePhase::Ready,
        &addr.ip().to_string(),
        addr.port(),
        true,
    )])
}

#[tokio::test]
async fn history_grows_then_the_stream_ends_when_the_session_is_gone() {
    let (fake, addr) = fake_engine(usize::MAX).await;
    let h = Harness::new(harness_snapshot(addr)).await;
    let mut counts = h.counts.clone();
    start_stream(&h, addr, "s1").await;
    counts_become(
        &mut counts,
        BTreeMap::from([("000000000001abcdef0123456789".into(), 1)]),
    )
    .await;

    for round in 1..=3u64 {
        let summary = collect_now(&h).await;
        assert_eq!(summary.sampled, 1, "round {round}");
        assert!(summary.ended.is_empty());
        let (_, history) = h.get("/streams/s1/stats").await;
        let history = history.as_array().unwrap().clone();
        assert_eq!(history.len() as u64, round);
        let last = &history[history.len() - 1];
        assert_eq!(last["peers"], 10 + round);
        assert_eq!(last["speed_down"], 500 * round);
        assert_eq!(last["speed_up"], 20, "camelCase speedUp is read");
        assert_eq!(last["status"], "dl");
        assert!(is_rfc3339(&last["ts"]));
    }
    // The stream carries the latest numbers.
    let (_, streams) = h.get("/streams?status=started").await;
    assert_eq!(streams[0]["peers"], 13);
    assert_eq!(streams[0]["downloaded"], 3_000_000);

    // `since` keeps the samples at or after it.
    let (_, all) = h.get("/streams/s1/stats").await;
    let second_ts = all[1]["ts"].as_str().unwrap().to_string();
    let (_, since) = h.get(&format!("/streams/s1/stats?since={second_ts}")).await;
    assert_eq!(since.as_array().unwrap().len(), 2);

    // A broken answer concludes nothing.
    *fake.broken.lock().unwrap() = true;
    let summary = collect_now(&h).await;
    assert_eq!((summary.sampled, summary.ended.len()), (0, 0));
    *fake.broken.lock().unwrap() = false;

    // The engine forgets the session: the stream ends, the counts drop, the history stays.
    *fake.ended.lock().unwrap() = true;
    let summary = collect_now(&h).await;
    assert_eq!(summary.ended, vec![("s1".to_string(), "session_ended")]);
    counts_become(&mut counts, BTreeMap::new()).await;
    let (_, ended) = h.get("/streams?status=ended").await;
    assert_eq!(ended[0]["id"], "s1");
    assert_eq!(ended[0]["end_reason"], "session_ended");
    assert!(is_rfc3339(&ended[0]["ended_at"]));
    let (_, history) = h.get("/streams/s1/stats").await;
    assert_eq!(history.as_array().unwrap().len(), 3);
    // Ended streams are not read any more.
    let reads = fake.reads.load(Ordering::SeqCst);
    let summary = collect_now(&h).await;
    assert_eq!(summary, CollectSummary::default());
    assert_eq!(fake.reads.load(Ordering::SeqCst), reads);
    // A late stream_ended from the proxy is a no-op.
    let (_, r) = h
        .post("/events/stream_ended", &json!({"stream_id": "s1"}))
        .await;
    assert_eq!(r["updated"], false);
}

#[tokio::test]
async fn a_stream_ends_when_its_engine_vanishes() {
    let (fake, addr) = fake_engine(usize::MAX).await;
    let h = Harness::new(harness_snapshot(addr)).await;
    let mut counts = h.counts.clone();
    start_stream(&h, addr, "s2").await;
    counts_become(
        &mut counts,
        BTreeMap::from([("000000000001abcdef0123456789".into(), 1)]),
    )
    .await;
    assert_eq!(collect_now(&h).await.sampled, 1);

    h.set_snapshot(|s| s.engines.clear());
    let reads = fake.reads.load(Ordering::SeqCst);
    let summary = collect_now(&h).await;
    assert_eq!(summary.ended, vec![("s2".to_string(), "engine_gone")]);
    assert_eq!(
        fake.reads.load(Ordering::SeqCst),
        reads,
        "a gone engine is not read"
    );
    counts_become(&mut counts, BTreeMap::new()).await;
    let (_, s) = h.get("/streams?status=ended").await;
    assert_eq!(s[0]["end_reason"], "engine_gone");
}

#[tokio::test]
async fn a_stuck_supervisor_ends_nothing() {
    let (_fake, addr) = fake_engine(usize::MAX).await;
    let mut h = Harness::new(harness_snapshot(addr)).await;
    start_stream(&h, addr, "s3").await;
    h.set_hang(true);
    // Collector rounds use the Streams actor's own bound; shorten it for this test.
    let (streams, _) = ractor::Actor::spawn(
        None,
        acevisor::actors::streams::Streams,
        acevisor::actors::streams::StreamsArgs {
            supervisor: h.supervisor.clone(),
            engine_client: Arc::new(
                acevisor::clients::engine::EngineClient::new(Duration::from_secs(5)).unwrap(),
            ),
            collect_interval: Duration::ZERO,
            call_timeout: Duration::from_millis(50),
            limits: Default::default(),
        },
    )
    .await
    .unwrap();
    h.streams = streams;
    let summary = collect_now(&h).await;
    assert!(summary.skipped);
    assert!(summary.ended.is_empty());
}

#[tokio::test]
async fn the_timer_drives_rounds_until_the_session_ends() {
    // Two live reads, then the engine forgets the session.
    let (fake, addr) = fake_engine(2).await;
    let h = Harness::with(harness_snapshot(addr), Some(KEY), Duration::from_millis(20)).await;
    let mut counts = h.counts.clone();
    start_stream(&h, addr, "s4").await;
    counts_become(
        &mut counts,
        BTreeMap::from([("000000000001abcdef0123456789".into(), 1)]),
    )
    .await;
    // The end shows up as the counts dropping back to nothing.
    counts_become(&mut counts, BTreeMap::new()).await;
    assert!(fake.reads.load(Ordering::SeqCst) >= 3);
    let (_, history) = h.get("/streams/s4/stats").await;
    assert_eq!(history.as_array().unwrap().len(), 2);
    let (_, ended) = h.get("/streams?status=ended").await;
    assert_eq!(ended[0]["end_reason"], "session_ended");
}
