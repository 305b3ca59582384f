//! The role file's text (`/gluetun/auth/config.toml`, TOML with `[[roles]]` tables of `name`,
//! `auth`, `apikey`, `username`, `password`, `routes`) read by a small parser of the TOML subset
//! role files use: comments, `[[roles]]` headers, `key = "string"` / `'literal'` and (multi-line)
//! string arrays. Keys match case-insensitively, as go-toml matches Gluetun's field names; anything
//! else (another table, an unknown key, a number, a bad string) is an error naming the line.

use super::roles::Role;

/// A parsed value.
enum Value {
    Str(String),
    Array(Vec<String>),
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

/// Parses a role file into its roles; errors name the line.
pub fn parse_file(text: &str) -> Result<Vec<Role>, String> {
    let mut p = Parser {
        chars: text.chars().peekable(),
        line: 1,
    };
    let mut roles: Vec<Role> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    loop {
        p.skip_blank(true);
        let Some(&c) = p.chars.peek() else {
            return Ok(roles);
        };
        if c == '[' {
            p.chars.next();
            let line = p.line;
            if p.chars.peek() != Some(&'[') {
                return Err(format!(
                    "line {line}: tables [..] are not supported; role files use [[roles]]"
                ));
            }
            p.chars.next();
            p.skip_blank(false);
            let name = p.key()?;
            p.skip_blank(false);
            if !(p.eat(']') && p.eat(']')) {
                return Err(format!("line {line}: expected ]] after [[{name}"));
            }
            if !name.eq_ignore_ascii_case("roles") {
                return Err(format!(
                    "line {line}: unknown table [[{name}]]; the only table is [[roles]]"
                ));
            }
            p.end_of_line()?;
            roles.push(Role::default());
            seen.clear();
            continue;
        }
        let line = p.line;
        let key = p.key()?;
        p.skip_blank(false);
        if !p.eat('=') {
            return Err(format!("line {line}: expected = after the key {key:?}"));
        }
        p.skip_blank(false);
        let value = p.value()?;
        p.end_of_line()?;
        let Some(role) = roles.last_mut() else {
            return Err(format!(
                "line {line}: key {key:?} outside a [[roles]] table"
            ));
        };
        let lower = key.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(format!(
                "line {line}: key {key:?} defined twice in one role"
            ));
        }
        seen.push(lower.clone());
        match (lower.as_str(), value) {
            ("routes", Value::Array(routes)) => role.routes = routes,
            ("routes", Value::Str(_)) => {
                return Err(format!("line {line}: routes must be an array of strings"));
            }
            (field @ ("name" | "auth" | "apikey" | "username" | "password"), Value::Str(s)) => {
                match field {
                    "name" => role.name = s,
                    "auth" => role.auth = s,
                    "apikey" => role.apikey = s,
                    "username" => role.username = s,
                    _ => role.password = s,
                }
            }
            ("name" | "auth" | "apikey" | "username" | "password", Value::Array(_)) => {
                return Err(format!("line {line}: {key} must be a string"));
            }
            _ => {
                return Err(format!(
                    "line {line}: unknown key {key:?} (a role has name, auth, apikey, username, \
                     password, routes)"
                ));
            }
        }
    }
}

