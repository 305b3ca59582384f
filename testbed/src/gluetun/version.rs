//! The Gluetun versions the fake can play (`FAKE_GLUETUN_VERSION`) and what differs between them:
//! the routes each one serves and accepts in a role file, the built-in role it applies when no
//! role file exists, and the shape of its port answers. Read from qdm12/gluetun at the tags
//! v3.38.1, v3.39.1, v3.40.4, v3.41.1 and at unreleased HEAD.

/// A Gluetun release line the fake imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Version {
    /// No authentication at all; `/v1/portforward` does not exist (400, like every unknown route).
    V3_38,
    /// Role-based auth (v3.39.1 introduced it); a role file may list only routes of a fixed list
    /// that lacks `/v1/portforward`; unlisted routes answer 401.
    V3_39,
    /// As v3.39.
    V3_40,
    /// `/v1/portforward` exists; the legacy port route redirects to it.
    #[default]
    V3_41,
    /// Unreleased HEAD: deny by default, 404 / 405 for unknown paths and methods.
    Head,
}

/// Every version, oldest first.
pub const ALL: [Version; 5] = [
    Version::V3_38,
    Version::V3_39,
    Version::V3_40,
    Version::V3_41,
    Version::Head,
];

/// Routes a v3.39 / v3.40 role may list (`validRoutes` in internal/server/middlewares/auth).
const ROUTES_3_39: &[&str] = &[
    "GET /openvpn/actions/restart",
    "GET /unbound/actions/restart",
    "GET /updater/restart",
    "GET /v1/version",
    "GET /v1/vpn/status",
    "PUT /v1/vpn/status",
    "GET /v1/vpn/settings",
    "PUT /v1/vpn/settings",
    "GET /v1/openvpn/status",
    "PUT /v1/openvpn/status",
    "GET /v1/openvpn/portforwarded",
    "GET /v1/openvpn/settings",
    "GET /v1/dns/status",
    "PUT /v1/dns/status",
    "GET /v1/updater/status",
    "PUT /v1/updater/status",
    "GET /v1/publicip/ip",
];
/// What v3.41 adds to [`ROUTES_3_39`].
const ROUTES_3_41_EXTRA: &[&str] = &[
    "GET /openvpn/portforwarded",
    "GET /openvpn/settings",
    "GET /v1/portforward",
];
/// What HEAD adds to v3.41's list.
const ROUTES_HEAD_EXTRA: &[&str] = &["PUT /v1/portforward"];

/// The built-in role `public` (auth `none`) of v3.39 / v3.40 when no role file gives any role.
const PUBLIC_3_39: &[&str] = &[
    "GET /openvpn/actions/restart",
    "GET /unbound/actions/restart",
    "GET /updater/restart",
    "GET /v1/version",
    "GET /v1/vpn/status",
    "PUT /v1/vpn/status",
    "GET /v1/openvpn/status",
    "PUT /v1/openvpn/status",
    "GET /v1/openvpn/portforwarded",
    "GET /v1/dns/status",
    "PUT /v1/dns/status",
    "GET /v1/updater/status",
    "PUT /v1/updater/status",
    "GET /v1/publicip/ip",
];
/// What v3.41's public role adds to [`PUBLIC_3_39`].
const PUBLIC_3_41_EXTRA: &[&str] = &["GET /openvpn/portforwarded", "GET /v1/portforward"];

/// The routes acevisor needs (status, both port routes where they exist, public IP, version):
/// what `FAKE_API_KEY` opens.
const ACEVISOR_ROUTES: &[&str] = &[
    "GET /v1/vpn/status",
    "PUT /v1/vpn/status",
    "GET /v1/portforward",
    "GET /v1/openvpn/portforwarded",
    "GET /v1/publicip/ip",
    "GET /v1/version",
];

impl Version {
    /// Parses `3.38`, `3.39`, `3.40`, `3.41` or `head` (a leading `v` is allowed).
    pub fn parse(text: &str) -> Result<Version, String> {
        let t = text.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        Ok(match t.to_ascii_lowercase().as_str() {
            "3.38" => Version::V3_38,
            "3.39" => Version::V3_39,
            "3.40" => Version::V3_40,
            "3.41" => Version::V3_41,
            "head" | "latest" => Version::Head,
            _ => {
                return Err(format!(
                    "FAKE_GLUETUN_VERSION must be 3.38, 3.39, 3.40, 3.41 or head, not {text:?}"
                ));
            }
        })
    }

