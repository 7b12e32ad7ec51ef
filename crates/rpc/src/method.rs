//! The method table: every RPC method, who may call it, and how large its request and reply may
//! be. `docs/rpc.md` is this table in prose; a test keeps the two in step.

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who completed the handshake (liveness and the Raft leader, as Nomad's `Status.*`).
    Public,
    /// Anyone, acting for a user: the request carries the user's ACL token and the handler checks
    /// it with exactly the rules of the HTTP endpoint the method stands for.
    User,
    /// Client agents and servers (node registration, heartbeats, allocations).
    Client,
    /// Servers of this region only (Raft, the eval broker).
    Server,
}

/// One method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    /// `Service.Method`.
    pub name: &'static str,
    /// Who may call it.
    pub access: Access,
    /// The largest request body the server reads for it (checked before reading).
    pub max_request: usize,
    /// The largest reply (or reply chunk, for streams) a client reads for it.
    pub max_reply: usize,
    /// Whether the reply is a stream of chunks.
    pub streaming: bool,
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

const fn m(name: &'static str, access: Access, max_request: usize, max_reply: usize) -> MethodSpec {
    MethodSpec {
        name,
        access,
        max_request,
        max_reply,
        streaming: false,
    }
}

/// `Status.Ping`: liveness.
pub const PING: &str = "Status.Ping";
/// `Status.Leader`: the Raft leader's RPC address.
pub const LEADER: &str = "Status.Leader";
/// `Status.Peers`: the voters' RPC addresses.
pub const PEERS: &str = "Status.Peers";
/// `Status.RaftStats`: a server's last contact with the leader, last log term and index (for
/// autopilot's health).
pub const RAFT_STATS: &str = "Status.RaftStats";
/// `Agent.Members`: the gossip member list (node:read).
pub const MEMBERS: &str = "Agent.Members";
/// `Agent.Host`: host data (the debug rule).
pub const HOST: &str = "Agent.Host";
/// `Agent.Profile`: a pprof profile (agent:write, then the debug rule).
pub const PROFILE: &str = "Agent.Profile";
/// `Agent.Monitor`: a log stream (agent:read).
pub const MONITOR: &str = "Agent.Monitor";
/// `Agent.MonitorExport`: the agent's log file or journal (agent:read).
pub const MONITOR_EXPORT: &str = "Agent.MonitorExport";
/// `ACL.ResolveToken`: the permissions of the token the caller presents.
pub const RESOLVE_TOKEN: &str = "ACL.ResolveToken";
/// `Node.Register`: a client registers its node (the node's secret is the credential).
pub const NODE_REGISTER: &str = "Node.Register";
/// `Node.UpdateStatus`: a client's heartbeat (with its node's secret).
pub const NODE_UPDATE_STATUS: &str = "Node.UpdateStatus";
/// `Node.GetClientAllocs`: a client's blocking query for the allocations on its node.
pub const NODE_GET_CLIENT_ALLOCS: &str = "Node.GetClientAllocs";
/// `Node.UpdateAlloc`: a client reports its allocations' client status.
pub const NODE_UPDATE_ALLOC: &str = "Node.UpdateAlloc";
/// `Node.HasConn`: whether this server holds a node's connection (servers ask each other).
pub const NODE_HAS_CONN: &str = "Node.HasConn";
/// `Node.Heartbeats`: when each client node last heartbeat, as the leader saw it (for the
/// operator page's `/v1/nodes/heartbeats`).
pub const NODE_HEARTBEATS: &str = "Node.Heartbeats";
/// `ClientAgent.Host`: host data of a client node, through a server (the debug rule).
pub const CLIENT_HOST: &str = "ClientAgent.Host";
/// `ClientAgent.Profile`: a profile of a client node, through a server (agent:write).
pub const CLIENT_PROFILE: &str = "ClientAgent.Profile";
/// `ClientAgent.Monitor`: a client node's log stream, through a server (agent:read).
pub const CLIENT_MONITOR: &str = "ClientAgent.Monitor";
/// `HTTP.Forward`: an HTTP API request served by a server of another region (or for an agent
/// that runs no server); the answer streams back as its head, then its body.
pub const HTTP_FORWARD: &str = "HTTP.Forward";
/// `ClientAgent.MonitorExport`: a client node's log export, through a server (agent:read).
pub const CLIENT_MONITOR_EXPORT: &str = "ClientAgent.MonitorExport";
/// `Keyring.Operation`: one member's part of a gossip keyring operation (the server that took
/// the operator's request, with agent:write checked there, asks every member).
pub const KEYRING_OPERATION: &str = "Keyring.Operation";
/// `Eval.Dequeue`: take an evaluation from the leader's broker.
pub const EVAL_DEQUEUE: &str = "Eval.Dequeue";
/// `Eval.Ack`: an evaluation was processed.
pub const EVAL_ACK: &str = "Eval.Ack";
/// `Eval.Nack`: an evaluation was not processed.
pub const EVAL_NACK: &str = "Eval.Nack";
/// `Raft.AppendEntries`.
pub const RAFT_APPEND: &str = "Raft.AppendEntries";
/// `Raft.Vote`.
pub const RAFT_VOTE: &str = "Raft.Vote";
/// `Raft.InstallSnapshot` (one chunk).
pub const RAFT_SNAPSHOT: &str = "Raft.InstallSnapshot";
/// `Raft.Apply`: a follower forwards a write to the leader.
pub const RAFT_APPLY: &str = "Raft.Apply";
/// `Raft.ReadIndex`: a follower asks the leader for a linearizable read index.
pub const RAFT_READ_INDEX: &str = "Raft.ReadIndex";

