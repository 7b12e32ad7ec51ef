//! SWIM gossip membership for Caravan, on the [`foca`] crate, with Serf's member model on top.
//!
//! - [`Node`] is sans-I/O: foca plus a member table (`alive`, `leaving`, `left`, `failed`), tags
//!   disseminated as versioned broadcasts, leave intents, force-leave and reaping. Feed it packets
//!   and timers with the current time; it returns packets, timers and member events.
//! - [`udp`] drives one `Node` on a UDP socket from a single owner task; others send commands
//!   through a [`udp::Gossip`] handle and read a published snapshot.
//! - [`sim`] runs many nodes in one process on virtual time with per-link loss and latency.
//!
//! Packets carry a one-byte envelope kind and, with a key, are sealed with AES-GCM.
#![deny(missing_docs)]

mod exchange;
mod identity;
mod intern;
pub mod keyring;
mod knowledge;
pub mod list;
mod node;
mod ping;
pub mod sim;
pub mod table;
pub mod udp;
pub mod wire;

/// Caravan's fork of foca (the `caravan-foca` package; `vendor/foca/CARAVAN.md` lists what it
/// changes), re-exported so an embedder uses the same foca this crate runs on.
pub use foca;

pub use exchange::{
    ListDigest, MAX_STATE_BYTES, MAX_STATE_FRAME, PING_TIMEOUT, STREAM_CONNECT_TIMEOUT,
    STREAM_TIMEOUT, StreamPurpose, StreamRequest,
};
pub use identity::NodeId;
pub use knowledge::{
    MAX_LTIME_AHEAD, MAX_ORPHAN_INTENTS, MAX_PENDING_TAGS, MAX_TAGS_VERSION_AHEAD,
};
pub use node::{
    Counters, EARLY_SYNC_CHECK, EARLY_SYNC_ROUNDS, MAX_DATAGRAM, MAX_PENDING_SYNC_REPLIES,
    MAX_SOLICITED_SYNCS, MAX_UNKNOWN_INTRODUCTIONS, MemberEvent, Node, NodeConfig, NodeTimer,
    Output, PENDING_SYNC_REPLY_TTL, SOLICITED_SYNC_WINDOW, swim_config, sync_interval,
};

/// Every error this crate returns.
#[derive(Debug)]
pub enum GossipError {
    /// A gossip key is not 16, 24 or 32 bytes long.
    BadKey(usize),
    /// A packet did not decrypt with our key (or failed to seal).
    Crypto,
    /// Something could not be encoded.
    Encode(String),
    /// A packet or broadcast could not be decoded.
    Decode(String),
    /// Encoded tags exceed 512 bytes.
    TagsTooLarge(usize),
    /// foca refused a packet or call.
    Swim(String),
    /// A packet was dropped on purpose: a forged source, a stranger's request, tags for
    /// another member.
    Rejected(&'static str),
    /// The gossip task has stopped.
    Stopped,
    /// Socket I/O failed.
    Io(String),
    /// A keyring operation was refused.
    Keyring(caravan_agent_core::keyring::KeyringError),
}

impl std::fmt::Display for GossipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GossipError::BadKey(n) => write!(f, "key size must be 16, 24 or 32 bytes, got {n}"),
            GossipError::Crypto => f.write_str("packet did not decrypt with the gossip key"),
            GossipError::Encode(e) => write!(f, "encode: {e}"),
            GossipError::Decode(e) => write!(f, "decode: {e}"),
            GossipError::TagsTooLarge(n) => {
                write!(f, "encoded tags are {n} bytes; the limit is 512")
            }
            GossipError::Swim(e) => write!(f, "swim: {e}"),
            GossipError::Rejected(why) => write!(f, "rejected: {why}"),
            GossipError::Stopped => f.write_str("gossip has stopped"),
            GossipError::Io(e) => write!(f, "io: {e}"),
            GossipError::Keyring(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GossipError {}

impl From<foca::Error> for GossipError {
    fn from(e: foca::Error) -> Self {
        GossipError::Swim(e.to_string())
    }
}
