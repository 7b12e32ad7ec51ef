//! The running agent: its server side (gossip, cluster, workers) and the capabilities the HTTP
//! layer calls; the process facts are `crate::local`'s, the client side `crate::client_role`'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::member::{self, BuildInfo, Member, MemberStatus, servers_in};
use caravan_agent_core::query::{Indexed, ReadOptions, StateAnswer, StateQuery};
use caravan_agent_core::sched::{SchedulerConfig, WorkerInfo};
use caravan_cluster::{Cluster, ClusterError, Command, Outcome, raft_id, seed};
use caravan_gossip::NodeConfig;
use caravan_gossip::udp::Gossip;
use caravan_http::AgentInfo;
use caravan_http::api::{
    AclWriteError, JobWriteError, JobWriteResult, JoinResult, ReadError, RestoreError, Stats,
};
use caravan_http::dto::{HostData, MemberDto, MembersResponse, VersionDto};

use crate::cluster::{LeaderSource, ServerPeers};
use caravan_rpc::method as m;

use crate::client_role::ClientRole;
use crate::local::Local;
use crate::rpc::{PING_TIMEOUT, Rpc};

/// How often the leader enqueues a `_core` GC evaluation.
pub const CORE_GC_INTERVAL: Duration = Duration::from_secs(300);

/// How long a request forwarded to another server may take (plus any profile duration).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's state shared by every subsystem.
pub struct Agent {
    local: Arc<Local>,
    client: Arc<ClientRole>,
    server_id: Option<String>,
    gossip: Option<Gossip>,
    rpc: Arc<Rpc>,
    cluster: Option<Arc<Cluster>>,
    pool: Option<parking_lot::Mutex<(caravan_sched::workers::WorkerPool, SchedulerConfig)>>,
}

/// The agent's HTTP application: every capability, served by the agent.
pub fn app(agent: &Arc<Agent>) -> Result<caravan_http::App, caravan_http::BuildError> {
    caravan_http::App::builder(agent.clone())
        .membership(agent.clone())
        .server_list(agent.client.clone())
        .acls(agent.clone())
        .jobs(agent.clone())
        .schedulers(agent.clone())
        .debugging(agent.local.clone())
        .forwarding(agent.clone())
        .operator(agent.clone())
        .build()
}

impl Agent {
    /// Sets up identities (persisted under `data_dir` outside dev mode) and the server list.
    pub async fn new(
        config: AgentConfig,
        hub: caravan_http::monitor::MonitorHub,
    ) -> Result<Agent, String> {
        let server_id = if config.server.enabled {
            Some(crate::identity::load(&config, "server", "node-id")?)
        } else {
            None
        };
        let node_id = if config.client.enabled {
            Some(crate::identity::load(&config, "client", "client-id")?)
        } else {
            None
        };
        let rpc = Arc::new(Rpc::new(
            crate::rpc::dial(&config)?,
            crate::rpc::confirms_servers(&config),
        ));
        let client = Arc::new(ClientRole::new(&config, node_id, rpc.clone()).await);
        let local = Arc::new(Local::new(config, hub));
        let config = &local.config;
        let gossip = match &server_id {
            Some(id) => Some(start_gossip(config, id, &local.build).await?),
            None => None,
        };
        let cluster = match &server_id {
            Some(id) => {
                let dir = config
                    .data_dir
                    .as_ref()
                    .map(|d| Path::new(d).join("server").join("raft"));
                let every = config.server.raft_snapshot_threshold;
                let c = crate::cluster::start(id, config.advertise.rpc, dir, rpc.clone(), every)
                    .await?;
                Some(Arc::new(c))
            }
            None => None,
        };
        let pool = cluster
            .as_ref()
            .map(|c| parking_lot::Mutex::new(start_workers(config, c, &rpc)));
        Ok(Agent {
            cluster,
            pool,
            server_id,
            gossip,
            rpc,
            client,
            local,
        })
    }

    /// What this process is, whatever its roles.
    pub fn local(&self) -> &Arc<Local> {
        &self.local
    }

    /// The cluster (servers only).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Every gossip member (empty on a client-only agent).
    pub fn gossip_members(&self) -> Vec<Member> {
        self.gossip
            .as_ref()
            .map(|g| g.snapshot().members.clone())
            .unwrap_or_default()
    }

