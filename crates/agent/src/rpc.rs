//! The agent's side of [`caravan_rpc`]: which identity this agent dials with and trusts
//! ([`dial`], [`trust`], refusing an unprotected cluster with ACLs at start), JSON calls over
//! the pooled client ([`Rpc`]), and the [`AgentHandler`] that serves every method of
//! `docs/rpc.md`. User-acting methods check the caller's token with the HTTP endpoint's own
//! rule (`caravan_http::acl`), so a rule is written once and served on both doors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use caravan_agent_core::acl::Acl;
use caravan_agent_core::config::AgentConfig;
use caravan_http::api::{MonitorRequest, ProfileRequest};
use caravan_http::{AgentApi, ApiError, Ctx};
use caravan_rpc::method as m;
use caravan_rpc::{BoxFuture, Call, Dial, Handler, Refusal, Reply, RpcClient, RpcError, Trust};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::agent::Agent;

/// The environment variable that lets a server with ACLs run a multi-server cluster with
/// neither `encrypt` nor `tls.rpc` (every RPC caller is then trusted as a server).
pub const INSECURE_ENV: &str = "CARAVAN_INSECURE_RPC";

/// How this agent proves itself when it calls others: its TLS certificate, else (servers) the
/// key derived from the gossip key, else nothing (encrypted, anonymous).
pub fn dial(config: &AgentConfig) -> Result<Dial, String> {
    if config.tls.rpc {
        let tls = crate::tls::rpc_client(&config.tls, &config.region)?;
        return Ok(Dial::with_tls(tls.config, tls.server_name));
    }
    match (&config.server.encrypt_key, config.server.enabled) {
        (Some(key), true) => Ok(Dial::with_server_key(caravan_rpc::identity::server_key(
            key,
        ))),
        _ => Ok(Dial::anonymous()),
    }
}

/// Whether a server expects other servers (so it needs to trust some RPC callers as servers).
fn expects_peers(config: &AgentConfig) -> bool {
    let s = &config.server;
    s.bootstrap_expect > 1 || !s.start_join.is_empty() || !s.server_join.retry_join.is_empty()
}

/// How this agent's RPC listener decides who its callers are. A server with ACLs that expects
/// peers but has neither TLS nor a gossip key is refused (unless [`INSECURE_ENV`] is `1`).
pub fn trust(config: &AgentConfig) -> Result<Trust, String> {
    let region = &config.region;
    if config.tls.rpc {
        let tls = crate::tls::server_config(&config.tls, &[], true)?;
        return Ok(Trust::with_tls(region, tls));
    }
    if let (Some(key), true) = (&config.server.encrypt_key, config.server.enabled) {
        return Ok(Trust::with_server_key(
            region,
            caravan_rpc::identity::server_key(key),
        ));
    }
    if !config.server.enabled {
        return Ok(Trust::anonymous(region));
    }
    let insecure = std::env::var(INSECURE_ENV).is_ok_and(|v| v == "1");
    if config.acl_enabled && expects_peers(config) && !insecure {
        return Err(format!(
            "a server with ACLs enabled that joins other servers needs `encrypt` (server {{ encrypt = \"...\" }}) or `tls {{ rpc = true }}` to authenticate them; without either, anyone who reaches the RPC port could write to Raft ({INSECURE_ENV}=1 overrides)"
        ));
    }
    if config.acl_enabled && !insecure {
        tracing::warn!(target: "rpc", "no `encrypt` key and no `tls.rpc`: server-only RPC is refused to every caller (fine for a single server)");
        return Ok(Trust::anonymous(region));
    }
    tracing::warn!(target: "rpc", "no `encrypt` key and no `tls.rpc`: every RPC caller is trusted as a server; set `encrypt` or `tls.rpc` to protect the cluster");
    Ok(Trust::open(region))
}

/// Whether this agent can tell a real server from anyone else over RPC: it dials with TLS or
/// the server key, or it runs without ACLs (an open cluster, by choice), or the operator set
/// [`INSECURE_ENV`]. Without that, no gossip claim may change Raft membership and no user's
/// token is forwarded to another server.
pub fn confirms_servers(config: &AgentConfig) -> bool {
    config.tls.rpc
        || (config.server.enabled && config.server.encrypt_key.is_some())
        || !config.acl_enabled
        || std::env::var(INSECURE_ENV).is_ok_and(|v| v == "1")
}

/// JSON calls over the pooled RPC client; errors are texts for the HTTP layer.
pub struct Rpc {
    client: RpcClient,
    confirms_servers: bool,
}

impl Rpc {
    /// A client proving what `dial` says; `confirms_servers` as [`confirms_servers`] decided.
    pub fn new(dial: Dial, confirms_servers: bool) -> Rpc {
        Rpc {
            client: RpcClient::new(dial, Default::default()),
            confirms_servers,
        }
    }

    /// Whether an answer over this client proves a server (see [`confirms_servers`]).
    pub fn confirms_servers(&self) -> bool {
        self.confirms_servers
    }

    /// Calls `method` at `addr` with `request` as JSON (and the user's `token`), decoding the
    /// JSON reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, String> {
        let reply = self
            .raw(addr, method, token, json(request)?, timeout)
            .await?;
        serde_json::from_slice(&reply).map_err(|e| format!("rpc error: bad reply: {e}"))
    }

    /// Calls `method` with a raw body and returns the raw reply.
    pub async fn raw(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        self.client
            .call_within(addr, method, token, body, timeout)
            .await
            .map_err(|e| text(&e))
    }

    /// Starts a streaming call.
    pub async fn stream(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<Bytes>, String> {
        self.client
            .stream(addr, method, token, json(request)?, timeout)
            .await
            .map_err(|e| text(&e))
    }

    /// Pings `addr`; returns the server ID it answers with (`None` from a client agent).
    pub async fn ping(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        let pong: Pong = self.call(addr, m::PING, None, &(), timeout).await?;
        Ok(pong.server_id)
    }
}

