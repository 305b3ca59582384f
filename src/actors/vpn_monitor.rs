//! The VpnMonitor actor: observes every configured Gluetun (Docker state and health, control
//! server), feeds the per-VPN `VpnWatch` machines and the `Emergency` machine, and sends the
//! Supervisor `Failed` / `Recovered` / `PortChanged` with a fresh view of every VPN.
//!
//! It observes a VPN on every Docker event about its container, at once when its port hook fires
//! (`MonitorMsg::PortHook`: Gluetun's port forwarding came up or went; the hook is only a trigger,
//! the port is read from the control server), and by polling as a safety net: every
//! `fast_poll_interval` while the VPN's `VpnWatch` says it matters (starting, waiting for its
//! first port, a port settling, shortly after an event or a hook), else every `poll_interval`.
//! It publishes only when something changed: a quiet poll sends nothing and logs nothing.
//!
//! Tracing: an update carrying events is sent inside a new root span named after its first event
//! (`vpn.failed`, `vpn.recovered`, `vpn.port_changed`), which the Supervisor's handling inherits.
//! A VPN that recovers before its forwarded port is known keeps its `vpn.recovered` span open
//! until the port appears; the update that brings the port is sent in a `vpn.port_known` child,
//! so the engines created for the recovered VPN are in the recovery's trace. A quiet poll opens
//! no span.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::{Span, debug, error, info, info_span, warn};

use crate::actors::messages::{MonitorMsg, PublicIpResult, SupervisorMsg, VpnStatus, VpnUpdate};
use crate::clients::{ControlAnswer, ControlError, ControlTarget, VpnControl};
use crate::config::GluetunConfig;
use crate::core::emergency::{Emergency, EmergencyState, VpnHealth};
use crate::core::model::{Readiness, VpnView};
use crate::core::public_ip::PublicIp;
use crate::core::readiness::{ContainerFacts, readiness};
use crate::core::vpn_watch::{Observation, VpnEvent, VpnWatch, WatchTimings};
use crate::runtime::{
    ContainerEvent, ContainerInfo, ContainerRuntime, DockerHealth, EventKind, RuntimeError,
};

pub struct MonitorArgs {
    pub vpns: Vec<GluetunConfig>,
    /// Resolved API keys, by VPN index (read from the configured env vars at start).
    pub api_keys: Vec<Option<String>>,
    pub timings: WatchTimings,
    pub poll_interval: Duration,
    /// Poll interval of a VPN while it matters (capped at `poll_interval`).
    pub fast_poll_interval: Duration,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub control: Arc<dyn VpnControl>,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// What the previous VpnMonitor last published, when this one replaces it after a crash:
    /// the lanes and the emergency state it resumes from.
    pub resume: Option<(Vec<VpnView>, EmergencyState)>,
}

struct Watched {
    config: GluetunConfig,
    api_key: Option<String>,
    watch: VpnWatch,
    info: Option<ContainerInfo>,
    last_error: Option<String>,
    last_check_at: Option<SystemTime>,
    /// The open `vpn.recovered` span while the recovered VPN's port is not known yet.
    awaiting_port: Option<(Span, Instant)>,
    /// When this VPN was last looked at (by a poll, an event or a hook).
    looked_at: Option<Instant>,
    public_ip: PublicIp,
}

pub struct MonitorState {
    args_poll: Duration,
    fast_poll: Duration,
    runtime: Arc<dyn ContainerRuntime>,
    control: Arc<dyn VpnControl>,
    supervisor: ActorRef<SupervisorMsg>,
    vpns: Vec<Watched>,
    emergency: Emergency,
    last_published: Option<Vec<VpnStatus>>,
}

pub struct VpnMonitor;

