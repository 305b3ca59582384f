//! One playing content: the `StreamSession` actor and its work (a task it owns). The session
//! reserves an engine through the Supervisor, opens the content on it
//! (`/ace/getstream?...&format=json`), reads its `playback_url` once and fans the bytes out to
//! every viewer through bounded per-viewer channels (a viewer that falls behind is dropped). It
//! leaves an engine at once when the Supervisor says it is removed, unhealthy or on a failed VPN
//! (`WatchRemovals` / `WatchTrouble`), or when its bytes stop for `proxy.stall_timeout`, and opens
//! the content on another engine under a `stream.failover` span (a child of the incident's span
//! when an incident moved it), writing on to the same viewer channels; only when no engine can be
//! had within `proxy.failover_timeout` do the channels close. With no viewer for `proxy.linger` it
//! stops the engine session (`command_url?method=stop`) and releases the engine. A panic of its
//! work fails the actor, which its Proxy restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tracing::{Instrument, Span, field, info, info_span, warn};

use super::{Refusal, Shared};
use crate::actors::messages::{EngineView, ProvisionWait, RemovalWatcher, SupervisorMsg};
use crate::actors::streams::{StreamsHandle, StreamsMsg};
use crate::clients::engine::{EngineClient, StatError};
use crate::config::ProxyConfig;
use crate::core::proxy::{AfterLoss, Content, ContentKind, FailoverCause, after_loss};
use crate::core::streams::{
    EngineAddress, KeyType, SessionInfo, StreamEndedReq, StreamKey, StreamStartedReq,
};

pub enum SessionMsg {
    /// The session's work panicked: the actor fails with it (its Proxy restarts it).
    Panicked(String),
    /// Fault injection for tests: the actor panics.
    #[cfg(test)]
    Crash,
}

pub struct SessionArgs {
    pub(super) content: Content,
    pub(super) supervisor: ActorRef<SupervisorMsg>,
    pub(super) streams: Option<StreamsHandle>,
    pub(super) config: ProxyConfig,
    pub(super) http: reqwest::Client,
    pub(super) engine: EngineClient,
    pub(super) shared: Arc<Mutex<Shared>>,
}

/// One playing content.
pub struct StreamSession;

