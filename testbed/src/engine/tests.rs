//! Unit tests of the fake engine's routes.

use super::*;
use crate::http::{self, ChunkSource};
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

fn engine_with(kbps: u64) -> Engine {
    let mut c = Config {
        stream_kbps: kbps,
        ..Config::default()
    };
    c.apply_flags(&["--http-port=6881".into(), "--port=34817".into()])
        .unwrap();
    Engine::new(c)
}

fn engine() -> Engine {
    engine_with(config::DEFAULT_STREAM_KBPS)
}

fn get(e: &Engine, target: &str, now: Instant) -> (u16, String) {
    let req = Request::new("GET", target).with_header("Host", "10.0.0.5:6881");
    match e.handle(&req, now, 1_700_000_000) {
        Reply::Send(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        other => panic!("unexpected {other:?}"),
    }
}

fn playback(e: &Engine, sid: &str) -> ChunkSource {
    let req = Request::new("GET", &format!("/ace/r/{sid}"));
    match e.handle(&req, Instant::now(), 0) {
        Reply::Stream(head, source) => {
            assert_eq!(head.status, 200);
            assert!(
                head.headers
                    .contains(&("Content-Type".into(), "video/mp2t".into()))
            );
            source
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn start_session(e: &Engine) -> String {
    let body = get(e, "/ace/getstream?id=abc&format=json", Instant::now()).1;
    field(&body, "playback_session_id")
}

fn assert_ts(bytes: &[u8]) {
    assert!(!bytes.is_empty());
    assert_eq!(bytes.len() % TS_PACKET, 0, "whole packets");
    for packet in bytes.chunks(TS_PACKET) {
        assert_eq!(packet[0], 0x47, "sync byte");
    }
}

/// Pulls a string field out of a nested answer the crude way.
fn field(body: &str, key: &str) -> String {
    let tag = format!("\"{key}\":\"");
    let start = body.find(&tag).unwrap() + tag.len();
    body[start..].split('"').next().unwrap().to_string()
}

fn number(body: &str, key: &str) -> u64 {
    let tag = format!("\"{key}\":");
    let start = body.find(&tag).unwrap() + tag.len();
    let digits: String = body[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn version_and_status() {
    let e = engine();
    let now = Instant::now();
    assert_eq!(
        get(&e, "/webui/api/service?method=get_version", now),
        (200, VERSION_ANSWER.to_string())
    );
    let (code, body) = get(&e, "/server/api?api_version=3&method=get_status", now);
    assert_eq!(code, 200);
    assert_eq!(
        body,
        r#"{"result":{"playlist_loaded":true,"version":{"code":3021100,"platform":"linux","version":"3.2.11"}}}"#
    );
    assert!(
        !body.contains("port") && !body.contains("error"),
        "real engines report neither"
    );
    assert_eq!(
        get(&e, "/testbed/ports", now),
        (
            200,
            r#"{"p2p_port":34817,"http_port":6881,"https_port":6879,"api_port":62062}"#.to_string()
        )
    );
    assert!(
        get(&e, "/server/api?method=nope", now)
            .1
            .contains(r#""error":"unknown method""#)
    );
    assert_eq!(get(&e, "/nothing", now).0, 404);
}

#[test]
fn session_lifecycle() {
    let e = engine();
    let t0 = Instant::now();
    let (code, body) = get(&e, "/ace/getstream?id=abc123&format=json&pid=p1", t0);
    assert_eq!(code, 200);
    assert!(body.ends_with(r#""is_live":1},"error":null}"#), "{body}");
    let sid = field(&body, "playback_session_id");
    assert_eq!(sid.len(), 32);
    assert_eq!(
        field(&body, "stat_url"),
        format!("http://10.0.0.5:6881/ace/stat/{sid}")
    );
    assert_eq!(
        field(&body, "command_url"),
        format!("http://10.0.0.5:6881/ace/cmd/{sid}")
    );
    assert_eq!(
        field(&body, "playback_url"),
        format!("http://10.0.0.5:6881/ace/r/{sid}")
    );
    let ih = field(&body, "infohash");
    assert!(ih.len() == 40 && ih.bytes().all(|b| b.is_ascii_hexdigit()));

    let (_, s1) = get(&e, &format!("/ace/stat/{sid}"), t0 + Duration::from_secs(1));
    let (_, s2) = get(&e, &format!("/ace/stat/{sid}"), t0 + Duration::from_secs(9));
    assert!(
        s1.starts_with(r#"{"response":{"status":"dl","peers":"#),
        "{s1}"
    );
    assert!(s1.contains(r#""livepos":{"pos":"#) && s1.ends_with(r#"},"error":null}"#));
    for k in ["downloaded", "uploaded", "peers"] {
        assert!(number(&s2, k) > number(&s1, k), "{k} grows");
    }

    let stop = get(&e, &format!("/ace/cmd/{sid}?method=stop"), t0);
    assert_eq!(stop, (200, r#"{"response":"ok","error":null}"#.to_string()));
    assert_eq!(get(&e, &format!("/ace/stat/{sid}"), t0).1, UNKNOWN_SESSION);
    assert_eq!(
        get(&e, &format!("/ace/cmd/{sid}?method=stop"), t0).1,
        UNKNOWN_SESSION
    );
    assert_eq!(get(&e, &format!("/ace/r/{sid}"), t0).0, 404);
}

#[test]
fn playback_is_paced_ts_until_the_session_stops() {
    // 8 Mbit/s: a 20 ms tick makes 20,000 bytes due.
    let e = engine_with(8000);
    let sid = start_session(&e);
    let started = Instant::now();
    let mut source = playback(&e, &sid);
    let mut got = Vec::new();
    while got.len() < 200_000 {
        let chunk = source().expect("the stream goes on while the session lives");
        assert_ts(&chunk);
        got.extend(chunk);
    }
    // At 1 MB/s, 200 kB are not due before 0.2 s have passed since the source was made: the
    // rate is a ceiling, whatever the load.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "paced: {} bytes in {:?}",
        got.len(),
        started.elapsed()
    );
    let stop = get(&e, &format!("/ace/cmd/{sid}?method=stop"), Instant::now());
    assert_eq!(stop.0, 200);
    assert!(source().is_none(), "a stopped session ends its playback");
}

#[test]
fn playback_streams_to_concurrent_readers_over_http() {
    let e = Arc::new(engine_with(4000));
    let sid = start_session(&e);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Arc::clone(&e);
    std::thread::spawn(move || {
        http::serve(listener, move |req: &Request| {
            server.handle(req, Instant::now(), 0)
        })
    });
    let target = format!("/ace/r/{sid}");
    let readers: Vec<_> = (0..3)
        .map(|_| http::open_stream(&addr, &target, Duration::from_secs(2)).unwrap())
        .collect();
    for (head, mut body) in readers {
        assert_eq!(head.status, 200);
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
        let mut buf = vec![0; 2 * 1504];
        body.read_exact(&mut buf).unwrap();
        assert_ts(&buf);
        // More than the old fake's whole stream (8 packets) and it keeps coming.
        body.read_exact(&mut buf).unwrap();
        assert_ts(&buf);
    }
    let (_, mut body) = http::open_stream(&addr, &target, Duration::from_secs(2)).unwrap();
    let mut buf = vec![0; TS_PACKET];
    body.read_exact(&mut buf).unwrap();
    get(&e, &format!("/ace/cmd/{sid}?method=stop"), Instant::now());
    let mut rest = Vec::new();
    body.read_to_end(&mut rest)
        .expect("the body ends cleanly after stop");
    assert_eq!(rest.len() % TS_PACKET, 0);
}

#[test]
fn getstream_keys() {
    let e = engine();
    let now = Instant::now();
    let missing = get(&e, "/ace/getstream?format=json", now).1;
    assert_eq!(missing, r#"{"response":null,"error":"missing content id"}"#);
    let ih = "ABCDEF0123456789abcdef0123456789ABCDEF01";
    let body = get(
        &e,
        &format!("/ace/getstream?infohash={ih}&format=json"),
        now,
    )
    .1;
    assert_eq!(field(&body, "infohash"), ih.to_ascii_lowercase());
    let a = get(&e, "/ace/getstream?id=same&format=json", now).1;
    let b = get(&e, "/ace/getstream?id=same&format=json", now).1;
    assert_eq!(field(&a, "infohash"), field(&b, "infohash"));
    assert_ne!(
        field(&a, "playback_session_id"),
        field(&b, "playback_session_id")
    );
}

#[test]
fn hang_and_exit() {
    let e = engine();
    let now = Instant::now();
    let exit = Request::new("POST", "/testbed/exit").with_body(r#"{"code": 7}"#);
    assert!(matches!(e.handle(&exit, now, 0), Reply::SendThenExit(_, 7)));
    assert_eq!(get(&e, "/testbed/hang", now).0, 405);
    let hang = Request::new("PUT", "/testbed/hang");
    assert!(matches!(e.handle(&hang, now, 0), Reply::Send(ref r) if r.status == 200));
    let later = Request::new("GET", "/server/api?method=get_status");
    assert!(matches!(e.handle(&later, now, 0), Reply::Hang));
    assert!(matches!(
        e.handle(&Request::new("GET", "/testbed/ports"), now, 0),
        Reply::Hang
    ));
}
