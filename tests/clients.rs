//! The HTTP clients against in-test fakes of Gluetun's control server (v3.41+, pre-v3.41, v3.40,
//! v3.38) and of an AceStream engine, served by axum on 127.0.0.1:0, and against the testbed's fake
//! Gluetun served in-process in every version profile, with the role files each version accepts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acevisor::clients::engine::{EngineClient, EngineError, StatError};
use acevisor::clients::gluetun::{GluetunClient, PortRoute};
use acevisor::clients::{ControlError, ControlTarget, EngineApi, TunnelStatus, VpnControl};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const KEY: &str = "s3cret";
/// Generous: answers from the in-test servers must not time out on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(5);

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// An address where nothing listens.
async fn closed_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server that accepts connections and never answers.
async fn silent_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Fake Gluetun
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Generation {
    /// v3.41+: `/v1/portforward`; the legacy route redirects there.
    Current,
    /// Before v3.41: only `/v1/openvpn/portforwarded`.
    Legacy,
    /// v3.40: unknown routes answer 401 (so `/v1/portforward` does).
    V340,
    /// v3.38 and earlier: unknown routes answer 400 (so `/v1/portforward` does).
    V338,
}

struct Gluetun {
    key: Option<&'static str>,
    generation: Mutex<Generation>,
    status: Mutex<String>,
    port_body: Mutex<Value>,
    /// Overrides every answer of `/v1/vpn/status` when set.
    status_override: Mutex<Option<(StatusCode, String)>>,
    /// Routes the API key does not open (as a too-narrow auth role).
    forbidden: Vec<&'static str>,
    public_ip: &'static str,
    hits: Mutex<Vec<String>>,
}

