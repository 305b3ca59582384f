//! The dashboard in a real browser (headless chromium over WebDriver) against the real actor
//! tree on real Docker with two fake Gluetuns and the API key set: the page lists both VPNs and
//! every engine, as `/engines` and `/vpn/status` do; `docker kill` of a VPN shows the emergency
//! banner within 2 s and its engines leave the table; after its recovery on a new port the banner
//! goes and the forwarded engine shows the new port; the console stays free of errors.
//! Screenshots at 1280 px and 375 px go to the artefacts directory.

mod browser;
mod docker_world;
mod support;
mod tree;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use browser::{Browser, Session, artifacts_dir};
use docker_world::World;
use serde_json::Value;
use tree::full;

const SEC: Duration = Duration::from_secs(1);
const KEY: &str = "dashboard-key";

/// What the page shows, read from its stable hooks.
const READ_PAGE: &str = r#"
const rows = Array.from(document.querySelectorAll('[data-testid=engine-row]')).map(r => ({
  name: r.dataset.name, vpn: r.dataset.vpn, state: r.dataset.state,
  forwarded: r.dataset.forwarded === 'true', p2p: Number(r.dataset.p2p) }));
const cards = Array.from(document.querySelectorAll('[data-testid=vpn-card]')).map(c => ({
  name: c.dataset.name, status: c.dataset.status, port: c.dataset.port,
  public_ip: c.querySelector('[data-testid=public-ip]').textContent }));
const banner = document.querySelector('[data-testid=emergency-banner]');
return { rows, cards, banner: banner ? banner.textContent : null,
         generated: document.body.dataset.generatedAt || null };
"#;

async fn page(s: &Session) -> Value {
    s.eval(READ_PAGE).await
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    http.get(format!("{base}{path}"))
        .send()
        .await
        .expect("API answers")
        .json()
        .await
        .expect("JSON")
}

fn set(v: &Value, f: impl Fn(&Value) -> Option<String>) -> BTreeSet<String> {
    v.as_array().unwrap().iter().filter_map(f).collect()
}

fn engine_key(e: &Value) -> Option<String> {
    Some(format!(
        "{} {} {}",
        e["container_name"].as_str()?,
        e["vpn_container"].as_str()?,
        e["p2p_port"]
    ))
}

