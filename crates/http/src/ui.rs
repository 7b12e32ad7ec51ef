//! The operator page ([`caravan_ui`]) under `/ui/`, and Nomad's redirect of `/` to it.
//!
//! Served before routing: `/` answers `307` to `/ui/` (Nomad's `handleRootFallthrough`), `/ui`
//! `301` to `/ui/`, and `/ui/<name>` the embedded asset of that name (`GET`/`HEAD` only) with
//! [`caravan_ui::SECURITY_HEADERS`]: a strict `Content-Security-Policy` and `nosniff`. A name that
//! is not an asset is `404` with the same headers. No token is needed to load the page (it holds
//! no cluster data); every API call the page makes is checked as any other.

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{Method, Response, StatusCode};

use crate::response::{self, Body};
use crate::{ApiError, Ctx, Reply};

/// What Nomad serves under `/ui/` when `ui { enabled = false }`.
pub(crate) const DISABLED_PAGE: &str = "<html><p>Nomad UI is disabled</p></html>";

/// The page's answer for `ctx`, or `None` when the path is not the page's (the API's routes).
/// With the page turned off in `config` (`ui { enabled = false }`, looked up only for a `/ui/`
/// path), every `/ui/` path answers Nomad's stub, as Nomad does; `/` still redirects there.
pub(crate) fn serve(ctx: &Ctx, config: &caravan_agent_core::config::AgentConfig) -> Option<Reply> {
    match ctx.path.as_str() {
        "/" => return Some(Ok(redirect(StatusCode::TEMPORARY_REDIRECT))),
        "/ui" => return Some(Ok(redirect(StatusCode::MOVED_PERMANENTLY))),
        _ => {}
    }
    let name = ctx.path.strip_prefix(caravan_ui::PREFIX)?;
    if !enabled(config) {
        return Some(Ok(response::with_type(
            StatusCode::OK,
            "text/html; charset=utf-8",
            DISABLED_PAGE.as_bytes().to_vec(),
        )));
    }
    Some(asset(ctx, name))
}

/// Whether the configuration leaves the page on (`ui { enabled = false }` turns it off).
pub(crate) fn enabled(config: &caravan_agent_core::config::AgentConfig) -> bool {
    config.nomad_only.nested("ui", "enabled") != Some(&serde_json::Value::Bool(false))
}

/// Every [`label`] of the page's paths: `/`, `/ui` and `/ui/:asset`.
pub(crate) const LABELS: [&str; 3] = ["/", "/ui", "/ui/:asset"];

/// The metrics label of the page's paths (`None` for the API's), so page loads are not counted
/// as `not_found`.
pub(crate) fn label(path: &str) -> Option<&'static str> {
    match path {
        "/" => Some(LABELS[0]),
        "/ui" => Some(LABELS[1]),
        p if p.starts_with(caravan_ui::PREFIX) => Some(LABELS[2]),
        _ => None,
    }
}

fn redirect(status: StatusCode) -> Response<Body> {
    let mut resp = response::empty();
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(caravan_ui::PREFIX));
    resp
}

fn asset(ctx: &Ctx, name: &str) -> Reply {
    if ctx.method != Method::GET && ctx.method != Method::HEAD {
        return Err(ApiError::invalid_method());
    }
    let mut resp = match caravan_ui::asset(name) {
        Some(a) => response::with_type(StatusCode::OK, a.content_type, a.body.to_vec()),
        None => response::error(&ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such page: {}{name}", caravan_ui::PREFIX),
        )),
    };
    for (name, value) in caravan_ui::SECURITY_HEADERS {
        resp.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod label_tests {
    use super::label;

    #[test]
    fn page_paths_get_their_own_metrics_label() {
        for (path, want) in [
            ("/", Some("/")),
            ("/ui", Some("/ui")),
            ("/ui/", Some("/ui/:asset")),
            ("/ui/app.js", Some("/ui/:asset")),
            ("/uix", None),
            ("/v1/agent/self", None),
        ] {
            assert_eq!(label(path), want, "{path}");
        }
    }
}