impl Actor for StreamSession {
    type Msg = SessionMsg;
    /// The task watching the work, and the work.
    type State = (JoinHandle<()>, AbortHandle);
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<(JoinHandle<()>, AbortHandle), ActorProcessingErr> {
        let span = info_span!("stream.session", content = %args.content.label());
        let supervisor = args.supervisor.clone();
        let label = args.content.label();
        let shared = args.shared.clone();
        {
            let mut sh = shared.lock().unwrap();
            sh.content = Some(args.content.clone());
            sh.ended = false;
        }
        let work = tokio::spawn(run(args).instrument(span));
        let abort = work.abort_handle();
        shared.lock().unwrap().pump = Some(abort.clone());
        // Watches the work: its end stops the actor, its panic fails it.
        let watch = tokio::spawn(async move {
            match work.await {
                Ok(()) => {
                    shared.lock().unwrap().ended = true;
                    let _ = supervisor.cast(SupervisorMsg::ReleaseEngine { content: label });
                    myself.stop(None);
                }
                Err(e) if e.is_panic() => {
                    let what = e
                        .into_panic()
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "a panic".into());
                    let _ = myself.cast(SessionMsg::Panicked(what));
                }
                // Aborted: by `post_stop` or by the Proxy after a crash.
                Err(_) => {}
            }
        });
        Ok((watch, abort))
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        _tasks: &mut (JoinHandle<()>, AbortHandle),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Panicked(what) => {
                Err(format!("stream session work panicked: {what}").into())
            }
            #[cfg(test)]
            SessionMsg::Crash => panic!("injected stream session crash"),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        (watch, work): &mut (JoinHandle<()>, AbortHandle),
    ) -> Result<(), ActorProcessingErr> {
        // Not called on a crash (ractor skips `post_stop` then): the Proxy aborts the work.
        watch.abort();
        work.abort();
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

/// The Supervisor says the session must leave `engine`, in the span it said it in.
struct Notice {
    engine: String,
    cause: FailoverCause,
    span: Span,
}

/// A watcher that turns the Supervisor's callbacks into notices (the span current at the call is
/// the incident's).
fn watcher(tx: mpsc::UnboundedSender<Notice>, cause: FailoverCause) -> RemovalWatcher {
    RemovalWatcher(Box::new(move |r| {
        tx.send(Notice {
            engine: r.name,
            cause: cause.clone(),
            span: Span::current(),
        })
        .is_ok()
    }))
}

/// The session's life: acquire, play, fail over, linger, stop.
async fn run(a: SessionArgs) {
    let label = a.content.label();
    let (tx, mut notices) = mpsc::unbounded_channel::<Notice>();
    let _ = a.supervisor.cast(SupervisorMsg::WatchRemovals(watcher(
        tx.clone(),
        FailoverCause::EngineGone,
    )));
    let _ = a.supervisor.cast(SupervisorMsg::WatchTrouble(watcher(
        tx,
        FailoverCause::EngineUnhealthy,
    )));
    let mut exclude: Vec<String> = Vec::new();
    // A restarted session (bytes already flowed) resumes like after a failover.
    let mut first = a.shared.lock().unwrap().bytes == 0;
    let mut lost_at = Instant::now();
    let mut last_byte: Option<Instant> = None;
    // The `stream.failover` span while a failover runs (until the first byte of the new engine).
    let mut failover: Option<Span> = None;
    // While a failover runs, the record stays open on the engine left (the next start replaces
    // it, same id): why it would end, should the failover give up.
    let mut moving: Option<&'static str> = None;
    loop {
        let window = if first {
            a.config.start_timeout
        } else {
            a.config.failover_timeout
        };
        let acquiring = acquire(&a, &mut exclude, lost_at, window);
        let acquired = match &failover {
            Some(span) => acquiring.instrument(span.clone()).await,
            None => acquiring.await,
        };
        let playing = match acquired {
            Ok(p) => p,
            Err(refusal) => {
                if let Some(span) = failover.take() {
                    span.record("outcome", "gave_up");
                }
                let mut sh = a.shared.lock().unwrap();
                if first {
                    sh.fan_out(&label, &Err(refusal.clone()));
                }
                warn!(content = %label, reason = %refusal.message, "stream session ends: no engine");
                sh.viewers.clear();
                if let (Some(reason), Some(streams)) = (moving, &a.streams) {
                    record_ended(streams, &label, reason);
                }
                return;
            }
        };
        if let Some(span) = &failover {
            span.record("to", playing.engine.as_str());
        }
        let engine = playing.engine.clone();
        let command_url = playing.command_url.clone();
        {
            let mut sh = a.shared.lock().unwrap();
            sh.engine = Some(engine.clone());
            sh.command_url = command_url.clone();
        }
        let lost = pump(
            &a,
            playing,
            &mut notices,
            &mut last_byte,
            &mut first,
            &mut failover,
        )
        .await;
        {
            let mut sh = a.shared.lock().unwrap();
            sh.engine = None;
            sh.command_url = None;
        }
        stop_playback(&a.engine, command_url);
        let _ = a.supervisor.cast(SupervisorMsg::ReleaseEngine {
            content: label.clone(),
        });
        let reason = lost.as_ref().map_or("no_viewer", |(c, _)| c.label());
        let end_record = || {
            if let Some(streams) = &a.streams {
                record_ended(streams, &label, reason);
            }
        };
        let Some((cause, incident)) = lost else {
            end_record();
            info!(content = %label, engine = %engine, "no viewer left after the linger: engine session stopped");
            return;
        };
        lost_at = last_byte.unwrap_or_else(Instant::now);
        let viewers = a.shared.lock().unwrap().viewers.len();
        match after_loss(lost_at.elapsed(), a.config.failover_timeout, viewers) {
            AfterLoss::Failover => {
                // A child of the incident that moved it; of the session otherwise (a stall).
                let parent = incident
                    .filter(|s| s.id().is_some())
                    .unwrap_or_else(Span::current);
                let span = info_span!(
                    parent: &parent,
                    "stream.failover",
                    content = %label,
                    from = %engine,
                    cause = cause.label(),
                    to = field::Empty,
                    gap_ms = field::Empty,
                    outcome = field::Empty,
                );
                span.in_scope(|| {
                    warn!(content = %label, engine = %engine, cause = cause.label(), detail = ?cause, "stream moves to another engine");
                });
                failover = Some(span);
                moving = Some(reason);
                a.shared.lock().unwrap().failovers += 1;
                // Only the engine just left (and those that fail to open it now) are passed
                // over: the ones of earlier failovers may be back (a name is reused, too).
                exclude.clear();
                exclude.push(engine);
            }
            AfterLoss::GiveUp => {
                end_record();
                info!(content = %label, engine = %engine, cause = cause.label(), viewers, "stream session ends");
                a.shared.lock().unwrap().viewers.clear();
                return;
            }
        }
    }
}

/// The `/streams` id of a session: one record per content, moved with it on a failover.
pub(super) fn stream_id_of(label: &str) -> String {
    format!("proxy:{label}")
}

/// Records the engine playback with the Streams actor, like an external proxy's `stream_started`
/// (marked as the proxy's own, so the engine is not counted busy twice).
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
                ContentKind::Id => KeyType::ContentId,
                ContentKind::Infohash => KeyType::Infohash,
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
            ("stream_id".to_string(), stream_id_of(&a.content.label())),
            ("source".to_string(), "acevisor-proxy".to_string()),
            ("failovers".to_string(), failovers.to_string()),
        ]
        .into(),
        proxied: true,
    };
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let _ = streams.cast(StreamsMsg::Started(req, tx.into()));
}

