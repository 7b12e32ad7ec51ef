//! What an agent without a server answers for the server capabilities: it asks one of its
//! servers where Nomad does (members, status, token resolution) and otherwise says it runs no
//! server, exactly as the HTTP API expects of a client-only agent.

use std::sync::Arc;

use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
use caravan_agent_core::client_rpc::ForNode;
use caravan_agent_core::jobs::Job;
use caravan_agent_core::query::{Indexed, ReadOptions, StateAnswer, StateQuery};
use caravan_agent_core::sched::{SchedulerConfig, WorkerInfo};
use caravan_http::api::{
    AclWriteError, JobWriteError, JobWriteResult, JoinResult, MonitorRequest, ProfileRequest,
    ReadError, RestoreError,
};
use caravan_http::api::{ForwardedHead, ForwardedRequest};
use caravan_http::dto::{HostData, MembersResponse, RaftConfigurationDto};
use caravan_http::{Acls, ApiError, Forwarding, Jobs, Membership, Operator, Remote, Schedulers};
use caravan_rpc::method as m;
use std::time::Duration;

use crate::client_role::ClientRole;

/// The text of a server-only action on an agent without a server.
const NO_SERVER: &str = "this agent runs no server";

/// The server capabilities of a client-only agent, answered through its client role.
pub struct ClientOnly {
    client: Arc<ClientRole>,
}

impl ClientOnly {
    /// The server capabilities of an agent whose only role is `client`.
    pub fn new(client: Arc<ClientRole>) -> ClientOnly {
        ClientOnly { client }
    }
}

impl Membership for ClientOnly {
    async fn members(&self, token: Option<&str>) -> Result<MembersResponse, String> {
        // One of its servers answers, and checks the token again.
        self.client.ask_a_server(m::MEMBERS, token).await
    }

    async fn join(&self, _addresses: Vec<String>) -> JoinResult {
        JoinResult::failed(NO_SERVER)
    }

    async fn force_leave(&self, _name: String, _prune: bool) -> Result<(), String> {
        Err(NO_SERVER.into())
    }
}

/// A client-only agent holds no ACL state: it resolves each token through a server.
impl Acls for ClientOnly {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        self.client.resolve_remotely(token)
    }

    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        read(&AclState::default())
    }

    async fn acl_write(&self, _write: AclWrite) -> Result<Option<Token>, AclWriteError> {
        Err(AclWriteError::Unavailable(
            "ACL writes go to a server; this agent runs none".into(),
        ))
    }
}

impl Jobs for ClientOnly {
    async fn register_job(&self, _job: Job) -> Result<JobWriteResult, JobWriteError> {
        Err(JobWriteError::NoServer)
    }

    async fn deregister_job(&self, _id: &str) -> Result<Option<JobWriteResult>, JobWriteError> {
        Err(JobWriteError::NoServer)
    }

    async fn read_state(
        &self,
        _query: StateQuery,
        _options: ReadOptions,
    ) -> Result<Indexed<StateAnswer>, ReadError> {
        Err(ReadError::NoServer)
    }
}

impl Schedulers for ClientOnly {
    fn schedulers(&self) -> Option<Vec<WorkerInfo>> {
        None
    }

    fn scheduler_config(&self) -> Option<SchedulerConfig> {
        None
    }

    fn set_scheduler_config(&self, wanted: SchedulerConfig) -> SchedulerConfig {
        wanted
    }

    fn num_cpus(&self) -> u32 {
        crate::local::num_cpus()
    }
}

impl Operator for ClientOnly {
    async fn status_leader(&self) -> Result<String, String> {
        self.client.ask_a_server(m::LEADER, None).await
    }

    async fn status_peers(&self) -> Result<Vec<String>, String> {
        self.client.ask_a_server(m::PEERS, None).await
    }

    fn raft_configuration(&self) -> Result<RaftConfigurationDto, ReadError> {
        Err(ReadError::NoServer)
    }

    async fn autopilot_health(&self) -> Result<caravan_http::dto::AutopilotHealthDto, ReadError> {
        Err(ReadError::NoServer)
    }

    async fn snapshot_save(&self) -> Result<Indexed<Vec<u8>>, ReadError> {
        Err(ReadError::NoServer)
    }

    async fn snapshot_restore(&self, _snapshot: Vec<u8>) -> Result<(), RestoreError> {
        Err(RestoreError::NoServer)
    }
}

/// An agent without a server knows no other server to forward to; a request for another
/// client node goes to one of its servers (`ClientAgent.*`), which finds the node.
impl Forwarding for ClientOnly {
    /// Any `server_id`: one of this agent's servers resolves it (or answers the spec's error).
    fn remote_server(&self, id: &str) -> Result<String, String> {
        if self.client.health().is_err() {
            return Err(unknown_server(id));
        }
        Ok(id.to_string())
    }

    async fn forward_request(
        &self,
        _region: Option<&str>,
        request: ForwardedRequest,
        body: bytes::Bytes,
        token: Option<&str>,
    ) -> Result<(ForwardedHead, tokio::sync::mpsc::Receiver<bytes::Bytes>), ApiError> {
        // Any server: the region asked for stays in the path, and that server passes it on.
        let call = request.encode(&body).map_err(ApiError::from_message)?;
        let mut rx = self
            .client
            .stream_from_a_server(m::HTTP_FORWARD, token, call)
            .await
            .map_err(ApiError::from_message)?;
        let head = crate::rpc::forwarded_head(&mut rx)
            .await
            .map_err(ApiError::from_message)?;
        Ok((head, rx))
    }

