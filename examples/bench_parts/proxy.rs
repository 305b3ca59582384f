//! The built-in stream proxy's figures (issue 14), against real Docker and the fake engine's
//! MPEG-TS at its default 4 Mbit/s:
//! - `failover-gap`: a viewer reads at the stream's rate; the VPN of the session's engine is
//!   `docker kill`ed; the viewer's longest wait between two chunks around the kill (the last byte
//!   of the old engine to the first of the new), with an idle engine ready on the other VPN.
//!   Baseline: the longest wait between chunks while nothing happens.
//! - `fanout-200`: one content to 200 loopback viewers through the acevisor binary: CPU (% of one
//!   core) per Gbit/s delivered, and the RSS growth from no stream to 200 viewers. Baseline: a
//!   plain relay process (this program with `--relay`: one upstream read, raw TCP fan-out through
//!   bounded queues), measured the same way.
//! - `time-to-first-byte`: a new viewer's request to its first TS byte with an idle ready engine;
//!   baseline: the engine's own (its `getstream` then the first byte of its `playback_url`).

use super::*;

use std::sync::atomic::AtomicU64;
use tokio::io::AsyncWriteExt;

/// A random 40-hex content id.
fn content_id(n: usize) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:040x}", t ^ ((n as u128) << 64))
}

/// The in-process tree with its API (and so the stream proxy) on a free loopback port.
async fn tree_with_api(cfg: Config) -> (Tree, String, tokio::sync::oneshot::Sender<()>) {
    let api_cfg = cfg.clone();
    let tree = Tree::start(cfg).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = acevisor::api::launch_with_key(&api_cfg, tree.sup.clone(), None, async move {
        let _ = stopped.await;
    })
    .await
    .expect("API starts");
    (tree, format!("http://{}", running.local_addr), stop)
}

/// The engine (name, VPN) the proxy has reserved, if one.
fn reserved(s: &SupervisorSnapshot) -> Option<(String, Option<String>)> {
    s.engines
        .iter()
        .find(|e| e.reserved > 0)
        .map(|e| (e.name.clone(), e.vpn.clone()))
}

/// A ready idle engine on a VPN other than `not_vpn`, that VPN up and not failed.
fn idle_elsewhere(s: &SupervisorSnapshot, not_vpn: &str) -> bool {
    s.engines.iter().any(|e| {
        e.phase == EnginePhase::Ready
            && e.reserved == 0
            && e.streams == 0
            && e.vpn.as_deref().is_some_and(|v| {
                v != not_vpn
                    && s.vpns
                        .iter()
                        .any(|x| x.name() == v && x.connected && !x.lane.failed)
            })
    })
}

/// Chunk arrival times of a viewer reading `url` to its end.
fn viewer(
    url: String,
) -> (
    Arc<std::sync::Mutex<Vec<Instant>>>,
    tokio::task::JoinHandle<()>,
) {
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t = times.clone();
    let task = tokio::spawn(async move {
        let mut r = reqwest::get(&url).await.expect("viewer request");
        assert_eq!(r.status(), 200, "viewer of {url}");
        while let Ok(Some(_)) = r.chunk().await {
            t.lock().unwrap().push(Instant::now());
        }
    });
    (times, task)
}

fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> Option<f64> {
    times
        .windows(2)
        .filter(|w| w[1] >= from && w[0] <= to)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .max_by(|a, b| a.total_cmp(b))
}

