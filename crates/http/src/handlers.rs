//! One function per endpoint, each following the spec's check order.

use http::{Method, StatusCode};

use crate::api::Remote;
use crate::app::Caps;
use crate::dto::{
    ConfigDto, HealthCheck, HealthResponse, HostDataResponse, JoinResponse, MemberDto, SelfResponse,
};
use crate::request::parse_bool;
use crate::response::{self, TEXT_UTF8};
use crate::{ApiError, Ctx, Reply, only};
use caravan_agent_core::acl::Acl;

/// `GET /v1/agent/self` (spec §1).
pub(crate) fn agent_self(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    caps.require(ctx.token.as_deref(), Acl::allow_agent_read)?;
    let body = SelfResponse {
        config: ConfigDto::new(&caps.running(), caps.info.version()),
        member: MemberDto::from(&caps.info.member()),
        stats: caps.info.stats(),
    };
    Ok(response::json(&body, ctx.query.pretty()))
}

/// `GET /v1/agent/health` (spec §6).
pub(crate) fn health(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    ctx.query.check_generic()?;
    let config = caps.config();
    let (check_client, check_server) = if ctx.query.has("type") {
        let types = ctx.query.all("type");
        (types.contains(&"client"), types.contains(&"server"))
    } else {
        (config.client.enabled, config.server.enabled)
    };
    let check = |enabled: bool, name: &str, run: &dyn Fn() -> Result<(), String>| {
        let result = if enabled {
            run()
        } else {
            Err(format!("{name} not enabled"))
        };
        HealthCheck {
            ok: result.is_ok(),
            message: result.err().unwrap_or_else(|| "ok".into()),
        }
    };
    let body = HealthResponse {
        client: check_client.then(|| {
            check(config.client.enabled, "client", &|| {
                caps.info.client_health()
            })
        }),
        server: check_server.then(|| {
            check(config.server.enabled, "server", &|| {
                caps.info.server_health()
            })
        }),
    };
    let healthy = [&body.client, &body.server]
        .into_iter()
        .flatten()
        .all(|c| c.ok);
    if healthy {
        Ok(response::json(&body, ctx.query.pretty()))
    } else {
        Ok(response::with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT_UTF8,
            response::encode_json_html_safe(&body),
        ))
    }
}

/// `GET /v1/agent/host` (spec §7).
pub(crate) async fn host(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    caps.require_debug(ctx.token.as_deref())?;
    let target = local_target(
        caps,
        ctx,
        "Can only forward to either client node or server",
        StatusCode::INTERNAL_SERVER_ERROR,
    )?;
    let data = match &target {
        Some(t) if t.is_remote() => {
            caps.forwarder()?
                .remote_host_data(t.remote(), ctx.token.as_deref())
                .await
        }
        _ => caps.debugging()?.host_data().await,
    }
    .map_err(ApiError::from_message)?;
    let pretty = ctx.query.pretty();
    Ok(match target {
        None => response::json(&data, pretty),
        Some(t) => response::json(
            &HostDataResponse {
                agent_id: t.id,
                host_data: &data,
            },
            pretty,
        ),
    })
}

/// The agent a request targets: its ID (member name or node ID) and whether it is another
/// server, reached over RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The member name (server) or node ID (client).
    pub(crate) id: String,
    /// Another agent, not this one.
    pub(crate) remote: bool,
    /// A client node (else a server).
    pub(crate) node: bool,
}

impl Target {
    fn local(id: String) -> Target {
        Target {
            id,
            remote: false,
            node: false,
        }
    }

    /// Whether the request goes to another agent.
    pub(crate) fn is_remote(&self) -> bool {
        self.remote
    }

    /// Where a remote request goes.
    pub(crate) fn remote(&self) -> Remote<'_> {
        if self.node {
            Remote::Node(&self.id)
        } else {
            Remote::Server(&self.id)
        }
    }
}

