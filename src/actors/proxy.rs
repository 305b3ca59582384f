//! The built-in stream proxy: a `Proxy` actor owns one `StreamSession` actor per playing content
//! (spawned linked). A session reserves an engine through the Supervisor, opens the content on it
//! (`/ace/getstream?...&format=json`), reads its `playback_url` once and fans the bytes out to
//! every viewer through bounded per-viewer channels (a viewer that falls behind is dropped). When
//! the engine is removed or dies, or its bytes stop for `proxy.stall_timeout`, the session opens
//! the content on another engine and keeps writing to the same viewer channels; only when no
//! engine can be had within `proxy.failover_timeout` do the channels close. With no viewer for
//! `proxy.linger` it stops the engine session (`command_url?method=stop`) and releases the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use crate::actors::messages::{EngineView, ProvisionWait, RemovalWatcher, SupervisorMsg};
use crate::actors::streams::{StreamsHandle, StreamsMsg};
use crate::clients::engine::{EngineClient, StatError};
use crate::config::ProxyConfig;
use crate::core::proxy::{AfterLoss, Content, FailoverCause, after_loss};
use crate::core::streams::{
    EngineAddress, KeyType, SessionInfo, StreamEndedReq, StreamKey, StreamStartedReq,
};

/// Why a viewer gets no stream (the route answers it as JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status: 503 (no engine, retry), 502 (the engine refused the content).
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// What a viewer's channel carries: bytes, or (before any byte) why there will be none.
pub type Piece = Result<Bytes, Refusal>;

pub enum ProxyMsg {
    /// A viewer for `content`: answers the receiving end of its channel.
    Join {
        content: Content,
        reply: RpcReplyPort<mpsc::Receiver<Piece>>,
    },
    /// The proxy's sessions for `/streams` and the tests.
    Sessions(RpcReplyPort<Vec<SessionView>>),
    /// Totals for `/metrics`.
    Totals(RpcReplyPort<ProxyTotals>),
}

/// The proxy's figures for `/metrics`: live sessions and viewers, and counts since start
/// (ended sessions included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyTotals {
    pub sessions: u64,
    pub viewers: u64,
    pub bytes: u64,
    pub failovers: u64,
    /// Sum and count of failover gaps (last byte of the old engine to the first of the new), ms.
    pub gap_ms_sum: u64,
    pub gaps: u64,
}

/// One session as `/streams` and the tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub content: String,
    pub engine: Option<String>,
    pub viewers: usize,
    pub bytes: u64,
    pub failovers: u32,
}

pub struct ProxyArgs {
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The owner of stream records: each session's engine playback is recorded there.
    pub streams: Option<StreamsHandle>,
    pub config: ProxyConfig,
}

pub struct Proxy;

pub struct ProxyState {
    supervisor: ActorRef<SupervisorMsg>,
    streams: Option<StreamsHandle>,
    config: ProxyConfig,
    http: reqwest::Client,
    engine: EngineClient,
    sessions: HashMap<String, (ActorRef<SessionMsg>, Arc<Mutex<Shared>>)>,
    ids: HashMap<ActorId, String>,
    /// Figures of ended sessions.
    ended: ProxyTotals,
}

