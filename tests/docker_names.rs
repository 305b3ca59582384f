//! Names without gaps at rest, graceful stops and a rolling template change, on the real Docker
//! engine with the testbed fakes.

mod docker_world;
mod support;
mod tree;

use std::collections::BTreeSet;
use std::time::Duration;

use acevisor::actors::messages::SupervisorSnapshot;
use docker_world::{World, fake_engines_confirm};
use tree::full;

const SEC: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// Names of this run's engine containers as Docker has them (running or not).
fn docker_names(w: &World) -> BTreeSet<String> {
    support::docker_ok(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label={}", w.run.managed_label()),
    ])
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_string)
    .collect()
}

/// acevisor's engines are exactly `prefix-1..=n`, and so are Docker's containers.
fn names_are_one_to(w: &World, s: &SupervisorSnapshot, n: u32) -> bool {
    let want: BTreeSet<String> = (1..=n).map(|k| w.engine(k)).collect();
    let known: BTreeSet<String> = s.engines.iter().map(|e| e.name.clone()).collect();
    known == want && docker_names(w) == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_one_to_n_at_rest_after_a_port_change_and_a_vpn_recovery() {
    let Some(w) = World::new(&[55747, 40000], None).await else {
        return;
    };
    let tree = w
        .acevisor(w.config("redundant", 4, "", ""), vec![None, None])
        .await;
    tree.wait("4 engines 2/2", MINUTE, |s| {
        full(s, w.vpn(0), 2, 55747) && full(s, w.vpn(1), 2, 40000)
    })
    .await;

    // A port change: the new forwarded engine is created first under the next free name, then
    // takes the old one's name once that one is gone.
    w.set_port(0, 55800).await;
    let s = tree
        .wait("new forwarded engine, names 1..4", MINUTE, |s| {
            full(s, w.vpn(0), 2, 55800) && full(s, w.vpn(1), 2, 40000) && names_are_one_to(&w, s, 4)
        })
        .await;
    fake_engines_confirm(&s, w.vpn(0), 55800).await;

    // Incident A: VPN1 dies and comes back with a new port.
    support::docker_kill(w.vpn(0));
    tree.wait("VPN1 emptied", 20 * SEC, |s| {
        s.engines_on(w.vpn(0)).is_empty()
    })
    .await;
    support::docker_ok(&["start", w.vpn(0)]);
    w.set_port(0, 34817).await;
    let s = tree
        .wait("recovered, names 1..4", MINUTE, |s| {
            full(s, w.vpn(0), 2, 34817) && full(s, w.vpn(1), 2, 40000) && names_are_one_to(&w, s, 4)
        })
        .await;
    fake_engines_confirm(&s, w.vpn(0), 34817).await;
    tree.hold(3 * SEC, |s| names_are_one_to(&w, s, 4), "names at rest")
        .await;
    tree.stop().await;
}

/// `docker events` of this run's engines since `since` (unix seconds): `(container id, action)`.
fn engine_events(w: &World, since: u64) -> Vec<(String, String)> {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    support::docker_ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "type=container",
        "--filter",
        &format!("label={}", w.run.managed_label()),
        "--format",
        "{{.Actor.ID}} {{.Action}} {{index .Actor.Attributes \"signal\"}}",
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split_whitespace();
        let id = parts.next()?.to_string();
        let action = parts.next()?.to_string();
        // Events without a signal print `<no value>` there.
        let signal = parts
            .next()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("");
        Some((id, format!("{action}{signal}")))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_is_rolled_over_a_running_pool_with_graceful_stops() {
    let Some(w) = World::new(&[30001], None).await else {
        return;
    };
    let mut cfg = w.config("single", 3, "", "");
    // The extra engine the forwarded engine's roll leaves is trimmed after this.
    cfg.engines.idle_grace = 2 * SEC;
    let tree = w.acevisor(cfg.clone(), vec![None]).await;
    let s = tree
        .wait("3 engines", MINUTE, |s| full(s, w.vpn(0), 3, 30001))
        .await;
    let old: BTreeSet<String> = s
        .engines
        .iter()
        .filter_map(|e| e.container_id.clone())
        .collect();
    let old_fw = s.forwarded_on(w.vpn(0))[0].container_id.clone().unwrap();
    tree.stop().await;

    // The same containers, a changed template: acevisor restarts and rolls them.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    cfg.engines
        .env
        .insert("ENGINE_CACHE_MB".into(), "512".into());
    let tree = w.acevisor(cfg, vec![None]).await;
    let mut reached = false;
    let deadline = tokio::time::Instant::now() + 3 * MINUTE;
    loop {
        let s = tree.snap().await;
        let left = tree::check_roll(&s, &old, 3, &mut reached);
        if left == 0 && full(&s, w.vpn(0), 3, 30001) && names_are_one_to(&w, &s, 3) {
            fake_engines_confirm(&s, w.vpn(0), 30001).await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the roll did not finish: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = tree.snap().await;
    assert_eq!(s.counters.engines_removed.get("outdated"), Some(&3));
    let events = engine_events(&w, since);
    let gone_order: Vec<&String> = events
        .iter()
        .filter(|(id, a)| a == "destroy" && old.contains(id))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(gone_order.len(), 3, "{events:?}");
    assert_eq!(
        gone_order.last(),
        Some(&&old_fw),
        "the forwarded engine last"
    );

    // Every old engine was stopped gracefully (SIGTERM through `docker stop`) before it was
    // removed: a forced removal alone sends SIGKILL.
    for id in &old {
        let mine: Vec<&str> = events
            .iter()
            .filter(|(e, _)| e == id)
            .map(|(_, a)| a.as_str())
            .collect();
        let term = mine.iter().position(|a| *a == "kill15");
        let destroy = mine.iter().position(|a| *a == "destroy");
        assert!(
            matches!((term, destroy), (Some(t), Some(d)) if t < d),
            "{id}: no SIGTERM before its removal: {mine:?}"
        );
        assert!(mine.contains(&"stop"), "{id}: never stopped: {mine:?}");
    }
    tree.stop().await;
}
