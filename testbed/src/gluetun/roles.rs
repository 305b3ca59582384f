//! Gluetun's control-server roles: their validation per version with Gluetun's own error
//! messages, the roles that apply besides the role file (`FAKE_API_KEY`'s role, v3.41+'s default
//! role, the built-in `public` role when no role is configured) and the check of one request
//! against them. The role file itself is parsed by [`super::role_file`].

use super::role_file::parse_file;
use super::version::Version;
use crate::http::Request;
use crate::json;

/// Where Gluetun reads the role file, and the variable that moves it.
pub const DEFAULT_PATH: &str = "/gluetun/auth/config.toml";
pub const PATH_ENV: &str = "HTTP_CONTROL_SERVER_AUTH_CONFIG_FILEPATH";
/// v3.41+: a JSON role (`{"auth":"apikey","apikey":"..."}`) for every route no other role lists.
pub const DEFAULT_ROLE_ENV: &str = "HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE";
/// Name of the role `FAKE_API_KEY` adds.
pub const API_KEY_ROLE: &str = "fake_api_key";

/// One `[[roles]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    pub name: String,
    pub auth: String,
    pub apikey: String,
    pub username: String,
    pub password: String,
    pub routes: Vec<String>,
}

/// The outcome of checking one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// No role lists the route: 401.
    NoRole,
    /// Roles list it but none accepts the credentials: 401 (`basic` = a basic role was tried).
    Refused {
        basic: bool,
    },
}

/// The roles in force on one control server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// `false` on v3.38: everything is allowed.
    enabled: bool,
    roles: Vec<Role>,
}

impl Roles {
    /// Builds the roles as `version` does at start from the role file's text (`None` = no file),
    /// `FAKE_API_KEY` and `HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE`. The error is the line Gluetun
    /// logs before it exits 1.
    pub fn build(
        version: Version,
        file: Option<&str>,
        api_key: Option<&str>,
        default_role: Option<&str>,
    ) -> Result<Roles, String> {
        if !version.has_auth() {
            return Ok(Roles {
                enabled: false,
                roles: Vec::new(),
            });
        }
        let ctx = version.auth_error_context();
        let mut roles = match file {
            Some(text) => parse_file(text)
                .map_err(|e| format!("{ctx}: reading auth settings: toml decoding file: {e}"))?,
            None => Vec::new(),
        };
        if let Some(key) = api_key {
            roles.push(Role {
                name: API_KEY_ROLE.into(),
                auth: "apikey".into(),
                apikey: key.into(),
                routes: version
                    .api_key_routes()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                ..Role::default()
            });
        }
        if let Some(json_role) = default_role.filter(|_| version.has_default_role_env()) {
            let role = parse_default_role(json_role)
                .map_err(|e| format!("{ctx}: setting default role: decoding default role: {e}"))?;
            if !role.auth.is_empty() {
                validate_role(version, &role).map_err(|e| {
                    format!("{ctx}: setting default role: validating default role: {e}")
                })?;
                let listed: Vec<&String> = roles.iter().flat_map(|r| &r.routes).collect();
                let mut rest: Vec<String> = version
                    .valid_routes()
                    .into_iter()
                    .filter(|r| !listed.iter().any(|l| l == r))
                    .map(String::from)
                    .collect();
                rest.sort();
                if !rest.is_empty() {
                    roles.push(Role {
                        routes: rest,
                        ..role
                    });
                }
            }
        }
        if roles.is_empty() && !version.public_routes().is_empty() {
            roles.push(Role {
                name: "public".into(),
                auth: "none".into(),
                routes: version
                    .public_routes()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                ..Role::default()
            });
        }
        let n = roles.len();
        for (i, role) in roles.iter().enumerate() {
            validate_role(version, role).map_err(|e| {
                format!(
                    "{ctx}: validating auth settings: role {} ({} of {n}): {e}",
                    role.name,
                    i + 1
                )
            })?;
        }
        Ok(Roles {
            enabled: true,
            roles,
        })
    }

    /// Whether `method path` may be served to `req`.
    pub fn check(&self, method: &str, path: &str, req: &Request) -> Access {
        if !self.enabled {
            return Access::Allowed;
        }
        let route = format!("{method} {path}");
        let listing: Vec<&Role> = self
            .roles
            .iter()
            .filter(|r| r.routes.contains(&route))
            .collect();
        if listing.is_empty() {
            return Access::NoRole;
        }
        if listing.iter().any(|r| authorised(r, req)) {
            Access::Allowed
        } else {
            Access::Refused {
                basic: listing.iter().any(|r| r.auth == "basic"),
            }
        }
    }