impl Actor for Proxy {
    type Msg = ProxyMsg;
    type State = ProxyState;
    type Arguments = ProxyArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ProxyMsg>,
        args: ProxyArgs,
    ) -> Result<ProxyState, ActorProcessingErr> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(ProxyState {
            supervisor: args.supervisor,
            streams: args.streams,
            engine: EngineClient::new(Duration::from_secs(10))?,
            config: args.config,
            http,
            sessions: HashMap::new(),
            ids: HashMap::new(),
            ended: ProxyTotals::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProxyMsg>,
        msg: ProxyMsg,
        st: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProxyMsg::Join { content, reply } => {
                let label = content.label();
                let live = st
                    .sessions
                    .get(&label)
                    .filter(|(_, shared)| !shared.lock().unwrap().ended)
                    .map(|(_, shared)| shared.clone());
                let shared = match live {
                    Some(shared) => shared,
                    None => {
                        let shared = Arc::new(Mutex::new(Shared::default()));
                        let args = SessionArgs {
                            content: content.clone(),
                            supervisor: st.supervisor.clone(),
                            streams: st.streams.clone(),
                            config: st.config.clone(),
                            http: st.http.clone(),
                            engine: st.engine.clone(),
                            shared: shared.clone(),
                        };
                        let (actor, _) =
                            Actor::spawn_linked(None, StreamSession, args, myself.get_cell())
                                .await?;
                        st.ids.insert(actor.get_id(), label.clone());
                        st.sessions.insert(label, (actor, shared.clone()));
                        shared
                    }
                };
                let (tx, rx) = mpsc::channel(st.config.viewer_buffer.max(1) as usize);
                {
                    let mut sh = shared.lock().unwrap();
                    sh.viewers.push(tx);
                    sh.empty_since = None;
                }
                let _ = reply.send(rx);
            }
            ProxyMsg::Sessions(reply) => {
                let views = st
                    .sessions
                    .iter()
                    .map(|(content, (_, shared))| {
                        let sh = shared.lock().unwrap();
                        SessionView {
                            content: content.clone(),
                            engine: sh.engine.clone(),
                            viewers: sh.viewers.iter().filter(|v| !v.is_closed()).count(),
                            bytes: sh.bytes,
                            failovers: sh.failovers,
                        }
                    })
                    .collect();
                let _ = reply.send(views);
            }
            ProxyMsg::Totals(reply) => {
                let mut t = st.ended.clone();
                for (_, shared) in st.sessions.values() {
                    let sh = shared.lock().unwrap();
                    t.sessions += 1;
                    t.viewers += sh.viewers.iter().filter(|v| !v.is_closed()).count() as u64;
                    add_figures(&mut t, &sh);
                }
                let _ = reply.send(t);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ProxyMsg>,
        evt: SupervisionEvent,
        st: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        if let Some(label) = st.ids.remove(&cell.get_id()) {
            if let Some(err) = failure {
                warn!(content = %label, error = %err, "stream session crashed; its viewers' responses end");
            }
            if st
                .sessions
                .get(&label)
                .is_some_and(|(a, _)| a.get_id() == cell.get_id())
                && let Some((_, shared)) = st.sessions.remove(&label)
            {
                add_figures(&mut st.ended, &shared.lock().unwrap());
            }
        }
        Ok(())
    }
}

fn add_figures(t: &mut ProxyTotals, sh: &Shared) {
    t.bytes += sh.bytes;
    t.failovers += u64::from(sh.failovers);
    t.gap_ms_sum += sh.gap_ms_sum;
    t.gaps += sh.gaps;
}

/// What a session shares with the Proxy (viewers join through it) and its pump task.
#[derive(Default)]
pub struct Shared {
    viewers: Vec<mpsc::Sender<Piece>>,
    /// Since when the session has had no viewer.
    empty_since: Option<Instant>,
    engine: Option<String>,
    bytes: u64,
    failovers: u32,
    gap_ms_sum: u64,
    gaps: u64,
    /// The session is ending: a new viewer gets a new session.
    ended: bool,
}

impl Shared {
    /// Sends to every viewer; drops the gone and the too slow. Returns how many remain.
    fn fan_out(&mut self, content: &str, piece: &Piece) -> usize {
        self.viewers.retain(|v| match v.try_send(piece.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(content, "a viewer fell too far behind; dropped");
                false
            }
        });
        if let Ok(b) = piece {
            self.bytes += b.len() as u64;
        }
        self.note_empty();
        self.viewers.len()
    }

    fn note_empty(&mut self) {
        self.viewers.retain(|v| !v.is_closed());
        if self.viewers.is_empty() {
            self.empty_since.get_or_insert_with(Instant::now);
        } else {
            self.empty_since = None;
        }
    }

    fn lingered(&mut self, linger: Duration) -> bool {
        self.note_empty();
        self.empty_since.is_some_and(|t| t.elapsed() >= linger)
    }
}

