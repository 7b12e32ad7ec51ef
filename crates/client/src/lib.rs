//! A client node's life with its servers, as Nomad's client runs it, over `caravan-rpc`:
//!
//! - **Registration**: the node ([`fingerprint`]) and a secret the client generated
//!   (Nomad's `Node.SecretID`) go to a server with `Node.Register`; from then on every node
//!   call presents that secret, so nobody else can heartbeat or report for this node.
//! - **Heartbeats**: `Node.UpdateStatus` again within the TTL the leader answers with; the
//!   answer also carries the region's servers, which replace the client's list.
//! - **Failover**: a server that does not answer is skipped for the next one at once (within
//!   the same heartbeat); the starting server is drawn again every [`REBALANCE_INTERVAL`], so
//!   clients spread over the servers.
//! - **Allocations**: a blocking `Node.GetClientAllocs` query (held open on the same
//!   connection, which is also how servers reach this client back) tells the client what is
//!   placed on its node; it reports them `running` once it has them and `complete` once they
//!   are stopped (`Node.UpdateAlloc`). Allocations are placements: no task runs.
//!
//! [`NodeClient::run`] does all of it until shutdown; [`NodeClient::status`] is what
//! `stats.client` shows. The RPC client is the caller's, so an agent can serve calls its
//! servers make back over it (`caravan_rpc::RpcClient::serving`).
//!
//! ```no_run
//! # async fn demo(rpc: std::sync::Arc<caravan_rpc::RpcClient>) {
//! use std::sync::Arc;
//! use caravan_client::NodeClient;
//! let node = caravan_client::fingerprint::node("node-1", "dc1");
//! let servers = vec!["127.0.0.1:4647".parse().unwrap()];
//! let client = NodeClient::new(node, rpc, servers);
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(client.clone().run(shutdown));
//! # }
//! ```
#![deny(missing_docs)]

pub mod fingerprint;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::client_rpc::{
    AllocUpdateRequest, ClientAllocsReply, ClientAllocsRequest, HeartbeatReply, RegisterRequest,
    UpdateStatusRequest,
};
use caravan_agent_core::jobs::{Allocation, Node};
use caravan_agent_core::server_list::ServerList;
use caravan_rpc::RpcClient;
use caravan_rpc::method as m;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

/// How long one registration or heartbeat call may take before the next server is tried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the allocation query blocks on the server.
pub const ALLOCS_WAIT: Duration = Duration::from_secs(300);

/// Wait between rounds when no server answered.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The most servers a heartbeat answer may give the client.
pub const MAX_SERVERS: usize = 64;

/// The longest wait a heartbeat answer may ask for before the next heartbeat.
pub const MAX_HEARTBEAT_TTL: Duration = Duration::from_secs(3600);

/// How often the first server to try is drawn again.
pub const REBALANCE_INTERVAL: Duration = Duration::from_secs(120);

/// The client's state, as `stats.client` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Whether a server accepted the registration.
    pub registered: bool,
    /// When the last heartbeat was answered.
    pub last_heartbeat: Option<Instant>,
    /// The TTL the last answer gave.
    pub heartbeat_ttl: Duration,
    /// Allocations placed on this node that should run.
    pub num_allocations: usize,
    /// The server that answered last.
    pub server: Option<SocketAddr>,
}

/// One client node and its servers.
pub struct NodeClient {
    node: Node,
    rpc: Arc<RpcClient>,
    servers: RwLock<ServerList>,
    status: Mutex<ClientStatus>,
    /// The server to try first (an index into the list).
    preferred: Mutex<usize>,
    registered: watch::Sender<bool>,
    /// Told every answered heartbeat's round trip (simulators measure with it).
    observer: std::sync::OnceLock<Observer>,
}

/// What [`NodeClient::observe_heartbeats`] calls.
pub type Observer = Arc<dyn Fn(Duration) + Send + Sync>;

impl NodeClient {
    /// A client for `node` (its `secret_id` set: see [`fingerprint::node`]) that knows
    /// `servers` at first.
    pub fn new(
        node: Node,
        rpc: Arc<RpcClient>,
        servers: impl IntoIterator<Item = SocketAddr>,
    ) -> Arc<NodeClient> {
        Arc::new(NodeClient {
            node,
            rpc,
            servers: RwLock::new(ServerList::new(servers)),
            status: Mutex::new(ClientStatus::default()),
            preferred: Mutex::new(0),
            registered: watch::channel(false).0,
            observer: std::sync::OnceLock::new(),
        })
    }

    /// Calls `observer` with the round trip of every answered registration or heartbeat (the
    /// first observer given counts).
    pub fn observe_heartbeats(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// The node's ID.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// The client's state now.
    pub fn status(&self) -> ClientStatus {
        self.status.lock().clone()
    }

    /// The servers the client knows, as `host:port`.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.read().servers().to_vec()
    }

