//! `/v1/agent/keyring/{list,install,use,remove}` (spec §12): server only (`501 Invalid method`
//! on a client), any method, `agent:write` even for `list`, then the operation; the key of
//! `install`, `use` and `remove` comes as `{"Key": "<base64>"}` and is checked here, once, by
//! the domain's rules, before any member is asked.

use caravan_agent_core::acl::Acl;
use caravan_agent_core::keyring::KeyringOp;
use http::StatusCode;
use serde::Deserialize;

use crate::app::Caps;
use crate::dto::KeyringResponse;
use crate::{ApiError, Ctx, Reply, response};

/// Nomad's `KeyringRequest`.
#[derive(Deserialize, Default)]
struct KeyringRequest {
    #[serde(rename = "Key", default)]
    key: String,
}

pub(crate) async fn handle(caps: &Caps, ctx: &Ctx, op: &str) -> Reply {
    if !caps.config().server.enabled {
        return Err(ApiError::wrong_agent_kind());
    }
    caps.require(ctx.token.as_deref(), Acl::allow_agent_write)?;
    let key = match op {
        "list" => String::new(),
        "install" | "use" | "remove" => body_key(&ctx.body)?,
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "resource not found")),
    };
    let Some(op) = KeyringOp::from_name(op, key) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "resource not found"));
    };
    op.key().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let answer = caps
        .keyring()?
        .keyring(op)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let body = KeyringResponse {
        messages: answer.messages,
        keys: answer.keys,
        num_nodes: answer.num_nodes,
    };
    Ok(response::json(&body, ctx.query.pretty()))
}

/// The `Key` of a request body; an empty body is `400 Request body is empty`.
fn body_key(body: &[u8]) -> Result<String, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("Request body is empty"));
    }
    serde_json::from_slice::<KeyringRequest>(body)
        .map(|r| r.key)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}