pub enum SessionMsg {}

pub struct SessionArgs {
    content: Content,
    supervisor: ActorRef<SupervisorMsg>,
    streams: Option<StreamsHandle>,
    config: ProxyConfig,
    http: reqwest::Client,
    engine: EngineClient,
    shared: Arc<Mutex<Shared>>,
}

/// One playing content.
pub struct StreamSession;

impl Actor for StreamSession {
    type Msg = SessionMsg;
    type State = JoinHandle<()>;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<JoinHandle<()>, ActorProcessingErr> {
        let span = info_span!("stream.session", content = %args.content.label());
        Ok(tokio::spawn(
            async move {
                let supervisor = args.supervisor.clone();
                let label = args.content.label();
                let shared = args.shared.clone();
                run(args).await;
                shared.lock().unwrap().ended = true;
                supervisor
                    .cast(SupervisorMsg::ReleaseEngine { content: label })
                    .ok();
                myself.stop(None);
            }
            .instrument(span),
        ))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        pump: &mut JoinHandle<()>,
    ) -> Result<(), ActorProcessingErr> {
        pump.abort();
        Ok(())
    }
}

/// How often a session looks at its viewers and deadlines while waiting.
const POLL: Duration = Duration::from_millis(100);

/// An engine playing the content.
struct Playing {
    engine: String,
    command_url: Option<String>,
    response: reqwest::Response,
}

/// The session's life: acquire, play, fail over, linger, stop.
async fn run(a: SessionArgs) {
    let label = a.content.label();
    let (removed_tx, mut removed_rx) = mpsc::unbounded_channel::<String>();
    let watcher = RemovalWatcher(Box::new(move |r| removed_tx.send(r.name).is_ok()));
    let _ = a.supervisor.cast(SupervisorMsg::WatchRemovals(watcher));
    let mut exclude: Vec<String> = Vec::new();
    let mut first = true;
    let mut lost_at = Instant::now();
    let mut last_byte: Option<Instant> = None;
    loop {
        let window = if first {
            a.config.start_timeout
        } else {
            a.config.failover_timeout
        };
        let playing = match acquire(&a, &mut exclude, lost_at, window).await {
            Ok(p) => p,
            Err(refusal) => {
                let mut sh = a.shared.lock().unwrap();
                if first {
                    sh.fan_out(&label, &Err(refusal.clone()));
                }
                warn!(content = %label, reason = %refusal.message, "stream session ends: no engine");
                sh.viewers.clear();
                return;
            }
        };
        a.shared.lock().unwrap().engine = Some(playing.engine.clone());
        let engine = playing.engine.clone();
        let command_url = playing.command_url.clone();
        let cause = pump(&a, playing, &mut removed_rx, &mut last_byte, &mut first).await;
        a.shared.lock().unwrap().engine = None;
        stop_playback(&a.engine, command_url);
        let _ = a.supervisor.cast(SupervisorMsg::ReleaseEngine {
            content: label.clone(),
        });
        record_ended(&a, cause.as_ref().map_or("no_viewer", FailoverCause::label));
        let Some(cause) = cause else {
            info!(content = %label, engine = %engine, "no viewer left after the linger: engine session stopped");
            return;
        };
        lost_at = last_byte.unwrap_or_else(Instant::now);
        let viewers = a.shared.lock().unwrap().viewers.len();
        match after_loss(lost_at.elapsed(), a.config.failover_timeout, viewers) {
            AfterLoss::Failover => {
                let _span = info_span!("stream.failover", content = %label, from = %engine, cause = cause.label()).entered();
                warn!(content = %label, engine = %engine, cause = cause.label(), detail = ?cause, "stream moves to another engine");
                a.shared.lock().unwrap().failovers += 1;
                exclude.push(engine);
            }
            AfterLoss::GiveUp => {
                info!(content = %label, engine = %engine, cause = cause.label(), viewers, "stream session ends");
                a.shared.lock().unwrap().viewers.clear();
                return;
            }
        }
    }
}

