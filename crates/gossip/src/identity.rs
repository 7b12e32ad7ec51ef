//! A member's identity: small on the wire, since foca puts it in every packet header twice, and
//! small in memory, since every member holds one per member (N² in a pool of N).

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::DefaultHashBuilder;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::intern::Interner;

/// Who a member is: its gossip address, its Serf name (`node.region`) and a generation that a
/// restart bumps, so the restarted process wins over the stale identity at the same address.
///
/// A `NodeId` is one pointer to a shared record: every copy of the same identity in the process
/// (decoded from any packet, held by any node) is the same allocation. Cloning is a reference
/// count, comparing is usually a pointer comparison.
#[derive(Clone)]
pub struct NodeId(Arc<Record>);

#[derive(Debug, PartialEq, Eq, Hash, Serialize)]
struct Record {
    addr: SocketAddr,
    name: Box<str>,
    generation: u64,
    /// [`stable_hash`] of the three, computed once (not on the wire).
    #[serde(skip)]
    stable: u64,
}

/// FNV-1a over an identity's address, name and generation: the same in every process and
/// build, so two nodes can compare digests of their member lists (see
/// [`crate::exchange::ListDigest`]).
fn stable_hash(addr: SocketAddr, name: &str, generation: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match addr.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => eat(&ip.octets()),
        std::net::IpAddr::V6(ip) => eat(&ip.octets()),
    }
    eat(&addr.port().to_be_bytes());
    eat(name.as_bytes());
    eat(&[0xff]);
    eat(&generation.to_le_bytes());
    h
}

/// A record as it arrives: the name borrowed from the packet, so finding a known identity
/// allocates nothing.
#[derive(Deserialize)]
struct WireRecord<'a> {
    addr: SocketAddr,
    #[serde(borrow)]
    name: Cow<'a, str>,
    generation: u64,
}

/// Every identity alive in the process, so equal identities share one record.
static INTERNER: LazyLock<Interner<Record>> = LazyLock::new(Interner::new);

fn key_hash(hasher: &DefaultHashBuilder, addr: SocketAddr, name: &str, generation: u64) -> u64 {
    hasher.hash_one((addr, name, generation))
}

fn intern(addr: SocketAddr, name: &str, generation: u64) -> NodeId {
    let hasher = INTERNER.hasher();
    let shared = INTERNER.get_or_insert(
        key_hash(hasher, addr, name, generation),
        (addr, name, generation),
        |r, &(addr, name, generation)| {
            r.addr == addr && *r.name == *name && r.generation == generation
        },
        |(addr, name, generation)| Record {
            addr,
            name: name.into(),
            generation,
            stable: stable_hash(addr, name, generation),
        },
        |r| key_hash(hasher, r.addr, &r.name, r.generation),
    );
    NodeId(shared)
}

impl NodeId {
    /// The identity of the member `name` at `addr` in its `generation`.
    pub fn new(addr: SocketAddr, name: &str, generation: u64) -> NodeId {
        intern(addr, name, generation)
    }

    /// A stand-in for an address whose identity is not known yet (the target of a join). foca
    /// accepts an announce addressed to any identity with the receiver's address.
    pub fn placeholder(addr: SocketAddr) -> NodeId {
        NodeId::new(addr, "", 0)
    }

    /// Gossip address (unique per member).
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Member name, e.g. `server1.global`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Bumped on restart and on rejoin after being declared down.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// The interned record's address: equal identities decoded in this process share one
    /// record, so this tells them apart without hashing the name (two records of one identity,
    /// should there be any, only look different).
    pub(crate) fn record_key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// A hash of the address, name and generation that every process and build computes alike.
    pub(crate) fn stable_hash(&self) -> u64 {
        self.0.stable
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &NodeId) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for NodeId {}

impl Hash for NodeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeId")
            .field("addr", &self.0.addr)
            .field("name", &self.0.name)
            .field("generation", &self.0.generation)
            .finish()
    }
}

/// On the wire: the address, the name and the generation, in that order.
impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        let wire = WireRecord::deserialize(deserializer)?;
        Ok(intern(wire.addr, &wire.name, wire.generation))
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId::new(
            self.0.addr,
            &self.0.name,
            self.0.generation.wrapping_add(1),
        ))
    }

    fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.0.generation > adversary.0.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn equal_identities_share_one_record() {
        let a = NodeId::new(addr(1), "a.global", 3);
        let b = NodeId::new(addr(1), "a.global", 3);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_ne!(a, NodeId::new(addr(1), "a.global", 4));
        assert_eq!(std::mem::size_of::<NodeId>(), 8);
    }

    #[test]
    fn wire_form_is_addr_name_generation_and_decodes_to_the_shared_record() {
        let a = NodeId::new(addr(4648), "s1.global", 9);
        let bytes = postcard::to_stdvec(&a).unwrap();
        let expected = postcard::to_stdvec(&(addr(4648), "s1.global", 9u64)).unwrap();
        assert_eq!(bytes, expected);
        let back: NodeId = postcard::from_bytes(&bytes).unwrap();
        assert!(Arc::ptr_eq(&a.0, &back.0));
    }

    #[test]
    fn records_nobody_holds_are_swept() {
        let keep = NodeId::new(addr(2), "keep.global", 1);
        // Spread over every shard: each sweeps once it holds 1,024 records or more.
        for generation in 0..50_000 {
            drop(NodeId::new(addr(3), "churn.global", generation));
        }
        let live = INTERNER.len();
        assert!(live < 20_000, "{live} records kept");
        assert_eq!(keep, NodeId::new(addr(2), "keep.global", 1));
    }
}
