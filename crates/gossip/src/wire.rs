//! What travels besides foca's own messages: the packet envelope, tag and intent broadcasts, and
//! AES-GCM encryption of whole packets.

use std::collections::BTreeMap;

use aes_gcm::aead::generic_array::typenum::U12;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use serde::{Deserialize, Serialize};

use crate::GossipError;

/// Envelope kind: a foca packet follows.
pub const KIND_FOCA: u8 = 0;
/// Envelope kind: a [`TagsMsg`] pushed to one member.
pub const KIND_TAGS_PUSH: u8 = 1;
/// Envelope kind: a request for the receiver's tags (answered with a push).
pub const KIND_TAGS_PULL: u8 = 2;

/// Envelope kind: part of a member list (anti-entropy push/pull); first payload byte is 1 when
/// the sender wants the receiver's list back.
pub const KIND_SYNC: u8 = 3;

/// Envelope kind: a whole member list exchanged over a reliable stream ([`StateMsg`]); the
/// first payload byte is 1 when the sender wants the receiver's list back.
pub const KIND_STATE: u8 = 4;

/// Stream frame kind: a probe's fallback ping ([`PingMsg`]), answered with a [`PongMsg`].
pub const KIND_PING: u8 = 5;

/// Stream frame kind: the answer to a [`PingMsg`].
pub const KIND_PONG: u8 = 6;

/// memberlist's TCP fallback ping: a member whose probe went unanswered by datagram is also
/// pinged over a stream, so a lossy or UDP-blocked path does not get it suspected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingMsg {
    /// The pinging member (its address's IP must be the stream's source IP).
    pub sender: crate::NodeId,
    /// The identity probed: a member answers only for its current one.
    pub target: crate::NodeId,
    /// A number the pinging member chose for this ping alone, echoed by the pong: a pong
    /// recorded once answers no other ping.
    pub nonce: u64,
}

/// The answer to a [`PingMsg`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PongMsg {
    /// The member that was pinged.
    pub sender: crate::NodeId,
    /// The member that pinged it.
    pub pinger: crate::NodeId,
    /// The ping's nonce.
    pub nonce: u64,
}

/// A node's member list as it travels over a stream (push/pull): who sends it, every active
/// member with its incarnation (the sender last), and the sender's Lamport clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMsg {
    /// The sending member's identity (its gossip address: the stream's source IP must match).
    pub sender: crate::NodeId,
    /// Active members and their incarnations.
    pub entries: Vec<(crate::NodeId, u16)>,
    /// The sender's Lamport clock.
    pub ltime: u64,
}

/// Largest encoded tag set, as Serf's `MetaMaxSize`.
pub const MAX_TAGS_BYTES: usize = 512;

/// Bytes encryption adds to a packet: version, nonce and tag.
pub const ENCRYPTION_OVERHEAD: usize = 1 + 12 + 16;

/// A member's tags, versioned by the member itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsMsg {
    /// The member.
    pub name: String,
    /// The member's generation when it set these tags.
    pub generation: u64,
    /// Bumped on every change.
    pub version: u64,
    /// The tags.
    pub tags: BTreeMap<String, String>,
}

/// Hashes a tag message's parts, owned ([`TagsMsg`]) or borrowed ([`TagsRef`]) alike.
pub(crate) fn hash_tags<'a, H: std::hash::Hasher>(
    state: &mut H,
    name: &str,
    generation: u64,
    version: u64,
    tags: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) {
    use std::hash::Hash;
    name.hash(state);
    generation.hash(state);
    version.hash(state);
    state.write_usize(tags.len());
    for (k, v) in tags {
        k.hash(state);
        v.hash(state);
    }
}

impl std::hash::Hash for TagsMsg {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let tags = self.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        hash_tags(state, &self.name, self.generation, self.version, tags);
    }
}

/// A [`TagsMsg`] as it arrives, borrowing its strings from the packet (the same encoding: a
/// map is encoded as a sequence of pairs), so a message already known costs no allocation.
#[derive(Debug, Deserialize)]
pub(crate) struct TagsRef<'a> {
    /// The member.
    pub name: &'a str,
    /// Its generation.
    pub generation: u64,
    /// Its version.
    pub version: u64,
    /// The tags, in the order they came (sorted when a node sent them).
    #[serde(borrow)]
    pub tags: Vec<(&'a str, &'a str)>,
}

/// The head of a [`TagsMsg`] as it arrives (the fields before the tags): enough to tell a copy of
/// what a node holds from news without reading (or allocating for) the tags.
#[derive(Debug, Deserialize)]
pub(crate) struct TagsHead<'a> {
    /// The member.
    pub name: &'a str,
    /// Its generation.
    pub generation: u64,
    /// Its version.
    pub version: u64,
}

