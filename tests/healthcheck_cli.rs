//! `acevisor healthcheck`, the container image's `HEALTHCHECK`: exit 0 only when the URL answers
//! 200, exit 1 for any other status, a refused connection or a server that never answers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

fn healthcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_acevisor"))
        .arg("healthcheck")
        .args(args)
        .env_remove("ACEVISOR_HEALTHCHECK_URL")
        .env("HTTP_PROXY", "http://192.0.2.1:9")
        .env("http_proxy", "http://192.0.2.1:9")
        .output()
        .expect("run the acevisor binary")
}

/// Serves one connection with `status_line`; `None` accepts and never answers. Returns the URL.
fn serve_once(status_line: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        match status_line {
            Some(status) => {
                let body = "{\"status\":\"ok\"}";
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            None => thread::sleep(Duration::from_secs(10)),
        }
    });
    format!("http://{addr}/livez")
}

#[test]
fn ok_answer_exits_0_even_with_a_proxy_in_the_environment() {
    let out = healthcheck(&["--url", &serve_once(Some("200 OK"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn other_statuses_exit_1_naming_the_status() {
    for status in [
        "503 Service Unavailable",
        "404 Not Found",
        "301 Moved Permanently",
    ] {
        let out = healthcheck(&["--url", &serve_once(Some(status))]);
        assert_eq!(out.status.code(), Some(1), "{status}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&status[..3]), "{status}: {err}");
    }
}

#[test]
fn refused_connection_exits_1() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = healthcheck(&["--url", &format!("http://127.0.0.1:{port}/livez")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn silent_server_exits_1_after_the_timeout() {
    let started = Instant::now();
    let out = healthcheck(&["--url", &serve_once(None), "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
}
