//! A member's identity on the wire: small, since foca puts it in every packet header twice.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Who a member is: its gossip address, its Serf name (`node.region`) and a generation that a
/// restart bumps, so the restarted process wins over the stale identity at the same address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Gossip address (unique per member).
    pub addr: SocketAddr,
    /// Member name, e.g. `server1.global`.
    pub name: String,
    /// Bumped on restart and on rejoin after being declared down.
    pub generation: u64,
}

impl NodeId {
    /// A stand-in for an address whose identity is not known yet (the target of a join). foca
    /// accepts an announce addressed to any identity with the receiver's address.
    pub fn placeholder(addr: SocketAddr) -> NodeId {
        NodeId {
            addr,
            name: String::new(),
            generation: 0,
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}
