//! The client nodes a server serves: registration, heartbeats (passed on to the leader, which
//! holds the TTL timers), the allocation query and status reports, the connections clients
//! opened (how a request for a node reaches it: a server never dials a client), and
//! forwarding a request for a node to the server that holds its connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use caravan_agent_core::client_rpc::{
    AllocUpdateRequest, ClientAllocsReply, ClientAllocsRequest, ForNode, HasConnRequest,
    HeartbeatReply, MAX_ALLOCS_WAIT_MS, RegisterRequest, UpdateStatusRequest,
};
use caravan_agent_core::heartbeat::LastHeartbeat;
use caravan_agent_core::query::{ReadOptions, StateAnswer, StateQuery};
use caravan_cluster::heartbeats::{self, check_node_secret};
use caravan_cluster::{ClusterError, Command, seed};
use caravan_http::api::ReadError;
use caravan_rpc::method as m;
use caravan_rpc::{Call, Conn, Refusal, Reply, Role, RpcError};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use super::ServerRole;
use crate::rpc::{PING_TIMEOUT, coded_text, decode, reply};

/// The most nodes one connection may register (a client agent registers one; `nodesim`
/// shares a connection among 8): without client certificates anyone may register a node, and
/// this bounds how fast one caller grows the state.
pub const MAX_NODES_PER_CONN: usize = 64;

/// The connections client nodes opened to this server, by node ID, and how many nodes each
/// connection registered.
#[derive(Default)]
pub struct NodeConns(
    Mutex<HashMap<String, Conn>>,
    Mutex<HashMap<SocketAddr, usize>>,
    std::sync::atomic::AtomicUsize,
);

