//! acevisor's benchmarks (issue 8): reaction times, cold start against a `docker run` loop,
//! footprint of the real daemon, the pure planner at scale, stream bookkeeping at its caps, and the
//! built-in stream proxy (`bench_parts/proxy.rs`). Run through `testbed/bench.sh`,
//! which builds the testbed images, the release `acevisor` binary and this program first.
//!
//! ```text
//! bench [--quick] [--acevisor PATH] [--only FIGURE[,FIGURE...]]
//! ```
//!
//! Prints one Markdown table: `figure | median | min | max | baseline | ratio | target | unit`.
//! Everything this program starts on Docker carries `acevisor-test.run=<run id>` (or is managed
//! by acevisor under the run id as its instance) and is removed when it ends, also on a panic.
//! Nothing here asserts on time: the numbers are reported, never judged by a test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acevisor::actors::messages::{NameMsg, SupervisorMsg, SupervisorSnapshot};
use acevisor::actors::name_registry::NameRegistry;
use acevisor::actors::supervisor::Deps;
use acevisor::api::types::StreamState;
use acevisor::clients::engine::EngineClient;
use acevisor::clients::gluetun::GluetunClient;
use acevisor::config::{Config, EmergencyCapacity, PortRange};
use acevisor::core::emergency::EmergencyState;
use acevisor::core::model::{EngineFact, EnginePhase, Readiness, VpnView};
use acevisor::core::naming::Ordinals;
use acevisor::core::plan::{self, PlanInput};
use acevisor::core::streams::{
    ENDED_HISTORY_LEN, EngineRef, HISTORY_LEN, StatSample, StreamBook, StreamLimits,
    StreamStartedReq,
};
use acevisor::runtime::docker::DockerRuntime;
use ractor::{Actor, ActorRef};

#[path = "bench_parts/proxy.rs"]
mod proxy;

// ---------------------------------------------------------------------------------------------
// Allocation accounting for the pure planner figures

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Clone, Debug)]
struct Row {
    figure: String,
    samples: Vec<f64>,
    baseline: Option<f64>,
    /// What the baseline is (printed in the notes).
    target: String,
    unit: &'static str,
}

/// The median of `samples`, if any.
fn median(samples: &[f64]) -> Option<f64> {
    min_median_max(samples).map(|(m, _, _)| m)
}

/// `(median, min, max)` of `samples`, if any.
fn min_median_max(samples: &[f64]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((median, s[0], s[n - 1]))
}