impl Actor for VpnMonitor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = MonitorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<MonitorMsg>,
        args: MonitorArgs,
    ) -> Result<MonitorState, ActorProcessingErr> {
        let now = Instant::now();
        let (lanes, emergency) = match args.resume {
            Some((lanes, state)) => (lanes, Emergency::resume(state)),
            None => (Vec::new(), Emergency::new()),
        };
        let vpns = args
            .vpns
            .into_iter()
            .zip(args.api_keys)
            .map(|(config, api_key)| {
                let known = lanes
                    .iter()
                    .find(|l| l.name.as_deref() == Some(config.container.as_str()));
                Watched {
                    watch: match known {
                        Some(lane) => VpnWatch::resume(args.timings, lane, now),
                        None => VpnWatch::new(args.timings),
                    },
                    config,
                    api_key,
                    info: None,
                    last_error: None,
                    last_check_at: None,
                    awaiting_port: None,
                    looked_at: None,
                    public_ip: PublicIp::default(),
                }
            })
            .collect();
        Ok(MonitorState {
            args_poll: args.poll_interval,
            fast_poll: args.fast_poll_interval.min(args.poll_interval),
            runtime: args.runtime,
            control: args.control,
            supervisor: args.supervisor,
            vpns,
            emergency,
            last_published: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<MonitorMsg>,
        _st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        // One timer chain at the fast interval: each Poll looks at the VPNs that are due and
        // schedules the next one (no pile-up while a slow control server holds a poll).
        myself.cast(MonitorMsg::Poll)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MonitorMsg>,
        msg: MonitorMsg,
        st: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Poll => {
                let now = Instant::now();
                let due: Vec<usize> = (0..st.vpns.len())
                    .filter(|&i| poll_due(st, i, now))
                    .collect();
                if !due.is_empty() {
                    observe(st, &due).await;
                }
                // Time-driven transitions of the VPNs not looked at (grace, settle, port_wait):
                // published when they change the view (a quiet tick sends nothing).
                let now = Instant::now();
                let mut events = Vec::new();
                for v in st.vpns.iter_mut() {
                    for ev in v.watch.tick(now) {
                        events.push((v.config.container.clone(), ev));
                    }
                }
                publish(st, events, now);
                // Next round after `fast_poll`, or earlier when a port candidate settles then.
                let next = st
                    .vpns
                    .iter()
                    .filter_map(|v| v.watch.settles_at())
                    .map(|t| t.saturating_duration_since(now))
                    .fold(st.fast_poll, Duration::min);
                myself.send_after(next, || MonitorMsg::Poll);
                ask_public_ips(&myself, st, now);
            }
            MonitorMsg::PublicIpOf { vpn, epoch, ip } => {
                let Some(v) = st.vpns.iter_mut().find(|v| v.config.container == vpn) else {
                    return Ok(());
                };
                if v.public_ip.answered(epoch, ip) {
                    info!(vpn = %vpn, public_ip = v.public_ip.get().unwrap_or(""), "VPN public IP");
                    publish(st, Vec::new(), Instant::now());
                }
            }
            MonitorMsg::PortHook(vpn) => {
                if let Some(i) = st.vpns.iter().position(|v| v.config.container == vpn) {
                    st.vpns[i].watch.nudge(Instant::now());
                    observe(st, &[i]).await;
                }
            }
            MonitorMsg::Docker(ev) => {
                let which = st.vpns.iter().position(|v| v.config.container == ev.name);
                if let Some(i) = which {
                    if matches!(
                        ev.kind,
                        EventKind::Die { .. } | EventKind::Stop | EventKind::Destroy
                    ) {
                        container_gone(st, i, &ev);
                    }
                    observe(st, &[i]).await;
                }
            }
            MonitorMsg::Snapshot(reply) => {
                let _ = reply.send(update(st, Vec::new(), None));
            }
            MonitorMsg::PublicIp(reply) => public_ip_later(st, reply),
        }
        Ok(())
    }
}

