//! `fake-gluetun`: the Gluetun control server fake on 0.0.0.0:8000, or with the `healthcheck`
//! argument the image's Docker HEALTHCHECK (exit 0 when `/testbed/healthz` answers 200). Bad
//! settings exit 2; a role file the played version rejects exits 1 with Gluetun's own message.

use acevisor_testbed::gluetun::{self, Config, Gluetun, port_hook};
use acevisor_testbed::http::{self, Request};
use std::net::TcpListener;
use std::process::exit;
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let t = Duration::from_millis(900);
        let ok = http::request(
            gluetun::HEALTHZ_ADDR,
            "GET",
            gluetun::HEALTHZ_PATH,
            &[],
            "",
            t,
        )
        .is_ok_and(|r| r.status == 200);
        exit(if ok { 0 } else { 1 });
    }
    acevisor_testbed::signal::exit_on_terminate();
    let config = Config::from_env(|k| std::env::var(k).ok()).unwrap_or_else(|e| {
        eprintln!("fake-gluetun: {e}");
        exit(2)
    });
    // v3.38 has no role file; later versions read it when it exists.
    let role_file = if config.version.has_auth() {
        match std::fs::read_to_string(&config.auth_file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                eprintln!(
                    "fake-gluetun: ERROR {}: reading auth settings: opening file {}: {e}",
                    config.version.auth_error_context(),
                    config.auth_file
                );
                exit(1)
            }
        }
    } else {
        None
    };
    let summary = format!(
        "Gluetun {} (reports {}), forwarded port {}, startup {:?}, port delay {:?}, role file {}",
        config.version.name(),
        config.version.reported(),
        config.forwarded_port,
        config.startup,
        config.port_delay,
        match (&role_file, config.version.has_auth()) {
            (_, false) => "ignored".to_string(),
            (Some(_), true) => config.auth_file.clone(),
            (None, true) => format!("absent ({})", config.auth_file),
        }
    );
    let server = Gluetun::new(config, role_file.as_deref(), Instant::now()).unwrap_or_else(|e| {
        eprintln!("fake-gluetun: ERROR {e}");
        exit(1)
    });
    let server = std::sync::Arc::new(server);
    if let Some(url) = std::env::var("FAKE_PORT_HOOK_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let url = port_hook::parse_url(&url).unwrap_or_else(|e| {
            eprintln!("fake-gluetun: {e}");
            exit(2)
        });
        let key = std::env::var("FAKE_PORT_HOOK_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        let watched = server.clone();
        std::thread::spawn(move || {
            port_hook::run(url, key, Duration::from_millis(50), || {
                watched.forwarded_ports(Instant::now())
            })
        });
    }
    let listener = TcpListener::bind(gluetun::LISTEN).unwrap_or_else(|e| {
        eprintln!("fake-gluetun: cannot bind {}: {e}", gluetun::LISTEN);
        exit(1)
    });
    eprintln!(
        "fake-gluetun: control server on {}: {summary}; {}",
        gluetun::LISTEN,
        server.describe_auth()
    );
    http::serve(listener, move |req: &Request| {
        server.handle(req, Instant::now())
    })
}
