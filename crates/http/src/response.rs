//! Building responses the way Nomad does: compact or pretty JSON, plain-text errors, compression,
//! `Vary` and operator headers.

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, VARY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde::Serialize;

use crate::ApiError;

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// `application/json`.
pub const JSON: &str = "application/json";
/// `text/plain; charset=utf-8`, used for errors.
pub const TEXT_UTF8: &str = "text/plain; charset=utf-8";

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// Encodes a value as Nomad's JSON encoder does: compact with no trailing newline, or with `pretty`
/// 4-space indentation plus one `\n`. `<`, `>` and `&` stay raw; U+2028/U+2029 are escaped.
pub fn encode_json<T: Serialize>(value: &T, pretty: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let written = if pretty {
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        value.serialize(&mut ser)
    } else {
        serde_json::to_writer(&mut out, value)
    };
    if let Err(e) = written {
        // Our DTOs have string keys only, so this cannot happen; say so rather than panic.
        tracing::error!(error = %e, "http: failed to encode response");
        return b"null".to_vec();
    }
    if pretty {
        out.push(b'\n');
    }
    escape_line_separators(out)
}

/// Go's `encoding/json` form (used by the unhealthy `/health` body): compact, with `<`, `>`, `&`
/// escaped as `\u003c`, `\u003e`, `\u0026`.
pub fn encode_json_html_safe<T: Serialize>(value: &T) -> Vec<u8> {
    let raw = encode_json(value, false);
    let mut out = Vec::with_capacity(raw.len());
    for b in raw {
        match b {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            other => out.push(other),
        }
    }
    out
}

/// Replaces raw U+2028/U+2029 (which can only occur inside JSON strings) with escapes.
fn escape_line_separators(json: Vec<u8>) -> Vec<u8> {
    if !json.contains(&0xE2) {
        return json;
    }
    let mut out = Vec::with_capacity(json.len() + 8);
    let mut i = 0;
    while i < json.len() {
        match &json[i..] {
            [0xE2, 0x80, 0xA8, ..] => {
                out.extend_from_slice(b"\\u2028");
                i += 3;
            }
            [0xE2, 0x80, 0xA9, ..] => {
                out.extend_from_slice(b"\\u2029");
                i += 3;
            }
            _ => {
                out.push(json[i]);
                i += 1;
            }
        }
    }
    out
}

/// A `200` JSON response.
pub fn json<T: Serialize>(value: &T, pretty: bool) -> Response<Body> {
    with_type(StatusCode::OK, JSON, encode_json(value, pretty))
}

/// A `200` with a zero-length body and no `Content-Type`.
pub fn empty() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// A response with a status, a content type and a body.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The plain-text response of an error.
pub fn error(e: &ApiError) -> Response<Body> {
    with_type(e.status, TEXT_UTF8, e.message.clone().into_bytes())
}

/// The compression a request asked for (spec §0.4: the first comma-separated token that is exactly
/// `gzip` or `deflate`; none when the request has an `Upgrade` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// gzip.
    Gzip,
    /// Raw DEFLATE, as Go's gorilla/handlers writes it.
    Deflate,
}

impl Encoding {
    /// Reads `Accept-Encoding` and `Upgrade`.
    pub fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
        if headers.contains_key(http::header::UPGRADE) {
            return None;
        }
        let accept = headers.get(http::header::ACCEPT_ENCODING)?.to_str().ok()?;
        accept.split(',').find_map(|token| match token.trim() {
            "gzip" => Some(Encoding::Gzip),
            "deflate" => Some(Encoding::Deflate),
            _ => None,
        })
    }

    /// The `Content-Encoding` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }

    /// Compresses a whole body.
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::default();
        let result = match self {
            Encoding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), level);
                w.write_all(data).and_then(|_| w.finish())
            }
            Encoding::Deflate => {
                let mut w = flate2::write::DeflateEncoder::new(Vec::new(), level);
                w.write_all(data).and_then(|_| w.finish())
            }
        };
        // Writing into a Vec cannot fail.
        result.unwrap_or_default()
    }
}

/// Adds the headers every response carries: `Vary: Accept-Encoding`,
/// `X-Content-Type-Options: nosniff` (error bodies echo request input as text; a browser must
/// not sniff them into HTML) and the operator's `http_api_response_headers`, which may override
/// either.
pub fn add_common_headers(headers: &mut HeaderMap, extra: &[(HeaderName, HeaderValue)]) {
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
}

/// Compresses a buffered response body in place when the client asked for it.
pub async fn compress_response(resp: Response<Body>, encoding: Encoding) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        CONTENT_ENCODING,
        HeaderValue::from_static(encoding.as_str()),
    );
    Response::from_parts(parts, full(encoding.compress(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn compact_and_pretty_json() {
        let mut m = BTreeMap::new();
        m.insert("a", vec![1]);
        m.insert("b", vec![]);
        assert_eq!(encode_json(&m, false), br#"{"a":[1],"b":[]}"#);
        assert_eq!(
            String::from_utf8(encode_json(&m, true)).unwrap(),
            "{\n    \"a\": [\n        1\n    ],\n    \"b\": []\n}\n"
        );
    }

    #[test]
    fn escaping_rules() {
        let s = "<&>\u{1}\u{2028}\u{2029}\n";
        assert_eq!(
            String::from_utf8(encode_json(&s, false)).unwrap(),
            r#""<&>\u0001\u2028\u2029\n""#
        );
        assert_eq!(
            String::from_utf8(encode_json_html_safe(&"<&>")).unwrap(),
            r#""\u003c\u0026\u003e""#
        );
    }

    #[test]
    fn negotiation() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::ACCEPT_ENCODING, v.parse().unwrap());
            Encoding::negotiate(&h)
        };
        assert_eq!(h("gzip"), Some(Encoding::Gzip));
        assert_eq!(h("br, deflate, gzip"), Some(Encoding::Deflate));
        assert_eq!(h("gzip;q=1"), None);
        assert_eq!(h("identity"), None);
        let mut up = HeaderMap::new();
        up.insert(http::header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        up.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(Encoding::negotiate(&up), None);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let z = Encoding::Gzip.compress(b"hello");
        let mut out = String::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello");
    }
}
