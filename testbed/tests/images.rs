//! Black-box tests of the two testbed images on the local Docker engine. Skipped when Docker is
//! unreachable, unless `ACEVISOR_REQUIRE_DOCKER=1` (then a missing Docker fails the test). Builds
//! the images with `build-images.sh` when they are missing. Every container carries a per-test
//! `acevisor-test.run` label and a guard removes them all, on failure too. Containers are reached
//! by their IP on the default bridge.

use acevisor_testbed::http::{self, ClientResponse};
use std::io::Read;
use std::process::{Command, Output};
use std::sync::{LazyLock, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The images `build-images.sh` builds: `<repository>:$TESTBED_TAG` (default tag `dev`).
fn image(repository: &str) -> String {
    let tag = std::env::var("TESTBED_TAG").unwrap_or_else(|_| "dev".into());
    format!("{repository}:{tag}")
}
static GLUETUN: LazyLock<String> = LazyLock::new(|| image("acevisor-testbed/gluetun"));
static ENGINE: LazyLock<String> = LazyLock::new(|| image("acevisor-testbed/engine"));
const LABEL: &str = "acevisor-test.run";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("cannot run the docker CLI")
}

/// Runs docker and returns trimmed stdout; panics with stderr on failure.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// True when the tests should run: Docker answers and the images exist (built if needed).
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
            eprintln!("skipping image tests: Docker is not reachable");
            return false;
        }
        let missing = [&*GLUETUN, &*ENGINE]
            .iter()
            .any(|i| !docker(&["image", "inspect", i]).status.success());
        if missing {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/build-images.sh");
            let status = Command::new(script)
                .arg("testbed")
                .status()
                .expect("cannot run build-images.sh");
            assert!(status.success(), "build-images.sh failed");
        }
        true
    })
}

/// Containers of one test; dropping it removes every container with its label.
struct Run {
    label: String,
}

impl Run {
    fn new(test: &str) -> Run {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Run {
            label: format!("images-{test}-{}-{nanos:x}", std::process::id()),
        }
    }

    /// `docker run -d` with the run label; returns the container id.
    fn start(&self, args: &[&str]) -> String {
        let label = format!("{LABEL}={}", self.label);
        let mut all = vec!["run", "-d", "--label", &label];
        all.extend_from_slice(args);
        docker_ok(&all)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let filter = format!("label={LABEL}={}", self.label);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let ids = String::from_utf8_lossy(&ids.stdout);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
}

fn inspect(id: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, id])
}

fn ip(id: &str) -> String {
    let ip = inspect(id, "{{.NetworkSettings.IPAddress}}");
    assert!(!ip.is_empty(), "container {id} has no bridge IP");
    ip
}

/// Polls `f` every 50 ms until it yields a value or `secs` pass.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

