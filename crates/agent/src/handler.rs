//! The agent's RPC handler: every method of `docs/rpc.md`, served from this process's facts
//! and its server role (when it runs one).
//! User-acting methods build the HTTP layer's request context from the caller's token and call
//! the HTTP endpoint's own check (`caravan_http::acl`), so a rule is written once for both
//! doors.

use std::sync::Arc;

use caravan_agent_core::acl::Acl;
use caravan_http::api::{ExportRequest, MonitorRequest, ProfileRequest};
use caravan_http::{ApiError, App, Debugging};
use caravan_rpc::method as m;
use caravan_rpc::{BoxFuture, Call, Handler, Refusal, Reply};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::local::Local;
use crate::rpc::{Pong, decode, reply};
use crate::server::{FORWARD_TIMEOUT, ServerRole};
use caravan_agent_core::client_rpc::ForNode;

/// Serves every RPC method for one agent. `app` is the agent's HTTP application, whose checks
/// (token resolution, the debug rule) the user-acting methods run.
#[derive(Clone)]
pub struct AgentHandler {
    /// This process (host data, profiles, logs).
    pub local: Arc<Local>,
    /// The server role, on servers.
    pub server: Option<Arc<ServerRole>>,
    /// The agent's HTTP application.
    pub app: App,
}

impl Handler for AgentHandler {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        let handler = self.clone();
        Box::pin(async move { handler.dispatch(call).await })
    }
}

fn refusal(e: ApiError) -> Refusal {
    Refusal::new(e.status.as_u16(), e.message)
}

/// A Raft failure as the caller sees it: a request that does not decode or breaks Raft's
/// bounds is a 400 (the caller's fault), anything else a 500.
fn raft_refusal(e: &caravan_raft::RaftError) -> Refusal {
    match e {
        caravan_raft::RaftError::BadRequest(_) => Refusal::bad_request(e.to_string()),
        _ => Refusal::internal(e.to_string()),
    }
}

fn no_server() -> Refusal {
    Refusal::bad_request("rpc: this agent runs no server")
}

impl AgentHandler {
    /// The server role, or the refusal of an agent that runs none.
    fn server(&self) -> Result<&ServerRole, Refusal> {
        self.server.as_deref().ok_or_else(no_server)
    }

    async fn dispatch(&self, call: Call) -> Result<Reply, Refusal> {
        // A client-only agent resolves tokens through its servers: a stranger's user-acting
        // call would make it ask them for every token the stranger invents (and take the few
        // resolution slots its own HTTP users need). Only servers forward requests to a client
        // agent.
        if self.server.is_none()
            && call.method.access == caravan_rpc::Access::User
            && call.peer.role != caravan_rpc::Role::Server
            && !call.conn.dialed()
        {
            return Err(Refusal::new(
                403,
                "Permission denied: a client agent takes forwarded requests from its servers only",
            ));
        }
        match call.method.name {
            m::PING => reply(&Pong {
                server_id: self.server.as_ref().map(|s| s.id().to_string()),
            }),
            m::LEADER => reply(&self.server()?.leader()),
            m::PEERS => reply(&self.server()?.peers()),
            m::RAFT_STATS => reply(&self.server()?.raft_stats()),
            m::RESOLVE_TOKEN => reply(&self.resolve(call.token.as_deref())?),
            m::NODE_REGISTER => self.server()?.node_register(&call).await,
            m::NODE_UPDATE_STATUS => self.server()?.node_update_status(&call).await,
            m::NODE_GET_CLIENT_ALLOCS => self.server()?.node_client_allocs(&call).await,
            m::NODE_UPDATE_ALLOC => self.server()?.node_update_alloc(&call).await,
            m::NODE_HAS_CONN => self.server()?.node_has_conn(&call),
            m::NODE_HEARTBEATS => self.server()?.node_heartbeats(),
            m::KEYRING_OPERATION => self.server()?.keyring_member(&call).await,
            m::CLIENT_HOST | m::CLIENT_PROFILE | m::CLIENT_MONITOR | m::CLIENT_MONITOR_EXPORT => {
                self.for_node(call).await
            }
            m::HTTP_FORWARD => self.forwarded_http(call).await,
            m::EVAL_DEQUEUE | m::EVAL_ACK | m::EVAL_NACK => {
                let cluster = self.server.as_ref().map(|s| s.cluster());
                crate::cluster::broker_rpc(cluster, call.method.name, &call.body).await
            }
            name if name.starts_with("Raft.") => {
                let cluster = self.server()?.cluster();
                let reply = cluster.handle(name, &call.body).await;
                reply.map(Reply::Whole).map_err(|e| raft_refusal(&e))
            }
            _ => self.dispatch_agent(call).await,
        }
    }

