//! acevisor's HTTP API (axum), compatible with the earlier orchestrator's clients
//! (docs/api.md). Handlers talk to the actors only through calls bounded by a timeout: a
//! Supervisor or Streams actor that does not answer in time is a 503 JSON answer, never a hung
//! request, and nothing here waits on Docker. Clients are bounded too: `serve` closes connections
//! whose request head does not arrive within `api.header_read_timeout`, the extractors bound
//! bodies in size and time, and the Streams actor keeps the stream limits.

pub mod auth;
pub mod containers;
pub mod engines;
pub mod error;
pub mod extract;
pub mod hooks;
pub mod metrics;
pub mod proxy;
pub mod status;
pub mod streams;
pub mod types;
pub mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::{Extension, Router, middleware};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::actors::messages::{SupervisorMsg, SupervisorSnapshot};
use crate::actors::streams::{StreamsArgs, StreamsHandle, StreamsMsg, start_supervised};
use crate::clients::engine::EngineClient;
use crate::config::{Config, VpnMode};
use crate::core::streams::{HISTORY_LEN, StreamLimits};
use crate::metrics::Metrics;
use error::{ApiError, ApiResult};

/// Bound on the Streams actor's own calls to the Supervisor; below the API's bound, so a
/// `stream_started` answers the actor's 503 rather than timing out in the API.
pub const STREAMS_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest request body accepted (413 above).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long clients may take to send a request (`api.header_read_timeout`,
/// `api.body_read_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request head must arrive within this after the connection opens or after the previous
    /// answer (so also the idle timeout of a kept-alive connection); else the connection closes.
    pub header_read: Duration,
    /// A body must arrive within this once its handler reads it; else 408.
    pub body_read: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header_read: Duration::from_secs(10),
            body_read: extract::DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

impl ClientTimeouts {
    pub fn from_config(cfg: &Config) -> ClientTimeouts {
        ClientTimeouts {
            header_read: cfg.api.header_read_timeout,
            body_read: cfg.api.body_read_timeout,
        }
    }
}

/// The stream limits of `api.*`.
pub fn stream_limits(cfg: &Config) -> StreamLimits {
    let a = &cfg.api;
    StreamLimits {
        max_active: a.max_streams as usize,
        max_per_engine: a.max_streams_per_engine as usize,
        max_label_bytes: a.max_label_bytes as usize,
        ended_kept: a.ended_streams_kept as usize,
        history_len: HISTORY_LEN,
        unconfirmed_after: Some(a.stream_unconfirmed_timeout).filter(|d| !d.is_zero()),
    }
}

/// Everything the handlers need: the actors to ask and a few static facts from the config.
#[derive(Clone)]
pub struct ApiContext {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub streams: StreamsHandle,
    /// `None`: the API is open (warned at start).
    pub api_key: Option<String>,
    pub mode: VpnMode,
    pub started_at: SystemTime,
    /// Bound on every actor call except provisioning.
    pub call_timeout: Duration,
    /// Bound on a provisioning request answered when the new container runs (the default).
    pub create_timeout: Duration,
    /// Bound on a provisioning request with `?wait=ready` (answered once the engine is ready).
    pub provision_timeout: Duration,
    /// Label namespace of managed containers (`acevisor`).
    pub label_prefix: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// What `/metrics` renders besides the snapshot (Docker call latency, reconnects).
    pub metrics: Arc<Metrics>,
    /// How long clients may take to send their requests.
    pub timeouts: ClientTimeouts,
    /// `telemetry.trace_ui_url`: the dashboard links incidents to their traces with it.
    pub trace_ui_url: Option<String>,
    /// The built-in stream proxy (`GET /ace/getstream`); `None`: not running.
    pub proxy: Option<ActorRef<crate::actors::proxy::ProxyMsg>>,
}

impl ApiContext {
    /// A context from the config; an empty key counts as no key.
    pub fn from_config(
        cfg: &Config,
        supervisor: ActorRef<SupervisorMsg>,
        streams: impl Into<StreamsHandle>,
        api_key: Option<String>,
    ) -> ApiContext {
        ApiContext {
            supervisor,
            streams: streams.into(),
            api_key: api_key.filter(|k| !k.is_empty()),
            mode: cfg.vpn.mode,
            started_at: SystemTime::now(),
            call_timeout: Duration::from_secs(5),
            // A little longer than the Supervisor's own bound, so its answer always comes first.
            create_timeout: crate::core::provisioning::answer_within(
                false,
                cfg.docker.call_timeout,
                cfg.engines.ready_timeout,
            ) + Duration::from_secs(2),
            provision_timeout: crate::core::provisioning::answer_within(
                true,
                cfg.docker.call_timeout,
                cfg.engines.ready_timeout,
            ) + Duration::from_secs(2),
            label_prefix: cfg.docker.label_prefix.trim_end_matches('.').to_string(),
            min_replicas: cfg.engines.min_replicas,
            max_replicas: cfg.engines.max_replicas,
            metrics: Arc::default(),
            timeouts: ClientTimeouts::from_config(cfg),
            trace_ui_url: cfg.telemetry.trace_ui_url.clone(),
            proxy: None,
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
        ask(
            &self.streams.get(),
            self.call_timeout,
            "streams owner",
            build,
        )
        .await
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
    let body_read = extract::BodyReadTimeout(ctx.timeouts.body_read);
    let mutating = Router::new()
        .route("/provision/acestream", post(engines::provision))
        .route("/provision", post(engines::provision_generic))
        .route("/events/stream_started", post(streams::started))
        .route("/events/stream_ended", post(streams::ended))
        .route("/scale/{demand}", post(containers::scale))
        .route("/gc", post(containers::gc))
        .route(
            "/health/circuit-breaker/reset",
            post(containers::reset_breaker),
        )
        .route(
            "/hooks/gluetun/{container}/ports",
            post(hooks::gluetun_ports),
        )
        .route_layer(middleware::from_fn_with_state(
            ctx.clone(),
            auth::require_key,
        ));
    // A read, but the earlier orchestrator required the key on it too; its `key` parameter is
    // the label's name, so the API key must come in a header there.
    let by_label = Router::new()
        .route("/by-label", get(containers::by_label))
        .route_layer(middleware::from_fn_with_state(
            ctx.clone(),
            auth::require_key_in_headers,
        ));
    let dashboard = ui::router(ctx.clone());
    Router::new()
        .route("/engines", get(engines::list))
        .route("/engines/{id}", get(engines::detail))
        .route("/streams", get(streams::list))
        .route("/streams/{id}/stats", get(streams::stats))
        .route("/vpn/status", get(status::vpn))
        .route("/vpn/publicip", get(status::public_ip))
        // Reading a container is open, removing it needs the key.
        .route(
            "/containers/{id}",
            get(containers::inspect).merge(delete(containers::delete).route_layer(
                middleware::from_fn_with_state(ctx.clone(), auth::require_key),
            )),
        )
        .route("/orchestrator/status", get(status::orchestrator))
        .route("/health/status", get(status::health))
        .route("/livez", get(status::livez))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/ace/getstream", get(proxy::getstream))
        .merge(mutating)
        .merge(by_label)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(Extension(body_read))
        .with_state(ctx)
        .merge(dashboard)
        // Again over the merged router, so the dashboard's routes answer a JSON 405 too.
        .method_not_allowed_fallback(method_not_allowed)
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
    let header_read = ctx.timeouts.header_read;
    let app = router(ctx);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "API: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // A client that never finishes its request head (or idles on a kept-alive connection)
        // is dropped after `header_read`; slow bodies are bounded by the extractors.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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

/// The running API: the Streams actor it started (under the Supervisor) and the server task.
pub struct RunningApi {
    pub streams: StreamsHandle,
    pub local_addr: std::net::SocketAddr,
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Starts the Streams actor (collector included) under the Supervisor and serves the API on `api.listen` until
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
    let streams = start_supervised(StreamsArgs {
        supervisor: supervisor.clone(),
        engine_client: Arc::new(engine_client),
        collect_interval: cfg.api.stats_interval,
        call_timeout: STREAMS_CALL_TIMEOUT,
        limits: stream_limits(cfg),
    })
    .await?;
    let listener = TcpListener::bind(&cfg.api.listen)
        .await
        .with_context(|| format!("cannot listen on api.listen = {}", cfg.api.listen))?;
    let local_addr = listener.local_addr()?;
    let (proxy, _) = Actor::spawn(
        None,
        crate::actors::proxy::Proxy,
        crate::actors::proxy::ProxyArgs {
            supervisor: supervisor.clone(),
            streams: Some(streams.clone()),
            config: cfg.proxy.clone(),
        },
    )
    .await
    .context("cannot start the stream proxy")?;
    let mut ctx = ApiContext::from_config(cfg, supervisor, streams.clone(), api_key);
    ctx.metrics = metrics;
    ctx.proxy = Some(proxy);
    let server = tokio::spawn(serve(listener, ctx, shutdown));
    Ok(RunningApi {
        streams,
        local_addr,
        server,
    })
}