/// Reads `node_id` and `server_id` (spec §0.8): both set is a 400 with `both`; an ID naming this
/// agent resolves to its member name (server) or node ID; `leader` and other servers of the
/// region resolve to a remote target; other IDs get the spec's errors, an unknown server with
/// `unknown_server` as the status. `None` when neither is given.
pub(crate) fn local_target(
    caps: &Caps,
    ctx: &Ctx,
    both: &str,
    unknown_server: StatusCode,
) -> Result<Option<Target>, ApiError> {
    let node_id = ctx.query.get("node_id").unwrap_or("");
    let server_id = ctx.query.get("server_id").unwrap_or("");
    match (node_id, server_id) {
        ("", "") => Ok(None),
        (id, "") => node_target(caps, id).map(Some),
        ("", id) => server_target(caps, id)
            .map(Some)
            .map_err(|e| ApiError::new(unknown_server, e.message)),
        _ => Err(ApiError::bad_request(both)),
    }
}

/// Resolves `server_id`: this agent's server, another server of the region (the leader, a
/// member name or a server ID), or the spec's error.
pub(crate) fn server_target(caps: &Caps, id: &str) -> Result<Target, ApiError> {
    let config = caps.config();
    let name = config.member_name();
    let local = config.server.enabled
        && ((id == "leader" && caps.info.is_leader())
            || id == name
            || caps.info.server_id().as_deref() == Some(id));
    if local {
        return Ok(Target::local(name));
    }
    let Some(forwarding) = caps.forwarding() else {
        return Err(ApiError::from_message(format!("unknown Nomad server {id}")));
    };
    match forwarding.remote_server(id) {
        Ok(other) if other == name => Ok(Target::local(name)),
        Ok(other) => Ok(Target {
            id: other,
            remote: true,
            node: false,
        }),
        Err(e) => Err(ApiError::from_message(e)),
    }
}

/// Resolves `node_id`: this agent's own client node is served here; another node is
/// forwarded (a server finds the one holding its connection; a client-only agent asks a
/// server), or `404 Unknown node` when the agent cannot forward.
pub(crate) fn node_target(caps: &Caps, id: &str) -> Result<Target, ApiError> {
    match caps.info.node_id() {
        Some(local) if local == id => Ok(Target {
            id: local,
            remote: false,
            node: true,
        }),
        _ if caps.forwarding().is_some() => Ok(Target {
            id: id.to_string(),
            remote: true,
            node: true,
        }),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Unknown node \"{id}\""),
        )),
    }
}

/// `GET|PUT|POST /v1/agent/servers` (spec §5).
pub(crate) async fn servers(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET, Method::PUT, Method::POST])?;
    if !caps.config().client.enabled {
        return Err(ApiError::wrong_agent_kind());
    }
    if ctx.method == Method::GET {
        caps.require(ctx.token.as_deref(), Acl::allow_agent_read)?;
        return Ok(response::json(
            &caps.server_list()?.servers(),
            ctx.query.pretty(),
        ));
    }
    let addresses = ctx.query.owned("address");
    if addresses.is_empty() {
        return Err(ApiError::bad_request("missing server address"));
    }
    caps.require(ctx.token.as_deref(), Acl::allow_agent_write)?;
    caps.server_list()?
        .set_servers(addresses)
        .await
        .map_err(ApiError::bad_request)?;
    Ok(response::empty())
}

/// `GET /v1/agent/members` (spec §2).
pub(crate) async fn members(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    ctx.query.check_generic()?;
    // Nomad resolves the token inside its members RPC, where every authentication failure (a
    // malformed token included) is `Permission denied`.
    caps.require(ctx.token.as_deref(), Acl::allow_node_read)
        .map_err(|e| {
            if e.status == http::StatusCode::FORBIDDEN {
                ApiError::permission_denied()
            } else {
                e
            }
        })?;
    let members = caps
        .membership()?
        .members(ctx.token.as_deref())
        .await
        .map_err(ApiError::from_message)?;
    Ok(response::json(&members, ctx.query.pretty()))
}

/// The method and agent-kind checks of the gossip write endpoints (join, force-leave).
fn server_write(caps: &Caps, ctx: &Ctx) -> Result<(), ApiError> {
    only(ctx, &[Method::PUT, Method::POST])?;
    if caps.config().server.enabled {
        Ok(())
    } else {
        Err(ApiError::wrong_agent_kind())
    }
}

