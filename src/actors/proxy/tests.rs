//! The Proxy and its StreamSessions against a fake Supervisor (two engines, the watchers it was
//! given) and fake engines on loopback: a trouble notice moves a session at once, under a
//! `stream.failover` span that is a child of the incident's span; a crashed session is restarted
//! on the same viewer channel, and past the restart intensity its viewers end with nothing held
//! (no reservation, no playback connection).

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tracing::info_span;
use tracing_subscriber::layer::{Context, SubscriberExt};

use super::*;
use crate::actors::messages::{EngineRemoved, EngineView, ProvisionError, RemovalWatcher};
use crate::core::model::EnginePhase;
use crate::core::proxy::parse_content;

const ID: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
struct World {
    /// Engine ports, by engine number (acestream-1, acestream-2).
    ports: Mutex<Vec<u16>>,
    /// The engine each content holds.
    held: Mutex<Vec<(String, String)>>,
    removal: Mutex<Vec<RemovalWatcher>>,
    trouble: Mutex<Vec<RemovalWatcher>>,
    /// Open playback connections over all engines.
    playing: AtomicI64,
    stops: AtomicU32,
    /// What the sessions told the Streams actor: `started <engine port>` / `ended <reason>`.
    records: Mutex<Vec<String>>,
}

/// A Streams actor that only notes what the sessions record.
struct FakeStreams;

impl Actor for FakeStreams {
    type Msg = crate::actors::streams::StreamsMsg;
    type State = Arc<World>;
    type Arguments = Arc<World>;
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        w: Arc<World>,
    ) -> Result<Arc<World>, ActorProcessingErr> {
        Ok(w)
    }
    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        w: &mut Arc<World>,
    ) -> Result<(), ActorProcessingErr> {
        use crate::actors::streams::StreamsMsg;
        let note = match msg {
            StreamsMsg::Started(req, _) => format!("started {}", req.engine.port),
            StreamsMsg::Ended(req, _) => format!("ended {}", req.reason.unwrap_or_default()),
            _ => return Ok(()),
        };
        w.records.lock().unwrap().push(note);
        Ok(())
    }
}

impl World {
    fn holding(&self) -> Vec<(String, String)> {
        self.held.lock().unwrap().clone()
    }
}

struct FakeSup;

impl Actor for FakeSup {
    type Msg = SupervisorMsg;
    type State = Arc<World>;
    type Arguments = Arc<World>;
    async fn pre_start(
        &self,
        _: ActorRef<SupervisorMsg>,
        w: Arc<World>,
    ) -> Result<Arc<World>, ActorProcessingErr> {
        Ok(w)
    }
    async fn handle(
        &self,
        _: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        w: &mut Arc<World>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::ReserveEngine {
                content,
                exclude,
                reply,
                ..
            } => {
                let mut held = w.held.lock().unwrap();
                let ports = w.ports.lock().unwrap().clone();
                let free = (1..=ports.len())
                    .map(|n| format!("acestream-{n}"))
                    .find(|e| !exclude.contains(e) && !held.iter().any(|(_, h)| h == e));
                let answer = free.map(|e| {
                    held.retain(|(c, _)| *c != content);
                    held.push((content, e.clone()));
                    let n: usize = e.trim_start_matches("acestream-").parse().unwrap();
                    view(&e, ports[n - 1])
                });
                let _ = reply.send(answer);
            }
            SupervisorMsg::ReleaseEngine { content } => {
                w.held.lock().unwrap().retain(|(c, _)| *c != content);
            }
            SupervisorMsg::WatchRemovals(watcher) => w.removal.lock().unwrap().push(watcher),
            SupervisorMsg::WatchTrouble(watcher) => w.trouble.lock().unwrap().push(watcher),
            SupervisorMsg::Provision { reply, .. } => {
                let _ = reply.send(Err(ProvisionError::MaxCapacity));
            }
            _ => {}
        }
        Ok(())
    }
}

fn view(name: &str, port: u16) -> EngineView {
    EngineView {
        name: name.into(),
        ordinal: 1,
        vpn: None,
        vpn_id: None,
        forwarded: false,
        p2p_port: 40000,
        http_port: port,
        phase: EnginePhase::Ready,
        container_id: Some(format!("c0ffee-{name}")),
        host: Some("127.0.0.1".into()),
        streams: 0,
        labels: Default::default(),
        reserved: 0,
    }
}

