//! API-key check of the mutating routes. Clients send the key as `Authorization: Bearer <key>`,
//! `X-API-Key` or `X-API-KEY` (header names are case-insensitive), or as the query parameter
//! `?key=<key>` (except on `/by-label`, whose `key` parameter names a label). No key sent: 401; a
//! wrong key: 403 (the upstream codes); several different keys in one request: 400. Keys are
//! compared in constant time.
//!
//! Open reads are open to all, but what controls an engine (a stream's `command_url` and
//! `stat_url`) is shown only to a reader with the key (`Reader`), or to everyone when no key is
//! set.

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiContext;
use super::error::ApiError;

/// Compares two byte strings without an early exit on the first difference (only the lengths
/// can be learned from timing).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff: u8 = 0;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0 && a.len() == b.len()
}

/// The keys a request presents: the Bearer token, the `X-API-Key` header and `?key=`.
fn presented<'a>(headers: &'a HeaderMap, query_key: Option<&'a str>) -> Vec<&'a [u8]> {
    let mut keys = Vec::new();
    if let Some(k) = query_key.map(|k| k.trim().as_bytes())
        && !k.is_empty()
    {
        keys.push(k);
    }
    for value in headers.get_all(header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            let token = bytes[7..].trim_ascii();
            if !token.is_empty() {
                keys.push(token);
            }
        }
    }
    for value in headers.get_all("x-api-key") {
        let token = value.as_bytes().trim_ascii();
        if !token.is_empty() {
            keys.push(token);
        }
    }
    keys
}

/// Checks the request's key (headers, and `?key=` when given) against the configured one.
pub fn check(headers: &HeaderMap, query_key: Option<&str>, key: &str) -> Result<(), ApiError> {
    let keys = presented(headers, query_key);
    let Some(first) = keys.first() else {
        return Err(ApiError::MissingKey);
    };
    // One key per request: a client sending two different ones is confused, not authorized.
    if keys.iter().any(|k| !constant_time_eq(k, first)) {
        return Err(ApiError::BadRequest(
            "several different API keys sent; send one key in one header".into(),
        ));
    }
    if constant_time_eq(first, key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::WrongKey)
    }
}

/// The `key` query parameter, percent-decoded (a malformed query string has none).
pub fn query_key(uri: &Uri) -> Option<String> {
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    params.into_iter().find(|(k, _)| k == "key").map(|(_, v)| v)
}

/// Who reads an open route: `trusted` when no API key is set or the request carries it (in a
/// header or as `?key=`); anything else (no key, a wrong one) reads as the public.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reader {
    pub trusted: bool,
}

impl FromRequestParts<ApiContext> for Reader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Reader, std::convert::Infallible> {
        let trusted = ctx
            .api_key
            .as_deref()
            .is_none_or(|key| check(&parts.headers, query_key(&parts.uri).as_deref(), key).is_ok());
        Ok(Reader { trusted })
    }
}

/// Middleware of the mutating routes: the key in a header or as `?key=`.
pub async fn require_key(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    let query = query_key(req.uri());
    refuse_or_run(&ctx, query.as_deref(), req, next).await
}

/// Middleware of `/by-label`, whose `key` query parameter is the label's name: the API key in a
/// header only.
pub async fn require_key_in_headers(
    State(ctx): State<ApiContext>,
    req: Request,
    next: Next,
) -> Response {
    refuse_or_run(&ctx, None, req, next).await
}

async fn refuse_or_run(
    ctx: &ApiContext,
    query_key: Option<&str>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = ctx.api_key.as_deref()
        && let Err(e) = check(req.headers(), query_key, key)
    {
        tracing::info!(path = %req.uri().path(), status = %e.status(), "API request refused: API key");
        return e.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn constant_time_eq_matches_only_equal_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_and_x_api_key_forms() {
        assert!(check(&headers(&[("authorization", "Bearer k1")]), None, "k1").is_ok());
        assert!(check(&headers(&[("authorization", "bearer k1")]), None, "k1").is_ok());
        assert!(check(&headers(&[("x-api-key", "k1")]), None, "k1").is_ok());
        assert!(check(&headers(&[("X-API-KEY", "k1")]), None, "k1").is_ok());
        assert!(matches!(
            check(&headers(&[]), None, "k1"),
            Err(ApiError::MissingKey)
        ));
        assert!(matches!(
            check(&headers(&[("authorization", "Basic azE6")]), None, "k1"),
            Err(ApiError::MissingKey)
        ));
        assert!(matches!(
            check(&headers(&[("authorization", "Bearer nope")]), None, "k1"),
            Err(ApiError::WrongKey)
        ));
        assert!(matches!(
            check(&headers(&[("x-api-key", "k")]), None, "k1"),
            Err(ApiError::WrongKey)
        ));
        // The query form alone; beside a different header key it is one key too many.
        assert!(check(&headers(&[]), Some("k1"), "k1").is_ok());
        assert!(matches!(
            check(&headers(&[("x-api-key", "nope")]), Some("k1"), "k1"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            check(&headers(&[]), Some("k2"), "k1"),
            Err(ApiError::WrongKey)
        ));
        assert!(matches!(
            check(&headers(&[]), Some(""), "k1"),
            Err(ApiError::MissingKey)
        ));
        let uri: Uri = "/gc?x=1&key=a%2Bb".parse().unwrap();
        assert_eq!(query_key(&uri).as_deref(), Some("a+b"));
        assert_eq!(query_key(&"/gc".parse().unwrap()), None);
        // The same key in several headers (and the query) is one key.
        assert!(
            check(
                &headers(&[("authorization", "Bearer k1"), ("x-api-key", "k1")]),
                Some("k1"),
                "k1"
            )
            .is_ok()
        );
    }

    #[test]
    fn several_different_keys_are_a_bad_request() {
        for pairs in [
            &[("authorization", "Bearer nope"), ("x-api-key", "k1")][..],
            &[("x-api-key", "k1"), ("x-api-key", "k2")][..],
            &[
                ("authorization", "Bearer k1"),
                ("authorization", "Bearer k2"),
            ][..],
        ] {
            assert!(
                matches!(
                    check(&headers(pairs), None, "k1"),
                    Err(ApiError::BadRequest(_))
                ),
                "{pairs:?}"
            );
        }
    }
}
