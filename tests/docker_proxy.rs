//! The built-in stream proxy (`GET /ace/getstream`) over a real acevisor against real Docker and
//! the fake engine's continuous MPEG-TS: viewers of one content share one engine, different
//! contents get different engines, capacity answers a clear 503, a VPN killed mid-stream leaves
//! the viewer's response open with bytes flowing again from an engine on the other VPN, and the
//! last viewer leaving releases the engine after the linger. The VPN's failure moves the session
//! at once (not after a stall: `stall_timeout` is longer than the test waits), and the incident's
//! trace, received by an in-process OTLP receiver, holds the session's `stream.failover` span.
//! `/streams` shows the session's viewers, bytes delivered and failovers.

mod docker_world;
mod otlp;
mod support;
mod tree;

use std::time::Duration;

use acevisor::actors::messages::SupervisorSnapshot;
use docker_world::World;
use serde_json::Value;
use tree::full;

const SEC: Duration = Duration::from_secs(1);
const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

/// Engines the proxy has reserved, by name.
fn reserved(s: &SupervisorSnapshot) -> Vec<(String, Option<String>)> {
    s.engines
        .iter()
        .filter(|e| e.reserved > 0)
        .map(|e| (e.name.clone(), e.vpn.clone()))
        .collect()
}

/// The `/streams` record of a proxy session of `content`, when started.
async fn record(http: &reqwest::Client, base: &str, content: &str) -> Option<Value> {
    let all: Value = http
        .get(format!("{base}/streams?status=started"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    all.as_array()?
        .iter()
        .find(|s| s["id"] == format!("proxy:id:{content}"))
        .cloned()
}

/// Reads at least `n` bytes of the response within `within`.
async fn read_bytes(r: &mut reqwest::Response, n: usize, within: Duration) -> usize {
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + within;
    while got < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, r.chunk()).await {
            Ok(Ok(Some(c))) => got += c.len(),
            Ok(Ok(None)) => panic!("the viewer's response ended after {got} bytes"),
            Ok(Err(e)) => panic!("the viewer's response failed after {got} bytes: {e}"),
            Err(_) => panic!("only {got} of {n} bytes within {within:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_engine_capacity_failover_and_linger() {
    let Some(w) = World::new(&[55747, 40000], None).await else {
        return;
    };
    // Spans go to an in-process OTLP receiver (the only test of this binary: a global subscriber).
    let (endpoint, received, receiver) = otlp::grpc_receiver().await;
    let mut cfg = w.config("redundant", 2, "", "");
    cfg.telemetry.otlp_endpoint = Some(endpoint);
    cfg.telemetry.otlp_protocol = Some(acevisor::config::OtlpProtocol::Grpc);
    let (subscriber, telemetry, problems) = acevisor::telemetry::build(&cfg, |_| None);
    assert!(problems.is_empty(), "{problems:?}");
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    cfg.engines.max_replicas = 2;
    cfg.api.listen = "127.0.0.1:0".into();
    cfg.proxy.linger = SEC;
    cfg.proxy.start_timeout = 3 * SEC;
    // Longer than the test waits for the move: only the Supervisor's notice can move it.
    cfg.proxy.stall_timeout = 120 * SEC;
    cfg.proxy.failover_timeout = 60 * SEC;
    let api_cfg = cfg.clone();
    let tree = w.acevisor(cfg, vec![None, None]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = acevisor::api::launch_with_key(&api_cfg, tree.sup.clone(), None, async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    })
    .await
    .expect("API starts");
    let base = format!("http://{}", running.local_addr);
    tree.wait("1 engine on each VPN", 60 * SEC, |s| {
        full(s, w.vpn(0), 1, 55747) && full(s, w.vpn(1), 1, 40000)
    })
    .await;
    let http = reqwest::Client::new();
    let open = |id: &str| http.get(format!("{base}/ace/getstream?id={id}")).send();

    // Bad input: a precise 422, no engine touched.
    let bad = open("not-hex").await.unwrap();
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.unwrap();
    assert!(body["detail"].to_string().contains("40"), "{body}");

    // Two viewers of A share one engine.
    let mut a1 = open(A).await.unwrap();
    assert_eq!(a1.status(), 200);
    assert_eq!(a1.headers()["content-type"], "video/mp2t");
    let mut a2 = open(A).await.unwrap();
    assert_eq!(a2.status(), 200);
    read_bytes(&mut a1, 20_000, 20 * SEC).await;
    // A1 reads on like a player: bytes counted, and how its response ended, if it did.
    let a1_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = a1_bytes.clone();
    let a1 = tokio::spawn(async move {
        loop {
            match a1.chunk().await {
                Ok(Some(c)) => {
                    counted.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(None) => return "ended".to_string(),
                Err(e) => return format!("failed: {e}"),
            }
        }
    });
    let a1_read = || a1_bytes.load(std::sync::atomic::Ordering::Relaxed);
    read_bytes(&mut a2, 20_000, 20 * SEC).await;
    let s = tree.snap().await;
    let on_a = reserved(&s);
    assert_eq!(on_a.len(), 1, "one engine for both viewers: {on_a:?}");
    // One record of truth: the session is in /streams like an external proxy's stream.
    let rec = record(&http, &base, A)
        .await
        .expect("A's session in /streams");
    assert_eq!(rec["container_name"], on_a[0].0, "{rec}");
    assert_eq!(rec["labels"]["source"], "acevisor-proxy", "{rec}");

    // B lands on the other engine, never on A's.
    let mut b1 = open(B).await.unwrap();
    assert_eq!(b1.status(), 200);
    read_bytes(&mut b1, 10_000, 20 * SEC).await;
    let both = reserved(&tree.snap().await);
    assert_eq!(both.len(), 2, "two contents, two engines: {both:?}");

    // At capacity (max_replicas = 2, both reserved): a clear 503 with Retry-After.
    let c = open(C).await.unwrap();
    assert_eq!(c.status(), 503);
    assert!(c.headers().contains_key("retry-after"));
    let body: Value = c.json().await.unwrap();
    assert_eq!(body["detail"]["code"], "no_engine", "{body}");

    // B's viewer leaves: after the linger its engine is released.
    drop(b1);
    tree.wait("B released after the linger", 20 * SEC, |s| {
        reserved(s).len() == 1
    })
    .await;

    // A's VPN is killed mid-stream: the same response goes on, from the other VPN's engine.
    drop(a2);
    let (a_engine, a_vpn) = on_a[0].clone();
    let a_vpn = a_vpn.expect("engines sit behind a VPN");
    support::docker_kill(&a_vpn);
    tree.wait("A moved to the other VPN", 60 * SEC, |s| {
        let r = reserved(s);
        r.len() == 1 && r[0].0 != a_engine && r[0].1.as_deref() != Some(a_vpn.as_str())
    })
    .await;
    // The session measured the gap once the new engine's first bytes came, and they reach A1.
    let scrape = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    support::wait_until(30 * SEC, "the new engine's first bytes", || async {
        scrape()
            .await
            .lines()
            .any(|l| l == "acevisor_proxy_failover_gaps_total 1")
    })
    .await;
    let before = a1_read();
    support::wait_until(
        30 * SEC,
        "bytes from the new engine reach the viewer",
        || async { a1_read() >= before + 100_000 },
    )
    .await;
    assert!(
        !a1.is_finished(),
        "A1's response went on through the failover"
    );
    let moved = tree.snap().await;
    let rec = record(&http, &base, A)
        .await
        .expect("A's session still in /streams");
    assert_eq!(rec["container_name"], reserved(&moved)[0].0, "{rec}");
    assert_eq!(rec["labels"]["failovers"], "1", "{rec}");
    assert_eq!(rec["failovers"], 1, "{rec}");
    assert_eq!(rec["viewers"], 1, "{rec}");
    assert!(rec["bytes_delivered"].as_u64().unwrap() >= 100_000, "{rec}");
    let metrics = scrape().await;
    for line in [
        "acevisor_proxy_sessions 1",
        "acevisor_proxy_viewers 1",
        "acevisor_proxy_failovers_total 1",
        "acevisor_proxy_failover_gaps_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // The last viewer leaves: the engine is released after the linger.
    a1.abort();
    tree.wait("all released", 20 * SEC, |s| reserved(s).is_empty())
        .await;

    let _ = stop.send(true);
    tree.stop().await;

    // The VPN's incident trace holds the session's move: from the old engine to the new one.
    telemetry.shutdown().await;
    receiver.abort();
    let spans = received.spans();
    let failed = spans
        .iter()
        .find(|s| s.name == "vpn.failed" && s.attr("vpn") == Some(a_vpn.as_str()))
        .unwrap_or_else(|| panic!("no vpn.failed span of {a_vpn}"));
    let moves: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "stream.failover")
        .collect();
    assert_eq!(moves.len(), 1, "{moves:#?}");
    let m = moves[0];
    assert_eq!(m.trace, failed.trace, "in the incident's trace: {m:#?}");
    assert_eq!(m.parent, failed.id, "a child of vpn.failed: {m:#?}");
    assert_eq!(m.attr("cause"), Some("engine_unhealthy"), "{m:#?}");
    assert_eq!(m.attr("from"), Some(a_engine.as_str()));
    assert_eq!(m.attr("to"), Some(reserved(&moved)[0].0.as_str()));
    assert_eq!(m.attr("outcome"), Some("moved"));
    assert!(m.attr("gap_ms").is_some(), "{m:#?}");
}
