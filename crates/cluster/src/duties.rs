//! A server's cluster duties, as tasks: forming the cluster ([`bootstrap`]), the leader's
//! reconciliation of gossip with the Raft configuration ([`reconcile`]), following leadership
//! ([`follow_leadership`]) and `_core` garbage collection ([`core_gc`]). They see the rest of
//! the agent only through [`ServerDirectory`].

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::member::{MemberStatus, ServerInfo};

use crate::command::Command;
use crate::node::{Cluster, raft_id, seed};

/// A boxed future borrowing its directory.
pub type DirFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the duties need from the agent around them.
pub trait ServerDirectory: Send + Sync + 'static {
    /// This region's servers as gossip describes them (claims, until confirmed).
    fn servers(&self) -> Vec<ServerInfo>;
    /// Whether this agent can authenticate a server at all (a server key or TLS). Without it
    /// no server is ever confirmed, so none is added.
    fn can_confirm(&self) -> bool;
    /// The server ID the agent at `addr` answers as, over a connection that proved it is a
    /// server; `None` if it does not answer or cannot prove it.
    fn server_id_at(&self, addr: SocketAddr) -> DirFuture<'_, Option<String>>;
    /// The Raft peers the server at `addr` reports (empty: it has no cluster yet).
    fn raft_peers_at(&self, addr: SocketAddr) -> DirFuture<'_, Result<Vec<String>, String>>;
    /// This server started or stopped leading (the agent pauses or resumes workers).
    fn leadership_changed(&self, leading: bool);
}

/// Whether the agent at `addr` answers as the server with Raft ID `raft`.
async fn answers_as(dir: &dyn ServerDirectory, addr: SocketAddr, raft: u64) -> bool {
    if !dir.can_confirm() {
        return false; // an anonymous answer proves nothing
    }
    dir.server_id_at(addr)
        .await
        .is_some_and(|id| raft_id(&id) == raft)
}