    /// The leader's RPC address as `/v1/status/leader` shows it (`""` when unknown).
    pub fn local_leader(&self) -> Option<String> {
        let c = self.cluster.as_ref()?;
        Some(c.raft().leader().map(|(_, a)| a).unwrap_or_default())
    }

    /// The voters' RPC addresses (empty before the cluster forms).
    pub fn local_peers(&self) -> Option<Vec<String>> {
        let c = self.cluster.as_ref()?;
        Some(c.raft().status().voters.into_values().collect())
    }

    /// Leadership changed: a leader pauses ⌊3n/4⌋ of its workers.
    pub fn set_leader_workers(&self, leader: bool) {
        if let Some(pool) = &self.pool {
            pool.lock().0.set_leader(leader);
        }
    }

    /// Starts the cluster's background work: bootstrap, reconciliation, leadership duties, GC,
    /// and registering the local client node.
    pub fn spawn_cluster(self: &Arc<Self>) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let Some(gossip) = self.gossip.clone() else {
            return;
        };
        let agent = Arc::downgrade(self);
        let peers: Arc<dyn caravan_cluster::duties::ServerDirectory> = Arc::new(ServerPeers {
            gossip,
            region: self.local.config.region.clone(),
            rpc: self.rpc.clone(),
            on_leadership: Box::new(move |leading| {
                if let Some(agent) = agent.upgrade() {
                    agent.set_leader_workers(leading);
                }
            }),
        });
        use caravan_cluster::duties;
        let (expect, me) = (
            self.local.config.server.bootstrap_expect,
            self.local.config.advertise.rpc,
        );
        tokio::spawn(duties::bootstrap(c.clone(), peers.clone(), expect, me));
        tokio::spawn(duties::reconcile(c.clone(), peers.clone()));
        tokio::spawn(duties::follow_leadership(c.clone(), peers));
        tokio::spawn(duties::core_gc(c.clone(), CORE_GC_INTERVAL));
        if let Some(id) = self.client.node_id() {
            let node = crate::client_role::local_node(&self.local.config, id);
            tokio::spawn(async move {
                // Retry until a leader takes it (the cluster may still be forming).
                loop {
                    let cmd = Command::NodeUpsert {
                        node: node.clone(),
                        seed: seed(),
                    };
                    match c.write(&cmd).await {
                        Ok(_) => return,
                        Err(e) => {
                            tracing::debug!(target: "client", error = %e, "node registration waits for a leader")
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    }

    /// The member list this server knows, in the wire form.
    pub fn local_members(&self) -> Option<MembersResponse> {
        let gossip = self.gossip.as_ref()?;
        Some(MembersResponse {
            server_name: self.local.config.node_name.clone(),
            server_region: self.local.config.region.clone(),
            server_dc: self.local.config.datacenter.clone(),
            members: gossip
                .snapshot()
                .members
                .iter()
                .map(MemberDto::from)
                .collect(),
        })
    }

    /// Joins `start_join` once and keeps retrying `retry_join` (per `server_join`) in the
    /// background, as Nomad does at start.
    pub fn spawn_start_joins(&self) {
        let Some(gossip) = self.gossip.clone() else {
            return;
        };
        let start = self.local.config.server.start_join.clone();
        if !start.is_empty() {
            let g = gossip.clone();
            tokio::spawn(async move {
                let outcome = g.join(start).await;
                tracing::info!(target: "agent", joined = outcome.joined, errors = ?outcome.errors, "start join");
            });
        }
        let retry = self.local.config.server.server_join.clone();
        if retry.retry_join.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let outcome = gossip.join(retry.retry_join.clone()).await;
                if outcome.joined > 0 {
                    tracing::info!(target: "agent", joined = outcome.joined, "retry join succeeded");
                    return;
                }
                tracing::warn!(target: "agent", attempt, errors = ?outcome.errors, "retry join failed");
                if retry.retry_max != 0 && attempt >= retry.retry_max {
                    tracing::error!(target: "agent", attempts = attempt, "retry join gave up");
                    return;
                }
                tokio::time::sleep(retry.retry_interval).await;
            }
        });
    }

    /// Reads the ACL state this agent enforces: the replicated one on a server; a client-only
    /// agent holds none (it resolves tokens through a server) and reads an empty state.
    fn with_acl<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        match &self.cluster {
            Some(c) => c.state().acl_read(read),
            None => read(&AclState::default()),
        }
    }

    /// Serves a Raft RPC (`Raft.*`).
    pub async fn raft_rpc(
        &self,
        method: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, (hyper::StatusCode, String)> {
        let c = self.cluster.as_ref().ok_or((
            hyper::StatusCode::BAD_REQUEST,
            "rpc: this agent runs no server".to_string(),
        ))?;
        c.handle(method, body)
            .await
            .map_err(|e| (hyper::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    /// The RPC address of a server of this region, by member name.
    fn server_rpc(&self, name: &str) -> Result<SocketAddr, String> {
        if !self.rpc.confirms_servers() {
            // The address comes from gossip; without a way to authenticate the server there,
            // the caller's token would go to whoever claimed it.
            return Err(format!(
                "cannot forward to server {name}: without `encrypt` or `tls.rpc` this server cannot authenticate other servers"
            ));
        }
        servers_in(&self.gossip_members(), &self.local.config.region)
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.rpc)
            .ok_or_else(|| format!("unknown Nomad server {name}"))
    }

    /// Server IDs (UUIDs) by Raft ID, from gossip tags.
    fn server_ids_by_raft_id(&self) -> BTreeMap<u64, String> {
        servers_in(&self.gossip_members(), &self.local.config.region)
            .into_iter()
            .map(|s| (raft_id(&s.id), s.id))
            .collect()
    }

    /// Leaves the gossip pool gracefully (on shutdown).
    pub async fn leave(&self) {
        if let Some(g) = &self.gossip {
            g.leave().await;
        }
    }

    fn runtime_stats(&self) -> BTreeMap<String, String> {
        let metrics = self.local.runtime.metrics();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        BTreeMap::from([
            ("arch".into(), std::env::consts::ARCH.into()),
            ("cpu_count".into(), cpus.to_string()),
            ("goroutines".into(), metrics.num_alive_tasks().to_string()),
            ("kernel.name".into(), std::env::consts::OS.into()),
            ("max_procs".into(), metrics.num_workers().to_string()),
            ("version".into(), env!("CARAVAN_RUSTC_VERSION").into()),
        ])
    }

    fn client_stats(&self, node_id: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("node_id".into(), node_id.to_string()),
            (
                "known_servers".into(),
                caravan_http::ServerList::servers(&*self.client).join(","),
            ),
            ("num_allocations".into(), "0".into()),
        ])
    }

    fn nomad_stats(&self) -> BTreeMap<String, String> {
        let leader = self.is_leader();
        BTreeMap::from([
            ("server".into(), "true".into()),
            ("leader".into(), leader.to_string()),
            (
                "leader_addr".into(),
                self.local_leader().unwrap_or_default(),
            ),
            (
                "bootstrap".into(),
                (self.local.config.server.bootstrap_expect == 1).to_string(),
            ),
            ("known_regions".into(), self.local.config.region.clone()),
        ])
    }
}

impl caravan_http::AgentInfo for Agent {
    fn config(&self) -> &AgentConfig {
        &self.local.config
    }

    fn version(&self) -> VersionDto {
        VersionDto::release(&self.local.build.version, &self.local.build.revision)
    }

    fn member(&self) -> Member {
        let Some(server_id) = &self.server_id else {
            return Member::none();
        };
        let name = self.local.config.member_name();
        if let Some(g) = &self.gossip
            && let Some(me) = g.snapshot().members.iter().find(|m| m.name == name)
        {
            return me.clone();
        }
        Member {
            name: self.local.config.member_name(),
            addr: Some(self.local.config.advertise.serf.ip()),
            port: self.local.config.advertise.serf.port(),
            tags: Some(member::server_tags(
                &self.local.config,
                server_id,
                &self.local.build,
            )),
            status: MemberStatus::Alive,
            versions: member::NOMAD_VERSIONS,
        }
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::new();
        stats.insert("runtime".into(), self.runtime_stats());
        if let Some(node_id) = self.client.node_id() {
            stats.insert("client".into(), self.client_stats(node_id));
        }
        if self.local.config.server.enabled {
            stats.insert("nomad".into(), self.nomad_stats());
        }
        if let Some(c) = &self.cluster {
            let ids = self.server_ids_by_raft_id();
            stats.insert(
                "raft".into(),
                crate::raftstats::raft_stats(&c.raft().status(), &ids),
            );
        }
        if let Some(g) = &self.gossip {
            stats.insert("serf".into(), g.snapshot().stats.clone());
        }
        stats
    }

    fn server_health(&self) -> Result<(), String> {
        let Some(c) = &self.cluster else {
            return Err("no leader".into());
        };
        server_health(c.raft())
    }

    fn client_health(&self) -> Result<(), String> {
        self.client.health()
    }

    fn node_id(&self) -> Option<String> {
        self.client.node_id().map(String::from)
    }

    fn server_id(&self) -> Option<String> {
        self.server_id.clone()
    }

    fn is_leader(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.raft().is_leader())
    }
}

impl caravan_http::Membership for Agent {
    async fn members(&self, token: Option<&str>) -> Result<MembersResponse, String> {
        if let Some(members) = self.local_members() {
            return Ok(members);
        }
        // A client-only agent asks one of its servers, which checks the token again.
        self.client.ask_a_server(m::MEMBERS, token).await
    }

