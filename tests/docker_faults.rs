//! Faults against the real Docker engine with the testbed fakes:
//! - the real `acevisor` binary killed with SIGKILL in the middle of creating 10 engines, then
//!   started again: it converges to exactly the desired set, with no duplicate and no orphan;
//! - the Docker socket unreachable for a while (acevisor talks to Docker through a small Unix
//!   socket proxy this test pauses): acevisor keeps serving its last known state, removes
//!   nothing, says so (`/readyz` 503, the snapshot's `docker_error`), and reconciles once
//!   Docker is back.

mod docker_world;
mod support;
mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use acevisor::actors::supervisor::Deps;
use acevisor::clients::engine::EngineClient;
use acevisor::clients::gluetun::GluetunClient;
use acevisor::core::model::EnginePhase;
use acevisor::runtime::docker::DockerRuntime;
use docker_world::World;
use tokio::net::{UnixListener, UnixStream};
use tree::{Tree, full};

const SEC: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// A managed engine as Docker lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DockerEngine {
    id: String,
    name: String,
    running: bool,
    vpn: String,
    forwarded: bool,
    p2p_port: u16,
}

/// Every container acevisor manages under this run (any state), by the labels that are its state.
fn managed(w: &World) -> Vec<DockerEngine> {
    let out = support::docker_ok(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label={}", w.run.managed_label()),
        "--format",
        "{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Label \"acevisor.vpn\"}}\t{{.Label \"acevisor.forwarded\"}}\t{{.Label \"acevisor.p2p_port\"}}",
    ]);
    let mut engines: Vec<DockerEngine> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            DockerEngine {
                id: f[0].to_string(),
                name: f[1].to_string(),
                running: f[2] == "running",
                vpn: f[3].to_string(),
                forwarded: f[4] == "true",
                p2p_port: f[5].parse().unwrap_or(0),
            }
        })
        .collect();
    engines.sort_by(|a, b| a.name.cmp(&b.name));
    engines
}

/// Exactly `prefix-1..=n`, all running, `per_vpn` on each VPN with one forwarded engine on the
/// VPN's port, and nothing else under the run's managed label (no exited leftover, no orphan).
fn exactly_desired(w: &World, engines: &[DockerEngine], n: u32, ports: &[u16]) -> bool {
    let mut names: Vec<String> = engines.iter().map(|e| e.name.clone()).collect();
    names.sort();
    let mut expected: Vec<String> = (1..=n).map(|k| w.engine(k)).collect();
    expected.sort();
    if names != expected || !engines.iter().all(|e| e.running) {
        return false;
    }
    let per_vpn = n as usize / w.vpns.len();
    w.vpns.iter().zip(ports).all(|(vpn, port)| {
        let on: Vec<&DockerEngine> = engines.iter().filter(|e| &e.vpn == vpn).collect();
        let fw: Vec<&&DockerEngine> = on.iter().filter(|e| e.forwarded).collect();
        on.len() == per_vpn && fw.len() == 1 && fw[0].p2p_port == *port
    })
}

/// Whether acevisor's `/engines` lists exactly the containers of `engines`, each ready.
async fn daemon_has_ready(api_port: u16, engines: &[DockerEngine]) -> bool {
    let Some(body) = support::http_get("127.0.0.1", api_port, "/engines").await else {
        return false;
    };
    let listed: Vec<serde_json::Value> = serde_json::from_str(&body).expect("/engines is JSON");
    let mut ready: Vec<&str> = listed
        .iter()
        .filter(|e| e["state"] == "ready")
        .filter_map(|e| e["container_id"].as_str())
        .collect();
    ready.sort_unstable();
    let mut ids: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    listed.len() == engines.len() && ready == ids
}