/// Forms the cluster once `expect` servers are alive in gossip and confirmed over RPC, unless
/// one of them already belongs to a cluster (then the leader adds us). `me` is this server's
/// RPC address. Returns once this node is initialized.
pub async fn bootstrap(
    cluster: Arc<Cluster>,
    dir: Arc<dyn ServerDirectory>,
    expect: u32,
    me: SocketAddr,
) {
    let raft = cluster.raft();
    loop {
        if raft.is_initialized().await {
            return;
        }
        let voters = if expect == 1 {
            Some(BTreeMap::from([(raft.id(), me.to_string())]))
        } else if expect > 1 {
            bootstrap_set(&cluster, &*dir, expect).await
        } else {
            None
        };
        if let Some(voters) = voters {
            match raft.initialize(voters.clone()).await {
                Ok(()) => {
                    tracing::info!(target: "raft", servers = voters.len(), "bootstrapped the cluster")
                }
                Err(e) => tracing::error!(target: "raft", error = %e, "bootstrap failed"),
            }
            if expect == 1 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The voters to bootstrap with: `expect` alive servers expecting the same, each confirmed as
/// itself, none of which reports Raft peers already.
async fn bootstrap_set(
    cluster: &Cluster,
    dir: &dyn ServerDirectory,
    expect: u32,
) -> Option<BTreeMap<u64, String>> {
    let me = cluster.raft().id();
    let servers: Vec<ServerInfo> = dir
        .servers()
        .into_iter()
        .filter(|s| s.status == MemberStatus::Alive && s.expect == expect)
        .collect();
    if servers.len() < expect as usize {
        return None;
    }
    for s in servers.iter().filter(|s| raft_id(&s.id) != me) {
        if !answers_as(dir, s.rpc, raft_id(&s.id)).await {
            tracing::info!(target: "raft", server = %s.name, "server not confirmed over RPC yet; waiting");
            return None;
        }
        match dir.raft_peers_at(s.rpc).await {
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
            .map(|s| (raft_id(&s.id), s.rpc.to_string()))
            .collect(),
    )
}

/// On the leader, once a second: add alive servers that are not voters (once confirmed),
/// remove voters that left gossip (unless they still answer as themselves), record
/// evaluations past the delivery limit as failed.
pub async fn reconcile(cluster: Arc<Cluster>, dir: Arc<dyn ServerDirectory>) {
    let mut seen: HashSet<u64> = HashSet::new();
    // Servers already reported as unconfirmed: said once at WARN, then at DEBUG, so a
    // lingering stranger in gossip cannot fill the log.
    let mut refused: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let servers = dir.servers();
        seen.extend(servers.iter().map(|s| raft_id(&s.id)));
        if !cluster.raft().is_leader() {
            continue;
        }
        record_failed(&cluster).await;
        add_servers(&cluster, &*dir, &servers, &mut refused).await;
        remove_departed(&cluster, &*dir, &servers, &seen).await;
    }
}

async fn record_failed(cluster: &Cluster) {
    for e in cluster.state().broker().take_failed() {
        if let Err(err) = cluster.write(&Command::EvalFail { eval_id: e.id }).await {
            tracing::warn!(target: "raft", error = %err, "cannot record failed evaluation");
        }
    }
}

async fn add_servers(
    cluster: &Cluster,
    dir: &dyn ServerDirectory,
    servers: &[ServerInfo],
    refused: &mut HashSet<String>,
) {
    let voters = cluster.raft().status().voters;
    for s in servers {
        let id = raft_id(&s.id);
        if s.status != MemberStatus::Alive || voters.contains_key(&id) {
            continue;
        }
        // Gossip tags are claims: add the server only once its RPC address answers, over an
        // authenticated connection, as the server it claims to be.
        if !answers_as(dir, s.rpc, id).await {
            let why = if dir.can_confirm() {
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
        if let Err(e) = cluster.raft().add_voter(id, s.rpc.to_string()).await {
            tracing::warn!(target: "raft", server = %s.name, error = %e, "cannot add server");
        }
    }
}

async fn remove_departed(
    cluster: &Cluster,
    dir: &dyn ServerDirectory,
    servers: &[ServerInfo],
    seen: &HashSet<u64>,
) {
    let me = cluster.raft().id();
    let voters = cluster.raft().status().voters;
    for (id, addr) in voters.iter().filter(|&(&id, _)| id != me) {
        let gone = match servers.iter().find(|s| raft_id(&s.id) == *id) {
            Some(s) => s.status == MemberStatus::Left,
            None => seen.contains(id),
        };
        if !gone {
            continue;
        }
        // A leave heard in gossip is a claim too: a server still answering as itself at its
        // Raft address stays a voter.
        let still_there = match addr.parse() {
            Ok(addr) => answers_as(dir, addr, *id).await,
            Err(_) => false,
        };
        if still_there {
            tracing::warn!(target: "raft", id, "gossip says the server left, but it still answers; keeping it");
            continue;
        }
        tracing::info!(target: "raft", id, "removing departed server from the cluster");
        if let Err(e) = cluster.raft().remove_server(*id).await {
            tracing::warn!(target: "raft", id, error = %e, "cannot remove server");
        }
    }
}

/// Follows leadership: the broker and the directory's workers follow the leader.
pub async fn follow_leadership(cluster: Arc<Cluster>, dir: Arc<dyn ServerDirectory>) {
    let mut rx = cluster.raft().watch();
    let mut leading = false;
    loop {
        let now = cluster.raft().is_leader();
        if now != leading {
            leading = now;
            cluster.state().set_leading(now);
            dir.leadership_changed(now);
            tracing::info!(target: "raft", leader = now, "leadership changed");
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// On the leader, every `interval`: a `_core` GC evaluation, as Nomad's leader does.
pub async fn core_gc(cluster: Arc<Cluster>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        if cluster.raft().is_leader()
            && let Err(e) = cluster.write(&Command::CoreEval { seed: seed() }).await
        {
            tracing::warn!(target: "raft", error = %e, "cannot enqueue core GC");
        }
    }
}