    async fn join(&self, addresses: Vec<String>) -> JoinResult {
        match &self.gossip {
            Some(g) => {
                let o = g.join(addresses).await;
                JoinResult {
                    joined: o.joined,
                    errors: o.errors,
                }
            }
            None => JoinResult {
                joined: 0,
                errors: vec!["this agent runs no server".into()],
            },
        }
    }

    async fn force_leave(&self, name: String, prune: bool) -> Result<(), String> {
        match &self.gossip {
            Some(g) => g.force_leave(&name, prune).await.map_err(|e| e.to_string()),
            None => Err("this agent runs no server".into()),
        }
    }
}

/// A server is healthy while it has a leader that hears from a quorum: a leader that has not
/// heard from a majority, or a follower that has not heard from its leader, for longer than the
/// election timeout is not (a cluster that lost its quorum says so).
fn server_health(raft: &caravan_raft::RaftNode) -> Result<(), String> {
    let limit = caravan_raft::RaftConfig::new(0, "").election_timeout.1;
    let status = raft.status();
    if status.leader.is_none() {
        return Err("no leader".into());
    }
    if status.state == "Leader" {
        let since = raft.watch().borrow().millis_since_quorum_ack;
        return match since {
            Some(ms) if ms > limit.as_millis() as u64 => Err(format!(
                "no quorum: a majority of servers has not answered the leader for {ms} ms"
            )),
            _ => Ok(()),
        };
    }
    match status.last_contact {
        Some(d) if d > limit => Err(format!(
            "no leader: last contact with the leader {} ms ago",
            d.as_millis()
        )),
        _ => Ok(()),
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

/// Starts the worker pool. Workers take evaluations from the leader's broker and submit each
/// one to the cluster, whose state machine places it on every server alike.
fn start_workers(
    config: &AgentConfig,
    cluster: &Arc<Cluster>,
    rpc: &Arc<Rpc>,
) -> (caravan_sched::workers::WorkerPool, SchedulerConfig) {
    let wanted = SchedulerConfig {
        num_schedulers: i64::from(config.server.num_schedulers),
        enabled_schedulers: config.server.enabled_schedulers.clone(),
    };
    let scheduler: caravan_sched::workers::Scheduler = {
        let cluster = cluster.clone();
        let runtime = tokio::runtime::Handle::current();
        let gc_threshold_secs = config.server.node_gc_threshold.as_secs();
        Arc::new(move |eval| {
            let now_secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let cmd = Command::EvalProcess {
                eval_id: eval.id.clone(),
                gc_threshold_secs,
                now_secs,
                seed: seed(),
            };
            runtime
                .block_on(cluster.write(&cmd))
                .map_err(|e| e.to_string())?;
            tracing::debug!(target: "sched", eval = %eval.id, scheduler = %eval.scheduler, "evaluation processed");
            Ok(())
        })
    };
    let pool = caravan_sched::workers::WorkerPool::new(
        config.server.num_schedulers as usize,
        &wanted.enabled_schedulers,
        Arc::new(LeaderSource {
            cluster: cluster.clone(),
            rpc: rpc.clone(),
            runtime: tokio::runtime::Handle::current(),
        }),
        scheduler,
    );
    (pool, wanted)
}

/// Starts the gossip pool on the serf listener with Nomad's server tags.
async fn start_gossip(
    config: &AgentConfig,
    server_id: &str,
    build: &BuildInfo,
) -> Result<Gossip, String> {
    let expect = config.server.bootstrap_expect.max(3);
    let mut node = NodeConfig::new(config.member_name(), config.advertise.serf, expect);
    node.generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    node.tags = Some(member::server_tags(config, server_id, build));
    node.key = config.server.encrypt_key.clone();
    let bind = SocketAddr::new(config.addresses.serf, config.ports.serf);
    Gossip::start(node, bind).await.map_err(|e| e.to_string())
}

impl caravan_http::Acls for Agent {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        match &self.cluster {
            Some(c) => c.state().resolve_token(token),
            None => self.client.resolve_remotely(token),
        }
    }

    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        self.with_acl(read)
    }

    async fn acl_write(&self, write: AclWrite) -> Result<Option<Token>, AclWriteError> {
        let Some(c) = &self.cluster else {
            return Err(AclWriteError::Unavailable(
                "ACL writes go to a server; this agent runs none".into(),
            ));
        };
        match c.write(&Command::Acl(write)).await {
            Ok(Outcome::Acl(token)) => Ok(token),
            Ok(other) => Err(AclWriteError::Storage(format!(
                "unexpected outcome {other:?}"
            ))),
            Err(ClusterError::Refused(why)) => Err(AclWriteError::Invalid(why)),
            Err(ClusterError::Encoding(e)) => Err(AclWriteError::Storage(e)),
            Err(ClusterError::Raft(e)) => Err(AclWriteError::Unavailable(e.to_string())),
        }
    }
}

impl caravan_http::Jobs for Agent {
    async fn register_job(
        &self,
        job: caravan_agent_core::jobs::Job,
    ) -> Result<JobWriteResult, JobWriteError> {
        let c = self.cluster.as_ref().ok_or(JobWriteError::NoServer)?;
        let cmd = Command::JobRegister { job, seed: seed() };
        match c.write(&cmd).await.map_err(job_write_error)? {
            Outcome::Job(Some(w)) => Ok(job_write_result(w)),
            other => Err(JobWriteError::Unavailable(format!(
                "registration created no evaluation: {other:?}"
            ))),
        }
    }

