//! What the HTTP layer needs from a host, as small capability traits. An [`App`](crate::App) is
//! built from [`AgentInfo`] plus the capabilities the host has
//! ([`AppBuilder`](crate::AppBuilder)); the routes of a missing one answer `501`. The `caravan`
//! binary implements every one over its roles; an embedder implements the few it serves; tests
//! implement them with focused fakes.

use std::collections::BTreeMap;
use std::future::Future;

use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
pub use caravan_agent_core::client_rpc::{ForwardedHead, ForwardedRequest};
use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::member::Member;
pub use caravan_agent_core::query::{Indexed, ReadOptions, StateAnswer, StateQuery};

use crate::dto::{HostData, MembersResponse, VersionDto};

/// The profile and monitor requests live in the domain crate, so that the HTTP API and the agent
/// RPC decode and validate them alike; re-exported here under their old names.
pub use caravan_agent_core::debug::{
    ExportRequest, MAX_PROFILE_SECONDS, MonitorRequest, ProfileRequest, ProfileRequestError,
};

/// The result of a gossip join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinResult {
    /// Addresses contacted.
    pub joined: usize,
    /// One message per address that failed.
    pub errors: Vec<String>,
}

impl JoinResult {
    /// A join that reached no address, for `reason`.
    pub fn failed(reason: impl Into<String>) -> JoinResult {
        JoinResult {
            joined: 0,
            errors: vec![reason.into()],
        }
    }
}

/// Statistics by subsystem (`runtime`, `client`, `nomad`, …), every value a string.
pub type Stats = BTreeMap<String, BTreeMap<String, String>>;

/// Who the agent is and how it is doing: the one capability every [`App`](crate::App) needs
/// (`/v1/agent/self`, `/v1/agent/health`, and the facts request targeting reads).
pub trait AgentInfo: Send + Sync + 'static {
    /// The running configuration.
    fn config(&self) -> &AgentConfig;

    /// Build version facts.
    fn version(&self) -> VersionDto;

    /// This agent's gossip member; [`Member::none`] (the default) on a client-only agent.
    fn member(&self) -> Member {
        Member::none()
    }

    /// Subsystem statistics for `/v1/agent/self` (none by default).
    fn stats(&self) -> Stats {
        Stats::new()
    }

    /// The server subsystem's health: `Err(message)` when unhealthy. Called only when the
    /// configuration enables a server. No default: a load balancer trusts this answer.
    fn server_health(&self) -> Result<(), String>;

    /// The client subsystem's health: `Err(message)` when unhealthy. Called only when the
    /// configuration enables a client.
    fn client_health(&self) -> Result<(), String>;

    /// The client's node ID, when this agent runs a client.
    fn node_id(&self) -> Option<String> {
        None
    }

    /// The server's ID (its `id` tag), when this agent runs a server.
    fn server_id(&self) -> Option<String> {
        None
    }

    /// Whether this agent is the cluster leader as far as it knows.
    fn is_leader(&self) -> bool {
        false
    }
}