/// Asks the control server of every up VPN whose public IP is unknown (one question at a time,
/// one per `poll_interval`), in tasks that answer with `PublicIpOf`.
fn ask_public_ips(myself: &ActorRef<MonitorMsg>, st: &mut MonitorState, now: Instant) {
    for v in st.vpns.iter_mut() {
        let up = v.watch.readiness().is_up();
        let Some(epoch) = v.public_ip.ask(up, now, st.args_poll) else {
            continue;
        };
        let target = v.info.as_ref().and_then(|info| {
            Some(ControlTarget {
                vpn: v.config.container.clone(),
                base_url: control_base_url(&v.config, info)?,
                api_key: v.api_key.clone(),
            })
        });
        let Some(target) = target else {
            let _ = v.public_ip.answered(epoch, None);
            continue;
        };
        let control = st.control.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let ip = match control.public_ip(&target).await {
                Ok(ip) => ip,
                Err(e) => {
                    debug!(vpn = %target.vpn, error = %e, "VPN public IP not available");
                    None
                }
            };
            let _ = myself.cast(MonitorMsg::PublicIpOf {
                vpn: target.vpn,
                epoch,
                ip,
            });
        });
    }
}

/// Whether VPN `i` is due for a poll: never looked at, a port candidate due to settle, fast
/// polling and `fast_poll` passed, or `poll_interval` passed.
fn poll_due(st: &MonitorState, i: usize, now: Instant) -> bool {
    let v = &st.vpns[i];
    let Some(at) = v.looked_at else {
        return true;
    };
    if v.watch.settles_at().is_some_and(|t| t <= now) {
        return true;
    }
    let every = if v.watch.wants_fast_poll(now, v.config.forwarding) {
        st.fast_poll
    } else {
        st.args_poll
    };
    // A little slack: the timer chain fires every `fast_poll`, a hair late at best.
    now.saturating_duration_since(at) + st.fast_poll / 4 >= every
}

/// Looks at the VPNs `indexes`, and publishes what changed.
async fn observe(st: &mut MonitorState, indexes: &[usize]) {
    let indexes = indexes.to_vec();
    let looks = join_all(indexes.iter().map(|&i| {
        let v = &st.vpns[i];
        look(
            st.runtime.as_ref(),
            st.control.as_ref(),
            &v.config,
            v.api_key.clone(),
        )
    }))
    .await;

    let now = Instant::now();
    let mut events = Vec::new();
    for (i, look) in indexes.into_iter().zip(looks) {
        let v = &mut st.vpns[i];
        v.looked_at = Some(now);
        let Look {
            info,
            control,
            docker_error,
        } = look;
        if let Some(e) = docker_error {
            // Docker itself did not answer: no conclusion about the VPN can be drawn.
            if v.last_error != Some(e.to_string()) {
                warn!(vpn = %v.config.container, error = %e, "cannot inspect VPN container");
            }
            v.last_error = Some(e.to_string());
            continue;
        }
        v.last_check_at = Some(SystemTime::now());
        let facts = info.as_ref().map(|c| ContainerFacts {
            running: c.running,
            health: c.health,
        });
        let r = readiness(facts.as_ref(), control.as_ref());
        let error = control
            .as_ref()
            .and_then(|c| c.as_ref().err())
            .map(|e| e.to_string());
        if error != v.last_error {
            match &control {
                Some(Err(ControlError::Unauthorized)) => error!(
                    vpn = %v.config.container,
                    "Gluetun control server answered 401: the API key is wrong or missing, or its auth role lacks \
                     GET /v1/vpn/status, GET /v1/portforward, GET /v1/openvpn/portforwarded, GET /v1/publicip/ip \
                     (without GET /v1/portforward on Gluetun v3.39 and v3.40, which refuse to start with it); \
                     the VPN is reported misconfigured and its engines are left alone"
                ),
                Some(Err(e)) => {
                    warn!(vpn = %v.config.container, error = %e, "Gluetun control server not answering")
                }
                _ if v.last_error.is_some() => {
                    info!(vpn = %v.config.container, "Gluetun control server answering again")
                }
                _ => {}
            }
            v.last_error = error;
        }
        let obs = Observation {
            container_id: info.as_ref().map(|c| c.id.clone()),
            started_at: info.as_ref().map(|c| c.started_at.clone()),
            readiness: r,
        };
        v.info = info;
        for ev in v
            .watch
            .observe(now, obs)
            .into_iter()
            .chain(v.watch.tick(now))
        {
            events.push((v.config.container.clone(), ev));
        }
        if v.watch.take_force_restart(now)
            && let Some(id) = v.info.as_ref().map(|c| c.id.clone())
        {
            warn!(vpn = %v.config.container, "VPN down longer than force_restart_after: restarting it once");
            let runtime = st.runtime.clone();
            let name = v.config.container.clone();
            tokio::spawn(async move {
                if let Err(e) = runtime.restart(&id).await {
                    error!(vpn = %name, error = %e, "forced restart of the VPN failed");
                }
            });
        }
    }

    publish(st, events, now);
}

