//! Every engine preset, rendered as acevisor renders it, handed to the fake engine's settings
//! logic in each image profile (no Docker): only the profile of the preset's own image starts an
//! engine with the ports acevisor planned, reachable from outside (`--bind-all`), ignoring
//! nothing. The same fake runs in the images (`tests/docker_engine_profiles.rs` on real Docker).

use std::collections::BTreeMap;

use acevisor::config::{EngineVariant, EnginesConfig};
use acevisor::core::ports::EnginePorts;
use acevisor::core::template::render;
use acevisor_testbed::engine::config::{IMAGE_DEFAULT_CMD, Launch, launch};

const PRESETS: [(EngineVariant, &str); 4] = [
    (EngineVariant::Krinkuto11Amd64, "krinkuto11"),
    (EngineVariant::JopsisAmd64, "jopsis"),
    (EngineVariant::JopsisArm32, "acestream"),
    (EngineVariant::JopsisArm64, "acestream"),
];
/// The image profiles (no profile at all is the lenient flags mode, no image).
const PROFILES: [&str; 3] = ["krinkuto11", "jopsis", "acestream"];

const PORTS: EnginePorts = EnginePorts {
    http: 19004,
    https: 19005,
    api: 19006,
    p2p: 34817,
};

/// What the fake engine makes of `variant`'s preset when its image runs in `profile`.
fn launch_preset(variant: EngineVariant, profile: &str) -> Launch {
    let cfg = EnginesConfig {
        variant,
        image: Some("acevisor-testbed/engine:dev".into()),
        ..EnginesConfig::default()
    };
    let (command, mut env) = render(&cfg.template(), "acestream-2", &PORTS);
    env.insert("FAKE_ENGINE_PROFILE".into(), profile.into());
    // Docker runs the image's own command (the fake's sentinel CMD) when none is given.
    let args = if command.is_empty() {
        vec![IMAGE_DEFAULT_CMD.to_string()]
    } else {
        command
    };
    let env: BTreeMap<String, String> = env;
    launch(&args, |k| env.get(k).cloned()).expect("settings the fake can parse")
}

/// The engine runs with acevisor's planned HTTP, HTTPS and P2P ports, on 0.0.0.0, told nothing
/// it ignores. (The API port is the krinkuto11 image's own 62062.)
fn runs_as_planned(launch: &Launch) -> bool {
    match launch {
        Launch::Engine { config, notes } => {
            config.http_port == PORTS.http
                && config.https_port == PORTS.https
                && config.p2p_port == PORTS.p2p
                && config.bind_all
                && notes.is_empty()
        }
        Launch::NoEngine(_) => false,
    }
}

#[test]
fn each_preset_runs_as_planned_on_its_own_image_profile() {
    for (variant, profile) in PRESETS {
        let launched = launch_preset(variant, profile);
        assert!(
            runs_as_planned(&launched),
            "{variant:?} on the {profile} profile: {launched:?}"
        );
        if let Launch::Engine { config, .. } = &launched {
            let api = if profile == "krinkuto11" {
                62062
            } else {
                PORTS.api
            };
            assert_eq!(config.api_port, api, "{variant:?}");
        }
    }
}

#[test]
fn no_preset_runs_as_planned_on_another_image_s_profile() {
    for (variant, own) in PRESETS {
        for profile in PROFILES.iter().filter(|p| **p != own) {
            let launched = launch_preset(variant, profile);
            assert!(
                !runs_as_planned(&launched),
                "{variant:?} must not fit the {profile:?} profile: {launched:?}"
            );
        }
    }
}

#[test]
fn the_default_config_s_engine_runs_as_planned_on_its_image_profile() {
    let variant = EnginesConfig::default().variant;
    let (_, profile) = PRESETS
        .iter()
        .find(|(v, _)| *v == variant)
        .expect("the default variant is a preset");
    assert!(runs_as_planned(&launch_preset(variant, profile)));
}
