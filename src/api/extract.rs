//! Request extractors whose rejections are the API's JSON errors: a body that is not JSON is
//! 400 (malformed, not UTF-8, a lone surrogate escape, nested deeper than 128), a JSON body that
//! is not an object or has the wrong shape or a duplicate key 422, a non-empty body whose
//! Content-Type is absent or not JSON 415 (an empty body needs none), a body above the limit 413 (at once when
//! its declared length is already above), a body that does not arrive in time 408; a malformed
//! query string 400, wrong query values 422.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de};
use serde_json::error::Category;

use super::error::ApiError;

/// How long a body may take to arrive once a handler reads it; the router puts it in every
/// request's extensions (`api.body_read_timeout`).
#[derive(Clone, Copy, Debug)]
pub struct BodyReadTimeout(pub Duration);

/// The body read timeout when the router set none.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a Content-Type names JSON (`application/json`, `application/*+json`).
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The declared Content-Length, when there is a readable one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn check_content_type(content_type: Option<&HeaderValue>) -> Result<(), ApiError> {
    match content_type {
        None => Err(ApiError::Unsupported(
            "a request body needs Content-Type: application/json".into(),
        )),
        Some(v) if v.to_str().is_ok_and(is_json_content_type) => Ok(()),
        Some(v) => Err(ApiError::Unsupported(format!(
            "Content-Type {:?} is not JSON; send application/json",
            String::from_utf8_lossy(v.as_bytes())
        ))),
    }
}

/// A JSON body.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be absent (empty body = `T::default()`).
pub struct OptionalJson<T>(pub T);

/// The body within the size and time limits; a non-empty body must not say it is not JSON.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::TooLarge(format!(
            "request body too large (limit {} bytes)",
            super::BODY_LIMIT
        ))
    };
    // Refused before reading: a client declaring a huge body is not waited for.
    if declared_length(req.headers()).is_some_and(|n| n > super::BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let timeout = req
        .extensions()
        .get::<BodyReadTimeout>()
        .map_or(DEFAULT_BODY_READ_TIMEOUT, |t| t.0);
    let bytes = match tokio::time::timeout(timeout, Bytes::from_request(req, state)).await {
        Err(_) => {
            return Err(ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            )));
        }
        Ok(Err(r)) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
        Ok(Err(r)) => return Err(ApiError::Other(r.status(), r.body_text())),
        Ok(Ok(bytes)) => bytes,
    };
    if !bytes.trim_ascii().is_empty() {
        check_content_type(content_type.as_ref())?;
    }
    Ok(bytes)
}

/// A JSON document checked for what `serde_json` lets through when it fills a typed value:
/// duplicate keys (the last would silently win) and, inside fields the type ignores, lone
/// surrogate escapes and unbounded nesting (this pass stops at serde_json's depth limit).
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<Checked>()?;
            if !seen.insert(key) {
                return Err(de::Error::custom("duplicate key in a JSON object"));
            }
        }
        Ok(Checked)
    }
}

fn classify(e: serde_json::Error) -> ApiError {
    match e.classify() {
        Category::Data => ApiError::Unprocessable(format!("invalid request body: {e}")),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
    }
}

/// Parses a JSON object body, classifying the failure as the client's syntax (400) or shape
/// (422) mistake. Every request body of the API is an object.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected JSON".into(),
        ));
    }
    if let Err(e) = std::str::from_utf8(text) {
        return Err(ApiError::BadRequest(format!(
            "malformed JSON: the body is not UTF-8 ({e})"
        )));
    }
    serde_json::from_slice::<Checked>(text).map_err(classify)?;
    if text[0] != b'{' {
        return Err(ApiError::Unprocessable(
            "invalid request body: expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(text).map_err(classify)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.trim_ascii().is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ApiQuery(q)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::Unprocessable(e.body_text()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A path parameter.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(p)) => Ok(ApiPath(p)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for t in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            " application/json ;x=y",
        ] {
            assert!(is_json_content_type(t), "{t}");
        }
        for t in [
            "text/plain",
            "text/json+x",
            "application/jsonx",
            "",
            "+json",
            ";;",
        ] {
            assert!(!is_json_content_type(t), "{t}");
        }
    }

    #[test]
    fn bodies_must_be_one_clean_json_object() {
        #[derive(Debug, Default, serde::Deserialize)]
        struct Any {}
        let ok = |b: &[u8]| parse_json::<Any>(b).is_ok();
        let status = |b: &[u8]| parse_json::<Any>(b).unwrap_err().status().as_u16();
        assert!(ok(b" {\"a\": [1, {\"b\": null}]} "));
        assert_eq!(status(b"[]"), 422);
        assert_eq!(status(b"\"x\""), 422);
        assert_eq!(status(br#"{"a":1,"a":1}"#), 422);
        assert_eq!(status(br#"{"a":"\ud800"}"#), 400);
        assert_eq!(status(b"{\"a\":\"\xc3\x28\"}"), 400);
        assert_eq!(status(br#"{"a":1e400}"#), 400);
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(status(deep.as_bytes()), 400);
        assert_eq!(status(b"  "), 400);
    }
}
