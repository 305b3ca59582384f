//! acevisor's HTTP API (axum), compatible with the earlier orchestrator's clients
//! (docs/protocols.md section 3, docs/api.md). Handlers talk to the actors only through calls bounded by a
//! timeout: a Supervisor or Streams actor that does not answer in time is a 503 JSON answer,
//! never a hung request, and nothing here waits on Docker.

pub mod auth;
pub mod engines;
pub mod error;
pub mod extract;
pub mod hooks;
pub mod metrics;
pub mod status;
pub mod streams;
pub mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::actors::messages::{SupervisorMsg, SupervisorSnapshot};
use crate::actors::streams::{Streams, StreamsArgs, StreamsMsg};
use crate::clients::engine::EngineClient;
use crate::config::{Config, VpnMode};
use crate::metrics::Metrics;
use error::{ApiError, ApiResult};

/// Bound on the Streams actor's own calls to the Supervisor; below the API's bound, so a
/// `stream_started` answers the actor's 503 rather than timing out in the API.
pub const STREAMS_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest request body accepted (413 above).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Everything the handlers need: the actors to ask and a few static facts from the config.
#[derive(Clone)]
pub struct ApiContext {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub streams: ActorRef<StreamsMsg>,
    /// `None`: the API is open (warned at start).
    pub api_key: Option<String>,
    pub mode: VpnMode,
    pub started_at: SystemTime,
    /// Bound on every actor call except provisioning.
    pub call_timeout: Duration,
    /// Bound on a provisioning request (it answers once the new engine is ready).
    pub provision_timeout: Duration,
    /// Label namespace of managed containers (`acevisor`).
    pub label_prefix: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// What `/metrics` renders besides the snapshot (Docker call latency, reconnects).
    pub metrics: Arc<Metrics>,
}

impl ApiContext {
    /// A context from the config; an empty key counts as no key.
    pub fn from_config(
        cfg: &Config,
        supervisor: ActorRef<SupervisorMsg>,
        streams: ActorRef<StreamsMsg>,
        api_key: Option<String>,
    ) -> ApiContext {
        ApiContext {
            supervisor,
            streams,
            api_key: api_key.filter(|k| !k.is_empty()),
            mode: cfg.vpn.mode,
            started_at: SystemTime::now(),
            call_timeout: Duration::from_secs(5),
            provision_timeout: cfg.engines.ready_timeout + Duration::from_secs(30),
            label_prefix: cfg.docker.label_prefix.trim_end_matches('.').to_string(),
            min_replicas: cfg.engines.min_replicas,
            max_replicas: cfg.engines.max_replicas,
            metrics: Arc::default(),
        }
    }

    /// The Supervisor's snapshot, or 503.
    pub async fn snapshot(&self) -> ApiResult<SupervisorSnapshot> {
        ask(
            &self.supervisor,
            self.call_timeout,
            "supervisor",
            SupervisorMsg::Snapshot,
        )
        .await
    }

    /// A call to the Streams actor, or 503.
    pub async fn ask_streams<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> StreamsMsg,
    ) -> ApiResult<T> {
        ask(&self.streams, self.call_timeout, "streams owner", build).await
    }
}

/// Calls an actor with a timeout; no answer in time (or a stopped actor) is a 503.
pub async fn ask<M, T>(
    actor: &ActorRef<M>,
    timeout: Duration,
    who: &str,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> ApiResult<T>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => {
            tracing::warn!(actor = who, ?timeout, "API call timed out");
            Err(ApiError::Unavailable(format!(
                "the {who} did not answer within {} ms; try again",
                timeout.as_millis()
            )))
        }
        Ok(CallResult::SenderError) | Err(_) => {
            Err(ApiError::Unavailable(format!("the {who} is not running")))
        }
    }
}

/// The whole API.
pub fn router(ctx: ApiContext) -> Router {
    let mutating = Router::new()
        .route("/provision/acestream", post(engines::provision))
        .route("/events/stream_started", post(streams::started))
        .route("/events/stream_ended", post(streams::ended))
        .route(
            "/hooks/gluetun/{container}/ports",
            post(hooks::gluetun_ports),
        )
        .route_layer(middleware::from_fn_with_state(
            ctx.clone(),
            auth::require_key,
        ));
    Router::new()
        .route("/engines", get(engines::list))
        .route("/engines/{id}", get(engines::detail))
        .route("/streams", get(streams::list))
        .route("/streams/{id}/stats", get(streams::stats))
        .route("/vpn/status", get(status::vpn))
        .route("/orchestrator/status", get(status::orchestrator))
        .route("/health/status", get(status::health))
        .route("/livez", get(status::livez))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(metrics::metrics))
        .merge(mutating)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctx: ApiContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if ctx.api_key.is_none() {
        tracing::warn!("no API key configured: the mutating API routes are open");
    }
    tracing::info!(addr = ?listener.local_addr().ok(), "API listening");
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Reads the API key from the env var `api.api_key_env` names; unset or empty = no key.
pub fn api_key_from_env(cfg: &Config) -> Option<String> {
    let var = cfg.api.api_key_env.as_deref()?;
    let key = std::env::var(var).ok().filter(|k| !k.is_empty());
    if key.is_none() {
        tracing::warn!(
            env = var,
            "API key env var is not set: the mutating API routes are open"
        );
    }
    key
}

/// The running API: the Streams actor it owns and the server task.
pub struct RunningApi {
    pub streams: ActorRef<StreamsMsg>,
    pub local_addr: std::net::SocketAddr,
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Starts the Streams actor (collector included) and serves the API on `api.listen` until
/// `shutdown` completes. The daemon calls this once the Supervisor runs; `metrics` are the live
/// ones its runtime records into.
pub async fn launch(
    cfg: &Config,
    supervisor: ActorRef<SupervisorMsg>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningApi> {
    launch_inner(cfg, supervisor, api_key_from_env(cfg), metrics, shutdown).await
}

/// `launch` with the API key given (tests; the daemon reads it from `api.api_key_env`).
pub async fn launch_with_key(
    cfg: &Config,
    supervisor: ActorRef<SupervisorMsg>,
    api_key: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningApi> {
    launch_inner(cfg, supervisor, api_key, Arc::default(), shutdown).await
}

async fn launch_inner(
    cfg: &Config,
    supervisor: ActorRef<SupervisorMsg>,
    api_key: Option<String>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningApi> {
    let engine_client =
        EngineClient::new(cfg.engines.health.timeout).context("cannot build the engine client")?;
    let (streams, _) = Actor::spawn(
        None,
        Streams,
        StreamsArgs {
            supervisor: supervisor.clone(),
            engine_client: Arc::new(engine_client),
            collect_interval: cfg.api.stats_interval,
            call_timeout: STREAMS_CALL_TIMEOUT,
        },
    )
    .await
    .context("cannot start the streams actor")?;
    let listener = TcpListener::bind(&cfg.api.listen)
        .await
        .with_context(|| format!("cannot listen on api.listen = {}", cfg.api.listen))?;
    let local_addr = listener.local_addr()?;
    let mut ctx = ApiContext::from_config(cfg, supervisor, streams.clone(), api_key);
    ctx.metrics = metrics;
    let server = tokio::spawn(serve(listener, ctx, shutdown));
    Ok(RunningApi {
        streams,
        local_addr,
        server,
    })
}
