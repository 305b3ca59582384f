//! Shared helpers for integration tests against the real Docker engine.
//!
//! Use from a test binary with `mod support;`. The pattern:
//!
//! ```ignore
//! let Some(rt) = support::require_docker().await else { return };   // skip or fail, see below
//! support::ensure_testbed_images();
//! let run = support::RunId::new();
//! let _cleanup = run.cleanup();          // removes everything of this run on drop, even on panic
//! let vpn = support::start_fake_gluetun(&run, "vpn", &support::GluetunOptions::default());
//! ```
//!
//! - **Skipping is explicit.** Without Docker a test prints a `SKIPPED` notice and returns; with
//!   `ACEVISOR_REQUIRE_DOCKER=1` (CI) it fails instead, so Docker tests never vanish silently.
//! - **Everything is labelled.** Every container and network a test creates carries
//!   `acevisor-test.run=<run id>`; containers acevisor creates under test use the run id as their
//!   `acevisor.managed` instance. `Cleanup` removes both kinds, so tests can run in parallel and
//!   never touch anything else on the host.
//! - **No bare sleeps.** Wait for conditions with `wait_until` / `wait_for` and a deadline.
//!
//! The Docker CLI is used for test scaffolding (it is what an operator would type, and it works in
//! `Drop` without an async runtime); the code under test talks to Docker through bollard.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acevisor::runtime::ContainerRuntime;
use acevisor::runtime::docker::DockerRuntime;

/// The fake Gluetun image built by `testbed/build-images.sh` (tag `TESTBED_TAG`, default `dev`).
pub fn gluetun_image() -> String {
    image_name("GLUETUN_IMAGE", "acevisor-testbed/gluetun")
}
/// The fake AceStream engine image built by `testbed/build-images.sh`.
pub fn engine_image() -> String {
    image_name("ENGINE_IMAGE", "acevisor-testbed/engine")
}
/// The daemon's own image built by `testbed/build-images.sh acevisor`.
pub fn acevisor_image() -> String {
    image_name("ACEVISOR_IMAGE", "acevisor")
}

/// The same names `testbed/build-images.sh` gives: `$<var>` when set, else
/// `<repository>:$TESTBED_TAG` (default tag `dev`). A tag per checkout keeps checkouts that test
/// side by side on one Docker engine from overwriting each other's images.
fn image_name(var: &str, repository: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        let tag = std::env::var("TESTBED_TAG").unwrap_or_else(|_| "dev".into());
        format!("{repository}:{tag}")
    })
}
/// Label carried by everything a test creates directly.
pub const RUN_LABEL: &str = "acevisor-test.run";
/// The label acevisor puts on the containers it manages (value: its instance id).
pub const MANAGED_LABEL: &str = "acevisor.managed";
/// Set to `1` to turn "Docker is not reachable" from a skip into a failure.
pub const REQUIRE_DOCKER_ENV: &str = "ACEVISOR_REQUIRE_DOCKER";
/// Call timeout of the runtime `require_docker` returns.
pub const TEST_CALL_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Docker availability

