//! Property-based fuzzing of the HTTP API over the real router (a fake Supervisor, the real
//! Streams actor): random routes and odd paths, methods, query strings, key and content-type
//! headers, and bodies (valid events, random JSON, random bytes, deep nesting, oversized).
//! Whatever arrives, the answer is never a 5xx other than the documented 503 of provisioning,
//! every error is a JSON `{"detail": ...}`, no answer takes longer than a generous bound, and
//! provisioning is attempted only for an empty body or a JSON object sent as JSON.
//! Bounded: a fixed number of cases, no failure files written.

mod common;

use std::time::Duration;

use acevisor::core::model::EnginePhase;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

/// No answer may take longer than this (every route is bounded far below it).
const ANSWER_BOUND: Duration = Duration::from_secs(10);
const CASES: u32 = 1000;

#[derive(Clone, Debug)]
struct Fuzzed {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn path() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "/engines",
        "/engines/acestream-1",
        "/engines/000000000001",
        "/engines/%00",
        "/engines/..%2F..",
        "/streams",
        "/streams/fz-1/stats",
        "/streams/%2F%2E%2E/stats",
        "/vpn/status",
        "/orchestrator/status",
        "/health/status",
        "/livez",
        "/readyz",
        "/metrics",
        "/provision/acestream",
        "/events/stream_started",
        "/events/stream_ended",
        "/",
        "//engines",
        "/engines/",
        "/events/",
        "/provision/acestream/extra",
    ])
    .prop_map(str::to_string);
    let odd = "(/[a-zA-Z0-9%._~-]{0,30}){1,4}";
    let query = prop::sample::select(vec![
        "",
        "?status=started",
        "?status=ended",
        "?status=bogus",
        "?prefer=free",
        "?prefer=x",
        "?since=2026-01-01T00:00:00Z",
        "?since=yesterday",
        "?limit=2&offset=1",
        "?limit=0",
        "?limit=-1",
        "?offset=99999999999999999999999",
        "?container_id=acestream-1",
        "?%zz=%zz",
        "?status",
        "?&&&=&",
    ]);
    (
        prop_oneof![4 => known, 1 => odd.prop_map(|s| s)],
        query,
        "[a-z0-9=&%]{0,12}",
    )
        .prop_map(|(p, q, extra)| {
            if q.is_empty() || extra.is_empty() {
                format!("{p}{q}")
            } else {
                format!("{p}{q}&{extra}")
            }
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let started = (
        "[a-z0-9-]{1,12}",
        prop::sample::select(vec![19000u16, 19004, 1, 65535]),
    )
        .prop_map(|(id, port)| {
            started_body("172.18.0.2", port, &id, "http://127.0.0.1:9/stat")
                .to_string()
                .into_bytes()
        });
    let ended = "[a-z0-9-]{0,12}".prop_map(|id| json!({"stream_id": id}).to_string().into_bytes());
    let deep = (1usize..5000).prop_map(|n| {
        let mut b = b"{\"x\":".to_vec();
        b.extend(std::iter::repeat_n(b'[', n));
        b.extend(std::iter::repeat_n(b']', n));
        b.push(b'}');
        b
    });
    prop_oneof![
        2 => Just(Vec::new()),
        3 => started,
        2 => ended,
        1 => Just(br#"{"labels":{},"env":{},"host_port":null}"#.to_vec()),
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => prop::collection::vec(any::<u8>(), 0..512),
        1 => deep,
        1 => Just(br#"{"a":"\ud800","a":1}"#.to_vec()),
        1 => (0usize..3).prop_map(|extra| vec![b' '; 64 * 1024 + extra * 8000]),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let auth = prop::sample::select(vec![
        vec![],
        vec![("authorization", format!("Bearer {KEY}"))],
        vec![("authorization", "Bearer wrong".to_string())],
        vec![("authorization", "Basic eDp5".to_string())],
        vec![("x-api-key", KEY.to_string())],
        vec![("X-API-KEY", KEY.to_string())],
        vec![
            ("authorization", format!("Bearer {KEY}")),
            ("x-api-key", "other".to_string()),
        ],
        vec![
            ("x-api-key", KEY.to_string()),
            ("x-api-key", KEY.to_string()),
        ],
    ]);
    let content_type = prop::sample::select(vec![
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/problem+json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some(";;;"),
    ]);
    (auth, content_type).prop_map(|(mut h, ct)| {
        if let Some(ct) = ct {
            h.push(("content-type", ct.to_string()));
        }
        h
    })
}

/// Mostly a route with its own method (so handlers and extractors are reached), else any
/// method on any path.
fn target() -> impl Strategy<Value = (&'static str, String)> {
    let routes = prop::sample::select(vec![
        ("GET", "/engines"),
        ("GET", "/engines/acestream-1"),
        ("GET", "/engines/nope"),
        ("GET", "/streams"),
        ("GET", "/streams/fz-1/stats"),
        ("GET", "/vpn/status"),
        ("GET", "/orchestrator/status"),
        ("GET", "/health/status"),
        ("GET", "/livez"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/provision/acestream"),
        ("POST", "/events/stream_started"),
        ("POST", "/events/stream_started"),
        ("POST", "/events/stream_ended"),
        ("GET", "/vpn/publicip"),
        ("POST", "/health/circuit-breaker/reset"),
        ("GET", "/containers/acestream-1"),
        ("DELETE", "/containers/nope"),
        ("GET", "/by-label"),
        ("POST", "/scale/3"),
        ("POST", "/scale/-1"),
        ("POST", "/gc"),
        ("POST", "/provision"),
        ("GET", "/"),
        ("GET", "/ui/state"),
    ]);
    let query = prop::sample::select(vec![
        "",
        "",
        "?status=started",
        "?status=ended&container_id=acestream-1",
        "?status=bogus",
        "?prefer=free",
        "?since=2026-01-01T00:00:00Z",
        "?since=yesterday",
        "?limit=2&offset=1",
        "?limit=0",
        "?offset=x",
        "?wait=ready",
        "?wait=never",
        "?key=wrong",
        "?key=acevisor.vpn&value=gluetun",
    ]);
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
    ]);
    prop_oneof![
        3 => (routes, query).prop_map(|((m, p), q)| (m, format!("{p}{q}"))),
        1 => (method, path()),
    ]
}

fn request() -> impl Strategy<Value = Fuzzed> {
    (target(), headers(), body()).prop_map(|((method, path), headers, body)| Fuzzed {
        method,
        path,
        headers,
        body,
    })
}

/// The routes that may answer 503 here: provisioning is blocked in the fake world, the fake
/// world has no connected VPN to ask its public IP, and liveness/readiness report why not.
fn may_be_unavailable(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    matches!(
        path,
        "/provision/acestream" | "/provision" | "/readyz" | "/livez" | "/vpn/publicip"
    )
}

async fn check(h: &Harness, f: Fuzzed) -> Result<(), TestCaseError> {
    let mut req = Request::builder().method(f.method).uri(f.path.as_str());
    for (k, v) in &f.headers {
        req = req.header(*k, v.as_str());
    }
    let Ok(req) = req.body(Body::from(f.body.clone())) else {
        // Not a request an HTTP client can send (the URI does not parse): nothing to check.
        return Ok(());
    };
    let answer = tokio::time::timeout(ANSWER_BOUND, async {
        let response = h.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap();
        (status, bytes)
    })
    .await;
    let Ok((status, bytes)) = answer else {
        return Err(TestCaseError::fail(format!(
            "no answer within {ANSWER_BOUND:?}: {} {}",
            f.method, f.path
        )));
    };
    let what = format!("{} {} {:?} -> {status}", f.method, f.path, f.headers);
    prop_assert!(
        status.as_u16() < 500
            || (status == StatusCode::SERVICE_UNAVAILABLE && may_be_unavailable(&f.path)),
        "{}",
        what
    );
    // Provisioning was attempted (the fake world answers 503 max_capacity) only for an empty body
    // or a JSON object sent as JSON.
    if f.method == "POST"
        && matches!(
            f.path.split('?').next(),
            Some("/provision/acestream" | "/provision")
        )
        && status == StatusCode::SERVICE_UNAVAILABLE
    {
        let types: Vec<&String> = f
            .headers
            .iter()
            .filter(|(k, _)| *k == "content-type")
            .map(|(_, v)| v)
            .collect();
        let declared_json = !types.is_empty()
            && types
                .iter()
                .all(|v| v.starts_with("application/json") || v.ends_with("+json"));
        let empty = f.body.trim_ascii().is_empty();
        let object = serde_json::from_slice::<serde_json::Map<String, Value>>(&f.body).is_ok();
        prop_assert!(
            empty || (object && declared_json),
            "{} provisioned for the body {:?}",
            what,
            String::from_utf8_lossy(&f.body)
        );
    }
    if status.as_u16() >= 400 && f.method != "HEAD" {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        prop_assert!(
            !v["detail"].is_null(),
            "{} answered no JSON detail: {}",
            what,
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(())
}

#[test]
fn random_requests_never_get_a_5xx_or_a_slow_answer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(Harness::new(snapshot(vec![
        engine(1, EnginePhase::Ready, "172.18.0.2", 19000, true),
        engine(2, EnginePhase::Ready, "172.18.0.2", 19004, false),
    ])));
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&request(), |f| rt.block_on(check(&h, f)));
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still serving, and the stream book answers.
    let (status, _) = rt.block_on(h.get("/livez"));
    assert_eq!(status, StatusCode::OK);
    let (status, streams) = rt.block_on(h.get("/streams"));
    assert_eq!(status, StatusCode::OK);
    assert!(streams.is_array());
}