impl TagsRef<'_> {
    /// Whether `msg` says the same.
    pub(crate) fn same_as(&self, msg: &TagsMsg) -> bool {
        self.name == msg.name
            && self.generation == msg.generation
            && self.version == msg.version
            && self.tags.len() == msg.tags.len()
            && self
                .tags
                .iter()
                .zip(&msg.tags)
                .all(|((k, v), (mk, mv))| k == mk && v == mv)
    }

    /// An owned copy.
    pub(crate) fn to_owned(&self) -> TagsMsg {
        TagsMsg {
            name: self.name.to_string(),
            generation: self.generation,
            version: self.version,
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl TagsMsg {
    /// Whether this is newer than `other` (same member assumed).
    pub fn newer_than(&self, other: &TagsMsg) -> bool {
        (self.generation, self.version) > (other.generation, other.version)
    }
}

/// Serf's join/leave intents, ordered by a Lamport time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentKind {
    /// The member is (still) here: refutes an older leave.
    Join,
    /// The member is leaving, or an operator force-left it.
    Leave,
}

/// An intent about a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentMsg {
    /// The member.
    pub name: String,
    /// Lamport time of the intent.
    pub ltime: u64,
    /// Join or leave.
    pub kind: IntentKind,
    /// With a leave: remove the member from every list at once.
    pub prune: bool,
}

/// A custom foca broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    /// A member's tags.
    Tags(TagsMsg),
    /// A join or leave intent.
    Intent(IntentMsg),
}

impl Broadcast {
    /// Encodes with postcard.
    pub fn encode(&self) -> Result<Vec<u8>, GossipError> {
        postcard::to_stdvec(self).map_err(|e| GossipError::Encode(e.to_string()))
    }

    /// Decodes with postcard.
    pub fn decode(bytes: &[u8]) -> Result<Broadcast, GossipError> {
        postcard::from_bytes(bytes).map_err(|e| GossipError::Decode(e.to_string()))
    }
}

/// Identifies a broadcast in foca's backlog, so a newer one replaces an older one still in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BroadcastKey {
    /// Tags of `name` at `(generation, version)`, the member's own or relayed.
    Tags(String, u64, u64, Origin),
    /// Intent about `name` at `ltime`.
    Intent(String, u64),
}

/// Whose broadcast a node sends: its own (sent foca's configured number of times) or one it
/// relays (its tags relayed [`RELAYED_TAGS_SHARE`] as often).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The node's own.
    Own,
    /// Heard from a member and passed on.
    Relayed,
}

/// Relayed tags are sent this fraction (1/n) of foca's configured transmissions, and at least
/// [`MIN_RELAYED_TAGS_TRANSMISSIONS`] times.
///
/// Tags have other ways to every member: a member that learns another without its tags pulls
/// them from it, a join's member list carries them, and every member re-broadcasts its own
/// every `tags_interval`. So their epidemic need not reach every member
/// by itself, and it is the costliest one a pool runs: every member's tags are news to nearly
/// every other member, each relayed `k` times, N²·k copies heard while a pool forms (at 10,000
/// members and the 24 transmissions configured then, most of what a simulated pool did once
/// its joins were over). With a quarter, an epidemic still misses only about e^-k of the
/// pairs (0.7 % at k = 5, 20 transmissions at 10,000 members; 1.8 % at k = 4, from 1,000 to
/// 9,999), which the pulls and re-broadcasts repair.
pub const RELAYED_TAGS_SHARE: u8 = 4;

/// The fewest transmissions of relayed tags (see [`RELAYED_TAGS_SHARE`]).
pub const MIN_RELAYED_TAGS_TRANSMISSIONS: u8 = 3;

impl foca::Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (BroadcastKey::Tags(a, ga, va, _), BroadcastKey::Tags(b, gb, vb, _)) => {
                a == b && (ga, va) > (gb, vb)
            }
            (BroadcastKey::Intent(a, la), BroadcastKey::Intent(b, lb)) => a == b && la > lb,
            _ => false,
        }
    }

    /// One slot per member and kind (its tags, its intents): a node hands foca only news (see
    /// `knowledge::Handler`), which replaces the pending item about the same member in
    /// O(1), and the backlog stays bounded while thousands of members join (every node relays
    /// every new member's tags). A collision of two members' slots (a 64-bit hash) only drops a
    /// relay; the member's periodic re-broadcast and the pull on learning it still carry its tags.
    fn slot(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        match self {
            BroadcastKey::Tags(name, ..) => (0u8, name).hash(&mut h),
            BroadcastKey::Intent(name, _) => (1u8, name).hash(&mut h),
        }
        Some(h.finish())
    }

    /// Relayed tags: [`RELAYED_TAGS_SHARE`]; everything else as configured.
    fn max_transmissions(&self, configured: std::num::NonZeroU8) -> std::num::NonZeroU8 {
        match self {
            BroadcastKey::Tags(.., Origin::Relayed) => {
                let share = (configured.get() / RELAYED_TAGS_SHARE)
                    .max(MIN_RELAYED_TAGS_TRANSMISSIONS)
                    .min(configured.get());
                std::num::NonZeroU8::new(share).unwrap_or(configured)
            }
            _ => configured,
        }
    }
}

enum Aead3 {
    A128(Box<Aes128Gcm>),
    A192(Box<AesGcm<Aes192, U12>>),
    A256(Box<Aes256Gcm>),
}

