//! `DockerRuntime` against the real Docker engine, with the testbed's fake Gluetun and fake
//! engine images: creation in a VPN's namespace, inspect fields, events, idempotent removal, the
//! 409 name race, start failures, and what a slow or absent daemon looks like.
//!
//! Without Docker these tests print `SKIPPED` and pass, unless `ACEVISOR_REQUIRE_DOCKER=1`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use acevisor::runtime::docker::DockerRuntime;
use acevisor::runtime::{
    Attach, ContainerBrief, ContainerEvent, ContainerRuntime, ContainerSpec, DockerHealth,
    EventKind, EventStream, ListQuery, RuntimeError,
};
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::InspectContainerOptions;
use futures_util::StreamExt;
use support::{GluetunOptions, RunId};

const ENGINE_HTTP: u16 = 6878;
const ENGINE_P2P: u16 = 8621;
const STATUS_PATH: &str = "/server/api?api_version=3&method=get_status";

/// An engine spec labelled like acevisor's own engines of this run.
fn engine_spec(run: &RunId, suffix: &str, attach: Attach, http: u16, p2p: u16) -> ContainerSpec {
    let mut labels = run.labels();
    labels.insert(support::MANAGED_LABEL.into(), run.as_str().into());
    labels.insert("acevisor.role".into(), "engine".into());
    labels.insert("acevisor.p2p_port".into(), p2p.to_string());
    ContainerSpec {
        name: run.name(suffix),
        image: support::engine_image(),
        cmd: support::engine_cmd(http, p2p),
        env: BTreeMap::from([(
            "FAKE_STARTUP_MS".to_string(),
            support::FAKE_ENGINE_STARTUP_MS.to_string(),
        )]),
        labels,
        attach,
    }
}

fn behind(vpn_id: &str) -> Attach {
    Attach::ContainerNamespace {
        container_id: vpn_id.to_string(),
    }
}

fn managed_by(run: &RunId) -> ListQuery {
    ListQuery {
        labels: vec![run.managed_label()],
        name: None,
        all: true,
    }
}

/// The next event on `stream` matching `want`, or a panic naming `what` after `within`.
async fn next_event(
    stream: &mut EventStream,
    within: Duration,
    what: &str,
    want: impl Fn(&ContainerEvent) -> bool,
) -> ContainerEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => panic!("no {what} event within {within:?}"),
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Ok(Some(Err(e))) => panic!("event stream error while waiting for {what}: {e}"),
            Ok(Some(Ok(event))) if want(&event) => return event,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Docker's own status word for a container (`removing`, `running`, ...), `None` when gone.
async fn docker_status(rt: &DockerRuntime, id: &str) -> Option<ContainerStateStatusEnum> {
    rt.client()
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.status)
}

