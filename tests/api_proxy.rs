//! `GET /ace/getstream` in memory: a fake Supervisor that reserves one engine, a fake engine
//! (axum on loopback) that streams bytes or refuses the content. Bad input answers precise JSON,
//! an engine's refusal is a 502 with its message and the engine is released, no engine is a 503
//! with `Retry-After`, viewers of one content share one reservation, and the last viewer leaving
//! stops the engine's playback after the linger. Over the API's real Streams actor, a session's
//! `/streams` record has the shape of an external stream's, with its viewers, bytes delivered and
//! failovers, and its engine counts one stream, not two.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acevisor::actors::messages::{EngineView, ProvisionError, SupervisorMsg};
use acevisor::actors::proxy::{Proxy, ProxyArgs};
use acevisor::api::{ApiContext, router};
use acevisor::config::{Config, ProxyConfig};
use acevisor::core::model::EnginePhase;
use axum::body::{Body, Bytes};
use axum::routing::get;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tower::ServiceExt;

#[derive(Default)]
struct Book {
    reserves: AtomicU32,
    releases: AtomicU32,
    stops: AtomicU32,
    /// The engine answers `{"error": ...}` to getstream.
    refuse: bool,
    /// No engine at all.
    none: bool,
    held: Mutex<Option<String>>,
}

struct FakeSup;

impl Actor for FakeSup {
    type Msg = SupervisorMsg;
    type State = (Arc<Book>, u16);
    type Arguments = (Arc<Book>, u16);
    async fn pre_start(
        &self,
        _: ActorRef<SupervisorMsg>,
        a: (Arc<Book>, u16),
    ) -> Result<(Arc<Book>, u16), ActorProcessingErr> {
        Ok(a)
    }
    async fn handle(
        &self,
        _: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        (book, port): &mut (Arc<Book>, u16),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::ReserveEngine { content, reply, .. } => {
                let mut held = book.held.lock().unwrap();
                let answer = if book.none || held.as_ref().is_some_and(|c| *c != content) {
                    None
                } else {
                    if held.is_none() {
                        book.reserves.fetch_add(1, Ordering::SeqCst);
                    }
                    *held = Some(content);
                    Some(view(*port))
                };
                let _ = reply.send(answer);
            }
            SupervisorMsg::ReleaseEngine { .. } if book.held.lock().unwrap().take().is_some() => {
                book.releases.fetch_add(1, Ordering::SeqCst);
            }
            SupervisorMsg::Provision { reply, .. } => {
                let _ = reply.send(Err(ProvisionError::MaxCapacity));
            }
            _ => {}
        }
        Ok(())
    }
}

fn view(port: u16) -> EngineView {
    EngineView {
        name: "acestream-1".into(),
        ordinal: 1,
        vpn: None,
        vpn_id: None,
        forwarded: false,
        p2p_port: 40000,
        http_port: port,
        phase: EnginePhase::Ready,
        container_id: Some("c0ffee000001".into()),
        host: Some("127.0.0.1".into()),
        streams: 0,
        labels: Default::default(),
        reserved: 0,
    }
}

