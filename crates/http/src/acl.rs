//! ACL checks at the edge (spec §0.6–0.7) and the ACL API (`/v1/acl/*`).

use caravan_agent_core::acl::{Acl, AclWrite, Token, TokenType};
use http::{Method, Response, StatusCode};

use crate::api::{AclWriteError, AgentApi};
use crate::dto::{PolicyDto, PolicyRequest, TokenDto, TokenRequest};
use crate::response::{self, Body};
use crate::{ApiError, Ctx};

type Reply = Result<Response<Body>, ApiError>;

/// The caller's permissions: everything when ACLs are off; else its token's (anonymous policy
/// without a token). Authentication failures are `403` with their reason.
pub fn authorize<A: AgentApi>(agent: &A, ctx: &Ctx) -> Result<Acl, ApiError> {
    if !agent.config().acl_enabled {
        return Ok(Acl::management());
    }
    agent
        .resolve_token(ctx.token.as_deref())
        .map_err(|reason| ApiError::new(StatusCode::FORBIDDEN, reason))
}

/// Requires a capability: `403 Permission denied` when `allowed` says no.
pub fn require<A: AgentApi>(
    agent: &A,
    ctx: &Ctx,
    allowed: impl Fn(&Acl) -> bool,
) -> Result<(), ApiError> {
    if allowed(&authorize(agent, ctx)?) {
        Ok(())
    } else {
        Err(ApiError::permission_denied())
    }
}

/// Nomad's "debug" check (host, pprof): with ACLs off it is `enable_debug`; with ACLs on a
/// management, `agent:read` or `agent:write` token passes.
pub fn require_debug<A: AgentApi>(agent: &A, ctx: &Ctx) -> Result<(), ApiError> {
    let config = agent.config();
    if !config.acl_enabled {
        return if config.enable_debug {
            Ok(())
        } else {
            Err(ApiError::permission_denied())
        };
    }
    require(agent, ctx, Acl::allow_agent_read)
}

fn acl_enabled<A: AgentApi>(agent: &A) -> Result<(), ApiError> {
    if agent.config().acl_enabled {
        Ok(())
    } else {
        Err(ApiError::bad_request("ACL support disabled"))
    }
}

/// The prologue of a management call: method, ACLs enabled, management token.
fn admin<A: AgentApi>(agent: &A, ctx: &Ctx, methods: &[Method]) -> Result<(), ApiError> {
    only(ctx, methods)?;
    acl_enabled(agent)?;
    require(agent, ctx, Acl::is_management)
}

fn write_error(e: AclWriteError) -> ApiError {
    match e {
        AclWriteError::Invalid(m) => ApiError::bad_request(m),
        AclWriteError::Storage(m) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to store ACL state: {m}"),
        ),
        AclWriteError::Unavailable(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// Proposes `write`; a write that must yield a token and did not is an internal error.
async fn write_token<A: AgentApi>(agent: &A, write: AclWrite) -> Result<Token, ApiError> {
    agent
        .acl_write(write)
        .await
        .map_err(write_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the ACL write returned no token",
            )
        })
}

fn decode<T: serde::de::DeserializeOwned + Default>(ctx: &Ctx) -> Result<T, ApiError> {
    if ctx.body.is_empty() {
        return Err(ApiError::bad_request("Request body is empty"));
    }
    serde_json::from_slice(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Routes `/v1/acl/<rest>`.
pub async fn route<A: AgentApi>(agent: &A, ctx: &Ctx, rest: &str) -> Reply {
    match rest {
        "bootstrap" => bootstrap(agent, ctx).await,
        "policies" => policies(agent, ctx),
        "tokens" => tokens(agent, ctx),
        "token" => create_token(agent, ctx).await,
        "token/self" => token_self(agent, ctx),
        _ => {
            if let Some(name) = rest.strip_prefix("policy/").filter(|n| !n.is_empty()) {
                policy(agent, ctx, name).await
            } else if let Some(id) = rest.strip_prefix("token/").filter(|n| !n.is_empty()) {
                token(agent, ctx, id).await
            } else {
                crate::handlers::not_found()
            }
        }
    }
}

fn only(ctx: &Ctx, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(&ctx.method) {
        Ok(())
    } else {
        Err(ApiError::invalid_method())
    }
}

async fn bootstrap<A: AgentApi>(agent: &A, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::PUT, Method::POST])?;
    acl_enabled(agent)?;
    let write = AclWrite::Bootstrap {
        accessor_id: new_id(),
        secret_id: new_id(),
        create_time: now_rfc3339(),
    };
    let token = write_token(agent, write).await?;
    tracing::info!(target: "http", accessor = %token.accessor_id, "ACL bootstrap complete");
    Ok(response::json(
        &TokenDto::new(&token, true),
        ctx.query.pretty(),
    ))
}