#[tokio::test]
async fn engine_in_a_vpn_namespace_is_created_listed_and_inspected() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    // A long health interval so the first inspect reliably sees `starting`.
    let options = GluetunOptions {
        forwarded_port: Some(40123),
        health_interval: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let vpn_id = support::start_fake_gluetun(&run, "vpn", &options);
    let vpn = rt.inspect(&vpn_id).await.unwrap().expect("gluetun exists");
    assert!(vpn.running);
    assert_eq!(vpn.name, run.name("vpn"));
    assert_eq!(
        vpn.health,
        Some(DockerHealth::Starting),
        "Docker health right after start"
    );
    assert!(!vpn.started_at.is_empty());
    let vpn_ip = vpn
        .ip_on(Some("bridge"))
        .expect("gluetun has a bridge address");
    support::wait_until(Duration::from_secs(20), "gluetun healthy", || async {
        matches!(rt.inspect(&vpn_id).await, Ok(Some(c)) if c.health == Some(DockerHealth::Healthy))
    })
    .await;

    let spec = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let engine_id = rt.create_and_start(&spec).await.expect("engine starts");

    let listed = rt.list(&managed_by(&run)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let engine = &listed[0];
    assert_eq!(engine.id, engine_id);
    assert_eq!(engine.name, spec.name);
    assert_eq!(engine.image, support::engine_image());
    assert!(engine.running);
    assert_eq!(engine.health, None, "the engine image has no healthcheck");
    assert!(!engine.started_at.is_empty());
    assert!(
        engine.ips.is_empty(),
        "a container:X engine has no network of its own"
    );
    assert_eq!(
        engine.labels.get("acevisor.p2p_port").map(String::as_str),
        Some("8621")
    );
    assert_eq!(
        engine.labels.get(support::RUN_LABEL).map(String::as_str),
        Some(run.as_str())
    );
    assert_eq!(
        rt.inspect(&spec.name).await.unwrap().as_ref(),
        Some(engine),
        "by name = by id"
    );

    // Docker recorded what the contract asks for.
    let host = support::docker_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}} {{.HostConfig.RestartPolicy.Name}} {{len .HostConfig.PortBindings}}",
        &engine_id,
    ]);
    assert_eq!(host, format!("container:{vpn_id} no 0"));

    // The engine answers on the VPN's address, on its own HTTP port.
    support::wait_for(Duration::from_secs(10), "engine status via VPN IP", || {
        let ip = vpn_ip.clone();
        async move { support::http_get(&ip, ENGINE_HTTP, STATUS_PATH).await }
    })
    .await;
    let ports = support::fake_engine_ports(&vpn_ip, ENGINE_HTTP).await;
    assert_eq!(
        ports.map(|p| p.p2p_port),
        Some(ENGINE_P2P),
        "the engine runs with the P2P port of its spec"
    );

    // Filters: a name filter and a label that matches nothing.
    let by_name = ListQuery {
        name: Some(spec.name.clone()),
        ..Default::default()
    };
    assert_eq!(rt.list(&by_name).await.unwrap().len(), 1);
    let nothing = ListQuery {
        labels: vec![format!("{}-other", run.label())],
        ..Default::default()
    };
    assert!(rt.list(&nothing).await.unwrap().is_empty());

    // `all` decides whether stopped containers are listed.
    rt.stop(&engine_id, Duration::from_secs(5)).await.unwrap();
    let running_only = ListQuery {
        all: false,
        ..managed_by(&run)
    };
    assert!(rt.list(&running_only).await.unwrap().is_empty());
    let stopped = rt.list(&managed_by(&run)).await.unwrap();
    assert_eq!(stopped.len(), 1);
    assert!(!stopped[0].running);
}

#[tokio::test]
async fn events_report_start_health_die_and_destroy() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    // Subscribe first, then act: nothing may fall in between.
    let mut events = rt.events().await.expect("events stream");
    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let vpn_name = run.name("vpn");
    let started = next_event(&mut events, Duration::from_secs(10), "gluetun start", |e| {
        e.id == vpn_id && e.kind == EventKind::Start
    })
    .await;
    assert_eq!(started.name, vpn_name);
    assert_eq!(
        started.labels.get(support::RUN_LABEL).map(String::as_str),
        Some(run.as_str())
    );
    assert!(
        !started.labels.contains_key("image"),
        "attributes that are not labels are dropped"
    );
    next_event(
        &mut events,
        Duration::from_secs(20),
        "gluetun healthy",
        |e| e.id == vpn_id && e.kind == EventKind::Health(DockerHealth::Healthy),
    )
    .await;

    let spec = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let engine_id = rt.create_and_start(&spec).await.unwrap();
    let started = next_event(&mut events, Duration::from_secs(10), "engine start", |e| {
        e.id == engine_id && e.kind == EventKind::Start
    })
    .await;
    assert_eq!(
        started.labels.get("acevisor.role").map(String::as_str),
        Some("engine")
    );

    support::docker_kill(&engine_id);
    let died = next_event(&mut events, Duration::from_secs(10), "engine die", |e| {
        e.id == engine_id && matches!(e.kind, EventKind::Die { .. })
    })
    .await;
    assert_eq!(
        died.kind,
        EventKind::Die {
            exit_code: Some(137)
        }
    );
    assert_eq!(died.name, spec.name);

    rt.remove(&engine_id).await.unwrap();
    next_event(
        &mut events,
        Duration::from_secs(10),
        "engine destroy",
        |e| e.id == engine_id && e.kind == EventKind::Destroy,
    )
    .await;

    rt.stop(&vpn_id, Duration::from_secs(5)).await.unwrap();
    next_event(&mut events, Duration::from_secs(10), "gluetun stop", |e| {
        e.id == vpn_id && e.kind == EventKind::Stop
    })
    .await;
}