    /// The `Agent.*` methods a user's token acts through.
    async fn dispatch_agent(&self, call: Call) -> Result<Reply, Refusal> {
        let (app, token) = (&self.app, call.token.as_deref());
        let require = |allowed: fn(&Acl) -> bool| {
            let acl = app.authorize(token).map_err(refusal)?;
            if allowed(&acl) {
                Ok(())
            } else {
                Err(refusal(ApiError::permission_denied()))
            }
        };
        match call.method.name {
            m::MEMBERS => {
                require(Acl::allow_node_read)?;
                reply(&self.server()?.member_list())
            }
            m::HOST => {
                app.require_debug(token).map_err(refusal)?;
                reply(&self.local.host_data().await.map_err(Refusal::internal)?)
            }
            m::PROFILE => {
                // As `/v1/agent/pprof/*`: agent:write, then the debug rule at the target.
                require(Acl::allow_agent_write)?;
                app.require_debug(token).map_err(refusal)?;
                let request: ProfileRequest = decode(&call.body)?;
                let body = self.local.profile(request).await.map_err(refusal)?;
                Ok(Reply::Whole(body))
            }
            m::MONITOR => {
                require(Acl::allow_agent_read)?;
                let request: MonitorRequest = decode(&call.body)?;
                monitor(&self.local, &request)
            }
            m::MONITOR_EXPORT => {
                require(Acl::allow_agent_read)?;
                let request: ExportRequest = decode(&call.body)?;
                export(&self.local, request).await
            }
            other => Err(Refusal::new(404, format!("rpc: can't find method {other}"))),
        }
    }

    /// `ClientAgent.*`: a request for a client node, checked here with the rule of the HTTP
    /// endpoint's receiving side (agent:read, or agent:write for a profile), then passed to
    /// the node over its connection, or to the server holding it; the node checks again.
    async fn for_node(&self, call: Call) -> Result<Reply, Refusal> {
        let server = self.server()?;
        let token = call.token.as_deref();
        let acl = self.app.authorize(token).map_err(refusal)?;
        let allowed = match call.method.name {
            m::CLIENT_PROFILE => acl.allow_agent_write(),
            _ => acl.allow_agent_read(),
        };
        if !allowed {
            return Err(refusal(ApiError::permission_denied()));
        }
        let request: ForNode<serde_json::Value> = decode(&call.body)?;
        // Only a server may say it already passed the request on.
        let forwarded = request.forwarded && call.peer.role == caravan_rpc::Role::Server;
        let id = request.node_id.as_str();
        let failed = |text: String| refusal(ApiError::from_message(text));
        match call.method.name {
            m::CLIENT_MONITOR | m::CLIENT_MONITOR_EXPORT => {
                let methods = if call.method.name == m::CLIENT_MONITOR {
                    (m::MONITOR, m::CLIENT_MONITOR)
                } else {
                    (m::MONITOR_EXPORT, m::CLIENT_MONITOR_EXPORT)
                };
                let rx = server
                    .stream_node(id, token, methods, &request.request, forwarded)
                    .await
                    .map_err(failed)?;
                Ok(Reply::Stream(rx))
            }
            name => {
                let (methods, timeout) = if name == m::CLIENT_PROFILE {
                    let profile: ProfileRequest =
                        serde_json::from_value(request.request.clone())
                            .map_err(|e| Refusal::bad_request(format!("rpc: bad request: {e}")))?;
                    let extra = std::time::Duration::from_secs(profile.seconds);
                    ((m::PROFILE, m::CLIENT_PROFILE), FORWARD_TIMEOUT + extra)
                } else {
                    ((m::HOST, m::CLIENT_HOST), FORWARD_TIMEOUT)
                };
                let body = server
                    .call_node(id, token, methods, &request.request, timeout, forwarded)
                    .await
                    .map_err(failed)?;
                Ok(Reply::Whole(body.to_vec()))
            }
        }
    }

    /// `HTTP.Forward`: an API request another agent passed on, served by this server's HTTP
    /// application (its routes, ACL checks and errors, with the caller's token); the answer
    /// streams back as its head, then its body.
    async fn forwarded_http(&self, call: Call) -> Result<Reply, Refusal> {
        self.server()?;
        let (request, body) = caravan_agent_core::client_rpc::ForwardedRequest::decode(&call.body)
            .map_err(Refusal::bad_request)?;
        let body = bytes::Bytes::copy_from_slice(body);
        let (head, mut rx) = self
            .app
            .serve_forwarded(request, body, call.token.clone())
            .await
            .map_err(refusal)?;
        let head = serde_json::to_vec(&head).map_err(|e| Refusal::internal(e.to_string()))?;
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            if tx.send(bytes::Bytes::from(head)).await.is_err() {
                return;
            }
            while let Some(chunk) = rx.recv().await {
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Ok(Reply::Stream(out))
    }

    /// `ACL.ResolveToken`: the permissions of the token the caller presented, as this server
    /// resolves it (management when ACLs are off). The caller learns nothing it did not hold.
    fn resolve(&self, token: Option<&str>) -> Result<Acl, Refusal> {
        if !self.local.config.acl_enabled {
            return Ok(Acl::management());
        }
        caravan_http::Acls::resolve_token(self.server()?, token)
            .map_err(|reason| Refusal::new(403, reason))
    }
}

/// A local log stream, as the bytes of its HTTP response body.
fn monitor(local: &Local, request: &MonitorRequest) -> Result<Reply, Refusal> {
    let response = caravan_http::monitor::serve(&local.hub, request).map_err(refusal)?;
    Ok(body_stream(response))
}

/// This agent's log export, as the bytes of its HTTP response body.
async fn export(local: &Local, request: ExportRequest) -> Result<Reply, Refusal> {
    use caravan_http::Debugging;
    caravan_http::export::check_target(&local.config, &request).map_err(refusal)?;
    let plain = request.plain;
    let rx = local.export_logs(request).await.map_err(refusal)?;
    Ok(body_stream(caravan_http::export::stream(rx, plain)))
}

/// A streaming response's body, chunk by chunk, as an RPC stream reply.
fn body_stream(response: http::Response<caravan_http::Body>) -> Reply {
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
    Reply::Stream(rx)
}