/// A `die`, `stop` or `destroy` of a VPN's current container is conclusive (its network namespace
/// is gone with it): it reaches the watch at once, before the confirming inspect, which waits while
/// Docker is still tearing the container down. A late event of a replaced container is ignored.
fn container_gone(st: &mut MonitorState, i: usize, ev: &ContainerEvent) {
    let v = &mut st.vpns[i];
    if v.watch.container_id() != Some(ev.id.as_str()) {
        return;
    }
    let now = Instant::now();
    let obs = Observation {
        container_id: Some(ev.id.clone()),
        started_at: v.info.as_ref().map(|c| c.started_at.clone()),
        readiness: Readiness::Down,
    };
    if let Some(info) = &mut v.info {
        info.running = false;
    }
    let vpn = v.config.container.clone();
    let events = v
        .watch
        .observe(now, obs)
        .into_iter()
        .map(|e| (vpn.clone(), e))
        .collect();
    publish(st, events, now);
}

/// Re-evaluates the emergency machine and, when anything changed, sends the Supervisor the
/// events and the fresh view, inside the incident's span.
fn publish(st: &mut MonitorState, events: Vec<(String, VpnEvent)>, now: Instant) {
    // A failure, a recovery or a port change is a new tunnel: its exit address is asked anew.
    for (vpn, _) in &events {
        if let Some(v) = st.vpns.iter_mut().find(|v| &v.config.container == vpn) {
            v.public_ip.forget();
        }
    }
    let health: Vec<VpnHealth> = st
        .vpns
        .iter()
        .map(|v| VpnHealth {
            name: v.config.container.clone(),
            failed: v.watch.failed(),
            up: v.watch.readiness().is_up(),
        })
        .collect();
    let transition = st.emergency.update(now, &health);
    let upd = update(st, events, transition);
    let current: Vec<VpnStatus> = upd.vpns.iter().map(without_time).collect();
    let changed = st.last_published.as_ref() != Some(&current);
    if changed || !upd.events.is_empty() || upd.transition.is_some() {
        st.last_published = Some(current);
        let span = incident_span(st, &upd, now);
        // Logged and sent inside the span: the lines become span events, and ractor hands the
        // span to the Supervisor with the message.
        span.in_scope(|| {
            for (vpn, ev) in &upd.events {
                log_event(vpn, ev);
            }
            if let Some(t) = &upd.transition {
                let (failed, healthy) = emergency_lists(&t.to);
                warn!(
                    from = t.from.label(),
                    to = t.to.label(),
                    failed,
                    healthy,
                    "emergency state changed"
                );
            }
            let _ = st.supervisor.cast(SupervisorMsg::Vpn(upd));
        });
    } else {
        expire_awaiting_port(st, now);
    }
}

/// How long a recovery trace waits for the VPN's port at most (without `port_wait`).
const AWAITING_PORT_MAX: Duration = Duration::from_secs(300);