    /// Replaces the servers (`PUT /v1/agent/servers`, or a heartbeat's answer).
    pub fn set_servers(&self, servers: impl IntoIterator<Item = SocketAddr>) {
        let servers: Vec<SocketAddr> = servers.into_iter().collect();
        if !servers.is_empty() {
            self.servers.write().replace(servers);
        }
    }

    /// Registers, heartbeats and follows the node's allocations until `shutdown` is true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let allocs = tokio::spawn(self.clone().watch_allocations(shutdown.clone()));
        self.heartbeat_loop(shutdown).await;
        allocs.abort();
    }

    /// The servers in the order to try them: the one that answered last (or the one drawn at
    /// the last rebalance) first.
    pub fn servers_in_order(&self) -> Vec<SocketAddr> {
        self.rotation()
    }

    fn rotation(&self) -> Vec<SocketAddr> {
        let mut servers = self.servers();
        if !servers.is_empty() {
            let start = *self.preferred.lock() % servers.len();
            servers.rotate_left(start);
        }
        servers
    }

    async fn heartbeat_loop(&self, mut shutdown: watch::Receiver<bool>) {
        let mut registered = false;
        let mut rebalanced = Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if rebalanced.elapsed() >= REBALANCE_INTERVAL {
                rebalanced = Instant::now();
                *self.preferred.lock() = draw() as usize;
            }
            let wait = match self.beat_once(registered).await {
                Beat::Answered(ttl) => {
                    registered = true;
                    ttl
                }
                Beat::Unknown => {
                    // A server lost the node (a restored state): register again at once.
                    registered = false;
                    continue;
                }
                Beat::Failed => RETRY_INTERVAL,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One registration or heartbeat, trying the servers in turn.
    async fn beat_once(&self, registered: bool) -> Beat {
        let servers = self.rotation();
        if servers.is_empty() {
            tracing::warn!(target: "client", "no known servers: cannot register the node");
            return Beat::Failed;
        }
        for (i, server) in servers.iter().enumerate() {
            let started = Instant::now();
            match self.call_beat(*server, registered).await {
                Ok(reply) => {
                    if let Some(observe) = self.observer.get() {
                        observe(started.elapsed());
                    }
                    self.answered(*server, &reply);
                    if i > 0 {
                        tracing::info!(target: "client", server = %server, "heartbeat moved to another server");
                    }
                    let ttl = Duration::from_millis(reply.heartbeat_ttl_ms.max(100));
                    return Beat::Answered(ttl.min(MAX_HEARTBEAT_TTL));
                }
                Err(e) if e.contains("node not found") => return Beat::Unknown,
                Err(e) => {
                    tracing::warn!(target: "client", server = %server, error = %e, "heartbeat failed; trying the next server");
                    self.rpc.forget(*server);
                    *self.preferred.lock() += 1;
                }
            }
        }
        Beat::Failed
    }

    async fn call_beat(
        &self,
        server: SocketAddr,
        registered: bool,
    ) -> Result<HeartbeatReply, String> {
        let (method, body) = if registered {
            let request = UpdateStatusRequest {
                node_id: self.node.id.clone(),
                secret_id: self.node.secret_id.clone(),
                status: "ready".into(),
                forwarded: false,
            };
            (m::NODE_UPDATE_STATUS, json(&request)?)
        } else {
            let request = RegisterRequest {
                node: self.node.clone(),
            };
            (m::NODE_REGISTER, json(&request)?)
        };
        let reply = self
            .rpc
            .call_within(server, method, None, body, CALL_TIMEOUT)
            .await
            .map_err(|e| text(&e))?;
        serde_json::from_slice(&reply).map_err(|e| format!("bad heartbeat reply: {e}"))
    }

    fn answered(&self, server: SocketAddr, reply: &HeartbeatReply) {
        let servers: Vec<SocketAddr> = reply
            .servers
            .iter()
            .filter_map(|s| s.parse().ok())
            .take(MAX_SERVERS)
            .collect();
        let first_time = !self.status.lock().registered;
        {
            let mut status = self.status.lock();
            status.registered = true;
            status.last_heartbeat = Some(Instant::now());
            status.heartbeat_ttl = Duration::from_millis(reply.heartbeat_ttl_ms);
            status.server = Some(server);
        }
        if !servers.is_empty() {
            self.set_servers(servers);
            let position = self.servers().iter().position(|s| *s == server);
            *self.preferred.lock() = position.unwrap_or(0);
        }
        if first_time {
            tracing::info!(target: "client", node_id = %self.node.id, server = %server, "node registered");
            self.registered.send_replace(true);
        }
    }

    /// Follows the allocations placed on the node with a blocking query, and reports their
    /// client status.
    async fn watch_allocations(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut registered = self.registered.subscribe();
        if registered.wait_for(|r| *r).await.is_err() {
            return;
        }
        let mut index = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let server = self
                .status()
                .server
                .or_else(|| self.rotation().first().copied());
            let Some(server) = server else {
                tokio::time::sleep(RETRY_INTERVAL).await;
                continue;
            };
            let query = self.query_allocs(server, index);
            let answer = tokio::select! {
                a = query => a,
                _ = shutdown.changed() => return,
            };
            match answer {
                Ok(reply) => {
                    let moved = reply.index > index;
                    index = reply.index;
                    self.take(server, &reply.allocs).await;
                    if !moved {
                        // The wait ended without a change: never ask in a tight loop.
                        tokio::time::sleep(RETRY_INTERVAL).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "client", server = %server, error = %e, "allocation query failed");
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
            }
        }
    }

    async fn query_allocs(
        &self,
        server: SocketAddr,
        index: u64,
    ) -> Result<ClientAllocsReply, String> {
        let request = ClientAllocsRequest {
            node_id: self.node.id.clone(),
            secret_id: self.node.secret_id.clone(),
            min_index: index,
            wait_ms: ALLOCS_WAIT.as_millis() as u64,
        };
        let timeout = ALLOCS_WAIT + CALL_TIMEOUT + ALLOCS_WAIT / 16;
        let reply = self
            .rpc
            .call_within(
                server,
                m::NODE_GET_CLIENT_ALLOCS,
                None,
                json(&request)?,
                timeout,
            )
            .await
            .map_err(|e| text(&e))?;
        serde_json::from_slice(&reply).map_err(|e| format!("bad allocations reply: {e}"))
    }

    /// Takes the node's allocations: counts those that run, reports the changes.
    async fn take(&self, server: SocketAddr, allocs: &[Allocation]) {
        let updates = client_updates(allocs);
        self.status.lock().num_allocations =
            allocs.iter().filter(|a| a.desired_status == "run").count();
        if updates.is_empty() {
            return;
        }
        let request = AllocUpdateRequest {
            node_id: self.node.id.clone(),
            secret_id: self.node.secret_id.clone(),
            updates,
        };
        let body = match json(&request) {
            Ok(b) => b,
            Err(e) => {
                return tracing::warn!(target: "client", error = %e, "cannot encode allocation updates");
            }
        };
        if let Err(e) = self
            .rpc
            .call_within(server, m::NODE_UPDATE_ALLOC, None, body, CALL_TIMEOUT)
            .await
        {
            tracing::warn!(target: "client", server = %server, error = %text(&e), "cannot report allocation status");
        }
    }
}

/// The client status changes a client reports for the allocations it was given: placed ones
/// it now has are `running`, stopped ones it still counts as running are `complete`.
pub fn client_updates(allocs: &[Allocation]) -> std::collections::BTreeMap<String, String> {
    allocs
        .iter()
        .filter_map(|a| {
            let to = match (a.desired_status.as_str(), a.client_status.as_str()) {
                ("run", "pending") => "running",
                ("stop", "pending" | "running") => "complete",
                _ => return None,
            };
            Some((a.id.clone(), to.to_string()))
        })
        .collect()
}

enum Beat {
    Answered(Duration),
    Unknown,
    Failed,
}

fn json(value: &impl serde::Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("cannot encode the request: {e}"))
}

