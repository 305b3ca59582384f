//! `fake-engine`: an AceStream engine fake. Binds its P2P port on TCP and UDP at once (so a
//! second engine with the same P2P port in one network namespace fails), then after
//! `FAKE_STARTUP_MS` serves the engine HTTP API on 0.0.0.0:<http port>.

use acevisor_testbed::engine::{Config, Engine};
use acevisor_testbed::http::{self, Request};
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::process::exit;
use std::time::Instant;

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "Address in use".to_string(),
        _ => e.to_string(),
    }
}

fn fail(what: &str, e: io::Error) -> ! {
    eprintln!("fake-engine: cannot bind {what}: {}", describe(&e));
    exit(1)
}

fn main() {
    acevisor_testbed::signal::exit_on_terminate();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_args_env(&args, |k| std::env::var(k).ok()).unwrap_or_else(|e| {
        eprintln!("fake-engine: {e}");
        exit(2)
    });
    let p2p = config.p2p_port;
    let _p2p_tcp = TcpListener::bind(("0.0.0.0", p2p))
        .unwrap_or_else(|e| fail(&format!("p2p port {p2p} (tcp)"), e));
    let _p2p_udp = UdpSocket::bind(("0.0.0.0", p2p))
        .unwrap_or_else(|e| fail(&format!("p2p port {p2p} (udp)"), e));
    eprintln!("fake-engine: p2p port {p2p} bound (tcp+udp)");
    if !config.startup.is_zero() {
        std::thread::sleep(config.startup);
    }
    let http_port = config.http_port;
    let listener = TcpListener::bind(("0.0.0.0", http_port))
        .unwrap_or_else(|e| fail(&format!("http port {http_port}"), e));
    eprintln!(
        "fake-engine: http api on 0.0.0.0:{http_port} (https {}, api {}, bind_all {})",
        config.https_port, config.api_port, config.bind_all
    );
    let engine = Engine::new(config);
    http::serve(listener, move |req: &Request| {
        engine.handle(req, Instant::now(), acevisor_testbed::unix_now())
    })
}
