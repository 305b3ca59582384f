//! The Streams actor: the sole owner of stream state. It records `stream_started` /
//! `stream_ended`, answers the API's queries, tells the Supervisor how many streams each engine
//! carries after every change, and runs the collector: every `collect_interval` it reads each
//! active stream's `stat_url` into a bounded history and ends streams whose engine says the
//! session is gone or whose engine left the Supervisor's view.
//!
//! It runs under the Supervisor (`start_supervised`): when it dies it is respawned with its
//! state reset, and the Supervisor clears the stream counts it had published; a `StreamsHandle`
//! always reaches the current actor.
//!
//! The collector's reads run in a spawned task and come back as one `Collected` message, so a
//! slow engine never delays the API's calls to this actor. The decisions are in
//! `core::streams`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures_util::StreamExt;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::actors::messages::{
    ChildSpawner, EngineRemoved, RemovalWatcher, SupervisorMsg, SupervisorSnapshot,
};
use crate::clients::engine::{EngineClient, StatError};
use crate::core::streams::{
    CollectVerdict, EndOutcome, EngineRef, StartRefusal, StatReading, StatSample, StreamBook,
    StreamEndedReq, StreamLimits, StreamRecord, StreamStartedReq, StreamStatus, collect_verdict,
    resolve_engine,
};

/// Why a `stream_started` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Neither `container_id` nor `(engine.host, engine.port)` names a known engine.
    #[error("no known engine at {host}:{port}{}", container_id.as_ref().map(|c| format!(" (container_id {c})")).unwrap_or_default())]
    UnknownEngine {
        host: String,
        port: u16,
        container_id: Option<String>,
    },
    /// The Supervisor did not answer in time; nothing was recorded.
    #[error("supervisor unavailable: {0}")]
    SupervisorUnavailable(String),
    /// The start would exceed a limit (labels, active streams in total or on the engine).
    #[error(transparent)]
    Refused(#[from] StartRefusal),
}

/// What `/engines` shows of an engine's stream usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineUsage {
    /// Ids of the active streams on the engine.
    pub streams: Vec<String>,
    /// When this process first saw the engine.
    pub first_seen: SystemTime,
    /// Last start or end of a stream on the engine.
    pub last_stream_usage: Option<SystemTime>,
}

/// What a collector round did (returned to `CollectNow`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectSummary {
    /// Streams whose stats were read and recorded.
    pub sampled: usize,
    /// Streams ended this round, with the reason.
    pub ended: Vec<(String, &'static str)>,
    /// The Supervisor did not answer: nothing was judged this round.
    pub skipped: bool,
}

/// One stream's result in a collector round.
#[derive(Debug)]
pub struct Reading {
    id: String,
    seq: u64,
    engine_present: bool,
    reading: StatReading,
}

/// A finished collector round.
#[derive(Debug)]
pub struct CollectRound {
    /// `None` when the Supervisor's snapshot was unavailable.
    readings: Option<Vec<Reading>>,
    engines_seen: Vec<String>,
    /// The engines of the Supervisor's view (streams follow their renames).
    engines: Vec<EngineRef>,
    reply: Option<RpcReplyPort<CollectSummary>>,
}

#[derive(Debug)]
pub enum StreamsMsg {
    Started(
        StreamStartedReq,
        RpcReplyPort<Result<StreamRecord, StartError>>,
    ),
    Ended(StreamEndedReq, RpcReplyPort<EndOutcome>),
    /// One page of the streams (all when `limit` is `None`) and the total that matched.
    List {
        status: Option<StreamStatus>,
        container_id: Option<String>,
        offset: usize,
        limit: Option<usize>,
        reply: RpcReplyPort<(usize, Vec<StreamRecord>)>,
    },
    Get(String, RpcReplyPort<Option<StreamRecord>>),
    /// The history of a stream from `since`; `None` for an unknown id.
    Stats {
        id: String,
        since: Option<SystemTime>,
        reply: RpcReplyPort<Option<Vec<StatSample>>>,
    },
    /// Stream usage of these engines, by name (a first sight of an engine is recorded now).
    Usage {
        engines: Vec<EngineRef>,
        reply: RpcReplyPort<BTreeMap<String, EngineUsage>>,
    },
    /// Timer: run a collector round unless one is in flight.
    Collect,
    /// Run a collector round now and answer once its results are applied (tests, operators).
    CollectNow(RpcReplyPort<CollectSummary>),
    /// Internal: a round's results.
    Collected(CollectRound),
    /// The Supervisor removed (or lost) this engine: its streams are over now.
    EngineRemoved(EngineRemoved),
}