    /// A one-line summary for the start-up log.
    pub fn describe(&self) -> String {
        if !self.enabled {
            return "no authentication".into();
        }
        let names: Vec<String> = self
            .roles
            .iter()
            .map(|r| format!("{} ({}, {} routes)", r.name, r.auth, r.routes.len()))
            .collect();
        if names.is_empty() {
            "no roles: every route answers 401".into()
        } else {
            format!("roles {}", names.join(", "))
        }
    }
}

fn authorised(role: &Role, req: &Request) -> bool {
    match role.auth.as_str() {
        "none" => true,
        "apikey" => {
            let key = match req.header("x-api-key") {
                Some(k) if !k.is_empty() => Some(k),
                _ => req.query("api_key"),
            };
            key == Some(role.apikey.as_str())
        }
        "basic" => {
            let expected = base64(format!("{}:{}", role.username, role.password).as_bytes());
            req.header("authorization")
                .and_then(|v| v.split_once(' '))
                .is_some_and(|(scheme, creds)| {
                    scheme.eq_ignore_ascii_case("basic") && creds.trim() == expected
                })
        }
        _ => false,
    }
}

/// Gluetun's `Role.validate` (the route check's wording changed at HEAD).
fn validate_role(version: Version, role: &Role) -> Result<(), String> {
    if !["none", "apikey", "basic"].contains(&role.auth.as_str()) {
        return Err(format!(
            "authentication method not supported: {}",
            role.auth
        ));
    }
    match role.auth.as_str() {
        "apikey" if role.apikey.is_empty() => {
            return Err(format!("for role {}: api key is empty", role.name));
        }
        "basic" if role.username.is_empty() => {
            return Err(format!("for role {}: username is empty", role.name));
        }
        "basic" if role.password.is_empty() => {
            return Err(format!("for role {}: password is empty", role.name));
        }
        _ => {}
    }
    let m = role.routes.len();
    for (j, route) in role.routes.iter().enumerate() {
        if version.is_valid_route(route) {
            continue;
        }
        let at = format!("route {} of {m}", j + 1);
        if version != Version::Head {
            return Err(format!(
                "{at}: route not supported by the control server: {route}"
            ));
        }
        let (method, path) = route.split_once(' ').unwrap_or(("", route.as_str()));
        return Err(if version.is_valid_path(path) {
            format!("{at}: route method not supported for the path: {method} for path {path}")
        } else {
            format!("{at}: route path not supported by the control server: {path}")
        });
    }
    Ok(())
}

/// The default role's JSON (`name`, `auth`, `apikey`, `username`, `password`).
fn parse_default_role(text: &str) -> Result<Role, String> {
    let t = text.trim();
    if !(t.starts_with('{') && t.ends_with('}')) {
        return Err(format!("not a JSON object: {t:?}"));
    }
    let field = |k: &str| json::get_str(t, k).unwrap_or_default();
    Ok(Role {
        name: "default".into(),
        auth: field("auth"),
        apikey: field("apikey"),
        username: field("username"),
        password: field("password"),
        routes: Vec::new(),
    })
}