fn json(value: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("rpc error: {e}"))
}

/// An error for the HTTP layer: the remote side's own text when it answered, else ours.
fn text(e: &RpcError) -> String {
    match e {
        RpcError::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `Status.Ping`'s answer: who answered (a server's ID proves it, over an authenticated
/// connection, to the leader confirming a new voter).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Pong {
    /// The server ID, on servers.
    pub server_id: Option<String>,
}

/// Serves every RPC method for one agent.
pub struct AgentHandler(pub Arc<Agent>);

impl Handler for AgentHandler {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        let agent = self.0.clone();
        Box::pin(async move { dispatch(&agent, call).await })
    }
}

fn refusal(e: ApiError) -> Refusal {
    Refusal::new(e.status.as_u16(), e.message)
}

/// Decodes a JSON request body (400 with serde's text when it does not fit).
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::bad_request(format!("rpc: bad request: {e}")))
}

/// A JSON reply.
pub(crate) fn reply(value: &impl Serialize) -> Result<Reply, Refusal> {
    serde_json::to_vec(value)
        .map(Reply::Whole)
        .map_err(|e| Refusal::internal(e.to_string()))
}

fn no_server() -> Refusal {
    Refusal::bad_request("rpc: this agent runs no server")
}

/// The request context the HTTP ACL checks read: only the token matters to them.
fn as_http(token: Option<String>) -> Ctx {
    Ctx {
        method: http::Method::GET,
        path: String::new(),
        raw_query: None,
        query: caravan_http::request::Query::parse(None),
        token,
        body: Bytes::new(),
    }
}

async fn dispatch(agent: &Arc<Agent>, call: Call) -> Result<Reply, Refusal> {
    // A client-only agent resolves tokens through its servers: a stranger's user-acting call
    // would make it ask them for every token the stranger invents (and take the few resolution
    // slots its own HTTP users need). Only servers forward requests to a client agent.
    if agent.cluster().is_none()
        && call.method.access == caravan_rpc::Access::User
        && call.peer.role != caravan_rpc::Role::Server
    {
        return Err(Refusal::new(
            403,
            "Permission denied: a client agent takes forwarded requests from its servers only",
        ));
    }
    let ctx = as_http(call.token.clone());
    let require = |allowed: fn(&Acl) -> bool| {
        caravan_http::acl::require(&**agent, &ctx, allowed).map_err(refusal)
    };
    match call.method.name {
        m::PING => reply(&Pong {
            server_id: agent.server_id(),
        }),
        m::LEADER => reply(&agent.local_leader().ok_or_else(no_server)?),
        m::PEERS => reply(&agent.local_peers().ok_or_else(no_server)?),
        m::MEMBERS => {
            require(Acl::allow_node_read)?;
            reply(&agent.local_members().ok_or_else(no_server)?)
        }
        m::HOST => {
            caravan_http::acl::require_debug(&**agent, &ctx).map_err(refusal)?;
            reply(&agent.host_data().await.map_err(Refusal::internal)?)
        }
        m::PROFILE => {
            // As `/v1/agent/pprof/*`: agent:write, then the debug rule at the target.
            require(Acl::allow_agent_write)?;
            caravan_http::acl::require_debug(&**agent, &ctx).map_err(refusal)?;
            let request: ProfileRequest = decode(&call.body)?;
            let body = agent.profile(request).await.map_err(refusal)?;
            Ok(Reply::Whole(body))
        }
        m::MONITOR => {
            require(Acl::allow_agent_read)?;
            let request: MonitorRequest = decode(&call.body)?;
            monitor(agent, &request)
        }
        m::RESOLVE_TOKEN => reply(&resolve(agent, call.token.as_deref())?),
        m::EVAL_DEQUEUE | m::EVAL_ACK | m::EVAL_NACK => {
            crate::cluster::broker_rpc(agent, call.method.name, &call.body).await
        }
        name if name.starts_with("Raft.") => agent
            .raft_rpc(name, &call.body)
            .await
            .map(Reply::Whole)
            .map_err(|(status, text)| Refusal::new(status.as_u16(), text)),
        other => Err(Refusal::new(404, format!("rpc: can't find method {other}"))),
    }
}

/// `ACL.ResolveToken`: the permissions of the token the caller presented, as this server
/// resolves it (management when ACLs are off). The caller learns nothing it did not hold.
fn resolve(agent: &Agent, token: Option<&str>) -> Result<Acl, Refusal> {
    if !agent.config().acl_enabled {
        return Ok(Acl::management());
    }
    if agent.cluster().is_none() {
        return Err(no_server());
    }
    agent
        .resolve_token(token)
        .map_err(|reason| Refusal::new(403, reason))
}

/// A local log stream, as the bytes of its HTTP response body.
fn monitor(agent: &Agent, request: &MonitorRequest) -> Result<Reply, Refusal> {
    let response =
        caravan_http::monitor::endpoint::serve(agent.monitor_hub(), request).map_err(refusal)?;
    let mut body = response.into_body();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                return; // the caller left: dropping the body ends the subscription
            }
        }
    });
    Ok(Reply::Stream(rx))
}
