//! The capabilities a server answers from its own role: membership from its gossip pool, ACLs,
//! jobs and the operator endpoints from its cluster, the scheduler pool, and forwarding to the
//! other servers of its region.

use std::time::Duration;

use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
use caravan_agent_core::jobs::Job;
use caravan_agent_core::query::{Indexed, ReadOptions, StateAnswer, StateQuery};
use caravan_agent_core::sched::{SchedulerConfig, WorkerInfo};
use caravan_cluster::{ClusterError, Command, Outcome, raft_id, seed};
use caravan_http::api::{
    AclWriteError, ExportRequest, ForwardedHead, ForwardedRequest, JobWriteError, JobWriteResult,
    JoinResult, MonitorRequest, ProfileRequest, ReadError, RestoreError,
};
use caravan_http::dto::{HostData, MembersResponse, RaftConfigurationDto, RaftServerDto};
use caravan_http::{Acls, ApiError, Forwarding, Jobs, Membership, Operator, Remote, Schedulers};
use caravan_rpc::method as m;

use super::ServerRole;
use crate::rpc::PING_TIMEOUT;

/// How long a request forwarded to another server may take (plus any profile duration).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

impl Membership for ServerRole {
    async fn members(&self, _token: Option<&str>) -> Result<MembersResponse, String> {
        Ok(self.member_list())
    }

    async fn join(&self, addresses: Vec<String>) -> JoinResult {
        let o = self.gossip.join(addresses).await;
        JoinResult {
            joined: o.joined,
            errors: o.errors,
        }
    }

    fn regions(&self) -> Vec<String> {
        caravan_agent_core::member::regions_in(&self.gossip.snapshot().members.to_vec())
    }

    async fn force_leave(&self, name: String, prune: bool) -> Result<(), String> {
        self.gossip
            .force_leave(&name, prune)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Acls for ServerRole {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        self.cluster.state().resolve_token(token)
    }

    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        self.cluster.state().acl_read(read)
    }

    async fn acl_write(&self, write: AclWrite) -> Result<Option<Token>, AclWriteError> {
        match self.cluster.write(&Command::Acl(write)).await {
            Ok(Outcome::Acl(token)) => Ok(token),
            Ok(other) => Err(AclWriteError::Storage(format!(
                "unexpected outcome {other:?}"
            ))),
            Err(ClusterError::Refused(why)) => Err(AclWriteError::Invalid(why)),
            Err(ClusterError::Encoding(e)) => Err(AclWriteError::Storage(e)),
            Err(ClusterError::Raft(e)) => Err(AclWriteError::Unavailable(e.to_string())),
        }
    }

    async fn acl_barrier(&self) -> Result<(), ReadError> {
        self.cluster
            .raft()
            .read_index(caravan_cluster::WRITE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| read_error(ClusterError::Raft(e)))
    }
}

impl Jobs for ServerRole {
    async fn register_job(&self, job: Job) -> Result<JobWriteResult, JobWriteError> {
        let cmd = Command::JobRegister { job, seed: seed() };
        match self.cluster.write(&cmd).await.map_err(job_write_error)? {
            Outcome::Job(Some(w)) => Ok(job_write_result(w)),
            other => Err(JobWriteError::Unavailable(format!(
                "registration created no evaluation: {other:?}"
            ))),
        }
    }

    async fn deregister_job(&self, id: &str) -> Result<Option<JobWriteResult>, JobWriteError> {
        let cmd = Command::JobDeregister {
            id: id.to_string(),
            seed: seed(),
        };
        match self.cluster.write(&cmd).await.map_err(job_write_error)? {
            Outcome::Job(w) => Ok(w.map(job_write_result)),
            other => Err(JobWriteError::Unavailable(format!(
                "deregistration answered {other:?}"
            ))),
        }
    }

    async fn read_state(
        &self,
        query: StateQuery,
        options: ReadOptions,
    ) -> Result<Indexed<StateAnswer>, ReadError> {
        let jitter = f64::from(uuid::Uuid::new_v4().as_u64_pair().1 as u32) / f64::from(u32::MAX);
        self.cluster
            .read(&query, options, jitter)
            .await
            .map_err(read_error)
    }
}

