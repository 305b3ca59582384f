//! The containerized daemon on the real Docker engine (issue 7): the `acevisor:dev` image runs
//! with the Docker socket mounted, next to two fake Gluetuns on a test network, reaches
//! `min_replicas` with one forwarded engine per VPN, reports healthy through the image's
//! `HEALTHCHECK`, answers `/engines` inside the network, leaves its engines running on
//! `docker stop`, and a new acevisor container adopts them. Also validates every compose file and
//! brings the testbed compose stack up and down.
//!
//! Skipped with a notice when Docker is unreachable, unless `ACEVISOR_REQUIRE_DOCKER=1` (then it
//! fails). The images are built by `testbed/build-images.sh` (`TESTBED_SKIP_BUILD=1` reuses
//! existing ones). Every container, network and temp file carries a per-run id and is removed when
//! the test ends, failed or not.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// `RUN_LABEL` is on everything a test run creates (engines get it through `docker.labels`).
use support::{
    RUN_LABEL, acevisor_image, docker, docker_ok, engine_image, free_host_port as free_port,
    gluetun_image, image_exists, repo_root as root,
};
const GLUETUN_KEY: &str = "deploy-test-key";
/// Forwarded ports of the two fake VPNs (incident A's numbers, docs/behavior.md).
const PORTS: [u16; 2] = [55747, 34817];
const MIN_REPLICAS: usize = 4;
/// Extra label on acevisor containers, so cleanup can stop them before removing engines.
const DAEMON_LABEL: &str = "acevisor-test.daemon=1";

/// True when the tests should run: Docker answers and the three images are built.
fn docker_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let required = std::env::var("ACEVISOR_REQUIRE_DOCKER").as_deref() == Ok("1");
        let reachable = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !reachable {
            assert!(
                !required,
                "ACEVISOR_REQUIRE_DOCKER=1 but Docker is not reachable"
            );
            eprintln!("skipping docker_deploy tests: Docker is not reachable");
            return false;
        }
        // acevisor:dev always through the script, so it holds the binary of this source tree (a
        // warm rebuild is a cargo no-op plus a cached docker build); the fakes only when missing,
        // as other tests share them.
        let script = root().join("testbed/build-images.sh");
        let fakes_missing = [gluetun_image(), engine_image()]
            .iter()
            .any(|i| !image_exists(i));
        let mut sets = vec!["acevisor"];
        if fakes_missing {
            sets.push("testbed");
        }
        for set in sets {
            let out = Command::new(&script)
                .arg(set)
                .output()
                .expect("cannot run build-images.sh");
            assert!(
                out.status.success(),
                "build-images.sh {set} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for image in [acevisor_image(), gluetun_image(), engine_image()] {
            assert!(
                image_exists(&image),
                "{image} missing after build-images.sh"
            );
        }
        let size = docker_ok(&["image", "inspect", "-f", "{{.Size}}", &acevisor_image()]);
        eprintln!("{} image size: {size} bytes", acevisor_image());
        true
    })
}

/// The group of the Docker socket, for `--group-add` (the image runs as uid 65532).
fn socket_gid() -> String {
    socket_gid_of().expect("no /var/run/docker.sock")
}