impl NodeConns {
    /// Records that `node_id` talks to this server over `conn`.
    fn hold(&self, node_id: &str, conn: &Conn) {
        let mut conns = self.0.lock();
        if let Some(held) = conns.get(node_id)
            && !held.is_closed()
            && held.peer().addr == conn.peer().addr
        {
            return; // the same connection (every heartbeat): nothing to do
        }
        // Closed connections are dropped when the map has doubled since the last sweep, so a
        // sweep's cost is paid for by the insertions before it.
        let sweep_at = self.2.load(std::sync::atomic::Ordering::Relaxed).max(4096);
        if conns.len() >= sweep_at {
            conns.retain(|_, c| !c.is_closed());
            self.1
                .lock()
                .retain(|addr, _| conns.values().any(|c| c.peer().addr == *addr));
            self.2.store(
                conns.len().saturating_mul(2),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        conns.insert(node_id.to_string(), conn.clone());
    }

    /// Counts a registration of `node_id` over `conn`: `Err` past [`MAX_NODES_PER_CONN`]
    /// different nodes on one connection.
    fn admit(&self, node_id: &str, conn: &Conn) -> Result<(), Refusal> {
        let known = self
            .0
            .lock()
            .get(node_id)
            .is_some_and(|c| c.peer().addr == conn.peer().addr);
        if known {
            return Ok(());
        }
        let mut counts = self.1.lock();
        let n = counts.entry(conn.peer().addr).or_default();
        if *n >= MAX_NODES_PER_CONN {
            return Err(Refusal::new(
                429,
                format!(
                    "too many nodes registered over one connection (at most {MAX_NODES_PER_CONN})"
                ),
            ));
        }
        *n += 1;
        Ok(())
    }

    /// The open connection of `node_id`, if this server holds one.
    fn get(&self, node_id: &str) -> Option<Conn> {
        let mut conns = self.0.lock();
        match conns.get(node_id) {
            Some(c) if !c.is_closed() => Some(c.clone()),
            Some(_) => {
                conns.remove(node_id);
                None
            }
            None => None,
        }
    }
}

/// Where a request for a node goes.
enum NodeRoute {
    /// Over the connection the node opened to this server.
    Here(Conn),
    /// To the server that holds the node's connection.
    Server(SocketAddr),
}

fn coded_404(text: String) -> String {
    format!("RPC Error:: 404,{text}")
}

/// The statuses a client may report for its own node.
const CLIENT_STATUSES: [&str; 2] = ["ready", "initializing"];

/// A check's refusal as a client sees it (`node not found` is a 404, so it registers again).
fn refused(why: String) -> Refusal {
    cluster_refusal(ClusterError::Refused(why))
}

/// A cluster error as the refusal a client sees (a refused write keeps its reason).
fn cluster_refusal(e: ClusterError) -> Refusal {
    match e {
        ClusterError::Refused(why) if why.starts_with("node not found") => Refusal::new(404, why),
        ClusterError::Refused(why) if why.starts_with("node secret ID does not match") => {
            Refusal::new(403, why)
        }
        ClusterError::Refused(why) => Refusal::bad_request(why),
        other => Refusal::internal(other.to_string()),
    }
}

impl ServerRole {
    /// With `tls.rpc`, node calls need a client or server certificate; without TLS the node's
    /// secret is the only credential (as in Nomad without mTLS).
    fn node_caller(&self, call: &Call) -> Result<(), Refusal> {
        if self.config().tls.rpc && call.peer.role == Role::Anonymous {
            return Err(Refusal::new(
                403,
                "Permission denied: node calls need a client certificate",
            ));
        }
        Ok(())
    }

    fn heartbeat_reply(&self, ttl: Duration) -> HeartbeatReply {
        HeartbeatReply {
            heartbeat_ttl_ms: ttl.as_millis() as u64,
            servers: self.servers_for_clients(),
            leader: self.leader(),
        }
    }

    /// The servers a heartbeat answer gives clients: the region's alive servers from gossip,
    /// but only this server when it cannot authenticate servers (gossip tags are claims that,
    /// unchecked, would send clients and their secrets to whoever made them).
    fn servers_for_clients(&self) -> Vec<String> {
        if !self.rpc.confirms_servers() {
            return vec![self.config().advertise.rpc.to_string()];
        }
        self.region_servers()
            .into_iter()
            .filter(|s| s.status == caravan_agent_core::member::MemberStatus::Alive)
            .map(|s| s.rpc.to_string())
            .collect()
    }

    /// A heartbeat: on the leader its timer is re-armed here; a follower passes it on.
    async fn beat(&self, node_id: &str, secret: &str, status: &str) -> Result<Duration, Refusal> {
        if self.is_leader() {
            return heartbeats::heartbeat(&self.cluster, &self.heartbeats, node_id, secret, status)
                .await
                .map_err(cluster_refusal);
        }
        let leader: SocketAddr = self
            .leader()
            .parse()
            .map_err(|_| Refusal::internal("No cluster leader"))?;
        let request = UpdateStatusRequest {
            node_id: node_id.to_string(),
            secret_id: secret.to_string(),
            status: status.to_string(),
            forwarded: true,
        };
        let body = serde_json::to_vec(&request).map_err(|e| Refusal::internal(e.to_string()))?;
        let answer = self
            .rpc
            .client()
            .call_within(leader, m::NODE_UPDATE_STATUS, None, body, PING_TIMEOUT)
            .await
            .map_err(|e| match e {
                caravan_rpc::RpcError::Remote { code, message } => Refusal::new(code, message),
                other => Refusal::internal(format!("cannot reach the leader: {other}")),
            })?;
        let reply: HeartbeatReply = serde_json::from_slice(&answer)
            .map_err(|e| Refusal::internal(format!("bad heartbeat reply from the leader: {e}")))?;
        Ok(Duration::from_millis(reply.heartbeat_ttl_ms))
    }

    /// `Node.Register`.
    pub async fn node_register(&self, call: &Call) -> Result<Reply, Refusal> {
        self.node_caller(call)?;
        let request: RegisterRequest = decode(&call.body)?;
        let node = request.node;
        node.validate()
            .map_err(|e| Refusal::bad_request(e.to_string()))?;
        let (id, secret) = (node.id.clone(), node.secret_id.clone());
        if call.peer.role == Role::Anonymous && self.config().acl_enabled {
            tracing::debug!(target: "client", node_id = %id, peer = %call.peer.addr, "node registers without a client certificate");
        }
        self.cluster
            .state()
            .store()
            .check_registration(&node)
            .map_err(refused)?;
        self.nodes.admit(&id, &call.conn)?;
        let command = Command::NodeRegister { node, seed: seed() };
        self.cluster
            .write(&command)
            .await
            .map_err(cluster_refusal)?;
        self.nodes.hold(&id, &call.conn);
        let ttl = self.beat(&id, &secret, "ready").await?;
        tracing::info!(target: "client", node_id = %id, peer = %call.peer.addr, "node registered");
        reply(&self.heartbeat_reply(ttl))
    }

    /// `Node.UpdateStatus`: a heartbeat, or a heartbeat a follower passed on (only a server
    /// may say so).
    pub async fn node_update_status(&self, call: &Call) -> Result<Reply, Refusal> {
        self.node_caller(call)?;
        let request: UpdateStatusRequest = decode(&call.body)?;
        // A client reports itself up; only the leader's timer marks a node down.
        if !CLIENT_STATUSES.contains(&request.status.as_str()) {
            return Err(Refusal::bad_request(format!(
                "Node.Status: a client may report {CLIENT_STATUSES:?}, not {:?}",
                request.status
            )));
        }
        let forwarded = request.forwarded && call.peer.role == Role::Server;
        if forwarded && !self.is_leader() {
            return Err(Refusal::internal("No cluster leader"));
        }
        let ttl = self
            .beat(&request.node_id, &request.secret_id, &request.status)
            .await?;
        if !forwarded {
            self.nodes.hold(&request.node_id, &call.conn);
        }
        reply(&self.heartbeat_reply(ttl))
    }

    /// `Node.GetClientAllocs`: the allocations on the caller's node, blocking until the
    /// allocation table passes `min_index` (from this server's replica).
    pub async fn node_client_allocs(&self, call: &Call) -> Result<Reply, Refusal> {
        self.node_caller(call)?;
        let request: ClientAllocsRequest = decode(&call.body)?;
        check_node_secret(&self.cluster, &request.node_id, &request.secret_id).map_err(|why| {
            Refusal::new(
                if why.starts_with("node not found") {
                    404
                } else {
                    403
                },
                why,
            )
        })?;
        self.nodes.hold(&request.node_id, &call.conn);
        let options = ReadOptions {
            stale: true,
            min_index: request.min_index,
            wait: Duration::from_millis(request.wait_ms.clamp(1, MAX_ALLOCS_WAIT_MS)),
        };
        let query = StateQuery::NodeAllocations(request.node_id.clone());
        let answer = self
            .cluster
            .read(&query, options, jitter())
            .await
            .map_err(cluster_refusal)?;
        let allocs = match answer.value {
            StateAnswer::Allocations(a) => a,
            _ => Vec::new(),
        };
        reply(&ClientAllocsReply {
            allocs,
            index: answer.index,
        })
    }

    /// `Node.UpdateAlloc`: client statuses of allocations on the caller's node.
    pub async fn node_update_alloc(&self, call: &Call) -> Result<Reply, Refusal> {
        self.node_caller(call)?;
        let request: AllocUpdateRequest = decode(&call.body)?;
        let updates: Vec<(String, String)> = request.updates.into_iter().collect();
        // Checked here before anything is written (and again when applied).
        self.cluster
            .state()
            .store()
            .check_alloc_updates(&request.node_id, &request.secret_id, &updates)
            .map_err(refused)?;
        let command = Command::AllocClientUpdate {
            node_id: request.node_id,
            secret_id: request.secret_id,
            updates,
        };
        self.cluster
            .write(&command)
            .await
            .map_err(cluster_refusal)?;
        reply(&serde_json::json!({}))
    }

    /// `Node.Heartbeats`: the leader's record of each node's last heartbeat; a server that is
    /// not the leader has none to give.
    pub fn node_heartbeats(&self) -> Result<Reply, Refusal> {
        if !self.is_leader() {
            return Err(Refusal::internal("No cluster leader"));
        }
        reply(&self.heartbeats.last_heartbeats(Instant::now()))
    }

    /// Every node's last heartbeat: this server's record when it leads, else the leader's.
    pub async fn last_heartbeats(&self) -> Result<Vec<LastHeartbeat>, ReadError> {
        if self.is_leader() {
            return Ok(self.heartbeats.last_heartbeats(Instant::now()));
        }
        let leader: SocketAddr = self.leader().parse().map_err(|_| ReadError::NoLeader)?;
        self.rpc
            .call(leader, m::NODE_HEARTBEATS, None, &(), PING_TIMEOUT)
            .await
            .map_err(ReadError::Unavailable)
    }

    /// `Node.HasConn`.
    pub fn node_has_conn(&self, call: &Call) -> Result<Reply, Refusal> {
        let request: HasConnRequest = decode(&call.body)?;
        reply(&self.nodes.get(&request.node_id).is_some())
    }

    /// Where a request for `node_id` goes: `Unknown node "<id>"` when the state has no such
    /// node, `No path to node` when no server holds its connection (a request another server
    /// `forwarded` here is served here or not at all).
    async fn node_route(&self, node_id: &str, forwarded: bool) -> Result<NodeRoute, String> {
        let (answer, _) = self
            .cluster
            .state()
            .store()
            .query(&StateQuery::Node(node_id.to_string()));
        if !matches!(answer, StateAnswer::Node(Some(_))) {
            return Err(coded_404(format!("Unknown node \"{node_id}\"")));
        }
        if let Some(conn) = self.nodes.get(node_id) {
            return Ok(NodeRoute::Here(conn));
        }
        if forwarded || !self.rpc.confirms_servers() {
            return Err(coded_404("No path to node".into()));
        }
        let others: Vec<SocketAddr> = self
            .region_servers()
            .into_iter()
            .filter(|s| s.id != self.id)
            .map(|s| s.rpc)
            .collect();
        let mut asks = tokio::task::JoinSet::new();
        for addr in others {
            let rpc = self.rpc.clone();
            let request = HasConnRequest {
                node_id: node_id.to_string(),
            };
            asks.spawn(async move {
                let has: Result<bool, String> = rpc
                    .call(addr, m::NODE_HAS_CONN, None, &request, PING_TIMEOUT)
                    .await;
                (addr, has)
            });
        }
        while let Some(joined) = asks.join_next().await {
            if let Ok((addr, Ok(true))) = joined {
                return Ok(NodeRoute::Server(addr));
            }
        }
        Err(coded_404("No path to node".into()))
    }

    /// Where a request for node `node_id` goes next, and its body for that hop.
    async fn node_hop(
        &self,
        node_id: &str,
        request: &impl Serialize,
        forwarded: bool,
    ) -> Result<(NodeRoute, Vec<u8>), String> {
        let route = self.node_route(node_id, forwarded).await?;
        let body = match &route {
            NodeRoute::Here(_) => serde_json::to_vec(request).map_err(|e| e.to_string())?,
            NodeRoute::Server(_) => for_node(node_id, request)?,
        };
        Ok((route, body))
    }

    /// Calls `agent_method` on client node `node_id` with the user's `token`: over the node's
    /// connection when this server holds it, else through the server that does
    /// (`client_method`). Errors keep a 404's code.
    pub async fn call_node(
        &self,
        node_id: &str,
        token: Option<&str>,
        (agent_method, client_method): (&str, &str),
        request: &impl Serialize,
        timeout: Duration,
        forwarded: bool,
    ) -> Result<Bytes, String> {
        let answer = match self.node_hop(node_id, request, forwarded).await? {
            (NodeRoute::Here(conn), body) => {
                tokio::time::timeout(timeout, conn.call(agent_method, token, &body))
                    .await
                    .unwrap_or(Err(RpcError::Timeout(timeout)))
            }
            (NodeRoute::Server(addr), body) => {
                let client = self.rpc.client();
                client
                    .call_within(addr, client_method, token, body, timeout)
                    .await
            }
        };
        answer.map_err(|e| coded_text(&e))
    }

    /// [`ServerRole::call_node`] for a streaming method (the monitor).
    pub async fn stream_node(
        &self,
        node_id: &str,
        token: Option<&str>,
        (agent_method, client_method): (&str, &str),
        request: &impl Serialize,
        forwarded: bool,
    ) -> Result<mpsc::Receiver<Bytes>, String> {
        let answer = match self.node_hop(node_id, request, forwarded).await? {
            (NodeRoute::Here(conn), body) => {
                tokio::time::timeout(PING_TIMEOUT, conn.stream(agent_method, token, &body))
                    .await
                    .unwrap_or(Err(RpcError::Timeout(PING_TIMEOUT)))
            }
            (NodeRoute::Server(addr), body) => {
                let client = self.rpc.client();
                client
                    .stream(addr, client_method, token, body, PING_TIMEOUT)
                    .await
            }
        };
        answer.map_err(|e| coded_text(&e))
    }
}

/// A request passed on to the server holding the node's connection.
fn for_node(node_id: &str, request: &impl Serialize) -> Result<Vec<u8>, String> {
    let value = serde_json::to_value(request).map_err(|e| e.to_string())?;
    serde_json::to_vec(&ForNode {
        node_id: node_id.to_string(),
        request: value,
        forwarded: true,
    })
    .map_err(|e| e.to_string())
}

fn jitter() -> f64 {
    (seed() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leader's answer for the most nodes the state holds, each with the longest ID as JSON
    /// prints it (128 quotes, each escaped to two bytes; `Node::validate` refuses control
    /// characters, which would print as six) and the largest ages, fits `Node.Heartbeats`'
    /// reply bound.
    #[test]
    fn every_heartbeat_the_state_can_hold_fits_one_reply() {
        let longest = "\"".repeat(128);
        let beat = LastHeartbeat {
            node_id: longest,
            since_ms: u64::MAX,
            ttl_ms: u64::MAX,
        };
        let entry = serde_json::to_vec(&beat).map(|v| v.len() + 1).unwrap_or(0);
        let worst = entry * caravan_cluster::store::MAX_NODES;
        let bound = caravan_rpc::method::lookup(m::NODE_HEARTBEATS).map(|s| s.max_reply);
        assert!(
            bound.is_some_and(|b| worst <= b),
            "{worst} bytes > {bound:?}"
        );
    }
}