fn call(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> ClientResponse {
    http::request(addr, method, target, headers, body, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{method} http://{addr}{target}: {e}"))
}

fn get(addr: &str, target: &str) -> ClientResponse {
    call(addr, "GET", target, &[], "")
}

/// Waits until something answers HTTP on `addr`.
fn wait_http(addr: &str, target: &str) {
    poll(10, &format!("http://{addr}{target}"), || {
        http::request(addr, "GET", target, &[], "", Duration::from_millis(500)).ok()
    });
}

const KEY: (&str, &str) = ("X-API-Key", "k3y");

#[test]
fn gluetun_api_auth_port_and_reconnect() {
    if !docker_ready() {
        return;
    }
    let run = Run::new("api");
    let g = run.start(&[
        "-e",
        "FAKE_GLUETUN_VERSION=head",
        "-e",
        "FAKE_API_KEY=k3y",
        "-e",
        "FAKE_FORWARDED_PORT=40000",
        &GLUETUN,
    ]);
    let addr = format!("{}:8000", ip(&g));
    wait_http(&addr, "/testbed/healthz");

    assert_eq!(get(&addr, "/v1/vpn/status").status, 401);
    assert_eq!(get(&addr, "/v1/portforward?api_key=wrong").status, 401);
    let status = call(&addr, "GET", "/v1/vpn/status", &[KEY], "");
    assert_eq!(
        (status.status, status.body.as_str()),
        (200, r#"{"status":"running"}"#)
    );
    assert_eq!(
        get(&addr, "/v1/portforward?api_key=k3y").body,
        r#"{"port":40000,"ports":[40000]}"#
    );
    assert_eq!(get(&addr, "/v1/nope").status, 404);
    assert_eq!(
        call(&addr, "POST", "/v1/portforward", &[KEY], "").status,
        405
    );
    let legacy = call(&addr, "GET", "/v1/openvpn/portforwarded", &[KEY], "");
    assert_eq!(
        (legacy.status, legacy.header("location")),
        (301, Some("/v1/portforward"))
    );
    let ip_answer = call(&addr, "GET", "/v1/publicip/ip", &[KEY], "").body;
    assert!(
        ip_answer.contains(r#""public_ip":"203.0.113.7""#),
        "{ip_answer}"
    );
    assert!(
        call(&addr, "GET", "/v1/version", &[KEY], "")
            .body
            .contains(r#""version":"#)
    );

    // Test routes need no key.
    assert_eq!(
        call(&addr, "PUT", "/testbed/port", &[], r#"{"port":40001}"#).status,
        200
    );
    let pf = || call(&addr, "GET", "/v1/portforward", &[KEY], "").body;
    assert_eq!(pf(), r#"{"port":40001,"ports":[40001]}"#);

    let stop = call(
        &addr,
        "PUT",
        "/v1/vpn/status",
        &[KEY],
        r#"{"status":"stopped"}"#,
    );
    assert_eq!(stop.body, r#"{"outcome":"stopped"}"#);
    assert_eq!(pf(), r#"{"port":0,"ports":null}"#);
    let bad = call(&addr, "PUT", "/v1/vpn/status", &[KEY], r#"{"status":"up"}"#);
    assert_eq!(bad.status, 400);
    call(
        &addr,
        "PUT",
        "/v1/vpn/status",
        &[KEY],
        r#"{"status":"running"}"#,
    );
    assert_eq!(pf(), r#"{"port":40001,"ports":[40001]}"#);

    let body = r#"{"port":40100,"after_ms":300}"#;
    assert_eq!(
        call(&addr, "POST", "/testbed/reconnect", &[], body).status,
        200
    );
    let vpn = || call(&addr, "GET", "/v1/vpn/status", &[KEY], "").body;
    assert_eq!(vpn(), r#"{"status":"stopped"}"#);
    assert_eq!(pf(), r#"{"port":0,"ports":null}"#);
    poll(5, "reconnect to finish", || {
        (vpn() == r#"{"status":"running"}"#).then_some(())
    });
    assert_eq!(pf(), r#"{"port":40100,"ports":[40100]}"#);
}

/// Writes a role file for one test under Cargo's per-target temporary directory.
fn role_file(test: &str, text: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-role-files");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const ROLE_WITH_CURRENT_PORT_ROUTE: &str = r#"[[roles]]
name = "acevisor"
auth = "apikey"
apikey = "k3y"
routes = ["GET /v1/vpn/status", "GET /v1/portforward", "GET /v1/openvpn/portforwarded"]
"#;

#[test]
fn gluetun_3_39_refuses_a_role_file_listing_the_current_port_route() {
    if !docker_ready() {
        return;
    }
    let run = Run::new("roles339");
    let file = role_file("roles339", ROLE_WITH_CURRENT_PORT_ROUTE);
    let mount = format!("{file}:/gluetun/auth/config.toml:ro");
    let g = run.start(&["-e", "FAKE_GLUETUN_VERSION=3.39", "-v", &mount, &GLUETUN]);
    assert_eq!(wait_exit(&g), 1);
    let logs = docker(&["logs", &g]);
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(
        stderr.contains(
            "ERROR setting up control server: validating auth settings: role acevisor (1 of 1): \
             route 2 of 3: route not supported by the control server: GET /v1/portforward"
        ),
        "stderr: {stderr}"
    );
}

#[test]
fn gluetun_3_40_role_file_at_a_moved_path_opens_only_its_routes() {
    if !docker_ready() {
        return;
    }
    let run = Run::new("roles340");
    let text = ROLE_WITH_CURRENT_PORT_ROUTE.replace(r#""GET /v1/portforward", "#, "");
    let file = role_file("roles340", &text);
    let mount = format!("{file}:/config/roles.toml:ro");
    let g = run.start(&[
        "-e",
        "FAKE_GLUETUN_VERSION=3.40",
        "-e",
        "HTTP_CONTROL_SERVER_AUTH_CONFIG_FILEPATH=/config/roles.toml",
        "-e",
        "FAKE_FORWARDED_PORT=40000",
        "-v",
        &mount,
        &GLUETUN,
    ]);
    let addr = format!("{}:8000", ip(&g));
    wait_http(&addr, "/testbed/healthz");
    let key = |path: &str| call(&addr, "GET", path, &[KEY], "");
    assert_eq!(key("/v1/vpn/status").status, 200);
    assert_eq!(key("/v1/openvpn/portforwarded").body, r#"{"port":40000}"#);
    assert_eq!(
        key("/v1/portforward").status,
        401,
        "v3.40 has no such route"
    );
    assert_eq!(key("/v1/publicip/ip").status, 401, "not in the role");
    assert_eq!(get(&addr, "/v1/vpn/status").status, 401, "no key");
    assert_eq!(key("/v1/version").status, 401, "not in the role either");
}

#[test]
fn gluetun_docker_health_and_fast_stop() {
    if !docker_ready() {
        return;
    }
    let run = Run::new("health");
    let g = run.start(&[&GLUETUN]);
    let addr = format!("{}:8000", ip(&g));
    let health = || inspect(&g, "{{.State.Health.Status}}");
    poll(15, "docker health healthy", || {
        (health() == "healthy").then_some(())
    });
    wait_http(&addr, "/testbed/healthz");
    let r = call(&addr, "PUT", "/testbed/health", &[], r#"{"healthy":false}"#);
    assert_eq!(r.status, 200);
    assert_eq!(get(&addr, "/testbed/healthz").status, 503);
    poll(15, "docker health unhealthy", || {
        (health() == "unhealthy").then_some(())
    });
    assert_eq!(inspect(&g, "{{.State.Status}}"), "running");

    // SIGTERM handling: without it PID 1 ignores SIGTERM and `docker stop` waits the full 10 s.
    let t = Instant::now();
    docker_ok(&["stop", &g]);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "docker stop took {:?}",
        t.elapsed()
    );
    assert_eq!(inspect(&g, "{{.State.ExitCode}}"), "0");
}

/// Waits until the container has exited and returns its exit code.
fn wait_exit(id: &str) -> i32 {
    poll(10, &format!("container {id} to exit"), || {
        let s = inspect(id, "{{.State.Status}} {{.State.ExitCode}}");
        let (state, code) = s.split_once(' ')?;
        (state == "exited").then(|| code.parse().unwrap())
    })
}

/// The P2P port an engine reports on the testbed-only route `GET /testbed/ports`.
fn p2p_port(addr: &str) -> String {
    let ports = get(addr, "/testbed/ports").body;
    ports
        .split(r#""p2p_port":"#)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no p2p_port in {ports}"))
        .to_string()
}

/// Waits until `docker logs` of `id` (stderr) contains `needle`; returns the whole log.
fn wait_log(id: &str, needle: &str) -> String {
    poll(15, &format!("{needle:?} in the logs of {id}"), || {
        let logs = docker(&["logs", id]);
        let stderr = String::from_utf8_lossy(&logs.stderr).into_owned();
        stderr.contains(needle).then_some(stderr)
    })
}

#[test]
fn engines_in_one_gluetun_namespace() {
    if !docker_ready() {
        return;
    }
    let run = Run::new("engines");
    let g = run.start(&["-e", "FAKE_FORWARDED_PORT=34817", &GLUETUN]);
    let gip = ip(&g);
    let ns = format!("container:{g}");
    let flags = [
        "--http-port",
        "6881",
        "--port",
        "34817",
        "--bind-all",
        "--client-console",
    ];
    // No FAKE_STARTUP_MS: the default readiness delay of a few seconds.
    let mut args = vec!["--network", ns.as_str(), &ENGINE];
    args.extend(flags);
    let e1 = run.start(&args);
    let a1 = format!("{gip}:6881");
    wait_http(&a1, "/webui/api/service?method=get_version");
    let status = get(&a1, "/server/api?api_version=3&method=get_status").body;
    assert_eq!(
        status,
        r#"{"result":{"playlist_loaded":true,"version":{"code":3021100,"platform":"linux","version":"3.2.11"}}}"#
    );
    assert_eq!(
        get(&a1, "/testbed/ports").body,
        r#"{"p2p_port":34817,"http_port":6881,"https_port":6879,"api_port":62062}"#
    );

    // Same P2P port, other HTTP port, same namespace: must fail loudly.
    let e2 = run.start(&[
        "--network",
        &ns,
        &ENGINE,
        "--http-port",
        "6882",
        "--port",
        "34817",
    ]);
    assert_ne!(wait_exit(&e2), 0);
    let logs = docker(&["logs", &e2]);
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(
        stderr.contains("fake-engine: cannot bind p2p port 34817 (tcp): Address in use"),
        "stderr: {stderr}"
    );

    // Without --bind-all the API is bound to 127.0.0.1 inside the namespace: unreachable from
    // outside, as a real engine's. (Its own log says when it has bound.)
    let e3 = run.start(&[
        "--network",
        &ns,
        "-e",
        "FAKE_STARTUP_MS=0",
        &ENGINE,
        "--http-port",
        "6883",
        "--port",
        "34818",
    ]);
    wait_log(&e3, "http api on 127.0.0.1:6883");
    let outside = http::request(
        &format!("{gip}:6883"),
        "GET",
        "/server/api?method=get_status",
        &[],
        "",
        Duration::from_secs(2),
    );
    assert!(outside.is_err(), "answered without --bind-all: {outside:?}");
    assert_eq!(inspect(&e3, "{{.State.Status}}"), "running");

    // A playback session, addressed through the Host header the client used.
    let start = get(&a1, "/ace/getstream?id=0123456789abcdef&format=json&pid=t1").body;
    let stat_url = format!("http://{a1}/ace/stat/");
    assert!(
        start.contains(&format!(r#""stat_url":"{stat_url}"#)),
        "{start}"
    );
    let sid = start
        .split(r#""playback_session_id":""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let stat = get(&a1, &format!("/ace/stat/{sid}")).body;
    assert!(stat.starts_with(r#"{"response":{"status":"dl""#), "{stat}");

    // The playback: MPEG-TS, chunked, to two readers at once, for as long as the session lives.
    let target = format!("/ace/r/{sid}");
    let open = || http::open_stream(&a1, &target, Duration::from_secs(5)).unwrap();
    let (head, mut first) = open();
    assert_eq!(head.header("content-type"), Some("video/mp2t"));
    let (_, mut second) = open();
    for body in [&mut first, &mut second] {
        let mut buf = vec![0u8; 188 * 100];
        body.read_exact(&mut buf).expect("18.8 kB of playback");
        assert!(buf.chunks(188).all(|p| p[0] == 0x47), "TS sync bytes");
    }
    let stop = get(&a1, &format!("/ace/cmd/{sid}?method=stop")).body;
    assert_eq!(stop, r#"{"response":"ok","error":null}"#);
    let mut rest = Vec::new();
    first
        .read_to_end(&mut rest)
        .expect("the playback ends cleanly when its session is stopped");
    let stat = get(&a1, &format!("/ace/stat/{sid}")).body;
    assert_eq!(
        stat,
        r#"{"response":null,"error":"unknown playback session id"}"#
    );

    // Hang: the engine still accepts but never answers.
    assert_eq!(call(&a1, "PUT", "/testbed/hang", &[], "").status, 200);
    let hung = http::request(
        &a1,
        "GET",
        "/server/api?method=get_status",
        &[],
        "",
        Duration::from_millis(300),
    );
    assert!(hung.is_err(), "a hung engine answered: {hung:?}");
    assert_eq!(inspect(&e1, "{{.State.Status}}"), "running");

    // Exit with a chosen code.
    let e4 = run.start(&[
        "--network",
        &ns,
        "-e",
        "FAKE_STARTUP_MS=0",
        &ENGINE,
        "--http-port=6884",
        "--port=34819",
        "--bind-all",
    ]);
    let a4 = format!("{gip}:6884");
    wait_http(&a4, "/webui/api/service?method=get_version");
    assert_eq!(
        call(&a4, "POST", "/testbed/exit", &[], r#"{"code":3}"#).status,
        200
    );
    assert_eq!(wait_exit(&e4), 3);
}

#[test]
fn engine_profiles_take_settings_like_their_images() {
    if !docker_ready() {
        return;
    }
    let run = Run::new("profiles");
    let g = run.start(&[&GLUETUN]);
    let gip = ip(&g);
    let ns = format!("container:{g}");
    let engine = |env: &[&str], command: &[&str]| {
        let mut args = vec!["--network", ns.as_str(), "-e", "FAKE_STARTUP_MS=0"];
        for e in env {
            args.extend(["-e", e]);
        }
        args.push(&ENGINE);
        args.extend(command);
        run.start(&args)
    };

    // krinkuto11: env only; the command (and CONF) are ignored, the API port is the image's.
    let k = engine(
        &[
            "FAKE_ENGINE_PROFILE=krinkuto11",
            "HTTP_PORT=6891",
            "HTTPS_PORT=6892",
            "P2P_PORT=34821",
            "BIND_ALL=true",
            "CONF=--http-port=6899",
        ],
        &["--http-port", "6893", "--port", "34823", "--bind-all"],
    );
    let ka = format!("{gip}:6891");
    wait_http(&ka, "/webui/api/service?method=get_version");
    assert_eq!(
        get(&ka, "/testbed/ports").body,
        r#"{"p2p_port":34821,"http_port":6891,"https_port":6892,"api_port":62062}"#
    );
    let logs = wait_log(&k, "ignoring the container command");
    assert!(logs.contains("ignoring env CONF"), "{logs}");
    // Without BIND_ALL the krinkuto11 image serves on 127.0.0.1 only.
    let k2 = engine(
        &[
            "FAKE_ENGINE_PROFILE=krinkuto11",
            "HTTP_PORT=6894",
            "P2P_PORT=34824",
        ],
        &[],
    );
    wait_log(&k2, "http api on 127.0.0.1:6894");

    // jopsis: flags through ACESTREAM_ARGS and the image's CMD ...
    let j = engine(
        &[
            "FAKE_ENGINE_PROFILE=jopsis",
            "ACESTREAM_ARGS=--client-console --bind-all --http-port 6901 --https-port 6902 --api-port 6903 --port 34831",
        ],
        &[],
    );
    let ja = format!("{gip}:6901");
    wait_http(&ja, "/webui/api/service?method=get_version");
    assert_eq!(p2p_port(&ja), "34831");
    assert_eq!(inspect(&j, "{{.State.Status}}"), "running");
    // ... and a replaced command is no engine at all.
    let j2 = engine(
        &["FAKE_ENGINE_PROFILE=jopsis", "ACESTREAM_ARGS=--bind-all"],
        &["--http-port", "6904", "--port", "34834", "--bind-all"],
    );
    assert_eq!(wait_exit(&j2), 127);
    let logs = wait_log(&j2, "no engine");
    assert!(logs.contains("replaced the image's CMD"), "{logs}");

    // acestream: `python main.py <flags>`; bare flags are no program.
    let a = engine(
        &["FAKE_ENGINE_PROFILE=acestream"],
        &[
            "python",
            "main.py",
            "--http-port",
            "6911",
            "--api-port",
            "6913",
            "--bind-all",
            "--disable-sentry",
            "--log-stdout",
            "--disable-upnp",
            "--port",
            "34841",
        ],
    );
    let aa = format!("{gip}:6911");
    wait_http(&aa, "/webui/api/service?method=get_version");
    assert_eq!(p2p_port(&aa), "34841");
    assert_eq!(inspect(&a, "{{.State.Status}}"), "running");
    let a2 = engine(
        &["FAKE_ENGINE_PROFILE=acestream"],
        &["--http-port", "6914", "--port", "34844", "--bind-all"],
    );
    assert_eq!(wait_exit(&a2), 127);
    let logs = wait_log(&a2, "no engine");
    assert!(logs.contains("python main.py"), "{logs}");

    // An unknown profile is a settings error.
    let bad = engine(&["FAKE_ENGINE_PROFILE=linuxserver"], &[]);
    assert_eq!(wait_exit(&bad), 2);
}
