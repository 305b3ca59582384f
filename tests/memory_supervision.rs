//! Supervision of the Supervisor's own children on the in-memory runtime (paused clock): a
//! crashed VpnMonitor, NameRegistry or Streams actor is restarted within the restart intensity and resumes from
//! what was known (no emergency entered twice, no VPN failed twice, no name handed out twice);
//! past the intensity the Supervisor stops, which ends the daemon. A NameRegistry that does not
//! answer defers the creations of a pass, never its removals.

mod tree;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use acevisor::actors::messages::{MonitorMsg, NameMsg};
use acevisor::actors::name_registry::NameRegistry;
use acevisor::actors::streams::{StreamsArgs, StreamsMsg, start_supervised};
use acevisor::actors::supervisor::Deps;
use acevisor::clients::engine::EngineClient;
use acevisor::core::emergency::EmergencyState;
use acevisor::core::streams::StreamStartedReq;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tree::{Tree, VPN1, VPN2, config, full, two_vpns};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_crashed_vpn_monitor_resumes_the_emergency_it_was_in() {
    let m = MemoryRuntime::new();
    two_vpns(&m, 30001, 30002);
    let tree = Tree::start(&m, config("redundant", 4, "")).await;
    tree.wait("pool", 20 * SEC, |s| {
        full(s, VPN1, 2, 30001) && full(s, VPN2, 2, 30002)
    })
    .await;
    m.kill(VPN2);
    let before = tree
        .wait("emergency", 10 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. }) && s.engines_on(VPN2).is_empty()
        })
        .await;
    assert_eq!(before.counters.emergency_entered, 1);

    tree.child::<MonitorMsg>().kill();
    let s = tree
        .wait("monitor restarted", 10 * SEC, |s| {
            s.counters.actor_restarts == 1
        })
        .await;
    let s = tree
        .hold(
            30 * SEC,
            |now| {
                now.counters.emergency_entered == 1
                    && now.counters.vpn_failed == s.counters.vpn_failed
                    && now.emergency == before.emergency
            },
            "the same emergency, entered once, since the same time",
        )
        .await;
    assert!(full(&s, VPN1, 2, 30001), "the healthy VPN untouched");

    m.start(VPN2);
    m.set_health(VPN2, DockerHealth::Healthy);
    m.set_port(VPN2, 30002);
    let s = tree
        .wait("back to normal", 30 * SEC, |s| {
            s.emergency == EmergencyState::Normal && full(s, VPN2, 2, 30002)
        })
        .await;
    assert_eq!(
        (s.counters.emergency_entered, s.counters.emergency_exited),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_name_registry_is_reseeded_and_names_stay_lowest_free() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", 3, "")).await;
    tree.wait("pool", 20 * SEC, |s| full(s, VPN1, 3, 30001))
        .await;
    tree.child::<NameMsg>().kill();
    tree.wait("registry restarted", 10 * SEC, |s| {
        s.counters.actor_restarts == 1
    })
    .await;
    // Seeded by the Supervisor at its restart, before any re-listing of Docker could.
    let registry = ractor::ActorRef::<NameMsg>::from(tree.child::<NameMsg>());
    let held = ractor::call_t!(registry, NameMsg::Held, 1_000).expect("the new registry answers");
    assert_eq!(held, 3, "the new registry holds the three live numbers");
    m.remove_out_of_band("acestream-2");
    let s = tree
        .wait("replaced", 30 * SEC, |s| full(s, VPN1, 3, 30001))
        .await;
    let mut names: Vec<String> = s.engines.iter().map(|e| e.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["acestream-1", "acestream-2", "acestream-3"]);
    // The new registry knew the held numbers: the replacement got the free one at the first try
    // (an empty registry hands out a held name, which Docker refuses as a conflict).
    assert_eq!(
        (s.counters.create_failures, s.counters.names_above_bound),
        (0, 0),
        "{:?}",
        s.counters
    );
    assert_eq!(m.calls("create"), 4, "three engines, then one replacement");
}

/// A NameRegistry that forwards to a real one, except that while `mute` is set it drops every
/// `Reserve` unanswered (the Supervisor's call fails at once, as with a registry that died
/// mid-call) and counts it in `refused`.
struct MutableNames {
    mute: Arc<AtomicBool>,
    refused: Arc<AtomicU32>,
}

impl Actor for MutableNames {
    type Msg = NameMsg;
    type State = ActorRef<NameMsg>;
    type Arguments = Vec<u32>;

