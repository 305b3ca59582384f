//! The Supervisor's side of the stream proxy on the whole actor tree over the in-memory runtime:
//! an engine reserved for a content is reported to the proxy's trouble watchers the moment its
//! VPN fails (in the `vpn.failed` span, before its removal) or it turns unhealthy (once per
//! spell, long before it is removed), and a troubled engine is never reserved again.

mod tree;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acevisor::actors::messages::{EngineView, RemovalWatcher, SupervisorMsg};
use acevisor::core::model::EnginePhase;
use ractor::ActorRef;
use tree::{Tree, VPN1, VPN2, config, two_vpns};

const SEC: Duration = Duration::from_secs(1);

/// `(watcher, engine, name of the span current at the call)`, in call order.
type Calls = Arc<Mutex<Vec<(&'static str, String, Option<&'static str>)>>>;

fn watcher(calls: &Calls, kind: &'static str) -> RemovalWatcher {
    let calls = calls.clone();
    RemovalWatcher(Box::new(move |r| {
        let span = tracing::Span::current().metadata().map(|m| m.name());
        calls.lock().unwrap().push((kind, r.name, span));
        true
    }))
}

async fn reserve(sup: &ActorRef<SupervisorMsg>, content: &str) -> Option<EngineView> {
    ractor::call_t!(
        sup,
        |reply| SupervisorMsg::ReserveEngine {
            content: content.into(),
            exclude: vec![],
            max_per_engine: 1,
            reply,
        },
        10_000
    )
    .expect("supervisor answers")
}

async fn two_engines(calls: &Calls) -> Tree {
    let m = acevisor::runtime::memory::MemoryRuntime::new();
    two_vpns(&m, 55747, 40000);
    let tree = Tree::start(&m, config("redundant", 2, "")).await;
    tree.wait("2 ready engines", 30 * SEC, |s| {
        s.engines
            .iter()
            .filter(|e| e.phase == EnginePhase::Ready)
            .count()
            == 2
    })
    .await;
    tree.sup
        .cast(SupervisorMsg::WatchTrouble(watcher(calls, "trouble")))
        .unwrap();
    tree.sup
        .cast(SupervisorMsg::WatchRemovals(watcher(calls, "removal")))
        .unwrap();
    tree
}

#[tokio::test(start_paused = true)]
async fn a_failed_vpn_is_reported_for_its_reserved_engine_in_the_incident_span_before_the_removal()
{
    let _installed = tracing::subscriber::set_default(tracing_subscriber::registry());
    let calls = Calls::default();
    let tree = two_engines(&calls).await;
    let e = reserve(&tree.sup, "id:a").await.expect("an engine");
    let vpn = e.vpn.clone().expect("on a VPN");
    let other = if vpn == VPN1 { VPN2 } else { VPN1 };

    tree.mem.kill(&vpn);
    tree.wait("the engine removed", 10 * SEC, |s| {
        s.engines_on(&vpn).is_empty()
    })
    .await;
    let about: Vec<_> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.1 == e.name)
        .cloned()
        .collect();
    assert_eq!(
        about.first(),
        Some(&("trouble", e.name.clone(), Some("vpn.failed"))),
        "{about:?}"
    );
    assert_eq!(
        about.iter().filter(|c| c.0 == "trouble").count(),
        1,
        "{about:?}"
    );
    // The session moves: the engine on the healthy VPN.
    let next = reserve(&tree.sup, "id:a").await.expect("the other engine");
    assert_eq!(next.vpn.as_deref(), Some(other));
    tree.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_reserved_engine_is_reported_once_per_spell_and_not_reserved_again() {
    let calls = Calls::default();
    let tree = two_engines(&calls).await;
    let e = reserve(&tree.sup, "id:a").await.expect("an engine");
    let troubles = |calls: &Calls| {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == "trouble" && c.1 == e.name)
            .count()
    };

    tree.mem.hang(&e.name);
    let s = tree
        .wait("unhealthy", 20 * SEC, |s| {
            s.engines
                .iter()
                .any(|x| x.name == e.name && matches!(x.phase, EnginePhase::Unhealthy { .. }))
        })
        .await;
    // Told at the turn, not at the removal (unhealthy_grace is 10 s).
    assert!(s.engines.iter().any(|x| x.name == e.name));
    tree.wait("told", SEC, |_| troubles(&calls) == 1).await;
    // Another content does not get it (nor would this one).
    let other = reserve(&tree.sup, "id:b").await.expect("the other engine");
    assert_ne!(other.name, e.name);
    tree.hold(3 * SEC, |_| troubles(&calls) == 1, "told once")
        .await;

    // Healthy again, then unhealthy again: a new spell, told again.
    tree.mem.unhang(&e.name);
    tree.wait("ready again", 20 * SEC, |s| {
        s.engines
            .iter()
            .any(|x| x.name == e.name && x.phase == EnginePhase::Ready)
    })
    .await;
    tree.mem.hang(&e.name);
    tree.wait("told again", 20 * SEC, |_| troubles(&calls) == 2)
        .await;
    tree.stop().await;
}
