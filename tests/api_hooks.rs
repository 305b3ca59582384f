//! `POST /hooks/gluetun/{container}/ports` through the real router against a fake Supervisor:
//! authenticated like the other mutating routes, 202 for a configured VPN, 404 otherwise, and
//! any body (Gluetun's `{{PORTS}}`, form-encoded by busybox wget) accepted and ignored.

mod common;

use axum::http::StatusCode;
use common::*;

const ROUTE: &str = "/hooks/gluetun/gluetun/ports";

#[tokio::test]
async fn the_port_hook_is_authenticated_and_answers_for_configured_vpns_only() {
    let h = Harness::new(snapshot(vec![])).await;
    let (status, _) = send(&h.app, "POST", ROUTE, &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no key");
    let (status, _) = send(&h.app, "POST", ROUTE, &[("x-api-key", "wrong")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a wrong key");

    // What busybox wget sends: the key without a space, a form-encoded body of the ports.
    let wget = [
        ("x-api-key", KEY),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (status, body) = send(&h.app, "POST", ROUTE, &wget, Some(b"5678,9876".to_vec())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["vpn"], "gluetun");

    let (status, body) = send(
        &h.app,
        "POST",
        "/hooks/gluetun/gluetun_9/ports",
        &wget,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("gluetun_9"));

    let (status, _) = send(&h.app, "GET", ROUTE, &[("x-api-key", KEY)], None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