fn socket_gid_of() -> Option<String> {
    Command::new("stat")
        .args(["-c", "%g", "/var/run/docker.sock"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// One test's world: a run id, and cleanup of everything carrying it when dropped.
struct Run {
    id: String,
    dir: PathBuf,
    networks: Vec<String>,
    compose: Option<Vec<String>>,
}

impl Run {
    fn new(test: &str) -> Run {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Short, lowercase and alphanumeric: it names containers and a compose project.
        let id = format!("dpl{test}{:x}{nanos:x}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        Run {
            id,
            dir,
            networks: Vec::new(),
            compose: None,
        }
    }

    fn label(&self) -> String {
        format!("{RUN_LABEL}={}", self.id)
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.id)
    }

    fn network(&mut self) -> String {
        let name = self.name("net");
        docker_ok(&["network", "create", "--label", &self.label(), &name]);
        self.networks.push(name.clone());
        name
    }

    /// `docker run -d` with the run label; returns the container id.
    fn run(&self, args: &[&str]) -> String {
        let label = self.label();
        let mut all = vec!["run", "-d", "--label", &label];
        all.extend_from_slice(args);
        docker_ok(&all)
    }

    /// A file in the run's temp dir, readable by the image's non-root user.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn remove_labelled(&self, filter: &str) {
        self.remove_labelled_all(&[filter]);
    }

    /// Removes the containers matching every filter.
    fn remove_labelled_all(&self, filters: &[&str]) {
        let mut args = vec!["ps", "-aq"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        let ids = docker(&args).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(compose) = &self.compose {
            let mut args: Vec<&str> = compose.iter().map(String::as_str).collect();
            args.extend(["down", "--remove-orphans", "--timeout", "10"]);
            let _ = compose_cmd(&self.id, &args).output();
        }
        // The daemons first, or they recreate the engines removed next; then the engines (they
        // sit in the VPN containers' namespaces), then everything else.
        self.remove_labelled_all(&[
            &format!("label={}", self.label()),
            &format!("label={DAEMON_LABEL}"),
        ]);
        self.remove_labelled(&format!("label=acevisor.managed={}", self.id));
        self.remove_labelled(&format!("label={}", self.label()));
        self.remove_labelled(&format!("label=com.docker.compose.project={}", self.id));
        for net in &self.networks {
            let _ = docker(&["network", "rm", net]);
        }
        let _ = docker(&[
            "network",
            "prune",
            "-f",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.id),
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` every 250 ms until it yields a value or `secs` pass; `context` is printed on timeout.
fn poll<T>(
    secs: u64,
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}\n{}",
            context()
        );
        sleep(Duration::from_millis(250));
    }
}

fn logs(container: &str) -> String {
    let Ok(out) = Command::new("docker")
        .args(["logs", "--tail", "60", container])
        .output()
    else {
        return format!("--- docker logs {container}: cannot run the docker CLI ---");
    };
    format!(
        "--- docker logs {container} ---\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn inspect(container: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, container])
}

/// One running engine as `docker ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Engine {
    id: String,
    name: String,
    vpn: String,
    forwarded: bool,
    p2p_port: u16,
}

/// The running engines of instance `instance`, from their labels.
fn engines(instance: &str) -> Vec<Engine> {
    let filter = format!("label=acevisor.managed={instance}");
    let out = docker_ok(&[
        "ps",
        "--no-trunc",
        "--filter",
        &filter,
        "--filter",
        "label=acevisor.role=engine",
        "--format",
        "{{.ID}}\t{{.Names}}\t{{.Label \"acevisor.vpn\"}}\t{{.Label \"acevisor.forwarded\"}}\t{{.Label \"acevisor.p2p_port\"}}",
    ]);
    let mut all: Vec<Engine> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Engine {
                id: f[0].to_string(),
                name: f[1].to_string(),
                vpn: f[2].to_string(),
                forwarded: f[3] == "true",
                p2p_port: f[4].parse().unwrap_or(0),
            }
        })
        .collect();
    all.sort();
    all
}

/// Capacity as the issue defines it: `MIN_REPLICAS` engines, spread evenly over both VPNs, each
/// VPN with exactly one forwarded engine whose P2P port is the VPN's forwarded port.
fn at_capacity(engines: &[Engine], vpns: &[String; 2]) -> bool {
    engines.len() == MIN_REPLICAS
        && vpns.iter().zip(PORTS).all(|(vpn, port)| {
            let mine: Vec<&Engine> = engines.iter().filter(|e| &e.vpn == vpn).collect();
            let forwarded: Vec<&&Engine> = mine.iter().filter(|e| e.forwarded).collect();
            mine.len() == MIN_REPLICAS / 2 && forwarded.len() == 1 && forwarded[0].p2p_port == port
        })
}

/// A plain HTTP/1.1 GET; `(status, body)`.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().expect("socket address"),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The daemon config for the containerized test: redundant mode over the two fake VPNs, fast
/// timings, and the run label on every engine.
fn daemon_config(run: &Run, vpns: &[String; 2]) -> String {
    let engine = engine_image();
    format!(
        r#"instance = "{id}"

[docker]
call_timeout = "5s"
stop_timeout = "1s"

[docker.labels]
"{RUN_LABEL}" = "{id}"

[engines]
prefix = "{id}-ace"
# The default preset, as a deployment would use it, on the fake engine in its image's profile.
variant = "krinkuto11-amd64"
image = "{engine}"
env = {{ FAKE_ENGINE_PROFILE = "krinkuto11", FAKE_STARTUP_MS = "300" }}
min_replicas = {MIN_REPLICAS}
max_replicas = 6
min_free = 0
ready_timeout = "15s"

[engines.health]
interval = "1s"
timeout = "500ms"

[vpn]
mode = "redundant"
poll_interval = "250ms"
port_settle = "500ms"
control_timeout = "1s"

[[vpn.gluetun]]
container = "{vpn1}"
api_key_env = "GLUETUN_API_KEY"
engine_ports = "19000-19099"

[[vpn.gluetun]]
container = "{vpn2}"
api_key_env = "GLUETUN_API_KEY"
engine_ports = "19100-19199"

[api]
listen = "0.0.0.0:8000"
# On the test's own network, read by the test only.
allow_unauthenticated = true
"#,
        id = run.id,
        vpn1 = vpns[0],
        vpn2 = vpns[1],
    )
}

/// Starts an acevisor container from the image as a user would, with a fast healthcheck.
fn start_acevisor(run: &Run, name: &str, network: &str, config: &Path) -> String {
    let socket = "/var/run/docker.sock:/var/run/docker.sock".to_string();
    let mount = format!("{}:/etc/acevisor/acevisor.toml:ro", config.display());
    let key = format!("GLUETUN_API_KEY={GLUETUN_KEY}");
    let gid = socket_gid();
    run.run(&[
        "--label",
        DAEMON_LABEL,
        "--name",
        name,
        "--network",
        network,
        "--group-add",
        &gid,
        "-v",
        &socket,
        "-v",
        &mount,
        "-e",
        &key,
        "--health-interval",
        "1s",
        "--health-start-period",
        "30s",
        &acevisor_image(),
    ])
}

fn wait_capacity(instance: &str, vpns: &[String; 2], acevisor: &str) -> Vec<Engine> {
    poll(
        90,
        "min_replicas engines with one forwarded engine per VPN",
        || format!("engines: {:#?}\n{}", engines(instance), logs(acevisor)),
        || {
            assert_eq!(
                inspect(acevisor, "{{.State.Running}}"),
                "true",
                "acevisor exited: {}",
                logs(acevisor)
            );
            let now = engines(instance);
            at_capacity(&now, vpns).then_some(now)
        },
    )
}

fn wait_healthy(acevisor: &str) {
    poll(
        60,
        "acevisor's Docker healthcheck to report healthy (is /livez served by `acevisor run`?)",
        || {
            format!(
                "health: {}\n{}",
                docker(&["inspect", "-f", "{{json .State.Health}}", acevisor])
                    .unwrap_or_else(|e| e),
                logs(acevisor)
            )
        },
        || (inspect(acevisor, "{{.State.Health.Status}}") == "healthy").then_some(()),
    );
}

#[test]
fn containerized_daemon_reaches_capacity_survives_stop_and_is_adopted() {
    if !docker_ready() {
        return;
    }
    let mut run = Run::new("d");
    let net = run.network();
    let vpns = [run.name("gluetun-1"), run.name("gluetun-2")];
    for (vpn, port) in vpns.iter().zip(PORTS) {
        let key = format!("FAKE_API_KEY={GLUETUN_KEY}");
        let fwd = format!("FAKE_FORWARDED_PORT={port}");
        run.run(&[
            "--name",
            vpn,
            "--network",
            &net,
            "-e",
            &key,
            "-e",
            &fwd,
            &gluetun_image(),
        ]);
    }
    let config = run.write("acevisor.toml", &daemon_config(&run, &vpns));

    // The image's contract, read back from Docker.
    assert_eq!(
        docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}}",
            &acevisor_image()
        ]),
        "65532:65532"
    );
    assert_eq!(
        docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.StopSignal}} {{json .Config.Healthcheck.Test}}",
            &acevisor_image()
        ]),
        r#"["/acevisor"] ["run","--config","/etc/acevisor/acevisor.toml"] SIGTERM ["CMD","/acevisor","healthcheck"]"#
    );

    // 1. Capacity: two engines per VPN, one forwarded engine each with the VPN's port.
    let first = run.name("acevisor-1");
    start_acevisor(&run, &first, &net, &config);
    let before = wait_capacity(&run.id, &vpns, &first);

    // 2. `docker stop` (SIGTERM): acevisor exits cleanly and every engine keeps running.
    docker_ok(&["stop", "--time", "20", &first]);
    assert_eq!(
        inspect(&first, "{{.State.ExitCode}}"),
        "0",
        "acevisor did not exit cleanly on SIGTERM\n{}",
        logs(&first)
    );
    assert!(
        logs(&first).contains("engines keep running"),
        "{}",
        logs(&first)
    );
    sleep(Duration::from_secs(1));
    assert_eq!(
        engines(&run.id),
        before,
        "engines changed after docker stop"
    );

    // 3. A new acevisor container adopts them: same container IDs, nothing created or removed.
    let second = run.name("acevisor-2");
    start_acevisor(&run, &second, &net, &config);
    let adopted = wait_capacity(&run.id, &vpns, &second);
    assert_eq!(
        adopted, before,
        "the new acevisor did not adopt the engines"
    );
    sleep(Duration::from_secs(3));
    let settled = engines(&run.id);
    assert_eq!(
        settled, before,
        "engines changed after adoption (duplicates or replacements)"
    );
    let all_names = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=acevisor.managed={}", run.id),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(
        all_names.lines().count(),
        MIN_REPLICAS,
        "extra engine containers exist: {all_names}"
    );

    // 4. Healthy through the image's HEALTHCHECK (`acevisor healthcheck` -> /livez).
    wait_healthy(&second);

    // 5. `/engines` from inside the test network: another container resolves acevisor by name;
    // then the body through the container's address on that network.
    let engines_url = format!("http://{second}:8000/engines");
    let probe = docker(&[
        "run",
        "--rm",
        "--label",
        &run.label(),
        "--network",
        &net,
        &acevisor_image(),
        "healthcheck",
        "--url",
        &engines_url,
    ]);
    if let Err(e) = probe {
        panic!("GET {engines_url} from the network failed: {e}");
    }
    let ip = inspect(
        &second,
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
    );
    let expected: BTreeSet<String> = before.iter().map(|e| e.id.clone()).collect();
    let last = std::cell::RefCell::new(String::new());
    let body = poll(
        30,
        "GET /engines to list the adopted engines",
        || format!("last answer: {}", last.borrow()),
        || {
            let (status, body) = http_get(&format!("{ip}:8000"), "/engines").ok()?;
            let listed: serde_json::Value = serde_json::from_str(&body).ok()?;
            let ids: BTreeSet<String> = listed
                .as_array()?
                .iter()
                .filter_map(|e| e["container_id"].as_str().map(str::to_string))
                .collect();
            let done = status == 200 && ids == expected;
            *last.borrow_mut() = body.clone();
            done.then_some(body)
        },
    );
    let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON /engines");
    let listed = listed.as_array().expect("an array of engines");
    let forwarded_by_vpn: BTreeMap<&str, usize> = listed
        .iter()
        .filter(|e| e["forwarded"] == serde_json::Value::Bool(true))
        .filter_map(|e| e["vpn_container"].as_str())
        .fold(BTreeMap::new(), |mut m, v| {
            *m.entry(v).or_default() += 1;
            m
        });
    assert_eq!(
        forwarded_by_vpn,
        BTreeMap::from([(vpns[0].as_str(), 1), (vpns[1].as_str(), 1)]),
        "{body}"
    );
}

