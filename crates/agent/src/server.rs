//! The server role: this agent's gossip pool, its member of the cluster (Raft, the replicated
//! state), the scheduler worker pool and the leadership duties. The capabilities it answers are
//! in [`api`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::member::{self, BuildInfo, Member, MemberStatus, ServerInfo, servers_in};
use caravan_agent_core::sched::SchedulerConfig;
use caravan_cluster::heartbeats::Heartbeats;
use caravan_cluster::{Cluster, Command, raft_id, seed};
use caravan_gossip::NodeConfig;
use caravan_gossip::udp::Gossip;
use caravan_http::api::Stats;
use caravan_http::dto::{MemberDto, MembersResponse};
use caravan_sched::workers::WorkerPool;
use parking_lot::Mutex;

use crate::cluster::{LeaderSource, ServerPeers};
use crate::keyring::ServerKeyring;
use crate::local::Local;
use crate::rpc::Rpc;

mod api;
pub use api::FORWARD_TIMEOUT;
mod autopilot;
mod keyring;
mod nodes;

/// How often the leader enqueues a `_core` GC evaluation.
pub const CORE_GC_INTERVAL: Duration = Duration::from_secs(300);

/// A running server: gossip, cluster and workers.
pub struct ServerRole {
    local: Arc<Local>,
    id: String,
    gossip: Gossip,
    cluster: Arc<Cluster>,
    /// The worker pool and the configuration it was built with.
    pool: Mutex<(WorkerPool, SchedulerConfig)>,
    rpc: Arc<Rpc>,
    /// The connections client nodes opened to this server.
    nodes: nodes::NodeConns,
    /// The client heartbeat timers (running while this server leads).
    heartbeats: Arc<Heartbeats>,
    /// The gossip keyring (with encryption on).
    keyring: Option<Arc<ServerKeyring>>,
    /// Autopilot's verdict on each voter (by server ID) and since when it has held.
    stable: Mutex<std::collections::HashMap<String, (bool, std::time::SystemTime)>>,
}

impl ServerRole {
    /// Starts the server with ID `id`: its gossip pool on the serf listener, its cluster member
    /// (durable under `data_dir/server/raft` outside dev mode) and its worker pool.
    pub async fn start(
        local: Arc<Local>,
        id: String,
        rpc: Arc<Rpc>,
        keyring: Option<Arc<ServerKeyring>>,
    ) -> Result<ServerRole, String> {
        let config = &local.config;
        let gossip = start_gossip(config, &id, &local.build, keyring.as_deref()).await?;
        let dir = config
            .data_dir
            .as_ref()
            .map(|d| Path::new(d).join("server").join("raft"));
        let every = config.server.raft_snapshot_threshold;
        let cluster =
            crate::cluster::start(&id, config.advertise.rpc, dir, rpc.clone(), every).await?;
        let cluster = Arc::new(cluster);
        let pool = Mutex::new(start_workers(config, &cluster, &rpc));
        let heartbeats = Arc::new(Heartbeats::new(config.server.heartbeat));
        Ok(ServerRole {
            local,
            id,
            gossip,
            cluster,
            pool,
            rpc,
            nodes: nodes::NodeConns::default(),
            heartbeats,
            keyring,
            stable: Mutex::default(),
        })
    }

    /// The latest gossip snapshot (members, stats, counters).
    pub fn gossip_snapshot(&self) -> Arc<caravan_gossip::udp::Snapshot> {
        self.gossip.snapshot()
    }

    /// How many client nodes' heartbeat timers this server runs (0 unless it leads).
    pub fn heartbeats_tracked(&self) -> usize {
        self.heartbeats.tracked()
    }

    /// The server's ID (its `id` gossip tag).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The cluster this server is a member of.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The configuration.
    fn config(&self) -> &AgentConfig {
        &self.local.config
    }

    /// Whether this server leads the cluster as far as it knows.
    pub fn is_leader(&self) -> bool {
        self.cluster.raft().is_leader()
    }

    /// The leader's RPC address as `/v1/status/leader` shows it (`""` when unknown).
    pub fn leader(&self) -> String {
        self.cluster
            .raft()
            .leader()
            .map(|(_, a)| a)
            .unwrap_or_default()
    }

    /// The voters' RPC addresses (empty before the cluster forms).
    pub fn peers(&self) -> Vec<String> {
        self.cluster.raft().status().voters.into_values().collect()
    }

