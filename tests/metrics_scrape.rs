//! `/metrics` after a scripted scenario (incident A, a genuine port change with one failed Docker
//! removal, streams on two engines): names, labels and values of the rendering, live Docker
//! latency included.

mod otlp;
mod tree;

use std::collections::BTreeMap;
use std::time::Duration;

use acevisor::actors::messages::SupervisorMsg;
use acevisor::config::OtlpProtocol;
use acevisor::runtime::DockerHealth;
use acevisor::runtime::memory::MemoryRuntime;
use otlp::{VPN1, VPN2, full};

/// The value of the sample `series` (name and labels exactly as rendered).
fn value(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_after_incident_a_and_a_port_change() {
    // The telemetry section is unused here: no subscriber is installed.
    let cfg = otlp::config("http://127.0.0.1:9", OtlpProtocol::Grpc);
    let mem = MemoryRuntime::new();
    mem.add_vpn(VPN1, 55747, Some(DockerHealth::Healthy));
    mem.add_vpn(VPN2, 40000, Some(DockerHealth::Healthy));
    let (tree, metrics) = otlp::start(&mem, cfg).await;
    let sec = Duration::from_secs(1);
    tree.wait("10 engines 5/5", 10 * sec, |s| {
        full(s, VPN1, 5, 55747) && full(s, VPN2, 5, 40000)
    })
    .await;

    let during = {
        mem.kill(VPN1);
        let s = tree
            .wait("emergency", 5 * sec, |s| s.engines_on(VPN1).is_empty())
            .await;
        acevisor::metrics::render(&metrics, &s)
    };
    assert_eq!(value(&during, "acevisor_emergency_active"), 1.0);
    assert_eq!(
        value(&during, "acevisor_emergency_state{state=\"emergency\"}"),
        1.0
    );
    assert_eq!(value(&during, "acevisor_vpn_up{vpn=\"gluetun\"}"), 0.0);
    assert_eq!(
        value(
            &during,
            "acevisor_vpn_readiness{vpn=\"gluetun\",state=\"down\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &during,
            "acevisor_forwarded_engine_present{vpn=\"gluetun\"}"
        ),
        0.0
    );
    assert_eq!(value(&during, "orch_vpn1_engines"), 0.0);

    mem.start(VPN1);
    mem.set_health(VPN1, DockerHealth::Healthy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    mem.set_port(VPN1, 34817);
    tree.wait("VPN1 full again", 10 * sec, |s| full(s, VPN1, 5, 34817))
        .await;

    // A genuine port change on VPN2; the old forwarded engine's first removal fails.
    mem.fail_next("remove", 1);
    mem.set_port(VPN2, 40001);
    let s = tree
        .wait("VPN2's forwarded engine replaced", 10 * sec, |s| {
            full(s, VPN2, 5, 40001) && full(s, VPN1, 5, 34817)
        })
        .await;
    let busy: Vec<String> = s.engines.iter().take(2).map(|e| e.name.clone()).collect();
    let counts: BTreeMap<String, u32> = [(busy[0].clone(), 2), (busy[1].clone(), 1)].into();
    tree.sup
        .cast(SupervisorMsg::StreamCounts(counts))
        .expect("supervisor takes stream counts");
    let s = tree
        .wait("stream counts applied", 5 * sec, |s| {
            s.engines.iter().map(|e| e.streams).sum::<u32>() == 3
        })
        .await;
    let text = acevisor::metrics::render(&metrics, &s);
    tree.stop().await;

    // Upstream names.
    assert_eq!(value(&text, "orch_healthy_engines"), 10.0);
    assert_eq!(value(&text, "orch_unhealthy_engines"), 0.0);
    assert_eq!(value(&text, "orch_used_engines"), 2.0);
    assert_eq!(value(&text, "orch_total_streams"), 3.0);
    assert_eq!(value(&text, "orch_vpn1_engines"), 5.0);
    assert_eq!(value(&text, "orch_vpn2_engines"), 5.0);

    // Engines, VPNs, emergency.
    for vpn in [VPN1, VPN2] {
        assert_eq!(
            value(
                &text,
                &format!("acevisor_engines{{vpn=\"{vpn}\",state=\"ready\"}}")
            ),
            5.0
        );
        assert_eq!(
            value(
                &text,
                &format!("acevisor_engines{{vpn=\"{vpn}\",state=\"removing\"}}")
            ),
            0.0
        );
        assert_eq!(
            value(
                &text,
                &format!("acevisor_forwarded_engine_present{{vpn=\"{vpn}\"}}")
            ),
            1.0
        );
        assert_eq!(
            value(&text, &format!("acevisor_vpn_up{{vpn=\"{vpn}\"}}")),
            1.0
        );
        assert_eq!(
            value(
                &text,
                &format!("acevisor_vpn_readiness{{vpn=\"{vpn}\",state=\"up\"}}")
            ),
            1.0
        );
    }
    assert_eq!(
        value(&text, "acevisor_vpn_forwarded_port{vpn=\"gluetun\"}"),
        34817.0
    );
    assert_eq!(
        value(&text, "acevisor_vpn_forwarded_port{vpn=\"gluetun_2\"}"),
        40001.0
    );
    assert_eq!(value(&text, "acevisor_emergency_active"), 0.0);
    assert_eq!(
        value(&text, "acevisor_emergency_state{state=\"normal\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "acevisor_emergency_transitions_total{to=\"emergency\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "acevisor_emergency_transitions_total{to=\"normal\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "acevisor_emergency_transitions_total{to=\"outage\"}"),
        0.0
    );

    // Decisions.
    assert_eq!(value(&text, "acevisor_vpn_failures_total"), 1.0);
    assert_eq!(value(&text, "acevisor_vpn_recoveries_total"), 1.0);
    assert_eq!(value(&text, "acevisor_port_changes_total"), 1.0);
    assert_eq!(
        value(
            &text,
            "acevisor_engines_removed_total{reason=\"vpn_failed\"}"
        ),
        5.0
    );
    assert_eq!(
        value(
            &text,
            "acevisor_engines_removed_total{reason=\"port_mismatch\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "acevisor_engines_removed_total{reason=\"unhealthy\"}"
        ),
        0.0
    );
    assert_eq!(value(&text, "acevisor_engines_created_total"), 16.0);
    assert_eq!(value(&text, "acevisor_restarts_suppressed_total"), 0.0);
    assert_eq!(
        value(&text, "acevisor_reconciles_total"),
        s.counters.reconciles as f64
    );
    assert_eq!(
        value(&text, "acevisor_reconcile_duration_seconds_count"),
        s.counters.reconcile_duration.count() as f64
    );
    assert!(s.counters.reconcile_duration.count() > 0);
    assert!(text.contains("# TYPE acevisor_reconcile_duration_seconds histogram"));
    assert!(text.contains("acevisor_reconcile_duration_seconds_bucket{le=\"+Inf\"}"));

    // Docker calls, measured live by the instrumented runtime.
    assert!(text.contains("# TYPE acevisor_docker_call_duration_seconds histogram"));
    assert_eq!(
        value(
            &text,
            "acevisor_docker_call_duration_seconds_count{op=\"create_container\",outcome=\"ok\"}"
        ),
        16.0
    );
    assert_eq!(
        value(
            &text,
            "acevisor_docker_call_duration_seconds_count{op=\"remove_container\",outcome=\"unreachable\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "acevisor_docker_call_duration_seconds_count{op=\"remove_container\",outcome=\"ok\"}"
        ),
        6.0
    );
    assert!(
        value(
            &text,
            "acevisor_docker_call_duration_seconds_count{op=\"inspect_container\",outcome=\"ok\"}"
        ) > 0.0
    );
    assert_eq!(
        value(&text, "acevisor_docker_event_stream_reconnects_total"),
        0.0
    );
    assert_eq!(value(&text, "acevisor_ready"), 1.0);
    assert_eq!(
        value(&text, "acevisor_creation_breaker{state=\"closed\"}"),
        1.0
    );
    assert_eq!(value(&text, "acevisor_pending_provisions"), 0.0);
    assert_eq!(value(&text, "acevisor_docker_reachable"), 1.0);
    assert!(text.ends_with("# EOF\n"));
}
