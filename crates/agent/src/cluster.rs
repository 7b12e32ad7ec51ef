//! Servers as one Raft cluster ([`caravan_raft`]):
//! - [`ClusterState`], the replicated state machine: ACL policies and tokens, jobs, evaluations,
//!   allocations and nodes. Commands are deterministic: IDs come from a seed in the command, the
//!   time from the command, placement from the evaluation's index.
//! - The transport: Raft messages over the agent RPC listener.
//! - Bootstrap once `bootstrap_expect` servers are alive in gossip (unless one already has a
//!   cluster), the leader's reconciliation of gossip with the Raft configuration (add alive
//!   servers, remove left/pruned ones), and the leader's duties: the eval broker, `_core` GC,
//!   failed evaluations and the ⌊3n/4⌋ worker pause.
//! - [`LeaderSource`]: every server's workers take evaluations from the leader's broker.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::acl::AclState;
use caravan_agent_core::jobs::{Evaluation, Job, Node};
use caravan_agent_core::member::{Member, MemberStatus};
use caravan_http::AgentApi;
use caravan_raft::{BoxFuture, RaftConfig, RaftNode, StateMachine, Transport};
use caravan_sched::SchedError;
use caravan_sched::broker::{Eval, EvalBroker};
use caravan_sched::state::{Store, Tables, broker_eval};
use caravan_sched::workers::EvalSource;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use caravan_rpc::method as m;
use caravan_rpc::{Refusal, Reply};

use crate::rpc::{Rpc, decode, reply};