    async fn pre_start(
        &self,
        myself: ActorRef<NameMsg>,
        seed: Vec<u32>,
    ) -> Result<ActorRef<NameMsg>, ActorProcessingErr> {
        let (inner, _) = Actor::spawn_linked(None, NameRegistry, seed, myself.get_cell()).await?;
        Ok(inner)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NameMsg>,
        msg: NameMsg,
        inner: &mut ActorRef<NameMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(msg, NameMsg::Reserve(_)) && self.mute.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        inner.send_message(msg)?;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_name_reservation_defers_creations_only_removals_in_the_same_pass_still_run() {
    let m = MemoryRuntime::new();
    two_vpns(&m, 30001, 30002);
    let mute = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU32::new(0));
    let (mute_in, refused_in) = (mute.clone(), refused.clone());
    let deps = Deps {
        runtime: Arc::new(m.clone()),
        control: Arc::new(m.clone()),
        engine_api: Arc::new(m.clone()),
        name_registry: Some(Arc::new(move |seed, supervisor| {
            let names = MutableNames {
                mute: mute_in.clone(),
                refused: refused_in.clone(),
            };
            Box::pin(async move { Ok(Actor::spawn_linked(None, names, seed, supervisor).await?.0) })
        })),
    };
    let cfg = config("redundant", 4, "emergency_capacity = \"shift\"");
    let keys = vec![None; cfg.vpn.gluetun.len()];
    let tree = Tree::start_with(deps, cfg, keys).await;
    tree.wait("pool", 20 * SEC, |s| {
        full(s, VPN1, 2, 30001) && full(s, VPN2, 2, 30002)
    })
    .await;
    assert_eq!(m.calls("create"), 4);

    // One pass plans both: the failed VPN's engines removed, the healthy one topped up to 4
    // (`shift`), creations first. No name can be had, so only the removals may happen.
    mute.store(true, Ordering::SeqCst);
    m.kill(VPN2);
    let s = tree
        .wait("the failed VPN's engines removed", 10 * SEC, |s| {
            matches!(s.emergency, EmergencyState::Emergency { .. }) && s.engines_on(VPN2).is_empty()
        })
        .await;
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "the top-up asked for a name"
    );
    assert_eq!(m.calls("create"), 4, "no creation without a name");
    assert!(full(&s, VPN1, 2, 30001), "the healthy VPN untouched");

    // Names again: the deferred creations happen on a later pass.
    mute.store(false, Ordering::SeqCst);
    tree.wait("4 on the healthy VPN", 30 * SEC, |s| {
        full(s, VPN1, 4, 30001)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_child_that_keeps_dying_stops_the_supervisor() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    // max_restarts = 3 within 5 minutes.
    let mut tree = Tree::start(&m, config("single", 1, "")).await;
    tree.wait("pool", 20 * SEC, |s| full(s, VPN1, 1, 30001))
        .await;
    for n in 1..=3 {
        tree.child::<MonitorMsg>().kill();
        tree.wait("monitor restarted", 10 * SEC, |s| {
            s.counters.actor_restarts == n
        })
        .await;
    }
    tree.child::<MonitorMsg>().kill();
    assert!(
        tree.stops_on_its_own(10 * SEC).await,
        "a fourth crash within the window escalates"
    );
}

/// The Streams actor runs under the Supervisor: killed, it is respawned (its streams gone, so
/// the Supervisor's per-engine counts are cleared, never kept from the dead actor), the handle
/// the API holds reaches the new one, and past the intensity the Supervisor stops. Without the
/// supervision the engine kept its stream count forever and the API answered 503.
#[tokio::test(start_paused = true)]
async fn a_crashed_streams_actor_is_restarted_with_no_stale_counts() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let cfg = config("single", 1, "");
    let mut tree = Tree::start(&m, cfg.clone()).await;
    let s = tree
        .wait("pool", 20 * SEC, |s| full(s, VPN1, 1, 30001))
        .await;
    let engine = s.engines[0].clone();
    let streams = start_supervised(StreamsArgs {
        supervisor: tree.sup.clone(),
        engine_client: Arc::new(EngineClient::new(SEC).unwrap()),
        collect_interval: Duration::ZERO,
        call_timeout: 3 * SEC,
        limits: acevisor::api::stream_limits(&cfg),
    })
    .await
    .unwrap();
    let start = |id: &str| {
        serde_json::from_value::<StreamStartedReq>(serde_json::json!({
            "container_id": engine.container_id,
            "engine": {"host": engine.host, "port": engine.http_port},
            "stream": {"key_type": "content_id", "key": "0123456789abcdef0123456789abcdef01234567"},
            "session": {"playback_session_id": id, "stat_url": "", "command_url": ""},
            "labels": {"stream_id": id}
        }))
        .unwrap()
    };
    let started = streams
        .get()
        .call(|r| StreamsMsg::Started(start("s1"), r), Some(3 * SEC))
        .await
        .unwrap();
    assert!(matches!(started, CallResult::Success(Ok(_))), "{started:?}");
    tree.wait("the stream counted", 10 * SEC, |s| {
        s.engines.iter().any(|e| e.streams == 1)
    })
    .await;

    let first = streams.get();
    tree.child::<StreamsMsg>().kill();
    tree.wait("streams restarted, counts cleared", 10 * SEC, |s| {
        s.counters.actor_restarts == 1 && s.engines.iter().all(|e| e.streams == 0)
    })
    .await;
    assert_ne!(streams.get().get_id(), first.get_id(), "the handle follows");
    let listed = streams
        .get()
        .call(
            |reply| StreamsMsg::List {
                status: None,
                container_id: None,
                offset: 0,
                limit: None,
                reply,
            },
            Some(3 * SEC),
        )
        .await
        .unwrap();
    assert!(
        matches!(&listed, CallResult::Success((0, v)) if v.is_empty()),
        "{listed:?}"
    );
    // The new actor records and publishes as the old one did.
    let started = streams
        .get()
        .call(|r| StreamsMsg::Started(start("s2"), r), Some(3 * SEC))
        .await
        .unwrap();
    assert!(matches!(started, CallResult::Success(Ok(_))), "{started:?}");
    tree.wait("the new stream counted", 10 * SEC, |s| {
        s.engines.iter().any(|e| e.streams == 1)
    })
    .await;

    for n in 2..=3 {
        tree.child::<StreamsMsg>().kill();
        tree.wait("streams restarted", 10 * SEC, |s| {
            s.counters.actor_restarts == n
        })
        .await;
    }
    tree.child::<StreamsMsg>().kill();
    assert!(
        tree.stops_on_its_own(10 * SEC).await,
        "a fourth crash of the Streams actor within the window escalates"
    );
}