/// The page's listed engines and VPN cards equal `/engines` and `/vpn/status` read around it.
async fn agrees_with_routes(s: &Session, http: &reqwest::Client, base: &str) -> bool {
    let engines = get(http, base, "/engines").await;
    let vpn = get(http, base, "/vpn/status").await;
    let p = page(s).await;
    let engines_after = get(http, base, "/engines").await;
    let listed = set(&p["rows"], |r| {
        if !matches!(r["state"].as_str(), Some("ready" | "unhealthy")) {
            return None;
        }
        Some(format!(
            "{} {} {}",
            r["name"].as_str()?,
            r["vpn"].as_str()?,
            r["p2p"]
        ))
    });
    let api = set(&engines, engine_key);
    if api != set(&engines_after, engine_key) {
        return false; // the pool moved meanwhile: look again
    }
    let cards = set(&p["cards"], |c| {
        Some(format!(
            "{} {} {} {}",
            c["name"].as_str()?,
            c["status"].as_str()?,
            c["port"].as_str()?,
            c["public_ip"].as_str()?
        ))
    });
    let vpns = set(&vpn["vpns"], |v| {
        Some(format!(
            "{} {} {} {}",
            v["container_name"].as_str()?,
            v["status"].as_str()?,
            v["forwarded_port"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            v["public_ip"].as_str().unwrap_or("—")
        ))
    });
    let ok = listed == api && cards == vpns && !api.is_empty();
    if !ok {
        eprintln!("not yet: page {listed:?} {cards:?}, routes {api:?} {vpns:?}");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_a_vpn_failure_and_recovery_in_a_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let Some(w) = World::new(&[55747, 40000], None).await else {
        return;
    };
    let mut cfg = w.config("redundant", 4, "", "");
    cfg.api.listen = "127.0.0.1:0".into();
    cfg.telemetry.trace_ui_url = Some("http://jaeger:16686/trace/{trace_id}".into());
    let api_cfg = cfg.clone();
    let tree = w.acevisor(cfg, vec![None, None]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running =
        acevisor::api::launch_with_key(&api_cfg, tree.sup.clone(), Some(KEY.into()), async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .expect("API starts");
    let base = format!("http://{}", running.local_addr);
    let http = reqwest::Client::new();
    let (vpn1, vpn2) = (w.vpn(0).to_string(), w.vpn(1).to_string());
    tree.wait("2 engines per VPN", 2 * 60 * SEC, |s| {
        full(s, &vpn1, 2, 55747) && full(s, &vpn2, 2, 40000)
    })
    .await;

    let desk = browser.session(1280, 1000, false).await;
    let phone = browser.session(375, 812, true).await;
    desk.goto(&format!("{base}/")).await;
    phone.goto(&format!("{base}/ui")).await;
    support::wait_until(
        20 * SEC,
        "the page lists both VPNs and every engine, as the routes do",
        || agrees_with_routes(&desk, &http, &base),
    )
    .await;
    // Each VPN card shows the tunnel's exit address the fake Gluetun reports, as /vpn/status does.
    support::wait_until(20 * SEC, "both cards show the VPNs' public IP", || async {
        let cards = page(&desk).await["cards"].clone();
        let shown = cards
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["public_ip"] == "203.0.113.7"));
        shown && agrees_with_routes(&desk, &http, &base).await
    })
    .await;
    let p = page(&desk).await;
    assert_eq!(p["cards"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!(p["rows"].as_array().unwrap().len(), 4, "{p}");
    assert!(p["banner"].is_null(), "no emergency yet: {p}");
    // The same on the phone, with no horizontal overflow of the page itself.
    support::wait_until(20 * SEC, "the phone page shows both VPNs", || async {
        page(&phone).await["cards"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    })
    .await;
    let overflow = phone
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert_eq!(overflow, 0, "the page scrolls sideways at 375 px");
    let dir = artifacts_dir();
    desk.full_screenshot(&dir.join("dashboard-1280-normal.png"))
        .await;
    phone
        .full_screenshot(&dir.join("dashboard-375-normal.png"))
        .await;

    // Kill VPN 1: the banner within 2 s, naming it; its engines leave the table.
    let killed = Instant::now();
    support::docker_kill(&vpn1);
    let banner = support::wait_for(2 * SEC, "the emergency banner within 2 s", || async {
        page(&desk).await["banner"].as_str().map(str::to_string)
    })
    .await;
    eprintln!("emergency banner after {:?}", killed.elapsed());
    assert!(
        banner.contains(&vpn1),
        "the banner names the failed VPN: {banner}"
    );
    support::wait_until(
        30 * SEC,
        "the failed VPN's engines leave the table",
        || async {
            let p = page(&desk).await;
            let rows = p["rows"].as_array().unwrap().clone();
            rows.iter().all(|r| r["vpn"] != vpn1.as_str())
                && rows.iter().filter(|r| r["vpn"] == vpn2.as_str()).count() >= 2
                && p["cards"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["name"] == vpn1.as_str() && c["status"] == "down")
        },
    )
    .await;
    support::wait_until(
        20 * SEC,
        "the page agrees with the routes in the emergency",
        || agrees_with_routes(&desk, &http, &base),
    )
    .await;
    support::wait_until(20 * SEC, "the phone shows the banner", || async {
        !page(&phone).await["banner"].is_null()
    })
    .await;
    desk.full_screenshot(&dir.join("dashboard-1280-emergency.png"))
        .await;
    desk.screenshot(&dir.join("dashboard-1280-emergency-viewport.png"))
        .await;
    phone
        .full_screenshot(&dir.join("dashboard-375-emergency.png"))
        .await;

    // Back on a new port: the banner goes, the forwarded engine shows the new port.
    support::docker_ok(&["start", &vpn1]);
    w.set_port(0, 34817).await;
    support::wait_until(
        60 * SEC,
        "banner gone and the forwarded engine on 34817",
        || async {
            let p = page(&desk).await;
            p["banner"].is_null()
                && p["rows"].as_array().unwrap().iter().any(|r| {
                    r["vpn"] == vpn1.as_str()
                        && r["forwarded"] == true
                        && r["p2p"] == 34817
                        && r["state"] == "ready"
                })
        },
    )
    .await;
    support::wait_until(
        60 * SEC,
        "the page agrees with the routes after recovery",
        || agrees_with_routes(&desk, &http, &base),
    )
    .await;
    let kinds = desk
        .eval("return Array.from(document.querySelectorAll('[data-testid=incident-row]')).map(r => r.dataset.kind);")
        .await;
    for kind in [
        "vpn_failed",
        "emergency_entered",
        "vpn_recovered",
        "emergency_exited",
    ] {
        assert!(
            kinds.as_array().unwrap().iter().any(|k| k == kind),
            "the incidents list {kind}: {kinds}"
        );
    }
    desk.full_screenshot(&dir.join("dashboard-1280-recovered.png"))
        .await;
    phone
        .full_screenshot(&dir.join("dashboard-375-recovered.png"))
        .await;

    // Keyboard: the skip link is the first stop and leads to the content.
    let first = desk
        .eval("document.activeElement.blur(); return document.querySelector('a.skip').textContent;")
        .await;
    assert_eq!(first, "Skip to content");
    let focusable = desk
        .eval("return document.querySelectorAll('.scroll[tabindex=\"0\"]').length;")
        .await;
    assert_eq!(focusable, 3, "each table scrolls from the keyboard");

    for (who, s) in [("desktop", &desk), ("phone", &phone)] {
        let errors: Vec<_> = s
            .console()
            .await
            .into_iter()
            .filter(|(level, _)| level == "SEVERE")
            .collect();
        assert!(errors.is_empty(), "{who} console errors: {errors:?}");
    }
    let timing = desk
        .eval("const n = performance.getEntriesByType('navigation')[0]; return n ? Math.round(n.domContentLoadedEventEnd) : null;")
        .await;
    eprintln!(
        "dashboard DOMContentLoaded after {timing} ms; screenshots in {}",
        dir.display()
    );
    desk.close().await;
    phone.close().await;
    let _ = stop.send(true);
    tree.stop().await;
}
