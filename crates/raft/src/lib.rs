//! Raft consensus for Caravan servers, on [`openraft`] 0.9.
//!
//! A [`RaftNode`] replicates opaque byte commands to a [`StateMachine`] the embedder supplies,
//! talks to its peers through a [`Transport`] the embedder supplies (Caravan uses its RPC
//! listener), and keeps its log, vote and snapshots in a redb file under a directory (or in
//! memory), written by one dedicated thread. Writes made on a follower are forwarded to the
//! leader; a node that cannot reach a quorum refuses writes with [`RaftError::NoLeader`] instead
//! of hanging. [`RaftNode::read_index`] gives linearizable reads: once it returns, the local
//! state machine has applied every write acknowledged anywhere before the call.
//!
//! openraft's storage API v2 (`RaftLogStorage`, `RaftStateMachine`) is implemented directly, so
//! the crate enables openraft's `storage-v2` feature.
//!
//! Invariants:
//! - The state machine sees each committed command exactly once per process lifetime, in log
//!   order, on every node; it must be deterministic (same commands → same state).
//! - A snapshot is taken under the same lock as `apply`, so it is exactly the state at its index.
//!   A state machine that cannot apply or snapshot stops the node (a storage error): it never
//!   produces an empty snapshot or a made-up response.
//! - Nothing is acknowledged to openraft before it is fsynced (durable mode): appends, votes,
//!   truncations, purges and snapshots go, in openraft's order, to the `raft-log-writer` thread,
//!   which commits each batch with one fsync and only then reports it done. No fsync runs on a
//!   tokio worker.
//! - The file is postcard ([`codec`]); a file that does not decode is an error naming the file
//!   and the value, never a panic.
#![deny(missing_docs)]

pub mod codec;
mod disk;
pub mod limits;
mod network;
mod storage;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Cursor;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, Fatal, InitializeError, InstallSnapshotError,
    SnapshotMismatch,
};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::{
    ChangeMembers, Config, Raft, ServerState, Snapshot, SnapshotPolicy, SnapshotSegmentId,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use openraft::BasicNode;

openraft::declare_raft_types!(
    /// Caravan's openraft types: commands and responses are bytes, nodes are RPC addresses.
    pub TypeConfig:
        D = Vec<u8>,
        R = Vec<u8>,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The longest any wait in this crate lasts, whatever timeout it is given, so that adding the
/// timeout to the clock cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How long [`RaftNode::shutdown`] waits for openraft's tasks to let go of the storage.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// The pause between two attempts of a write that found no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A server's Raft ID.
pub type NodeId = u64;

/// The RPC method names a [`Transport`] carries and [`RaftNode::handle`] serves.
pub mod method {
    /// openraft's AppendEntries.
    pub const APPEND_ENTRIES: &str = "Raft.AppendEntries";
    /// openraft's RequestVote.
    pub const VOTE: &str = "Raft.Vote";
    /// openraft's InstallSnapshot (chunked).
    pub const INSTALL_SNAPSHOT: &str = "Raft.InstallSnapshot";
    /// A follower forwarding a write to the leader.
    pub const APPLY: &str = "Raft.Apply";
    /// A follower asking the leader for a linearizable read index.
    pub const READ_INDEX: &str = "Raft.ReadIndex";

    /// Every method [`crate::RaftNode::handle`] serves.
    pub const ALL: [&str; 5] = [APPEND_ENTRIES, VOTE, INSTALL_SNAPSHOT, APPLY, READ_INDEX];
}

/// A boxed future, as [`Transport`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The replicated application state.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies one committed command at log `index` and returns its response. A command the
    /// state machine refuses is an `Ok` response that says so; `Err` means the state machine
    /// cannot go on (the node stops, as on a storage failure) and is never a refusal.
    fn apply(&self, index: u64, command: &[u8]) -> Result<Vec<u8>, String>;
    /// The whole state, as bytes `restore` reads back; `Err` instead of an empty snapshot.
    fn snapshot(&self) -> Result<Vec<u8>, String>;
    /// Replaces the state with a snapshot.
    fn restore(&self, snapshot: &[u8]) -> Result<(), String>;
}

/// How nodes reach each other: one request, one answer.
pub trait Transport: Send + Sync + 'static {
    /// Sends `body` to the node at `addr` for `method` and returns the answer body, or a
    /// description of why it could not be delivered, within `timeout`.
    fn call(
        &self,
        addr: &str,
        method: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>>;
}

/// Every error this crate returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftError {
    /// No leader is known, or this leader has lost its quorum.
    NoLeader,
    /// The write was sent but not known to be committed within the write timeout, or a read
    /// could not be confirmed and applied within its timeout.
    Timeout,
    /// The log store failed.
    Storage(String),
    /// A membership change was refused.
    Membership(String),
    /// A request to another node failed.
    Transport(String),
    /// A request body could not be decoded.
    BadRequest(String),
    /// The node is shutting down.
    Shutdown,
}