impl Schedulers for ServerRole {
    fn schedulers(&self) -> Option<Vec<WorkerInfo>> {
        Some(self.pool.lock().0.info())
    }

    fn scheduler_config(&self) -> Option<SchedulerConfig> {
        Some(self.pool.lock().1.clone())
    }

    fn set_scheduler_config(&self, wanted: SchedulerConfig) -> SchedulerConfig {
        let mut guard = self.pool.lock();
        if guard.1.differs_from(&wanted) {
            let n = usize::try_from(wanted.num_schedulers).unwrap_or(0);
            guard.0.rebuild(n, &wanted.enabled_schedulers);
            guard.0.set_leader(self.is_leader());
            tracing::info!(target: "agent", num_schedulers = n, enabled = ?wanted.enabled_schedulers, "scheduler pool rebuilt");
            guard.1 = wanted;
        }
        guard.1.clone()
    }

    fn num_cpus(&self) -> u32 {
        crate::local::num_cpus()
    }
}

impl Operator for ServerRole {
    async fn status_leader(&self) -> Result<String, String> {
        Ok(self.leader())
    }

    async fn status_peers(&self) -> Result<Vec<String>, String> {
        Ok(self.peers())
    }

    fn raft_configuration(&self) -> Result<RaftConfigurationDto, ReadError> {
        let status = self.cluster.raft().status();
        let leader = status.leader.as_ref().map(|(id, _)| *id);
        let servers = self.region_servers();
        let servers = status
            .voters
            .iter()
            .map(|(&raft, addr)| {
                let known = servers.iter().find(|s| raft_id(&s.id) == raft);
                RaftServerDto {
                    id: known.map_or_else(|| format!("{raft:016x}"), |s| s.id.clone()),
                    node: known.map(|s| s.name.clone()).unwrap_or_default(),
                    address: addr.clone(),
                    leader: leader == Some(raft),
                    voter: true,
                    raft_protocol: "3".into(),
                }
            })
            .collect();
        Ok(RaftConfigurationDto {
            servers,
            index: status.configuration_index,
        })
    }

    async fn autopilot_health(&self) -> Result<caravan_http::dto::AutopilotHealthDto, ReadError> {
        Ok(self.autopilot_health().await)
    }

    async fn node_heartbeats(
        &self,
    ) -> Result<Vec<caravan_agent_core::heartbeat::LastHeartbeat>, ReadError> {
        self.last_heartbeats().await
    }

    async fn snapshot_save(&self) -> Result<Indexed<Vec<u8>>, ReadError> {
        self.cluster.save().await.map_err(read_error)
    }

    async fn snapshot_restore(&self, bytes: Vec<u8>) -> Result<(), RestoreError> {
        let snapshot: caravan_cluster::StateSnapshot = caravan_cluster::command::decode(&bytes)
            .map_err(|e| RestoreError::Invalid(format!("bad snapshot: {e}")))?;
        let restore = Command::StateRestore(Box::new(snapshot));
        match self.cluster.write(&restore).await {
            Ok(_) => {
                tracing::info!(target: "cluster", "state restored from an operator's snapshot");
                Ok(())
            }
            Err(ClusterError::Refused(why)) => Err(RestoreError::Invalid(why)),
            Err(e) => Err(RestoreError::Unavailable(e.to_string())),
        }
    }
}

impl Forwarding for ServerRole {
    fn remote_server(&self, id: &str) -> Result<String, String> {
        let servers = self.region_servers();
        if id == "leader" {
            let leader = self.leader();
            return servers
                .iter()
                .find(|s| !leader.is_empty() && s.rpc.to_string() == leader)
                .map(|s| s.name.clone())
                .ok_or_else(|| "No cluster leader".to_string());
        }
        servers
            .iter()
            .find(|s| s.name == id || s.id == id)
            .map(|s| s.name.clone())
            .ok_or_else(|| format!("unknown Nomad server {id}"))
    }