    async fn remote_host_data(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
    ) -> Result<HostData, String> {
        let id = match target {
            Remote::Node(id) => id,
            Remote::Server(id) => {
                let path = format!("/v1/agent/host?{}", query(&[("server_id", id)]));
                let body = collect(self.through_a_server(path, token).await?).await?;
                let wrapped: WrappedHostData = serde_json::from_slice(&body)
                    .map_err(|e| format!("rpc error: bad reply: {e}"))?;
                return Ok(wrapped.host_data);
            }
        };
        let body = for_node(id, ())?;
        let reply = self
            .client
            .call_a_server(m::CLIENT_HOST, token, body, FORWARD_TIMEOUT)
            .await?;
        serde_json::from_slice(&reply).map_err(|e| format!("rpc error: bad reply: {e}"))
    }

    async fn remote_profile(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: ProfileRequest,
    ) -> Result<Vec<u8>, ApiError> {
        let id = match target {
            Remote::Node(id) => id,
            Remote::Server(id) => {
                let (seconds, debug, gc) = (
                    request.seconds.to_string(),
                    request.debug.to_string(),
                    request.gc.to_string(),
                );
                let params = [
                    ("seconds", seconds.as_str()),
                    ("debug", debug.as_str()),
                    ("gc", gc.as_str()),
                    ("server_id", id),
                ];
                let path = format!("/v1/agent/pprof/{}?{}", request.name, query(&params));
                let rx = self
                    .through_a_server(path, token)
                    .await
                    .map_err(ApiError::from_message)?;
                return collect(rx).await.map_err(ApiError::from_message);
            }
        };
        let timeout = FORWARD_TIMEOUT + Duration::from_secs(request.seconds);
        let body = for_node(id, request).map_err(ApiError::from_message)?;
        self.client
            .call_a_server(m::CLIENT_PROFILE, token, body, timeout)
            .await
            .map(|b| b.to_vec())
            .map_err(ApiError::from_message)
    }

    async fn remote_monitor(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: MonitorRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        let Remote::Node(id) = target else {
            return Err(ApiError::from_message(unknown_server(target.id())));
        };
        let body = for_node(id, request).map_err(ApiError::from_message)?;
        self.client
            .stream_from_a_server(m::CLIENT_MONITOR, token, body)
            .await
            .map_err(ApiError::from_message)
    }

    async fn remote_export(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: caravan_http::api::ExportRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        let Remote::Node(id) = target else {
            return Err(ApiError::from_message(unknown_server(target.id())));
        };
        let body = for_node(id, request).map_err(ApiError::from_message)?;
        self.client
            .stream_from_a_server(m::CLIENT_MONITOR_EXPORT, token, body)
            .await
            .map_err(ApiError::from_message)
    }
}

impl ClientOnly {
    /// A `server_id` request passed whole to one of this agent's servers (which resolves the
    /// ID and checks the token): the body of its `200`, else its error as a coded text.
    async fn through_a_server(
        &self,
        path_and_query: String,
        token: Option<&str>,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, String> {
        let request = ForwardedRequest {
            method: "GET".into(),
            path_and_query,
            content_type: None,
            hops: 1,
        };
        let coded = |status: u16, text: String| format!("RPC Error:: {status},{text}");
        let (head, rx) = self
            .forward_request(None, request, bytes::Bytes::new(), token)
            .await
            .map_err(|e| coded(e.status.as_u16(), e.message))?;
        if head.status == 200 {
            return Ok(rx);
        }
        let text = String::from_utf8_lossy(&collect(rx).await?).into_owned();
        Err(coded(head.status, text))
    }
}

/// `/v1/agent/host`'s answer for a target.
#[derive(serde::Deserialize)]
struct WrappedHostData {
    #[serde(rename = "HostData")]
    host_data: HostData,
}

/// A query string.
fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// The most of a forwarded body kept (the largest profile a server sends is 64 MiB).
const MAX_COLLECTED: usize = 64 << 20;

/// A forwarded body (a profile or host data); a body over [`MAX_COLLECTED`] is an error, not
/// a truncated answer.
async fn collect(mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        if out.len() + chunk.len() > MAX_COLLECTED {
            return Err(format!(
                "the forwarded answer is larger than {} MiB",
                MAX_COLLECTED >> 20
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// How long a request for another node may take (plus any profile duration).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A `ClientAgent.*` body.
fn for_node<T: serde::Serialize>(node_id: &str, request: T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&ForNode {
        node_id: node_id.to_string(),
        request,
        forwarded: false,
    })
    .map_err(|e| e.to_string())
}

/// The spec's error for a `server_id` this agent cannot reach (`leader`: it knows none).
fn unknown_server(id: &str) -> String {
    if id == "leader" {
        "No cluster leader".into()
    } else {
        format!("unknown Nomad server {id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_without_a_server_knows_no_leader_and_no_other_server() {
        assert_eq!(unknown_server("leader"), "No cluster leader");
        assert_eq!(unknown_server("s2"), "unknown Nomad server s2");
    }
}