impl std::fmt::Display for RaftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftError::NoLeader => f.write_str("No cluster leader"),
            RaftError::Timeout => f.write_str("timed out waiting for the cluster"),
            RaftError::Storage(e) => write!(f, "raft storage: {e}"),
            RaftError::Membership(e) => write!(f, "raft membership change: {e}"),
            RaftError::Transport(e) => write!(f, "raft transport: {e}"),
            RaftError::BadRequest(e) => write!(f, "bad raft request: {e}"),
            RaftError::Shutdown => f.write_str("raft is shutting down"),
        }
    }
}

impl std::error::Error for RaftError {}

/// Settings for one node.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's ID.
    pub id: NodeId,
    /// Where peers reach this node (its [`Transport`] address).
    pub addr: String,
    /// Where the log and snapshots live; `None` keeps them in memory.
    pub dir: Option<PathBuf>,
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// The election timeout range.
    pub election_timeout: (Duration, Duration),
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every: u64,
    /// How long a write may take, forwarding and leader changes included.
    pub write_timeout: Duration,
    /// The largest command [`RaftNode::apply`] and `Raft.Apply` take, in bytes (default
    /// [`limits::DEFAULT_MAX_COMMAND_BYTES`]); a larger one is refused with
    /// [`RaftError::BadRequest`] and never reaches the log.
    pub max_command_bytes: usize,
    /// The most payload bytes one AppendEntries may carry, sent or received (default
    /// [`limits::DEFAULT_MAX_APPEND_BYTES`]). The leader splits its batches to fit; a request
    /// over it is refused. It should be the same on every server; it is never taken to be less
    /// than `max_command_bytes`, so a single command always fits.
    pub max_append_bytes: usize,
    /// The largest snapshot received from a peer, in bytes (default
    /// [`limits::DEFAULT_MAX_SNAPSHOT_BYTES`]). A transfer that would grow past it is refused
    /// and its buffer dropped; a single chunk may carry at most
    /// [`limits::MAX_SNAPSHOT_CHUNK_BYTES`] of it.
    pub max_snapshot_bytes: usize,
}

impl RaftConfig {
    /// Defaults for servers on one LAN: 150 ms heartbeats, a 0.5–1 s election timeout (openraft
    /// adds a leader lease of the maximum, so a dead leader is replaced in about 1.5–2 s), a
    /// snapshot every 4,096 entries, 5 s writes, and the size limits of [`limits`].
    pub fn new(id: NodeId, addr: impl Into<String>) -> RaftConfig {
        RaftConfig {
            id,
            addr: addr.into(),
            dir: None,
            heartbeat: Duration::from_millis(150),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            snapshot_every: 4096,
            write_timeout: Duration::from_secs(5),
            max_command_bytes: limits::DEFAULT_MAX_COMMAND_BYTES,
            max_append_bytes: limits::DEFAULT_MAX_APPEND_BYTES,
            max_snapshot_bytes: limits::DEFAULT_MAX_SNAPSHOT_BYTES,
        }
    }
}

