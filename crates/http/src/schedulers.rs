//! `/v1/agent/schedulers` and `/v1/agent/schedulers/config` (spec §10–11).

use caravan_agent_core::acl::Acl;
use caravan_agent_core::sched::SchedulerConfig;
use http::{Method, Response};
use serde_json::Value;

use crate::app::Caps;
use crate::dto::{SchedulerConfigResponse, WorkerDto, WorkersResponse};
use crate::response::{self, Body};
use crate::{ApiError, Ctx, Reply, only};

fn server_only(caps: &Caps) -> Result<(), ApiError> {
    if caps.config().server.enabled {
        Ok(())
    } else {
        Err(ApiError::bad_request("Server only endpoint"))
    }
}

/// `GET /v1/agent/schedulers`: kind, method, ACL.
pub(crate) fn workers(caps: &Caps, ctx: &Ctx) -> Reply {
    server_only(caps)?;
    only(ctx, &[Method::GET])?;
    caps.require(ctx.token.as_deref(), Acl::allow_agent_read)?;
    let list = caps.schedulers()?.schedulers().unwrap_or_default();
    let body = WorkersResponse {
        server_id: caps.config().member_name(),
        schedulers: list.iter().map(WorkerDto::from).collect(),
    };
    Ok(response::json(&body, ctx.query.pretty()))
}

/// `/v1/agent/schedulers/config`: kind, method, ACL, body, validation.
pub(crate) fn config(caps: &Caps, ctx: &Ctx) -> Reply {
    server_only(caps)?;
    let write = match ctx.method {
        Method::GET => false,
        Method::PUT | Method::POST => true,
        _ => return Err(ApiError::invalid_method()),
    };
    if write {
        caps.require(ctx.token.as_deref(), Acl::allow_agent_write)?;
        let pool = caps.schedulers()?;
        let wanted = decode(&ctx.body)?;
        if !wanted.is_valid(pool.num_cpus()) {
            return Err(ApiError::bad_request("Invalid request"));
        }
        let now = pool.set_scheduler_config(wanted);
        return Ok(config_response(caps, now, ctx));
    }
    caps.require(ctx.token.as_deref(), Acl::allow_agent_read)?;
    let now = caps
        .schedulers()?
        .scheduler_config()
        .unwrap_or(SchedulerConfig {
            num_schedulers: 0,
            enabled_schedulers: Vec::new(),
        });
    Ok(config_response(caps, now, ctx))
}

fn config_response(caps: &Caps, c: SchedulerConfig, ctx: &Ctx) -> Response<Body> {
    let body = SchedulerConfigResponse {
        server_id: caps.config().member_name(),
        num_schedulers: c.num_schedulers,
        enabled_schedulers: c.enabled_schedulers,
    };
    response::json(&body, ctx.query.pretty())
}

/// Go `encoding/json` semantics for `{"num_schedulers": int, "enabled_schedulers": [string]}`:
/// only the first value is read, keys match exactly or case-insensitively, unknown keys are
/// ignored, `null` leaves zero values.
fn decode(body: &[u8]) -> Result<SchedulerConfig, ApiError> {
    let invalid = |m: String| ApiError::bad_request(format!("Invalid request: {m}"));
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "Invalid request: Request body is empty",
        ));
    }
    let first = serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
        .unwrap_or(Ok(Value::Null))
        .map_err(|e| invalid(e.to_string()))?;
    let mut config = SchedulerConfig {
        num_schedulers: 0,
        enabled_schedulers: Vec::new(),
    };
    let obj = match first {
        Value::Null => return Ok(config),
        Value::Object(o) => o,
        other => {
            return Err(invalid(format!(
                "json: cannot unmarshal {} into Go value of type structs.SchedulerWorkerPoolArgs",
                go_kind(&other)
            )));
        }
    };
    let field = |name: &str| {
        obj.get(name).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    };
    let type_error = |v: &Value, field: &str, go_type: &str| {
        invalid(format!(
            "json: cannot unmarshal {} into Go struct field SchedulerWorkerPoolArgs.{field} of type {go_type}",
            go_kind(v)
        ))
    };
    match field("num_schedulers") {
        None | Some(Value::Null) => {}
        Some(v) => {
            config.num_schedulers = v
                .as_i64()
                .ok_or_else(|| type_error(v, "num_schedulers", "int"))?;
        }
    }
    match field("enabled_schedulers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let s = item
                    .as_str()
                    .ok_or_else(|| type_error(item, "enabled_schedulers", "string"))?;
                config.enabled_schedulers.push(s.to_string());
            }
        }
        Some(v) => return Err(type_error(v, "enabled_schedulers", "[]string")),
    }
    Ok(config)
}

fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_rules() {
        let ok = decode(
            br#"{"num_schedulers": 1, "enabled_schedulers": ["_core"], "server_id": "x"} trailing"#,
        )
        .unwrap();
        assert_eq!(ok.num_schedulers, 1);
        let ci = decode(br#"{"NUM_SCHEDULERS": 2, "Enabled_Schedulers": ["_core"]}"#).unwrap();
        assert_eq!((ci.num_schedulers, ci.enabled_schedulers.len()), (2, 1));
        let pascal = decode(br#"{"NumSchedulers": 2}"#).unwrap();
        assert_eq!(pascal.num_schedulers, 0, "no underscore, no match");
        assert_eq!(decode(b"null").unwrap().num_schedulers, 0);
        let e = |b: &[u8]| decode(b).unwrap_err().message;
        assert_eq!(e(b""), "Invalid request: Request body is empty");
        assert!(e(b"{nope").starts_with("Invalid request: "));
        assert!(e(br#"{"num_schedulers": "2"}"#).contains("cannot unmarshal string into Go struct field SchedulerWorkerPoolArgs.num_schedulers of type int"));
        assert!(e(br#"{"num_schedulers": 1.5}"#).contains("of type int"));
        assert!(e(br#"{"enabled_schedulers": "x"}"#).contains("of type []string"));
        assert!(e(b"[1]").contains("cannot unmarshal array"));
    }
}