    async fn deregister_job(&self, id: &str) -> Result<Option<JobWriteResult>, JobWriteError> {
        let c = self.cluster.as_ref().ok_or(JobWriteError::NoServer)?;
        let cmd = Command::JobDeregister {
            id: id.to_string(),
            seed: seed(),
        };
        match c.write(&cmd).await.map_err(job_write_error)? {
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
        let c = self.cluster.as_ref().ok_or(ReadError::NoServer)?;
        let jitter = f64::from(uuid::Uuid::new_v4().as_u64_pair().1 as u32) / f64::from(u32::MAX);
        c.read(&query, options, jitter).await.map_err(read_error)
    }
}

impl caravan_http::Schedulers for Agent {
    fn schedulers(&self) -> Option<Vec<WorkerInfo>> {
        self.pool.as_ref().map(|p| p.lock().0.info())
    }

    fn scheduler_config(&self) -> Option<SchedulerConfig> {
        self.pool.as_ref().map(|p| p.lock().1.clone())
    }

    fn set_scheduler_config(&self, wanted: SchedulerConfig) -> SchedulerConfig {
        let Some(pool) = &self.pool else {
            return wanted;
        };
        let mut guard = pool.lock();
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

impl caravan_http::Operator for Agent {
    async fn status_leader(&self) -> Result<String, String> {
        if let Some(leader) = self.local_leader() {
            return Ok(leader);
        }
        self.client.ask_a_server(m::LEADER, None).await
    }

    async fn status_peers(&self) -> Result<Vec<String>, String> {
        if let Some(peers) = self.local_peers() {
            return Ok(peers);
        }
        self.client.ask_a_server(m::PEERS, None).await
    }

    fn raft_configuration(&self) -> Result<caravan_http::dto::RaftConfigurationDto, ReadError> {
        let c = self.cluster.as_ref().ok_or(ReadError::NoServer)?;
        let status = c.raft().status();
        let leader = status.leader.as_ref().map(|(id, _)| *id);
        let servers = servers_in(&self.gossip_members(), &self.local.config.region);
        let servers = status
            .voters
            .iter()
            .map(|(&raft, addr)| {
                let known = servers.iter().find(|s| raft_id(&s.id) == raft);
                caravan_http::dto::RaftServerDto {
                    id: known.map_or_else(|| format!("{raft:016x}"), |s| s.id.clone()),
                    node: known.map(|s| s.name.clone()).unwrap_or_default(),
                    address: addr.clone(),
                    leader: leader == Some(raft),
                    voter: true,
                    raft_protocol: "3".into(),
                }
            })
            .collect();
        Ok(caravan_http::dto::RaftConfigurationDto {
            servers,
            index: status.configuration_index,
        })
    }

    async fn snapshot_save(&self) -> Result<Indexed<Vec<u8>>, ReadError> {
        let c = self.cluster.as_ref().ok_or(ReadError::NoServer)?;
        c.save().await.map_err(read_error)
    }

    async fn snapshot_restore(&self, bytes: Vec<u8>) -> Result<(), RestoreError> {
        let c = self.cluster.as_ref().ok_or(RestoreError::NoServer)?;
        let snapshot: caravan_cluster::StateSnapshot = caravan_cluster::command::decode(&bytes)
            .map_err(|e| RestoreError::Invalid(format!("bad snapshot: {e}")))?;
        match c.write(&Command::StateRestore(Box::new(snapshot))).await {
            Ok(_) => {
                tracing::info!(target: "cluster", "state restored from an operator's snapshot");
                Ok(())
            }
            Err(ClusterError::Refused(why)) => Err(RestoreError::Invalid(why)),
            Err(e) => Err(RestoreError::Unavailable(e.to_string())),
        }
    }
}

impl caravan_http::Forwarding for Agent {
    fn remote_server(&self, id: &str) -> Result<String, String> {
        let servers = servers_in(&self.gossip_members(), &self.local.config.region);
        if id == "leader" {
            let leader = self.local_leader().unwrap_or_default();
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

    async fn remote_host_data(
        &self,
        server: &str,
        token: Option<&str>,
    ) -> Result<HostData, String> {
        let addr = self.server_rpc(server)?;
        self.rpc
            .call(addr, m::HOST, token, &(), FORWARD_TIMEOUT)
            .await
    }

    async fn remote_profile(
        &self,
        server: &str,
        token: Option<&str>,
        request: caravan_http::api::ProfileRequest,
    ) -> Result<Vec<u8>, caravan_http::ApiError> {
        let addr = self
            .server_rpc(server)
            .map_err(caravan_http::ApiError::from_message)?;
        let body = serde_json::to_vec(&request)
            .map_err(|e| caravan_http::ApiError::from_message(e.to_string()))?;
        // The profile runs for `seconds` (at most an hour, by the request's type) on the target.
        let timeout = FORWARD_TIMEOUT + Duration::from_secs(request.seconds);
        self.rpc
            .raw(addr, m::PROFILE, token, body, timeout)
            .await
            .map(|b| b.to_vec())
            .map_err(caravan_http::ApiError::from_message)
    }

    async fn remote_monitor(
        &self,
        server: &str,
        token: Option<&str>,
        request: caravan_http::api::MonitorRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, caravan_http::ApiError> {
        let addr = self
            .server_rpc(server)
            .map_err(caravan_http::ApiError::from_message)?;
        self.rpc
            .stream(addr, m::MONITOR, token, &request, PING_TIMEOUT)
            .await
            .map_err(caravan_http::ApiError::from_message)
    }
}
