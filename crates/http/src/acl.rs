//! The ACL API (`/v1/acl/*`). The checks every endpoint runs (spec §0.6–0.7) are
//! [`Caps::authorize`] and its kin.

use caravan_agent_core::acl::{Acl, AclWrite, Token, TokenSpec};
use http::{Method, StatusCode};

use crate::api::AclWriteError;
use crate::app::Caps;
use crate::dto::{PolicyDto, PolicyRequest, TokenDto, TokenRequest};
use crate::response;
use crate::{ApiError, Ctx, Reply, only};

fn acl_enabled(caps: &Caps) -> Result<(), ApiError> {
    if caps.config().acl_enabled {
        Ok(())
    } else {
        Err(ApiError::bad_request("ACL support disabled"))
    }
}

/// The prologue of a management call: method, ACLs enabled, management token.
fn admin(caps: &Caps, ctx: &Ctx, methods: &[Method]) -> Result<(), ApiError> {
    only(ctx, methods)?;
    acl_enabled(caps)?;
    caps.require(ctx.token.as_deref(), Acl::is_management)
}

/// Reads the ACL state (a host that never calls the reader is an internal error).
fn read<R>(
    caps: &Caps,
    read: impl FnOnce(&caravan_agent_core::acl::AclState) -> R,
) -> Result<R, ApiError> {
    caps.acls()?.acl_read(read).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the ACL state could not be read",
        )
    })
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
async fn write_token(caps: &Caps, write: AclWrite) -> Result<Token, ApiError> {
    caps.acls()?
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

/// Routes `/v1/acl/<rest>`.
pub(crate) async fn route(caps: &Caps, ctx: &Ctx, rest: &str) -> Reply {
    match rest {
        "bootstrap" => bootstrap(caps, ctx).await,
        "policies" => policies(caps, ctx),
        "tokens" => tokens(caps, ctx),
        "token" => create_token(caps, ctx).await,
        "token/self" => token_self(caps, ctx),
        _ => {
            if let Some(name) = rest.strip_prefix("policy/").filter(|n| !n.is_empty()) {
                policy(caps, ctx, name).await
            } else if let Some(id) = rest.strip_prefix("token/").filter(|n| !n.is_empty()) {
                token(caps, ctx, id).await
            } else {
                crate::handlers::not_found()
            }
        }
    }
}

async fn bootstrap(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::PUT, Method::POST])?;
    acl_enabled(caps)?;
    let write = AclWrite::bootstrap();
    let token = write_token(caps, write).await?;
    tracing::info!(target: "http", accessor = %token.accessor_id, "ACL bootstrap complete");
    Ok(response::json(
        &TokenDto::new(&token, true),
        ctx.query.pretty(),
    ))
}

fn policies(caps: &Caps, ctx: &Ctx) -> Reply {
    admin(caps, ctx, &[Method::GET])?;
    let list: Vec<PolicyDto> = read(caps, |s| {
        s.policies
            .values()
            .map(|p| PolicyDto::new(p, false))
            .collect()
    })?;
    Ok(response::json(&list, ctx.query.pretty()))
}

async fn policy(caps: &Caps, ctx: &Ctx, name: &str) -> Reply {
    admin(
        caps,
        ctx,
        &[Method::GET, Method::PUT, Method::POST, Method::DELETE],
    )?;
    match ctx.method {
        Method::GET => {
            // Consistent unless `?stale`, as Nomad's: a policy read never misses a write
            // acknowledged before it began (the history checks of tests/it/faults.rs).
            if !ctx.query.read_options()?.stale {
                caps.acls()?
                    .acl_barrier()
                    .await
                    .map_err(crate::jobs::read_error)?;
            }
            let found = read(caps, |s| {
                s.policies.get(name).map(|p| PolicyDto::new(p, true))
            })?;
            let p = found
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "ACL policy not found"))?;
            Ok(response::json(&p, ctx.query.pretty()))
        }
        Method::DELETE => {
            let name = name.to_string();
            caps.acls()?
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
            caps.acls()?.acl_write(write).await.map_err(write_error)?;
            Ok(response::empty())
        }
    }
}

fn tokens(caps: &Caps, ctx: &Ctx) -> Reply {
    admin(caps, ctx, &[Method::GET])?;
    let list: Vec<TokenDto> = read(caps, |s| {
        s.tokens.values().map(|t| TokenDto::new(t, false)).collect()
    })?;
    Ok(response::json(&list, ctx.query.pretty()))
}

async fn create_token(caps: &Caps, ctx: &Ctx) -> Reply {
    admin(caps, ctx, &[Method::PUT, Method::POST])?;
    let token = token_from_request(decode(ctx)?)?;
    let token = write_token(caps, AclWrite::TokenCreate { token }).await?;
    Ok(response::json(
        &TokenDto::new(&token, true),
        ctx.query.pretty(),
    ))
}

fn spec(req: TokenRequest) -> TokenSpec {
    TokenSpec {
        name: req.name,
        token_type: req.token_type,
        policies: req.policies.unwrap_or_default(),
        global: req.global,
    }
}

/// The token a request asks for, minted by the domain.
fn token_from_request(req: TokenRequest) -> Result<Token, ApiError> {
    spec(req)
        .mint()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn token_self(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    acl_enabled(caps)?;
    let secret = ctx.token.as_deref().unwrap_or("");
    let found = read(caps, |s| {
        s.token_by_secret(secret).map(|t| TokenDto::new(t, true))
    })?;
    let t = found.ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL token not found"))?;
    Ok(response::json(&t, ctx.query.pretty()))
}

async fn token(caps: &Caps, ctx: &Ctx, accessor: &str) -> Reply {
    admin(
        caps,
        ctx,
        &[Method::GET, Method::DELETE, Method::PUT, Method::POST],
    )?;
    if ctx.method == Method::PUT || ctx.method == Method::POST {
        let write = AclWrite::TokenUpdate {
            accessor_id: accessor.to_string(),
            changes: token_from_request(decode(ctx)?)?,
        };
        let token = write_token(caps, write).await?;
        return Ok(response::json(
            &TokenDto::new(&token, true),
            ctx.query.pretty(),
        ));
    }
    if ctx.method == Method::DELETE {
        let write = AclWrite::TokenDelete {
            accessor_id: accessor.to_string(),
        };
        caps.acls()?.acl_write(write).await.map_err(write_error)?;
        return Ok(response::empty());
    }
    let found = read(caps, |s| {
        s.tokens.get(accessor).map(|t| TokenDto::new(t, true))
    })?;
    let t = found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "ACL token not found"))?;
    Ok(response::json(&t, ctx.query.pretty()))
}