/// The span an update is sent in: a new root for events, `vpn.port_known` under the recovery
/// when a recovered VPN's port just became known, else none.
fn incident_span(st: &mut MonitorState, upd: &VpnUpdate, now: Instant) -> Span {
    if let Some((vpn, ev)) = upd.events.first() {
        let span = match ev {
            VpnEvent::Failed { cause } => info_span!(
                parent: None,
                "vpn.failed",
                vpn = %vpn,
                cause = cause.label(),
                events = upd.events.len()
            ),
            VpnEvent::Recovered { forwarded_ports } => info_span!(
                parent: None,
                "vpn.recovered",
                vpn = %vpn,
                forwarded_port = forwarded_ports.first(),
                forwarded_ports = %forwarded_ports,
                events = upd.events.len()
            ),
            VpnEvent::PortChanged(c) => info_span!(
                parent: None,
                "vpn.port_changed",
                vpn = %vpn,
                old = %c.old,
                new = %c.new,
                events = upd.events.len()
            ),
        };
        // A port that became known alongside another VPN's event ends that wait unattached.
        for w in st.vpns.iter_mut() {
            if !w.watch.readiness().ports().is_empty() {
                w.awaiting_port = None;
            }
        }
        for (vpn, ev) in &upd.events {
            if let Some(w) = st.vpns.iter_mut().find(|w| w.config.container == *vpn) {
                w.awaiting_port = match ev {
                    VpnEvent::Recovered { forwarded_ports }
                        if forwarded_ports.is_empty() && w.config.forwarding =>
                    {
                        Some((span.clone(), now))
                    }
                    _ => None,
                };
            }
        }
        return span;
    }
    let mut span = Span::none();
    for w in st.vpns.iter_mut() {
        let ports = w.watch.readiness().ports();
        if let Some(port) = ports.first()
            && let Some((recovered, _)) = w.awaiting_port.take()
            && span.is_none()
        {
            span = info_span!(
                parent: &recovered,
                "vpn.port_known",
                vpn = %w.config.container,
                forwarded_port = port,
                forwarded_ports = %ports
            );
        }
    }
    expire_awaiting_port(st, now);
    span
}

/// Closes recovery spans whose VPN failed again, stopped waiting for its port, or waited too long.
fn expire_awaiting_port(st: &mut MonitorState, now: Instant) {
    for w in st.vpns.iter_mut() {
        let expired = w.awaiting_port.as_ref().is_some_and(|(_, since)| {
            w.watch.failed()
                || w.watch.port_wait_expired(now)
                || now.saturating_duration_since(*since) > AWAITING_PORT_MAX
        });
        if expired {
            w.awaiting_port = None;
        }
    }
}

/// The failed and healthy VPNs of a state, comma-separated (log and span fields).
pub(crate) fn emergency_lists(s: &EmergencyState) -> (String, String) {
    match s {
        EmergencyState::Normal => (String::new(), String::new()),
        EmergencyState::Emergency {
            failed, healthy, ..
        } => (failed.join(","), healthy.join(",")),
        EmergencyState::Outage { failed, .. } => (failed.join(","), String::new()),
    }
}

fn without_time(s: &VpnStatus) -> VpnStatus {
    VpnStatus {
        last_check_at: None,
        ..s.clone()
    }
}

fn log_event(vpn: &str, ev: &VpnEvent) {
    match ev {
        VpnEvent::Failed { cause } => warn!(vpn, cause = cause.label(), "VPN failed"),
        VpnEvent::Recovered { forwarded_ports } => {
            info!(vpn, forwarded_ports = %forwarded_ports, "VPN recovered")
        }
        VpnEvent::PortChanged(c) => {
            info!(vpn, old = %c.old, new = %c.new, "forwarded ports changed")
        }
    }
}

fn update(
    st: &MonitorState,
    events: Vec<(String, VpnEvent)>,
    transition: Option<crate::core::emergency::Transition>,
) -> VpnUpdate {
    let now = Instant::now();
    let vpns = st.vpns.iter().map(|v| status_of(v, now)).collect();
    VpnUpdate {
        events,
        vpns,
        emergency: st.emergency.state().clone(),
        transition,
    }
}

