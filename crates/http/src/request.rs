//! Reading requests the way Nomad does: query parameters, `?pretty`, tokens, generic parameters.

use std::time::Duration;

use caravan_agent_core::query::ReadOptions;
use http::HeaderMap;

use crate::ApiError;

/// Decoded query parameters, keeping repeats and order.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes a raw query string (`a=1&b=%20`); `None` means no query.
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Query { pairs }
    }

    /// Whether the key is present (even with an empty value).
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// The first value of a key; `""` for `?key` with no value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a key, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of a key, owned.
    pub fn owned(&self, key: &str) -> Vec<String> {
        self.all(key).into_iter().map(str::to_string).collect()
    }

    /// Nomad's `?pretty` rule: on when present with an empty value or any value but `0`.
    pub fn pretty(&self) -> bool {
        self.get("pretty").is_some_and(|v| v != "0")
    }

    /// Nomad's generic parameter checks (`stale`, `per_page`, `wait`, `index`), spec §0.5.
    pub fn check_generic(&self) -> Result<(), ApiError> {
        self.read_options().map(|_| ())
    }

    /// The generic parameters of a state read, checked as [`Query::check_generic`] does (same
    /// order, same `400` texts): `stale` (Go `ParseBool`; present with an empty value, as in
    /// `?stale`, means true), `index` (a `u64`) and `wait` (a Go duration). An empty `index` or
    /// `wait` counts as not given.
    pub fn read_options(&self) -> Result<ReadOptions, ApiError> {
        let stale = match self.get("stale") {
            None => false,
            Some("") => true,
            Some(v) => parse_bool(v).ok_or_else(|| {
                ApiError::bad_request("Expect `true` or `false` for `stale` query string parameter")
            })?,
        };
        if let Some(v) = self.get("per_page")
            && v.parse::<i32>().is_err()
        {
            return Err(ApiError::bad_request(
                "Expect a number for `per_page` query string parameter",
            ));
        }
        let wait = match self.get("wait") {
            None | Some("") => Duration::ZERO,
            Some(v) => caravan_agent_core::duration::parse_go_duration(v)
                .map_err(|_| ApiError::bad_request("Invalid wait time"))?,
        };
        let min_index = match self.get("index") {
            None | Some("") => 0,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request("Invalid index"))?,
        };
        Ok(ReadOptions {
            stale,
            min_index,
            wait,
        })
    }
}

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The ACL token of a request (spec §0.6): `X-Nomad-Token`, else `Authorization: Bearer <token>`.
pub fn extract_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get("x-nomad-token") {
        let token = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
        return Some(token).filter(|t| !t.is_empty());
    }
    let auth = headers.get(http::header::AUTHORIZATION)?;
    let auth = String::from_utf8_lossy(auth.as_bytes());
    let (scheme, rest) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim().split(' ').next().unwrap_or("").trim();
    Some(token.to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn pretty_rule() {
        for (q, want) in [
            ("pretty", true),
            ("pretty=1", true),
            ("pretty=false", true),
            ("pretty=0", false),
            ("", false),
        ] {
            assert_eq!(Query::parse(Some(q)).pretty(), want, "{q}");
        }
    }

    #[test]
    fn generic_param_errors() {
        let cases = [
            (
                "stale=maybe",
                "Expect `true` or `false` for `stale` query string parameter",
            ),
            (
                "per_page=x",
                "Expect a number for `per_page` query string parameter",
            ),
            (
                "per_page=99999999999",
                "Expect a number for `per_page` query string parameter",
            ),
            ("wait=5", "Invalid wait time"),
            ("index=-1", "Invalid index"),
        ];
        for (q, want) in cases {
            let e = Query::parse(Some(q)).check_generic().unwrap_err();
            assert_eq!((e.status.as_u16(), e.message.as_str()), (400, want));
        }
        for q in [
            "stale",
            "stale=true",
            "wait=5s",
            "index=7",
            "per_page=3",
            "region=x",
        ] {
            assert!(Query::parse(Some(q)).check_generic().is_ok(), "{q}");
        }
    }

    #[test]
    fn token_extraction_order() {
        let t = |h: &[(&str, &str)]| extract_token(&headers(h));
        assert_eq!(t(&[("X-Nomad-Token", "  abc ")]).as_deref(), Some("abc"));
        assert_eq!(
            t(&[("X-Nomad-Token", "a"), ("Authorization", "Bearer b")]).as_deref(),
            Some("a")
        );
        assert_eq!(
            t(&[("Authorization", "bEaReR tok extra")]).as_deref(),
            Some("tok")
        );
        assert_eq!(t(&[("Authorization", "foobar")]), None);
        assert_eq!(t(&[("Authorization", "Basic x")]), None);
        assert_eq!(t(&[]), None);
    }

    #[test]
    fn repeated_and_encoded_values() {
        let q = Query::parse(Some("address=a%3A1&address=b&type="));
        assert_eq!(q.all("address"), vec!["a:1", "b"]);
        assert!(q.has("type"));
        assert_eq!(q.get("type"), Some(""));
    }
}