fn text(e: &caravan_rpc::RpcError) -> String {
    match e {
        caravan_rpc::RpcError::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn draw() -> u64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let mut half = [0u8; 8];
    half.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(half)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: &str, desired: &str, client: &str) -> Allocation {
        Allocation {
            id: id.into(),
            name: format!("job.g[{id}]"),
            job_id: "job".into(),
            task_group: "g".into(),
            node_id: "n".into(),
            eval_id: "e".into(),
            cpu: 100,
            memory_mb: 64,
            desired_status: desired.into(),
            client_status: client.into(),
            create_index: 1,
            modify_index: 1,
        }
    }

    fn check(allocs: &[(&str, &str, &str)], expected: &[(&str, &str)]) {
        let allocs: Vec<Allocation> = allocs.iter().map(|(i, d, c)| alloc(i, d, c)).collect();
        let got = client_updates(&allocs);
        let want: std::collections::BTreeMap<String, String> = expected
            .iter()
            .map(|(i, s)| (i.to_string(), s.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_client_reports_what_it_took_and_what_stopped() {
        check(&[("a", "run", "pending")], &[("a", "running")]);
        check(&[("a", "run", "running")], &[]);
        check(
            &[("a", "stop", "running"), ("b", "stop", "pending")],
            &[("a", "complete"), ("b", "complete")],
        );
        check(
            &[
                ("a", "stop", "complete"),
                ("b", "stop", "lost"),
                ("c", "run", "failed"),
            ],
            &[],
        );
    }
}