fn status_of(v: &Watched, now: Instant) -> VpnStatus {
    let r = v.watch.readiness();
    VpnStatus {
        status: r.label(),
        connected: r.is_up(),
        lane: VpnView {
            name: Some(v.config.container.clone()),
            container_id: v.watch.container_id().map(str::to_string),
            started_at: v.info.as_ref().map(|c| c.started_at.clone()),
            readiness: r,
            failed: v.watch.failed(),
            forwarding: v.config.forwarding,
            port_wait_expired: v.watch.port_wait_expired(now),
            engine_ports: v.config.engine_ports,
        },
        health: match v.info.as_ref().and_then(|c| c.health) {
            Some(DockerHealth::Healthy) => "healthy",
            Some(DockerHealth::Unhealthy) => "unhealthy",
            Some(DockerHealth::Starting) => "starting",
            None => "none",
        },
        ip: v
            .info
            .as_ref()
            .and_then(|c| c.ip_on(v.config.network.as_deref())),
        public_ip: v.public_ip.get().map(str::to_string),
        last_check_at: v.last_check_at,
        last_error: v.last_error.clone(),
    }
}

/// The control server's base URL: the configured one, else port 8000 on the VPN's IP.
fn control_base_url(cfg: &GluetunConfig, c: &ContainerInfo) -> Option<String> {
    match (&cfg.control_url, c.ip_on(cfg.network.as_deref())) {
        (Some(url), _) => Some(url.trim_end_matches('/').to_string()),
        (None, Some(ip)) => Some(format!("http://{ip}:8000")),
        (None, None) => None,
    }
}

/// Asks the first connected VPN's control server for its public IP, in a task that answers
/// `reply` itself (the monitor keeps polling meanwhile).
fn public_ip_later(st: &MonitorState, reply: RpcReplyPort<PublicIpResult>) {
    let target = st.vpns.iter().find_map(|v| {
        let info = v.info.as_ref().filter(|_| v.watch.readiness().is_up())?;
        Some(ControlTarget {
            vpn: v.config.container.clone(),
            base_url: control_base_url(&v.config, info)?,
            api_key: v.api_key.clone(),
        })
    });
    let Some(target) = target else {
        let _ = reply.send(Err("no VPN is connected".into()));
        return;
    };
    let control = st.control.clone();
    tokio::spawn(async move {
        let answer = match control.public_ip(&target).await {
            Ok(Some(ip)) => Ok((target.vpn, ip)),
            Ok(None) => Err(format!("{} does not know its public IP yet", target.vpn)),
            Err(e) => Err(format!("{}: {e}", target.vpn)),
        };
        let _ = reply.send(answer);
    });
}

struct Look {
    info: Option<ContainerInfo>,
    control: Option<Result<ControlAnswer, ControlError>>,
    docker_error: Option<RuntimeError>,
}

/// Inspects the container and, when it runs past Docker's `starting`, asks its control server.
async fn look(
    runtime: &dyn ContainerRuntime,
    control: &dyn VpnControl,
    cfg: &GluetunConfig,
    api_key: Option<String>,
) -> Look {
    let info = match runtime.inspect(&cfg.container).await {
        Ok(info) => info,
        Err(e) => {
            return Look {
                info: None,
                control: None,
                docker_error: Some(e),
            };
        }
    };
    let ask = info
        .as_ref()
        .filter(|c| c.running && c.health != Some(DockerHealth::Starting));
    let answer = match ask {
        Some(c) => match control_base_url(cfg, c) {
            Some(base_url) => {
                let target = ControlTarget {
                    vpn: cfg.container.clone(),
                    base_url,
                    api_key,
                };
                Some(control.probe(&target).await)
            }
            None => Some(Err(ControlError::Unreachable(
                "the VPN container has no IP address".into(),
            ))),
        },
        None => None,
    };
    Look {
        info,
        control: answer,
        docker_error: None,
    }
}
