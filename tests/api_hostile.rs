//! The API under hostile and careless clients: request bodies `/provision/acestream` must refuse,
//! several different API keys, connections that never finish their request (declared bodies
//! above the limit, unterminated chunked bodies, idle and slow heads), and what stream events may
//! make acevisor hold (label bytes, active streams in total and per engine, ended streams,
//! streams nothing confirms) and the paginated `GET /streams`.

mod common;

use std::time::Duration;

use acevisor::api::ClientTimeouts;
use acevisor::core::model::EnginePhase;
use acevisor::core::streams::StreamLimits;
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn pool() -> acevisor::actors::messages::SupervisorSnapshot {
    snapshot(vec![
        engine(1, EnginePhase::Ready, "172.18.0.2", 19000, true),
        engine(2, EnginePhase::Ready, "172.18.0.2", 19004, false),
    ])
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

#[tokio::test]
async fn provision_refuses_bodies_that_are_not_one_json_object() {
    let h = Harness::new(pool()).await;
    h.set_provision(Ok(engine(
        7,
        EnginePhase::Ready,
        "172.18.0.2",
        19024,
        false,
    )));
    let auth = bearer();
    let json_type = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let mut deep = b"{\"labels\":{},\"x\":".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 10_000));
    deep.extend(std::iter::repeat_n(b']', 10_000));
    deep.push(b'}');
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("an array", b"[]".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("a number", b"12".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("null", b"null".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "host_port out of range",
            br#"{"host_port":70000}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a number out of range in an extra field",
            br#"{"labels":{},"x":1e999}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a lone surrogate escape in an extra field",
            br#"{"labels":{},"x":"\ud800"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a lone surrogate escape in a label",
            br#"{"labels":{"a":"\udc00"}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "duplicate keys",
            br#"{"labels":{},"labels":{"a":"b"}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "duplicate keys deeper down",
            br#"{"x":{"k":1,"k":2}}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("10,000-deep nesting", deep, StatusCode::BAD_REQUEST),
        (
            "invalid UTF-8",
            b"{\"labels\":{},\"x\":\"\xff\xfe\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, body, want) in cases {
        let (status, _, answer) =
            send_raw(&h.app, "POST", "/provision/acestream", &json_type, body).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert!(answer["detail"].is_string(), "{what}: {answer}");
    }
    // A body that says it is not JSON.
    let upstream = br#"{"labels":{},"env":{},"host_port":null}"#.to_vec();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(t) = content_type {
            headers.push(("content-type", t));
        }
        let (status, _, answer) = send_raw(
            &h.app,
            "POST",
            "/provision/acestream",
            &headers,
            upstream.clone(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {answer}"
        );
    }
    // Still provisioned: the upstream body as JSON, with a charset, and an empty body whatever
    // its type (or none).
    for (content_type, body) in [
        (Some("application/json"), upstream.clone()),
        (Some("application/json; charset=utf-8"), upstream.clone()),
        (Some("text/plain"), Vec::new()),
        (None, Vec::new()),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(t) = content_type {
            headers.push(("content-type", t));
        }
        let (status, _, answer) =
            send_raw(&h.app, "POST", "/provision/acestream", &headers, body).await;
        assert_eq!(status, StatusCode::OK, "{content_type:?}: {answer}");
        assert_eq!(answer["container_name"], "acestream-7");
    }
}

#[tokio::test]
async fn event_bodies_get_the_same_checks() {
    let h = Harness::new(pool()).await;
    let auth = bearer();
    let json_type = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    // `[]` would fill every optional field of stream_ended with its default.
    let (status, _, _) = send_raw(
        &h.app,
        "POST",
        "/events/stream_ended",
        &json_type,
        b"[]".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = send_raw(
        &h.app,
        "POST",
        "/events/stream_ended",
        &json_type,
        br#"{"stream_id":"a","stream_id":"b"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = send_raw(
        &h.app,
        "POST",
        "/events/stream_ended",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "text/plain"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn several_different_keys_in_one_request_are_a_bad_request() {
    let h = Harness::new(pool()).await;
    let auth = bearer();
    let (status, _, answer) = send_raw(
        &h.app,
        "POST",
        "/events/stream_ended",
        &[("authorization", auth.as_str()), ("x-api-key", "another")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("several different API keys")
    );
    // The same key twice is one key.
    let (status, _, _) = send_raw(
        &h.app,
        "POST",
        "/events/stream_ended",
        &[
            ("authorization", auth.as_str()),
            ("x-api-key", KEY),
            ("content-type", "application/json"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// A server over TCP with short client timeouts; returns its address and a stop handle.
async fn serve_with(
    h: &Harness,
    timeouts: ClientTimeouts,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut ctx = h.ctx.clone();
    ctx.timeouts = timeouts;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(acevisor::api::serve(listener, ctx, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Everything the server sends until it closes the connection; panics when it is still open
/// after `within` (far longer than the timeouts under test).
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, conn.read_to_end(&mut out))
        .await
        .expect("the server kept the connection open")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Far longer than the timeouts under test, shorter than hyper's own 30 s default.
const DEADLINE: Duration = Duration::from_secs(20);

const SHORT: ClientTimeouts = ClientTimeouts {
    header_read: Duration::from_millis(500),
    body_read: Duration::from_millis(500),
};

#[tokio::test]
async fn a_declared_length_above_the_limit_is_refused_at_once() {
    let h = Harness::new(pool()).await;
    // Long timeouts: the answer must not wait for them.
    let (addr, _stop) = serve_with(
        &h,
        ClientTimeouts {
            header_read: Duration::from_secs(600),
            body_read: Duration::from_secs(600),
        },
    )
    .await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /events/stream_started HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{\""
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut conn, DEADLINE).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body too large"), "{answer}");
    // A route that reads no body answers and does not wait for the declared one either.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nab")
        .await
        .unwrap();
    let answer = read_until_closed(&mut conn, DEADLINE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_unterminated_chunked_body_gets_408_and_the_connection_closes() {
    let h = Harness::new(pool()).await;
    let (addr, _stop) = serve_with(&h, SHORT).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /events/stream_ended HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut conn, DEADLINE).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 500 ms"), "{answer}");
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let h = Harness::new(pool()).await;
    let (addr, _stop) = serve_with(&h, SHORT).await;
    // Sends nothing at all.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // Starts a request head and never finishes it.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /engines HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Finishes one request, then idles on the kept-alive connection.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    for conn in [&mut idle, &mut slow] {
        let answer = read_until_closed(conn, DEADLINE).await;
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    let answer = read_until_closed(&mut kept, DEADLINE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The server still serves.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .get(format!("http://{addr}/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn small_limits() -> StreamLimits {
    StreamLimits {
        max_active: 3,
        max_per_engine: 2,
        max_label_bytes: 64,
        ended_kept: 2,
        ..StreamLimits::default()
    }
}

async fn start(h: &Harness, port: u16, id: &str) -> (StatusCode, Value) {
    h.post(
        "/events/stream_started",
        &started_body("172.18.0.2", port, id, "http://127.0.0.1:9/stat"),
    )
    .await
}

#[tokio::test]
async fn labels_above_the_cap_are_refused() {
    let h = Harness::with_limits(pool(), Some(KEY), Duration::ZERO, small_limits()).await;
    let mut body = started_body("172.18.0.2", 19000, "s1", "http://127.0.0.1:9/stat");
    body["labels"]["note"] = json!("x".repeat(100));
    let (status, answer) = h.post("/events/stream_started", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("at most 64 bytes"),
        "{answer}"
    );
    let (_, all) = h.get("/streams").await;
    assert_eq!(all, json!([]));
}

/// A stream start refused with 429, its detail naming `setting`.
async fn refused(h: &Harness, port: u16, id: &str, setting: &str) {
    let (status, answer) = start(h, port, id).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(setting), "{answer}");
}

#[tokio::test]
async fn active_streams_are_capped_per_engine_and_in_total() {
    let h = Harness::with_limits(pool(), Some(KEY), Duration::ZERO, small_limits()).await;
    assert_eq!(start(&h, 19000, "a1").await.0, StatusCode::OK);
    assert_eq!(start(&h, 19000, "a2").await.0, StatusCode::OK);
    refused(&h, 19000, "a3", "api.max_streams_per_engine").await;
    // Restarting an active id replaces it: no new place taken.
    assert_eq!(start(&h, 19000, "a2").await.0, StatusCode::OK);
    assert_eq!(start(&h, 19004, "b1").await.0, StatusCode::OK);
    refused(&h, 19004, "b2", "api.max_streams").await;
    // Ending one frees a place.
    let (status, _) = h
        .post("/events/stream_ended", &json!({"stream_id": "a1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(start(&h, 19004, "b2").await.0, StatusCode::OK);
}

#[tokio::test]
async fn ended_streams_beyond_the_history_cap_are_gone() {
    let h = Harness::with_limits(pool(), Some(KEY), Duration::ZERO, small_limits()).await;
    for i in 0..6 {
        let id = format!("s{i}");
        assert_eq!(start(&h, 19000, &id).await.0, StatusCode::OK);
        let (status, _) = h
            .post("/events/stream_ended", &json!({"stream_id": id}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, ended) = h.get("/streams?status=ended").await;
    let ids: Vec<&str> = ended
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s4", "s5"]);
    let (status, _) = h.get("/streams/s0/stats").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn streams_list_pages_on_request_and_is_whole_by_default() {
    let limits = StreamLimits {
        max_active: 100,
        max_per_engine: 100,
        ..StreamLimits::default()
    };
    let h = Harness::with_limits(pool(), Some(KEY), Duration::ZERO, limits).await;
    for i in 0..25 {
        assert_eq!(
            start(&h, 19000, &format!("p{i:02}")).await.0,
            StatusCode::OK
        );
    }
    let (status, headers, all) = send_raw(&h.app, "GET", "/streams", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 25);
    assert_eq!(headers["x-total-count"], "25");
    let (_, headers, page) = send_raw(
        &h.app,
        "GET",
        "/streams?offset=10&limit=10",
        &[],
        Vec::new(),
    )
    .await;
    let ids: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, (10..20).map(|i| format!("p{i}")).collect::<Vec<_>>());
    assert_eq!(headers["x-total-count"], "25");
    let (_, _, tail) = send_raw(
        &h.app,
        "GET",
        "/streams?offset=20&limit=10",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(tail.as_array().unwrap().len(), 5);
    let (status, _) = h.get("/streams?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = h.get("/streams?limit=-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn streams_nothing_confirms_are_ended() {
    let limits = StreamLimits {
        unconfirmed_after: Some(Duration::from_millis(1)),
        ..StreamLimits::default()
    };
    let h = Harness::with_limits(pool(), Some(KEY), Duration::ZERO, limits).await;
    // Its stat_url never answers, so no stats read confirms it.
    assert_eq!(start(&h, 19000, "quiet").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let summary = h
        .streams
        .call(
            acevisor::actors::streams::StreamsMsg::CollectNow,
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.ended, vec![("quiet".to_string(), "unconfirmed")]);
    let (_, s) = h.get("/streams?status=ended").await;
    assert_eq!(s[0]["id"], "quiet");
}