/// How long a forwarded write or a broker call may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One replicated write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Command {
    /// Replace the ACL state, if nobody changed it since `base` (its index) was read.
    AclReplace {
        /// The ACL index the change was computed from.
        base: u64,
        /// The new state.
        state: AclState,
    },
    /// Register a job.
    JobRegister {
        /// The job.
        job: Job,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Stop a job.
    JobDeregister {
        /// Its ID.
        id: String,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Add or update a client node.
    NodeUpsert {
        /// The node.
        node: Node,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Run the scheduler for an evaluation (placement is deterministic).
    EvalProcess {
        /// The evaluation.
        eval_id: String,
        /// `node_gc_threshold` in seconds.
        gc_threshold_secs: u64,
        /// The leader's clock, Unix seconds.
        now_secs: u64,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Mark an evaluation failed (past the delivery limit).
    EvalFail {
        /// The evaluation.
        eval_id: String,
    },
    /// Create a `_core` garbage-collection evaluation.
    CoreEval {
        /// Seeds the IDs created.
        seed: u64,
    },
}

/// What a command did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// `AclReplace` lost a race: read again and retry.
    #[serde(default)]
    pub conflict: bool,
    /// The command was refused.
    #[serde(default)]
    pub error: Option<String>,
    /// A job write: its evaluation and the job's modify index.
    #[serde(default)]
    pub write: Option<(Evaluation, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    acl: AclState,
    tables: Tables,
}

/// The replicated state, plus the leader's broker it feeds.
pub struct ClusterState {
    /// ACL policies and tokens.
    pub acl: RwLock<AclState>,
    /// Jobs, evaluations, allocations and nodes.
    pub store: Arc<Store>,
    /// The broker this server runs while leading.
    pub broker: Arc<EvalBroker>,
    /// Whether this server leads (its broker takes new evaluations). Held across each apply so
    /// a leadership change never loses or doubles an evaluation.
    leading: Mutex<bool>,
}

impl ClusterState {
    /// An empty state feeding `broker` while leading.
    pub fn new(broker: Arc<EvalBroker>) -> ClusterState {
        ClusterState {
            acl: RwLock::new(AclState::default()),
            store: Arc::new(Store::default()),
            broker,
            leading: Mutex::new(false),
        }
    }

    /// Leadership changed: the broker is flushed and, on a new leader, refilled with every
    /// pending evaluation.
    pub fn set_leading(&self, leading: bool) {
        let mut on = self.leading.lock();
        *on = leading;
        self.broker.flush();
        if leading {
            for e in self.store.pending_evals() {
                self.broker.enqueue(broker_eval(&e));
            }
        }
    }

    fn apply_command(&self, command: Command) -> Outcome {
        let on = self.leading.lock();
        let enqueue = |evals: &[Evaluation]| {
            if *on {
                for e in evals {
                    self.broker.enqueue(broker_eval(e));
                }
            }
        };
        let mut out = Outcome::default();
        match command {
            Command::AclReplace { base, state } => {
                let mut acl = self.acl.write();
                if acl.index == base {
                    *acl = state;
                } else {
                    out.conflict = true;
                }
            }
            Command::JobRegister { job, seed } => {
                self.store.reseed(seed);
                let w = self.store.register(job);
                enqueue(std::slice::from_ref(&w.eval));
                out.write = Some((w.eval, w.job_modify_index));
            }
            Command::JobDeregister { id, seed } => {
                self.store.reseed(seed);
                if let Some(w) = self.store.deregister(&id) {
                    enqueue(std::slice::from_ref(&w.eval));
                    out.write = Some((w.eval, w.job_modify_index));
                }
            }
            Command::NodeUpsert { node, seed } => {
                self.store.reseed(seed);
                enqueue(&self.store.upsert_node(node));
            }
            Command::EvalProcess {
                eval_id,
                gc_threshold_secs,
                now_secs,
                seed,
            } => {
                self.store.reseed(seed);
                match self.store.process(&eval_id, gc_threshold_secs, now_secs) {
                    Ok(unblocked) => enqueue(&unblocked),
                    Err(e) => out.error = Some(e),
                }
            }
            Command::EvalFail { eval_id } => self.store.fail(&eval_id),
            Command::CoreEval { seed } => {
                self.store.reseed(seed);
                enqueue(&[self.store.core_eval()]);
            }
        }
        out
    }
}

impl StateMachine for ClusterState {
    fn apply(&self, _index: u64, command: &str) -> String {
        let outcome = match serde_json::from_str::<Command>(command) {
            Ok(c) => self.apply_command(c),
            Err(e) => Outcome {
                error: Some(format!("undecodable command: {e}")),
                ..Outcome::default()
            },
        };
        serde_json::to_string(&outcome).unwrap_or_default()
    }

    fn snapshot(&self) -> String {
        let snap = Snapshot {
            acl: self.acl.read().clone(),
            tables: self.store.export(),
        };
        serde_json::to_string(&snap).unwrap_or_default()
    }

    fn restore(&self, snapshot: &str) -> Result<(), String> {
        let snap: Snapshot =
            serde_json::from_str(snapshot).map_err(|e| format!("bad snapshot: {e}"))?;
        *self.acl.write() = snap.acl;
        self.store.import(snap.tables);
        Ok(())
    }
}

/// Raft messages over the agent RPC client.
pub struct RpcTransport(pub Arc<Rpc>);

impl Transport for RpcTransport {
    fn call(
        &self,
        addr: &str,
        method: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>> {
        let client = self.0.clone();
        let addr: Result<SocketAddr, String> = addr
            .parse()
            .map_err(|e| format!("bad raft address {addr:?}: {e}"));
        Box::pin(async move {
            let reply = client.raw(addr?, method, None, body, timeout).await?;
            Ok(reply.to_vec())
        })
    }
}

/// The Raft ID of a server: the first 64 bits of its server ID.
pub fn raft_id(server_id: &str) -> u64 {
    uuid::Uuid::parse_str(server_id).map_or(0, |u| u.as_u64_pair().0)
}

/// A server as gossip describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Member name (`name.region`).
    pub name: String,
    /// Server ID (UUID).
    pub id: String,
    /// Raft ID.
    pub raft_id: u64,
    /// RPC address.
    pub rpc: SocketAddr,
    /// Gossip status.
    pub status: MemberStatus,
    /// Its `bootstrap_expect` (0 when not set).
    pub expect: u32,
}

/// The servers of `region` among gossip members.
pub fn servers_in(members: &[Member], region: &str) -> Vec<ServerInfo> {
    members
        .iter()
        .filter_map(|m| {
            let tags = m.tags.as_ref()?;
            if tags.get("role").map(String::as_str) != Some("nomad")
                || tags.get("region").map(String::as_str) != Some(region)
            {
                return None;
            }
            let id = tags.get("id")?.clone();
            let rpc = format!("{}:{}", tags.get("rpc_addr")?, tags.get("port")?);
            Some(ServerInfo {
                name: m.name.clone(),
                raft_id: raft_id(&id),
                id,
                rpc: crate::agent::parse_rpc_addr(&rpc)?,
                status: m.status,
                expect: tags.get("expect").and_then(|e| e.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// The Raft node, the state it replicates and the RPC client it talks with.
pub struct Cluster {
    /// The Raft node.
    pub raft: Arc<RaftNode>,
    /// The replicated state.
    pub state: Arc<ClusterState>,
    /// The RPC client.
    pub rpc: Arc<Rpc>,
    /// For blocking calls from worker threads.
    pub runtime: tokio::runtime::Handle,
}

impl Cluster {
    /// Starts the Raft node (durable under `dir`, in memory without).
    pub async fn start(
        server_id: &str,
        rpc_addr: SocketAddr,
        dir: Option<std::path::PathBuf>,
        rpc: Arc<Rpc>,
    ) -> Result<Cluster, String> {
        let broker = Arc::new(EvalBroker::new(Default::default()));
        let state = Arc::new(ClusterState::new(broker));
        let mut config = RaftConfig::new(raft_id(server_id), rpc_addr.to_string());
        config.dir = dir;
        config.write_timeout = WRITE_TIMEOUT;
        let raft = RaftNode::start(config, state.clone(), Arc::new(RpcTransport(rpc.clone())))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Cluster {
            raft: Arc::new(raft),
            state,
            rpc,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Replicates a command and waits until this server has applied it.
    pub async fn write(&self, command: Command) -> Result<Outcome, String> {
        let text = serde_json::to_string(&command).map_err(|e| e.to_string())?;
        let applied = self.raft.apply(text).await.map_err(|e| e.to_string())?;
        self.raft.wait_applied(applied.index, WRITE_TIMEOUT).await;
        let outcome: Outcome = serde_json::from_str(&applied.response)
            .map_err(|e| format!("bad state machine response: {e}"))?;
        match outcome.error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// [`Cluster::write`] from a non-runtime thread (scheduler workers).
    pub fn write_blocking(&self, command: Command) -> Result<Outcome, String> {
        self.runtime.block_on(self.write(command))
    }

    /// The leader's RPC address, when one is known.
    pub fn leader_addr(&self) -> Option<SocketAddr> {
        self.raft.leader().and_then(|(_, a)| a.parse().ok())
    }

    /// Changes the ACL state with compare-and-set on its index, retrying when writes race.
    pub async fn acl_write<R>(
        &self,
        change: impl Fn(&mut AclState) -> Result<R, caravan_agent_core::CoreError>,
    ) -> Result<R, caravan_http::api::AclWriteError> {
        use caravan_http::api::AclWriteError;
        for _ in 0..8 {
            let mut next = self.state.acl.read().clone();
            let base = next.index;
            let out = change(&mut next).map_err(|e| AclWriteError::Invalid(e.to_string()))?;
            if next.index == base {
                return Ok(out); // nothing changed
            }
            let outcome = self
                .write(Command::AclReplace { base, state: next })
                .await
                .map_err(AclWriteError::Unavailable)?;
            if !outcome.conflict {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(AclWriteError::Unavailable(
            "ACL state kept changing; try again".into(),
        ))
    }

    /// Forms the cluster once `expect` servers are alive in gossip, unless one of them already
    /// belongs to a cluster (then the leader adds us). Runs until this node is initialized.
    pub async fn bootstrap(self: Arc<Self>, agent: Arc<Agent>, expect: u32) {
        let me = self.raft.id();
        loop {
            if self.raft.is_initialized().await {
                return;
            }
            if expect == 1 {
                let voters = BTreeMap::from([(me, agent.config().advertise.rpc.to_string())]);
                match self.raft.initialize(voters).await {
                    Ok(()) => {
                        tracing::info!(target: "raft", "bootstrapped a single-server cluster")
                    }
                    Err(e) => tracing::error!(target: "raft", error = %e, "bootstrap failed"),
                }
                return;
            }
            if expect > 1
                && let Some(voters) = self.bootstrap_set(&agent, expect).await
            {
                match self.raft.initialize(voters.clone()).await {
                    Ok(()) => {
                        tracing::info!(target: "raft", servers = voters.len(), "bootstrapped the cluster")
                    }
                    Err(e) => tracing::error!(target: "raft", error = %e, "bootstrap failed"),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The voters to bootstrap with: `expect` alive servers expecting the same, none of which
    /// reports Raft peers already.
    async fn bootstrap_set(&self, agent: &Agent, expect: u32) -> Option<BTreeMap<u64, String>> {
        let members = agent.gossip_members();
        let servers: Vec<ServerInfo> = servers_in(&members, &agent.config().region)
            .into_iter()
            .filter(|s| s.status == MemberStatus::Alive && s.expect == expect)
            .collect();
        if servers.len() < expect as usize {
            return None;
        }
        for s in servers.iter().filter(|s| s.raft_id != self.raft.id()) {
            if !self.answers_as(s.rpc, s.raft_id).await {
                tracing::info!(target: "raft", server = %s.name, "server not confirmed over RPC yet; waiting");
                return None;
            }
            match self
                .rpc
                .call::<Vec<String>>(s.rpc, m::PEERS, None, &(), Duration::from_secs(2))
                .await
            {
                Ok(peers) if !peers.is_empty() => {
                    tracing::info!(target: "raft", server = %s.name, "a server already has a cluster; waiting to be added");
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "raft", server = %s.name, error = %e, "cannot ask server for its peers");
                    return None;
                }
            }
        }
        Some(
            servers
                .iter()
                .map(|s| (s.raft_id, s.rpc.to_string()))
                .collect(),
        )
    }

    /// On the leader, once a second: add alive servers that are not voters, remove voters that
    /// left gossip (or were pruned), record evaluations past the delivery limit as failed.
    pub async fn reconcile(self: Arc<Self>, agent: Arc<Agent>) {
        let mut seen: HashSet<u64> = HashSet::new();
        // Servers already reported as unconfirmed: said once at WARN, then at DEBUG, so a
        // lingering stranger in gossip cannot fill the log.
        let mut refused: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let servers = servers_in(&agent.gossip_members(), &agent.config().region);
            seen.extend(servers.iter().map(|s| s.raft_id));
            if !self.raft.is_leader() {
                continue;
            }
            for e in self.state.broker.take_failed() {
                if let Err(err) = self.write(Command::EvalFail { eval_id: e.id }).await {
                    tracing::warn!(target: "raft", error = %err, "cannot record failed evaluation");
                }
            }
            let voters = self.raft.status().voters;
            for s in &servers {
                if s.status == MemberStatus::Alive && !voters.contains_key(&s.raft_id) {
                    // Gossip tags are claims: add the server only once its RPC address answers,
                    // over an authenticated connection, as the server it claims to be.
                    if !self.answers_as(s.rpc, s.raft_id).await {
                        let why = if self.rpc.confirms_servers() {
                            "its RPC address does not answer as that server"
                        } else {
                            "no `encrypt` or `tls.rpc` to authenticate it"
                        };
                        if refused.len() > 1024 {
                            refused.clear();
                        }
                        if refused.insert(s.name.clone()) {
                            tracing::warn!(target: "raft", server = %s.name, rpc = %s.rpc, reason = why, "not adding server");
                        } else {
                            tracing::debug!(target: "raft", server = %s.name, rpc = %s.rpc, reason = why, "not adding server");
                        }
                        continue;
                    }
                    tracing::info!(target: "raft", server = %s.name, "adding server to the cluster");
                    if let Err(e) = self.raft.add_voter(s.raft_id, s.rpc.to_string()).await {
                        tracing::warn!(target: "raft", server = %s.name, error = %e, "cannot add server");
                    }
                }
            }
            for (id, addr) in voters.iter().filter(|&(&id, _)| id != self.raft.id()) {
                let member = servers.iter().find(|s| s.raft_id == *id);
                let gone = match member {
                    Some(s) => s.status == MemberStatus::Left,
                    None => seen.contains(id),
                };
                // A leave heard in gossip is a claim too: a server still answering as itself
                // at its Raft address stays a voter.
                let still_there = match addr.parse() {
                    Ok(addr) => gone && self.answers_as(addr, *id).await,
                    Err(_) => false,
                };
                if still_there {
                    tracing::warn!(target: "raft", id, "gossip says the server left, but it still answers; keeping it");
                    continue;
                }
                if gone {
                    tracing::info!(target: "raft", id, "removing departed server from the cluster");
                    if let Err(e) = self.raft.remove_server(*id).await {
                        tracing::warn!(target: "raft", id, error = %e, "cannot remove server");
                    }
                }
            }
        }
    }

    /// Whether the agent at `addr` answers `Status.Ping` as the server with Raft ID `raft`, over
    /// a connection that proved the server key (or TLS server certificate) when one is set.
    async fn answers_as(&self, addr: SocketAddr, raft: u64) -> bool {
        if !self.rpc.confirms_servers() {
            return false; // an anonymous answer proves nothing
        }
        match self.rpc.ping(addr, Duration::from_secs(2)).await {
            Ok(Some(id)) => raft_id(&id) == raft,
            _ => false,
        }
    }

    /// Follows leadership: the broker, the worker pause and `_core` GC follow the leader.
    pub async fn follow_leadership(self: Arc<Self>, agent: Arc<Agent>) {
        let mut rx = self.raft.watch();
        let mut leading = false;
        loop {
            let now = self.raft.is_leader();
            if now != leading {
                leading = now;
                self.state.set_leading(now);
                agent.set_leader_workers(now);
                tracing::info!(target: "raft", leader = now, "leadership changed");
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// On the leader, every `interval`: a `_core` GC evaluation, as Nomad's leader does.
    pub async fn core_gc(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.raft.is_leader()
                && let Err(e) = self.write(Command::CoreEval { seed: seed() }).await
            {
                tracing::warn!(target: "raft", error = %e, "cannot enqueue core GC");
            }
        }
    }
}

/// A fresh random seed for a command's IDs.
pub fn seed() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// A dequeue request to the leader's broker.
#[derive(Serialize, Deserialize)]
pub struct DequeueRequest {
    /// Scheduler types.
    pub types: Vec<String>,
    /// How long the leader may wait for work.
    pub timeout_ms: u64,
}

/// An ack or nack.
#[derive(Serialize, Deserialize)]
pub struct AckRequest {
    /// The evaluation.
    pub eval_id: String,
    /// Its delivery token.
    pub token: u64,
}

/// Workers' view of the leader's broker: local on the leader, over RPC elsewhere.
pub struct LeaderSource(pub Arc<Cluster>);

impl LeaderSource {
    /// Acks or nacks a delivery: on the leader's own broker, else over RPC at `path`.
    fn settle(
        &self,
        path: &str,
        eval_id: &str,
        token: u64,
        local: fn(&EvalBroker, &str, u64) -> Result<(), SchedError>,
    ) -> Result<(), SchedError> {
        if self.0.raft.is_leader() {
            return local(&self.0.state.broker, eval_id, token);
        }
        let req = AckRequest {
            eval_id: eval_id.into(),
            token,
        };
        self.remote::<serde_json::Value>(path, &req, WRITE_TIMEOUT)
            .map(|_| ())
    }

    fn remote<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, SchedError> {
        let c = &self.0;
        let addr = c
            .leader_addr()
            .ok_or_else(|| SchedError::Remote("No cluster leader".into()))?;
        c.runtime
            .block_on(c.rpc.call(addr, path, None, body, timeout))
            .map_err(SchedError::Remote)
    }
}

impl EvalSource for LeaderSource {
    fn dequeue(
        &self,
        types: &[String],
        timeout: Duration,
        cancel: &dyn Fn() -> bool,
    ) -> Option<(Eval, u64)> {
        if self.0.raft.is_leader() {
            return self.0.state.broker.dequeue(types, timeout, cancel);
        }
        if cancel() {
            return None;
        }
        let req = DequeueRequest {
            types: types.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.remote::<Option<(Eval, u64)>>(m::EVAL_DEQUEUE, &req, timeout + WRITE_TIMEOUT) {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(target: "sched", error = %e, "remote dequeue failed");
                // Wait a little before asking again, but not past a pause or stop.
                for _ in 0..10 {
                    if cancel() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                None
            }
        }
    }

    fn ack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        self.settle(m::EVAL_ACK, eval_id, token, EvalBroker::ack)
    }

    fn nack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        self.settle(m::EVAL_NACK, eval_id, token, EvalBroker::nack)
    }

    fn wake_all(&self) {
        self.0.state.broker.wake_all();
    }
}

/// Serves `Eval.Dequeue`, `Eval.Ack` and `Eval.Nack` on the leader (callers are servers: the
/// RPC layer checked their role).
pub async fn broker_rpc(agent: &Arc<Agent>, method: &str, body: &[u8]) -> Result<Reply, Refusal> {
    let cluster = agent
        .cluster()
        .ok_or_else(|| Refusal::bad_request("rpc: this agent runs no server"))?;
    if !cluster.raft.is_leader() {
        return Err(Refusal::new(409, "eval broker disabled: not the leader"));
    }
    let broker = cluster.state.broker.clone();
    let done = |r: Result<(), SchedError>| {
        r.map_err(|e| Refusal::new(409, e.to_string()))
            .and_then(|()| reply(&serde_json::json!({})))
    };
    match method {
        m::EVAL_DEQUEUE => {
            let req: DequeueRequest = decode(body)?;
            let timeout = Duration::from_millis(req.timeout_ms.min(5_000));
            let got =
                tokio::task::spawn_blocking(move || broker.dequeue(&req.types, timeout, &|| false))
                    .await
                    .map_err(|e| Refusal::internal(e.to_string()))?;
            reply(&got)
        }
        m::EVAL_ACK => {
            let req: AckRequest = decode(body)?;
            done(broker.ack(&req.eval_id, req.token))
        }
        _ => {
            let req: AckRequest = decode(body)?;
            done(broker.nack(&req.eval_id, req.token))
        }
    }
}