impl Row {
    fn stats(&self) -> Option<(f64, f64, f64)> {
        min_median_max(&self.samples)
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn print_table(rows: &[Row]) {
    println!("| figure | median | min | max | baseline | ratio | target | unit |");
    println!("|---|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let (med, min, max) = match r.stats() {
            Some((a, b, c)) => (fmt_num(a), fmt_num(b), fmt_num(c)),
            None => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        let baseline = r.baseline.map(fmt_num).unwrap_or_else(|| "-".into());
        let ratio = match (r.stats(), r.baseline) {
            (Some((m, _, _)), Some(b)) if b > 0.0 => format!("{:.3}", m / b),
            _ => "-".into(),
        };
        println!(
            "| {} | {med} | {min} | {max} | {baseline} | {ratio} | {} | {} |",
            r.figure, r.target, r.unit
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Docker scaffolding (CLI, as an operator would type it; timing-critical calls use bollard)

/// The testbed images, tagged `TESTBED_TAG` (default `dev`) as `testbed/build-images.sh` builds
/// them.
fn image(kind: &str) -> String {
    let tag = std::env::var("TESTBED_TAG")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "dev".into());
    format!("acevisor-testbed/{kind}:{tag}")
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The run: its id labels everything; dropping it removes everything of the run.
struct Run {
    id: String,
}

impl Run {
    fn new() -> Run {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Run {
            id: format!("b{:x}-{:x}", std::process::id(), millis & 0xff_ffff),
        }
    }
    fn name(&self, suffix: &str) -> String {
        format!("avt-{}-{suffix}", self.id)
    }
    fn label(&self) -> String {
        format!("acevisor-test.run={}", self.id)
    }
    fn managed(&self) -> String {
        format!("acevisor.managed={}", self.id)
    }
    fn ids(&self, filter: &str, all: bool) -> Vec<String> {
        let f = format!("label={filter}");
        let args: Vec<&str> = if all {
            vec!["ps", "-aq", "--filter", &f]
        } else {
            vec!["ps", "-q", "--filter", &f]
        };
        docker(&args)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
    /// Removes every engine acevisor created under this run and waits until Docker has none.
    fn remove_engines(&self) {
        for _ in 0..50 {
            let ids = self.ids(&self.managed(), true);
            if ids.is_empty() {
                return;
            }
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
    fn sweep(&self) {
        for _ in 0..2 {
            let mut ids = self.ids(&self.label(), true);
            ids.extend(self.ids(&self.managed(), true));
            ids.sort();
            ids.dedup();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
    }
    fn start_gluetun(&self, suffix: &str, port: u16) -> String {
        let name = self.name(suffix);
        docker_ok(&[
            "run",
            "-d",
            "--label",
            &self.label(),
            "--name",
            &name,
            "-e",
            &format!("FAKE_FORWARDED_PORT={port}"),
            "--health-interval=500ms",
            &image("gluetun"),
        ]);
        name
    }
    /// The TOML of a config over `vpns` (name, engine port range start), its API on loopback.
    fn config_text(&self, mode: &str, min: u32, vpns: &[(String, u16)], extra: &str) -> String {
        let id = &self.id;
        pool_config(&PoolConfig {
            instance: id,
            prefix: &format!("avt-{id}-ace"),
            image: &image("engine"),
            mode,
            n: min as usize,
            vpns,
            engines_extra: extra,
            vpn_extra: "",
            tail: "[api]\nlisten = \"127.0.0.1:0\"\n",
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.sweep();
    }
}

fn config(text: &str) -> Config {
    let cfg = Config::parse(text).expect("bench config parses");
    cfg.validate().expect("bench config is valid");
    cfg
}

fn ip_of(name: &str) -> String {
    docker_ok(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])
}

async fn set_port(vpn: &str, port: u16) {
    let url = format!("http://{}:8000/testbed/port", ip_of(vpn));
    reqwest::Client::new()
        .put(&url)
        .body(format!(r#"{{"port":{port}}}"#))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// The in-process tree over the real Docker runtime

/// The Docker runtime acevisor uses; `BENCH_START_SETTLE_MS` overrides its start settle window
/// (an experiment knob: what-if figures, never the reported defaults).
fn docker_runtime() -> DockerRuntime {
    let rt = DockerRuntime::connect(None, Duration::from_secs(20)).expect("docker client");
    match std::env::var("BENCH_START_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(ms) => rt.with_start_settle(Duration::from_millis(ms)),
        None => rt,
    }
}

struct Tree {
    sup: ActorRef<SupervisorMsg>,
    handle: tokio::task::JoinHandle<()>,
}

impl Tree {
    async fn start(cfg: Config) -> Tree {
        let deps = Deps {
            runtime: Arc::new(docker_runtime()),
            control: Arc::new(GluetunClient::new(cfg.vpn.control_timeout).expect("gluetun client")),
            engine_api: Arc::new(
                EngineClient::new(cfg.engines.health.timeout).expect("engine client"),
            ),
            name_registry: None,
        };
        Tree::start_with(cfg, deps).await
    }
    async fn start_with(cfg: Config, deps: Deps) -> Tree {
        let keys = vec![None; cfg.vpn.gluetun.len()];
        let (sup, handle) = acevisor::daemon::start(cfg, deps, keys)
            .await
            .expect("tree starts");
        Tree { sup, handle }
    }
    async fn snap(&self) -> SupervisorSnapshot {
        ractor::call_t!(self.sup, SupervisorMsg::Snapshot, 10_000).expect("supervisor answers")
    }
    /// Polls the snapshot every `every` until `pred`; the elapsed time since `from`.
    async fn until(
        &self,
        what: &str,
        from: Instant,
        within: Duration,
        every: Duration,
        pred: impl Fn(&SupervisorSnapshot) -> bool,
    ) -> Duration {
        loop {
            let s = self.snap().await;
            if pred(&s) {
                return from.elapsed();
            }
            assert!(
                from.elapsed() < within,
                "timed out after {within:?} waiting for {what}"
            );
            tokio::time::sleep(every).await;
        }
    }
    async fn stop(self) {
        self.sup.stop(None);
        let _ = self.handle.await;
    }
}

fn full(s: &SupervisorSnapshot, vpn: &str, n: usize, port: u16) -> bool {
    let on = s.engines_on(vpn);
    let fw = s.forwarded_on(vpn);
    on.len() == n
        && on.iter().all(|e| e.phase == EnginePhase::Ready)
        && fw.len() == 1
        && fw[0].p2p_port == port
}

// ---------------------------------------------------------------------------------------------
// Figures 1 and 2: failure detection and recovery to full capacity

const POLL_MS: u64 = 1000;

async fn failure_and_recovery(reps: usize) -> Vec<Row> {
    let run = Run::new();
    let v1 = run.start_gluetun("vpn1", 31001);
    let v2 = run.start_gluetun("vpn2", 32001);
    let text = run.config_text(
        "redundant",
        6,
        &[(v1.clone(), 21000), (v2.clone(), 22000)],
        "",
    );
    let text = text.replace(
        "mode = \"redundant\"\n",
        &format!("mode = \"redundant\"\npoll_interval = \"{POLL_MS}ms\"\n"),
    );
    let tree = Tree::start(config(&text)).await;
    let mut detection = Vec::new();
    let mut kill_calls = Vec::new();
    let mut after_die = Vec::new();
    let mut delivery = Vec::new();
    let mut inspects = Vec::new();
    let mut inspects_later = Vec::new();
    let mut recovery = Vec::new();
    let mut port = 31001u16;
    tree.until(
        "6 engines 3/3",
        Instant::now(),
        Duration::from_secs(120),
        Duration::from_millis(50),
        |s| full(s, &v1, 3, port) && full(s, &v2, 3, 32001),
    )
    .await;
    let bollard = DockerRuntime::connect(None, Duration::from_secs(20)).expect("docker");
    for rep in 0..reps {
        // docker kill of VPN 1 -> Emergency in the Supervisor's snapshot. The kill runs in its
        // own task while the snapshot is polled, and the die event is timestamped by Docker, so
        // the figure splits into Docker's part and acevisor's.
        let die = die_event_time(&bollard, &v1).await;
        tracing::info!("bench: killing {v1}");
        let t0 = Instant::now();
        let kill = {
            let client = bollard.client().clone();
            let v1 = v1.clone();
            tokio::spawn(async move {
                client.kill_container(&v1, None).await.expect("kill VPN 1");
                Instant::now()
            })
        };
        let d = tree
            .until(
                "emergency",
                t0,
                Duration::from_secs(30),
                Duration::from_millis(1),
                |s| matches!(s.emergency, EmergencyState::Emergency { .. }),
            )
            .await;
        let seen_wall = SystemTime::now();
        tracing::info!("bench: emergency seen");
        let kill_done = kill.await.expect("kill task");
        let (die_wall, die_received, inspect_on_die) =
            tokio::time::timeout(Duration::from_secs(10), die)
                .await
                .expect("die event")
                .expect("die task");
        detection.push(d.as_secs_f64() * 1000.0);
        kill_calls.push(kill_done.duration_since(t0).as_secs_f64() * 1000.0);
        let from_die = seen_wall
            .duration_since(die_wall)
            .map(|x| x.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        after_die.push(from_die);
        let ms = |a: SystemTime, b: SystemTime| {
            a.duration_since(b)
                .map(|x| x.as_secs_f64() * 1000.0)
                .unwrap_or(0.0)
        };
        delivery.push(ms(die_received, die_wall));
        inspects.push(inspect_on_die.as_secs_f64() * 1000.0);
        let ti = Instant::now();
        let _ = acevisor::runtime::ContainerRuntime::inspect(&bollard, &v1).await;
        inspects_later.push(ti.elapsed().as_secs_f64() * 1000.0);

        // VPN 1 comes back (recreated) with no forwarded port yet; once acevisor sees it Up,
        // the provider forwards a new port: time until its engines are all ready with the
        // forwarded one on that port.
        docker_ok(&["rm", "-f", &v1]);
        run.start_gluetun("vpn1", 0);
        tree.until(
            "VPN 1 up without a port",
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(20),
            |s| {
                s.vpns
                    .iter()
                    .any(|v| v.name() == v1 && v.connected && !v.lane.failed)
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        port = 31002 + rep as u16;
        let t1 = Instant::now();
        set_port(&v1, port).await;
        let r = tree
            .until(
                "VPN 1 full again",
                t1,
                Duration::from_secs(120),
                Duration::from_millis(10),
                |s| full(s, &v1, 3, port),
            )
            .await;
        recovery.push(r.as_secs_f64() * 1000.0);
        eprintln!(
            "  rep {}: detection {:.1} ms (kill call {:.1} ms, die event -> emergency {:.1} ms), recovery {:.0} ms",
            rep + 1,
            detection[rep],
            kill_calls[rep],
            after_die[rep],
            recovery[rep]
        );
    }
    tree.stop().await;
    vec![
        Row {
            figure: "failure-detection".into(),
            samples: detection,
            baseline: Some(POLL_MS as f64),
            target: "median < 100 ms (baseline: vpn.poll_interval)".into(),
            unit: "ms",
        },
        Row {
            figure: "failure-detection-from-die".into(),
            samples: after_die,
            baseline: Some(POLL_MS as f64),
            target: "- (acevisor's part: Docker's die event time -> Emergency)".into(),
            unit: "ms",
        },
        Row {
            figure: "docker-event-delivery".into(),
            samples: delivery,
            baseline: None,
            target: "- (die event time -> received by a second subscriber)".into(),
            unit: "ms",
        },
        Row {
            figure: "docker-inspect-call".into(),
            samples: inspects,
            baseline: None,
            target: "- (inspect of the VPN issued on its die event, as the monitor does)".into(),
            unit: "ms",
        },
        Row {
            figure: "docker-inspect-call-later".into(),
            samples: inspects_later,
            baseline: None,
            target: "- (the same inspect once the kill call has returned)".into(),
            unit: "ms",
        },
        Row {
            figure: "docker-kill-call".into(),
            samples: kill_calls,
            baseline: None,
            target: "- (how long Docker's kill call itself takes)".into(),
            unit: "ms",
        },
        Row {
            figure: "recovery-to-full".into(),
            samples: recovery,
            baseline: Some(125_000.0),
            target: "< 3000 ms (baseline: the earlier orchestrator, 125 s in incident A)".into(),
            unit: "ms",
        },
    ]
}

/// Subscribes to Docker's `die` events of `container` and resolves with the first one's time
/// (Docker's own timestamp) and the moment this process received it.
async fn die_event_time(
    docker: &DockerRuntime,
    container: &str,
) -> tokio::task::JoinHandle<(SystemTime, SystemTime, Duration)> {
    use bollard::query_parameters::EventsOptionsBuilder;
    use futures_util::StreamExt;
    let filters: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::from([
            ("container".to_string(), vec![container.to_string()]),
            ("event".to_string(), vec!["die".to_string()]),
        ]);
    let inspector = docker.client().clone();
    let name = container.to_string();
    let mut events = Box::pin(
        docker
            .client()
            .events(Some(EventsOptionsBuilder::new().filters(&filters).build())),
    );
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        // The request goes out on the first poll; say so once it is under way.
        let first = futures_util::future::poll_fn(|cx| {
            let p = events.poll_next_unpin(cx);
            std::task::Poll::Ready(p)
        })
        .await;
        let _ = ready_tx.send(());
        let item = match first {
            std::task::Poll::Ready(item) => item,
            std::task::Poll::Pending => events.next().await,
        };
        let msg = item.expect("events stream").expect("die event");
        let received = SystemTime::now();
        // Inspect at once, as acevisor's monitor does on the event: how long does Docker take
        // to answer about a container it is still tearing down?
        let t = Instant::now();
        let _ = inspector
            .inspect_container(
                &name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        let inspect = t.elapsed();
        let nanos = msg.time_nano.unwrap_or_default();
        (
            UNIX_EPOCH + Duration::from_nanos(nanos as u64),
            received,
            inspect,
        )
    });
    let _ = ready_rx.await;
    // Let the daemon register the subscription before anything is killed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    task
}

// ---------------------------------------------------------------------------------------------
// Figure 3: cold start against a `docker run -d` loop

async fn cold_start(n: u32, reps: usize) -> Row {
    let run = Run::new();
    let vpn = run.start_gluetun("vpn", 33001);
    let text = run.config_text("single", n, &[(vpn.clone(), 23000)], "");
    let mut cfg = config(&text);
    // What-if knob, like BENCH_START_SETTLE_MS.
    if let Some(c) = std::env::var("BENCH_CREATE_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.engines.create_concurrency = c;
    }
    let mut acevisor = Vec::new();
    let mut looped = Vec::new();
    let vpn_id = docker_ok(&["inspect", "--format", "{{.Id}}", &vpn]);
    // Let the VPN get healthy first: both contenders start from a ready VPN.
    for _ in 0..100 {
        if docker(&["inspect", "--format", "{{.State.Health.Status}}", &vpn]).as_deref()
            == Ok("healthy")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for rep in 0..reps {
        // acevisor: 0 -> n ready engines (includes waiting for each engine's HTTP API).
        tracing::info!("bench: cold start {n}");
        let t0 = Instant::now();
        let tree = Tree::start(cfg.clone()).await;
        let d = tree
            .until(
                "n ready engines",
                t0,
                Duration::from_secs(180),
                Duration::from_millis(10),
                |s| {
                    s.engines.len() == n as usize
                        && s.engines.iter().all(|e| e.phase == EnginePhase::Ready)
                },
            )
            .await;
        acevisor.push(d.as_secs_f64() * 1000.0);
        tree.stop().await;
        run.remove_engines();

        // Baseline: a shell loop of `docker run -d` of the same n fake engines (started only).
        looped.push(docker_run_loop(&run, std::slice::from_ref(&vpn_id), n));
        eprintln!(
            "  rep {}: acevisor {:.0} ms, docker run loop {:.0} ms",
            rep + 1,
            acevisor[rep],
            looped[rep]
        );
    }
    let mut l = looped.clone();
    l.sort_by(|a, b| a.total_cmp(b));
    Row {
        figure: format!("cold-start-{n}"),
        samples: acevisor,
        baseline: Some(l[l.len() / 2]),
        target: "ratio < 0.5 (baseline: median of a `docker run -d` loop, same run)".into(),
        unit: "ms",
    }
}

/// Baseline of the cold-start figures: a `sh` loop of `n` `docker run -d` of the fake engine,
/// spread over the namespaces of `vpn_ids` in turn, timed until the loop ends (containers
/// started, not probed); its containers are removed afterwards. Milliseconds.
fn docker_run_loop(run: &Run, vpn_ids: &[String], n: u32) -> f64 {
    let engine_image = image("engine");
    let mut script = String::from("set -e\n");
    for i in 0..n {
        let vpn_id = &vpn_ids[i as usize % vpn_ids.len()];
        let http = 24000 + 4 * i;
        script.push_str(&format!(
            "docker run -d --label {} --name {} --network container:{vpn_id} {engine_image} \
             --http-port {http} --https-port {} --api-port {} --port {} --bind-all >/dev/null\n",
            run.label(),
            run.name(&format!("loop-{i}")),
            http + 1,
            http + 2,
            http + 3
        ));
    }
    let t1 = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::null())
        .status()
        .expect("sh");
    assert!(status.success(), "the docker run loop failed");
    let ms = t1.elapsed().as_secs_f64() * 1000.0;
    let ids: Vec<String> = run
        .ids(&run.label(), true)
        .into_iter()
        .filter(|id| !vpn_ids.iter().any(|v| v.starts_with(id.as_str())))
        .collect();
    let mut args = vec!["rm", "-f", "-v"];
    args.extend(ids.iter().map(String::as_str));
    docker_ok(&args);
    ms
}

// ---------------------------------------------------------------------------------------------
// Figure: provision-answer, the time `POST /provision/acestream` takes with slow engines

/// Fake engines take this long before their API answers (a real engine takes seconds).
const SLOW_ENGINE_MS: u64 = 5000;

/// `POST /provision/acestream` against the real API over a tree on real Docker, with engines that
/// take `SLOW_ENGINE_MS` to become ready: the default answer (once the container runs) against
/// `?wait=ready` (the earlier behaviour, answered once the engine is ready) as the baseline.
async fn provision_answer(reps: usize) -> Row {
    let run = Run::new();
    let vpn = run.start_gluetun("vpn", 33501);
    let most = 1 + 2 * reps as u32;
    let text = run.config_text("single", most, &[(vpn.clone(), 25000)], "");
    let mut cfg = config(&text);
    cfg.engines.min_replicas = 1;
    cfg.engines.max_replicas = most;
    cfg.engines.idle_grace = Duration::from_secs(3600);
    cfg.engines.ready_timeout = Duration::from_secs(60);
    cfg.engines
        .env
        .insert("FAKE_STARTUP_MS".into(), SLOW_ENGINE_MS.to_string());
    let tree = Tree::start(cfg.clone()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = acevisor::api::launch_with_key(&cfg, tree.sup.clone(), None, async {
        let _ = stopped.await;
    })
    .await
    .expect("API starts");
    let url = format!("http://{}/provision/acestream", api.local_addr);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    tree.until(
        "the first engine ready",
        Instant::now(),
        Duration::from_secs(120),
        Duration::from_millis(50),
        |s| s.ready_count() == 1,
    )
    .await;
    let post = |wait: &'static str| {
        let http = http.clone();
        let url = format!("{url}{wait}");
        async move {
            let t0 = Instant::now();
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(r#"{"labels":{},"env":{},"host_port":null}"#)
                .send()
                .await
                .expect("provision answers");
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert!(status.is_success(), "provision{wait}: {status} {body}");
            t0.elapsed().as_secs_f64() * 1000.0
        }
    };
    let mut answer = Vec::new();
    let mut ready = Vec::new();
    for rep in 0..reps {
        answer.push(post("").await);
        ready.push(post("?wait=ready").await);
        eprintln!(
            "  rep {}: answered in {:.0} ms; with ?wait=ready {:.0} ms",
            rep + 1,
            answer[rep],
            ready[rep]
        );
    }
    let _ = stop.send(());
    let _ = api.server.await;
    tree.stop().await;
    run.remove_engines();
    let mut r = ready.clone();
    r.sort_by(|a, b| a.total_cmp(b));
    Row {
        figure: "provision-answer".into(),
        samples: answer,
        baseline: Some(r[r.len() / 2]),
        target: format!(
            "median < 500 ms, max < 3 s (engines ready after {SLOW_ENGINE_MS} ms; baseline: \
             median with ?wait=ready, same run)"
        ),
        unit: "ms",
    }
}

// ---------------------------------------------------------------------------------------------
// Figure 4: footprint of the real daemon with 50 idle engines

fn proc_status_kib(pid: u32, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)` which may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The daemon under measurement; killed if the bench panics before its orderly SIGTERM.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `acevisor run` with config `text`, in the run's temp dir (its log there too); returns the
/// daemon and the dir.
fn start_daemon(binary: &PathBuf, run: &Run, text: &str) -> (KillOnDrop, PathBuf) {
    let dir = std::env::temp_dir().join(format!("acevisor-bench-{}", run.id));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("acevisor.toml");
    std::fs::write(&path, text).expect("config file");
    let log = std::fs::File::create(dir.join("acevisor.log")).expect("log file");
    let child = KillOnDrop(
        Command::new(binary)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("acevisor starts"),
    );
    (child, dir)
}

fn footprint(binary: &PathBuf, window: Duration) -> Vec<Row> {
    let run = Run::new();
    let v1 = run.start_gluetun("vpn1", 34001);
    let v2 = run.start_gluetun("vpn2", 35001);
    let text = run.config_text("redundant", 50, &[(v1, 25000), (v2, 26000)], "");
    let (mut child, dir) = start_daemon(binary, &run, &text);
    let pid = child.0.id();
    let t0 = Instant::now();
    while run.ids(&run.managed(), false).len() < 50 {
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "50 engines did not come up; see {}",
            dir.display()
        );
        assert!(
            child.0.try_wait().ok().flatten().is_none(),
            "acevisor exited; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("  50 engines running after {:.1?}", t0.elapsed());
    // Let every engine pass readiness and the first health probes settle.
    std::thread::sleep(Duration::from_secs(5));
    let ticks = clock_ticks();
    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    let slices = 6u32;
    let slice = window / slices;
    for _ in 0..slices {
        let c0 = proc_cpu_ticks(pid).expect("stat");
        let w0 = Instant::now();
        std::thread::sleep(slice);
        let c1 = proc_cpu_ticks(pid).expect("stat");
        cpu.push((c1 - c0) as f64 / ticks / w0.elapsed().as_secs_f64() * 100.0);
        rss.push(proc_status_kib(pid, "VmRSS:").expect("status") / 1024.0);
    }
    let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0.0) / 1024.0;
    eprintln!("  peak RSS (VmHWM) {hwm:.1} MiB");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.0.wait();
    let _ = std::fs::remove_dir_all(&dir);
    vec![
        Row {
            figure: "rss-50-engines".into(),
            samples: rss,
            baseline: None,
            target: format!("< 25 MiB (peak VmHWM {hwm:.1} MiB)"),
            unit: "MiB",
        },
        Row {
            figure: "cpu-50-engines".into(),
            samples: cpu,
            baseline: None,
            target: format!("< 0.5 % of a core ({slices} slices of {slice:?})"),
            unit: "% of a core",
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Figure 5: the pure planner and the name book-keeping at scale

const LANES: usize = 8;

/// `n` engines across 8 Up VPNs with known ports: one forwarded engine per VPN, the rest ready
/// and idle (the steady state every fact change re-plans over). `present = false`: the same
/// desired state with no engine yet (a cold plan that creates all of them).
fn facts(n: usize, present: bool) -> (Vec<VpnView>, Vec<EngineFact>) {
    let per = n.div_ceil(LANES);
    let span = (4 * (per + 2)) as u16;
    let now = tokio::time::Instant::now();
    let mut lanes = Vec::new();
    let mut engines = Vec::new();
    let mut ordinal = 0u32;
    for l in 0..LANES {
        let start = 20_000 + l as u16 * span;
        let name = format!("gluetun-{l}");
        let fwd_port = 10_000 + l as u16;
        lanes.push(VpnView {
            name: Some(name.clone()),
            container_id: Some(format!("id{l}")),
            started_at: Some("2026-01-01T00:00:00Z".into()),
            readiness: Readiness::up(Some(fwd_port)),
            failed: false,
            forwarding: true,
            port_wait_expired: false,
            engine_ports: PortRange {
                start,
                end: start + span - 1,
            },
        });
        if !present {
            continue;
        }
        for k in 0..per {
            if engines.len() >= n {
                break;
            }
            ordinal += 1;
            let http = start + 4 * k as u16;
            engines.push(EngineFact {
                name: format!("acestream-{ordinal}"),
                ordinal,
                vpn: Some(name.clone()),
                vpn_id: Some(format!("id{l}")),
                vpn_started_at: Some("2026-01-01T00:00:00Z".into()),
                forwarded: k == 0,
                p2p_port: if k == 0 { fwd_port } else { http + 3 },
                http_port: http,
                phase: EnginePhase::Ready,
                streams: 0,
                idle_since: Some(now),
                outdated: false,
            });
        }
    }
    (lanes, engines)
}

fn reconcile_rows(n: usize, reps: usize, cold: bool) -> Vec<Row> {
    let (lanes, engines) = facts(n, !cold);
    let input = PlanInput {
        now: tokio::time::Instant::now(),
        min_replicas: n as u32,
        max_replicas: n as u32,
        min_free: 0,
        idle_grace: Duration::from_secs(30),
        unhealthy_grace: Duration::from_secs(60),
        emergency_capacity: EmergencyCapacity::Reduced,
        lanes: &lanes,
        engines: &engines,
        demand_floor: 0,
    };
    let mut times = Vec::new();
    let mut peaks = Vec::new();
    let mut actions = 0;
    for _ in 0..reps {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        let plan = std::hint::black_box(plan::reconcile(&input));
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        peaks.push((PEAK.load(Ordering::Relaxed) - base) as f64 / 1024.0);
        actions = plan.len();
    }
    let k = if n >= 1000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    };
    let (name, target) = if cold {
        (
            format!("reconcile-cold-{k}"),
            format!("- ({actions} creates planned)"),
        )
    } else {
        (
            format!("reconcile-{k}"),
            format!("< 10 ms for 10k ({actions} actions)"),
        )
    };
    let facts_kib = (std::mem::size_of::<EngineFact>() * engines.len()) as f64 / 1024.0;
    vec![
        Row {
            figure: name.clone(),
            samples: times,
            baseline: None,
            target,
            unit: "ms",
        },
        Row {
            figure: format!("{name}-alloc"),
            samples: peaks,
            baseline: None,
            target: format!("peak heap during the call (facts: {facts_kib:.0} KiB)"),
            unit: "KiB",
        },
    ]
}

/// Reserve + release of the lowest free number with `held` numbers live: pairs per second.
fn ordinals_row(held: u32, reps: usize) -> Row {
    let mut o = Ordinals::new();
    for n in 1..=held {
        o.mark_live(n);
    }
    // Free a number in the middle so `reserve` has to walk to it.
    o.gone(held / 2 + 1);
    let ops = 20_000;
    let mut samples = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..ops {
            let n = std::hint::black_box(o.reserve());
            o.release(n);
        }
        samples.push(ops as f64 / t.elapsed().as_secs_f64());
    }
    let k = if held >= 1000 {
        format!("{}k", held / 1000)
    } else {
        held.to_string()
    };
    Row {
        figure: format!("ordinals-reserve-release-{k}"),
        samples,
        baseline: None,
        target: format!("- (pure core, {held} held, gap in the middle)"),
        unit: "pairs/s",
    }
}

/// The NameRegistry actor: `call` Reserve + `cast` Release round trips per second.
async fn registry_row(held: u32, reps: usize) -> Row {
    let seed: Vec<u32> = (1..=held).collect();
    let (names, handle) = Actor::spawn(None, NameRegistry, seed)
        .await
        .expect("registry");
    let ops = 5_000;
    let mut samples = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..ops {
            let n = ractor::call_t!(names, NameMsg::Reserve, 5_000).expect("reserve");
            let _ = names.cast(NameMsg::Release(n));
        }
        samples.push(ops as f64 / t.elapsed().as_secs_f64());
    }
    names.stop(None);
    let _ = handle.await;
    Row {
        figure: format!("name-registry-actor-{}k", held / 1000),
        samples,
        baseline: None,
        target: format!("- (actor round trips, {held} held)"),
        unit: "pairs/s",
    }
}

// ---------------------------------------------------------------------------------------------
// Stream bookkeeping at its caps (issue 16)

fn started_req(id: &str, port: u16, label_bytes: usize) -> StreamStartedReq {
    serde_json::from_value(serde_json::json!({
        "engine": {"host": "10.0.0.2", "port": port},
        "stream": {"key_type": "content_id", "key": "0123456789abcdef0123456789abcdef01234567"},
        "session": {"playback_session_id": format!("session-{id}"),
                    "stat_url": format!("http://10.0.0.2:{port}/ace/stat/{id}"),
                    "command_url": format!("http://10.0.0.2:{port}/ace/cmd/{id}"), "is_live": 1},
        "labels": {"stream_id": id, "note": "x".repeat(label_bytes.saturating_sub(16 + id.len()))},
    }))
    .expect("a valid stream_started")
}

fn stat_sample(secs: u64) -> StatSample {
    StatSample {
        ts: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs),
        peers: Some(12),
        speed_down: Some(900),
        speed_up: Some(40),
        downloaded: Some(secs * 1000),
        uploaded: Some(secs * 100),
        status: Some("dl".into()),
    }
}

/// `GET /streams` as its handler builds it (the page copied out of the book, turned into
/// StreamStates, serialized) with the book full: `api.max_streams` active streams and
/// `api.ended_streams_kept` ended ones, every one with labels at `api.max_label_bytes`; and the
/// bytes a stream holds while active (full stats history) and once ended.
fn streams_rows(reps: usize) -> Vec<Row> {
    let limits = StreamLimits::default();
    let engines: Vec<EngineRef> = (0..limits.max_active.div_ceil(limits.max_per_engine))
        .map(|n| EngineRef {
            name: format!("acestream-{}", n + 1),
            container_id: Some(format!("{n:0>12}abcdef0123456789")),
            host: Some("10.0.0.2".into()),
            http_port: 19000 + 4 * n as u16,
        })
        .collect();
    let now = SystemTime::now();
    let mut book = StreamBook::with(limits.clone());
    let total = limits.max_active + limits.ended_kept;
    for i in 0..total {
        let e = &engines[i % engines.len()];
        let id = format!("s{i:05}");
        book.start(
            &started_req(&id, e.http_port, limits.max_label_bytes),
            e,
            now,
        )
        .expect("within the limits");
        if i < limits.ended_kept {
            book.end_id(&id, "client", now);
        }
    }
    let list = |limit: Option<usize>| {
        let t = Instant::now();
        let (_, page) = book.page(None, None, 0, limit);
        let states: Vec<StreamState> = page.iter().map(StreamState::from).collect();
        let bytes = serde_json::to_vec(&states).expect("json");
        std::hint::black_box(bytes.len());
        t.elapsed().as_secs_f64() * 1000.0
    };
    let whole: Vec<f64> = (0..reps).map(|_| list(None)).collect();
    let paged: Vec<f64> = (0..reps).map(|_| list(Some(100))).collect();

    // Bytes per stream: a small book, one engine, full histories, then every stream ended.
    let n = 100;
    let small = StreamLimits {
        max_active: n,
        max_per_engine: n,
        ended_kept: n,
        ..limits.clone()
    };
    let base = LIVE.load(Ordering::Relaxed);
    let mut b = StreamBook::with(small);
    for i in 0..n {
        let id = format!("m{i:03}");
        b.start(&started_req(&id, 19000, 1024), &engines[0], now)
            .expect("within the limits");
        for t in 0..HISTORY_LEN as u64 {
            b.record_sample(&id, stat_sample(t));
        }
    }
    let active = (LIVE.load(Ordering::Relaxed) - base) as f64 / n as f64;
    for i in 0..n {
        b.end_id(&format!("m{i:03}"), "client", now);
    }
    let ended = (LIVE.load(Ordering::Relaxed) - base) as f64 / n as f64;
    drop(b);
    vec![
        Row {
            figure: "streams-list-at-cap".into(),
            samples: whole,
            baseline: None,
            target: format!(
                "< 50 ms (issue 16; {} active + {} ended, {} B labels each)",
                limits.max_active, limits.ended_kept, limits.max_label_bytes
            ),
            unit: "ms",
        },
        Row {
            figure: "streams-list-page-100".into(),
            samples: paged,
            baseline: None,
            target: "- (`?limit=100` at the same cap)".into(),
            unit: "ms",
        },
        Row {
            figure: "stream-bytes-active".into(),
            samples: vec![active],
            baseline: None,
            target: format!("- (1 KiB labels, {HISTORY_LEN} samples)"),
            unit: "B",
        },
        Row {
            figure: "stream-bytes-ended".into(),
            samples: vec![ended],
            baseline: None,
            target: format!("- (the same once ended: {ENDED_HISTORY_LEN} samples kept)"),
            unit: "B",
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Figure 6: scale (200 engines over 8 VPNs in memory, 60 on real Docker)

const SCALE_VPNS: usize = 8;

/// All `n` engines ready and spread over the VPNs, each VPN with one forwarded engine.
fn all_ready(s: &SupervisorSnapshot, n: usize) -> bool {
    s.engines.len() == n
        && s.engines.iter().all(|e| e.phase == EnginePhase::Ready)
        && s.lanes.iter().all(|l| {
            let key = l.key();
            s.engines_on(key).iter().filter(|e| e.forwarded).count() == 1
        })
        && matches!(s.emergency, EmergencyState::Normal)
}

/// Mean reconcile time (ms) between two snapshots' counters.
fn reconcile_mean_ms(before: &SupervisorSnapshot, after: &SupervisorSnapshot) -> f64 {
    let (a, b) = (
        &before.counters.reconcile_duration,
        &after.counters.reconcile_duration,
    );
    let count = b.count().saturating_sub(a.count()).max(1);
    (b.sum().saturating_sub(a.sum())).as_secs_f64() * 1000.0 / count as f64
}

/// RSS (MiB) and CPU (% of a core) of this process over `window` while the tree idles.
fn idle_footprint(window: Duration) -> (f64, f64) {
    let pid = std::process::id();
    let ticks = clock_ticks();
    let c0 = proc_cpu_ticks(pid).expect("stat");
    let t0 = Instant::now();
    std::thread::sleep(window);
    let c1 = proc_cpu_ticks(pid).expect("stat");
    let cpu = (c1 - c0) as f64 / ticks / t0.elapsed().as_secs_f64() * 100.0;
    let rss = proc_status_kib(pid, "VmRSS:").expect("status") / 1024.0;
    (rss, cpu)
}

/// The measured figures of one scale world, before they become rows.
#[derive(Default)]
struct ScaleFigures {
    cold: Vec<f64>,
    cold_baseline: Vec<f64>,
    reconcile_cold: Vec<f64>,
    reconcile_steady: Vec<f64>,
    rss: Vec<f64>,
    cpu: Vec<f64>,
    detection: Vec<f64>,
    recovery: Vec<f64>,
    reconcile_failure: Vec<f64>,
}

impl ScaleFigures {
    /// The pool of `tree` (started at `t0`) until all `n` are ready (cold start and its reconcile
    /// time), then `window` of idling (health probes and polls only: RSS, CPU, steady reconcile).
    /// Returns the snapshot at the end of the idle window.
    async fn start_and_idle(
        &mut self,
        tree: &Tree,
        t0: Instant,
        n: usize,
        within: Duration,
        every: Duration,
        window: Duration,
    ) -> SupervisorSnapshot {
        let first = tree.snap().await;
        let d = tree
            .until("all ready", t0, within, every, |s| all_ready(s, n))
            .await;
        self.cold.push(d.as_secs_f64() * 1000.0);
        let ready = tree.snap().await;
        self.reconcile_cold.push(reconcile_mean_ms(&first, &ready));
        let before = tree.snap().await;
        let (rss, cpu) = tokio::task::block_in_place(|| idle_footprint(window));
        let after = tree.snap().await;
        self.reconcile_steady
            .push(reconcile_mean_ms(&before, &after));
        self.rss.push(rss);
        self.cpu.push(cpu);
        after
    }

    fn rows(self, name: &str, n: usize, window: Duration, where_: &str) -> Vec<Row> {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).copied()
        };
        let ms = |figure: &str, samples: Vec<f64>, baseline: Option<f64>, target: String| Row {
            figure: format!("{name}-{figure}"),
            samples,
            baseline,
            target,
            unit: "ms",
        };
        vec![
            ms(
                "cold-start",
                self.cold,
                median(&self.cold_baseline),
                if self.cold_baseline.is_empty() {
                    format!("- (0 -> {n} ready engines, {where_})")
                } else {
                    format!("- (0 -> {n} ready; baseline: a `docker run -d` loop of {n}, same run)")
                },
            ),
            ms(
                "reconcile-cold",
                self.reconcile_cold,
                None,
                format!("- (mean reconcile while {n} engines are created)"),
            ),
            ms(
                "reconcile",
                self.reconcile_steady,
                None,
                format!("< 2 ms (mean reconcile over {window:?} at {n} engines)"),
            ),
            ms(
                "reconcile-failure",
                self.reconcile_failure,
                None,
                "- (mean reconcile from the VPN failure to full again)".into(),
            ),
            Row {
                figure: format!("{name}-rss"),
                samples: self.rss,
                baseline: None,
                target: "< 25 MiB (this bench process hosting the tree)".into(),
                unit: "MiB",
            },
            Row {
                figure: format!("{name}-cpu"),
                samples: self.cpu,
                baseline: None,
                target: format!("< 0.5 % of a core (idle, {window:?})"),
                unit: "% of a core",
            },
            ms(
                "failure-detection",
                self.detection,
                Some(POLL_MS as f64),
                "< 100 ms (kill of 1 of 8 VPNs -> Emergency; baseline: poll interval)".into(),
            ),
            ms(
                "recovery-to-full",
                self.recovery,
                Some(125_000.0),
                format!("< 3000 ms (port forwarded -> all {n} ready again)"),
            ),
        ]
    }
}

/// The config of a scale world: redundant over `vpns` (name, engine port range start).
fn scale_config(
    prefix: &str,
    instance: &str,
    n: usize,
    vpns: &[(String, u16)],
    image: &str,
) -> String {
    pool_config(&PoolConfig {
        instance,
        prefix,
        image,
        mode: "redundant",
        n,
        vpns,
        engines_extra: "",
        vpn_extra: &format!("poll_interval = \"{POLL_MS}ms\""),
        tail: "",
    })
}

/// What a bench pool's config is made of.
struct PoolConfig<'a> {
    instance: &'a str,
    prefix: &'a str,
    image: &'a str,
    mode: &'a str,
    /// min_replicas = max_replicas.
    n: usize,
    /// (VPN container, engine port range start).
    vpns: &'a [(String, u16)],
    /// TOML at the end of `[engines]`.
    engines_extra: &'a str,
    /// TOML in `[vpn]` before its Gluetun containers.
    vpn_extra: &'a str,
    /// TOML after the VPNs.
    tail: &'a str,
}

/// A pool of `n` fake engines over `vpns`, labelled for the bench's sweep.
fn pool_config(c: &PoolConfig<'_>) -> String {
    let mut gluetun = String::new();
    // Validation wants room for max_replicas on every VPN (an emergency may shift them).
    for (name, start) in c.vpns {
        gluetun.push_str(&format!(
            "[[vpn.gluetun]]\ncontainer = \"{name}\"\nengine_ports = \"{start}-{}\"\n",
            start + 4 * (c.n as u16 + 4) - 1
        ));
    }
    let PoolConfig {
        instance,
        prefix,
        image,
        mode,
        n,
        engines_extra,
        vpn_extra,
        tail,
        ..
    } = c;
    format!(
        r#"instance = "{instance}"
[docker]
call_timeout = "20s"
stop_timeout = "1s"
labels = {{ "acevisor-test.run" = "{instance}" }}
[engines]
prefix = "{prefix}"
min_replicas = {n}
max_replicas = {n}
min_free = 0
variant = "custom"
image = "{image}"
command = ["--http-port", "{{http_port}}", "--https-port", "{{https_port}}", "--api-port", "{{api_port}}", "--port", "{{p2p_port}}", "--bind-all"]
env = {{ FAKE_STARTUP_MS = "0" }}
{engines_extra}
[vpn]
mode = "{mode}"
{vpn_extra}
{gluetun}
{tail}"#
    )
}

/// 200 engines over 8 VPNs on the in-memory runtime (real clock): acevisor's own cost at a size
/// the machine could not run on Docker.
async fn scale_memory(n: usize, reps: usize, window: Duration) -> Vec<Row> {
    use acevisor::runtime::DockerHealth;
    use acevisor::runtime::memory::MemoryRuntime;
    let mut f = ScaleFigures::default();
    let vpns: Vec<(String, u16)> = (0..SCALE_VPNS)
        .map(|i| (format!("gluetun-{i}"), 20_000 + 1_000 * i as u16))
        .collect();
    let fwd = |i: usize, rep: usize| 40_000 + 100 * rep as u16 + i as u16;
    for rep in 0..reps {
        let mem = MemoryRuntime::new();
        for (i, (name, _)) in vpns.iter().enumerate() {
            mem.add_vpn(name, fwd(i, 0), Some(DockerHealth::Healthy));
        }
        let cfg = config(&scale_config("ace", "bench", n, &vpns, "engine"));
        let deps = Deps {
            runtime: Arc::new(mem.clone()),
            control: Arc::new(mem.clone()),
            engine_api: Arc::new(mem.clone()),
            name_registry: None,
        };
        let t0 = Instant::now();
        let tree = Tree::start_with(cfg, deps).await;
        let after = f
            .start_and_idle(
                &tree,
                t0,
                n,
                Duration::from_secs(120),
                Duration::from_millis(5),
                window,
            )
            .await;
        // VPN 0 dies (its engines with it), comes back without a port, then gets one.
        let (v0, _) = &vpns[0];
        let t1 = Instant::now();
        mem.kill(v0);
        let d = tree
            .until(
                "emergency",
                t1,
                Duration::from_secs(30),
                Duration::from_millis(1),
                |s| matches!(s.emergency, EmergencyState::Emergency { .. }),
            )
            .await;
        f.detection.push(d.as_secs_f64() * 1000.0);
        mem.recreate_vpn(v0, 0, Some(DockerHealth::Healthy));
        tree.until(
            "VPN 0 up",
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(5),
            |s| {
                s.vpns
                    .iter()
                    .any(|v| v.name() == v0.as_str() && v.connected && !v.lane.failed)
            },
        )
        .await;
        let port = fwd(0, rep + 1);
        let t2 = Instant::now();
        mem.set_port(v0, port);
        let d = tree
            .until(
                "full again",
                t2,
                Duration::from_secs(120),
                Duration::from_millis(5),
                |s| {
                    all_ready(s, n)
                        && s.forwarded_on(v0)
                            .first()
                            .is_some_and(|e| e.p2p_port == port)
                },
            )
            .await;
        f.recovery.push(d.as_secs_f64() * 1000.0);
        let end = tree.snap().await;
        f.reconcile_failure.push(reconcile_mean_ms(&after, &end));
        eprintln!(
            "  rep {}: cold {:.0} ms, reconcile {:.3} ms idle, RSS {:.1} MiB, CPU {:.2} %, detection {:.1} ms, recovery {:.0} ms",
            rep + 1,
            f.cold[rep],
            f.reconcile_steady[rep],
            f.rss[rep],
            f.cpu[rep],
            f.detection[rep],
            f.recovery[rep]
        );
        tree.stop().await;
    }
    f.rows(&format!("scale-{n}-memory"), n, window, "in-memory runtime")
}

/// `n` engines over 8 fake VPNs on the real Docker engine, the same figures, and the cold start
/// next to a `docker run -d` loop of as many engines.
async fn scale_docker(n: usize, reps: usize, window: Duration) -> Vec<Row> {
    let run = Run::new();
    let mut f = ScaleFigures::default();
    let fwd = |i: usize, rep: usize| 41_000 + 100 * rep as u16 + i as u16;
    let vpns: Vec<(String, u16)> = (0..SCALE_VPNS)
        .map(|i| {
            (
                run.start_gluetun(&format!("vpn{i}"), fwd(i, 0)),
                20_000 + 1_000 * i as u16,
            )
        })
        .collect();
    let text = scale_config(
        &format!("avt-{}-ace", run.id),
        &run.id,
        n,
        &vpns,
        &image("engine"),
    );
    let cfg = config(&text);
    let bollard = DockerRuntime::connect(None, Duration::from_secs(20)).expect("docker");
    for rep in 0..reps {
        let t0 = Instant::now();
        let tree = Tree::start(cfg.clone()).await;
        let after = f
            .start_and_idle(
                &tree,
                t0,
                n,
                Duration::from_secs(300),
                Duration::from_millis(10),
                window,
            )
            .await;
        let v0 = vpns[0].0.clone();
        let t1 = Instant::now();
        let kill = {
            let client = bollard.client().clone();
            let v0 = v0.clone();
            tokio::spawn(async move { client.kill_container(&v0, None).await.expect("kill VPN 0") })
        };
        let d = tree
            .until(
                "emergency",
                t1,
                Duration::from_secs(30),
                Duration::from_millis(1),
                |s| matches!(s.emergency, EmergencyState::Emergency { .. }),
            )
            .await;
        kill.await.expect("kill task");
        f.detection.push(d.as_secs_f64() * 1000.0);
        docker_ok(&["rm", "-f", &v0]);
        run.start_gluetun("vpn0", 0);
        tree.until(
            "VPN 0 up",
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(20),
            |s| {
                s.vpns
                    .iter()
                    .any(|v| v.name() == v0 && v.connected && !v.lane.failed)
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let port = fwd(0, rep + 1);
        let t2 = Instant::now();
        set_port(&v0, port).await;
        let d = tree
            .until(
                "full again",
                t2,
                Duration::from_secs(180),
                Duration::from_millis(10),
                |s| {
                    all_ready(s, n)
                        && s.forwarded_on(&v0)
                            .first()
                            .is_some_and(|e| e.p2p_port == port)
                },
            )
            .await;
        f.recovery.push(d.as_secs_f64() * 1000.0);
        let end = tree.snap().await;
        f.reconcile_failure.push(reconcile_mean_ms(&after, &end));
        tree.stop().await;
        run.remove_engines();
        // VPN 0 was recreated: the loop joins the current containers' namespaces.
        let vpn_ids: Vec<String> = vpns
            .iter()
            .map(|(v, _)| docker_ok(&["inspect", "--format", "{{.Id}}", v]))
            .collect();
        f.cold_baseline
            .push(docker_run_loop(&run, &vpn_ids, n as u32));
        eprintln!(
            "  rep {}: cold {:.0} ms (docker run loop {:.0} ms), reconcile {:.3} ms idle, RSS {:.1} MiB, CPU {:.2} %, detection {:.1} ms, recovery {:.0} ms",
            rep + 1,
            f.cold[rep],
            f.cold_baseline[rep],
            f.reconcile_steady[rep],
            f.rss[rep],
            f.cpu[rep],
            f.detection[rep],
            f.recovery[rep]
        );
    }
    f.rows(&format!("scale-{n}-docker"), n, window, "real Docker")
}

// ---------------------------------------------------------------------------------------------

struct Args {
    quick: bool,
    acevisor: PathBuf,
    only: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Forwarded-port figures at the production defaults of config/acevisor.toml (issue 13)

const HOOK_KEY: &str = "bench-hook-key";

/// The host's address on Docker's default bridge: the first address of its subnet.
fn bridge_gateway() -> String {
    let subnet = docker_ok(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{(index .IPAM.Config 0).Subnet}}",
    ]);
    let net = subnet
        .trim()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut octets: Vec<&str> = net.split('.').collect();
    octets[3] = "1";
    octets.join(".")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("0.0.0.0", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fake Gluetun with extra env.
fn start_vpn(run: &Run, suffix: &str, env: &[String]) -> String {
    let name = run.name(suffix);
    let gluetun = image("gluetun");
    let mut args = vec!["run", "-d", "--label"];
    let label = run.label();
    args.extend([label.as_str(), "--name", name.as_str()]);
    for e in env {
        args.extend(["-e", e.as_str()]);
    }
    args.extend(["--health-interval=500ms", gluetun.as_str()]);
    docker_ok(&args);
    name
}

fn forwarded_ready(s: &SupervisorSnapshot, vpn: &str, port: u16) -> bool {
    let fw = s.forwarded_on(vpn);
    fw.len() == 1 && fw[0].p2p_port == port && fw[0].phase == EnginePhase::Ready
}

/// `recovery-port-at-3s`, `port-change-in-place` (hook) and `port-change-in-place-no-hook`, with
/// the `[vpn]` timings of `Config::default()` (= config/acevisor.toml).
async fn port_rows(reps: usize) -> Vec<Row> {
    let run = Run::new();
    let defaults = acevisor::config::VpnConfig::default();
    let api_port = free_port();
    let gw = bridge_gateway();
    let a = start_vpn(
        &run,
        "pvpn1",
        &[
            "FAKE_FORWARDED_PORT=33001".into(),
            "FAKE_PORT_DELAY_MS=3000".into(),
        ],
    );
    let b_name = run.name("pvpn2");
    let b = start_vpn(
        &run,
        "pvpn2",
        &[
            "FAKE_FORWARDED_PORT=34001".into(),
            format!("FAKE_PORT_HOOK_URL=http://{gw}:{api_port}/hooks/gluetun/{b_name}/ports"),
            format!("FAKE_PORT_HOOK_KEY={HOOK_KEY}"),
        ],
    );
    let c = start_vpn(&run, "pvpn3", &["FAKE_FORWARDED_PORT=35001".into()]);
    let text = run
        .config_text(
            "redundant",
            3,
            &[(a.clone(), 21000), (b.clone(), 22000), (c.clone(), 23000)],
            "",
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"0.0.0.0:{api_port}\""),
        );
    let cfg = config(&text);
    assert_eq!(
        cfg.vpn,
        defaults_with(&cfg, &defaults),
        "production [vpn] timings"
    );
    let tree = Tree::start(cfg.clone()).await;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api =
        acevisor::api::launch_with_key(&cfg, tree.sup.clone(), Some(HOOK_KEY.into()), async {
            let _ = api_stopped.await;
        })
        .await
        .expect("API starts");
    tree.until(
        "a forwarded engine on each VPN",
        Instant::now(),
        Duration::from_secs(120),
        Duration::from_millis(50),
        |s| {
            forwarded_ready(s, &a, 33001)
                && forwarded_ready(s, &b, 34001)
                && forwarded_ready(s, &c, 35001)
        },
    )
    .await;

    let mut recovery = Vec::new();
    let mut hooked = Vec::new();
    let mut unhooked = Vec::new();
    for rep in 0..reps {
        // docker stop of VPN 1 (failed, its engines removed), then docker start: its port
        // appears 3 s after the start.
        docker_ok(&["stop", "-t", "1", &a]);
        tree.until(
            "VPN 1 failed and empty",
            Instant::now(),
            Duration::from_secs(60),
            Duration::from_millis(20),
            |s| {
                s.engines_on(&a).is_empty() && s.vpns.iter().any(|v| v.name() == a && v.lane.failed)
            },
        )
        .await;
        let t0 = Instant::now();
        docker_ok(&["start", &a]);
        let r = tree
            .until(
                "VPN 1's forwarded engine",
                t0,
                Duration::from_secs(120),
                Duration::from_millis(10),
                |s| forwarded_ready(s, &a, 33001),
            )
            .await;
        recovery.push(r.as_secs_f64() * 1000.0);

        // VPNs 2 (hook) and 3 (no hook), quiet for longer than the fast-poll window, change
        // their port at the same moment.
        tokio::time::sleep(defaults.port_settle + Duration::from_secs(11)).await;
        let (pb, pc) = (34002 + rep as u16, 35002 + rep as u16);
        let t1 = Instant::now();
        tokio::join!(set_port(&b, pb), set_port(&c, pc));
        let (mut db, mut dc) = (None, None);
        while db.is_none() || dc.is_none() {
            let s = tree.snap().await;
            if db.is_none() && forwarded_ready(&s, &b, pb) {
                db = Some(t1.elapsed());
            }
            if dc.is_none() && forwarded_ready(&s, &c, pc) {
                dc = Some(t1.elapsed());
            }
            assert!(
                t1.elapsed() < Duration::from_secs(60),
                "port change never landed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1000.0;
        hooked.push(ms(db));
        unhooked.push(ms(dc));
        eprintln!(
            "  rep {}: recovery-port-at-3s {:.0} ms, port change with hook {:.0} ms, without {:.0} ms",
            rep + 1,
            recovery[rep],
            hooked[rep],
            unhooked[rep]
        );
    }
    let _ = stop_api.send(());
    let _ = api.server.await;
    tree.stop().await;
    let settle = defaults.port_settle.as_secs_f64() * 1000.0;
    let fast = defaults.fast_poll_interval.as_secs_f64() * 1000.0;
    vec![
        Row {
            figure: "recovery-port-at-3s".into(),
            samples: recovery,
            baseline: Some(7_500.0),
            target: "median < 4500 ms (baseline: the Python orchestrator, 7.5 s)".into(),
            unit: "ms",
        },
        Row {
            figure: "port-change-in-place".into(),
            samples: hooked,
            baseline: Some(10_800.0),
            target: format!(
                "< {} ms = port_settle + 1 s, with the hook (baseline: acevisor before, 10.8 s)",
                settle + 1000.0
            ),
            unit: "ms",
        },
        Row {
            figure: "port-change-in-place-no-hook".into(),
            samples: unhooked,
            baseline: Some(10_800.0),
            target: format!(
                "< {} ms = port_settle + fast_poll_interval + 1 s (polls only)",
                settle + fast + 1000.0
            ),
            unit: "ms",
        },
    ]
}

/// `defaults` with the VPN list and mode of `cfg` (only the timings are compared).
fn defaults_with(
    cfg: &Config,
    defaults: &acevisor::config::VpnConfig,
) -> acevisor::config::VpnConfig {
    acevisor::config::VpnConfig {
        mode: cfg.vpn.mode,
        gluetun: cfg.vpn.gluetun.clone(),
        ..defaults.clone()
    }
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        acevisor: PathBuf::from("target/release/acevisor"),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--acevisor" => a.acevisor = it.next().expect("--acevisor PATH").into(),
            "--only" => {
                a.only = Some(
                    it.next()
                        .expect("--only FIGURES")
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            other => panic!(
                "unknown argument {other}; usage: bench [--quick] [--acevisor PATH] [--only a,b]"
            ),
        }
    }
    a
}

fn main() {
    // The plain relay `fanout-200` compares the stream proxy with (a child process of this one).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--relay") {
        proxy::relay(&argv[2], argv[3].parse().expect("relay port"));
        return;
    }
    let a = args();
    // BENCH_LOG=acevisor=debug shows acevisor's own log lines with timestamps (for profiling).
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let wanted = |f: &str| a.only.as_ref().is_none_or(|o| o.iter().any(|x| x == f));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let reps = if a.quick { 3 } else { 7 };
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: BTreeMap<&str, String> = BTreeMap::new();

    if wanted("reconcile") {
        eprintln!("== reconcile (pure planner, 8 VPNs)");
        let r = if a.quick { 20 } else { 100 };
        rows.extend(reconcile_rows(1_000, r, false));
        rows.extend(reconcile_rows(10_000, r, false));
        rows.extend(reconcile_rows(1_000, if a.quick { 3 } else { 10 }, true));
        rows.extend(reconcile_rows(10_000, 1, true));
        rows.push(ordinals_row(1_000, r / 4));
        rows.push(ordinals_row(10_000, r / 4));
        rows.push(rt.block_on(registry_row(1_000, reps)));
    }
    if wanted("streams") {
        eprintln!("== streams (stream bookkeeping at its caps)");
        rows.extend(streams_rows(if a.quick { 5 } else { 20 }));
    }
    if a.only
        .as_ref()
        .is_some_and(|o| o.iter().any(|x| x == "plan"))
    {
        // For profiling the planner alone (perf record ... --only plan).
        eprintln!("== plan only: steady 10k x 200, cold 10k x 3");
        rows.extend(reconcile_rows(10_000, 200, false));
        rows.extend(reconcile_rows(10_000, 3, true));
    }
    if wanted("failure") {
        eprintln!("== failure-detection and recovery-to-full ({reps} reps)");
        rows.extend(rt.block_on(failure_and_recovery(reps)));
    }
    if wanted("ports") {
        eprintln!("== forwarded-port figures at production defaults ({reps} reps)");
        rows.extend(rt.block_on(port_rows(reps)));
    }
    if wanted("cold") {
        for n in [10, 30] {
            eprintln!("== cold-start-{n} ({reps} reps)");
            rows.push(rt.block_on(cold_start(n, reps)));
        }
    }
    if wanted("provision") {
        eprintln!("== provision-answer ({reps} reps, engines ready after {SLOW_ENGINE_MS} ms)");
        rows.push(rt.block_on(provision_answer(reps)));
    }
    if wanted("scale") {
        let window = Duration::from_secs(if a.quick { 10 } else { 30 });
        eprintln!("== scale-200-memory ({reps} reps)");
        rows.extend(rt.block_on(scale_memory(200, reps, window)));
        let docker_reps = if a.quick { 1 } else { 3 };
        eprintln!("== scale-60-docker ({docker_reps} reps)");
        rows.extend(rt.block_on(scale_docker(60, docker_reps, window)));
    }
    if wanted("rss") {
        let window = if a.quick {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(60)
        };
        eprintln!(
            "== rss-50-engines ({} for {window:?})",
            a.acevisor.display()
        );
        if a.acevisor.exists() {
            rows.extend(footprint(&a.acevisor, window));
        } else {
            notes.insert("rss", format!("{} not built", a.acevisor.display()));
        }
    }
    if wanted("failover-gap") {
        eprintln!("== failover-gap ({reps} reps)");
        rows.push(rt.block_on(proxy::failover_gap(reps)));
    }
    if wanted("fanout-200") {
        let window = Duration::from_secs(if a.quick { 10 } else { 30 });
        eprintln!("== fanout-200 ({} for {window:?})", a.acevisor.display());
        if a.acevisor.exists() {
            rows.extend(rt.block_on(proxy::fanout(&a.acevisor, 200, window)));
        } else {
            notes.insert("fanout-200", format!("{} not built", a.acevisor.display()));
        }
    }
    if wanted("time-to-first-byte") {
        let n = if a.quick { 5 } else { 15 };
        eprintln!("== time-to-first-byte ({n} reps)");
        rows.push(rt.block_on(proxy::time_to_first_byte(n)));
    }
    print_table(&rows);
    for (k, v) in notes {
        println!("\n{k}: {v}");
    }
}
