//! The agent's wiring of [`caravan_cluster`]: Raft messages over the agent RPC client
//! ([`RpcTransport`]), the [`ServerDirectory`] the cluster duties see (gossip's server list,
//! servers confirmed over authenticated RPC, the worker pause), and the leader's eval broker
//! for other servers' workers ([`LeaderSource`], [`broker_rpc`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::member::{ServerInfo, servers_in};
use caravan_cluster::duties::{DirFuture, ServerDirectory};
use caravan_cluster::{Cluster, WRITE_TIMEOUT, raft_id};
use caravan_gossip::udp::Gossip;
use caravan_raft::{BoxFuture, RaftConfig, Transport};
use caravan_rpc::method as m;
use caravan_rpc::{Refusal, Reply};
use caravan_sched::SchedError;
use caravan_sched::broker::{Eval, EvalBroker};
use caravan_sched::workers::EvalSource;
use serde::{Deserialize, Serialize};

use crate::rpc::{Rpc, decode, reply};

/// Starts this server's Raft node (durable under `dir`, in memory without; a snapshot every
/// `snapshot_every` entries) and its state, with a token index keyed at random for this process.
pub async fn start(
    server_id: &str,
    rpc_addr: SocketAddr,
    dir: Option<PathBuf>,
    rpc: Arc<Rpc>,
    snapshot_every: u64,
) -> Result<Cluster, String> {
    let mut config = RaftConfig::new(raft_id(server_id), rpc_addr.to_string());
    config.dir = dir;
    config.write_timeout = WRITE_TIMEOUT;
    config.snapshot_every = snapshot_every;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut acl_key = [0u8; 32];
    acl_key[..16].copy_from_slice(a.as_bytes());
    acl_key[16..].copy_from_slice(b.as_bytes());
    Cluster::start(config, acl_key, Arc::new(RpcTransport(rpc)))
        .await
        .map_err(|e| e.to_string())
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

/// What the cluster duties see of this server: gossip's servers of its region, the RPC client
/// that confirms them, and what to do when leadership changes.
pub struct ServerPeers {
    /// This server's gossip.
    pub gossip: Gossip,
    /// Its region.
    pub region: String,
    /// The RPC client.
    pub rpc: Arc<Rpc>,
    /// Called with the new leadership (the agent pauses or resumes workers).
    pub on_leadership: Box<dyn Fn(bool) + Send + Sync>,
}

impl ServerDirectory for ServerPeers {
    fn servers(&self) -> Vec<ServerInfo> {
        servers_in(&self.gossip.snapshot().members.to_vec(), &self.region)
    }

    fn can_confirm(&self) -> bool {
        self.rpc.confirms_servers()
    }

    fn server_id_at(&self, addr: SocketAddr) -> DirFuture<'_, Option<String>> {
        Box::pin(async move {
            if !self.rpc.confirms_servers() {
                return None;
            }
            self.rpc
                .ping(addr, Duration::from_secs(2))
                .await
                .ok()
                .flatten()
        })
    }

    fn raft_peers_at(&self, addr: SocketAddr) -> DirFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            self.rpc
                .call::<Vec<String>>(addr, m::PEERS, None, &(), Duration::from_secs(2))
                .await
        })
    }

    fn leadership_changed(&self, leading: bool) {
        (self.on_leadership)(leading);
    }
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
pub struct LeaderSource {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// The RPC client that reaches the leader.
    pub rpc: Arc<Rpc>,
    /// For blocking calls from worker threads.
    pub runtime: tokio::runtime::Handle,
}

impl LeaderSource {
    fn leader_addr(&self) -> Option<SocketAddr> {
        self.cluster
            .raft()
            .leader()
            .and_then(|(_, a)| a.parse().ok())
    }
}

impl LeaderSource {
    /// Acks or nacks a delivery: on the leader's own broker, else over RPC at `path`.
    fn settle(
        &self,
        path: &str,
        eval_id: &str,
        token: u64,
        local: fn(&EvalBroker, &str, u64) -> Result<(), SchedError>,
    ) -> Result<(), SchedError> {
        if self.cluster.raft().is_leader() {
            return local(self.cluster.state().broker(), eval_id, token);
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
        let addr = self
            .leader_addr()
            .ok_or_else(|| SchedError::Remote("No cluster leader".into()))?;
        self.runtime
            .block_on(self.rpc.call(addr, path, None, body, timeout))
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
        if self.cluster.raft().is_leader() {
            return self
                .cluster
                .state()
                .broker()
                .dequeue(types, timeout, cancel);
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
        self.cluster.state().broker().wake_all();
    }
}

/// Serves `Eval.Dequeue`, `Eval.Ack` and `Eval.Nack` on the leader (callers are servers: the
/// RPC layer checked their role).
pub async fn broker_rpc(
    cluster: Option<&Arc<Cluster>>,
    method: &str,
    body: &[u8],
) -> Result<Reply, Refusal> {
    let cluster = cluster.ok_or_else(|| Refusal::bad_request("rpc: this agent runs no server"))?;
    if !cluster.raft().is_leader() {
        return Err(Refusal::new(409, "eval broker disabled: not the leader"));
    }
    let broker = cluster.state().broker().clone();
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