pub async fn failover_gap(reps: usize) -> Row {
    let run = Run::new();
    let v1 = run.start_gluetun("vpn1", 34101);
    let v2 = run.start_gluetun("vpn2", 35101);
    let text = run.config_text(
        "redundant",
        2,
        &[(v1.clone(), 25100), (v2.clone(), 26100)],
        "",
    );
    let mut cfg = config(&text);
    cfg.engines.max_replicas = 4;
    let (tree, base, stop) = tree_with_api(cfg).await;
    let t0 = Instant::now();
    tree.until(
        "1 engine on each VPN",
        t0,
        Duration::from_secs(120),
        Duration::from_millis(200),
        |s| idle_elsewhere(s, &v1) && idle_elsewhere(s, &v2),
    )
    .await;
    let id = content_id(0);
    let (times, task) = viewer(format!("{base}/ace/getstream?id={id}"));
    let mut gaps = Vec::new();
    let mut quiet = Vec::new();
    for rep in 0..reps {
        // The session's VPN, and an idle engine ready on the other one.
        let (_, vpn) = loop {
            let s = tree.snap().await;
            if let Some((e, Some(v))) = reserved(&s)
                && idle_elsewhere(&s, &v)
            {
                break (e, v);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // A quiet second first: the longest wait between chunks while nothing happens.
        let q0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        quiet.extend(longest_gap(&times.lock().unwrap(), q0, Instant::now()));
        let killed = Instant::now();
        docker_ok(&["kill", &vpn]);
        tree.until(
            "moved",
            killed,
            Duration::from_secs(60),
            Duration::from_millis(100),
            |s| reserved(s).is_some_and(|(_, v)| v.as_deref() != Some(vpn.as_str())),
        )
        .await;
        // Bytes flow again for a second: the gap is behind us.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let gap = longest_gap(&times.lock().unwrap(), killed, Instant::now())
            .expect("chunks around the kill");
        eprintln!("  rep {rep}: gap {gap:.0} ms after killing {vpn}");
        gaps.push(gap);
        assert!(!task.is_finished(), "the viewer's response ended");
        docker_ok(&["start", &vpn]);
    }
    task.abort();
    let _ = stop.send(());
    tree.stop().await;
    run.remove_engines();
    let baseline = median(&quiet);
    Row {
        figure: "failover-gap".into(),
        samples: gaps,
        baseline,
        target: "< 1500 ms (idle engine on the healthy VPN; baseline: longest wait between chunks with no failover)".into(),
        unit: "ms",
    }
}

pub async fn time_to_first_byte(reps: usize) -> Row {
    let run = Run::new();
    let v1 = run.start_gluetun("vpn1", 34201);
    let text = run.config_text(
        "single",
        1,
        &[(v1.clone(), 25200)],
        "[proxy]\nlinger = \"200ms\"\n",
    );
    let (tree, base, stop) = tree_with_api(config(&text)).await;
    let t0 = Instant::now();
    let s = tree
        .until(
            "an engine ready",
            t0,
            Duration::from_secs(120),
            Duration::from_millis(200),
            |s| s.engines.iter().any(|e| e.phase == EnginePhase::Ready),
        )
        .await;
    let _ = s;
    let snap = tree.snap().await;
    let e = snap
        .engines
        .iter()
        .find(|e| e.phase == EnginePhase::Ready)
        .expect("ready engine")
        .clone();
    let engine_base = format!(
        "http://{}:{}",
        e.host.clone().expect("engine host"),
        e.http_port
    );
    let http = reqwest::Client::new();
    let mut via = Vec::new();
    let mut direct = Vec::new();
    for rep in 0..reps + 1 {
        // The engine's own first byte.
        let id = content_id(2 * rep);
        let t = Instant::now();
        let (url, cmd) = engine_playback(&http, &engine_base, &id).await;
        let mut r = http.get(&url).send().await.expect("playback");
        r.chunk().await.expect("first byte").expect("a chunk");
        let own = t.elapsed().as_secs_f64() * 1000.0;
        drop(r);
        let _ = http.get(format!("{cmd}?method=stop")).send().await;
        // Through acevisor, the engine idle and ready.
        let id = content_id(2 * rep + 1);
        let t = Instant::now();
        let mut r = http
            .get(format!("{base}/ace/getstream?id={id}"))
            .send()
            .await
            .expect("proxy request");
        r.chunk().await.expect("first byte").expect("a chunk");
        let proxied = t.elapsed().as_secs_f64() * 1000.0;
        drop(r);
        // The first round warms connections up; it is not counted.
        if rep > 0 {
            direct.push(own);
            via.push(proxied);
        }
        tree.until(
            "released",
            Instant::now(),
            Duration::from_secs(30),
            Duration::from_millis(50),
            |s| reserved(s).is_none(),
        )
        .await;
    }
    let _ = stop.send(());
    tree.stop().await;
    run.remove_engines();
    let own = median(&direct);
    Row {
        figure: "time-to-first-byte".into(),
        samples: via,
        baseline: own,
        target: "< engine's own + 10 ms (baseline: the engine's own getstream + first byte)".into(),
        unit: "ms",
    }
}

/// Viewers of `url`, counting bytes read; each reads to its end.
fn viewers(url: &str, n: usize, bytes: &Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (url, bytes) = (url.to_string(), bytes.clone());
            tokio::spawn(async move {
                let Ok(mut r) = reqwest::get(&url).await else {
                    return;
                };
                while let Ok(Some(c)) = r.chunk().await {
                    bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// CPU % of one core per Gbit/s delivered, per slice, and the RSS growth (MiB) from `rss0`.
async fn measure(pid: u32, bytes: &Arc<AtomicU64>, window: Duration, rss0: f64) -> (Vec<f64>, f64) {
    let ticks = clock_ticks();
    let slices = 5u32;
    let mut per_gbps = Vec::new();
    for _ in 0..slices {
        let c0 = proc_cpu_ticks(pid).expect("stat");
        let b0 = bytes.load(Ordering::Relaxed);
        let w0 = Instant::now();
        tokio::time::sleep(window / slices).await;
        let secs = w0.elapsed().as_secs_f64();
        let cpu = (proc_cpu_ticks(pid).expect("stat") - c0) as f64 / ticks / secs * 100.0;
        let gbps = (bytes.load(Ordering::Relaxed) - b0) as f64 * 8.0 / secs / 1e9;
        eprintln!("    {cpu:.1} % of a core at {:.0} Mbit/s", gbps * 1000.0);
        per_gbps.push(cpu / gbps.max(1e-9));
    }
    let rss = proc_status_kib(pid, "VmRSS:").expect("status") / 1024.0;
    (per_gbps, rss - rss0)
}

pub async fn fanout(binary: &PathBuf, n: usize, window: Duration) -> Vec<Row> {
    let run = Run::new();
    let v1 = run.start_gluetun("vpn1", 34301);
    let port = free_port();
    let text = run
        .config_text("single", 1, &[(v1.clone(), 25300)], "")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
    let (child, dir) = start_daemon(binary, &run, &text);
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    // An engine ready (listed by the API).
    let engine = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no engine; see {}",
            dir.display()
        );
        if let Ok(r) = http.get(format!("{base}/engines")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && let Some(e) = v.as_array().and_then(|a| a.first()).cloned()
        {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = proc_status_kib(pid, "VmRSS:").expect("status") / 1024.0;

    eprintln!("  acevisor: {n} viewers");
    let bytes = Arc::new(AtomicU64::new(0));
    let id = content_id(0);
    let tasks = viewers(&format!("{base}/ace/getstream?id={id}"), n, &bytes);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acevisor_cpu, acevisor_rss) = measure(pid, &bytes, window, rss0).await;
    tasks.iter().for_each(|t| t.abort());
    drop(child);

    // The baseline: a plain relay of a playback of the same engine.
    let engine_base = format!(
        "http://{}:{}",
        engine["host"].as_str().expect("host"),
        engine["port"].as_u64().expect("port")
    );
    let (upstream, _) = engine_playback(&http, &engine_base, &content_id(1)).await;
    let relay_port = free_port();
    let me = std::env::current_exe().expect("own path");
    let relay = KillOnDrop(
        Command::new(me)
            .args(["--relay", &upstream, &relay_port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("relay starts"),
    );
    let relay_pid = relay.0.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let relay_rss0 = proc_status_kib(relay_pid, "VmRSS:").expect("status") / 1024.0;
    eprintln!("  plain relay: {n} viewers");
    let relay_bytes = Arc::new(AtomicU64::new(0));
    let tasks = viewers(&format!("http://127.0.0.1:{relay_port}/"), n, &relay_bytes);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (relay_cpu, relay_rss) = measure(relay_pid, &relay_bytes, window, relay_rss0).await;
    tasks.iter().for_each(|t| t.abort());
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
    run.remove_engines();
    vec![
        Row {
            figure: format!("fanout-{n}-cpu"),
            samples: acevisor_cpu,
            baseline: median(&relay_cpu),
            target: format!(
                "< 25 %/Gbit/s ({n} viewers of one 4 Mbit/s stream; baseline: a plain relay process)"
            ),
            unit: "% of a core per Gbit/s",
        },
        Row {
            figure: format!("fanout-{n}-rss-growth"),
            samples: vec![acevisor_rss],
            baseline: Some(relay_rss),
            target: format!("< 20 MiB (no stream -> {n} viewers; baseline: the plain relay's)"),
            unit: "MiB",
        },
    ]
}

/// `bench --relay <upstream URL> <port>`: reads the upstream once and copies it to every client
/// of 127.0.0.1:<port> (an HTTP/1.0-style response, raw bytes), each through a bounded queue.
pub fn relay(upstream: &str, port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let clients: Arc<std::sync::Mutex<Vec<tokio::sync::mpsc::Sender<axum::body::Bytes>>>> =
            Arc::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("relay binds");
        let c = clients.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(1024);
                c.lock().unwrap().push(tx);
                tokio::spawn(async move {
                    let mut head = [0u8; 1024];
                    let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut head).await;
                    if sock
                        .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    while let Some(b) = rx.recv().await {
                        if sock.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut r = reqwest::get(upstream).await.expect("upstream");
        while let Ok(Some(chunk)) = r.chunk().await {
            clients
                .lock()
                .unwrap()
                .retain(|tx| tx.try_send(chunk.clone()).is_ok());
        }
    });
}

/// Asks the engine at `engine_base` itself to play `id`: its `(playback_url, command_url)`.
async fn engine_playback(http: &reqwest::Client, engine_base: &str, id: &str) -> (String, String) {
    let v: serde_json::Value = http
        .get(format!("{engine_base}/ace/getstream?id={id}&format=json"))
        .send()
        .await
        .expect("engine getstream")
        .json()
        .await
        .expect("engine JSON");
    let field = |k: &str| v["response"][k].as_str().unwrap_or_default().to_string();
    let url = field("playback_url");
    assert!(!url.is_empty(), "the engine gave no playback_url: {v}");
    (url, field("command_url"))
}