/// Ends the session's record with the reason.
pub(super) fn record_ended(streams: &StreamsHandle, label: &str, reason: &str) {
    let req = StreamEndedReq {
        container_id: None,
        stream_id: Some(stream_id_of(label)),
        reason: Some(reason.to_string()),
    };
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let _ = streams.cast(StreamsMsg::Ended(req, tx.into()));
}

/// Stops the engine's playback session in the background (best effort).
pub(super) fn stop_playback(engine: &EngineClient, command_url: Option<String>) {
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

/// Bytes read from the engine, not yet handed to the viewers.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
    since: Option<Instant>,
}

/// A batch goes out once it is this old (at the next chunk, or the next `POLL` without one)...
const BATCH_AGE: Duration = Duration::from_millis(50);
/// ... or this big.
const BATCH_BYTES: usize = 64 * 1024;

impl Batch {
    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        self.chunks.push(b);
        self.since.get_or_insert_with(Instant::now);
    }

    fn due(&self, now: Instant) -> bool {
        self.len >= BATCH_BYTES
            || self
                .since
                .is_some_and(|t| now.duration_since(t) >= BATCH_AGE)
    }

    /// Hands the batch to the viewers as one piece.
    fn flush(&mut self, label: &str, shared: &Mutex<Shared>) {
        let piece = match self.chunks.len() {
            0 => return,
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(self.len);
                self.chunks
                    .drain(..)
                    .for_each(|c| all.extend_from_slice(&c));
                Bytes::from(all)
            }
        };
        self.len = 0;
        self.since = None;
        #[cfg(test)]
        if std::mem::take(&mut shared.lock().unwrap().panic_in_work) {
            panic!("injected panic in the stream session's work");
        }
        shared.lock().unwrap().fan_out(label, &Ok(piece));
    }
}

/// Reads the engine's bytes and fans them out until the engine is lost (the cause, and the span
/// of the incident that said so) or no viewer was left for the linger (`None`).
async fn pump(
    a: &SessionArgs,
    mut playing: Playing,
    notices: &mut mpsc::UnboundedReceiver<Notice>,
    last_byte: &mut Option<Instant>,
    first: &mut bool,
    failover: &mut Option<Span>,
) -> Option<(FailoverCause, Option<Span>)> {
    let label = a.content.label();
    let mut stalled_since = Instant::now();
    let mut fresh = true;
    let mut batch = Batch::default();
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
                        if let Some(span) = failover.take() {
                            span.record("gap_ms", gap_ms);
                            span.record("outcome", "moved");
                        }
                        info!(content = %label, engine = %playing.engine, gap_ms, "bytes flow again after a failover");
                        let mut sh = a.shared.lock().unwrap();
                        sh.gap_ms_sum += gap_ms;
                        sh.gaps += 1;
                    }
                    // The first bytes from an engine go out at once; then they are handed to the
                    // viewers in batches (fewer wake-ups and writes per viewer).
                    let now_out = fresh;
                    fresh = false;
                    *first = false;
                    *last_byte = Some(now);
                    stalled_since = now;
                    batch.push(bytes);
                    if now_out || batch.due(now) {
                        batch.flush(&label, &a.shared);
                    }
                }
                Ok(Ok(None)) => {
                    batch.flush(&label, &a.shared);
                    return Some((FailoverCause::PlaybackEnded("the engine ended the stream".into()), None));
                }
                Ok(Err(e)) => {
                    batch.flush(&label, &a.shared);
                    return Some((FailoverCause::PlaybackEnded(e.to_string()), None));
                }
                Err(_) => {
                    batch.flush(&label, &a.shared);
                    if stalled_since.elapsed() >= a.config.stall_timeout {
                        return Some((FailoverCause::Stalled, None));
                    }
                }
            },
            Some(notice) = notices.recv() => {
                if notice.engine == playing.engine {
                    batch.flush(&label, &a.shared);
                    return Some((notice.cause, Some(notice.span)));
                }
            }
        }
        if a.shared.lock().unwrap().lingered(a.config.linger) {
            return None;
        }
    }
}
