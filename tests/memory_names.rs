//! Names without gaps at rest, graceful stops and rolling template changes, on the whole actor
//! tree over the in-memory runtime (tokio's paused clock).

mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use acevisor::actors::messages::{SupervisorMsg, SupervisorSnapshot};
use acevisor::core::model::EnginePhase;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use tree::{Tree, VPN1, VPN2, config, full, two_vpns};

const SEC: Duration = Duration::from_secs(1);

/// The engines' ordinals, sorted, as acevisor knows them.
fn ordinals(s: &SupervisorSnapshot) -> Vec<u32> {
    let mut o: Vec<u32> = s.engines.iter().map(|e| e.ordinal).collect();
    o.sort_unstable();
    o
}

/// Names exactly `acestream-1..=n`, in acevisor's view and in Docker's.
fn names_are_one_to(s: &SupervisorSnapshot, m: &MemoryRuntime, n: u32) -> bool {
    let want: Vec<u32> = (1..=n).collect();
    let mut docker: Vec<String> = m
        .containers()
        .into_iter()
        .map(|c| c.name)
        .filter(|n| n.starts_with("acestream-"))
        .collect();
    docker.sort();
    let mut expected: Vec<String> = want.iter().map(|n| format!("acestream-{n}")).collect();
    expected.sort();
    ordinals(s) == want
        && docker == expected
        && s.engines
            .iter()
            .all(|e| e.name == format!("acestream-{}", e.ordinal))
}

async fn single(m: &MemoryRuntime, min: u32) -> Tree {
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let tree = Tree::start(m, config("single", min, "")).await;
    tree.wait("pool", 20 * SEC, |s| full(s, VPN1, min as usize, 30001))
        .await;
    tree
}

#[tokio::test(start_paused = true)]
async fn after_a_port_change_the_names_are_one_to_n_again() {
    let m = MemoryRuntime::new();
    let tree = single(&m, 4).await;
    let s = tree.snap().await;
    assert!(names_are_one_to(&s, &m, 4), "{s:#?}");
    let replaced = s.forwarded_on(VPN1)[0].name.clone();

    m.set_port(VPN1, 30002);
    let s = tree
        .wait("the new forwarded engine renamed down", 20 * SEC, |s| {
            full(s, VPN1, 4, 30002) && names_are_one_to(s, &m, 4)
        })
        .await;
    // The replacement was created as acestream-5 while the old one still existed, then took
    // the old one's name once it was gone.
    let renames = m.renames();
    assert_eq!(renames.len(), 1, "{renames:?}");
    assert_eq!(
        (renames[0].1.as_str(), renames[0].2.as_str()),
        ("acestream-5", replaced.as_str())
    );
    let fw = &s.forwarded_on(VPN1)[0];
    assert_eq!(fw.name, replaced);
    assert_eq!(fw.container_id.as_deref(), Some(renames[0].0.as_str()));
    tree.hold(10 * SEC, |s| names_are_one_to(s, &m, 4), "names at rest")
        .await;
}

