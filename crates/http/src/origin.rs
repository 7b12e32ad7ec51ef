//! Cross-site and DNS-rebinding guards for the whole API, now that a browser page talks to it.
//!
//! - **Rebinding.** An agent whose HTTP listener is bound to a loopback address answers only
//!   requests whose `Host` (or HTTP/2 `:authority`) names a loopback address, `localhost` (or a
//!   name under `.localhost`, which browsers resolve to loopback themselves) or the agent's own
//!   node name. A web page whose name an attacker re-points at 127.0.0.1 sends its own name as
//!   `Host` and is refused, so it cannot read the API through the victim's browser. A request
//!   without any host (HTTP/1.0 tools) is served: browsers always send one.
//! - **Cross-site writes.** A state-changing request (any method but `GET`, `HEAD` and
//!   `OPTIONS`) that carries an `Origin` is served only when that origin is the agent's own
//!   (its `host[:port]` equals the request's `Host`) or the operator's
//!   `http_api_response_headers` allow it (`Access-Control-Allow-Origin` of `*` or that exact
//!   origin). A browser always sends `Origin` on such requests; command-line clients and SDKs
//!   send none and are not affected.
//!
//! Both answer `403` with a message naming the header and the rule. A request another agent
//! forwarded (over the agent RPC, never from a browser) was checked by the agent that received it.

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::app::LiveConfig;
use crate::{ApiError, Ctx};

/// Checks one request before it is routed.
pub(crate) fn check(
    headers: &HeaderMap,
    uri: &Uri,
    ctx: &Ctx,
    live: &LiveConfig,
) -> Result<(), ApiError> {
    if ctx.hops > 0 {
        return Ok(());
    }
    let config = live.config();
    let host = match headers.get(HOST) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "Host header is not valid text")
        })?),
        None => uri.authority().map(|a| a.as_str()),
    };
    if config.addresses.http.is_loopback()
        && let Some(host) = host
        && !local_host(host, &config.node_name)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} refused: this agent listens on a loopback address and answers only \
                 localhost, loopback addresses and its node name {:?} (DNS rebinding guard)",
                config.node_name
            ),
        ));
    }
    if matches!(ctx.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes());
    if host.is_some_and(|host| same_origin(&origin, host)) {
        return Ok(());
    }
    let headers = live.headers();
    let allowed = headers.iter().any(|(name, value)| {
        name == http::header::ACCESS_CONTROL_ALLOW_ORIGIN
            && value
                .to_str()
                .is_ok_and(|v| v.trim() == "*" || v.trim() == origin)
    });
    if allowed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "cross-site request refused: {} with Origin {origin:?}, which is not this agent \
             (Host {:?}) and which http_api_response_headers' Access-Control-Allow-Origin does not allow",
            ctx.method,
            host.unwrap_or("")
        ),
    ))
}

/// `host[:port]` without its port: `[::1]:4646` -> `::1`, `localhost:80` -> `localhost`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

/// Whether `host` names this machine's loopback or the agent itself.
fn local_host(host: &str, node_name: &str) -> bool {
    let name = host_name(host.trim()).trim_end_matches('.');
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let lower = name.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || (!node_name.is_empty() && lower == node_name.to_ascii_lowercase())
}

/// Whether `origin` (`scheme://host[:port]`) is the site the request was sent to.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.trim().split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let strip = |a: &str| {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default_port)
            .map(str::to_string)
            .unwrap_or(a)
    };
    strip(authority) == strip(host.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts() {
        let check = |host: &str, want: bool| {
            assert_eq!(local_host(host, "node-a"), want, "{host}");
        };
        check("127.0.0.1:4646", true);
        check("127.0.0.1", true);
        check("127.9.8.7:1", true);
        check("[::1]:4646", true);
        check("::1", true);
        check("localhost:4646", true);
        check("LOCALHOST.", true);
        check("app.localhost:4646", true);
        check("node-a:4646", true);
        check("Node-A", true);
        check("evil.example:4646", false);
        check("localhost.evil.example", false);
        check("10.0.0.1:4646", false);
        check("[::2]:4646", false);
        check("", false);
    }

    #[test]
    fn origins() {
        let check = |origin: &str, host: &str, want: bool| {
            assert_eq!(same_origin(origin, host), want, "{origin} vs {host}");
        };
        check("http://127.0.0.1:4646", "127.0.0.1:4646", true);
        check("http://LOCALHOST:4646", "localhost:4646", true);
        check("http://example.com", "example.com:80", true);
        check("https://example.com:443", "example.com", true);
        check("http://127.0.0.1:4647", "127.0.0.1:4646", false);
        check("http://evil.example", "127.0.0.1:4646", false);
        check("null", "127.0.0.1:4646", false);
        check("file://", "127.0.0.1:4646", false);
    }
}