    async fn forward_request(
        &self,
        region: Option<&str>,
        request: ForwardedRequest,
        body: bytes::Bytes,
        token: Option<&str>,
    ) -> Result<(ForwardedHead, tokio::sync::mpsc::Receiver<bytes::Bytes>), ApiError> {
        let region = region.unwrap_or(&self.config().region);
        let addr = self
            .region_server_rpc(region)
            .map_err(ApiError::from_message)?;
        let call = request.encode(&body).map_err(ApiError::from_message)?;
        let mut rx = self
            .rpc
            .client()
            .stream(addr, m::HTTP_FORWARD, token, call, PING_TIMEOUT)
            .await
            .map_err(|e| ApiError::from_message(crate::rpc::coded_text(&e)))?;
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
        let reply = match target {
            Remote::Server(name) => {
                let addr = self.server_rpc(name)?;
                return self
                    .rpc
                    .call(addr, m::HOST, token, &(), FORWARD_TIMEOUT)
                    .await;
            }
            Remote::Node(id) => {
                let methods = (m::HOST, m::CLIENT_HOST);
                self.call_node(id, token, methods, &(), FORWARD_TIMEOUT, false)
                    .await?
            }
        };
        serde_json::from_slice(&reply).map_err(|e| format!("rpc error: bad reply: {e}"))
    }

    async fn remote_profile(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: ProfileRequest,
    ) -> Result<Vec<u8>, ApiError> {
        // The profile runs for `seconds` (at most an hour, by the request's type) on the target.
        let timeout = FORWARD_TIMEOUT + Duration::from_secs(request.seconds);
        let reply = match target {
            Remote::Server(name) => {
                let addr = self.server_rpc(name).map_err(ApiError::from_message)?;
                let body = serde_json::to_vec(&request)
                    .map_err(|e| ApiError::from_message(e.to_string()))?;
                self.rpc.raw(addr, m::PROFILE, token, body, timeout).await
            }
            Remote::Node(id) => {
                let methods = (m::PROFILE, m::CLIENT_PROFILE);
                self.call_node(id, token, methods, &request, timeout, false)
                    .await
            }
        };
        reply.map(|b| b.to_vec()).map_err(ApiError::from_message)
    }

    async fn remote_monitor(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: MonitorRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        match target {
            Remote::Server(name) => {
                let addr = self.server_rpc(name).map_err(ApiError::from_message)?;
                self.rpc
                    .stream(addr, m::MONITOR, token, &request, PING_TIMEOUT)
                    .await
            }
            Remote::Node(id) => {
                let methods = (m::MONITOR, m::CLIENT_MONITOR);
                self.stream_node(id, token, methods, &request, false).await
            }
        }
        .map_err(ApiError::from_message)
    }

    async fn remote_export(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: ExportRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        match target {
            Remote::Server(name) => {
                let addr = self.server_rpc(name).map_err(ApiError::from_message)?;
                self.rpc
                    .stream_coded(addr, m::MONITOR_EXPORT, token, &request, PING_TIMEOUT)
                    .await
            }
            Remote::Node(id) => {
                let methods = (m::MONITOR_EXPORT, m::CLIENT_MONITOR_EXPORT);
                self.stream_node(id, token, methods, &request, false)
                    .await
                    .map_err(ApiError::from_message)
            }
        }
    }
}

/// A cluster read's failure over HTTP.
fn read_error(e: ClusterError) -> ReadError {
    match e {
        ClusterError::Raft(
            caravan_raft::RaftError::NoLeader | caravan_raft::RaftError::Timeout,
        ) => ReadError::NoLeader,
        other => ReadError::Unavailable(other.to_string()),
    }
}

/// A job write's answer over HTTP.
fn job_write_result(w: caravan_cluster::store::JobWrite) -> JobWriteResult {
    JobWriteResult {
        eval_id: w.eval.id,
        eval_create_index: w.eval.create_index,
        job_modify_index: w.job_modify_index,
    }
}

/// A refused job write is the caller's fault (400 over HTTP would need a new error kind; the
/// HTTP side validated the job already, so a refusal here means the state changed).
fn job_write_error(e: ClusterError) -> JobWriteError {
    JobWriteError::Unavailable(e.to_string())
}