    /// The profile name (`3.41`, `head`).
    pub fn name(self) -> &'static str {
        match self {
            Version::V3_38 => "3.38",
            Version::V3_39 => "3.39",
            Version::V3_40 => "3.40",
            Version::V3_41 => "3.41",
            Version::Head => "head",
        }
    }

    /// What `GET /v1/version` reports (the release the profile was read from).
    pub fn reported(self) -> &'static str {
        match self {
            Version::V3_38 => "v3.38.1",
            Version::V3_39 => "v3.39.1",
            Version::V3_40 => "v3.40.4",
            Version::V3_41 => "v3.41.1",
            Version::Head => "latest",
        }
    }

    /// Whether the control server checks roles at all (v3.39.1 and later).
    pub fn has_auth(self) -> bool {
        self >= Version::V3_39
    }

    /// Whether `/v1/portforward` exists (v3.41+); before, only the legacy route answers the port.
    pub fn has_portforward_route(self) -> bool {
        self >= Version::V3_41
    }

    /// Whether the port answers carry both `port` and `ports` (HEAD); earlier versions send
    /// `{"port":N}` for zero or one forwarded port.
    pub fn port_and_ports(self) -> bool {
        self == Version::Head
    }

    /// Whether unknown paths and methods are 404 / 405 before auth (HEAD); earlier versions with
    /// auth answer 401 (no role lists them), v3.38 answers 400.
    pub fn not_found_before_auth(self) -> bool {
        self == Version::Head
    }

    /// Whether `HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE` exists (v3.41+).
    pub fn has_default_role_env(self) -> bool {
        self >= Version::V3_41
    }

    /// Routes a role may list (`METHOD /path`); empty for v3.38.
    pub fn valid_routes(self) -> Vec<&'static str> {
        let mut routes = Vec::new();
        if self.has_auth() {
            routes.extend_from_slice(ROUTES_3_39);
        }
        if self >= Version::V3_41 {
            routes.extend_from_slice(ROUTES_3_41_EXTRA);
        }
        if self == Version::Head {
            routes.extend_from_slice(ROUTES_HEAD_EXTRA);
        }
        routes
    }

    /// Whether `METHOD /path` may appear in a role.
    pub fn is_valid_route(self, route: &str) -> bool {
        self.valid_routes().contains(&route)
    }

    /// Whether some method is valid for `path` (HEAD's 404 versus 405).
    pub fn is_valid_path(self, path: &str) -> bool {
        self.valid_routes()
            .iter()
            .any(|r| r.split_once(' ').is_some_and(|(_, p)| p == path))
    }

    /// The built-in `public` role's routes (auth `none`), applied when no role is configured:
    /// v3.39 to v3.41 only; HEAD denies by default.
    pub fn public_routes(self) -> Vec<&'static str> {
        let mut routes = Vec::new();
        if self.has_auth() && self != Version::Head {
            routes.extend_from_slice(PUBLIC_3_39);
        }
        if self == Version::V3_41 {
            routes.extend_from_slice(PUBLIC_3_41_EXTRA);
        }
        routes
    }

    /// The routes `FAKE_API_KEY` opens on this version: acevisor's routes the version knows.
    pub fn api_key_routes(self) -> Vec<&'static str> {
        ACEVISOR_ROUTES
            .iter()
            .copied()
            .filter(|r| self.is_valid_route(r))
            .collect()
    }

    /// The prefix of Gluetun's log line when the role file is rejected at start.
    pub fn auth_error_context(self) -> &'static str {
        if self >= Version::V3_41 {
            "setting up control server: building authentication middleware settings"
        } else {
            "setting up control server"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profile_names() {
        assert_eq!(Version::parse("3.38"), Ok(Version::V3_38));
        assert_eq!(Version::parse("v3.40"), Ok(Version::V3_40));
        assert_eq!(Version::parse(" HEAD "), Ok(Version::Head));
        assert_eq!(Version::default(), Version::V3_41);
        let err = Version::parse("3.37").unwrap_err();
        assert!(err.contains("3.38, 3.39, 3.40, 3.41 or head"), "{err}");
        for v in ALL {
            assert_eq!(Version::parse(v.name()), Ok(v));
        }
    }

    #[test]
    fn route_lists_per_version() {
        assert!(Version::V3_38.valid_routes().is_empty());
        assert!(Version::V3_38.public_routes().is_empty());
        for v in [Version::V3_39, Version::V3_40] {
            assert_eq!(v.valid_routes().len(), 17);
            assert!(!v.is_valid_route("GET /v1/portforward"));
            assert!(v.is_valid_route("GET /v1/openvpn/portforwarded"));
            assert_eq!(v.public_routes().len(), 14);
            assert!(!v.api_key_routes().contains(&"GET /v1/portforward"));
        }
        assert_eq!(Version::V3_41.valid_routes().len(), 20);
        assert!(Version::V3_41.is_valid_route("GET /v1/portforward"));
        assert!(!Version::V3_41.is_valid_route("PUT /v1/portforward"));
        assert!(
            Version::V3_41
                .public_routes()
                .contains(&"GET /v1/portforward")
        );
        assert!(Version::Head.is_valid_route("PUT /v1/portforward"));
        assert!(Version::Head.public_routes().is_empty());
        assert!(Version::Head.is_valid_path("/v1/portforward"));
        assert!(!Version::Head.is_valid_path("/v1/nope"));
        assert_eq!(Version::Head.api_key_routes().len(), ACEVISOR_ROUTES.len());
    }
}
