//! Engine lifecycle on the in-memory runtime (paused clock): provisioning, the creation breaker,
//! a hung engine replaced, and an engine that keeps dying hitting the restart-intensity limit.

mod tree;

use std::time::Duration;

use acevisor::actors::messages::{ProvisionError, ProvisionWait, SupervisorMsg};
use acevisor::core::breaker::BreakerState;
use acevisor::core::model::EnginePhase;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use tree::{Tree, VPN1, config, full};

const SEC: Duration = Duration::from_secs(1);

async fn single(min: u32, extra: &str) -> Tree {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(&m, config("single", min, extra)).await;
    tree.wait("pool", 20 * SEC, |s| full(s, VPN1, min as usize, 30001))
        .await;
    tree
}

async fn provision_at(
    tree: &Tree,
    wait: ProvisionWait,
) -> Result<acevisor::actors::messages::EngineView, ProvisionError> {
    ractor::call_t!(
        tree.sup,
        |reply| SupervisorMsg::Provision { wait, reply },
        120_000
    )
    .expect("supervisor answers")
}

async fn provision(tree: &Tree) -> Result<acevisor::actors::messages::EngineView, ProvisionError> {
    provision_at(tree, ProvisionWait::Created).await
}

#[tokio::test(start_paused = true)]
async fn provisioning_answers_when_the_container_runs_not_when_the_engine_is_ready() {
    let tree = single(2, "").await;
    tree.mem.new_engines_hung(true);
    let engine = provision(&tree).await.expect("an engine");
    // Answered while the new engine's API is still silent: its container runs, its address and
    // ID are known, and it is not ready.
    assert_eq!(engine.phase, EnginePhase::Starting);
    assert!(engine.container_id.is_some() && engine.host.is_some());
    let s = tree.snap().await;
    assert_eq!(s.pending_provisions, 0);
    let now = s.engines.iter().find(|e| e.name == engine.name).unwrap();
    assert_eq!(now.phase, EnginePhase::Starting);
    // Once its API answers, it is ready (and would join /engines).
    tree.mem.unhang(&engine.name);
    tree.wait("the provisioned engine ready", 60 * SEC, |s| {
        s.engines
            .iter()
            .any(|e| e.name == engine.name && e.phase == EnginePhase::Ready)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn provisioning_with_wait_ready_answers_with_a_new_ready_engine() {
    let tree = single(2, "").await;
    let before: Vec<_> = tree
        .snap()
        .await
        .engines
        .iter()
        .map(|e| e.name.clone())
        .collect();
    let engine = provision_at(&tree, ProvisionWait::Ready)
        .await
        .expect("an engine");
    assert!(
        !before.contains(&engine.name),
        "a new engine, not one of {before:?}"
    );
    assert_eq!(engine.phase, EnginePhase::Ready);
    let s = tree.snap().await;
    assert_eq!(s.engines.len(), 3);
    assert_eq!(s.pending_provisions, 0);
}

#[tokio::test(start_paused = true)]
async fn provisioning_is_refused_at_max_capacity_and_without_vpn() {
    let tree = single(2, "").await;
    // max_replicas is 20 in the test config: 18 more fit, the 19th does not.
    let mut handed = 0;
    loop {
        match provision(&tree).await {
            Ok(_) => handed += 1,
            Err(e) => {
                assert_eq!(e, ProvisionError::MaxCapacity);
                break;
            }
        }
        assert!(handed <= 18, "more engines than max_replicas");
    }
    assert_eq!(handed, 18);
    tree.mem.kill(VPN1);
    tree.wait("VPN down", 10 * SEC, |s| s.vpns[0].lane.failed)
        .await;
    assert!(matches!(
        provision(&tree).await,
        Err(ProvisionError::VpnDisconnected { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn creation_breaker_opens_after_repeated_failures_and_stops_hammering_docker() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    m.fail_next("create", 1_000);
    let tree = Tree::start(&m, config("single", 2, "")).await;
    let s = tree
        .wait("breaker open", 60 * SEC, |s| {
            matches!(s.breaker, BreakerState::Open { .. })
        })
        .await;
    assert!(s.counters.create_failures >= 5);
    assert!(matches!(
        provision(&tree).await,
        Err(ProvisionError::CircuitBreaker { .. })
    ));
    let calls = m.calls("create");
    tree.hold(60 * SEC, |_| true, "invariants").await;
    let more = m.calls("create") - calls;
    assert!(
        more <= 6,
        "half-open lets single probes through, not a storm: {more} creates in a minute"
    );
    m.fail_next("create", 0);
    let s = tree
        .wait("recovered", 10 * 60 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    assert_eq!(s.breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn hung_engine_is_replaced_create_first() {
    let tree = single(3, "").await;
    let s = tree.snap().await;
    let victim = s.engines.iter().find(|e| !e.forwarded).unwrap().clone();
    tree.mem.hang(&victim.name);
    let s = tree
        .wait("unhealthy", 30 * SEC, |s| {
            s.engines
                .iter()
                .any(|e| e.name == victim.name && matches!(e.phase, EnginePhase::Unhealthy { .. }))
        })
        .await;
    assert_eq!(
        s.counters.removed_total(),
        0,
        "not removed before unhealthy_grace"
    );
    let s = tree
        .wait("replaced", 60 * SEC, |s| {
            s.counters.engines_removed.get("unhealthy") == Some(&1) && full(s, VPN1, 3, 30001)
        })
        .await;
    assert!(
        s.engines
            .iter()
            .all(|e| e.container_id != victim.container_id)
    );
}

#[tokio::test(start_paused = true)]
async fn hung_forwarded_engine_is_replaced_on_the_same_port() {
    let tree = single(2, "").await;
    let fw = tree.snap().await.forwarded_on(VPN1)[0].clone();
    tree.mem.hang(&fw.name);
    let s = tree
        .wait("forwarded engine replaced", 90 * SEC, |s| {
            full(s, VPN1, 2, 30001) && s.forwarded_on(VPN1)[0].container_id != fw.container_id
        })
        .await;
    assert_eq!(s.counters.engines_removed.get("unhealthy"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn engine_that_keeps_dying_hits_the_intensity_limit_and_backs_off() {
    let tree = single(2, "").await;
    let victim = tree
        .snap()
        .await
        .engines
        .iter()
        .find(|e| !e.forwarded)
        .unwrap()
        .name
        .clone();
    // max_restarts = 3 per 5 minutes in the test config.
    let mut last = tree.snap().await.counters.engines_lost;
    for _ in 0..4 {
        tree.wait("victim ready", 60 * SEC, |s| {
            s.engines
                .iter()
                .any(|e| e.name == victim && e.phase == EnginePhase::Ready)
        })
        .await;
        tree.mem.exit(&victim, 1);
        let s = tree
            .wait("death noticed", 10 * SEC, |s| {
                s.counters.engines_lost > last
            })
            .await;
        last = s.counters.engines_lost;
    }
    let s = tree
        .wait("backing off", 10 * SEC, |s| {
            s.counters.restarts_suppressed >= 1
        })
        .await;
    assert!(
        !s.holds.is_empty(),
        "creation on the lane held back: {:?}",
        s.holds
    );
    let report = s
        .intensity
        .iter()
        .find(|r| r.slot == acevisor::actors::supervisor::death_slot(VPN1))
        .expect("slot in the report");
    assert!(report.backing_off_until.is_some());
    let creates = tree.mem.calls("create");
    tree.hold(
        20 * SEC,
        |s| s.engines.len() == 1,
        "no replacement during the backoff",
    )
    .await;
    assert_eq!(tree.mem.calls("create"), creates, "no restart loop");
    tree.wait("replaced after the backoff", 10 * 60 * SEC, |s| {
        full(s, VPN1, 2, 30001)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn slow_docker_never_stalls_the_supervisor() {
    let tree = single(2, "").await;
    tree.mem.set_delay(60 * SEC);
    tree.sup.cast(SupervisorMsg::Relist).unwrap();
    tree.sup.cast(SupervisorMsg::Tick).unwrap();
    // A re-list is under way and every Docker call takes a minute: the Supervisor still answers
    // at once, with its last known state.
    let s =
        ractor::call_t!(tree.sup, SupervisorMsg::Snapshot, 1_000).expect("answers within a second");
    assert!(full(&s, VPN1, 2, 30001));
    tree.mem.set_delay(Duration::ZERO);
    let s = tree
        .hold(
            120 * SEC,
            |s| full(s, VPN1, 2, 30001),
            "nothing removed because Docker was slow",
        )
        .await;
    assert_eq!(s.counters.removed_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_death_stays_a_death_when_its_removal_needs_a_retry() {
    let tree = single(2, "").await;
    let victim = tree
        .snap()
        .await
        .engines
        .iter()
        .find(|e| !e.forwarded)
        .unwrap()
        .name
        .clone();
    tree.mem.fail_next("remove", 1);
    tree.mem.exit(&victim, 1);
    let s = tree
        .wait("replaced", 60 * SEC, |s| {
            s.counters.engines_lost == 1 && full(s, VPN1, 2, 30001)
        })
        .await;
    assert_eq!(
        s.counters.removed_total(),
        0,
        "not counted as a removal acevisor decided"
    );
    let slot = acevisor::actors::supervisor::death_slot(VPN1);
    assert!(
        s.intensity
            .iter()
            .any(|r| r.slot == slot && r.restarts_in_window == 1),
        "{:?}",
        s.intensity
    );
}

#[tokio::test(start_paused = true)]
async fn a_reused_name_never_has_two_actors_and_the_stale_one_is_stopped() {
    let tree = single(2, "").await;
    let s = tree.snap().await;
    let victim = s.engines.iter().find(|e| !e.forwarded).unwrap().clone();
    let children = |tree: &Tree| tree.sup.get_cell().get_children().len();
    // NameRegistry, VpnMonitor and one actor per engine.
    assert_eq!(children(&tree), 2 + 2);
    // Removed behind acevisor's back with the events lost: only a listing can tell.
    tree.mem.drop_events(true);
    tree.mem.remove_out_of_band(&victim.name);
    tree.sup.cast(SupervisorMsg::Relist).unwrap();
    let s = tree
        .wait("the name reused by a new container", 20 * SEC, |s| {
            s.engines.iter().any(|e| {
                e.name == victim.name
                    && e.container_id != victim.container_id
                    && e.phase == EnginePhase::Ready
            })
        })
        .await;
    assert_eq!(s.engines.len(), 2);
    // The old actor of that name is gone: one actor per engine, no second one probing the same
    // name, and nothing of the old one ever reaches the new engine.
    tree.hold(
        30 * SEC,
        |s| {
            s.engines
                .iter()
                .all(|e| e.phase == EnginePhase::Ready && e.container_id.is_some())
                && s.counters.actor_restarts == 0
        },
        "the new engine stays ready and unrestarted",
    )
    .await;
    assert_eq!(
        children(&tree),
        2 + 2,
        "a stale engine actor is still alive"
    );
}

#[tokio::test(start_paused = true)]
async fn a_provision_no_engine_answers_in_time_is_a_timeout_not_a_breaker() {
    let tree = single(1, "").await;
    // Docker takes an hour to create anything: no new container runs in time.
    tree.mem.set_delay(Duration::from_secs(3600));
    let answer = provision(&tree).await;
    assert!(
        matches!(answer, Err(ProvisionError::TimedOut { waited_seconds }) if waited_seconds >= 25),
        "{answer:?}"
    );
    assert_eq!(tree.snap().await.breaker, BreakerState::Closed);
}

/// Issue 16's hang: many requests at once while the pool is also replacing an engine. Every
/// request gets its answer (none waits past its bound), and the free capacity goes to requests:
/// exactly as many engines as fit under `max_replicas`, the rest `max_capacity`.
#[tokio::test(start_paused = true)]
async fn concurrent_provisioning_while_the_pool_replaces_an_engine_answers_every_request() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let mut cfg = config("single", 2, "");
    cfg.engines.max_replicas = 4;
    cfg.engines.idle_grace = Duration::from_secs(1);
    let tree = Tree::start(&m, cfg).await;
    let s = tree
        .wait("pool", 20 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    let victim = s
        .engines
        .iter()
        .find(|e| !e.forwarded)
        .unwrap()
        .name
        .clone();
    m.exit(&victim, 137);
    let asked = tokio::time::Instant::now();
    let requests = (0..20).map(|_| provision(&tree));
    let answers = futures_util::future::join_all(requests).await;
    // Virtual time (the paused clock): every answer came within the Supervisor's own bound, so
    // no request waited for the API's timeout.
    let bound = acevisor::core::provisioning::answer_within(
        false,
        Duration::from_secs(10),
        Duration::from_secs(30),
    );
    assert!(
        asked.elapsed() < bound,
        "{:?} >= {bound:?}",
        asked.elapsed()
    );
    let served = answers.iter().filter(|a| a.is_ok()).count();
    let refused: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert_eq!(
        served, 2,
        "the two free places went to requests: {answers:?}"
    );
    assert!(
        refused.iter().all(|e| **e == ProvisionError::MaxCapacity),
        "{refused:?}"
    );
}

/// An Engine actor that dies before it learns its container's ID is respawned by looking the
/// container up by name; while that inspect fails (Docker trouble, not an answer), the engine is
/// kept and the inspect retried: a Docker error is never evidence that the container is gone.
/// The container Docker made is adopted, nothing is created again. Seen failing when a failed
/// inspect was taken for "gone" (the engine vanished from the Supervisor's view).
#[tokio::test(start_paused = true)]
async fn an_engine_actor_respawn_retries_a_failed_inspect() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    m.panic_after_create(1);
    m.fail_inspects_of("acestream-1", 3);
    let tree = Tree::start(&m, config("single", 1, "")).await;
    tree.wait("the crashed creation's engine is known", 10 * SEC, |s| {
        s.engines.iter().any(|e| e.name == "acestream-1")
    })
    .await;
    tree.hold(
        10 * SEC,
        |s| {
            s.engines.len() == 1
                && s.engines[0].name == "acestream-1"
                && s.counters.create_failures == 0
        },
        "the engine kept while its inspect fails, no creation again",
    )
    .await;
    let s = tree
        .wait("adopted and ready", 30 * SEC, |s| full(s, VPN1, 1, 30001))
        .await;
    let containers: Vec<_> = m
        .containers()
        .into_iter()
        .filter(|c| c.name.starts_with("acestream-"))
        .collect();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(
        s.engines[0].container_id.as_deref(),
        Some(containers[0].id.as_str())
    );
    // Restarted once on its container; no other creation was made or attempted.
    assert_eq!(
        (
            s.counters.actor_restarts,
            s.counters.create_failures,
            s.counters.engines_created
        ),
        (1, 0, 0),
        "{:?}",
        s.counters
    );
    assert!(m.removed_ids().is_empty(), "{:?}", m.removed_ids());
}
