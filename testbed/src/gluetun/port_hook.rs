//! The fake's stand-in for Gluetun's `VPN_PORT_FORWARDING_UP_COMMAND` / `_DOWN_COMMAND`: the fake
//! image has no shell and no wget, so instead of running a command it sends one HTTP POST to
//! `FAKE_PORT_HOOK_URL` (with `FAKE_PORT_HOOK_KEY` as `X-API-Key` when set) whenever the
//! forwarded ports it answers change: ports appearing or changing is the up command, ports going
//! the down command. The body is `{"ports":"p1,p2"}` (Gluetun's `{{PORTS}}`), empty when none.
//!
//! With the real Gluetun (Alpine, busybox wget), the same call is
//! `VPN_PORT_FORWARDING_UP_COMMAND=/bin/sh -c "wget -q -O- --header 'X-API-Key: KEY' --post-data '{{PORTS}}' http://acevisor:8080/hooks/gluetun/gluetun/ports"`.

use std::time::Duration;

/// Where the hook posts: `host:port` and the request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookUrl {
    pub addr: String,
    pub target: String,
}

/// Parses `http://host[:port][/path]` (no https: the fake has no TLS).
pub fn parse_url(url: &str) -> Result<HookUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("FAKE_PORT_HOOK_URL must start with http://: {url:?}"))?;
    let (host, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("FAKE_PORT_HOOK_URL has no host: {url:?}"));
    }
    let addr = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok(HookUrl {
        addr,
        target: target.to_string(),
    })
}

/// The body of one hook call: Gluetun's `{{PORTS}}`, comma-separated.
pub fn body(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{\"ports\":\"{}\"}}", list.join(","))
}

/// Watches `ports()` every `every` and posts each change to `url`; never returns. A failed call
/// is logged and not retried (as Gluetun does not retry its command).
pub fn run(url: HookUrl, key: Option<String>, every: Duration, ports: impl Fn() -> Vec<u16>) {
    let mut last: Vec<u16> = Vec::new();
    loop {
        let now = ports();
        if now != last {
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(k) = &key {
                headers.push(("X-API-Key", k.as_str()));
            }
            let what = if now.is_empty() { "down" } else { "up" };
            match crate::http::request(
                &url.addr,
                "POST",
                &url.target,
                &headers,
                &body(&now),
                Duration::from_secs(3),
            ) {
                Ok(r) => eprintln!(
                    "fake-gluetun: port hook ({what}, ports {now:?}) -> {}",
                    r.status
                ),
                Err(e) => eprintln!("fake-gluetun: port hook ({what}, ports {now:?}) failed: {e}"),
            }
            last = now;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://172.17.0.1:8080/hooks/gluetun/g1/ports").unwrap(),
            HookUrl {
                addr: "172.17.0.1:8080".into(),
                target: "/hooks/gluetun/g1/ports".into()
            }
        );
        assert_eq!(parse_url("http://acevisor").unwrap().addr, "acevisor:80");
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn body_lists_the_ports() {
        assert_eq!(body(&[5678, 9876]), r#"{"ports":"5678,9876"}"#);
        assert_eq!(body(&[]), r#"{"ports":""}"#);
    }
}