/// Standard base64 with padding (HTTP basic credentials).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> Request {
        Request::new(method, path)
    }

    #[test]
    fn v3_40_rejects_the_current_port_route_with_gluetuns_message() {
        let file = "[[roles]]\nname = \"acevisor\"\nauth = \"apikey\"\napikey = \"k\"\n\
                    routes = [\"GET /v1/vpn/status\", \"GET /v1/portforward\"]\n";
        for v in [Version::V3_39, Version::V3_40] {
            let err = Roles::build(v, Some(file), None, None).unwrap_err();
            assert_eq!(
                err,
                "setting up control server: validating auth settings: role acevisor (1 of 1): \
                 route 2 of 2: route not supported by the control server: GET /v1/portforward"
            );
        }
        assert!(Roles::build(Version::V3_41, Some(file), None, None).is_ok());
        let v338 = Roles::build(Version::V3_38, Some(file), None, None).unwrap();
        assert_eq!(
            v338.check("GET", "/v1/nope", &req("GET", "/v1/nope")),
            Access::Allowed
        );
    }

    #[test]
    fn head_wording_and_other_validation_errors() {
        let role = |auth: &str, extra: &str, routes: &str| {
            format!("[[roles]]\nname = \"r\"\nauth = \"{auth}\"\n{extra}\nroutes = [{routes}]\n")
        };
        let err = |v, text: String| Roles::build(v, Some(&text), None, None).unwrap_err();
        assert!(
            err(Version::Head, role("none", "", "\"GET /v1/nope\"")).ends_with(
                "route 1 of 1: route path not supported by the control server: /v1/nope"
            )
        );
        assert!(
            err(Version::Head, role("none", "", "\"POST /v1/portforward\"")).ends_with(
                "route method not supported for the path: POST for path /v1/portforward"
            )
        );
        assert!(
            err(Version::V3_41, role("token", "", ""))
                .ends_with("role r (1 of 1): authentication method not supported: token")
        );
        assert!(
            err(Version::V3_41, role("apikey", "", "")).ends_with("for role r: api key is empty")
        );
        assert!(
            err(Version::V3_40, role("basic", "username = \"u\"", ""))
                .ends_with("for role r: password is empty")
        );
        let bad_toml = err(Version::V3_41, "[[roles]\n".to_string());
        assert!(
            bad_toml.starts_with(
                "setting up control server: building authentication middleware settings: \
                 reading auth settings: toml decoding file: line 1:"
            ),
            "{bad_toml}"
        );
    }

    #[test]
    fn public_role_without_a_file_per_version() {
        let pf = req("GET", "/v1/portforward");
        let status = req("GET", "/v1/vpn/status");
        for v in [Version::V3_39, Version::V3_40] {
            let r = Roles::build(v, None, None, None).unwrap();
            assert_eq!(r.check("GET", "/v1/vpn/status", &status), Access::Allowed);
            assert_eq!(
                r.check("GET", "/v1/openvpn/portforwarded", &status),
                Access::Allowed
            );
            assert_eq!(r.check("GET", "/v1/portforward", &pf), Access::NoRole);
            assert_eq!(r.check("GET", "/v1/vpn/settings", &status), Access::NoRole);
        }
        let r = Roles::build(Version::V3_41, None, None, None).unwrap();
        assert_eq!(r.check("GET", "/v1/portforward", &pf), Access::Allowed);
        let r = Roles::build(Version::Head, None, None, None).unwrap();
        assert_eq!(r.check("GET", "/v1/vpn/status", &status), Access::NoRole);
        assert_eq!(r.describe(), "no roles: every route answers 401");
    }

    #[test]
    fn api_key_role_replaces_the_public_role() {
        let with = req("GET", "/v1/vpn/status").with_header("X-API-Key", "k");
        let query = req("GET", "/v1/vpn/status?api_key=k");
        let without = req("GET", "/v1/vpn/status");
        for v in [
            Version::V3_39,
            Version::V3_40,
            Version::V3_41,
            Version::Head,
        ] {
            let r = Roles::build(v, None, Some("k"), None).unwrap();
            assert_eq!(r.check("GET", "/v1/vpn/status", &with), Access::Allowed);
            assert_eq!(r.check("GET", "/v1/vpn/status", &query), Access::Allowed);
            assert_eq!(
                r.check("GET", "/v1/vpn/status", &without),
                Access::Refused { basic: false }
            );
            let pf = r.check("GET", "/v1/portforward", &with);
            let want = if v.has_portforward_route() {
                Access::Allowed
            } else {
                Access::NoRole
            };
            assert_eq!(pf, want, "{v:?}");
        }
    }

    #[test]
    fn basic_auth_and_the_default_role() {
        let file = "[[roles]]\nname = \"b\"\nauth = \"basic\"\nusername = \"u\"\npassword = \"p\"\n\
                    routes = [\"GET /v1/vpn/status\"]\n";
        let r = Roles::build(Version::V3_41, Some(file), None, None).unwrap();
        let ok = req("GET", "/v1/vpn/status").with_header("Authorization", "Basic dTpw");
        let bad = req("GET", "/v1/vpn/status").with_header("Authorization", "Basic dTpx");
        assert_eq!(r.check("GET", "/v1/vpn/status", &ok), Access::Allowed);
        assert_eq!(
            r.check("GET", "/v1/vpn/status", &bad),
            Access::Refused { basic: true }
        );
        assert_eq!(
            r.check("GET", "/v1/portforward", &ok),
            Access::NoRole,
            "file replaces public"
        );

        let default = r#"{"auth":"apikey","apikey":"d"}"#;
        let r = Roles::build(Version::V3_41, Some(file), None, Some(default)).unwrap();
        let d = req("GET", "/v1/portforward").with_header("X-API-Key", "d");
        assert_eq!(r.check("GET", "/v1/portforward", &d), Access::Allowed);
        assert_eq!(
            r.check("GET", "/v1/vpn/status", &d),
            Access::Refused { basic: true },
            "the default role covers only routes no role lists"
        );
        // Before v3.41 the variable does not exist.
        let r = Roles::build(Version::V3_40, Some(file), None, Some(default)).unwrap();
        assert_eq!(
            r.check("GET", "/v1/openvpn/portforwarded", &d),
            Access::NoRole
        );
        assert!(Roles::build(Version::Head, None, None, Some("nope")).is_err());
        assert_eq!(base64(b"u:p"), "dTpw");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