#[tokio::test]
async fn remove_is_idempotent_and_inspect_of_a_missing_container_is_none() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let spec = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let id = rt.create_and_start(&spec).await.unwrap();
    rt.remove(&id).await.unwrap();
    assert_eq!(rt.inspect(&id).await.unwrap(), None);
    assert_eq!(rt.inspect(&spec.name).await.unwrap(), None);
    rt.remove(&id).await.expect("second removal is fine");

    // Two removals at once: Docker answers the later one 409 "removal already in progress";
    // both must come back `Ok` only once the container is really gone.
    let spec = engine_spec(&run, "engine-2", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let id = rt.create_and_start(&spec).await.unwrap();
    let (a, b) = tokio::join!(rt.remove(&id), rt.remove(&id));
    a.expect("first concurrent removal");
    b.expect("second concurrent removal");
    assert_eq!(rt.inspect(&id).await.unwrap(), None);
    rt.remove(&run.name("never-existed"))
        .await
        .expect("removing nothing is fine");
    match rt.stop(&id, Duration::from_secs(1)).await {
        Err(RuntimeError::NotFound { .. }) => {}
        other => panic!("stop of a removed container: {other:?}"),
    }
}

#[tokio::test]
async fn stop_and_restart_change_what_inspect_reports() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let before = rt.inspect(&vpn_id).await.unwrap().unwrap();
    rt.restart(&vpn_id).await.unwrap();
    let after = rt.inspect(&vpn_id).await.unwrap().unwrap();
    assert!(after.running);
    assert_ne!(
        before.started_at, after.started_at,
        "a restart in place shows in StartedAt"
    );
    assert_eq!(before.id, after.id);

    rt.stop(&vpn_id, Duration::from_secs(5)).await.unwrap();
    let stopped = rt.inspect(&vpn_id).await.unwrap().unwrap();
    assert!(!stopped.running);
    assert!(stopped.ips.is_empty(), "a stopped container has no address");
    rt.stop(&vpn_id, Duration::from_secs(5))
        .await
        .expect("stopping a stopped container is fine");
}

#[tokio::test]
async fn create_waits_while_docker_still_removes_the_name() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let spec = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let mut old_id = rt.create_and_start(&spec).await.unwrap();

    // Docker's removal window is a few hundred milliseconds; catch it as it opens. If the
    // removal completes before our create reaches Docker, the attempt proves nothing: retry.
    let mut attempts: Vec<String> = Vec::new();
    while rt.name_conflict_waits() == 0 {
        assert!(
            attempts.len() < 8,
            "never caught Docker in the middle of a removal: {attempts:?}"
        );
        let remover = {
            let rt = rt.clone();
            let id = old_id.clone();
            tokio::spawn(async move { rt.remove(&id).await })
        };
        let every = Duration::from_millis(5);
        let caught = support::poll_for(Duration::from_secs(10), every, "removal to begin", || {
            let (rt, id) = (rt.clone(), old_id.clone());
            async move {
                match docker_status(&rt, &id).await {
                    Some(ContainerStateStatusEnum::REMOVING) => Some(true),
                    None => Some(false),
                    Some(_) => None,
                }
            }
        })
        .await;
        let new_id = rt
            .create_and_start(&spec)
            .await
            .expect("create with a name being removed succeeds with that same name");
        remover
            .await
            .unwrap()
            .expect("the concurrent removal succeeds");
        let now = rt
            .inspect(&spec.name)
            .await
            .unwrap()
            .expect("new container under the old name");
        assert_eq!(now.id, new_id);
        assert_ne!(new_id, old_id);
        assert!(now.running);
        attempts.push(format!(
            "saw removing: {caught}, waited: {}",
            rt.name_conflict_waits()
        ));
        old_id = new_id;
    }
}

