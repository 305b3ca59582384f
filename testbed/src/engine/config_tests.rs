//! Unit tests of how each profile takes its settings, and of what each refuses.

use super::*;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn image_cmd() -> Vec<String> {
    vec![IMAGE_DEFAULT_CMD.to_string()]
}

/// An env from `K=V` pairs.
fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

fn engine(launch: Result<Launch, String>) -> (Config, Vec<String>) {
    match launch {
        Ok(Launch::Engine { config, notes }) => (config, notes),
        other => panic!("expected an engine, got {other:?}"),
    }
}

fn no_engine(launch: Result<Launch, String>) -> String {
    match launch {
        Ok(Launch::NoEngine(message)) => message,
        other => panic!("expected no engine, got {other:?}"),
    }
}

#[test]
fn defaults_are_a_real_engine_s() {
    let (c, notes) = engine(launch(&image_cmd(), env(&[])));
    assert_eq!(c, Config::default());
    assert_eq!((c.http_port, c.p2p_port, c.api_port), (6878, 8621, 62062));
    assert!(
        !c.bind_all,
        "a real engine binds 127.0.0.1 unless told --bind-all"
    );
    assert_eq!(c.startup, DEFAULT_STARTUP);
    assert!(
        c.startup >= Duration::from_secs(1),
        "seconds, like a real engine"
    );
    assert_eq!(c.stream_kbps, 4000);
    assert!(notes.is_empty());
    assert_eq!(engine(launch(&[], env(&[]))).0, Config::default());
}

#[test]
fn flags_both_spellings_unknown_ignored_and_python_main_allowed() {
    let a = args(
        "--client-console --http-port 6881 --https-port=6882 --cache-dir /x --api-port 62063 \
         --live-cache-type memory --port=34817 --bind-all --log-stdout",
    );
    let (c, _) = engine(launch(&a, env(&[])));
    assert_eq!(
        (c.http_port, c.https_port, c.api_port, c.p2p_port),
        (6881, 6882, 62063, 34817)
    );
    assert!(c.bind_all && c.client_console);
    assert_eq!(c.profile, Profile::Flags);
    let (c, _) = engine(launch(&args("python main.py --http-port 7000"), env(&[])));
    assert_eq!(c.http_port, 7000);
    let (c, _) = engine(launch(&args("--bind-all=false"), env(&[])));
    assert!(!c.bind_all);
}

#[test]
fn flags_profile_ignores_image_env_and_says_so() {
    let e = env(&[
        ("CONF", "--http-port=7001\n--bind-all"),
        ("HTTP_PORT", "7002"),
    ]);
    let (c, notes) = engine(launch(&args("--port 30000"), e));
    assert_eq!((c.http_port, c.p2p_port, c.bind_all), (6878, 30000, false));
    assert!(notes.iter().any(|n| n.contains("CONF")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("HTTP_PORT")), "{notes:?}");
}

#[test]
fn krinkuto11_reads_env_only() {
    let e = env(&[
        ("FAKE_ENGINE_PROFILE", "krinkuto11"),
        ("HTTP_PORT", "19000"),
        ("HTTPS_PORT", "19001"),
        ("P2P_PORT", "34817"),
        ("BIND_ALL", "true"),
        ("CONF", "--http-port=1234\n--api-port=19002"),
        ("API_PORT", "19002"),
        ("CACHE_LIMIT", "1"),
        ("INTERNAL_BUFFERING", "60"),
    ]);
    let command = args("--http-port 5555 --api-port 5556 --port 5557");
    let (c, notes) = engine(launch(&command, e));
    assert_eq!(c.profile, Profile::Krinkuto11);
    assert_eq!(
        (c.http_port, c.https_port, c.api_port, c.p2p_port),
        (19000, 19001, 62062, 34817),
        "command, CONF and API_PORT ignored; the API port is the image's"
    );
    assert!(c.bind_all && c.client_console);
    for ignored in ["container command", "CONF", "API_PORT"] {
        assert!(
            notes.iter().any(|n| n.contains(ignored)),
            "{ignored}: {notes:?}"
        );
    }
}

#[test]
fn krinkuto11_bind_all_is_any_non_empty_value() {
    let bind = |v: Option<&str>| {
        let mut pairs = vec![("FAKE_ENGINE_PROFILE", "krinkuto11")];
        if let Some(v) = v {
            pairs.push(("BIND_ALL", v));
        }
        engine(launch(&image_cmd(), env(&pairs))).0.bind_all
    };
    assert!(!bind(None));
    assert!(!bind(Some("")));
    assert!(bind(Some("true")));
    assert!(
        bind(Some("false")),
        "the entrypoint only tests for non-empty"
    );
    let (c, _) = engine(launch(
        &image_cmd(),
        env(&[("FAKE_ENGINE_PROFILE", "krinkuto11")]),
    ));
    assert_eq!((c.http_port, c.p2p_port), (6878, 8621));
}

