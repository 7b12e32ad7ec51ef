//! The bodies of the RPC methods between client agents and servers (`Node.*`, `ClientAgent.*`):
//! one type per request and answer, shared by both sides so they cannot differ, each checked
//! where it is decoded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jobs::{Allocation, Node};

/// The longest a client's allocation query may block.
pub const MAX_ALLOCS_WAIT_MS: u64 = 5 * 60 * 1000;

/// `Node.Register`: the node, with the secret it will present from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The fingerprinted node (status is set by the server).
    pub node: Node,
}

/// `Node.UpdateStatus`: a heartbeat (status `ready`) or a status a client reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatusRequest {
    /// The node.
    pub node_id: String,
    /// Its secret.
    pub secret_id: String,
    /// The status it reports (`ready` for a heartbeat).
    pub status: String,
    /// Set by a server passing the heartbeat on to the leader (the client's connection is
    /// the forwarding server's, not this one's).
    #[serde(default)]
    pub forwarded: bool,
}

/// What `Node.Register` and `Node.UpdateStatus` answer: when to heartbeat next and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The TTL the leader gives this node, in milliseconds: heartbeat again within it.
    pub heartbeat_ttl_ms: u64,
    /// The RPC addresses of the region's servers, for the client's server list.
    pub servers: Vec<String>,
    /// The leader's RPC address, when known.
    pub leader: String,
}

/// `Node.GetClientAllocs`: the allocations on a node once the allocation table passes
/// `min_index`, waiting at most `wait_ms` ([`MAX_ALLOCS_WAIT_MS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAllocsRequest {
    /// The node.
    pub node_id: String,
    /// Its secret.
    pub secret_id: String,
    /// Block until the allocation table's index is above this.
    pub min_index: u64,
    /// The longest wait, in milliseconds.
    pub wait_ms: u64,
}

/// The allocations placed on a node, at an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAllocsReply {
    /// The allocations.
    pub allocs: Vec<Allocation>,
    /// The index they are current at.
    pub index: u64,
}

/// `Node.UpdateAlloc`: client statuses of allocations on the caller's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocUpdateRequest {
    /// The node.
    pub node_id: String,
    /// Its secret.
    pub secret_id: String,
    /// Allocation ID → client status (`running`, `complete`, `failed`).
    pub updates: BTreeMap<String, String>,
}

/// `Node.HasConn`: does the server asked hold this node's connection?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HasConnRequest {
    /// The node.
    pub node_id: String,
}

/// `ClientAgent.*`: a request for a client node, through a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForNode<T> {
    /// The client node the request is for.
    pub node_id: String,
    /// The request, as the `Agent.*` method takes it.
    pub request: T,
    /// Set by a server passing the request on to the server that holds the node's
    /// connection: that one serves it or answers `No path to node`, never forwards again.
    #[serde(default)]
    pub forwarded: bool,
}