/// The real `acevisor run` as a child process, its log in the run's temp dir.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &Path, n: u32) -> Daemon {
        let log = dir.join(format!("acevisor-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_acevisor"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("acevisor starts");
        Daemon { child, log }
    }

    fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    fn sigterm(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Never leave acevisor creating containers behind the cleanup's back.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_creating_ten_engines_then_restart_converges_exactly() {
    let Some(w) = World::new(&[31101, 32101], None).await else {
        return;
    };
    let mut cfg = w.config("redundant", 10, "", "");
    // One creation at a time, so the kill lands in the middle of the pool's creation.
    cfg.engines.create_concurrency = 1;
    // The daemon's API on loopback (an open API beyond it is refused at start), on a port the
    // test knows, to ask the daemon whether it is done.
    let api_port = support::free_host_port();
    cfg.api.listen = format!("127.0.0.1:{api_port}");
    let dir = std::env::temp_dir().join(format!("acevisor-{}", w.run));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("acevisor.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("config serializes")).unwrap();

    let mut first = Daemon::start(&path, &dir, 1);
    let at_kill = support::poll_for(MINUTE, Duration::from_millis(20), "3 engines", || {
        let engines = managed(&w);
        async move { (engines.len() >= 3).then_some(engines) }
    })
    .await;
    first.sigkill();
    let after_kill = managed(&w);
    assert!(
        after_kill.len() < 10,
        "the kill should land while the pool is being created: {after_kill:#?}"
    );

    let mut second = Daemon::start(&path, &dir, 2);
    let ports = [31101u16, 32101];
    // Converged: Docker holds exactly the desired set and acevisor itself has every one of those
    // containers ready (Docker alone can match for a moment while acevisor is still replacing
    // one, e.g. a container left created by the kill that Docker started late).
    let converged = support::wait_for(2 * MINUTE, "exactly the desired 10 engines", || {
        let engines = managed(&w);
        let ok = exactly_desired(&w, &engines, 10, &ports);
        async move {
            let ready = ok && daemon_has_ready(api_port, &engines).await;
            ready.then_some(engines)
        }
    })
    .await;
    // Stays that way: no late duplicate, no late removal.
    let deadline = Instant::now() + 3 * SEC;
    while Instant::now() < deadline {
        let now = managed(&w);
        assert_eq!(
            now,
            converged,
            "the converged pool changed; acevisor log:\n{}",
            second.tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Engines that ran when acevisor died were adopted, not replaced.
    let kept: BTreeMap<&str, &str> = converged
        .iter()
        .map(|e| (e.name.as_str(), e.id.as_str()))
        .collect();
    for e in at_kill.iter().filter(|e| e.running) {
        if after_kill.iter().any(|a| a.id == e.id && a.running) {
            assert_eq!(
                kept.get(e.name.as_str()),
                Some(&e.id.as_str()),
                "{} was running before the kill and must be adopted; log:\n{}",
                e.name,
                second.tail()
            );
        }
    }
    second.sigterm();
    assert_eq!(managed(&w).len(), 10, "SIGTERM leaves the engines running");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The Docker socket behind a proxy the test can pause.

/// A Unix socket that forwards every connection to the Docker daemon's socket, until paused:
/// then every open connection is cut and new ones are closed at once (the daemon is unreachable).
struct SocketProxy {
    path: PathBuf,
    paused: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

fn daemon_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

impl SocketProxy {
    fn start(path: PathBuf) -> SocketProxy {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("proxy socket");
        let paused = Arc::new(AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let upstream = daemon_socket();
        let accept = {
            let paused = paused.clone();
            let cut = cut.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if paused.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let mut cut_rx = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut daemon) = UnixStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut daemon) => {}
                            _ = cut_rx.changed() => {}
                        }
                    });
                }
            })
        };
        SocketProxy {
            path,
            paused,
            cut,
            accept,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unreachable_keeps_state_removes_nothing_and_reconciles_after() {
    let Some(w) = World::new(&[31201], None).await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("acevisor-{}", w.run));
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = SocketProxy::start(dir.join("docker.sock"));
    let mut cfg = w.config("single", 3, "", "");
    cfg.docker.host = Some(proxy.host());
    cfg.docker.call_timeout = 3 * SEC;
    let deps = Deps {
        runtime: Arc::new(
            DockerRuntime::connect(cfg.docker.host.as_deref(), cfg.docker.call_timeout)
                .expect("docker client through the proxy"),
        ),
        control: Arc::new(GluetunClient::new(SEC).expect("gluetun client")),
        engine_api: Arc::new(EngineClient::new(SEC).expect("engine client")),
        name_registry: None,
    };
    cfg.api.listen = "127.0.0.1:0".into();
    let tree = Tree::start_with(deps, cfg.clone(), vec![None]).await;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = acevisor::api::launch_with_key(&cfg, tree.sup.clone(), None, async {
        let _ = api_stopped.await;
    })
    .await
    .expect("API starts");
    let readyz = format!("http://{}/readyz", api.local_addr);
    let ready = || async {
        let r = reqwest::Client::builder()
            .no_proxy()
            .timeout(5 * SEC)
            .build()
            .unwrap()
            .get(&readyz)
            .send()
            .await
            .expect("/readyz answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    let before = tree
        .wait("3 engines", MINUTE, |s| full(s, w.vpn(0), 3, 31201))
        .await;
    assert!(before.docker_error.is_none());
    support::wait_until(10 * SEC, "/readyz ready", || async {
        ready().await.0 == 200
    })
    .await;
    let ids =
        |s: &acevisor::actors::messages::SupervisorSnapshot| -> Vec<(String, Option<String>)> {
            s.engines
                .iter()
                .map(|e| (e.name.clone(), e.container_id.clone()))
                .collect()
        };
    let docker_before = managed(&w);

    // Docker goes away for acevisor (the daemon itself, and the test's CLI, are fine).
    proxy.pause();
    let s = tree
        .wait("the outage is noticed", 20 * SEC, |s| {
            s.docker_error.is_some()
        })
        .await;
    assert_eq!(ids(&s), ids(&before), "last known state kept");
    let (status, body) = ready().await;
    assert_eq!(status, 503, "/readyz during the outage: {body}");
    assert!(body.contains("Docker"), "/readyz says why: {body}");
    // An ordinary engine vanishes during the outage; acevisor cannot see it through Docker.
    let victim = before
        .engines
        .iter()
        .find(|e| !e.forwarded)
        .expect("an ordinary engine")
        .clone();
    support::docker_rm_f(victim.container_id.as_deref().unwrap());
    let s = tree
        .hold(
            8 * SEC,
            |s| s.docker_error.is_some() && s.counters.removed_total() == 0,
            "Docker unreachable and nothing removed",
        )
        .await;
    // Everything else is served as it was known.
    for e in before.engines.iter().filter(|e| e.name != victim.name) {
        let now = s.engines.iter().find(|x| x.name == e.name);
        assert_eq!(
            now.map(|x| (&x.container_id, x.phase)),
            Some((&e.container_id, EnginePhase::Ready)),
            "{} kept as it was",
            e.name
        );
    }
    let docker_during: Vec<DockerEngine> = managed(&w);
    assert_eq!(
        docker_during,
        docker_before
            .iter()
            .filter(|e| e.name != victim.name)
            .cloned()
            .collect::<Vec<_>>(),
        "acevisor removed or created nothing in Docker during the outage"
    );

    // Docker is back: the events stream is re-subscribed, everything re-listed, and the engine
    // that vanished is replaced.
    proxy.resume();
    let s = tree
        .wait("reconciled after the outage", MINUTE, |s| {
            s.docker_error.is_none()
                && full(s, w.vpn(0), 3, 31201)
                && s.engines
                    .iter()
                    .all(|e| e.container_id != victim.container_id)
        })
        .await;
    support::wait_until(10 * SEC, "/readyz ready again", || async {
        ready().await.0 == 200
    })
    .await;
    let docker_after = managed(&w);
    assert_eq!(docker_after.len(), 3, "{docker_after:#?}");
    assert!(docker_after.iter().all(|e| e.running));
    for e in docker_before.iter().filter(|e| e.name != victim.name) {
        assert!(
            docker_after.iter().any(|a| a.id == e.id),
            "{} survived the outage untouched",
            e.name
        );
    }
    // The only removal acevisor may count is the vanished engine's (it went unhealthy).
    assert!(
        s.counters.removed_total() <= 1
            && s.counters.engines_removed.keys().all(|r| *r == "unhealthy"),
        "removals: {:?}",
        s.counters.engines_removed
    );
    let _ = stop_api.send(());
    tree.stop().await;
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