/// `PUT|POST /v1/agent/join` (spec §3): a failed join is still a 200, with `error` set.
pub(crate) async fn join(caps: &Caps, ctx: &Ctx) -> Reply {
    server_write(caps, ctx)?;
    // Checked but not enforced (spec §3): only a deprecation warning.
    let warning = match caps.authorize(ctx.token.as_deref()) {
        Ok(acl) if acl.allow_agent_write() => String::new(),
        _ => "anonymous server join is deprecated and will be removed in a future version of Nomad"
            .to_string(),
    };
    let addresses = ctx.query.owned("address");
    if addresses.is_empty() {
        return Err(ApiError::bad_request("missing address to join"));
    }
    let result = caps.membership()?.join(addresses).await;
    let body = JoinResponse {
        num_joined: result.joined,
        error: if result.errors.is_empty() {
            String::new()
        } else {
            crate::multi_error(&result.errors)
        },
        warning,
    };
    Ok(response::json(&body, ctx.query.pretty()))
}

/// `PUT|POST /v1/agent/force-leave` (spec §4): unknown nodes are not an error.
pub(crate) async fn force_leave(caps: &Caps, ctx: &Ctx) -> Reply {
    server_write(caps, ctx)?;
    caps.require(ctx.token.as_deref(), Acl::allow_agent_write)?;
    let node = ctx.query.get("node").unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request("missing node to force leave"));
    }
    let prune = match ctx.query.get("prune") {
        None | Some("") => false,
        Some(v) => parse_bool(v).ok_or_else(|| ApiError::bad_request("invalid prune value"))?,
    };
    caps.membership()?
        .force_leave(node.to_string(), prune)
        .await
        .map_err(ApiError::from_message)?;
    Ok(response::empty())
}

/// `PUT|POST /v1/agent/reload` (spec §12): `agent:write`, then the host re-reads its
/// configuration; a failure is `500` with its text and changes nothing.
pub(crate) async fn reload(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::PUT, Method::POST])?;
    caps.require(ctx.token.as_deref(), Acl::allow_agent_write)?;
    caps.reloader()?
        .reload()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(response::empty())
}

/// Go's `301` for a prefix route asked for without its slash.
pub(crate) fn redirect(ctx: &Ctx, location: &str) -> Reply {
    let mut target = location.to_string();
    if let Some(q) = &ctx.raw_query {
        target.push('?');
        target.push_str(q);
    }
    let body = if ctx.method == Method::GET || ctx.method == Method::HEAD {
        format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&target)
        )
        .into_bytes()
    } else {
        Vec::new()
    };
    let mut resp = response::with_type(
        StatusCode::MOVED_PERMANENTLY,
        "text/html; charset=utf-8",
        body,
    );
    if let Ok(value) = target.parse() {
        resp.headers_mut().insert(http::header::LOCATION, value);
    }
    Ok(resp)
}

/// Escapes text for an HTML attribute or element as Go's `html.EscapeString` (and so
/// `http.Redirect`) does: `&`, `<`, `>`, `"` and `'`.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The root handler's `404`: empty body, no `Content-Type`.
pub(crate) fn not_found() -> Reply {
    let mut resp = response::empty();
    *resp.status_mut() = StatusCode::NOT_FOUND;
    Ok(resp)
}

/// `GET /v1/status/leader`: the leader's RPC address as a JSON string (`""` when none).
pub(crate) async fn status_leader(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    ctx.query.check_generic()?;
    let leader = caps
        .operator()?
        .status_leader()
        .await
        .map_err(ApiError::from_message)?;
    Ok(response::json(&leader, ctx.query.pretty()))
}

/// `GET /v1/status/peers`: the RPC addresses of the Raft voters.
pub(crate) async fn status_peers(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    ctx.query.check_generic()?;
    let peers = caps
        .operator()?
        .status_peers()
        .await
        .map_err(ApiError::from_message)?;
    Ok(response::json(&peers, ctx.query.pretty()))
}

/// `GET /v1/regions`: the regions with servers in the gossip pool, sorted (no ACL, as Nomad).
pub(crate) fn regions(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    let mut regions = caps.membership()?.regions();
    if regions.is_empty() {
        regions.push(caps.config().region.clone());
    }
    Ok(response::json(&regions, ctx.query.pretty()))
}