/// `docker-compose` with the environment every compose file needs, for project `project`: the
/// keys the stacks require and, for the real-Gluetun stacks, one valid provider block of
/// `env.example` (`tests/compose_stacks.rs` checks every block).
fn compose_cmd(project: &str, args: &[&str]) -> Command {
    let mut c = Command::new("docker-compose");
    c.current_dir(root())
        .args(["-p", project])
        .args(args)
        .env("DOCKER_GID", socket_gid_or_default())
        .env("GLUETUN_API_KEY", GLUETUN_KEY)
        .env("ACEVISOR_API_KEY", "deploy-test-api-key")
        .env("VPN_SERVICE_PROVIDER", "protonvpn")
        .env("VPN_PORT_FORWARDING", "on");
    c
}

fn socket_gid_or_default() -> String {
    socket_gid_of().unwrap_or_else(|| "999".into())
}

fn compose_available() -> bool {
    let found = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping: docker-compose is not installed");
    }
    found
}

/// Every compose file (and the testbed with its Jaeger overlay) passes `docker-compose config`.
/// Needs only the docker-compose binary, not the daemon.
#[test]
fn every_compose_file_is_valid() {
    if !compose_available() {
        return;
    }
    let files: &[&[&str]] = &[
        &["config/compose/none.yml"],
        &["config/compose/single.yml"],
        &["config/compose/redundant.yml"],
        &["config/compose/testbed.yml"],
        &[
            "config/compose/testbed.yml",
            "config/compose/testbed-jaeger.yml",
        ],
    ];
    for set in files {
        let mut args = Vec::new();
        for f in *set {
            args.extend(["-f", f]);
        }
        args.extend(["config", "-q"]);
        let out = compose_cmd("acevisorvalidate", &args)
            .output()
            .expect("run docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `config/compose/testbed.yml` up and down: the shipped stack with per-run names reaches
/// capacity, and `down` leaves no engine behind (its config says `on_shutdown = "remove"`).
#[test]
fn testbed_compose_stack_comes_up_and_down() {
    if !compose_available() || !docker_ready() {
        return;
    }
    let mut run = Run::new("c");
    let shipped = std::fs::read_to_string(root().join("config/compose/testbed.toml")).unwrap();
    assert!(shipped.contains("instance = \"testbed\""));
    assert!(shipped.contains("on_shutdown = \"remove\""));
    let config = shipped
        .replace(
            "instance = \"testbed\"",
            &format!("instance = \"{}\"", run.id),
        )
        .replace("acevisor-testbed-", &format!("{}-", run.id))
        .replace("acevisor-testbed/engine:dev", &engine_image())
        .replace(
            "[engines]",
            &format!(
                "[docker.labels]\n\"{RUN_LABEL}\" = \"{}\"\n\n[engines]",
                run.id
            ),
        );
    let config = run.write("testbed.toml", &config);
    let file = ["-f", "config/compose/testbed.yml"];
    run.compose = Some(file.iter().map(|s| s.to_string()).collect());
    let port = free_port().to_string();
    let with_env = |args: &[&str]| {
        let mut all = file.to_vec();
        all.extend_from_slice(args);
        let mut c = compose_cmd(&run.id, &all);
        c.env("TESTBED_NAME", &run.id)
            .env("TESTBED_CONFIG", &config)
            .env("GLUETUN_IMAGE", gluetun_image())
            .env("ACEVISOR_IMAGE", acevisor_image())
            .env("ACEVISOR_PORT", format!("127.0.0.1:{port}"));
        c
    };
    let up = with_env(&["up", "-d"]).output().expect("docker-compose up");
    assert!(
        up.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let vpns = [run.name("gluetun-1"), run.name("gluetun-2")];
    let acevisor = run.name("acevisor");
    let before = wait_capacity(&run.id, &vpns, &acevisor);
    assert!(
        before
            .iter()
            .all(|e| e.name.starts_with(&format!("{}-engine-", run.id)))
    );
    // The API through the port the stack publishes on the host lists every engine.
    poll(
        30,
        "GET /engines on the published port to list every engine",
        || logs(&acevisor),
        || {
            let (status, body) = http_get(&format!("127.0.0.1:{port}"), "/engines").ok()?;
            let listed: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && listed.as_array().map(Vec::len) == Some(MIN_REPLICAS)).then_some(())
        },
    );

    let down = with_env(&["down", "--timeout", "30"])
        .output()
        .expect("docker-compose down");
    assert!(
        down.status.success(),
        "docker-compose down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let left = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=acevisor.managed={}", run.id),
        "--format",
        "{{.Names}}",
    ]);
    assert!(left.is_empty(), "engines left after down: {left}");
    let stack = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", run.id),
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        stack.is_empty(),
        "compose containers left after down: {stack}"
    );
}