impl Gluetun {
    fn new(generation: Generation, port_body: Value) -> Gluetun {
        Gluetun {
            key: Some(KEY),
            generation: Mutex::new(generation),
            status: Mutex::new("running".into()),
            port_body: Mutex::new(port_body),
            status_override: Mutex::new(None),
            forbidden: Vec::new(),
            public_ip: "",
            hits: Mutex::new(Vec::new()),
        }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

async fn gluetun_handler(State(g): State<Arc<Gluetun>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    g.hits.lock().unwrap().push(path.clone());
    let generation = *g.generation.lock().unwrap();
    let known = matches!(
        path.as_str(),
        "/v1/vpn/status" | "/v1/publicip/ip" | "/v1/version" | "/v1/openvpn/portforwarded"
    ) || (path == "/v1/portforward" && generation == Generation::Current);
    if !known && generation == Generation::V340 {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    if !known && generation == Generation::V338 {
        let sub = path.trim_start_matches("/v1");
        return (StatusCode::BAD_REQUEST, format!("GET {sub} not found")).into_response();
    }
    let key_ok = match g.key {
        None => true,
        Some(key) => headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(key),
    };
    if !key_ok || g.forbidden.contains(&path.as_str()) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    match path.as_str() {
        "/v1/vpn/status" => {
            if let Some((code, body)) = g.status_override.lock().unwrap().clone() {
                return (code, body).into_response();
            }
            axum::Json(json!({ "status": *g.status.lock().unwrap() })).into_response()
        }
        "/v1/portforward" if generation == Generation::Current => {
            axum::Json(g.port_body.lock().unwrap().clone()).into_response()
        }
        "/v1/openvpn/portforwarded" if generation == Generation::Current => Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, "/v1/portforward")
            .body(Body::empty())
            .unwrap(),
        "/v1/openvpn/portforwarded" => {
            axum::Json(g.port_body.lock().unwrap().clone()).into_response()
        }
        "/v1/publicip/ip" => {
            axum::Json(json!({ "public_ip": g.public_ip, "country": "Nowhere" })).into_response()
        }
        "/v1/version" => {
            axum::Json(json!({ "version": "v3.41.0", "commit": "abc123", "created": "2025-01-01" }))
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "404 page not found").into_response(),
    }
}

async fn start_gluetun(g: Gluetun) -> (Arc<Gluetun>, ControlTarget) {
    let g = Arc::new(g);
    let addr = serve(
        Router::new()
            .fallback(gluetun_handler)
            .with_state(g.clone()),
    )
    .await;
    (g, target(addr, Some(KEY)))
}

fn target(addr: SocketAddr, key: Option<&str>) -> ControlTarget {
    ControlTarget {
        vpn: "gluetun-a".into(),
        base_url: format!("http://{addr}"),
        api_key: key.map(str::to_string),
    }
}

fn gluetun_client() -> GluetunClient {
    GluetunClient::new(TIMEOUT).unwrap()
}

#[tokio::test]
async fn current_gluetun_reports_running_and_prefers_ports_list() {
    let (g, target) = start_gluetun(Gluetun::new(
        Generation::Current,
        json!({ "port": 40000, "ports": [40001, 40002] }),
    ))
    .await;
    let client = gluetun_client();

    let answer = client.probe(&target).await.unwrap();

    assert_eq!(answer.status, TunnelStatus::Running);
    assert_eq!(answer.forwarded_ports.first(), Some(40001));
    assert_eq!(
        client.known_port_route(&target.base_url),
        Some(PortRoute::Current)
    );
    assert_eq!(g.hits("/v1/openvpn/portforwarded"), 0);
}

#[tokio::test]
async fn missing_or_wrong_key_is_unauthorized() {
    let (_g, good) = start_gluetun(Gluetun::new(
        Generation::Current,
        json!({ "port": 40000, "ports": [40000] }),
    ))
    .await;
    let client = gluetun_client();
    let without = ControlTarget {
        api_key: None,
        ..good.clone()
    };
    let wrong = ControlTarget {
        api_key: Some("nope".into()),
        ..good.clone()
    };

    assert_eq!(
        client.probe(&without).await,
        Err(ControlError::Unauthorized)
    );
    assert_eq!(client.probe(&wrong).await, Err(ControlError::Unauthorized));
    assert_eq!(
        client.public_ip(&wrong).await,
        Err(ControlError::Unauthorized)
    );
    assert!(client.probe(&good).await.is_ok());
}

#[tokio::test]
async fn role_without_port_routes_is_unauthorized() {
    let mut fake = Gluetun::new(Generation::Current, json!({ "port": 40000 }));
    fake.forbidden = vec!["/v1/portforward"];
    let (_g, target) = start_gluetun(fake).await;

    // Status opens, the current port route refuses, the legacy one redirects back to it.
    assert_eq!(
        gluetun_client().probe(&target).await,
        Err(ControlError::Unauthorized)
    );
}

#[tokio::test]
async fn port_zero_and_null_list_mean_no_port_yet() {
    let (_g, target) = start_gluetun(Gluetun::new(
        Generation::Current,
        json!({ "port": 0, "ports": null }),
    ))
    .await;

    let answer = gluetun_client().probe(&target).await.unwrap();

    assert_eq!(answer.status, TunnelStatus::Running);
    assert_eq!(answer.forwarded_ports.first(), None);
}

#[tokio::test]
async fn port_not_asked_while_tunnel_is_not_running() {
    let (g, target) = start_gluetun(Gluetun::new(
        Generation::Current,
        json!({ "port": 40000, "ports": [40000] }),
    ))
    .await;
    *g.status.lock().unwrap() = "starting".into();

    let answer = gluetun_client().probe(&target).await.unwrap();

    assert_eq!(answer.status, TunnelStatus::Starting);
    assert_eq!(answer.forwarded_ports.first(), None);
    assert_eq!(g.hits("/v1/portforward"), 0);
}

#[tokio::test]
async fn legacy_gluetun_falls_back_once_and_remembers() {
    let (g, target) =
        start_gluetun(Gluetun::new(Generation::Legacy, json!({ "port": 51413 }))).await;
    let client = gluetun_client();

    let first = client.probe(&target).await.unwrap();
    let second = client.probe(&target).await.unwrap();

    assert_eq!(first.forwarded_ports.first(), Some(51413));
    assert_eq!(second.forwarded_ports.first(), Some(51413));
    assert_eq!(
        client.known_port_route(&target.base_url),
        Some(PortRoute::Legacy)
    );
    assert_eq!(
        g.hits("/v1/portforward"),
        1,
        "the 404 route is asked only once"
    );
    assert_eq!(g.hits("/v1/openvpn/portforwarded"), 2);
}

#[tokio::test]
async fn legacy_gluetun_with_only_a_ports_list() {
    let (_g, target) = start_gluetun(Gluetun::new(
        Generation::Legacy,
        json!({ "ports": [61000, 61001] }),
    ))
    .await;

    let answer = gluetun_client().probe(&target).await.unwrap();

    assert_eq!(answer.forwarded_ports.first(), Some(61000));
}

#[tokio::test]
async fn legacy_route_redirect_after_upgrade_goes_to_current_route() {
    let (g, target) =
        start_gluetun(Gluetun::new(Generation::Legacy, json!({ "port": 51413 }))).await;
    let client = gluetun_client();
    assert_eq!(
        client.probe(&target).await.unwrap().forwarded_ports.first(),
        Some(51413)
    );

    // The container is upgraded to v3.41+ in place: the legacy route now answers 301.
    *g.generation.lock().unwrap() = Generation::Current;
    *g.port_body.lock().unwrap() = json!({ "port": 52000, "ports": [52000] });
    let answer = client.probe(&target).await.unwrap();

    assert_eq!(answer.forwarded_ports.first(), Some(52000));
    assert_eq!(
        client.known_port_route(&target.base_url),
        Some(PortRoute::Current)
    );
    assert_eq!(g.hits("/v1/openvpn/portforwarded"), 2);
}

#[tokio::test]
async fn v340_unknown_route_401_falls_back_to_legacy_route() {
    let (_g, target) =
        start_gluetun(Gluetun::new(Generation::V340, json!({ "port": 43210 }))).await;
    let client = gluetun_client();

    let answer = client.probe(&target).await.unwrap();

    assert_eq!(answer.forwarded_ports.first(), Some(43210));
    assert_eq!(
        client.known_port_route(&target.base_url),
        Some(PortRoute::Legacy)
    );
}

#[tokio::test]
async fn v338_400_on_current_route_falls_back_to_legacy_and_remembers() {
    let (g, target) = start_gluetun(Gluetun::new(Generation::V338, json!({ "port": 45678 }))).await;
    let client = gluetun_client();

    let first = client.probe(&target).await.unwrap();
    let second = client.probe(&target).await.unwrap();

    assert_eq!(first.status, TunnelStatus::Running);
    assert_eq!(first.forwarded_ports.first(), Some(45678));
    assert_eq!(second.forwarded_ports.first(), Some(45678));
    assert_eq!(
        client.known_port_route(&target.base_url),
        Some(PortRoute::Legacy)
    );
    assert_eq!(g.hits("/v1/portforward"), 1, "the 400 route is asked once");
    assert_eq!(g.hits("/v1/openvpn/portforwarded"), 2);
}

#[tokio::test]
async fn neither_port_route_is_a_protocol_error() {
    // A server that knows the status route and nothing else.
    let router = Router::new()
        .route(
            "/v1/vpn/status",
            axum::routing::get(|| async { axum::Json(json!({ "status": "running" })) }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") });
    let addr = serve(router).await;

    match gluetun_client().probe(&target(addr, None)).await {
        Err(ControlError::Protocol(msg)) => assert!(msg.contains("404"), "{msg}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn server_error_is_protocol_with_status_and_body() {
    let (g, target) = start_gluetun(Gluetun::new(Generation::Current, json!({ "port": 1 }))).await;
    *g.status_override.lock().unwrap() = Some((
        StatusCode::INTERNAL_SERVER_ERROR,
        "loop crashed: tun device gone".into(),
    ));

    match gluetun_client().probe(&target).await {
        Err(ControlError::Protocol(msg)) => {
            assert!(msg.contains("500"), "{msg}");
            assert!(msg.contains("loop crashed: tun device gone"), "{msg}");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn non_json_status_is_protocol() {
    let (g, target) = start_gluetun(Gluetun::new(Generation::Current, json!({ "port": 1 }))).await;
    *g.status_override.lock().unwrap() = Some((StatusCode::OK, "<html>proxy login</html>".into()));

    match gluetun_client().probe(&target).await {
        Err(ControlError::Protocol(msg)) => assert!(msg.contains("<html>proxy login"), "{msg}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_tunnel_status_is_kept_verbatim() {
    let (g, target) = start_gluetun(Gluetun::new(Generation::Current, json!({ "port": 1 }))).await;
    *g.status.lock().unwrap() = "reticulating".into();

    let answer = gluetun_client().probe(&target).await.unwrap();

    assert_eq!(answer.status, TunnelStatus::Other("reticulating".into()));
}

#[tokio::test]
async fn silent_server_is_unreachable_after_the_timeout() {
    let addr = silent_addr().await;
    let client = GluetunClient::new(Duration::from_millis(200)).unwrap();

    match client.probe(&target(addr, Some(KEY))).await {
        Err(ControlError::Unreachable(msg)) => {
            assert!(msg.contains(&format!("{addr}/v1/vpn/status")), "{msg}");
            assert!(msg.to_lowercase().contains("timed out"), "{msg}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_connection_is_unreachable_with_url() {
    let addr = closed_addr().await;

    match gluetun_client().probe(&target(addr, Some(KEY))).await {
        Err(ControlError::Unreachable(msg)) => {
            assert!(msg.contains(&format!("{addr}/v1/vpn/status")), "{msg}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn public_ip_empty_is_none_and_set_is_some() {
    let (_g, empty) = start_gluetun(Gluetun::new(Generation::Current, json!({ "port": 1 }))).await;
    let mut fake = Gluetun::new(Generation::Current, json!({ "port": 1 }));
    fake.public_ip = "203.0.113.7";
    let (_g, set) = start_gluetun(fake).await;
    let client = gluetun_client();

    assert_eq!(client.public_ip(&empty).await, Ok(None));
    assert_eq!(client.public_ip(&set).await, Ok(Some("203.0.113.7".into())));
}

#[tokio::test]
async fn version_is_parsed() {
    let (_g, target) = start_gluetun(Gluetun::new(Generation::Current, json!({ "port": 1 }))).await;

    let version = gluetun_client().version(&target).await.unwrap();

    assert_eq!(version.version, "v3.41.0");
    assert_eq!(version.commit.as_deref(), Some("abc123"));
}

// ---------------------------------------------------------------------------------------------
// The testbed's fake Gluetun, every version profile
// ---------------------------------------------------------------------------------------------

use acevisor_testbed::gluetun::{Config as FakeConfig, Gluetun as FakeGluetun, Version};

/// A role for acevisor listing `routes`, with [`KEY`].
fn role_file(routes: &[&str]) -> String {
    let routes: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[roles]]\nname = \"acevisor\"\nauth = \"apikey\"\napikey = \"{KEY}\"\nroutes = [{}]\n",
        routes.join(", ")
    )
}

/// The role acevisor needs on v3.39 / v3.40 (they refuse to start with `GET /v1/portforward`).
const ROUTES_3_40: &[&str] = &[
    "GET /v1/vpn/status",
    "GET /v1/openvpn/portforwarded",
    "GET /v1/publicip/ip",
];
/// The role acevisor needs on v3.41+.
const ROUTES_3_41: &[&str] = &[
    "GET /v1/vpn/status",
    "GET /v1/portforward",
    "GET /v1/openvpn/portforwarded",
    "GET /v1/publicip/ip",
];

/// Serves the testbed fake in `version` on 127.0.0.1:0 from a thread; `None` for a role file
/// means none. The target sends [`KEY`].
fn start_fake(version: Version, port: u16, role_file: Option<&str>) -> ControlTarget {
    let config = FakeConfig {
        version,
        forwarded_port: port,
        ..FakeConfig::default()
    };
    let fake = FakeGluetun::new(config, role_file, std::time::Instant::now())
        .expect("the fake accepts the role file");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        acevisor_testbed::http::serve(listener, move |req| {
            fake.handle(req, std::time::Instant::now())
        })
    });
    target(addr, Some(KEY))
}

/// Probes twice (the second probe uses the remembered route) and returns the port and the route.
async fn probe_twice(target: &ControlTarget) -> (Option<u16>, Option<PortRoute>) {
    let client = gluetun_client();
    let first = client.probe(target).await.unwrap();
    let second = client.probe(target).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.status, TunnelStatus::Running);
    (
        first.forwarded_ports.first(),
        client.known_port_route(&target.base_url),
    )
}

#[tokio::test]
async fn every_version_with_its_role_file_yields_the_port() {
    let rows = [
        // Up to v3.38: no auth (the key is ignored), 400 on the current route.
        (Version::V3_38, None, Some(PortRoute::Legacy)),
        (
            Version::V3_39,
            Some(role_file(ROUTES_3_40)),
            Some(PortRoute::Legacy),
        ),
        (
            Version::V3_40,
            Some(role_file(ROUTES_3_40)),
            Some(PortRoute::Legacy),
        ),
        (
            Version::V3_41,
            Some(role_file(ROUTES_3_41)),
            Some(PortRoute::Current),
        ),
        (
            Version::Head,
            Some(role_file(ROUTES_3_41)),
            Some(PortRoute::Current),
        ),
    ];
    for (version, file, route) in rows {
        let target = start_fake(version, 40123, file.as_deref());
        assert_eq!(
            probe_twice(&target).await,
            (Some(40123), route),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn versions_without_a_role_file_use_their_built_in_role() {
    // v3.39 / v3.40 open the legacy route to everyone, v3.41 both routes.
    for (version, route) in [
        (Version::V3_39, PortRoute::Legacy),
        (Version::V3_40, PortRoute::Legacy),
        (Version::V3_41, PortRoute::Current),
    ] {
        let target = start_fake(version, 40124, None);
        assert_eq!(
            probe_twice(&target).await,
            (Some(40124), Some(route)),
            "{version:?}"
        );
    }
    // HEAD denies by default: 401 on every route is a configuration error.
    let target = start_fake(Version::Head, 40124, None);
    assert_eq!(
        gluetun_client().probe(&target).await,
        Err(ControlError::Unauthorized)
    );
}

#[tokio::test]
async fn wrong_key_or_missing_port_route_is_unauthorized_on_every_version_with_roles() {
    for version in [
        Version::V3_39,
        Version::V3_40,
        Version::V3_41,
        Version::Head,
    ] {
        let routes = if version.has_portforward_route() {
            ROUTES_3_41
        } else {
            ROUTES_3_40
        };
        let target = start_fake(version, 40125, Some(&role_file(routes)));
        let wrong = ControlTarget {
            api_key: Some("nope".into()),
            ..target
        };
        assert_eq!(
            gluetun_client().probe(&wrong).await,
            Err(ControlError::Unauthorized),
            "{version:?}: wrong key"
        );

        // The status route opens, neither port route does.
        let target = start_fake(version, 40125, Some(&role_file(&["GET /v1/vpn/status"])));
        assert_eq!(
            gluetun_client().probe(&target).await,
            Err(ControlError::Unauthorized),
            "{version:?}: no port route in the role"
        );
    }
    // v3.41 with only the legacy route listed: it redirects to a route the key does not open.
    let only_legacy = role_file(&["GET /v1/vpn/status", "GET /v1/openvpn/portforwarded"]);
    let target = start_fake(Version::V3_41, 40125, Some(&only_legacy));
    assert_eq!(
        gluetun_client().probe(&target).await,
        Err(ControlError::Unauthorized)
    );
}

#[tokio::test]
async fn remembered_route_follows_a_downgrade_to_v3_38() {
    // One control server address answering as v3.41, then (recreated) as v3.38.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let version = Arc::new(Mutex::new(Version::V3_41));
    let shared = version.clone();
    std::thread::spawn(move || {
        acevisor_testbed::http::serve(listener, move |req| {
            let config = FakeConfig {
                version: *shared.lock().unwrap(),
                forwarded_port: 40126,
                ..FakeConfig::default()
            };
            let now = std::time::Instant::now();
            FakeGluetun::new(config, None, now)
                .unwrap()
                .handle(req, now)
        })
    });
    let target = target(addr, None);
    let client = gluetun_client();
    assert_eq!(
        client.probe(&target).await.unwrap().forwarded_ports.first(),
        Some(40126)
    );
    assert_eq!(
        client.known_port_route(&target.base_url),
        Some(PortRoute::Current)
    );

    *version.lock().unwrap() = Version::V3_38;
    assert_eq!(
        client.probe(&target).await.unwrap().forwarded_ports.first(),
        Some(40126)
    );
    assert_eq!(
        client.known_port_route(&target.base_url),
        Some(PortRoute::Legacy)
    );
}

// ---------------------------------------------------------------------------------------------
// Fake engine
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Engine {
    /// When set, `get_status` answers with this error.
    status_error: Option<&'static str>,
    /// When set, `get_status` answers this raw body.
    status_raw: Option<&'static str>,
    stops: Mutex<Vec<String>>,
}

async fn engine_handler(State(e): State<Arc<Engine>>, uri: Uri) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    match path {
        "/server/api" if query.contains("method=get_status") => {
            if let Some(raw) = e.status_raw {
                return raw.into_response();
            }
            match e.status_error {
                Some(err) => axum::Json(json!({ "result": null, "error": err })),
                // What real engines answer: no `error` key and no ports.
                None => axum::Json(json!({
                    "result": { "playlist_loaded": true,
                                "version": { "code": 3021100, "platform": "linux", "version": "3.2.11" } }
                })),
            }
            .into_response()
        }
        "/webui/api/service" if query == "method=get_version" => axum::Json(json!({
            "result": { "version": "3.2.3", "code": 3020300, "platform": "linux" },
            "error": null
        }))
        .into_response(),
        "/ace/stat/snake/1" => axum::Json(json!({
            "response": { "status": "dl", "peers": 12, "speed_down": 800, "speed_up": 90,
                          "downloaded": 123456, "uploaded": 7890, "livepos": { "pos": "17" } },
            "error": null
        }))
        .into_response(),
        "/ace/stat/camel/2" => axum::Json(json!({
            "response": { "status": "prebuf", "peers": 3, "speedDown": 410, "speedUp": 12,
                          "downloaded": 1000, "uploaded": 0 },
            "error": null
        }))
        .into_response(),
        "/ace/stat/gone/3" | "/ace/cmd/gone/3" => {
            axum::Json(json!({ "response": null, "error": "unknown playback session id" }))
                .into_response()
        }
        "/ace/stat/broken/4" => {
            axum::Json(json!({ "response": null, "error": "internal engine failure" }))
                .into_response()
        }
        p if p.starts_with("/ace/cmd/") => {
            if query == "method=stop" {
                e.stops.lock().unwrap().push(p.to_string());
                axum::Json(json!({ "response": "ok", "error": null })).into_response()
            } else {
                axum::Json(json!({ "response": null, "error": "unknown method" })).into_response()
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn start_engine(e: Engine) -> (Arc<Engine>, SocketAddr) {
    let e = Arc::new(e);
    let addr = serve(Router::new().fallback(engine_handler).with_state(e.clone())).await;
    (e, addr)
}

fn engine_client() -> EngineClient {
    EngineClient::new(TIMEOUT).unwrap()
}

#[tokio::test]
async fn engine_status_in_the_real_shape_is_alive() {
    let (_e, addr) = start_engine(Engine::default()).await;
    let client = engine_client();

    assert_eq!(client.status("127.0.0.1", addr.port()).await, Ok(()));
    let detail = client
        .status_detail("127.0.0.1", addr.port())
        .await
        .unwrap();
    assert_eq!(detail["playlist_loaded"], true);
    assert_eq!(detail["version"]["version"], "3.2.11");
}

#[tokio::test]
async fn engine_status_error_string_is_err_with_message() {
    let (_e, addr) = start_engine(Engine {
        status_error: Some("engine is shutting down"),
        ..Engine::default()
    })
    .await;
    let client = engine_client();

    let err = client.status("127.0.0.1", addr.port()).await.unwrap_err();
    assert!(err.contains("engine is shutting down"), "{err}");
    assert_eq!(
        client.status_detail("127.0.0.1", addr.port()).await,
        Err(EngineError::Api("engine is shutting down".into()))
    );
}

#[tokio::test]
async fn engine_non_json_status_is_protocol() {
    let (_e, addr) = start_engine(Engine {
        status_raw: Some("Service Unavailable"),
        ..Engine::default()
    })
    .await;

    match engine_client()
        .status_detail("127.0.0.1", addr.port())
        .await
    {
        Err(EngineError::Protocol(msg)) => assert!(msg.contains("Service Unavailable"), "{msg}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn engine_unreachable_names_the_url() {
    let addr = closed_addr().await;

    let err = engine_client()
        .status("127.0.0.1", addr.port())
        .await
        .unwrap_err();

    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains(&format!("{addr}/server/api")), "{err}");
}

#[tokio::test]
async fn engine_silent_is_unreachable() {
    let addr = silent_addr().await;
    let client = EngineClient::new(Duration::from_millis(200)).unwrap();

    assert!(matches!(
        client.status_detail("127.0.0.1", addr.port()).await,
        Err(EngineError::Unreachable(_))
    ));
}

#[tokio::test]
async fn engine_version_is_parsed() {
    let (_e, addr) = start_engine(Engine::default()).await;

    let version = engine_client()
        .version("127.0.0.1", addr.port())
        .await
        .unwrap();

    assert_eq!(version.version, "3.2.3");
    assert_eq!(version.code, Some(3020300));
    assert_eq!(version.platform.as_deref(), Some("linux"));
}

#[tokio::test]
async fn stream_stats_snake_and_camel_case() {
    let (_e, addr) = start_engine(Engine::default()).await;
    let client = engine_client();

    let snake = client
        .stream_stats(&format!("http://{addr}/ace/stat/snake/1"))
        .await
        .unwrap();
    assert_eq!(snake.status.as_deref(), Some("dl"));
    assert_eq!(snake.peers, Some(12));
    assert_eq!(snake.speed_down, Some(800));
    assert_eq!(snake.speed_up, Some(90));
    assert_eq!(snake.downloaded, Some(123456));
    assert_eq!(snake.uploaded, Some(7890));
    assert!(snake.livepos.is_some());

    let camel = client
        .stream_stats(&format!("http://{addr}/ace/stat/camel/2"))
        .await
        .unwrap();
    assert_eq!(camel.status.as_deref(), Some("prebuf"));
    assert_eq!(camel.speed_down, Some(410));
    assert_eq!(camel.speed_up, Some(12));
    assert_eq!(camel.uploaded, Some(0));
}

#[tokio::test]
async fn ended_session_is_distinct_from_other_errors() {
    let (_e, addr) = start_engine(Engine::default()).await;
    let client = engine_client();

    assert_eq!(
        client
            .stream_stats(&format!("http://{addr}/ace/stat/gone/3"))
            .await,
        Err(StatError::SessionEnded)
    );
    assert_eq!(
        client
            .stream_stats(&format!("http://{addr}/ace/stat/broken/4"))
            .await,
        Err(StatError::Other(EngineError::Api(
            "internal engine failure".into()
        )))
    );
    assert!(matches!(
        client
            .stream_stats(&format!("http://{addr}/ace/stat/nosuch/5"))
            .await,
        Err(StatError::Other(EngineError::Protocol(msg))) if msg.contains("404")
    ));
}

#[tokio::test]
async fn stop_stream_sends_method_stop() {
    let (e, addr) = start_engine(Engine::default()).await;
    let client = engine_client();

    client
        .stop_stream(&format!("http://{addr}/ace/cmd/abc/42"))
        .await
        .unwrap();

    assert_eq!(
        *e.stops.lock().unwrap(),
        vec!["/ace/cmd/abc/42".to_string()]
    );
    assert_eq!(
        client
            .stop_stream(&format!("http://{addr}/ace/cmd/gone/3"))
            .await,
        Err(StatError::SessionEnded)
    );
}

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn unauthorized_is_logged_once_per_vpn_until_it_recovers() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so the whole test runs under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_g, good) = start_gluetun(Gluetun::new(Generation::Current, json!({ "port": 1 }))).await;
    let client = gluetun_client();
    let keyless = ControlTarget {
        api_key: None,
        ..good.clone()
    };
    let other_vpn = ControlTarget {
        vpn: "gluetun-b".into(),
        ..keyless.clone()
    };
    let count = || logs.text().matches("answered 401").count();

    for _ in 0..3 {
        assert_eq!(
            client.probe(&keyless).await,
            Err(ControlError::Unauthorized)
        );
    }
    assert_eq!(count(), 1);
    let text = logs.text();
    assert!(text.contains("ERROR"), "{text}");
    assert!(text.contains("no API key is configured"), "{text}");
    assert!(text.contains("GET /v1/portforward"), "{text}");
    assert!(text.contains("GET /v1/publicip/ip"), "{text}");

    assert_eq!(
        client.probe(&other_vpn).await,
        Err(ControlError::Unauthorized)
    );
    assert_eq!(count(), 2, "another VPN gets its own message");

    client.probe(&good).await.unwrap();
    assert_eq!(
        client.probe(&keyless).await,
        Err(ControlError::Unauthorized)
    );
    assert_eq!(count(), 3, "a 401 after a recovery is news again");
}
