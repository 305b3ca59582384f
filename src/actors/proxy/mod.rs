//! The built-in stream proxy: a `Proxy` actor owns one `StreamSession` actor per playing content
//! (spawned linked, see `session`) and supervises them: a session that crashes is restarted on
//! the same viewer channels, within a restart intensity per content (`SESSION_RESTARTS` in
//! `SESSION_WINDOW`); past it, or when it cannot be restarted, its viewers' responses end, its
//! engine is released and its playback stopped. Viewers join a session through the state it
//! shares with the Proxy (`Shared`), which also holds its figures for `/streams` and `/metrics`.

mod session;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{error, warn};

use crate::actors::messages::SupervisorMsg;
use crate::actors::streams::StreamsHandle;
use crate::clients::engine::EngineClient;
use crate::config::ProxyConfig;
use crate::core::intensity::{Intensity, Verdict};
use crate::core::proxy::Content;
pub use session::{SessionArgs, SessionMsg, StreamSession};
use session::{record_ended, stop_playback};

/// Restarts of one content's session allowed within `SESSION_WINDOW`.
const SESSION_RESTARTS: u32 = 3;
const SESSION_WINDOW: Duration = Duration::from_secs(60);
/// Ended sessions whose final figures `Sessions` still answers (for `/streams`).
const RECENT_KEPT: usize = 256;

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
    /// The proxy's sessions, live and recently ended, for `/streams` and the tests.
    Sessions(RpcReplyPort<Vec<SessionView>>),
    /// Totals for `/metrics`.
    Totals(RpcReplyPort<ProxyTotals>),
    /// Fault injection for tests: make the session of `content` crash.
    #[cfg(test)]
    CrashSession(String),
    /// Test only: the session's work (not its actor) panics at its next delivery.
    #[cfg(test)]
    PanicSessionWork(String),
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
    /// `id:<hex>` / `infohash:<hex>`.
    pub content: String,
    /// Its `/streams` id (`proxy:<content>`).
    pub stream_id: String,
    pub engine: Option<String>,
    pub viewers: usize,
    /// Bytes read from its engines.
    pub bytes: u64,
    /// Bytes handed to its viewers (each viewer's copy counts).
    pub delivered: u64,
    pub failovers: u32,
    /// Crashes it was restarted after.
    pub restarts: u32,
    /// Still playing (false: its final figures).
    pub live: bool,
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
    /// The last ended sessions' final figures, oldest first.
    recent: VecDeque<SessionView>,
    /// Session restarts per content.
    intensity: Intensity,
}

impl ProxyState {
    fn session_args(&self, content: Content, shared: Arc<Mutex<Shared>>) -> SessionArgs {
        SessionArgs {
            content,
            supervisor: self.supervisor.clone(),
            streams: self.streams.clone(),
            config: self.config.clone(),
            http: self.http.clone(),
            engine: self.engine.clone(),
            shared,
        }
    }

    /// Spawns the session of `content` on `shared` (its viewers), linked to the Proxy.
    async fn spawn_session(
        &mut self,
        myself: &ActorRef<ProxyMsg>,
        content: Content,
        shared: Arc<Mutex<Shared>>,
    ) -> Result<(), ActorProcessingErr> {
        let label = content.label();
        let args = self.session_args(content, shared.clone());
        let (actor, _) = Actor::spawn_linked(None, StreamSession, args, myself.get_cell()).await?;
        self.ids.insert(actor.get_id(), label.clone());
        self.sessions.insert(label, (actor, shared));
        Ok(())
    }

