//! `fake-gluetun`: the Gluetun control server fake on 0.0.0.0:8000, or with the `healthcheck`
//! argument the image's Docker HEALTHCHECK (exit 0 when `/testbed/healthz` answers 200).

use acevisor_testbed::gluetun::{self, Config, Gluetun};
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
    let listener = TcpListener::bind(gluetun::LISTEN).unwrap_or_else(|e| {
        eprintln!("fake-gluetun: cannot bind {}: {e}", gluetun::LISTEN);
        exit(1)
    });
    eprintln!(
        "fake-gluetun: control server on {} (forwarded port {}, api key {}, startup {:?})",
        gluetun::LISTEN,
        config.forwarded_port,
        if config.api_key.is_some() {
            "required"
        } else {
            "off"
        },
        config.startup
    );
    let server = Gluetun::new(config, Instant::now());
    http::serve(listener, move |req: &Request| {
        server.handle(req, Instant::now())
    })
}