/// A fake engine on loopback: getstream (JSON or an error), an endless playback, stop.
async fn fake_engine(book: Arc<Book>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let b = book.clone();
    let app = axum::Router::new()
        .route(
            "/ace/getstream",
            get(move || {
                let b = b.clone();
                async move {
                    if b.refuse {
                        return r#"{"response":null,"error":"no such content"}"#.to_string();
                    }
                    format!(
                        r#"{{"response":{{"playback_url":"http://127.0.0.1:{port}/play","command_url":"http://127.0.0.1:{port}/cmd","stat_url":"http://127.0.0.1:{port}/stat","playback_session_id":"s1","is_live":1}},"error":null}}"#
                    )
                }
            }),
        )
        .route(
            "/play",
            get(|| async {
                let chunks = futures_util::stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from(vec![0x47u8; 1316])), ()))
                });
                Body::from_stream(chunks)
            }),
        )
        .route(
            "/cmd",
            get(move || {
                let b = book.clone();
                async move {
                    b.stops.fetch_add(1, Ordering::SeqCst);
                    r#"{"response":"ok","error":null}"#
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn app(book: Arc<Book>) -> axum::Router {
    let port = fake_engine(book.clone()).await;
    let (sup, _) = Actor::spawn(None, FakeSup, (book, port)).await.unwrap();
    let cfg = Config::parse("").unwrap();
    let (streams, _) = Actor::spawn(
        None,
        acevisor::actors::streams::Streams,
        acevisor::actors::streams::StreamsArgs {
            supervisor: sup.clone(),
            engine_client: Arc::new(
                acevisor::clients::engine::EngineClient::new(Duration::from_secs(2)).unwrap(),
            ),
            collect_interval: Duration::from_secs(3600),
            call_timeout: Duration::from_secs(1),
            limits: acevisor::api::stream_limits(&cfg),
        },
    )
    .await
    .unwrap();
    let (proxy, _) = Actor::spawn(
        None,
        Proxy,
        ProxyArgs {
            supervisor: sup.clone(),
            streams: None,
            config: ProxyConfig {
                linger: Duration::from_millis(200),
                start_timeout: Duration::from_millis(500),
                ..ProxyConfig::default()
            },
        },
    )
    .await
    .unwrap();
    let mut ctx = ApiContext::from_config(&cfg, sup, streams, None);
    ctx.proxy = Some(proxy);
    router(ctx)
}

const ID: &str = "0123456789abcdef0123456789abcdef01234567";

async fn get_stream(app: &axum::Router, query: &str) -> axum::response::Response {
    app.clone()
        .oneshot(
            axum::http::Request::get(format!("/ace/getstream?{query}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn json(r: axum::response::Response) -> serde_json::Value {
    let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&b).unwrap()
}

/// Reads `n` bytes of a streaming body.
async fn read(body: &mut axum::body::BodyDataStream, n: usize) {
    use futures_util::StreamExt;
    let mut got = 0;
    while got < n {
        let c = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("bytes keep coming")
            .expect("the body goes on")
            .unwrap();
        got += c.len();
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_ids_are_precise_422s() {
    let app = app(Arc::default()).await;
    for (q, needle) in [
        ("", "required"),
        ("id=abc", "40 hexadecimal"),
        (&format!("id={ID}&infohash={ID}") as &str, "not both"),
    ] {
        let r = get_stream(&app, q).await;
        assert_eq!(r.status(), 422, "{q}");
        let body = json(r).await;
        assert!(body["detail"].to_string().contains(needle), "{q}: {body}");
    }
}

#[tokio::test]
async fn an_engine_refusing_the_content_is_a_502_and_the_engine_is_released() {
    let book = Arc::new(Book {
        refuse: true,
        ..Book::default()
    });
    let app = app(book.clone()).await;
    let r = get_stream(&app, &format!("id={ID}")).await;
    assert_eq!(r.status(), 502);
    let body = json(r).await;
    assert!(
        body["detail"]["message"]
            .to_string()
            .contains("no such content"),
        "{body}"
    );
    until("released", || book.releases.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn no_engine_is_a_503_with_retry_after() {
    let book = Arc::new(Book {
        none: true,
        ..Book::default()
    });
    let app = app(book).await;
    let r = get_stream(&app, &format!("id={ID}")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(json(r).await["detail"]["code"], "no_engine");
}

#[tokio::test]
async fn viewers_share_one_engine_and_the_last_leaving_stops_it_after_the_linger() {
    let book = Arc::new(Book::default());
    let app = app(book.clone()).await;
    let r1 = get_stream(&app, &format!("id={ID}")).await;
    assert_eq!(r1.status(), 200);
    assert_eq!(r1.headers()["content-type"], "video/mp2t");
    let r2 = get_stream(&app, &format!("infohash={ID}&pid=1")).await;
    let r3 = get_stream(&app, &format!("id={}", ID.to_uppercase())).await;
    assert_eq!(r3.status(), 200);
    let mut b1 = r1.into_body().into_data_stream();
    let mut b3 = r3.into_body().into_data_stream();
    read(&mut b1, 50_000).await;
    read(&mut b3, 50_000).await;
    // id= and infohash= are different contents: the infohash viewer found the engine taken.
    assert_eq!(r2.status(), 503);
    assert_eq!(
        book.reserves.load(Ordering::SeqCst),
        1,
        "one engine playback"
    );
    // A viewer leaving stops nothing the other needs.
    drop(b1);
    read(&mut b3, 50_000).await;
    assert_eq!(book.stops.load(Ordering::SeqCst), 0);
    // The last one leaving: stopped and released after the linger.
    drop(b3);
    until("stopped", || book.stops.load(Ordering::SeqCst) == 1).await;
    until("released", || book.releases.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn a_session_in_streams_has_viewers_bytes_and_failovers_and_counts_once() {
    let port = fake_engine(Arc::default()).await;
    let engine = common::engine(1, EnginePhase::Ready, "127.0.0.1", port, true);
    let container = engine.container_id.clone().unwrap();
    let mut h = common::Harness::new(common::snapshot(vec![engine])).await;
    let (proxy, _) = Actor::spawn(
        None,
        Proxy,
        ProxyArgs {
            supervisor: h.supervisor.clone(),
            streams: Some(h.streams.clone().into()),
            config: ProxyConfig::default(),
        },
    )
    .await
    .unwrap();
    let mut ctx = h.ctx.clone();
    ctx.proxy = Some(proxy);
    let app = router(ctx);

    let r = get_stream(&app, &format!("id={ID}")).await;
    assert_eq!(r.status(), 200);
    let mut body = r.into_body().into_data_stream();
    read(&mut body, 50_000).await;
    // The viewer reads on like a player (one falling behind would be dropped).
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        while body.next().await.is_some() {}
    });
    // An external proxy's stream on the same engine.
    let ext = common::started_body("127.0.0.1", port, "ext-1", "http://127.0.0.1:9/stat");
    let (status, _) = h.post("/events/stream_started", &ext).await;
    assert_eq!(status, 200);

    // The engine carries two streams, each counted once: the session through its reservation
    // (the Supervisor adds those), the external one through the counts.
    common::counts_become(&mut h.counts, BTreeMap::from([(container, 1)])).await;

    let (status, list) = common::send(&app, "GET", "/streams", &[], None).await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let session = list
        .iter()
        .find(|s| s["id"] == format!("proxy:id:{ID}"))
        .expect("the session's record");
    let external = list.iter().find(|s| s["id"] == "ext-1").unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(session), keys(external), "one shape");
    assert_eq!(session["viewers"], 1, "{session}");
    assert!(
        session["bytes_delivered"].as_u64().unwrap() >= 50_000,
        "{session}"
    );
    assert_eq!(session["failovers"], 0, "{session}");
    assert_eq!(session["container_name"], "acestream-1", "{session}");
    for field in ["viewers", "bytes_delivered", "failovers"] {
        assert!(external[field].is_null(), "{field} of {external}");
    }
    // The dashboard's engine row: two streams, watched by the session's two viewers (a second
    // one joins now) and the external stream's one.
    let second = get_stream(&app, &format!("id={ID}")).await;
    assert_eq!(second.status(), 200);
    let mut body2 = second.into_body().into_data_stream();
    read(&mut body2, 1).await;
    let reader2 = tokio::spawn(async move {
        use futures_util::StreamExt;
        while body2.next().await.is_some() {}
    });
    let (status, state) = common::send(&app, "GET", "/ui/state", &[], None).await;
    assert_eq!(status, 200);
    let row = &state["engines"][0];
    assert_eq!(row["container_name"], "acestream-1", "{row}");
    assert_eq!(row["viewers"], 3, "{row}");
    reader.abort();
    reader2.abort();
}