    /// The servers of this region, from gossip.
    fn region_servers(&self) -> Vec<ServerInfo> {
        servers_in(
            &self.gossip.snapshot().members.to_vec(),
            &self.config().region,
        )
    }

    /// The member list this server knows, in the wire form.
    pub fn member_list(&self) -> MembersResponse {
        let snapshot = self.gossip.snapshot();
        let members = snapshot.members.iter().map(MemberDto::from).collect();
        MembersResponse::of(self.config(), members)
    }

    /// This server's gossip member: as gossip sees it, else as its configuration says.
    pub fn member(&self) -> Member {
        let config = self.config();
        let name = config.member_name();
        if let Some(me) = self
            .gossip
            .snapshot()
            .members
            .iter()
            .find(|m| m.name == name)
        {
            return me.clone();
        }
        Member {
            name,
            addr: Some(config.advertise.serf.ip()),
            port: config.advertise.serf.port(),
            tags: Some(member::server_tags(config, &self.id, &self.local.build)),
            status: MemberStatus::Alive,
            versions: member::NOMAD_VERSIONS,
        }
    }

    /// The server's health (see [`server_health`]).
    pub fn health(&self) -> Result<(), String> {
        server_health(self.cluster.raft())
    }

    /// Adds the server's statistics: `nomad`, `raft` and `serf`.
    pub fn add_stats(&self, stats: &mut Stats) {
        stats.insert("nomad".into(), self.nomad_stats());
        let ids = self.server_ids_by_raft_id();
        let raft = crate::raftstats::raft_stats(&self.cluster.raft().status(), &ids);
        stats.insert("raft".into(), raft);
        stats.insert("serf".into(), self.gossip.snapshot().stats.clone());
    }

    fn nomad_stats(&self) -> BTreeMap<String, String> {
        let config = self.config();
        BTreeMap::from([
            ("server".into(), "true".into()),
            ("leader".into(), self.is_leader().to_string()),
            ("leader_addr".into(), self.leader()),
            (
                "bootstrap".into(),
                (config.server.bootstrap_expect == 1).to_string(),
            ),
            ("known_regions".into(), self.known_regions().to_string()),
        ])
    }

    /// How many regions have servers in the pool (at least this one).
    fn known_regions(&self) -> usize {
        let members = self.gossip.snapshot().members.to_vec();
        member::regions_in(&members).len().max(1)
    }

    /// Server IDs (UUIDs) by Raft ID, from gossip tags.
    fn server_ids_by_raft_id(&self) -> BTreeMap<u64, String> {
        self.region_servers()
            .into_iter()
            .map(|s| (raft_id(&s.id), s.id))
            .collect()
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
        self.region_servers()
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.rpc)
            .ok_or_else(|| format!("unknown Nomad server {name}"))
    }

    /// The RPC address of a server of `region` (drawn at random among them), or `No path to
    /// region`. A token goes there only when this server can authenticate servers.
    fn region_server_rpc(&self, region: &str) -> Result<SocketAddr, String> {
        if !self.rpc.confirms_servers() {
            return Err(format!(
                "cannot forward to region {region}: without `encrypt` or `tls.rpc` this server cannot authenticate other servers"
            ));
        }
        let members = self.gossip.snapshot().members.to_vec();
        let servers: Vec<ServerInfo> = servers_in(&members, region)
            .into_iter()
            .filter(|s| s.status == MemberStatus::Alive)
            .collect();
        if servers.is_empty() {
            return Err("No path to region".into());
        }
        let pick = (seed() % servers.len() as u64) as usize;
        Ok(servers[pick].rpc)
    }

    /// Leadership changed: a leader pauses ⌊3n/4⌋ of its workers.
    fn set_leader_workers(&self, leader: bool) {
        self.pool.lock().0.set_leader(leader);
    }

    /// Starts the cluster's background work: bootstrap, reconciliation, leadership duties and
    /// GC.
    pub fn spawn_duties(self: &Arc<Self>) {
        let server = Arc::downgrade(self);
        let peers: Arc<dyn caravan_cluster::duties::ServerDirectory> = Arc::new(ServerPeers {
            gossip: self.gossip.clone(),
            region: self.config().region.clone(),
            rpc: self.rpc.clone(),
            on_leadership: Box::new(move |leading| {
                if let Some(server) = server.upgrade() {
                    server.set_leader_workers(leading);
                }
            }),
        });
        use caravan_cluster::duties;
        let c = &self.cluster;
        let (expect, me) = (
            self.config().server.bootstrap_expect,
            self.config().advertise.rpc,
        );
        tokio::spawn(duties::bootstrap(c.clone(), peers.clone(), expect, me));
        tokio::spawn(duties::reconcile(c.clone(), peers.clone()));
        tokio::spawn(duties::follow_leadership(c.clone(), peers));
        tokio::spawn(duties::core_gc(c.clone(), CORE_GC_INTERVAL));
        tokio::spawn(caravan_cluster::heartbeats::expire(
            c.clone(),
            self.heartbeats.clone(),
        ));
    }

    /// Joins `start_join` once and keeps retrying `retry_join` (per `server_join`) in the
    /// background, as Nomad does at start.
    pub fn spawn_start_joins(&self) {
        let start = self.config().server.start_join.clone();
        if !start.is_empty() {
            let g = self.gossip.clone();
            tokio::spawn(async move {
                let outcome = g.join(start).await;
                tracing::info!(target: "agent", joined = outcome.joined, errors = ?outcome.errors, "start join");
            });
        }
        let retry = self.config().server.server_join.clone();
        if retry.retry_join.is_empty() {
            return;
        }
        tokio::spawn(retry_join(self.gossip.clone(), retry));
    }

    /// Leaves the gossip pool gracefully (on shutdown).
    pub async fn leave(&self) {
        self.gossip.leave().await;
    }
}

