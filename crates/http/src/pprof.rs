//! `/v1/agent/pprof/<name>` (spec §9): parameter rules, availability, and the headers per
//! profile. Collecting profiles is the agent's job ([`Debugging::profile`](crate::Debugging::profile)).

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::api::ProfileRequest;
use crate::app::Caps;
use crate::handlers::local_target;
use crate::response::{self, Body};
use crate::{ApiError, Ctx};

/// Profiles Go's runtime names; the ones without a Rust equivalent answer `501`.
pub(crate) const NAMED_PROFILES: [&str; 6] = [
    "goroutine",
    "threadcreate",
    "heap",
    "allocs",
    "block",
    "mutex",
];

fn int_param(ctx: &Ctx, key: &str) -> i64 {
    ctx.query.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Serves one profile request.
pub(crate) async fn pprof(caps: &Caps, ctx: &Ctx, name: &str) -> Result<Response<Body>, ApiError> {
    if name.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Invalid method"));
    }
    let target = local_target(
        caps,
        ctx,
        "Cannot target node and server simultaneously",
        StatusCode::INTERNAL_SERVER_ERROR,
    )?;
    // agent:write first (ACLs off counts as holding it), then the debug check at the target.
    if !caps
        .authorize(ctx.token.as_deref())
        .map_err(|_| ApiError::permission_denied())?
        .allow_agent_write()
    {
        return Err(ApiError::permission_denied());
    }
    caps.require_debug(ctx.token.as_deref())?;
    // Non-positive (or unparsable) is 1; above the bound is `400 seconds must be at most 3600`,
    // checked by the request type before the profile name is looked up.
    let seconds = u64::try_from(int_param(ctx, "seconds").max(1)).unwrap_or(1);
    let debug = int_param(ctx, "debug");
    let gc = int_param(ctx, "gc");
    let effective = match name {
        "cmdline" | "profile" | "trace" => name.to_string(),
        _ => ctx.query.get("profile").unwrap_or(name).to_string(),
    };
    let request = ProfileRequest::new(effective.clone(), seconds, debug, gc)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let known = matches!(effective.as_str(), "cmdline" | "profile" | "trace")
        || NAMED_PROFILES.contains(&effective.as_str());
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Pprof profile not found profile: {effective}"),
        ));
    }
    let body = match target {
        Some(t) if t.is_remote() => {
            caps.forwarder()?
                .remote_profile(t.remote(), ctx.token.as_deref(), request)
                .await?
        }
        _ => caps.debugging()?.profile(request).await?,
    };
    Ok(with_headers(&effective, debug, body))
}

fn with_headers(name: &str, debug: i64, body: Vec<u8>) -> Response<Body> {
    let text = name == "cmdline" || (debug != 0 && !matches!(name, "profile" | "trace"));
    let content_type = if text {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let mut resp = Response::new(response::full(body));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    if !text && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(http::header::CONTENT_DISPOSITION, v);
    }
    resp
}