/// The acevisor configs the compose files mount pass `check-config`, and every file a compose
/// file mounts from `config/compose/` exists. No Docker needed.
#[test]
fn compose_configs_are_valid_and_present() {
    let dir = root().join("config/compose");
    for yml in ["none.yml", "single.yml", "redundant.yml", "testbed.yml"] {
        let text = std::fs::read_to_string(dir.join(yml)).unwrap();
        // Bind mounts relative to the compose file: `./x.toml:/...`, `${VAR:-./x.toml}:/...` or
        // `./${VAR:-x.toml}:/...` (the default is the file checked).
        let mounted: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once("./").map(|(_, rest)| rest))
            .map(|rest| match rest.strip_prefix("${") {
                Some(var) => var.split_once(":-").map_or(var, |(_, default)| default),
                None => rest,
            })
            .filter_map(|rest| rest.split([':', '}']).next())
            .collect();
        assert!(!mounted.is_empty(), "{yml} mounts no config");
        for file in mounted {
            let path = dir.join(file);
            assert!(path.exists(), "{yml} mounts {file}, which does not exist");
            if file.ends_with(".toml") && !file.starts_with("gluetun-auth") {
                let out = Command::new(env!("CARGO_BIN_EXE_acevisor"))
                    .args(["check-config", path.to_str().unwrap()])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{file}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    let auth = std::fs::read_to_string(dir.join("gluetun-auth.toml")).unwrap();
    let auth: toml::Table = toml::from_str(&auth).expect("gluetun-auth.toml is TOML");
    let role = &auth["roles"].as_array().unwrap()[0];
    assert_eq!(role["auth"].as_str(), Some("apikey"));
    let routes: Vec<&str> = role["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(
        routes,
        [
            "GET /v1/vpn/status",
            "GET /v1/portforward",
            "GET /v1/openvpn/portforwarded",
            "GET /v1/publicip/ip"
        ]
    );
}