#[tokio::test]
async fn a_name_held_by_a_live_container_is_a_conflict_at_once() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let spec = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let id = rt.create_and_start(&spec).await.unwrap();
    let started = Instant::now();
    let other = engine_spec(
        &run,
        "engine-1",
        behind(&vpn_id),
        ENGINE_HTTP + 1,
        ENGINE_P2P + 1,
    );
    match rt.create_and_start(&other).await {
        Err(RuntimeError::Conflict { name, message, .. }) => {
            assert_eq!(name, spec.name);
            assert!(
                message.contains("already in use"),
                "Docker's message is kept: {message}"
            );
        }
        result => panic!("expected a conflict, got {result:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for a live holder"
    );
    assert_eq!(
        rt.inspect(&spec.name).await.unwrap().unwrap().id,
        id,
        "holder untouched"
    );
}

#[tokio::test]
async fn a_start_failure_carries_the_containers_message_and_leaves_nothing() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    // A generous settle window: the behaviour is under test here, not the default's length on a
    // loaded machine.
    let rt = rt.with_start_settle(Duration::from_secs(1));
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let first = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let first_id = rt.create_and_start(&first).await.unwrap();
    // Same P2P port in the same namespace: the second engine cannot bind it.
    let second = engine_spec(
        &run,
        "engine-2",
        behind(&vpn_id),
        ENGINE_HTTP + 1,
        ENGINE_P2P,
    );
    match rt.create_and_start(&second).await {
        Err(RuntimeError::Api { op, message, .. }) => {
            assert_eq!(op, "start_container");
            assert!(message.contains("exited with code 1"), "{message}");
            assert!(
                message.contains("Address in use"),
                "the engine's own words: {message}"
            );
        }
        result => panic!("expected a start failure, got {result:?}"),
    }
    assert_eq!(
        rt.inspect(&second.name).await.unwrap(),
        None,
        "the failed container is removed"
    );
    let left: Vec<String> = rt
        .list(&managed_by(&run))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, vec![first_id]);
}