/// A committed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Its log index.
    pub index: u64,
    /// The state machine's response.
    pub response: Vec<u8>,
}

/// Who leads, as [`RaftNode::leadership`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// A leader is known (this node or another) and is in this node's configuration.
    pub leader_known: bool,
    /// This node is the leader.
    pub leading: bool,
    /// Time since the leader was last heard from (zero on the leader; `None` if never).
    pub last_contact: Option<Duration>,
    /// How long without contact (or, on the leader, without a quorum's answers) means trouble:
    /// this node's longest election timeout.
    pub contact_limit: Duration,
}

/// A snapshot of the node's Raft state, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node's ID.
    pub id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: &'static str,
    /// The current term.
    pub term: u64,
    /// The last log index (0 when empty).
    pub last_log_index: u64,
    /// The term of the last log entry.
    pub last_log_term: u64,
    /// The highest index known to be committed.
    pub commit_index: u64,
    /// The highest index applied to the state machine.
    pub applied_index: u64,
    /// The index and term of the last snapshot.
    pub last_snapshot: (u64, u64),
    /// The leader's ID and address, when one is known.
    pub leader: Option<(NodeId, String)>,
    /// The voters (ID → address) of the latest configuration.
    pub voters: BTreeMap<NodeId, String>,
    /// The index of the latest configuration.
    pub configuration_index: u64,
    /// Time since the leader was last heard from (zero on the leader; `None` if never).
    pub last_contact: Option<Duration>,
}

/// One Raft node: openraft plus storage, network, forwarding and status.
pub struct RaftNode {
    raft: Raft<TypeConfig>,
    config: RaftConfig,
    storage: Arc<storage::Storage>,
    transport: Arc<dyn Transport>,
    last_contact: Mutex<Option<Instant>>,
    /// The snapshot being received from the leader, chunk by chunk.
    receiving: Mutex<Option<Receiving>>,
    /// Dropped with the node: ends its quorum check.
    _quorum_check: tokio::sync::watch::Sender<()>,
}

/// A snapshot transfer in progress: its ID and the bytes received so far, in order.
struct Receiving {
    id: String,
    data: Vec<u8>,
}

/// What a `Raft.InstallSnapshot` caller decodes.
type InstallSnapshotAnswer = Result<
    InstallSnapshotResponse<NodeId>,
    openraft::error::RaftError<NodeId, InstallSnapshotError>,
>;

fn storage_err(e: impl std::fmt::Display) -> RaftError {
    RaftError::Storage(e.to_string())
}