/// The `/streams` id of a session: one record per content, moved with it on a failover.
fn stream_id(content: &Content) -> String {
    format!("proxy:{}", content.label())
}

/// Records the engine playback with the Streams actor, like an external proxy's `stream_started`.
fn record_started(
    a: &SessionArgs,
    view: &EngineView,
    host: &str,
    started: crate::clients::engine::PlaybackStart,
) {
    let Some(streams) = &a.streams else { return };
    let failovers = a.shared.lock().unwrap().failovers;
    let req = StreamStartedReq {
        container_id: view.container_id.clone(),
        engine: EngineAddress {
            host: host.to_string(),
            port: view.http_port,
        },
        stream: StreamKey {
            key_type: match a.content.kind {
                crate::core::proxy::ContentKind::Id => KeyType::ContentId,
                crate::core::proxy::ContentKind::Infohash => KeyType::Infohash,
            },
            key: a.content.key.clone(),
        },
        session: SessionInfo {
            playback_session_id: started.session_id,
            stat_url: started.stat_url,
            command_url: started.command_url,
            is_live: started.is_live,
        },
        labels: [
            ("stream_id".to_string(), stream_id(&a.content)),
            ("source".to_string(), "acevisor-proxy".to_string()),
            ("failovers".to_string(), failovers.to_string()),
        ]
        .into(),
    };
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let _ = streams.cast(StreamsMsg::Started(req, tx.into()));
}

/// Ends the session's record with the reason.
fn record_ended(a: &SessionArgs, reason: &str) {
    let Some(streams) = &a.streams else { return };
    let req = StreamEndedReq {
        container_id: None,
        stream_id: Some(stream_id(&a.content)),
        reason: Some(reason.to_string()),
    };
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let _ = streams.cast(StreamsMsg::Ended(req, tx.into()));
}

/// Stops the engine's playback session in the background (best effort).
fn stop_playback(engine: &EngineClient, command_url: Option<String>) {
    let Some(url) = command_url else { return };
    let engine = engine.clone();
    tokio::spawn(async move {
        match engine.stop_stream(&url).await {
            Ok(()) | Err(StatError::SessionEnded) => {}
            Err(e) => warn!(error = %e, "cannot stop the engine's playback session"),
        }
    });
}