/// Counts open playback connections while alive.
struct Open(Arc<World>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.playing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fake engine on loopback: getstream, an endless playback, stop.
async fn fake_engine(w: Arc<World>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (w1, w2) = (w.clone(), w);
    let app = axum::Router::new()
        .route(
            "/ace/getstream",
            get(move || async move {
                format!(
                    r#"{{"response":{{"playback_url":"http://127.0.0.1:{port}/play","command_url":"http://127.0.0.1:{port}/cmd","stat_url":"http://127.0.0.1:{port}/stat","playback_session_id":"s1","is_live":1}},"error":null}}"#
                )
            }),
        )
        .route(
            "/play",
            get(move || {
                let w = w1.clone();
                async move {
                    w.playing.fetch_add(1, Ordering::SeqCst);
                    let open = Open(w);
                    let chunks = futures_util::stream::unfold(open, |open| async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Some((Ok::<_, std::io::Error>(Bytes::from(vec![0x47u8; 1316])), open))
                    });
                    Body::from_stream(chunks)
                }
            }),
        )
        .route(
            "/cmd",
            get(move || {
                let w = w2.clone();
                async move {
                    w.stops.fetch_add(1, Ordering::SeqCst);
                    r#"{"response":"ok","error":null}"#
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn start(w: &Arc<World>) -> ActorRef<ProxyMsg> {
    for _ in 0..2 {
        let port = fake_engine(w.clone()).await;
        w.ports.lock().unwrap().push(port);
    }
    let (sup, _) = Actor::spawn(None, FakeSup, w.clone()).await.unwrap();
    let (streams, _) = Actor::spawn(None, FakeStreams, w.clone()).await.unwrap();
    let (proxy, _) = Actor::spawn(
        None,
        Proxy,
        ProxyArgs {
            supervisor: sup,
            streams: Some(streams.into()),
            config: ProxyConfig {
                linger: Duration::from_millis(200),
                start_timeout: Duration::from_secs(5),
                // Only a notice can move the session in these tests.
                stall_timeout: Duration::from_secs(3600),
                failover_timeout: Duration::from_secs(5),
                ..ProxyConfig::default()
            },
        },
    )
    .await
    .unwrap();
    proxy
}

async fn join(proxy: &ActorRef<ProxyMsg>) -> mpsc::Receiver<Piece> {
    let content = parse_content(Some(ID), None).unwrap();
    proxy
        .call(|reply| ProxyMsg::Join { content, reply }, None)
        .await
        .unwrap()
        .unwrap()
}

async fn read(rx: &mut mpsc::Receiver<Piece>, n: usize) {
    let mut got = 0;
    while got < n {
        let piece = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("bytes keep coming")
            .expect("the viewer's channel stays open");
        got += piece.expect("bytes, not a refusal").len();
    }
}

async fn session(proxy: &ActorRef<ProxyMsg>) -> SessionView {
    let views = proxy.call(ProxyMsg::Sessions, None).await.unwrap().unwrap();
    views
        .into_iter()
        .find(|v| v.content == format!("id:{ID}"))
        .expect("the session")
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records each new span's name and its parent's name.
/// `(span, its parent)` by name.
type SpanParent = (String, Option<String>);

#[derive(Clone, Default)]
struct Parents(Arc<Mutex<Vec<SpanParent>>>);

impl<S> tracing_subscriber::Layer<S> for Parents
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let span = ctx.span(id).unwrap();
        let parent = span.parent().map(|p| p.name().to_string());
        self.0
            .lock()
            .unwrap()
            .push((span.name().to_string(), parent));
    }
}

#[tokio::test]
async fn a_trouble_notice_moves_the_session_at_once_under_the_incidents_span() {
    let parents = Parents::default();
    let _installed =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(parents.clone()));
    let w = Arc::new(World::default());
    let proxy = start(&w).await;
    let mut rx = join(&proxy).await;
    read(&mut rx, 20_000).await;
    assert_eq!(session(&proxy).await.engine.as_deref(), Some("acestream-1"));
    until("watching", || async {
        !w.trouble.lock().unwrap().is_empty()
    })
    .await;

    // The Supervisor says the engine's VPN failed, inside the incident's span.
    info_span!("vpn.failed").in_scope(|| {
        w.trouble.lock().unwrap().retain(|watch| {
            (watch.0)(EngineRemoved {
                name: "acestream-1".into(),
                container_id: None,
            })
        })
    });
    // The same viewer channel goes on with bytes from the other engine, long before any stall.
    until("moved", || async {
        session(&proxy).await.engine.as_deref() == Some("acestream-2")
    })
    .await;
    read(&mut rx, 20_000).await;
    let s = session(&proxy).await;
    assert_eq!((s.failovers, s.viewers, s.restarts), (1, 1, 0));
    // The one record moved with it: started again on the new engine, never ended between.
    let ports = w.ports.lock().unwrap().clone();
    until("recorded on the new engine", || async {
        w.records.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        *w.records.lock().unwrap(),
        [
            format!("started {}", ports[0]),
            format!("started {}", ports[1])
        ]
    );
    assert!(s.delivered >= 40_000 && s.bytes >= s.delivered, "{s:?}");
    assert_eq!(
        w.holding(),
        [(format!("id:{ID}"), "acestream-2".to_string())]
    );
    until("the old playback stopped", || async {
        w.stops.load(Ordering::SeqCst) == 1
    })
    .await;
    let spans = parents.0.lock().unwrap().clone();
    assert!(
        spans.contains(&("stream.failover".into(), Some("vpn.failed".into()))),
        "{spans:?}"
    );

    // A notice about an engine it does not play moves nothing.
    w.removal.lock().unwrap().retain(|watch| {
        (watch.0)(EngineRemoved {
            name: "acestream-1".into(),
            container_id: None,
        })
    });
    read(&mut rx, 20_000).await;
    assert_eq!(session(&proxy).await.failovers, 1);

    // The second engine fails too: the first one (back, under the same name) takes it again.
    w.trouble.lock().unwrap().retain(|watch| {
        (watch.0)(EngineRemoved {
            name: "acestream-2".into(),
            container_id: None,
        })
    });
    until("moved back", || async {
        session(&proxy).await.engine.as_deref() == Some("acestream-1")
    })
    .await;
    read(&mut rx, 20_000).await;
    assert_eq!(session(&proxy).await.failovers, 2);
}

#[tokio::test]
async fn a_crashed_session_restarts_on_the_same_viewers_and_past_the_intensity_leaks_nothing() {
    let w = Arc::new(World::default());
    let proxy = start(&w).await;
    let mut rx = join(&proxy).await;
    read(&mut rx, 20_000).await;
    let label = format!("id:{ID}");

    for n in 1..=SESSION_RESTARTS {
        // The actor itself panics, or (every other time) the work it watches does.
        let fault = if n % 2 == 0 {
            ProxyMsg::PanicSessionWork(label.clone())
        } else {
            ProxyMsg::CrashSession(label.clone())
        };
        proxy.cast(fault).unwrap();
        until("restarted", || async {
            let s = session(&proxy).await;
            s.restarts == n && s.engine.is_some()
        })
        .await;
        // The viewer's channel never closed: bytes go on.
        read(&mut rx, 20_000).await;
        // The crashed session's work is gone: one playback connection, one reservation.
        until("one playback", || async {
            w.playing.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(w.holding().len(), 1);
    }

    // One crash too many within the window: the viewer's response ends, nothing stays held.
    proxy.cast(ProxyMsg::CrashSession(label.clone())).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(piece) = rx.recv().await {
            piece.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the viewer's channel closed");
    until("released", || async { w.holding().is_empty() }).await;
    until("no playback", || async {
        w.playing.load(Ordering::SeqCst) == 0
    })
    .await;
    let s = session(&proxy).await;
    assert!(!s.live && s.engine.is_none(), "{s:?}");
    assert_eq!(s.restarts, SESSION_RESTARTS);
    // A new viewer gets a new session.
    let mut again = join(&proxy).await;
    read(&mut again, 20_000).await;
    assert!(session(&proxy).await.live);
}