    /// A session is over: its figures go to the totals and the recent list.
    fn retire(&mut self, label: &str) {
        let Some((_, shared)) = self.sessions.remove(label) else {
            return;
        };
        let sh = shared.lock().unwrap();
        add_figures(&mut self.ended, &sh);
        let mut view = sh.view(label);
        view.live = false;
        view.viewers = 0;
        view.engine = None;
        self.recent.retain(|v| v.content != label);
        self.recent.push_back(view);
        while self.recent.len() > RECENT_KEPT {
            self.recent.pop_front();
        }
    }
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
            recent: VecDeque::new(),
            intensity: Intensity::new(SESSION_RESTARTS, SESSION_WINDOW),
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
                        st.spawn_session(&myself, content, shared.clone()).await?;
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
                let mut views: Vec<SessionView> = st.recent.iter().cloned().collect();
                views.retain(|v| !st.sessions.contains_key(&v.content));
                views.extend(
                    st.sessions
                        .iter()
                        .map(|(content, (_, shared))| shared.lock().unwrap().view(content)),
                );
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
            #[cfg(test)]
            ProxyMsg::CrashSession(label) => {
                if let Some((actor, _)) = st.sessions.get(&label) {
                    let _ = actor.cast(SessionMsg::Crash);
                }
            }
            #[cfg(test)]
            ProxyMsg::PanicSessionWork(label) => {
                if let Some((_, shared)) = st.sessions.get(&label) {
                    shared.lock().unwrap().panic_in_work = true;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ProxyMsg>,
        evt: SupervisionEvent,
        st: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let Some(label) = st.ids.remove(&cell.get_id()) else {
            return Ok(());
        };
        let current = st
            .sessions
            .get(&label)
            .is_some_and(|(a, _)| a.get_id() == cell.get_id());
        if !current {
            return Ok(());
        }
        let Some(err) = failure else {
            st.retire(&label);
            return Ok(());
        };
        on_session_crash(&myself, st, &label, &err).await;
        Ok(())
    }
}

/// A session crashed: its work is stopped (a crash skips `post_stop`), then it is restarted on
/// the same viewers within the intensity; otherwise its viewers end and nothing stays held.
async fn on_session_crash(
    myself: &ActorRef<ProxyMsg>,
    st: &mut ProxyState,
    label: &str,
    err: &str,
) {
    let Some((_, shared)) = st.sessions.get(label).cloned() else {
        return;
    };
    let (content, command_url) = {
        let mut sh = shared.lock().unwrap();
        if let Some(pump) = sh.pump.take() {
            pump.abort();
        }
        sh.engine = None;
        (sh.content.clone(), sh.command_url.take())
    };
    // The restarted session reserves anew (the engine is usually the same, and free again).
    let _ = st.supervisor.cast(SupervisorMsg::ReleaseEngine {
        content: label.to_string(),
    });
    let verdict = st.intensity.request(label, Instant::now());
    if let (Verdict::Allow, Some(content)) = (verdict, content) {
        warn!(content = %label, error = %err, "stream session crashed; restarted on the same viewers");
        shared.lock().unwrap().restarts += 1;
        stop_playback(&st.engine, command_url);
        match st.spawn_session(myself, content, shared.clone()).await {
            Ok(()) => return,
            Err(e) => error!(content = %label, error = %e, "cannot restart the stream session"),
        }
    } else {
        error!(content = %label, error = %err, "stream session crashed too often; its viewers' responses end");
        stop_playback(&st.engine, command_url);
    }
    {
        let mut sh = shared.lock().unwrap();
        sh.ended = true;
        sh.viewers.clear();
    }
    if let Some(streams) = &st.streams {
        record_ended(streams, label, "crashed");
    }
    st.retire(label);
}

fn add_figures(t: &mut ProxyTotals, sh: &Shared) {
    t.bytes += sh.bytes;
    t.failovers += u64::from(sh.failovers);
    t.gap_ms_sum += sh.gap_ms_sum;
    t.gaps += sh.gaps;
}

/// What a session shares with the Proxy (viewers join through it, it restarts it) and its pump
/// task. Outlives a crashed session actor, so a restart keeps the viewers.
#[derive(Default)]
pub struct Shared {
    viewers: Vec<mpsc::Sender<Piece>>,
    /// Since when the session has had no viewer.
    empty_since: Option<Instant>,
    /// What it plays (set by the session).
    content: Option<Content>,
    engine: Option<String>,
    /// The engine playback's stop URL, while playing.
    command_url: Option<String>,
    /// The session's work (aborted when its actor crashes).
    pump: Option<AbortHandle>,
    bytes: u64,
    delivered: u64,
    failovers: u32,
    restarts: u32,
    gap_ms_sum: u64,
    gaps: u64,
    /// The session is ending: a new viewer gets a new session.
    ended: bool,
    /// Test only: the work panics at its next delivery.
    #[cfg(test)]
    panic_in_work: bool,
}

impl Shared {
    fn view(&self, content: &str) -> SessionView {
        SessionView {
            content: content.to_string(),
            stream_id: session::stream_id_of(content),
            engine: self.engine.clone(),
            viewers: self.viewers.iter().filter(|v| !v.is_closed()).count(),
            bytes: self.bytes,
            delivered: self.delivered,
            failovers: self.failovers,
            restarts: self.restarts,
            live: !self.ended,
        }
    }

    /// Sends to every viewer; drops the gone and the too slow. Returns how many remain.
    fn fan_out(&mut self, content: &str, piece: &Piece) -> usize {
        let len = piece.as_ref().map_or(0, |b| b.len() as u64);
        let mut delivered = 0;
        self.viewers.retain(|v| match v.try_send(piece.clone()) {
            Ok(()) => {
                delivered += len;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(content, "a viewer fell too far behind; dropped");
                false
            }
        });
        self.bytes += len;
        self.delivered += delivered;
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