/// Joins `retry.retry_join` until one address answers or `retry_max` attempts failed.
async fn retry_join(gossip: Gossip, retry: caravan_agent_core::config::ServerJoin) {
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
}

/// A server is healthy while it has a leader that hears from a quorum: a leader that has not
/// heard from a majority, or a follower that has not heard from its leader, for longer than the
/// election timeout is not (a cluster that lost its quorum says so).
fn server_health(raft: &caravan_raft::RaftNode) -> Result<(), String> {
    let status = raft.leadership();
    let limit = status.contact_limit;
    if !status.leader_known {
        return Err("no leader".into());
    }
    if status.leading {
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

/// Starts the worker pool. Workers take evaluations from the leader's broker and submit each
/// one to the cluster, whose state machine places it on every server alike.
fn start_workers(
    config: &AgentConfig,
    cluster: &Arc<Cluster>,
    rpc: &Arc<Rpc>,
) -> (WorkerPool, SchedulerConfig) {
    let wanted = configured_workers(config);
    let pool = WorkerPool::new(
        config.server.num_schedulers as usize,
        &wanted.enabled_schedulers,
        Arc::new(LeaderSource {
            cluster: cluster.clone(),
            rpc: rpc.clone(),
            runtime: tokio::runtime::Handle::current(),
        }),
        scheduler(config, cluster),
    );
    (pool, wanted)
}

/// What a worker runs for an evaluation: an `EvalProcess` write to the cluster.
fn scheduler(config: &AgentConfig, cluster: &Arc<Cluster>) -> caravan_sched::workers::Scheduler {
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
}

/// Starts the gossip pool on the serf listener with Nomad's server tags.
async fn start_gossip(
    config: &AgentConfig,
    server_id: &str,
    build: &BuildInfo,
    keyring: Option<&ServerKeyring>,
) -> Result<Gossip, String> {
    let expect = config.server.bootstrap_expect.max(3);
    let mut node = NodeConfig::new(config.member_name(), config.advertise.serf, expect);
    node.generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    node.tags = Some(member::server_tags(config, server_id, build));
    if let Some(keyring) = keyring {
        let (primary, others) = keyring.gossip_keys();
        node.key = Some(primary);
        node.extra_keys = others;
    }
    let bind = SocketAddr::new(config.addresses.serf, config.ports.serf);
    Gossip::start(node, bind).await.map_err(|e| e.to_string())
}

/// The scheduler pool a configuration asks for (`server.num_schedulers`,
/// `server.enabled_schedulers`): at start, and again on a reload.
pub fn configured_workers(config: &AgentConfig) -> SchedulerConfig {
    SchedulerConfig {
        num_schedulers: i64::from(config.server.num_schedulers),
        enabled_schedulers: config.server.enabled_schedulers.clone(),
    }
}