impl RaftNode {
    /// Opens the storage (restoring the state machine from the last snapshot) and starts the
    /// node. It does nothing until it is initialized or contacted by a leader.
    pub async fn start(
        config: RaftConfig,
        state_machine: Arc<dyn StateMachine>,
        transport: Arc<dyn Transport>,
    ) -> Result<RaftNode, RaftError> {
        let storage = Arc::new(
            storage::Storage::open(config.dir.as_deref(), state_machine)
                .await
                .map_err(RaftError::Storage)?,
        );
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let raft_config = Config {
            cluster_name: "caravan".into(),
            heartbeat_interval: ms(config.heartbeat),
            election_timeout_min: ms(config.election_timeout.0),
            election_timeout_max: ms(config.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 256,
            max_payload_entries: limits::APPEND_ENTRIES_BATCH,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Storage(format!("raft config: {e}")))?;
        let log_store = storage::LogStore(storage.clone());
        let state = storage::SmStore(storage.clone());
        let network = network::Network {
            transport: transport.clone(),
            max_append_bytes: config.max_append_bytes.max(config.max_command_bytes),
            storage: storage.clone(),
        };
        let raft =
            match Raft::new(config.id, Arc::new(raft_config), network, log_store, state).await {
                Ok(raft) => raft,
                Err(e) => {
                    storage.close().await;
                    return Err(storage_err(e));
                }
            };
        let quorum_check = spawn_quorum_check(raft.clone(), config.election_timeout.1);
        Ok(RaftNode {
            _quorum_check: quorum_check,
            raft,
            config,
            storage,
            transport,
            last_contact: Mutex::new(None),
            receiving: Mutex::new(None),
        })
    }

    /// This node's ID.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Forms a new cluster of `voters` (ID → address). Only a node with an empty log may do it;
    /// on one that already has state it is a no-op.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, String>) -> Result<(), RaftError> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(RaftError::Membership(e.to_string())),
        }
    }

    /// Whether this node has a log or a vote (it was initialized or has joined).
    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The leader's ID and address, when one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// A receiver that changes whenever leadership may have changed; read [`Self::is_leader`].
    pub fn watch(&self) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// The index applied to the local state machine.
    pub fn applied_index(&self) -> u64 {
        self.storage.applied_index()
    }

    /// A receiver of the index applied to the local state machine: it is updated right after
    /// each batch of entries is applied (and after a snapshot is installed), before openraft
    /// answers the writes, so a blocking query woken by it sees a write as soon as it is
    /// applied.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.storage.applied_watch()
    }

    /// Waits (at most `timeout`) until the local state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.storage.applied_watch();
        matches!(
            tokio::time::timeout(timeout.min(MAX_WAIT), rx.wait_for(|&a| a >= index)).await,
            Ok(Ok(_))
        )
    }

    /// Time since this node last heard from the leader: zero on the leader, `None` if it never
    /// has.
    pub fn last_contact(&self) -> Option<Duration> {
        if self.is_leader() {
            Some(Duration::ZERO)
        } else {
            self.last_contact.lock().map(|t| t.elapsed())
        }
    }

    /// A linearizable read point: the leader confirms with a quorum that it still leads
    /// (openraft's `get_read_log_id`, the first half of `ensure_linearizable`) and names the
    /// index every write acknowledged before the call is at or below; on a follower the leader
    /// is asked with `Raft.ReadIndex`. Then this waits until the local state machine has applied
    /// that index, and returns it: a read of the local state after this is linearizable.
    ///
    /// [`RaftError::NoLeader`] if no leader is known or the leader cannot reach a quorum;
    /// [`RaftError::Timeout`] if that is not done within `timeout` (a follower cut off from a
    /// leader it still believes in times out; it never returns a stale index as success).
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, RaftError> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let index = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = match tokio::time::timeout(left, self.read_index_local()).await {
                Err(_) => return Err(RaftError::Timeout),
                Ok(Ok(index)) => Ok(index),
                Ok(Err(Redirect::To(addr))) => self.forward_read_index(&addr, left).await,
                Ok(Err(Redirect::Unknown)) => Err(RaftError::NoLeader),
                Ok(Err(Redirect::Failed(e))) => return Err(e),
            };
            match attempt {
                Ok(index) => break index,
                // This node's own failures returned above; a leader that is shutting down
                // (or unreachable, or without quorum) is retried: another may take over.
                Err(e @ (RaftError::Storage(_) | RaftError::BadRequest(_))) => return Err(e),
                Err(e) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left <= RETRY_PAUSE {
                        // A leader that could not be reached is a read not confirmed in time.
                        return Err(match e {
                            RaftError::NoLeader => RaftError::NoLeader,
                            _ => RaftError::Timeout,
                        });
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        };
        let mut rx = self.storage.applied_watch();
        match tokio::time::timeout_at(deadline, rx.wait_for(|&a| a >= index)).await {
            Ok(Ok(_)) => Ok(index),
            _ => Err(RaftError::Timeout),
        }
    }

    /// The read index, if this node is a leader that a quorum still follows.
    async fn read_index_local(&self) -> Result<u64, Redirect> {
        if self.lost_quorum() {
            return Err(Redirect::Unknown);
        }
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(openraft::error::RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.redirect(f))
            }
            Err(openraft::error::RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(Redirect::Unknown)
            }
            Err(openraft::error::RaftError::Fatal(Fatal::Stopped)) => {
                Err(Redirect::Failed(RaftError::Shutdown))
            }
            Err(e) => Err(Redirect::Failed(RaftError::Storage(e.to_string()))),
        }
    }

    async fn forward_read_index(&self, addr: &str, timeout: Duration) -> Result<u64, RaftError> {
        let body = self
            .transport
            .call(addr, method::READ_INDEX, Vec::new(), timeout)
            .await
            .map_err(RaftError::Transport)?;
        let answer: Result<u64, RaftError> = codec::decode(&body).map_err(RaftError::Transport)?;
        let index = answer?;
        // The leader's index is peer input like any other.
        let max = self.storage.bounds().max_index();
        if index > max {
            return Err(RaftError::Transport(format!(
                "read index {index} is out of bounds (up to {max})"
            )));
        }
        Ok(index)
    }

    /// Whether this node is a leader that has not heard from a quorum within the election
    /// timeout (it refuses writes and reads at once).
    fn lost_quorum(&self) -> bool {
        let limit = u64::try_from(self.config.election_timeout.1.as_millis()).unwrap_or(u64::MAX);
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.millis_since_quorum_ack.is_some_and(|ms| ms > limit)
    }

    /// Where openraft says to go.
    fn redirect(&self, f: openraft::error::ForwardToLeader<NodeId, BasicNode>) -> Redirect {
        match (f.leader_id, f.leader_node) {
            (Some(id), Some(node)) if id != self.config.id => Redirect::To(node.addr),
            _ => Redirect::Unknown,
        }
    }

    /// Replicates a command: on the leader directly, elsewhere forwarded to it, retrying across
    /// leader changes until the write timeout. Returns once the command is committed and applied
    /// on the node that took it.
    ///
    /// A command over [`RaftConfig::max_command_bytes`] is refused at once with
    /// [`RaftError::BadRequest`].
    pub async fn apply(&self, command: Vec<u8>) -> Result<Applied, RaftError> {
        self.check_command(command.len())?;
        let deadline = Instant::now() + self.config.write_timeout.min(MAX_WAIT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.apply_local(command.clone(), left).await {
                Err(Redirect::To(addr)) => self.forward(&addr, &command, left).await,
                Err(Redirect::Unknown) => Err(RaftError::NoLeader),
                Err(Redirect::Failed(e)) => return Err(e),
                Ok(a) => return Ok(a),
            };
            match attempt {
                Ok(a) => return Ok(a),
                Err(
                    e @ (RaftError::Timeout | RaftError::Storage(_) | RaftError::BadRequest(_)),
                ) => {
                    return Err(e);
                }
                Err(e) if deadline.saturating_duration_since(Instant::now()) <= RETRY_PAUSE => {
                    return Err(e);
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    }

    async fn forward(
        &self,
        addr: &str,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Applied, RaftError> {
        let body = self
            .transport
            .call(addr, method::APPLY, command.to_vec(), timeout)
            .await
            .map_err(RaftError::Transport)?;
        let answer: Result<Applied, RaftError> =
            codec::decode(&body).map_err(RaftError::Transport)?;
        answer
    }

    /// Writes on this node if it is a leader with a live quorum.
    async fn apply_local(&self, command: Vec<u8>, timeout: Duration) -> Result<Applied, Redirect> {
        if self.lost_quorum() {
            return Err(Redirect::Unknown);
        }
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
            Err(_) => Err(Redirect::Failed(RaftError::Timeout)),
            Ok(Ok(r)) => {
                // Hashicorp Raft's names: the leader's time from write to commit and apply.
                metrics::histogram!("nomad.raft.commitTime")
                    .record(started.elapsed().as_secs_f64() * 1000.0);
                metrics::counter!("nomad.raft.apply").increment(1);
                Ok(Applied {
                    index: r.log_id.index,
                    response: r.data,
                })
            }
            Ok(Err(openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.redirect(f))
            }
            Ok(Err(e)) => Err(Redirect::Failed(RaftError::Storage(e.to_string()))),
        }
    }

    /// Adds a server as a voter (first as a learner that catches up). Leader only; bounded by
    /// six write timeouts (a learner that cannot catch up is [`RaftError::Timeout`]).
    pub async fn add_voter(&self, id: NodeId, addr: String) -> Result<(), RaftError> {
        let change = async {
            self.raft
                .add_learner(id, BasicNode { addr }, true)
                .await
                .map_err(|e| RaftError::Membership(e.to_string()))?;
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| RaftError::Membership(e.to_string()))
        };
        self.bounded(change).await
    }

    /// Removes a server from the configuration. Leader only; bounded like
    /// [`RaftNode::add_voter`].
    pub async fn remove_server(&self, id: NodeId) -> Result<(), RaftError> {
        let change = async {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| RaftError::Membership(e.to_string()))
        };
        self.bounded(change).await
    }

    async fn bounded<T>(
        &self,
        change: impl Future<Output = Result<T, RaftError>>,
    ) -> Result<(), RaftError> {
        let limit = self.config.write_timeout.saturating_mul(6).min(MAX_WAIT);
        match tokio::time::timeout(limit, change).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(RaftError::Timeout),
        }
    }

    /// The effective AppendEntries payload limit (see [`RaftConfig::max_append_bytes`]).
    fn max_append_bytes(&self) -> usize {
        self.config
            .max_append_bytes
            .max(self.config.max_command_bytes)
    }

    /// Refuses a command over [`RaftConfig::max_command_bytes`].
    fn check_command(&self, bytes: usize) -> Result<(), RaftError> {
        let max = self.config.max_command_bytes;
        if bytes > max {
            return Err(RaftError::BadRequest(format!(
                "command of {bytes} bytes is over the limit of {max} bytes (max_command_bytes)"
            )));
        }
        Ok(())
    }

    /// Serves one request from a peer's [`Transport`] ([`codec`] encoded; `Raft.Apply`'s body is
    /// the command's bytes, `Raft.ReadIndex`'s is empty); the answer is what the calling node's
    /// network expects, encoded the same way (`Raft.ReadIndex`: `Result<u64, RaftError>`, the
    /// leader's read index after its quorum check).
    ///
    /// Terms, log indices and sizes are checked against [`limits`] first: a request out of
    /// bounds is refused with [`RaftError::BadRequest`] naming the field, and openraft never
    /// sees it.
    pub async fn handle(&self, method: &str, body: &[u8]) -> Result<Vec<u8>, RaftError> {
        fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RaftError> {
            codec::decode(body).map_err(RaftError::BadRequest)
        }
        fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RaftError> {
            codec::encode(value).map_err(RaftError::BadRequest)
        }
        match method {
            method::APPEND_ENTRIES => {
                let req = decode(body)?;
                limits::check_append(&self.storage.bounds(), &req, self.max_append_bytes())?;
                limits::check_peer_vote(self.id(), &req.vote)?;
                *self.last_contact.lock() = Some(Instant::now());
                encode(&self.raft.append_entries(req).await)
            }
            method::VOTE => {
                let req = decode(body)?;
                limits::check_vote(&self.storage.bounds(), &req)?;
                limits::check_peer_vote(self.id(), &req.vote)?;
                encode(&self.raft.vote(req).await)
            }
            method::INSTALL_SNAPSHOT => {
                let req = decode(body)?;
                limits::check_snapshot_meta(&self.storage.bounds(), &req)?;
                limits::check_peer_vote(self.id(), &req.vote)?;
                *self.last_contact.lock() = Some(Instant::now());
                encode(&self.receive_snapshot(req).await?)
            }
            method::APPLY => {
                // Refused in the answer, so a forwarding node stops retrying.
                if let Err(e) = self.check_command(body.len()) {
                    return encode(&Err::<Applied, _>(e));
                }
                let answer = match self
                    .apply_local(body.to_vec(), self.config.write_timeout)
                    .await
                {
                    Ok(a) => Ok(a),
                    Err(Redirect::Failed(e)) => Err(e),
                    Err(_) => Err(RaftError::NoLeader),
                };
                encode(&answer)
            }
            method::READ_INDEX => {
                if !body.is_empty() {
                    return Err(RaftError::BadRequest(format!(
                        "Raft.ReadIndex takes an empty body, not {} bytes",
                        body.len()
                    )));
                }
                // Only a leader answers; it does not forward again.
                let answer =
                    match tokio::time::timeout(self.config.write_timeout, self.read_index_local())
                        .await
                    {
                        Err(_) => Err(RaftError::Timeout),
                        Ok(Ok(index)) => Ok(index),
                        Ok(Err(Redirect::Failed(e))) => Err(e),
                        Ok(Err(_)) => Err(RaftError::NoLeader),
                    };
                encode(&answer)
            }
            other => Err(RaftError::BadRequest(format!(
                "unknown raft method {other:?}"
            ))),
        }
    }

    /// Takes one snapshot chunk. Chunks are kept in this node's own buffer, not openraft's
    /// (which zero-fills up to any offset it is given): a chunk is taken only at offset 0 (which
    /// starts the transfer over) or exactly at the end of what was received for the same
    /// snapshot ID; anything else is answered with openraft's `SnapshotMismatch`, which makes a
    /// legitimate leader start over. The whole snapshot is bounded by
    /// [`RaftConfig::max_snapshot_bytes`] and one chunk by [`limits::MAX_SNAPSHOT_CHUNK_BYTES`].
    /// The last chunk hands the snapshot to openraft whole.
    async fn receive_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotAnswer, RaftError> {
        let max_total = self.config.max_snapshot_bytes;
        let max_chunk = limits::MAX_SNAPSHOT_CHUNK_BYTES.min(max_total);
        if req.data.len() > max_chunk {
            return Err(RaftError::BadRequest(format!(
                "data: {} bytes in one snapshot chunk, more than {max_chunk}",
                req.data.len()
            )));
        }
        // Like openraft: a chunk from an older leader is answered with our vote and dropped.
        let my_vote = match self.raft.with_raft_state(|st| *st.vote_ref()).await {
            Ok(v) => v,
            Err(fatal) => return Ok(Err(openraft::error::RaftError::Fatal(fatal))),
        };
        if req.vote < my_vote {
            return Ok(Ok(InstallSnapshotResponse { vote: my_vote }));
        }
        let id = &req.meta.snapshot_id;
        let data = {
            let mut receiving = self.receiving.lock();
            if req.offset == 0 {
                *receiving = Some(Receiving {
                    id: id.clone(),
                    data: Vec::new(),
                });
            }
            let Some(r) = receiving.as_mut().filter(|r| &r.id == id) else {
                return Ok(Err(mismatch(id, 0, req.offset)));
            };
            let received = r.data.len();
            if u64::try_from(received) != Ok(req.offset) {
                return Ok(Err(mismatch(
                    id,
                    u64::try_from(received).unwrap_or(u64::MAX),
                    req.offset,
                )));
            }
            let total = match received.checked_add(req.data.len()) {
                Some(t) if t <= max_total => t,
                _ => {
                    *receiving = None;
                    return Err(RaftError::BadRequest(format!(
                        "snapshot {id:?}: more than {max_total} bytes (max_snapshot_bytes)"
                    )));
                }
            };
            // Grow geometrically, but never past the bound.
            let capacity = total
                .max(r.data.capacity().saturating_mul(2))
                .min(max_total);
            r.data.reserve_exact(capacity.saturating_sub(received));
            r.data.extend_from_slice(&req.data);
            if !req.done {
                return Ok(Ok(InstallSnapshotResponse { vote: my_vote }));
            }
            receiving.take().map(|r| r.data).unwrap_or_default()
        };
        let snapshot = Snapshot {
            meta: req.meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        Ok(
            match self.raft.install_full_snapshot(req.vote, snapshot).await {
                Ok(resp) => Ok(resp.into()),
                Err(fatal) => Err(openraft::error::RaftError::Fatal(fatal)),
            },
        )
    }

    /// The bytes held for a snapshot being received (its buffer's capacity); bounded by
    /// [`RaftConfig::max_snapshot_bytes`].
    pub fn snapshot_receive_bytes(&self) -> usize {
        self.receiving
            .lock()
            .as_ref()
            .map_or(0, |r| r.data.capacity())
    }

    /// Who leads, as far as this node knows, without the cost of [`RaftNode::status`] (no copy
    /// of the metrics, no storage read): what a health check asks on every request.
    pub fn leadership(&self) -> Leadership {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leading = m.state == ServerState::Leader;
        Leadership {
            // As `status()`: a leader counts once this node's configuration knows it.
            leader_known: m
                .current_leader
                .is_some_and(|id| m.membership_config.membership().get_node(&id).is_some()),
            leading,
            last_contact: if leading {
                Some(Duration::ZERO)
            } else {
                self.last_contact.lock().map(|t| t.elapsed())
            },
            contact_limit: self.config.election_timeout.1,
        }
    }

    /// The node's Raft state.
    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeMap<NodeId, String> = membership
            .voter_ids()
            .map(|id| {
                let addr = membership
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default();
                (id, addr)
            })
            .collect();
        let leader = m
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())));
        let state = match m.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        };
        let last_contact = if m.state == ServerState::Leader {
            Some(Duration::ZERO)
        } else {
            self.last_contact.lock().map(|t| t.elapsed())
        };
        let (last_log_term, commit_index) = self.storage.log_facts(m.last_log_index);
        let snapshot = self.storage.snapshot_log_id();
        RaftStatus {
            id: self.config.id,
            state,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_log_term,
            commit_index,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_snapshot: snapshot.map_or((0, 0), |l| (l.index, l.leader_id.term)),
            leader,
            voters,
            configuration_index: m.membership_config.log_id().map_or(0, |l| l.index),
            last_contact,
        }
    }

    /// Stops the node. Returns once openraft's tasks have let go of the storage (waiting at
    /// most `SHUTDOWN_WAIT`, two seconds) and the log writer has written what was queued and
    /// closed the redb file, so another node can open the same directory at once.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while Arc::strong_count(&self.storage) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.storage.close().await;
    }
}