#[tokio::test(start_paused = true)]
async fn after_a_vpn_recovery_the_names_are_one_to_n_again() {
    let m = MemoryRuntime::new();
    two_vpns(&m, 55747, 40000);
    let tree = Tree::start(&m, config("redundant", 10, "")).await;
    tree.wait("10 engines 5/5", 30 * SEC, |s| {
        full(s, VPN1, 5, 55747) && full(s, VPN2, 5, 40000)
    })
    .await;
    // Docker is slow to confirm removals, so the recovered VPN's engines are created while the
    // dead ones still hold their names.
    m.kill(VPN1);
    m.set_delay(Duration::from_millis(1500));
    m.start(VPN1);
    m.set_health(VPN1, DockerHealth::Healthy);
    m.set_port(VPN1, 34817);
    tree.wait("recovered, names 1..10", 90 * SEC, |s| {
        full(s, VPN1, 5, 34817) && full(s, VPN2, 5, 40000) && names_are_one_to(s, &m, 10)
    })
    .await;
    m.set_delay(Duration::ZERO);
    tree.hold(10 * SEC, |s| names_are_one_to(s, &m, 10), "names at rest")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_engine_is_stopped_with_the_stop_timeout_then_removed() {
    let m = MemoryRuntime::new();
    m.add_vpn(VPN1, 30001, Some(DockerHealth::Healthy));
    let mut cfg = config("single", 2, "");
    cfg.docker.stop_timeout = Duration::from_secs(7);
    let tree = Tree::start(&m, cfg).await;
    let s = tree
        .wait("pool", 20 * SEC, |s| full(s, VPN1, 2, 30001))
        .await;
    let old = s.forwarded_on(VPN1)[0].container_id.clone().unwrap();
    m.set_port(VPN1, 30002);
    tree.wait("replaced", 20 * SEC, |s| {
        full(s, VPN1, 2, 30002)
            && !s
                .engines
                .iter()
                .any(|e| e.container_id.as_deref() == Some(&old))
    })
    .await;
    assert_eq!(m.stops(), vec![(old.clone(), Duration::from_secs(7))]);
    assert_eq!(m.removed_ids(), vec![old]);
}

#[tokio::test(start_paused = true)]
async fn a_renamed_engine_keeps_its_streams() {
    let m = MemoryRuntime::new();
    let tree = single(&m, 3).await;
    m.set_port(VPN1, 30002);
    let s = tree
        .wait("the new forwarded engine", 20 * SEC, |s| {
            s.forwarded_on(VPN1)
                .iter()
                .any(|e| e.p2p_port == 30002 && e.phase == EnginePhase::Ready)
        })
        .await;
    let new = s
        .forwarded_on(VPN1)
        .into_iter()
        .find(|e| e.p2p_port == 30002)
        .unwrap()
        .container_id
        .clone()
        .unwrap();
    // The streams owner counts by container ID.
    tree.sup
        .cast(SupervisorMsg::StreamCounts(BTreeMap::from([(
            new.clone(),
            1,
        )])))
        .unwrap();
    let s = tree
        .wait("renamed down", 20 * SEC, |s| names_are_one_to(s, &m, 3))
        .await;
    let fw = &s.forwarded_on(VPN1)[0];
    assert_eq!(fw.container_id.as_deref(), Some(new.as_str()));
    assert_eq!(fw.streams, 1, "{s:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_template_change_is_rolled_one_engine_at_a_time_forwarded_last() {
    let m = MemoryRuntime::new();
    let tree = single(&m, 4).await;
    let s = tree.snap().await;
    let old: BTreeSet<String> = s
        .engines
        .iter()
        .filter_map(|e| e.container_id.clone())
        .collect();
    let old_fw = s.forwarded_on(VPN1)[0].container_id.clone().unwrap();
    tree.stop().await;

    let mut cfg = config("single", 4, "");
    cfg.engines
        .env
        .insert("ENGINE_CACHE_MB".into(), "512".into());
    let tree = Tree::start(&m, cfg).await;
    // Watch the roll from the start: once the adopted engines are ready, never fewer than 4
    // ready engines and never two old engines going at once.
    let mut reached = false;
    let deadline = tokio::time::Instant::now() + 120 * SEC;
    loop {
        let s = tree.snap().await;
        let left = tree::check_roll(&s, &old, 4, &mut reached);
        if left == 0 && full(&s, VPN1, 4, 30001) && names_are_one_to(&s, &m, 4) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the roll did not finish: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone_order: Vec<String> = m
        .removed_ids()
        .into_iter()
        .filter(|id| old.contains(id))
        .collect();
    assert_eq!(gone_order.len(), 4, "{gone_order:?}");
    assert_eq!(
        gone_order.last(),
        Some(&old_fw),
        "the forwarded engine last"
    );
    let s = tree.snap().await;
    assert_eq!(s.counters.engines_removed.get("outdated"), Some(&4));
    // Every engine now runs the new template.
    for e in &s.engines {
        let c = m
            .containers()
            .into_iter()
            .find(|c| Some(&c.id) == e.container_id.as_ref())
            .unwrap();
        assert!(!old.contains(&c.id), "{} is still an old engine", e.name);
    }
}