fn policies<A: AgentApi>(agent: &A, ctx: &Ctx) -> Reply {
    admin(agent, ctx, &[Method::GET])?;
    let list: Vec<PolicyDto> = agent.acl_read(|s| {
        s.policies
            .values()
            .map(|p| PolicyDto::new(p, false))
            .collect()
    });
    Ok(response::json(&list, ctx.query.pretty()))
}

async fn policy<A: AgentApi>(agent: &A, ctx: &Ctx, name: &str) -> Reply {
    admin(
        agent,
        ctx,
        &[Method::GET, Method::PUT, Method::POST, Method::DELETE],
    )?;
    match ctx.method {
        Method::GET => {
            let found = agent.acl_read(|s| s.policies.get(name).map(|p| PolicyDto::new(p, true)));
            let p = found
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "ACL policy not found"))?;
            Ok(response::json(&p, ctx.query.pretty()))
        }
        Method::DELETE => {
            let name = name.to_string();
            agent
                .acl_write(AclWrite::PolicyDelete { name })
                .await
                .map_err(write_error)?;
            Ok(response::empty())
        }
        _ => {
            let req: PolicyRequest = decode(ctx)?;
            if !req.name.is_empty() && req.name != name {
                return Err(ApiError::bad_request(
                    "Policy name does not match request path",
                ));
            }
            let write = AclWrite::PolicyUpsert {
                name: name.to_string(),
                description: req.description,
                rules: req.rules,
            };
            agent.acl_write(write).await.map_err(write_error)?;
            Ok(response::empty())
        }
    }
}

fn tokens<A: AgentApi>(agent: &A, ctx: &Ctx) -> Reply {
    admin(agent, ctx, &[Method::GET])?;
    let list: Vec<TokenDto> =
        agent.acl_read(|s| s.tokens.values().map(|t| TokenDto::new(t, false)).collect());
    Ok(response::json(&list, ctx.query.pretty()))
}

async fn create_token<A: AgentApi>(agent: &A, ctx: &Ctx) -> Reply {
    admin(agent, ctx, &[Method::PUT, Method::POST])?;
    let token = token_from_request(decode(ctx)?)?;
    let token = write_token(agent, AclWrite::TokenCreate { token }).await?;
    Ok(response::json(
        &TokenDto::new(&token, true),
        ctx.query.pretty(),
    ))
}

/// A token from its request, with fresh accessor and secret IDs and the time now (an update
/// keeps the old ones: the state machine ignores these).
fn token_from_request(req: TokenRequest) -> Result<Token, ApiError> {
    let token_type = match req.token_type.as_str() {
        "" => TokenType::Client,
        t => TokenType::parse(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "token type must be client or management, got {t:?}"
            ))
        })?,
    };
    Ok(Token {
        accessor_id: new_id(),
        secret_id: new_id(),
        name: req.name,
        token_type,
        policies: req.policies.unwrap_or_default(),
        global: req.global,
        create_time: now_rfc3339(),
        create_index: 0,
        modify_index: 0,
    })
}

fn token_self<A: AgentApi>(agent: &A, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    acl_enabled(agent)?;
    let secret = ctx.token.as_deref().unwrap_or("");
    let found = agent.acl_read(|s| {
        s.tokens
            .values()
            .find(|t| crate::acl::secrets_equal(&t.secret_id, secret))
            .map(|t| TokenDto::new(t, true))
    });
    let t = found.ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL token not found"))?;
    Ok(response::json(&t, ctx.query.pretty()))
}

async fn token<A: AgentApi>(agent: &A, ctx: &Ctx, accessor: &str) -> Reply {
    admin(
        agent,
        ctx,
        &[Method::GET, Method::DELETE, Method::PUT, Method::POST],
    )?;
    if ctx.method == Method::PUT || ctx.method == Method::POST {
        let write = AclWrite::TokenUpdate {
            accessor_id: accessor.to_string(),
            changes: token_from_request(decode(ctx)?)?,
        };
        let token = write_token(agent, write).await?;
        return Ok(response::json(
            &TokenDto::new(&token, true),
            ctx.query.pretty(),
        ));
    }
    if ctx.method == Method::DELETE {
        let write = AclWrite::TokenDelete {
            accessor_id: accessor.to_string(),
        };
        agent.acl_write(write).await.map_err(write_error)?;
        return Ok(response::empty());
    }
    let found = agent.acl_read(|s| s.tokens.get(accessor).map(|t| TokenDto::new(t, true)));
    let t = found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "ACL token not found"))?;
    Ok(response::json(&t, ctx.query.pretty()))
}

/// Compares two secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