/// openraft's answer to a chunk that does not continue the transfer.
fn mismatch(
    id: &str,
    expect: u64,
    got: u64,
) -> openraft::error::RaftError<NodeId, InstallSnapshotError> {
    let segment = |offset| SnapshotSegmentId {
        id: id.to_string(),
        offset,
    };
    openraft::error::RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
        expect: segment(expect),
        got: segment(got),
    }))
}

/// A leader that has not heard from a quorum for longer than `limit` stops sending heartbeats,
/// as a hashicorp/raft leader steps down: the followers it still reaches then time out and find
/// no leader (and say so in health and writes) instead of following a leader that can commit
/// nothing. Heartbeats resume as soon as it is no longer such a leader (a newer term deposed it,
/// or a quorum answered again). The check ends when the returned sender is dropped.
fn spawn_quorum_check(raft: Raft<TypeConfig>, limit: Duration) -> tokio::sync::watch::Sender<()> {
    let (stop, mut stopped) = tokio::sync::watch::channel(());
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((limit / 4).max(Duration::from_millis(10)));
        let mut beating = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = stopped.changed() => if changed.is_err() { return },
            }
            let (state, since) = {
                let m = raft.metrics();
                let m = m.borrow();
                (m.state, m.millis_since_quorum_ack)
            };
            if state == ServerState::Shutdown {
                return;
            }
            let lost = state == ServerState::Leader && since.is_some_and(|ms| ms > limit_ms);
            if lost == beating {
                beating = !lost;
                raft.runtime_config().heartbeat(beating);
                if lost {
                    tracing::warn!(target: "raft", "leader has not heard from a quorum; stopping heartbeats so followers elect anew");
                }
            }
        }
    });
    stop
}

/// Why a local write did not happen.
enum Redirect {
    To(String),
    Unknown,
    Failed(RaftError),
}