#[tokio::test]
async fn an_engine_behind_a_stopped_or_vanished_vpn_fails_clearly_and_leaves_nothing() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    rt.stop(&vpn_id, Duration::from_secs(5)).await.unwrap();
    let spec = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    match rt.create_and_start(&spec).await {
        Err(RuntimeError::Api { op, message, .. }) => {
            assert_eq!(op, "start_container");
            assert!(message.contains("non running container"), "{message}");
        }
        result => panic!("expected a start failure, got {result:?}"),
    }
    assert_eq!(rt.inspect(&spec.name).await.unwrap(), None);

    // A recreated VPN leaves engines pointing at an ID that no longer exists.
    rt.remove(&vpn_id).await.unwrap();
    match rt.create_and_start(&spec).await {
        Err(RuntimeError::Api { message, .. }) => {
            assert!(
                message.contains(&vpn_id[..12]),
                "names the missing VPN: {message}"
            )
        }
        result => panic!("expected a failure, got {result:?}"),
    }
    assert!(rt.list(&managed_by(&run)).await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_image_or_network_is_a_clear_error_and_leaves_nothing() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let mut spec = engine_spec(
        &run,
        "engine-1",
        Attach::Network {
            network: "bridge".into(),
            publish: vec![],
        },
        ENGINE_HTTP,
        ENGINE_P2P,
    );
    spec.image = "acevisor-testbed/no-such-image:dev".into();
    match rt.create_and_start(&spec).await {
        Err(RuntimeError::Api {
            status: 404,
            message,
            ..
        }) => {
            assert!(message.contains("no-such-image"), "{message}")
        }
        result => panic!("expected a missing image error, got {result:?}"),
    }

    let network = run.name("no-such-network");
    let spec = engine_spec(
        &run,
        "engine-1",
        Attach::Network {
            network: network.clone(),
            publish: vec![],
        },
        ENGINE_HTTP,
        ENGINE_P2P,
    );
    match rt.create_and_start(&spec).await {
        Err(RuntimeError::Api {
            status: 404,
            message,
            ..
        }) => {
            assert!(message.contains(&network), "{message}")
        }
        result => panic!("expected a missing network error, got {result:?}"),
    }
    assert!(rt.list(&managed_by(&run)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_network_engine_joins_the_network_and_publishes_its_port() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let network = run.name("net");
    rt.create_network_if_missing(&network, &run.labels())
        .await
        .unwrap();
    rt.create_network_if_missing(&network, &run.labels())
        .await
        .expect("idempotent");

    let port = support::free_host_port();
    let spec = engine_spec(
        &run,
        "engine-1",
        Attach::Network {
            network: network.clone(),
            publish: vec![port],
        },
        port,
        ENGINE_P2P,
    );
    let id = rt.create_and_start(&spec).await.unwrap();
    let engine = rt.inspect(&id).await.unwrap().unwrap();
    let ip = engine
        .ip_on(Some(&network))
        .expect("an address on its network");
    assert_eq!(Some(ip.clone()), support::container_ip(&id, Some(&network)));

    support::wait_for(Duration::from_secs(10), "engine on its IP", || {
        let ip = ip.clone();
        async move { support::http_get(&ip, port, STATUS_PATH).await }
    })
    .await;
    let ports = support::fake_engine_ports(&ip, port).await;
    assert_eq!(ports.map(|p| p.p2p_port), Some(ENGINE_P2P));
    support::wait_for(
        Duration::from_secs(10),
        "engine on the published host port",
        || async { support::http_get("127.0.0.1", port, STATUS_PATH).await },
    )
    .await;

    rt.remove(&id).await.unwrap();
    rt.remove_network(&network).await.unwrap();
    rt.remove_network(&network)
        .await
        .expect("removing a missing network is fine");
}

// ---------------------------------------------------------------------------------------------
// A daemon that is slow or absent (no Docker needed).

#[tokio::test]
async fn a_daemon_that_never_answers_gives_timeout() {
    let dir = std::env::temp_dir().join(format!("acevisor-{}", RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    // Accept every connection and keep it open without ever answering.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });

    let host = format!("unix://{}", socket.display());
    let rt = DockerRuntime::connect(Some(&host), Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    match rt.ping().await {
        Err(RuntimeError::Timeout { op: "ping", after }) => {
            assert_eq!(after, Duration::from_millis(300))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the call timeout is honoured"
    );
    assert!(matches!(
        rt.list(&ListQuery::default()).await,
        Err(RuntimeError::Timeout { .. })
    ));
    assert!(matches!(
        rt.inspect("x").await,
        Err(RuntimeError::Timeout { .. })
    ));
    assert!(matches!(
        rt.remove("x").await,
        Err(RuntimeError::Timeout { .. })
    ));
    let err = rt.events().await.err().expect("events needs the daemon");
    assert!(err.is_transport(), "{err}");

    silent.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_absent_daemon_gives_unreachable() {
    let dir = std::env::temp_dir().join(format!("acevisor-{}", RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();

    // No socket file at all.
    let missing = format!("unix://{}", dir.join("missing.sock").display());
    match DockerRuntime::connect(Some(&missing), Duration::from_secs(1)) {
        Err(RuntimeError::Unreachable { message, .. }) => {
            assert!(message.contains("missing.sock"), "{message}")
        }
        other => panic!("expected unreachable, got {other:?}"),
    }

    // A socket file nobody listens on any more: connection refused.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let rt = DockerRuntime::connect(
        Some(&format!("unix://{}", stale.display())),
        Duration::from_secs(1),
    )
    .unwrap();
    match rt.ping().await {
        Err(RuntimeError::Unreachable {
            op: "ping",
            message,
        }) => {
            assert!(message.to_lowercase().contains("refused"), "{message}")
        }
        other => panic!("expected unreachable, got {other:?}"),
    }

    // TCP with nothing listening.
    let port = support::free_host_port();
    let rt = DockerRuntime::connect(
        Some(&format!("tcp://127.0.0.1:{port}")),
        Duration::from_secs(1),
    )
    .unwrap();
    let err = rt.list(&ListQuery::default()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transport());

    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake daemon on a Unix socket: answers `/_ping`, and `/events` with one `die` event before
/// closing the connection. Sends the request line of each `/events` call to `requests`.
async fn serve_one_event_then_close(
    listener: tokio::net::UnixListener,
    requests: tokio::sync::mpsc::UnboundedSender<String>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut stream, _)) = listener.accept().await {
        let requests = requests.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let request_line = head.lines().next().unwrap_or_default().to_string();
            let path = request_line.split_whitespace().nth(1).unwrap_or_default();
            let (content_type, body) = if path.starts_with("/events") {
                let _ = requests.send(request_line.clone());
                let event = r#"{"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"name":"acestream-1","exitCode":"3","acevisor.role":"engine"}},"time":1,"timeNano":1}"#;
                ("application/json", format!("{event}\n"))
            } else {
                ("text/plain", "OK".to_string())
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[tokio::test]
async fn an_event_stream_closed_by_the_daemon_ends_with_an_error() {
    let dir = std::env::temp_dir().join(format!("acevisor-{}", RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("closing.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (requests_tx, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(serve_one_event_then_close(listener, requests_tx));

    let host = format!("unix://{}", socket.display());
    let rt = DockerRuntime::connect(Some(&host), Duration::from_secs(2)).unwrap();
    let mut events = rt.events().await.expect("the fake daemon answers ping");
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    let event = first.expect("an item").expect("the die event");
    assert_eq!(event.kind, EventKind::Die { exit_code: Some(3) });
    assert_eq!(event.name, "acestream-1");
    assert_eq!(
        event.labels,
        BTreeMap::from([("acevisor.role".to_string(), "engine".to_string())])
    );
    let last = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    match last {
        Some(Err(e)) => assert!(e.is_transport(), "{e}"),
        other => panic!("a closed stream must end with an error, got {other:?}"),
    }

    // The subscription asked for container events only, replayed from the time of the call.
    let request = requests.recv().await.unwrap();
    assert!(request.contains("since="), "{request}");
    assert!(request.contains("filters="), "{request}");

    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_scripted_fake_gluetun_turns_unhealthy_and_changes_its_port() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let mut events = rt.events().await.unwrap();
    let options = GluetunOptions {
        forwarded_port: Some(40123),
        ..Default::default()
    };
    let vpn_id = support::start_fake_gluetun(&run, "vpn", &options);
    let ip = support::container_ip(&vpn_id, None).expect("gluetun address");
    let port = support::wait_for(Duration::from_secs(10), "control server", || {
        let ip = ip.clone();
        async move { support::gluetun_port(&ip).await }
    })
    .await;
    assert_eq!(port, 40123);
    next_event(
        &mut events,
        Duration::from_secs(20),
        "gluetun healthy",
        |e| e.id == vpn_id && e.kind == EventKind::Health(DockerHealth::Healthy),
    )
    .await;

    support::gluetun_set_port(&ip, 40200).await;
    assert_eq!(support::gluetun_port(&ip).await, Some(40200));

    support::gluetun_set_healthy(&ip, false).await;
    next_event(
        &mut events,
        Duration::from_secs(20),
        "gluetun unhealthy",
        |e| e.id == vpn_id && e.kind == EventKind::Health(DockerHealth::Unhealthy),
    )
    .await;
    let vpn = rt.inspect(&vpn_id).await.unwrap().unwrap();
    assert_eq!(vpn.health, Some(DockerHealth::Unhealthy));
    assert!(vpn.running, "unhealthy is not down");

    // An engine started out-of-band in the VPN's namespace looks like any other container.
    let engine_id =
        support::start_fake_engine(&run, "oob", &vpn_id, ENGINE_HTTP, ENGINE_P2P, &[("x", "y")]);
    let engine = rt.inspect(&engine_id).await.unwrap().unwrap();
    assert!(engine.running && engine.ips.is_empty());
    assert_eq!(engine.labels.get("x").map(String::as_str), Some("y"));
}

#[tokio::test]
async fn list_brief_tells_what_list_tells_of_names_ids_labels_and_state() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let running = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    rt.create_and_start(&running).await.unwrap();
    let stopped = engine_spec(
        &run,
        "engine-2",
        behind(&vpn_id),
        ENGINE_HTTP + 1,
        ENGINE_P2P + 1,
    );
    let stopped_id = rt.create_and_start(&stopped).await.unwrap();
    rt.stop(&stopped_id, Duration::from_secs(5)).await.unwrap();

    let brief = rt.list_brief(&managed_by(&run)).await.unwrap();
    let full: Vec<ContainerBrief> = rt
        .list(&managed_by(&run))
        .await
        .unwrap()
        .into_iter()
        .map(ContainerBrief::from)
        .collect();
    assert_eq!(brief, full);
    let states: Vec<(&str, bool)> = brief.iter().map(|c| (c.name.as_str(), c.running)).collect();
    assert_eq!(
        states,
        vec![
            (running.name.as_str(), true),
            (stopped.name.as_str(), false)
        ]
    );
    assert_eq!(
        brief[0].labels.get("acevisor.p2p_port").map(String::as_str),
        Some("8621")
    );
}

#[tokio::test]
async fn start_new_answers_once_started_and_confirm_start_catches_an_exit_at_once() {
    let Some(rt) = support::require_docker().await else {
        return;
    };
    support::ensure_testbed_images();
    // A generous settle window: the behaviour is under test, not the default's length on a
    // loaded machine.
    let rt = rt.with_start_settle(Duration::from_secs(1));
    let run = RunId::new();
    let _cleanup = run.cleanup();

    let vpn_id = support::start_fake_gluetun(&run, "vpn", &GluetunOptions::default());
    let first = engine_spec(&run, "engine-1", behind(&vpn_id), ENGINE_HTTP, ENGINE_P2P);
    let first_id = rt.start_new(&first).await.unwrap();
    rt.confirm_start(&first_id)
        .await
        .expect("the first one keeps running");
    // Same P2P port in the same namespace: Docker starts it, then it exits at once.
    let second = engine_spec(
        &run,
        "engine-2",
        behind(&vpn_id),
        ENGINE_HTTP + 1,
        ENGINE_P2P,
    );
    let second_id = rt.start_new(&second).await.expect("Docker starts it");
    match rt.confirm_start(&second_id).await {
        Err(RuntimeError::Api { op, message, .. }) => {
            assert_eq!(op, "start_container");
            assert!(message.contains("exited with code 1"), "{message}");
        }
        result => panic!("expected a start failure, got {result:?}"),
    }
    assert_eq!(
        rt.inspect(&second_id).await.unwrap(),
        None,
        "the failed container is removed"
    );
}