/// A connected runtime when Docker answers. When it does not: panics if
/// `ACEVISOR_REQUIRE_DOCKER=1`, else prints a `SKIPPED` notice and returns `None` (the test should
/// `return`). Honours `DOCKER_HOST` like acevisor does.
pub async fn require_docker() -> Option<DockerRuntime> {
    let problem = match DockerRuntime::connect(None, TEST_CALL_TIMEOUT) {
        Err(e) => e.to_string(),
        Ok(rt) => match rt.ping().await {
            Ok(()) if docker_cli_works() => return Some(rt),
            Ok(()) => "the `docker` CLI is not usable (test scaffolding needs it)".to_string(),
            Err(e) => e.to_string(),
        },
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    if docker_required() {
        panic!(
            "Docker is not reachable and {REQUIRE_DOCKER_ENV}=1 forbids skipping {test}: {problem}\n\
             (start the Docker daemon or point DOCKER_HOST at one)"
        );
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests, and a
    // skip must be visible in a plain `cargo test` run.
    let notice = format!(
        "SKIPPED {test}: Docker is not reachable ({problem}); set {REQUIRE_DOCKER_ENV}=1 to make \
         this a failure\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
    None
}

/// True when `ACEVISOR_REQUIRE_DOCKER` is set to something truthy.
pub fn docker_required() -> bool {
    std::env::var(REQUIRE_DOCKER_ENV)
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
        .unwrap_or(false)
}

fn docker_cli_works() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Run ids and cleanup

/// A unique id per test (pid + counter + time), safe in container names and label values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId(String);

impl RunId {
    pub fn new() -> RunId {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        // The low bits of the clock tell apart two runs whose pids were recycled.
        RunId(format!(
            "t{:x}-{n}-{:x}",
            std::process::id(),
            millis & 0xff_ffff
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A container or network name unique to this run: `avt-<run>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("avt-{}-{suffix}", self.0)
    }

    /// `acevisor-test.run=<id>`, for `--label` and `--filter label=`.
    pub fn label(&self) -> String {
        format!("{RUN_LABEL}={}", self.0)
    }

    /// `acevisor.managed=<id>`: the label acevisor under test puts on its containers when it runs
    /// with this run id as its instance id.
    pub fn managed_label(&self) -> String {
        format!("{MANAGED_LABEL}={}", self.0)
    }

    /// The run label as a map, to merge into a `ContainerSpec`'s labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(RUN_LABEL.to_string(), self.0.clone())])
    }

    /// A guard removing everything of this run when dropped.
    pub fn cleanup(&self) -> Cleanup {
        Cleanup { run: self.clone() }
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Removes (`docker rm -f -v`) every container labelled with the run id or managed under it,
/// then the run's networks. Runs on drop, so also when the test panics.
pub struct Cleanup {
    run: RunId,
}

impl Cleanup {
    /// Removes everything now (also done on drop). Returns what could not be removed.
    pub fn sweep(&self) -> Vec<String> {
        let mut leftovers = Vec::new();
        let mut ids = Vec::new();
        for filter in [self.run.label(), self.run.managed_label()] {
            if let Ok(out) = docker(&[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label={filter}"),
            ]) {
                ids.extend(out.lines().map(str::to_string));
            }
        }
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            if let Err(e) = docker(&args) {
                // "removal already in progress" and "No such container" are fine: check again.
                let _ = e;
                for id in &ids {
                    if docker(&["inspect", "--format", "{{.Id}}", id]).is_ok() {
                        leftovers.push(format!("container {id}"));
                    }
                }
            }
        }
        if let Ok(out) = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label={}", self.run.label()),
        ]) {
            for net in out.lines() {
                if let Err(e) = docker(&["network", "rm", net]) {
                    leftovers.push(format!("network {net}: {e}"));
                }
            }
        }
        leftovers
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // A test that failed may still have acevisor running on other runtime threads, with a
        // create in flight: sweep, give in-flight Docker calls a moment, sweep again.
        let first = self.sweep();
        std::thread::sleep(Duration::from_millis(if std::thread::panicking() {
            1500
        } else {
            0
        }));
        let mut leftovers = self.sweep();
        leftovers.retain(|c| first.contains(c));
        if !leftovers.is_empty() {
            eprintln!(
                "cleanup of run {}: could not remove {leftovers:?}",
                self.run
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Testbed images

/// The repository root (where `Cargo.toml` of acevisor lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the testbed images once per test binary with `testbed/build-images.sh` (idempotent;
/// `TESTBED_SKIP_BUILD=1` skips it when the images exist). Panics with the script's output when
/// the build fails, so a broken testbed is not mistaken for a broken acevisor.
pub fn ensure_testbed_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| build_testbed_images(&repo_root()));
    if let Err(e) = result {
        panic!("testbed images are not available: {e}");
    }
}

fn build_testbed_images(root: &Path) -> Result<(), String> {
    let script = root.join("testbed/build-images.sh");
    if !script.exists() {
        if image_exists(&gluetun_image()) && image_exists(&engine_image()) {
            eprintln!(
                "note: {} is missing; using the existing testbed images",
                script.display()
            );
            return Ok(());
        }
        return Err(format!(
            "{} does not exist and the images {}, {} are not built",
            script.display(),
            gluetun_image(),
            engine_image()
        ));
    }
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        let tail = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        return Err(format!(
            "{} failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{}",
            script.display(),
            output.status,
            tail(&output.stderr),
            tail(&output.stdout)
        ));
    }
    for image in [gluetun_image(), engine_image()] {
        if !image_exists(&image) {
            return Err(format!(
                "{} succeeded but {image} does not exist",
                script.display()
            ));
        }
    }
    eprintln!("testbed images ready in {:.1?}", started.elapsed());
    Ok(())
}

pub fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Docker CLI scaffolding

/// Runs the docker CLI; `Ok(stdout)` trimmed, or `Err` with the exit status and stderr.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Like `docker`, panicking with the CLI's message on failure.
pub fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// How to start a fake Gluetun.
#[derive(Clone, Debug, Default)]
pub struct GluetunOptions {
    /// `FAKE_FORWARDED_PORT` (0 or `None`: no port yet).
    pub forwarded_port: Option<u16>,
    /// More ports forwarded with it from the start (appended to `FAKE_FORWARDED_PORT`).
    pub more_ports: Vec<u16>,
    /// `FAKE_API_KEY`: when set, the control routes need `X-API-Key` (a role per version, see
    /// testbed/README.md).
    pub api_key: Option<String>,
    /// `FAKE_GLUETUN_VERSION` (`3.38` .. `head`; the fake's default is 3.41).
    pub version: Option<String>,
    /// A role file (TOML text) mounted read-only at `/gluetun/auth/config.toml`.
    pub role_file: Option<String>,
    /// Overrides the image's healthcheck interval (`--health-interval`).
    pub health_interval: Option<Duration>,
    /// Overrides the healthcheck start period (`--health-start-period`).
    pub health_start_period: Option<Duration>,
    /// A Docker network to join instead of the default bridge.
    pub network: Option<String>,
    /// More `-e K=V`.
    pub env: Vec<(String, String)>,
    /// More labels besides the run label.
    pub labels: Vec<(String, String)>,
}

/// Starts the fake Gluetun image as `avt-<run>-<suffix>`, labelled with the run.
/// Returns the container ID.
pub fn start_fake_gluetun(run: &RunId, suffix: &str, options: &GluetunOptions) -> String {
    let name = run.name(suffix);
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--label".into(),
        run.label(),
        "--name".into(),
        name,
    ];
    for (k, v) in &options.labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    let ports: Vec<String> = std::iter::once(options.forwarded_port.unwrap_or(0))
        .chain(options.more_ports.iter().copied())
        .map(|p| p.to_string())
        .collect();
    args.extend([
        "-e".into(),
        format!("FAKE_FORWARDED_PORT={}", ports.join(",")),
    ]);
    if let Some(key) = &options.api_key {
        args.extend(["-e".into(), format!("FAKE_API_KEY={key}")]);
    }
    if let Some(version) = &options.version {
        args.extend(["-e".into(), format!("FAKE_GLUETUN_VERSION={version}")]);
    }
    if let Some(text) = &options.role_file {
        let path = write_role_file(&run.name(suffix), text);
        args.extend([
            "-v".into(),
            format!("{}:/gluetun/auth/config.toml:ro", path.display()),
        ]);
    }
    for (k, v) in &options.env {
        args.extend(["-e".into(), format!("{k}={v}")]);
    }
    if let Some(interval) = options.health_interval {
        args.push(format!(
            "--health-interval={}ms",
            interval.as_millis().max(1)
        ));
    }
    if let Some(period) = options.health_start_period {
        args.push(format!("--health-start-period={}ms", period.as_millis()));
    }
    if let Some(network) = &options.network {
        args.extend(["--network".into(), network.clone()]);
    }
    args.push(gluetun_image());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&refs)
}

/// Writes a role file for the container `name` under Cargo's per-target temporary directory
/// (bind-mounted, so it must live on the Docker host: the engine here is local).
fn write_role_file(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gluetun-role-files");
    std::fs::create_dir_all(&dir).expect("create the role file directory");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write the role file");
    path
}

/// Creates a bridge network `avt-<run>-<suffix>` labelled with the run (removed by `Cleanup`).
pub fn create_network(run: &RunId, suffix: &str) -> String {
    let name = run.name(suffix);
    docker_ok(&["network", "create", "--label", &run.label(), &name]);
    name
}

/// The container's IP on `network`, else its first IP; `None` when it has none (stopped, or it
/// shares another container's namespace).
pub fn container_ip(id_or_name: &str, network: Option<&str>) -> Option<String> {
    let json = docker(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks}}",
        id_or_name,
    ])
    .ok()?;
    let networks: serde_json::Value = serde_json::from_str(&json).ok()?;
    let networks = networks.as_object()?;
    let ip_of = |v: &serde_json::Value| {
        v.get("IPAddress")
            .and_then(|ip| ip.as_str())
            .filter(|ip| !ip.is_empty())
            .map(str::to_string)
    };
    match network {
        Some(n) => networks.get(n).and_then(ip_of),
        None => networks.values().find_map(ip_of),
    }
}

/// `docker kill <id>` (SIGKILL): the process dies, the container stays.
pub fn docker_kill(id_or_name: &str) {
    docker_ok(&["kill", id_or_name]);
}

/// `docker rm -f <id>`; fine when it is already gone.
pub fn docker_rm_f(id_or_name: &str) {
    let _ = docker(&["rm", "-f", "-v", id_or_name]);
}

/// The command line of a fake engine (no `FAKE_ENGINE_PROFILE`): `--http-port <http> --port
/// <p2p> --bind-all`. Without `--bind-all` its HTTP API would answer on 127.0.0.1 only, as a real
/// engine's does.
pub fn engine_cmd(http_port: u16, p2p_port: u16) -> Vec<String> {
    vec![
        "--http-port".into(),
        http_port.to_string(),
        "--port".into(),
        p2p_port.to_string(),
        "--bind-all".into(),
    ]
}

/// The fake engine's readiness delay in tests (`FAKE_STARTUP_MS`): short, but not zero, so that
/// waiting for readiness is still exercised. Its default is seconds, like a real engine's.
pub const FAKE_ENGINE_STARTUP_MS: &str = "300";

/// The ports a fake engine runs with, from its testbed-only route `GET /testbed/ports` (real
/// engines report no ports; acevisor never asks for them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct FakeEnginePorts {
    pub p2p_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    pub api_port: u16,
}

/// `GET /testbed/ports` of the fake engine at `host:http_port`; `None` while it does not answer.
pub async fn fake_engine_ports(host: &str, http_port: u16) -> Option<FakeEnginePorts> {
    let body = http_get(host, http_port, "/testbed/ports").await?;
    serde_json::from_str(&body).ok()
}

/// A TCP port that was free on the host a moment ago (for publishing in mode `none`).
pub fn free_host_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot find a free port")
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits until `condition` holds, re-checking every `POLL_INTERVAL`; panics naming `what` when
/// it still does not hold after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(within, what, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await
}

/// Waits until `probe` returns `Some(value)` and returns the value; panics naming `what` after
/// `within`.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_for(within, POLL_INTERVAL, what, probe).await
}

/// `wait_for` with a chosen re-check interval, for windows shorter than `POLL_INTERVAL`.
pub async fn poll_for<T, F, Fut>(within: Duration, every: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A plain HTTP GET to `http://<host>:<port><path>` with a short timeout; the body on 2xx.
pub async fn http_get(host: &str, port: u16, path: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let response = client
        .get(format!("http://{host}:{port}{path}"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// Starts the fake engine image as `avt-<run>-<suffix>` in `vpn_id`'s network namespace,
/// out-of-band (as an operator or the upstream orchestrator would). `labels` come on top of the
/// run label. Returns the container ID.
pub fn start_fake_engine(
    run: &RunId,
    suffix: &str,
    vpn_id: &str,
    http_port: u16,
    p2p_port: u16,
    labels: &[(&str, &str)],
) -> String {
    let name = run.name(suffix);
    let network = format!("container:{vpn_id}");
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--label".into(),
        run.label(),
        "--name".into(),
        name,
        "--network".into(),
        network,
    ];
    for (k, v) in labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args.extend([
        "-e".into(),
        format!("FAKE_STARTUP_MS={FAKE_ENGINE_STARTUP_MS}"),
    ]);
    args.push(engine_image());
    args.extend(engine_cmd(http_port, p2p_port));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&refs)
}

// ---------------------------------------------------------------------------------------------
// Scripting a fake Gluetun (test-only routes, which never need the API key)

/// The fake Gluetun's control server port.
pub const GLUETUN_CONTROL_PORT: u16 = 8000;

async fn gluetun_send(method: reqwest::Method, ip: &str, path: &str, body: String) {
    let url = format!("http://{ip}:{GLUETUN_CONTROL_PORT}{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let response = client
        .request(method, &url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("fake gluetun at {url}: {e}"));
    let status = response.status();
    assert!(
        status.is_success(),
        "fake gluetun at {url} answered {status}"
    );
}

/// `PUT /testbed/port`: the forwarded port the fake Gluetun reports from now on (0 = none yet).
pub async fn gluetun_set_port(ip: &str, port: u16) {
    gluetun_send(
        reqwest::Method::PUT,
        ip,
        "/testbed/port",
        format!(r#"{{"port":{port}}}"#),
    )
    .await
}

/// `PUT /testbed/health`: what the fake Gluetun's Docker healthcheck reports from now on.
pub async fn gluetun_set_healthy(ip: &str, healthy: bool) {
    let body = format!(r#"{{"healthy":{healthy}}}"#);
    gluetun_send(reqwest::Method::PUT, ip, "/testbed/health", body).await
}

/// `POST /testbed/reconnect`: an internal tunnel restart (status `stopped` then `running`, port
/// 0, then `port` after `after`); the container and its namespace survive.
pub async fn gluetun_reconnect(ip: &str, port: u16, after: Duration) {
    let body = format!(r#"{{"port":{port},"after_ms":{}}}"#, after.as_millis());
    gluetun_send(reqwest::Method::POST, ip, "/testbed/reconnect", body).await
}

/// The forwarded port the fake Gluetun reports on `GET /v1/portforward` (no API key set).
pub async fn gluetun_port(ip: &str) -> Option<u16> {
    let body = http_get(ip, GLUETUN_CONTROL_PORT, "/v1/portforward").await?;
    let value: serde_json::Value = serde_json::from_str(&body).ok()?;
    value
        .get("port")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}
