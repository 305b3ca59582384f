//! acevisor's engine presets on real Docker, each against the fake engine in the profile of the
//! preset's real image (`FAKE_ENGINE_PROFILE`: krinkuto11 reads env only, jopsis reads
//! `ACESTREAM_ARGS` through the image's own command, acestream runs `python main.py <flags>`),
//! so a preset that would not work against its image fails here. Each preset's engines become
//! ready, each binds the P2P port acevisor planned (the fake's `/testbed/ports`), the forwarded
//! one the VPN's port, and no engine was handed a setting its image ignores. Templates that are
//! wrong for their image never give a ready engine.

mod docker_world;
mod support;
mod tree;

use std::collections::BTreeMap;
use std::time::Duration;

use acevisor::actors::messages::SupervisorSnapshot;
use acevisor::config::{Config, EngineVariant};
use acevisor::core::model::EnginePhase;
use docker_world::{World, fake_engines_confirm};
use tree::full;

const MINUTE: Duration = Duration::from_secs(60);
const ENGINES: usize = 3;

/// `cfg` switched to `variant` with the fake engine image in `profile` (and its short startup).
fn preset_on_fake(mut cfg: Config, variant: EngineVariant, profile: &str) -> Config {
    cfg.engines.variant = variant;
    cfg.engines.image = Some(support::engine_image());
    cfg.engines.command = None;
    cfg.engines.env = BTreeMap::from([
        ("FAKE_ENGINE_PROFILE".to_string(), profile.to_string()),
        (
            "FAKE_STARTUP_MS".to_string(),
            support::FAKE_ENGINE_STARTUP_MS.to_string(),
        ),
    ]);
    cfg.validate().expect("the preset's config is valid");
    cfg
}

/// The fake's stderr of container `id`.
fn engine_log(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["logs", id])
        .output()
        .expect("docker logs");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn preset_runs_on_its_image_profile(variant: EngineVariant, profile: &str, port: u16) {
    let Some(w) = World::new(&[port], None).await else {
        return;
    };
    let cfg = preset_on_fake(w.config("single", ENGINES as u32, "", ""), variant, profile);
    let tree = w.acevisor(cfg, vec![None]).await;
    let s = tree
        .wait(
            &format!("{ENGINES} ready engines of preset {variant:?}, one forwarded on {port}"),
            MINUTE,
            |s| full(s, w.vpn(0), ENGINES, port),
        )
        .await;
    fake_engines_confirm(&s, w.vpn(0), port).await;
    let mut p2p: Vec<u16> = s.engines.iter().map(|e| e.p2p_port).collect();
    p2p.sort();
    p2p.dedup();
    assert_eq!(p2p.len(), ENGINES, "distinct P2P ports in one namespace");
    for e in &s.engines {
        let id = e.container_id.as_deref().expect("a container");
        let log = engine_log(id);
        assert!(
            log.contains(&format!(
                "fake-engine ({profile}): http api on 0.0.0.0:{}",
                e.http_port
            )),
            "{} runs as the {profile} image would, reachable from outside: {log}",
            e.name
        );
        assert!(
            !log.contains("ignoring"),
            "preset {variant:?} hands {} settings its image ignores: {log}",
            e.name
        );
    }
    tree.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krinkuto11_amd64_preset_on_the_krinkuto11_profile() {
    preset_runs_on_its_image_profile(EngineVariant::Krinkuto11Amd64, "krinkuto11", 36101).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jopsis_amd64_preset_on_the_jopsis_profile() {
    preset_runs_on_its_image_profile(EngineVariant::JopsisAmd64, "jopsis", 36201).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jopsis_arm32_preset_on_the_acestream_profile() {
    preset_runs_on_its_image_profile(EngineVariant::JopsisArm32, "acestream", 36301).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jopsis_arm64_preset_on_the_acestream_profile() {
    preset_runs_on_its_image_profile(EngineVariant::JopsisArm64, "acestream", 36401).await;
}

fn none_ready(s: &SupervisorSnapshot) -> bool {
    s.engines.iter().all(|e| e.phase != EnginePhase::Ready)
}

/// A custom template without `--bind-all`: the engines run, but their API answers on 127.0.0.1
/// inside the VPN's namespace only, so none ever becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_without_bind_all_never_gets_a_ready_engine() {
    let Some(w) = World::new(&[36501], None).await else {
        return;
    };
    let mut cfg = w.config("single", 1, "", "");
    let command = cfg
        .engines
        .command
        .as_mut()
        .expect("the world's custom command");
    command.retain(|item| item != "--bind-all");
    cfg.engines.ready_timeout = Duration::from_secs(2);
    let tree = w.acevisor(cfg, vec![None]).await;
    let s = tree
        .wait("the engine to miss its ready timeout", MINUTE, |s| {
            s.engines
                .iter()
                .any(|e| matches!(e.phase, EnginePhase::Unhealthy { .. }))
        })
        .await;
    assert!(none_ready(&s), "{s:#?}");
    let e = &s.engines[0];
    let id = e.container_id.as_deref().expect("a container");
    let log = engine_log(id);
    assert!(
        log.contains(&format!("http api on 127.0.0.1:{}", e.http_port)),
        "it runs, on loopback: {log}"
    );
    tree.stop().await;
}

/// A command given to the jopsis image replaces the command that starts its engine: the
/// container exits at once and no engine is ever ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_given_to_the_jopsis_image_starts_no_engine() {
    let Some(w) = World::new(&[36601], None).await else {
        return;
    };
    // What the old default config did: a fake-engine command with the jopsis image. Validation
    // refuses it for jopsis-amd64, so the image is run as `custom`, as a user could.
    let mut cfg = w.config("single", 1, "", "");
    cfg.engines
        .env
        .insert("FAKE_ENGINE_PROFILE".into(), "jopsis".into());
    let tree = w.acevisor(cfg, vec![None]).await;
    let s = tree
        .wait("the engine container to die or fail", MINUTE, |s| {
            s.counters.engines_lost + s.counters.create_failures >= 1
        })
        .await;
    assert!(none_ready(&s), "{s:#?}");
    let exited = support::docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={}", w.run.managed_label()),
        "--format",
        "{{.Status}}",
    ]);
    assert!(
        exited.is_empty() || exited.contains("Exited (127)"),
        "engines gone or exited 127: {exited}"
    );
    tree.stop().await;
}
