//! Hand-written JSON for the fakes: string escaping for answers, and a lookup of one top-level
//! scalar (`"key": 12`, `"key": "text"`, `"key": true`) in the tiny request bodies tests send.
//! Not a general parser: nested values are skipped over only well enough to find the key.

/// A scalar found in a request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// `s` as a JSON string literal, quotes included.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of top-level `key` in the object `body`, if it is a scalar.
pub fn get(body: &str, key: &str) -> Option<Scalar> {
    let mut p = Parser {
        s: body.as_bytes(),
        i: 0,
    };
    p.ws();
    p.eat(b'{')?;
    loop {
        p.ws();
        if p.eat(b'}').is_some() {
            return None;
        }
        let k = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        if k == key {
            return p.scalar();
        }
        p.skip_value()?;
        p.ws();
        p.eat(b',')?;
    }
}

/// `key` as an unsigned integer that fits `T` (e.g. a port), if present and valid.
pub fn get_uint<T: TryFrom<u64>>(body: &str, key: &str) -> Option<T> {
    match get(body, key)? {
        Scalar::Num(n) if n >= 0.0 && n.fract() == 0.0 && n <= u64::MAX as f64 => {
            T::try_from(n as u64).ok()
        }
        _ => None,
    }
}

/// `key` as a signed integer, if present and valid.
pub fn get_int(body: &str, key: &str) -> Option<i64> {
    match get(body, key)? {
        Scalar::Num(n) if n.fract() == 0.0 && n.abs() <= i64::MAX as f64 => Some(n as i64),
        _ => None,
    }
}

/// `key` as a boolean, if present and a boolean.
pub fn get_bool(body: &str, key: &str) -> Option<bool> {
    match get(body, key)? {
        Scalar::Bool(b) => Some(b),
        _ => None,
    }
}

/// `key` as a string, if present and a string.
pub fn get_str(body: &str, key: &str) -> Option<String> {
    match get(body, key)? {
        Scalar::Str(s) => Some(s),
        _ => None,
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
                            let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                            self.i += 4;
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn scalar(&mut self) -> Option<Scalar> {
        match self.peek()? {
            b'"' => self.string().map(Scalar::Str),
            b't' => self.word("true").map(|_| Scalar::Bool(true)),
            b'f' => self.word("false").map(|_| Scalar::Bool(false)),
            b'n' => self.word("null").map(|_| Scalar::Null),
            _ => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                text.parse().ok().map(Scalar::Num)
            }
        }
    }

    fn word(&mut self, w: &str) -> Option<()> {
        let end = self.i + w.len();
        (self.s.get(self.i..end)? == w.as_bytes()).then(|| self.i = end)
    }

    /// Skips any value, nested containers included.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => self.scalar().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        assert_eq!(string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn finds_scalars() {
        let body = r#" { "skip": {"a":[1,{"b":"}"}]}, "port" : 40000, "healthy":false, "status":"st\"op", "n": null }"#;
        assert_eq!(get_uint::<u16>(body, "port"), Some(40000));
        assert_eq!(get_bool(body, "healthy"), Some(false));
        assert_eq!(get_str(body, "status").as_deref(), Some("st\"op"));
        assert_eq!(get(body, "n"), Some(Scalar::Null));
        assert_eq!(get(body, "missing"), None);
        assert_eq!(get(body, "a"), None, "nested keys are not top-level");
    }

    #[test]
    fn rejects_wrong_types_and_ranges() {
        assert_eq!(get_uint::<u16>(r#"{"port":70000}"#, "port"), None);
        assert_eq!(get_uint::<u16>(r#"{"port":-1}"#, "port"), None);
        assert_eq!(get_uint::<u16>(r#"{"port":"1"}"#, "port"), None);
        assert_eq!(get_int(r#"{"code":-3}"#, "code"), Some(-3));
        assert_eq!(get_bool(r#"{"healthy":1}"#, "healthy"), None);
        assert_eq!(get(r#"not json"#, "x"), None);
        assert_eq!(get(r#"{"x":"#, "x"), None);
    }
}