impl Parser<'_> {
    fn eat(&mut self, c: char) -> bool {
        if self.chars.peek() == Some(&c) {
            self.chars.next();
            true
        } else {
            false
        }
    }

    /// Skips spaces, tabs and comments, and newlines too when `newlines`.
    fn skip_blank(&mut self, newlines: bool) {
        while let Some(&c) = self.chars.peek() {
            match c {
                ' ' | '\t' | '\r' => {
                    self.chars.next();
                }
                '\n' if newlines => {
                    self.line += 1;
                    self.chars.next();
                }
                '#' => {
                    while self.chars.peek().is_some_and(|&c| c != '\n') {
                        self.chars.next();
                    }
                }
                _ => return,
            }
        }
    }

    fn end_of_line(&mut self) -> Result<(), String> {
        self.skip_blank(false);
        match self.chars.next() {
            None => Ok(()),
            Some('\n') => {
                self.line += 1;
                Ok(())
            }
            Some(c) => Err(format!(
                "line {}: unexpected {c:?} after the value",
                self.line
            )),
        }
    }

    /// A bare key (`A-Za-z0-9_-`) or a quoted one.
    fn key(&mut self) -> Result<String, String> {
        match self.chars.peek() {
            Some('"') | Some('\'') => match self.value()? {
                Value::Str(s) => Ok(s),
                Value::Array(_) => unreachable!("a quote starts a string"),
            },
            _ => {
                let mut key = String::new();
                while let Some(&c) = self.chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        key.push(c);
                        self.chars.next();
                    } else {
                        break;
                    }
                }
                if key.is_empty() {
                    let found = self
                        .chars
                        .peek()
                        .map_or("the end".into(), |c| format!("{c:?}"));
                    return Err(format!("line {}: expected a key, found {found}", self.line));
                }
                Ok(key)
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        let line = self.line;
        match self.chars.next() {
            Some('"') => {
                if self.chars.peek() == Some(&'"') {
                    self.chars.next();
                    if self.chars.peek() == Some(&'"') {
                        return Err(format!(
                            "line {line}: multi-line strings are not supported here"
                        ));
                    }
                    return Ok(Value::Str(String::new()));
                }
                self.basic_string(line).map(Value::Str)
            }
            Some('\'') => {
                let mut s = String::new();
                loop {
                    match self.chars.next() {
                        Some('\'') => return Ok(Value::Str(s)),
                        Some('\n') | None => {
                            return Err(format!("line {line}: unterminated string"));
                        }
                        Some(c) => s.push(c),
                    }
                }
            }
            Some('[') => {
                let mut items = Vec::new();
                loop {
                    self.skip_blank(true);
                    if self.eat(']') {
                        return Ok(Value::Array(items));
                    }
                    match self.value()? {
                        Value::Str(s) => items.push(s),
                        Value::Array(_) => {
                            return Err(format!(
                                "line {}: nested arrays are not allowed in a role",
                                self.line
                            ));
                        }
                    }
                    self.skip_blank(true);
                    if self.eat(']') {
                        return Ok(Value::Array(items));
                    }
                    if !self.eat(',') {
                        return Err(format!(
                            "line {}: expected , or ] in the array started on line {line}",
                            self.line
                        ));
                    }
                }
            }
            Some(c) => Err(format!(
                "line {line}: values must be strings or arrays of strings, found {c:?}"
            )),
            None => Err(format!("line {line}: missing value")),
        }
    }

    fn basic_string(&mut self, line: usize) -> Result<String, String> {
        let mut s = String::new();
        loop {
            match self.chars.next() {
                Some('"') => return Ok(s),
                Some('\\') => {
                    let c = match self.chars.next() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some(u @ ('u' | 'U')) => {
                            let len = if u == 'u' { 4 } else { 8 };
                            let hex: String = (0..len).filter_map(|_| self.chars.next()).collect();
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| {
                                    format!("line {line}: bad unicode escape \\{u}{hex}")
                                })?
                        }
                        other => {
                            return Err(format!("line {line}: bad escape \\{other:?} in a string"));
                        }
                    };
                    s.push(c);
                }
                Some('\n') | None => return Err(format!("line {line}: unterminated string")),
                Some(c) => s.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACEVISOR_341: &str = r#"
# acevisor's role
[[roles]]
name = "acevisor"   # trailing comment
auth = "apikey"
apikey = "k3y"
routes = [
  "GET /v1/vpn/status",
  "GET /v1/portforward", # current route
  'GET /v1/openvpn/portforwarded',
  "GET /v1/publicip/ip",
]

[[roles]]
name = "admin"
auth = "basic"
username = "ad\"min"
password = "p\u00e4ss"
routes = ["PUT /v1/vpn/status"]
"#;

    #[test]
    fn parses_the_role_file_subset() {
        let roles = parse_file(ACEVISOR_341).unwrap();
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0].name, "acevisor");
        assert_eq!(roles[0].apikey, "k3y");
        assert_eq!(roles[0].routes.len(), 4);
        assert_eq!(roles[0].routes[2], "GET /v1/openvpn/portforwarded");
        assert_eq!(roles[1].username, "ad\"min");
        assert_eq!(roles[1].password, "päss");
        assert_eq!(parse_file("# nothing\n\n").unwrap(), Vec::new());
        let upper = parse_file("[[Roles]]\nName = \"x\"\nAUTH = \"none\"\nroutes = []").unwrap();
        assert_eq!(
            upper[0].auth, "none",
            "go-toml matches fields case-insensitively"
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases = [
            (
                "name = \"x\"",
                "line 1: key \"name\" outside a [[roles]] table",
            ),
            ("[roles]\n", "line 1: tables [..] are not supported"),
            ("[[users]]\n", "line 1: unknown table [[users]]"),
            ("[[roles]]\nrole = \"x\"", "line 2: unknown key \"role\""),
            ("[[roles]]\nauth = none", "line 2: values must be strings"),
            (
                "[[roles]]\nroutes = [\"a\"\n\"b\"]",
                "line 3: expected , or ]",
            ),
            ("[[roles]]\nname = \"x", "line 2: unterminated string"),
            (
                "[[roles]]\nname = \"a\" \"b\"",
                "line 2: unexpected '\"' after the value",
            ),
            (
                "[[roles]]\nname = \"a\"\nname = \"b\"",
                "line 3: key \"name\" defined twice",
            ),
            (
                "[[roles]]\nroutes = \"GET /v1/version\"",
                "routes must be an array",
            ),
            ("[[roles]]\nname = [\"a\"]", "name must be a string"),
            ("[[roles]]\nname = \"\"\"x\"\"\"", "multi-line strings"),
        ];
        for (text, want) in cases {
            let err = parse_file(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
