//! Unit tests of the fake engine's routes.

use super::*;
use std::time::Duration;

fn engine() -> Engine {
    let mut c = Config::default();
    c.apply_flags(&["--http-port=6881".into(), "--port=34817".into()])
        .unwrap();
    Engine::new(c)
}

fn get(e: &Engine, target: &str, now: Instant) -> (u16, String) {
    let req = Request::new("GET", target).with_header("Host", "10.0.0.5:6881");
    match e.handle(&req, now, 1_700_000_000) {
        Reply::Send(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        other => panic!("unexpected {other:?}"),
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
        r#"{"result":{"status":"idle","p2p_port":34817,"http_port":6881,"https_port":6879,"api_port":62062,"sessions":0},"error":null}"#
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
    assert!(
        get(&e, "/server/api?method=get_status", t0)
            .1
            .contains(r#""status":"busy""#)
    );

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
    assert_eq!(get(&e, &format!("/ace/r/{sid}"), t0).0, 200);

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
}
