//! acevisor's testbed: fakes of the Gluetun control server and of the AceStream engine that speak
//! the wire formats of docs/protocols.md, built on std only so they compile fast into static binaries
//! for `FROM scratch` images. The bins in `src/bin/` are thin wrappers over these modules.

pub mod engine;
pub mod gluetun;
pub mod http;
pub mod json;
pub mod signal;

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses an optional millisecond count from an environment value; empty or absent is `None`.
pub fn parse_ms(value: Option<String>) -> Result<Option<u64>, String> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("not a number of milliseconds: {v:?}")),
    }
}