/// Reserves an engine and opens the content on it, within `window` from `since`; provisions one
/// when none is free. Engines that fail to open the content are excluded and released.
async fn acquire(
    a: &SessionArgs,
    exclude: &mut Vec<String>,
    since: Instant,
    window: Duration,
) -> Result<Playing, Refusal> {
    let label = a.content.label();
    let deadline = since + window;
    let mut provisioning: Option<JoinHandle<()>> = None;
    let mut last_error: Option<String> = None;
    loop {
        if a.shared.lock().unwrap().lingered(a.config.linger) {
            return Err(Refusal {
                status: 503,
                code: "no_viewer",
                message: "every viewer left".into(),
            });
        }
        let reserved = a
            .supervisor
            .call(
                |reply| SupervisorMsg::ReserveEngine {
                    content: label.clone(),
                    exclude: exclude.clone(),
                    max_per_engine: a.config.max_streams_per_engine.max(1) as usize,
                    reply,
                },
                Some(Duration::from_secs(5)),
            )
            .await;
        match reserved {
            Ok(CallResult::Success(Some(view))) => match open(a, &view).await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    let _ = a.supervisor.cast(SupervisorMsg::ReleaseEngine {
                        content: label.clone(),
                    });
                    warn!(content = %label, engine = %view.name, error = %e.message, "the engine cannot play the content");
                    exclude.push(view.name.clone());
                    if e.status == 502 {
                        return Err(e);
                    }
                    last_error = Some(e.message);
                }
            },
            Ok(CallResult::Success(None)) => {
                if provisioning.as_ref().is_none_or(JoinHandle::is_finished) {
                    let sup = a.supervisor.clone();
                    provisioning = Some(tokio::spawn(async move {
                        let _ = sup
                            .call(
                                |reply| SupervisorMsg::Provision {
                                    wait: ProvisionWait::Ready,
                                    reply,
                                },
                                Some(Duration::from_secs(120)),
                            )
                            .await;
                    }));
                }
            }
            _ => last_error = Some("the supervisor did not answer".into()),
        }
        if Instant::now() >= deadline {
            if let Some(p) = provisioning {
                p.abort();
            }
            return Err(Refusal {
                status: 503,
                code: "no_engine",
                message: format!(
                    "no engine could play the content within {}{}",
                    humantime::format_duration(window),
                    last_error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            });
        }
        // Engines left behind become candidates again once every other one was tried.
        if exclude.len() > 8 {
            exclude.clear();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asks the engine to play the content and opens its playback URL.
async fn open(a: &SessionArgs, view: &EngineView) -> Result<Playing, Refusal> {
    let host = view.host.clone().unwrap_or_default();
    let started = a
        .engine
        .start_playback(
            &host,
            view.http_port,
            a.content.kind.param(),
            &a.content.key,
        )
        .await
        .map_err(|e| match e {
            StatError::Other(crate::clients::engine::EngineError::Api(m)) => Refusal {
                status: 502,
                code: "engine_error",
                message: format!("engine {} refused the content: {m}", view.name),
            },
            other => Refusal {
                status: 503,
                code: "engine_unreachable",
                message: format!("engine {}: {other}", view.name),
            },
        })?;
    let playback = started.playback_url.clone();
    let command_url = started.command_url.clone();
    let response = a
        .http
        .get(&playback)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| Refusal {
            status: 503,
            code: "engine_unreachable",
            message: format!("engine {} playback {playback}: {e}", view.name),
        })?;
    info!(content = %a.content.label(), engine = %view.name, "engine playing the content");
    record_started(a, view, &host, started);
    Ok(Playing {
        engine: view.name.clone(),
        command_url,
        response,
    })
}

/// Reads the engine's bytes and fans them out until the engine is lost (the cause) or no viewer
/// was left for the linger (`None`).
async fn pump(
    a: &SessionArgs,
    mut playing: Playing,
    removed: &mut mpsc::UnboundedReceiver<String>,
    last_byte: &mut Option<Instant>,
    first: &mut bool,
) -> Option<FailoverCause> {
    let label = a.content.label();
    let mut stalled_since = Instant::now();
    let mut fresh = true;
    loop {
        tokio::select! {
            chunk = tokio::time::timeout(POLL, playing.response.chunk()) => match chunk {
                Ok(Ok(Some(bytes))) => {
                    let now = Instant::now();
                    // The first bytes from this engine after a failover: the viewers' gap.
                    if fresh
                        && !*first
                        && let Some(prev) = *last_byte
                    {
                        let gap_ms = now.duration_since(prev).as_millis() as u64;
                        info!(content = %label, engine = %playing.engine, gap_ms, "bytes flow again after a failover");
                        let mut sh = a.shared.lock().unwrap();
                        sh.gap_ms_sum += gap_ms;
                        sh.gaps += 1;
                    }
                    fresh = false;
                    *first = false;
                    *last_byte = Some(now);
                    stalled_since = now;
                    a.shared.lock().unwrap().fan_out(&label, &Ok(bytes));
                }
                Ok(Ok(None)) => return Some(FailoverCause::PlaybackEnded("the engine ended the stream".into())),
                Ok(Err(e)) => return Some(FailoverCause::PlaybackEnded(e.to_string())),
                Err(_) => {
                    if stalled_since.elapsed() >= a.config.stall_timeout {
                        return Some(FailoverCause::Stalled);
                    }
                }
            },
            Some(name) = removed.recv() => {
                if name == playing.engine {
                    return Some(FailoverCause::EngineGone);
                }
            }
        }
        if a.shared.lock().unwrap().lingered(a.config.linger) {
            return None;
        }
    }
}
