//! `fake-engine`: an AceStream engine fake. Takes its settings the way the image named by
//! `FAKE_ENGINE_PROFILE` does (see `engine::config`); a command that would start no engine in
//! that image exits 127. Binds its P2P port on TCP and UDP at once (so a second engine with the
//! same P2P port in one network namespace fails), then after `FAKE_STARTUP_MS` serves the engine
//! HTTP API on 0.0.0.0 with `--bind-all`, else on 127.0.0.1 only.

use acevisor_testbed::engine::{Engine, Launch, config};
use acevisor_testbed::http::{self, Request};
use std::io;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
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
    let launch = config::launch(&args, |k| std::env::var(k).ok()).unwrap_or_else(|e| {
        eprintln!("fake-engine: {e}");
        exit(2)
    });
    let config = match launch {
        Launch::NoEngine(why) => {
            eprintln!("fake-engine: no engine: {why}");
            exit(127)
        }
        Launch::Engine { config, notes } => {
            for note in notes {
                eprintln!("fake-engine ({}): {note}", config.profile.name());
            }
            config
        }
    };
    let p2p = config.p2p_port;
    let _p2p_tcp = TcpListener::bind(("0.0.0.0", p2p))
        .unwrap_or_else(|e| fail(&format!("p2p port {p2p} (tcp)"), e));
    let _p2p_udp = UdpSocket::bind(("0.0.0.0", p2p))
        .unwrap_or_else(|e| fail(&format!("p2p port {p2p} (udp)"), e));
    eprintln!(
        "fake-engine ({}): p2p port {p2p} bound (tcp+udp); http api in {:?}",
        config.profile.name(),
        config.startup
    );
    if !config.startup.is_zero() {
        std::thread::sleep(config.startup);
    }
    let http_port = config.http_port;
    let ip = if config.bind_all {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::LOCALHOST
    };
    let listener = TcpListener::bind((ip, http_port))
        .unwrap_or_else(|e| fail(&format!("http port {ip}:{http_port}"), e));
    eprintln!(
        "fake-engine ({}): http api on {ip}:{http_port} (https {}, api {}, {} kbit/s playback){}",
        config.profile.name(),
        config.https_port,
        config.api_port,
        config.stream_kbps,
        if config.bind_all {
            ""
        } else {
            "; without --bind-all it answers inside its network namespace only"
        }
    );
    let engine = Engine::new(config);
    http::serve(listener, move |req: &Request| {
        engine.handle(req, Instant::now(), acevisor_testbed::unix_now())
    })
}