#[test]
fn jopsis_reads_acestream_args_through_the_image_cmd() {
    let e = env(&[
        ("FAKE_ENGINE_PROFILE", "jopsis"),
        (
            "ACESTREAM_ARGS",
            "--client-console --bind-all --http-port 19000 --https-port 19001 --api-port 19002 --port 34817",
        ),
        ("HTTP_PORT", "7000"),
    ]);
    let (c, notes) = engine(launch(&image_cmd(), e));
    assert_eq!(
        (c.http_port, c.https_port, c.api_port, c.p2p_port),
        (19000, 19001, 19002, 34817)
    );
    assert!(c.bind_all);
    assert!(notes.iter().any(|n| n.contains("HTTP_PORT")), "{notes:?}");

    // The image's own ACESTREAM_ARGS: default ports, bind-all.
    let (c, _) = engine(launch(
        &image_cmd(),
        env(&[("FAKE_ENGINE_PROFILE", "jopsis")]),
    ));
    assert_eq!((c.http_port, c.bind_all), (6878, true));
}

#[test]
fn jopsis_with_a_command_has_no_engine() {
    let e = env(&[
        ("FAKE_ENGINE_PROFILE", "jopsis"),
        ("ACESTREAM_ARGS", "--bind-all"),
    ]);
    let message = no_engine(launch(&args("--http-port 19000 --port 34817"), e));
    assert!(message.contains("replaced the image's CMD"), "{message}");
    assert!(message.contains("ACESTREAM_ARGS"), "{message}");
}

#[test]
fn acestream_needs_python_main_py() {
    let e = || env(&[("FAKE_ENGINE_PROFILE", "acestream"), ("HTTP_PORT", "1")]);
    let (c, notes) = engine(launch(
        &args(
            "python main.py --http-port 19000 --api-port 19002 --bind-all --disable-sentry --log-stdout --disable-upnp --port 34817",
        ),
        e(),
    ));
    assert_eq!((c.http_port, c.api_port, c.p2p_port), (19000, 19002, 34817));
    assert!(c.bind_all);
    assert!(notes.iter().any(|n| n.contains("HTTP_PORT")), "{notes:?}");
    let message = no_engine(launch(&args("--http-port 19000 --bind-all"), e()));
    assert!(message.contains("python main.py"), "{message}");
    assert!(message.contains("--http-port"), "{message}");
    let (c, _) = engine(launch(&image_cmd(), e()));
    assert!(!c.bind_all);
}

#[test]
fn fake_knobs() {
    let e = env(&[("FAKE_STARTUP_MS", "150"), ("FAKE_STREAM_KBPS", "800")]);
    let (c, _) = engine(launch(&[], e));
    assert_eq!(c.startup, Duration::from_millis(150));
    assert_eq!(c.stream_kbps, 800);
    let (c, _) = engine(launch(&[], env(&[("FAKE_STARTUP_MS", "0")])));
    assert_eq!(c.startup, Duration::ZERO);
}

#[test]
fn bad_values_are_errors_naming_the_input() {
    let err = |a: &str, pairs: &[(&str, &str)]| launch(&args(a), env(pairs)).unwrap_err();
    assert!(err("--http-port", &[]).contains("--http-port"));
    assert!(err("--port 0", &[]).contains("--port"));
    assert!(err("--port=99999", &[]).contains("--port"));
    assert!(err("--bind-all=maybe", &[]).contains("--bind-all"));
    assert!(err("", &[("FAKE_ENGINE_PROFILE", "linuxserver")]).contains("FAKE_ENGINE_PROFILE"));
    assert!(err("", &[("FAKE_STARTUP_MS", "soon")]).contains("FAKE_STARTUP_MS"));
    assert!(err("", &[("FAKE_STREAM_KBPS", "0")]).contains("FAKE_STREAM_KBPS"));
    let k = [("FAKE_ENGINE_PROFILE", "krinkuto11"), ("P2P_PORT", "x")];
    assert!(err("", &k).contains("P2P_PORT"));
    let j = [
        ("FAKE_ENGINE_PROFILE", "jopsis"),
        ("ACESTREAM_ARGS", "--port=abc"),
    ];
    assert!(err("", &j).contains("ACESTREAM_ARGS"));
}

#[test]
fn ports_json_is_the_testbed_route_s_shape() {
    let (c, _) = engine(launch(&args("--http-port 19000 --port 34817"), env(&[])));
    assert_eq!(
        c.ports_json(),
        r#"{"p2p_port":34817,"http_port":19000,"https_port":6879,"api_port":62062}"#
    );
}