/// Every method. Names are unique.
pub const METHODS: &[MethodSpec] = &[
    m(PING, Access::Public, KIB, KIB),
    m(LEADER, Access::Public, KIB, 4 * KIB),
    m(PEERS, Access::Public, KIB, 64 * KIB),
    m(RAFT_STATS, Access::Server, KIB, KIB),
    m(MEMBERS, Access::User, KIB, 32 * MIB),
    m(HOST, Access::User, KIB, 8 * MIB),
    m(PROFILE, Access::User, KIB, 64 * MIB),
    MethodSpec {
        streaming: true,
        ..m(MONITOR, Access::User, KIB, MIB)
    },
    MethodSpec {
        streaming: true,
        ..m(MONITOR_EXPORT, Access::User, KIB, MIB)
    },
    m(RESOLVE_TOKEN, Access::User, KIB, 64 * KIB),
    m(NODE_REGISTER, Access::Public, 64 * KIB, 64 * KIB),
    m(NODE_UPDATE_STATUS, Access::Public, 4 * KIB, 64 * KIB),
    m(NODE_GET_CLIENT_ALLOCS, Access::Public, 4 * KIB, 16 * MIB),
    m(NODE_UPDATE_ALLOC, Access::Public, 2 * MIB, KIB),
    m(NODE_HAS_CONN, Access::Server, KIB, KIB),
    // The most nodes the state holds (200,000) with 128-byte IDs: ~41 MB (tested in the agent).
    m(NODE_HEARTBEATS, Access::Server, KIB, 64 * MIB),
    MethodSpec {
        streaming: true,
        ..m(CLIENT_MONITOR_EXPORT, Access::User, 2 * KIB, MIB)
    },
    MethodSpec {
        streaming: true,
        ..m(HTTP_FORWARD, Access::User, MIB + 16 * KIB, MIB)
    },
    m(CLIENT_HOST, Access::User, KIB, 8 * MIB),
    m(CLIENT_PROFILE, Access::User, 2 * KIB, 64 * MIB),
    MethodSpec {
        streaming: true,
        ..m(CLIENT_MONITOR, Access::User, 2 * KIB, MIB)
    },
    m(KEYRING_OPERATION, Access::Server, KIB, 8 * KIB),
    m(EVAL_DEQUEUE, Access::Server, 4 * KIB, 4 * MIB),
    m(EVAL_ACK, Access::Server, KIB, KIB),
    m(EVAL_NACK, Access::Server, KIB, KIB),
    m(RAFT_APPEND, Access::Server, 64 * MIB, 64 * KIB),
    m(RAFT_VOTE, Access::Server, 4 * KIB, 4 * KIB),
    m(RAFT_SNAPSHOT, Access::Server, 16 * MIB, 4 * KIB),
    m(RAFT_APPLY, Access::Server, 2 * MIB, 64 * KIB),
    m(RAFT_READ_INDEX, Access::Server, KIB, 4 * KIB),
];

/// The longest method name accepted on the wire.
pub const MAX_NAME: usize = 64;

/// Finds a method by name.
pub fn lookup(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short() {
        for (i, a) in METHODS.iter().enumerate() {
            assert!(a.name.len() <= MAX_NAME, "{}", a.name);
            assert!(
                METHODS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        assert_eq!(lookup(PING).map(|m| m.access), Some(Access::Public));
        assert!(lookup("ACL.State").is_none(), "ACL.State is gone");
    }

    #[test]
    fn docs_list_every_method_with_its_access() {
        let doc = include_str!("../../../docs/rpc.md");
        for m in METHODS {
            let access = match m.access {
                Access::Public => "public",
                Access::User => "user",
                Access::Client => "client",
                Access::Server => "server",
            };
            let row = format!("| `{}` | {access} |", m.name);
            assert!(doc.contains(&row), "docs/rpc.md lacks the row {row:?}");
        }
    }
}