#[derive(Clone)]
pub struct StreamsArgs {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub engine_client: Arc<EngineClient>,
    pub collect_interval: Duration,
    /// Bound on every call to the Supervisor. Keep it below the API's own call timeout: a
    /// `stream_started` waits on this call inside the actor, and the API should get the
    /// actor's answer (503 on a timeout) rather than time out itself.
    pub call_timeout: Duration,
    /// What clients may make the actor hold.
    pub limits: StreamLimits,
}

/// The current Streams actor, for the API and the proxy: a respawned actor replaces the old one
/// here.
#[derive(Clone)]
pub struct StreamsHandle(Arc<RwLock<ActorRef<StreamsMsg>>>);

impl StreamsHandle {
    /// The actor now (a dead one until its respawn is done).
    pub fn get(&self) -> ActorRef<StreamsMsg> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `msg` to the current actor; false when it is not running.
    pub fn cast(&self, msg: StreamsMsg) -> bool {
        self.get().cast(msg).is_ok()
    }

    fn set(&self, actor: ActorRef<StreamsMsg>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = actor;
    }
}

impl From<ActorRef<StreamsMsg>> for StreamsHandle {
    fn from(actor: ActorRef<StreamsMsg>) -> StreamsHandle {
        StreamsHandle(Arc::new(RwLock::new(actor)))
    }
}

/// Starts the Streams actor as a child of `args.supervisor`, which respawns it with `args` (its
/// state reset) within the restart intensity when it dies, and stops it when it stops.
pub async fn start_supervised(args: StreamsArgs) -> anyhow::Result<StreamsHandle> {
    let supervisor = args.supervisor.clone();
    let handle: Arc<RwLock<Option<StreamsHandle>>> = Arc::default();
    let current = handle.clone();
    let spawn = ChildSpawner(Box::new(move |parent: ActorCell| {
        let (args, current) = (args.clone(), current.clone());
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, Streams, args, parent)
                .await
                .map_err(|e| format!("cannot start the streams actor: {e}"))?;
            let cell = actor.get_cell();
            let mut current = current.write().unwrap_or_else(|e| e.into_inner());
            match current.as_ref() {
                Some(h) => h.set(actor),
                None => *current = Some(actor.into()),
            }
            Ok(cell)
        })
    }));
    let timeout = Duration::from_secs(10);
    match supervisor
        .call(
            |reply| SupervisorMsg::SuperviseStreams { spawn, reply },
            Some(timeout),
        )
        .await
    {
        Ok(CallResult::Success(Ok(()))) => {}
        Ok(CallResult::Success(Err(e))) => anyhow::bail!(e),
        Ok(CallResult::Timeout) => {
            anyhow::bail!("the supervisor did not start the streams actor within {timeout:?}")
        }
        Ok(CallResult::SenderError) | Err(_) => anyhow::bail!("the supervisor is not running"),
    }
    let started = handle.read().unwrap_or_else(|e| e.into_inner()).clone();
    started.context("the supervisor answered without starting the streams actor")
}