/// The gossip pool: `/v1/agent/members`, `/v1/agent/join`, `/v1/agent/force-leave`.
pub trait Membership: Send + Sync + 'static {
    /// The gossip member list as a server sees it (a client-only agent asks a server, passing
    /// on the caller's `token`).
    fn members(
        &self,
        token: Option<&str>,
    ) -> impl Future<Output = Result<MembersResponse, String>> + Send;

    /// Joins the gossip pool through `addresses` (servers only).
    fn join(&self, addresses: Vec<String>) -> impl Future<Output = JoinResult> + Send;

    /// Force-leaves a member by name, optionally pruning it (servers only).
    fn force_leave(
        &self,
        name: String,
        prune: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The regions with servers in the pool, sorted (`/v1/regions`); none by default.
    fn regions(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A client's list of servers: `/v1/agent/servers`.
pub trait ServerList: Send + Sync + 'static {
    /// The client's current server RPC addresses, sorted as strings.
    fn servers(&self) -> Vec<String>;

    /// Pings every address over RPC and replaces the server list with the reachable ones.
    /// `Err` (with every reason) when none answers; the old list is then kept.
    fn set_servers(
        &self,
        addresses: Vec<String>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// ACL tokens and policies: token resolution for every endpoint's check, and the ACL API
/// (`/v1/acl/*`). An [`App`](crate::App) whose configuration enables ACLs needs it.
pub trait Acls: Send + Sync + 'static {
    /// Resolves a request's token (`None`: no token) to its permissions. Only called with ACLs
    /// enabled. `Err` carries the authentication failure text (`Permission denied`, …).
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String>;

    /// Calls `read` once with the ACL state and returns what it returns. (An implementation
    /// that never calls it makes the ACL API answer `500`.)
    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R;

    /// Proposes one ACL change, built by the caller with its fresh IDs and time inside, and
    /// waits until it is applied (replicated, on a cluster) and published. The state machine
    /// checks it ([`AclState::apply`]): a refused write changes nothing and is
    /// [`AclWriteError::Invalid`] with the reason. Returns the token created or changed.
    fn acl_write(
        &self,
        write: AclWrite,
    ) -> impl Future<Output = Result<Option<Token>, AclWriteError>> + Send;

    /// Waits until [`Acls::acl_read`] sees every ACL write acknowledged before the call: the
    /// barrier of a consistent (not `stale`) read. A cluster asks its leader for the read index
    /// (`Err(ReadError::NoLeader)` without a quorum). The default, for a host whose state is
    /// all local, has nothing to wait for.
    fn acl_barrier(&self) -> impl Future<Output = Result<(), ReadError>> + Send {
        async { Ok(()) }
    }
}

/// Jobs and what they lead to: `/v1/jobs`, `/v1/job/*`, `/v1/evaluations`, `/v1/allocations`,
/// `/v1/nodes` and their single-object routes.
pub trait Jobs: Send + Sync + 'static {
    /// Registers a job (servers): its evaluation ID and indexes.
    fn register_job(
        &self,
        job: caravan_agent_core::jobs::Job,
    ) -> impl Future<Output = Result<JobWriteResult, JobWriteError>> + Send;

    /// Deregisters a job; `Ok(None)` when it is unknown.
    fn deregister_job(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<JobWriteResult>, JobWriteError>> + Send;

    /// Reads the replicated state (jobs, evaluations, allocations, nodes) as `options` ask
    /// (Nomad's `stale`, `index` and `wait`). The answer is the [`StateAnswer`] variant of the
    /// query's; its index and leader facts become the `X-Nomad-*` headers.
    fn read_state(
        &self,
        query: StateQuery,
        options: ReadOptions,
    ) -> impl Future<Output = Result<Indexed<StateAnswer>, ReadError>> + Send;
}

/// The scheduler worker pool: `/v1/agent/schedulers` and `/v1/agent/schedulers/config`.
pub trait Schedulers: Send + Sync + 'static {
    /// The scheduler workers, on servers.
    fn schedulers(&self) -> Option<Vec<caravan_agent_core::sched::WorkerInfo>>;

    /// The scheduler pool configuration, on servers.
    fn scheduler_config(&self) -> Option<caravan_agent_core::sched::SchedulerConfig>;

    /// Applies a validated configuration if it differs (rebuilding the pool); returns the
    /// configuration in force afterwards.
    fn set_scheduler_config(
        &self,
        config: caravan_agent_core::sched::SchedulerConfig,
    ) -> caravan_agent_core::sched::SchedulerConfig;

    /// CPUs of this machine (the upper bound of `num_schedulers`).
    fn num_cpus(&self) -> u32;
}

/// Looking inside the agent: `/v1/agent/host`, `/v1/agent/pprof/*`, `/v1/agent/monitor`.
pub trait Debugging: Send + Sync + 'static {
    /// Host data of this machine.
    fn host_data(&self) -> impl Future<Output = Result<HostData, String>> + Send;

    /// Collects a profile (`cmdline`, `profile`, `trace` or a named one) as the body to send.
    fn profile(
        &self,
        request: ProfileRequest,
    ) -> impl Future<Output = Result<Vec<u8>, crate::ApiError>> + Send;

    /// The log fan-out `/v1/agent/monitor` subscribes to.
    fn monitor_hub(&self) -> &crate::monitor::MonitorHub;

    /// This agent's logs for `/v1/agent/monitor/export` (spec §12), a request the HTTP layer
    /// validated: the bytes of the log file (`on_disk`; the configuration has a `log_file`, the
    /// caller checked) or of the `service_name` unit's journal, in order. The stream ends at
    /// the end of what there is (with `follow`, when the journal reader ends); dropping the
    /// receiver stops the reading. By default the agent exports nothing (`501`).
    fn export_logs(
        &self,
        request: ExportRequest,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, crate::ApiError>> + Send
    {
        let _ = request;
        async {
            Err(crate::ApiError::new(
                http::StatusCode::NOT_IMPLEMENTED,
                "this agent does not export its logs",
            ))
        }
    }
}

/// The agent a forwarded request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote<'a> {
    /// Another server of the region, by member name.
    Server(&'a str),
    /// A client node, by node ID (spec §0.8: through the server that holds its connection).
    Node(&'a str),
}

impl Remote<'_> {
    /// The member name or node ID.
    pub fn id(&self) -> &str {
        match self {
            Remote::Server(id) | Remote::Node(id) => id,
        }
    }
}

/// Reaching another agent for `server_id` or `node_id` (spec §0.8). Without it, a
/// `server_id` that does not name this agent is `unknown Nomad server <id>` and a `node_id`
/// that is not this agent's `Unknown node "<id>"`.
pub trait Forwarding: Send + Sync + 'static {
    /// Resolves a `server_id` that does not name this agent (`leader` on a follower, another
    /// server's member name or ID) to that server's member name, or the spec's error text
    /// (`unknown Nomad server <id>`).
    fn remote_server(&self, id: &str) -> Result<String, String>;

    /// Host data of another agent, fetched over RPC with the caller's `token` (the target
    /// checks it with its own rule). A node that the state does not know is `404 Unknown node
    /// "<id>"`, one no server holds a connection to `404 No path to node` (both coded as
    /// `RPC Error:: 404,<text>`).
    fn remote_host_data(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
    ) -> impl Future<Output = Result<HostData, String>> + Send;

    /// A profile from another agent, fetched over RPC with the caller's `token`.
    fn remote_profile(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: ProfileRequest,
    ) -> impl Future<Output = Result<Vec<u8>, crate::ApiError>> + Send;

    /// Passes a whole API request to a server: one of `region` when given (this server's
    /// region is another), else any server this agent knows (it runs none). Answers the
    /// response head and its body's chunks; `No path to region` when no server of `region`
    /// is known. By default nothing is passed on.
    fn forward_request(
        &self,
        region: Option<&str>,
        request: ForwardedRequest,
        body: bytes::Bytes,
        token: Option<&str>,
    ) -> impl Future<
        Output = Result<
            (ForwardedHead, tokio::sync::mpsc::Receiver<bytes::Bytes>),
            crate::ApiError,
        >,
    > + Send {
        let _ = (region, request, body, token);
        async { Err(crate::ApiError::from_message("No path to region")) }
    }

    /// A log stream from another agent, relayed over RPC: the bytes of its monitor response
    /// body, in order, until either side ends it. The caller's `token` goes along.
    fn remote_monitor(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: MonitorRequest,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, crate::ApiError>> + Send;

    /// A log export from another agent, relayed over RPC as
    /// [`remote_monitor`](Forwarding::remote_monitor) relays a stream. By default no other
    /// agent is reachable: `unknown Nomad server <server>` / `Unknown node "<id>"`.
    fn remote_export(
        &self,
        target: Remote<'_>,
        token: Option<&str>,
        request: ExportRequest,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, crate::ApiError>> + Send
    {
        let _ = (token, request);
        let unknown = match target {
            Remote::Server(server) => {
                crate::ApiError::from_message(format!("unknown Nomad server {server}"))
            }
            Remote::Node(id) => crate::ApiError::new(
                http::StatusCode::NOT_FOUND,
                format!("Unknown node \"{id}\""),
            ),
        };
        async move { Err(unknown) }
    }
}

/// Re-reading the configuration: `PUT /v1/agent/reload` (and whatever else the host ties to
/// it, such as SIGHUP).
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the configuration and applies what can change while running. `Err` with the
    /// reason (a file that does not load, …) leaves the running configuration untouched.
    fn reload(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// The gossip keyring of the whole pool: `/v1/agent/keyring/{list,install,use,remove}`.
pub trait GossipKeyring: Send + Sync + 'static {
    /// Applies `op` (its key already checked) on every member of the pool and gathers their
    /// answers; `Err` with Serf's text (`N/M nodes reported failure`) when some member failed
    /// or did not answer.
    fn keyring(
        &self,
        op: caravan_agent_core::keyring::KeyringOp,
    ) -> impl Future<Output = Result<caravan_agent_core::keyring::KeyringAnswer, String>> + Send;
}

/// The cluster's status and operator endpoints: `/v1/status/leader`, `/v1/status/peers`,
/// `/v1/operator/raft/configuration`, `/v1/operator/snapshot`.
pub trait Operator: Send + Sync + 'static {
    /// `/v1/status/leader`: the RPC address of the Raft leader, empty when none is known.
    fn status_leader(&self) -> impl Future<Output = Result<String, String>> + Send;

    /// `/v1/status/peers`: the RPC addresses of the Raft voters.
    fn status_peers(&self) -> impl Future<Output = Result<Vec<String>, String>> + Send;

    /// The Raft configuration this server knows (`/v1/operator/raft/configuration`). Agents
    /// without a server answer [`ReadError::NoServer`].
    fn raft_configuration(&self) -> Result<crate::dto::RaftConfigurationDto, ReadError>;

    /// Autopilot's health of the voters (`/v1/operator/autopilot/health`). Agents without a
    /// server answer [`ReadError::NoServer`].
    fn autopilot_health(
        &self,
    ) -> impl Future<Output = Result<crate::dto::AutopilotHealthDto, ReadError>> + Send;

    /// When each client node last heartbeat, as the leader saw it (`/v1/nodes/heartbeats`), by
    /// node ID. Agents without a server answer [`ReadError::NoServer`] (the default).
    fn node_heartbeats(
        &self,
    ) -> impl Future<Output = Result<Vec<caravan_agent_core::heartbeat::LastHeartbeat>, ReadError>> + Send
    {
        async { Err(ReadError::NoServer) }
    }

    /// The whole replicated state as the bytes `/v1/operator/snapshot` saves, read
    /// consistently, with the index and leader facts of the read. Agents without a server
    /// answer [`ReadError::NoServer`].
    fn snapshot_save(&self) -> impl Future<Output = Result<Indexed<Vec<u8>>, ReadError>> + Send;

    /// Replaces the replicated state with a saved snapshot (`PUT /v1/operator/snapshot`).
    /// A snapshot that does not decode or would be refused piece by piece is
    /// [`RestoreError::Invalid`]; nothing changes then.
    fn snapshot_restore(
        &self,
        snapshot: Vec<u8>,
    ) -> impl Future<Output = Result<(), RestoreError>> + Send;
}

/// What a job registration or deregistration created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobWriteResult {
    /// The evaluation.
    pub eval_id: String,
    /// Its creation index.
    pub eval_create_index: u64,
    /// The job's modify index.
    pub job_modify_index: u64,
}

/// Why an ACL change failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclWriteError {
    /// The change was refused (bad input).
    Invalid(String),
    /// The new state could not be stored.
    Storage(String),
    /// The cluster could not take the write (no leader, no quorum).
    Unavailable(String),
}

/// Why a state read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// This agent runs no server and knows none to ask (HTTP `501 this agent runs no server`).
    NoServer,
    /// The read needs the leader (not `stale`) and no leader is known (HTTP `500 No cluster
    /// leader`).
    NoLeader,
    /// The read could not be served (forwarding failed, shutting down, …); the text says why
    /// (HTTP `500` with it).
    Unavailable(String),
}

/// Why a snapshot restore failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// This agent runs no server.
    NoServer,
    /// The snapshot does not decode or was refused; nothing changed.
    Invalid(String),
    /// The cluster could not take the write (no leader, no quorum, storage).
    Unavailable(String),
}

/// Why a job write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobWriteError {
    /// This agent runs no server.
    NoServer,
    /// The cluster could not take the write (no leader, no quorum, storage).
    Unavailable(String),
}