/// AES-GCM over whole packets: `[version 1][nonce 12][ciphertext][tag 16]`, a random nonce per
/// packet, the key length choosing AES-128, -192 or -256.
pub struct Cipher(Aead3);

impl Cipher {
    /// A cipher for a 16, 24 or 32-byte key.
    pub fn new(key: &[u8]) -> Result<Cipher, GossipError> {
        let bad = |_| GossipError::BadKey(key.len());
        Ok(Cipher(match key.len() {
            16 => Aead3::A128(Box::new(Aes128Gcm::new_from_slice(key).map_err(bad)?)),
            24 => Aead3::A192(Box::new(AesGcm::new_from_slice(key).map_err(bad)?)),
            32 => Aead3::A256(Box::new(Aes256Gcm::new_from_slice(key).map_err(bad)?)),
            n => return Err(GossipError::BadKey(n)),
        }))
    }

    /// Encrypts a packet.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, GossipError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = match &self.0 {
            Aead3::A128(c) => c.encrypt(&nonce, plain),
            Aead3::A192(c) => c.encrypt(&nonce, plain),
            Aead3::A256(c) => c.encrypt(&nonce, plain),
        }
        .map_err(|_| GossipError::Crypto)?;
        let mut out = Vec::with_capacity(ENCRYPTION_OVERHEAD + plain.len());
        out.push(1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a packet; `None` when it was not sealed with this key (or was altered).
    pub fn open(&self, packet: &[u8]) -> Option<Vec<u8>> {
        if packet.len() < ENCRYPTION_OVERHEAD || packet[0] != 1 {
            return None;
        }
        let nonce = Nonce::from_slice(&packet[1..13]);
        let body = &packet[13..];
        match &self.0 {
            Aead3::A128(c) => c.decrypt(nonce, body),
            Aead3::A192(c) => c.decrypt(nonce, body),
            Aead3::A256(c) => c.decrypt(nonce, body),
        }
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Invalidates;

    #[test]
    fn seal_open_every_key_size() {
        for len in [16, 24, 32] {
            let c = Cipher::new(&vec![7u8; len]).unwrap();
            let sealed = c.seal(b"hello").unwrap();
            assert_eq!(sealed.len(), 5 + ENCRYPTION_OVERHEAD);
            assert_eq!(c.open(&sealed).unwrap(), b"hello");
            let mut flipped = sealed.clone();
            flipped[20] ^= 1;
            assert!(c.open(&flipped).is_none());
            let other = Cipher::new(&vec![8u8; len]).unwrap();
            assert!(other.open(&sealed).is_none());
        }
        assert!(matches!(Cipher::new(&[0; 5]), Err(GossipError::BadKey(5))));
        let c = Cipher::new(&[1; 16]).unwrap();
        assert!(c.open(b"short").is_none());
    }

    #[test]
    fn newer_keys_invalidate_older() {
        let t = |g, v| BroadcastKey::Tags("a".into(), g, v, Origin::Relayed);
        assert!(t(1, 2).invalidates(&t(1, 1)));
        assert!(t(2, 0).invalidates(&t(1, 9)));
        assert!(!t(1, 1).invalidates(&t(1, 1)));
        let own = BroadcastKey::Tags("a".into(), 1, 3, Origin::Own);
        assert!(own.invalidates(&t(1, 2)) && t(1, 4).invalidates(&own));
        assert!(!BroadcastKey::Tags("b".into(), 9, 9, Origin::Own).invalidates(&t(1, 1)));
        let i = |l| BroadcastKey::Intent("a".into(), l);
        assert!(i(3).invalidates(&i(2)));
        assert!(!i(3).invalidates(&t(0, 0)));
    }

    #[test]
    fn relayed_tags_are_sent_a_share_of_the_configured_times() {
        fn check(configured: u8, origin: Origin, expected: u8) {
            let key = BroadcastKey::Tags("a".into(), 1, 1, origin);
            let configured = std::num::NonZeroU8::new(configured).unwrap();
            assert_eq!(
                key.max_transmissions(configured).get(),
                expected,
                "{configured} {origin:?}"
            );
        }
        check(24, Origin::Relayed, 6);
        check(24, Origin::Own, 24);
        check(18, Origin::Relayed, 4);
        check(9, Origin::Relayed, 3);
        check(2, Origin::Relayed, 2);
        check(1, Origin::Relayed, 1);
        let intent = BroadcastKey::Intent("a".into(), 1);
        let configured = std::num::NonZeroU8::new(24).unwrap();
        assert_eq!(intent.max_transmissions(configured).get(), 24);
    }

    #[test]
    fn broadcasts_round_trip() {
        let b = Broadcast::Intent(IntentMsg {
            name: "n".into(),
            ltime: 9,
            kind: IntentKind::Leave,
            prune: true,
        });
        assert_eq!(Broadcast::decode(&b.encode().unwrap()).unwrap(), b);
        assert!(Broadcast::decode(&[0xff, 0xff]).is_err());
    }
}