pub struct StreamsState {
    book: StreamBook,
    supervisor: ActorRef<SupervisorMsg>,
    engine_client: Arc<EngineClient>,
    collect_interval: Duration,
    call_timeout: Duration,
    collecting: bool,
    /// By engine key (container ID, else name): names are reused, container IDs are not.
    first_seen: HashMap<String, SystemTime>,
    /// Last stream start or end, by engine key.
    last_usage: HashMap<String, SystemTime>,
    last_counts: Option<BTreeMap<String, u32>>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Streams;

impl Actor for Streams {
    type Msg = StreamsMsg;
    type State = StreamsState;
    type Arguments = StreamsArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<StreamsMsg>,
        args: StreamsArgs,
    ) -> Result<StreamsState, ActorProcessingErr> {
        Ok(StreamsState {
            book: StreamBook::with(args.limits),
            supervisor: args.supervisor,
            engine_client: args.engine_client,
            collect_interval: args.collect_interval,
            call_timeout: args.call_timeout,
            collecting: false,
            first_seen: HashMap::new(),
            last_usage: HashMap::new(),
            last_counts: None,
            tasks: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<StreamsMsg>,
        st: &mut StreamsState,
    ) -> Result<(), ActorProcessingErr> {
        if !st.collect_interval.is_zero() {
            st.tasks
                .push(myself.send_interval(st.collect_interval, || StreamsMsg::Collect));
        }
        // Streams on an engine acevisor removes end at the removal, not at the next stats round.
        let me = myself.clone();
        let _ = st
            .supervisor
            .cast(SupervisorMsg::WatchRemovals(RemovalWatcher(Box::new(
                move |removed| me.cast(StreamsMsg::EngineRemoved(removed)).is_ok(),
            ))));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StreamsMsg>,
        st: &mut StreamsState,
    ) -> Result<(), ActorProcessingErr> {
        st.tasks.iter().for_each(JoinHandle::abort);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<StreamsMsg>,
        msg: StreamsMsg,
        st: &mut StreamsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StreamsMsg::Started(req, reply) => {
                let answer = on_started(st, &req).await;
                publish_counts(st);
                let _ = reply.send(answer);
            }
            StreamsMsg::Ended(req, reply) => {
                let now = SystemTime::now();
                let outcome = st.book.end(&req, now);
                if let Some(s) = outcome.stream.as_ref().filter(|_| outcome.updated) {
                    info!(stream = %s.id, engine = %s.container_name, reason = ?s.end_reason, "stream ended");
                    st.last_usage.insert(s.container_id.clone(), now);
                }
                publish_counts(st);
                let _ = reply.send(outcome);
            }
            StreamsMsg::List {
                status,
                container_id,
                offset,
                limit,
                reply,
            } => {
                let _ = reply.send(st.book.page(status, container_id.as_deref(), offset, limit));
            }
            StreamsMsg::Get(id, reply) => {
                let _ = reply.send(st.book.get(&id).cloned());
            }
            StreamsMsg::Stats { id, since, reply } => {
                let _ = reply.send(st.book.history(&id, since));
            }
            StreamsMsg::Usage { engines, reply } => {
                let now = SystemTime::now();
                let mut active = st.book.active_by_engine();
                let usage = engines
                    .into_iter()
                    .map(|e| {
                        let key = engine_key(&e);
                        let first_seen = *st.first_seen.entry(key.to_string()).or_insert(now);
                        let u = EngineUsage {
                            streams: active.remove(key).unwrap_or_default(),
                            first_seen,
                            last_stream_usage: st.last_usage.get(key).copied(),
                        };
                        (e.name, u)
                    })
                    .collect();
                let _ = reply.send(usage);
            }
            StreamsMsg::Collect => {
                if !st.collecting {
                    start_round(&myself, st, None);
                }
            }
            StreamsMsg::CollectNow(reply) => start_round(&myself, st, Some(reply)),
            StreamsMsg::EngineRemoved(removed) => {
                end_streams_of(st, &removed);
                publish_counts(st);
            }
            StreamsMsg::Collected(mut round) => {
                st.collecting = false;
                let reply = round.reply.take();
                let summary = apply_round(st, round);
                // Re-sent every round even when unchanged, so a Supervisor that lost them
                // (restarted, re-adopted its engines) is corrected within one round.
                st.last_counts = None;
                publish_counts(st);
                if let Some(reply) = reply {
                    let _ = reply.send(summary);
                }
            }
        }
        Ok(())
    }
}

/// Casts the per-engine counts to the Supervisor when they changed.
fn publish_counts(st: &mut StreamsState) {
    let counts = st.book.counts();
    if st.last_counts.as_ref() == Some(&counts) {
        return;
    }
    if st
        .supervisor
        .cast(SupervisorMsg::StreamCounts(counts.clone()))
        .is_ok()
    {
        st.last_counts = Some(counts);
    }
}

/// Ends every started stream on a removed engine (reason `engine_gone`).
fn end_streams_of(st: &mut StreamsState, removed: &EngineRemoved) {
    let now = SystemTime::now();
    let on_it: Vec<StreamRecord> = st
        .book
        .list(Some(StreamStatus::Started), Some(&removed.name))
        .into_iter()
        .filter(|s| {
            s.container_name == removed.name
                && removed
                    .container_id
                    .as_ref()
                    .is_none_or(|id| s.container_id == *id || s.container_id == removed.name)
        })
        .collect();
    for s in on_it {
        if st.book.end_id(&s.id, "engine_gone", now).updated {
            warn!(stream = %s.id, engine = %removed.name, "stream ended: its engine was removed");
            st.last_usage.insert(s.container_id.clone(), now);
        }
    }
}

async fn snapshot(
    sup: &ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<SupervisorSnapshot, String> {
    match sup.call(SupervisorMsg::Snapshot, Some(timeout)).await {
        Ok(CallResult::Success(s)) => Ok(s),
        Ok(CallResult::Timeout) => Err(format!("no snapshot within {timeout:?}")),
        Ok(CallResult::SenderError) => Err("the supervisor dropped the request".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The key engine facts are kept under: its container ID, else its name.
fn engine_key(e: &EngineRef) -> &str {
    e.container_id.as_deref().unwrap_or(&e.name)
}

fn engine_refs(snap: &SupervisorSnapshot) -> Vec<EngineRef> {
    snap.engines
        .iter()
        .map(|e| EngineRef {
            name: e.name.clone(),
            container_id: e.container_id.clone(),
            host: e.host.clone(),
            http_port: e.http_port,
        })
        .collect()
}

async fn on_started(
    st: &mut StreamsState,
    req: &StreamStartedReq,
) -> Result<StreamRecord, StartError> {
    let snap = snapshot(&st.supervisor, st.call_timeout)
        .await
        .map_err(StartError::SupervisorUnavailable)?;
    let engines = engine_refs(&snap);
    st.book.follow_renames(&engines);
    let now = SystemTime::now();
    for e in &engines {
        st.first_seen
            .entry(engine_key(e).to_string())
            .or_insert(now);
    }
    let Some(engine) = resolve_engine(&engines, req.container_id.as_deref(), &req.engine) else {
        warn!(host = %req.engine.host, port = req.engine.port, container_id = ?req.container_id, "stream_started for an unknown engine");
        return Err(StartError::UnknownEngine {
            host: req.engine.host.clone(),
            port: req.engine.port,
            container_id: req.container_id.clone(),
        });
    };
    let record = st.book.start(req, engine, now).inspect_err(|e| {
        info!(engine = %engine.name, error = %e, "stream_started refused");
    })?;
    for (what, sent, kept) in [
        ("stat_url", &req.session.stat_url, &record.stat_url),
        ("command_url", &req.session.command_url, &record.command_url),
    ] {
        if let (Some(sent), None) = (sent.as_deref().filter(|u| !u.trim().is_empty()), kept) {
            warn!(stream = %record.id, engine = %engine.name, url = %sent, "{what} is not on the engine's own address: ignored (acevisor fetches only its engines)");
        }
    }
    st.last_usage.insert(engine_key(engine).to_string(), now);
    info!(stream = %record.id, engine = %engine.name, key_type = ?record.key_type, "stream started");
    Ok(record)
}

fn start_round(
    myself: &ActorRef<StreamsMsg>,
    st: &mut StreamsState,
    reply: Option<RpcReplyPort<CollectSummary>>,
) {
    st.collecting = true;
    let active: Vec<(String, u64, Option<String>, String)> = st
        .book
        .active()
        .into_iter()
        .filter_map(|(id, stat_url, container)| {
            let seq = st.book.get(&id)?.seq;
            Some((id, seq, stat_url, container))
        })
        .collect();
    let sup = st.supervisor.clone();
    let client = st.engine_client.clone();
    let timeout = st.call_timeout;
    let me = myself.clone();
    tokio::spawn(async move {
        let round = collect(sup, client, timeout, active, reply).await;
        let _ = me.cast(StreamsMsg::Collected(round));
    });
}

/// How many `stat_url` reads one collector round makes at once.
const STATS_READS_AT_ONCE: usize = 16;

/// One collector round: the Supervisor's view, then every active stream's stats, concurrently.
async fn collect(
    sup: ActorRef<SupervisorMsg>,
    client: Arc<EngineClient>,
    timeout: Duration,
    active: Vec<(String, u64, Option<String>, String)>,
    reply: Option<RpcReplyPort<CollectSummary>>,
) -> CollectRound {
    let snap = match snapshot(&sup, timeout).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "collector: supervisor unavailable; nothing judged this round");
            return CollectRound {
                readings: None,
                engines_seen: Vec::new(),
                engines: Vec::new(),
                reply,
            };
        }
    };
    let engines = engine_refs(&snap);
    let live: HashSet<&str> = engines
        .iter()
        .flat_map(|e| [Some(e.name.as_str()), e.container_id.as_deref()])
        .flatten()
        .collect();
    let reads = active.into_iter().map(|(id, seq, stat_url, container)| {
        let engine_present = live.contains(container.as_str());
        let client = client.clone();
        async move {
            let reading = match stat_url {
                Some(url) if engine_present => read_stats(&client, &url).await,
                _ => StatReading::NotRead,
            };
            Reading {
                id,
                seq,
                engine_present,
                reading,
            }
        }
    });
    // A bounded number of reads at once, however many streams are active.
    let readings = futures_util::stream::iter(reads)
        .buffer_unordered(STATS_READS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    CollectRound {
        readings: Some(readings),
        engines_seen: engines.iter().map(|e| engine_key(e).to_string()).collect(),
        engines,
        reply,
    }
}

async fn read_stats(client: &EngineClient, url: &str) -> StatReading {
    match client.stream_stats(url).await {
        Ok(s) => StatReading::Sample(StatSample {
            ts: SystemTime::now(),
            peers: s.peers,
            speed_down: s.speed_down,
            speed_up: s.speed_up,
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            status: s.status,
        }),
        Err(StatError::SessionEnded) => StatReading::SessionEnded,
        Err(StatError::Other(e)) => {
            debug!(stat_url = %url, error = %e, "collector: stats not read this round");
            StatReading::Failed
        }
    }
}

fn apply_round(st: &mut StreamsState, round: CollectRound) -> CollectSummary {
    let now = SystemTime::now();
    if round.readings.is_some() {
        st.book.follow_renames(&round.engines);
        // Forget engines that are gone (their keys never come back).
        let seen: HashSet<&String> = round.engines_seen.iter().collect();
        st.first_seen.retain(|k, _| seen.contains(k));
        st.last_usage.retain(|k, _| seen.contains(k));
        for key in &round.engines_seen {
            st.first_seen.entry(key.clone()).or_insert(now);
        }
    }
    let mut summary = CollectSummary::default();
    match round.readings {
        None => summary.skipped = true,
        Some(readings) => {
            for r in readings {
                // A stream restarted under the same id during the round is not judged by it.
                let Some(current) = st.book.get(&r.id) else {
                    continue;
                };
                if current.seq != r.seq || current.status != StreamStatus::Started {
                    continue;
                }
                let engine = current.container_name.clone();
                let key = current.container_id.clone();
                let verdict = collect_verdict(r.engine_present, &r.reading);
                if let StatReading::Sample(sample) = r.reading {
                    st.book.record_sample(&r.id, sample);
                    summary.sampled += 1;
                }
                if let Some(reason) = verdict.reason()
                    && st.book.end_id(&r.id, reason, now).updated
                {
                    match verdict {
                        CollectVerdict::EngineGone => {
                            warn!(stream = %r.id, engine = %engine, "stream ended: its engine is gone")
                        }
                        _ => {
                            info!(stream = %r.id, engine = %engine, "stream ended: the engine no longer knows the session")
                        }
                    }
                    st.last_usage.insert(key, now);
                    summary.ended.push((r.id, reason));
                }
            }
            for id in st.book.expire_unconfirmed(now) {
                if let Some(s) = st.book.get(&id) {
                    warn!(stream = %id, engine = %s.container_name, "stream ended: no stats read and no event confirmed it in time");
                    st.last_usage.insert(s.container_id.clone(), now);
                }
                summary.ended.push((id, "unconfirmed"));
            }
        }
    }
    summary
}
