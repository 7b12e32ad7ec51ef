//! Reliable state exchange: a node's member list and the answer travel as one frame each over a
//! stream (TCP on the gossip port, as memberlist's push/pull does), sealed with the gossip key
//! when one is set. A join and every anti-entropy round use it; the datagram member list
//! ([`crate::wire::KIND_SYNC`]) remains the fallback when the stream cannot be had. The node
//! stays sans-I/O: it hands the driver [`StreamRequest`]s and takes frames back.

use std::net::SocketAddr;
use std::time::Duration;

use crate::GossipError;
use crate::identity::NodeId;
use crate::node::{Node, canonical};
use std::sync::Arc;

use crate::knowledge::intern_tags_ref;
use crate::wire::{KIND_PING, KIND_PONG, KIND_STATE, PingMsg, PongMsg, StateMsg, TagsMsg, TagsRef};

/// Largest member-list frame a node sends or accepts on a stream (before sealing): about 100,000
/// members with 16-byte names. A node with a longer list sends as many members as fit; a frame
/// announcing more is refused before it is read.
pub const MAX_STATE_BYTES: usize = 4 << 20;

/// Largest frame on the wire: a state and the sealing overhead.
pub const MAX_STATE_FRAME: usize = MAX_STATE_BYTES + crate::wire::ENCRYPTION_OVERHEAD;

/// How long opening a stream may take before the exchange falls back to datagrams.
pub const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a whole exchange may take, either side (memberlist's `TCPTimeout`).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// An exchange of member lists the driver should run: open a stream to `to` (its gossip
/// address), write `body` as one frame, read one frame back and give it to
/// [`Node::handle_stream_reply`]; if no reply comes, call [`Node::stream_failed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// The member's gossip address (the stream goes to the same port over TCP).
    pub to: SocketAddr,
    /// The frame to write, sealed when the node has a key.
    pub body: Vec<u8>,
    /// What the stream is for: how long it may take and what its failure means.
    pub purpose: StreamPurpose,
}

/// What a [`StreamRequest`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamPurpose {
    /// An exchange of member lists, within [`STREAM_TIMEOUT`]; when it gets no answer the
    /// driver calls [`Node::stream_failed`] (the lists then go by datagrams).
    Exchange,
    /// A probe's fallback ping (memberlist's TCP ping), within [`PING_TIMEOUT`]; its answer goes
    /// to [`Node::handle_ping_reply`], and its failure needs nothing (the probe fails as it
    /// would have without it).
    Ping,
}

impl StreamPurpose {
    /// How long the whole stream may take, connecting included.
    pub fn timeout(self) -> Duration {
        match self {
            StreamPurpose::Exchange => STREAM_TIMEOUT,
            StreamPurpose::Ping => PING_TIMEOUT,
        }
    }
}

/// How long a fallback ping may take. It starts at a probe's indirect stage, half a probe period
/// in; an answer after the probe ended no longer counts (memberlist's ping lasts to the probe's
/// end). One second bounds the ping for a healthy node; Lifeguard stretches an unhealthy node's
/// probes beyond it.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What may follow a frame's [`StateMsg`] (absent in frames from nodes that predate it, and
/// ignored by them): whether the sender wants tags with the answer, and the tags of the members
/// listed. A join asks for them, so the joiner learns the pool's tags with its members instead of
/// pulling them one datagram each (N pulls and N answers per join; N² while a pool forms);
/// anti-entropy rounds do not, as they would triple their frames.
#[derive(Debug, Default, serde::Deserialize)]
struct StateExtra<'a> {
    ask_tags: bool,
    #[serde(borrow)]
    tags: Vec<TagsRef<'a>>,
}

/// [`StateExtra`] as it is written: the tags borrowed from the node's table, not copied.
#[derive(serde::Serialize)]
struct StateExtraOut<'a> {
    ask_tags: bool,
    tags: Vec<&'a TagsMsg>,
}

/// What a frame [`Node::state_frame`] makes holds, besides the members.
#[derive(Default)]
pub(crate) struct FrameSpec<'a> {
    /// The sender wants an answer.
    pub want_reply: bool,
    /// The answer should carry the members' tags.
    pub ask_tags: bool,
    /// Carry the known tags of the members listed.
    pub give_tags: bool,
    /// Leave out what the asker's list named (an answer; see [`PeerList`]).
    pub known: Option<&'a PeerList>,
    /// List this node alone, and its [`ListDigest`] (a digest round's ask and answer).
    pub digest: bool,
    /// With `digest`, in an answer: the asker's digest. When it differs from this node's the
    /// answer carries its per-bucket sums (see [`Buckets`], as many buckets as the longer of
    /// the two lists calls for).
    pub asker: Option<ListDigest>,
    /// List only the members in these buckets, and name them (see [`Buckets`]).
    pub only: Option<&'a BucketFilter>,
}

/// A stream frame, authenticated and decoded.
pub(crate) enum Opened {
    /// A member list.
    State(Received),
    /// A probe's fallback ping.
    Ping(PingMsg),
    /// The answer to one.
    Pong(PongMsg),
}

/// What one frame's decoding found.
pub(crate) struct Received {
    want_reply: bool,
    msg: StateMsg,
    /// The sender asks for tags with the answer.
    ask_tags: bool,
    /// The tags that came with the list, as the process's shared copies.
    tags: Vec<Arc<TagsMsg>>,
    /// The digest of the sender's member list, when the frame is a digest round's (it then
    /// lists the sender alone) or restricted to some buckets.
    digest: Option<ListDigest>,
    /// What trails the digest, from nodes that know [`Buckets`].
    buckets: Option<Buckets>,
}

/// A digest of a member list: how many active members it holds (the node itself included) and
/// the sum of their identities' mixed stable hashes (`NodeId::stable_hash`), so the order does not matter.
/// Anti-entropy rounds send it instead of the list (it trails the frame's `StateExtra`, where
/// older nodes neither send nor read it): members that agree exchange 30 bytes, not N entries;
/// when the digests differ the asker follows with a whole list, as before. Incarnations are left
/// out (SWIM's gossip and refutations carry them; in a large pool some refutation is always in
/// flight, so digests with them would rarely agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListDigest {
    /// Active members, the node itself included.
    pub members: u32,
    /// The sum of their mixed stable hashes.
    pub sum: u64,
}

/// Most buckets a digest answer splits a member list into, when its digest differs from the
/// asker's (the asker then sends only the members of the buckets whose sums differ): 4,096 sums
/// of about five bytes each.
pub const MAX_DIGEST_BUCKETS: usize = 4096;

/// How many buckets a list of `members` is split into: two to four members each (a quarter of
/// the count, rounded up to a power of two), at most [`MAX_DIGEST_BUCKETS`].
fn bucket_count(members: u32) -> usize {
    (members as usize / 4)
        .next_power_of_two()
        .clamp(1, MAX_DIGEST_BUCKETS)
}

/// What trails a frame's [`ListDigest`], from nodes that know it (older nodes stop reading at the
/// digest). When an anti-entropy round's digests differ, the answer carries the answerer's sum
/// per bucket of its list (members are spread over buckets by their mixed stable hash), and the
/// asker then sends only the members of the buckets whose sums differ, naming those buckets, so
/// the answer lists only those buckets' members the asker lacks. A member missing one member
/// used to send its whole list (10,000 entries, 400 KB, decoded and looked up one by one at the
/// other end) to repair it; now a handful, after 16 KB of sums. A digest answer whose digest
/// agreed carries an empty part (3 bytes): an asker whose list changed since it asked then ends
/// the round (the answerer held everything the asker held when it asked), where an answer
/// without the part (an older node) is followed by the whole list.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Buckets {
    /// A digest round's answer: the answerer's sum per bucket (a power of two of them, at most
    /// [`MAX_DIGEST_BUCKETS`]), four bytes each, little-endian.
    #[serde(deserialize_with = "bounded")]
    sums: Vec<[u8; 4]>,
    /// A list restricted to some buckets: how many buckets the list was split into (a power of
    /// two; 0 in a digest answer) ...
    of: u32,
    /// ... and the ones it covers, which the answer covers too (at most
    /// [`MAX_DIGEST_BUCKETS`]).
    #[serde(deserialize_with = "bounded")]
    wanted: Vec<u32>,
}

/// A sequence from a peer of at most [`MAX_DIGEST_BUCKETS`] items: a longer one is refused
/// when its length is read, before anything is allocated for it.
fn bounded<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Bounded<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {MAX_DIGEST_BUCKETS} items")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            if seq.size_hint().is_some_and(|n| n > MAX_DIGEST_BUCKETS) {
                return Err(serde::de::Error::invalid_length(
                    seq.size_hint().unwrap_or(0),
                    &self,
                ));
            }
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX_DIGEST_BUCKETS {
                    return Err(serde::de::Error::invalid_length(out.len() + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded(std::marker::PhantomData))
}

/// The buckets a list restricted by [`Buckets::wanted`] covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BucketFilter {
    mask: u64,
    wanted: Vec<bool>,
}

impl BucketFilter {
    /// The filter `of` buckets covering `wanted`; `None` unless `of` is a power of two up to
    /// [`MAX_DIGEST_BUCKETS`] and every wanted bucket is below it.
    fn new(of: u32, wanted: &[u32]) -> Option<BucketFilter> {
        let of = of as usize;
        if !of.is_power_of_two() || of > MAX_DIGEST_BUCKETS || wanted.len() > of {
            return None;
        }
        let mut set = vec![false; of];
        for &w in wanted {
            *set.get_mut(w as usize)? = true;
        }
        Some(BucketFilter {
            mask: of as u64 - 1,
            wanted: set,
        })
    }

    /// Whether `id` falls in a wanted bucket.
    fn holds(&self, id: &NodeId) -> bool {
        self.wanted[bucket_of(id, self.mask)]
    }

    /// The wire form: how many buckets, and the wanted ones.
    fn to_wire(&self) -> Buckets {
        Buckets {
            sums: Vec::new(),
            of: self.wanted.len() as u32,
            wanted: (0u32..)
                .zip(&self.wanted)
                .filter(|(_, w)| **w)
                .map(|(i, _)| i)
                .collect(),
        }
    }
}

/// The bucket `id` falls in, out of `mask + 1`.
fn bucket_of(id: &NodeId, mask: u64) -> usize {
    (mix(id.stable_hash()) & mask) as usize
}

/// splitmix64's finaliser: spreads a hash's bits before it is summed.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The members an asker's list named, with their incarnations, by identity record: an answer
/// leaves out every member the asker named with the incarnation the answerer knows or a newer
/// one, as applying it there changes nothing (an alive entry never overrides a state of the same
/// incarnation). So an anti-entropy round between members that agree carries one list, not two:
/// the answer is the answerer alone, plus what the asker lacks. The answer is still a member list
/// as before, so an older node that asks applies it as it always did.
pub(crate) struct PeerList(hashbrown::HashMap<usize, u16>);

impl PeerList {
    fn of(entries: &[(NodeId, u16)]) -> PeerList {
        PeerList(
            entries
                .iter()
                .map(|(id, incarnation)| (id.record_key(), *incarnation))
                .collect(),
        )
    }

    /// Whether the list named `id` with `incarnation` or a newer one.
    fn names(&self, id: &NodeId, incarnation: u16) -> bool {
        self.0
            .get(&id.record_key())
            .is_some_and(|theirs| *theirs >= incarnation)
    }
}

impl Node {
    /// Starts an anti-entropy round with `to`: its digest first over a stream (see
    /// [`ListDigest`]); by datagrams, whole, when streams are off.
    pub(crate) fn anti_entropy(&mut self, to: SocketAddr) {
        self.open_exchange(to, false, true);
    }

    /// The sum of each of `len` buckets of this node's member list (itself included), as
    /// [`Buckets::sums`] carries them.
    fn bucket_sums(&self, len: usize) -> Vec<u32> {
        let mask = len as u64 - 1;
        let mut sums = vec![0u32; len];
        let me = self.identity();
        for id in std::iter::once(me).chain(self.swim.iter_members().map(|m| m.id())) {
            let h = mix(id.stable_hash());
            let sum = &mut sums[(h & mask) as usize];
            *sum = sum.wrapping_add((h >> 32) as u32);
        }
        sums
    }

    /// The buckets whose sums differ from `theirs` (a digest answer's), as a filter; `None` when
    /// `theirs` is not a power of two of at most [`MAX_DIGEST_BUCKETS`] sums.
    fn differing_buckets(&self, theirs: &[[u8; 4]]) -> Option<BucketFilter> {
        let len = theirs.len();
        if !len.is_power_of_two() || len > MAX_DIGEST_BUCKETS {
            return None;
        }
        let mine = self.bucket_sums(len);
        let wanted: Vec<u32> = (0u32..)
            .zip(mine.iter().zip(theirs))
            .filter(|(_, (a, b))| a.to_le_bytes() != **b)
            .map(|(i, _)| i)
            .collect();
        BucketFilter::new(len as u32, &wanted)
    }

    /// The digest of this node's member list: its active members and itself.
    pub fn list_digest(&self) -> ListDigest {
        let mut digest = ListDigest {
            members: 1,
            sum: mix(self.identity().stable_hash()),
        };
        for m in self.swim.iter_members() {
            digest.members = digest.members.saturating_add(1);
            digest.sum = digest.sum.wrapping_add(mix(m.id().stable_hash()));
        }
        digest
    }

    /// Starts a push/pull with `to`: over a stream, or by datagrams when streams are off. With
    /// `ask_tags` (a join) the answer is asked to carry the members' tags.
    pub(crate) fn push_pull(&mut self, to: SocketAddr, ask_tags: bool) {
        self.open_exchange(to, ask_tags, false);
    }

    /// Opens an exchange with `to` that wants an answer: the frame [`Self::state_frame`] makes
    /// (`ask_tags`, `digest` as there) over a stream, or the whole list by datagrams when
    /// streams are off or no frame can be made.
    fn open_exchange(&mut self, to: SocketAddr, ask_tags: bool, digest: bool) {
        self.open_exchange_with(
            to,
            FrameSpec {
                want_reply: true,
                ask_tags,
                digest,
                ..FrameSpec::default()
            },
        );
    }

    /// Opens an exchange with `to` whose frame is `spec`'s over a stream, or the whole list by
    /// datagrams when streams are off or no frame can be made.
    fn open_exchange_with(&mut self, to: SocketAddr, spec: FrameSpec<'_>) {
        if !self.cfg.streams {
            self.send_member_list(to, true);
            return;
        }
        match self.state_frame(spec) {
            Some(body) => {
                self.counters.streams_out += 1;
                self.out.streams.push(StreamRequest {
                    to,
                    body,
                    purpose: StreamPurpose::Exchange,
                });
            }
            None => self.send_member_list(to, true),
        }
    }

    /// This node's member list as one frame:
    /// `[KIND_STATE][want_reply][StateMsg][StateExtra][ListDigest][Buckets]`, sealed; the extra
    /// part only when tags are asked for (`ask_tags`) or given (`give_tags`: the known tags of
    /// the members listed) or a digest follows; the digest and the buckets only as `spec` says.
    /// Members and tags beyond [`MAX_STATE_BYTES`] are left out. An answer leaves out what the
    /// asker's list already named (`known`, see [`PeerList`]). With `digest` the frame lists
    /// this node alone and carries the digest of its list after the extra part (a digest
    /// round's ask and answer), and the per-bucket sums too when the `asker`'s digest differs;
    /// with `only`, the members of those buckets, the digest and the buckets named.
    pub(crate) fn state_frame(&mut self, spec: FrameSpec<'_>) -> Option<Vec<u8>> {
        let FrameSpec {
            want_reply,
            ask_tags,
            give_tags,
            known,
            digest,
            asker,
            only,
        } = spec;
        let list_digest = (digest || only.is_some()).then(|| self.list_digest());
        let buckets = match only {
            Some(filter) => Some(filter.to_wire()),
            None if digest && asker.is_some_and(|a| Some(a) != list_digest) => Some(Buckets {
                sums: self
                    .bucket_sums(bucket_count(
                        list_digest
                            .map_or(1, |d| d.members)
                            .max(asker.map_or(1, |d| d.members)),
                    ))
                    .iter()
                    .map(|s| s.to_le_bytes())
                    .collect(),
                ..Buckets::default()
            }),
            // An answer that agreed says so with an empty part (see [`Buckets`]).
            None if digest && !want_reply => Some(Buckets::default()),
            None => None,
        };
        let me = self.identity().clone();
        let mut entries = Vec::with_capacity(if digest || only.is_some() {
            1
        } else {
            self.swim.num_members() + 1
        });
        // addr (≤ 19) + name length (≤ 5) + generation (≤ 10) + incarnation (≤ 3).
        let mut size = 64
            + me.name().len()
            + buckets
                .as_ref()
                .map_or(0, |b| 5 * b.sums.len() + 3 * b.wanted.len());
        for m in self.swim.iter_members().filter(|_| !digest) {
            if known.is_some_and(|k| k.names(m.id(), m.incarnation())) {
                continue;
            }
            if only.is_some_and(|f| !f.holds(m.id())) {
                continue;
            }
            size += 40 + m.id().name().len();
            if size > MAX_STATE_BYTES {
                break;
            }
            entries.push((m.id().clone(), m.incarnation()));
        }
        entries.push((me.clone(), 0));
        let knowledge = self.knowledge.lock();
        let mut extra = StateExtraOut {
            ask_tags,
            tags: Vec::new(),
        };
        if give_tags {
            for (id, _) in &entries {
                let Some(tags) = knowledge.tags.get(id.name()) else {
                    continue;
                };
                // name (≤ 1 + name) + generation and version (≤ 20) + the tags themselves.
                size += 24
                    + tags.name.len()
                    + tags
                        .tags
                        .iter()
                        .map(|(k, v)| 2 + k.len() + v.len())
                        .sum::<usize>();
                if size > MAX_STATE_BYTES {
                    break;
                }
                extra.tags.push(tags);
            }
        }
        let msg = StateMsg {
            sender: me,
            entries,
            ltime: knowledge.ltime,
        };
        let mut plain = vec![KIND_STATE, u8::from(want_reply)];
        let encoded = postcard::to_io(&msg, &mut plain).and_then(|plain| {
            if extra.ask_tags || !extra.tags.is_empty() || list_digest.is_some() {
                let plain = postcard::to_io(&extra, plain)?;
                let Some(d) = &list_digest else {
                    return Ok(());
                };
                let plain = postcard::to_io(d, plain)?;
                match &buckets {
                    Some(b) => postcard::to_io(b, plain).map(|_| ()),
                    None => Ok(()),
                }
            } else {
                Ok(())
            }
        });
        drop(extra);
        drop(knowledge);
        if let Err(e) = encoded {
            tracing::debug!(target: "gossip", error = %e, "state encode");
            return None;
        }
        let frame = match &self.keyring {
            Some(c) => c.seal(&plain).ok()?,
            None => plain,
        };
        self.counters.bytes_out += frame.len() as u64;
        Some(frame)
    }

    /// A frame of a kind this stream does not carry: counted as malformed.
    pub(crate) fn wrong_kind(&mut self, what: &'static str) -> GossipError {
        self.counters.malformed += 1;
        GossipError::Decode(what.into())
    }

    /// Authenticates (with a key) and decodes one frame; `None`-free: errors say why.
    pub(crate) fn open_stream(&mut self, frame: &[u8]) -> Result<Opened, GossipError> {
        self.counters.bytes_in += frame.len() as u64;
        if frame.len() > MAX_STATE_FRAME {
            self.counters.malformed += 1;
            return Err(GossipError::Rejected("state frame too large"));
        }
        let plain = self.unseal(frame)?;
        let plain: &[u8] = &plain;
        let decoded = match plain {
            [KIND_STATE, want, rest @ ..] if *want <= 1 => {
                postcard::take_from_bytes::<StateMsg>(rest)
                    .and_then(|(msg, tail)| {
                        let (extra, rest) = if tail.is_empty() {
                            (StateExtra::default(), tail)
                        } else {
                            postcard::take_from_bytes::<StateExtra>(tail)?
                        };
                        let (digest, buckets) = if rest.is_empty() {
                            (None, None)
                        } else {
                            let (digest, rest) = postcard::take_from_bytes::<ListDigest>(rest)?;
                            let buckets = if rest.is_empty() {
                                None
                            } else {
                                Some(postcard::from_bytes::<Buckets>(rest)?)
                            };
                            (Some(digest), buckets)
                        };
                        Ok(Opened::State(Received {
                            want_reply: *want == 1,
                            msg,
                            ask_tags: extra.ask_tags,
                            tags: extra.tags.iter().map(intern_tags_ref).collect(),
                            digest,
                            buckets,
                        }))
                    })
                    .map_err(|e| GossipError::Decode(e.to_string()))
            }
            [KIND_PING, rest @ ..] => postcard::from_bytes::<PingMsg>(rest)
                .map(Opened::Ping)
                .map_err(|e| GossipError::Decode(e.to_string())),
            [KIND_PONG, rest @ ..] => postcard::from_bytes::<PongMsg>(rest)
                .map(Opened::Pong)
                .map_err(|e| GossipError::Decode(e.to_string())),
            _ => Err(GossipError::Decode("not a state frame".into())),
        };
        if decoded.is_err() {
            self.counters.malformed += 1;
        }
        decoded
    }

    /// A member list received on a stream a peer opened from `peer`. The list's sender must
    /// have the stream's source IP (its port is the peer's, not its gossip port). A member's
    /// list is applied whole; a stranger's introduces only the stranger itself, as its announce
    /// would. Returns the frame to answer with, when the sender wants one.
    pub fn handle_stream(
        &mut self,
        peer: SocketAddr,
        frame: &[u8],
        now: Duration,
    ) -> Result<Option<Vec<u8>>, GossipError> {
        let received = match self.open_stream(frame)? {
            Opened::State(received) => received,
            Opened::Ping(ping) => return self.answer_ping(peer, &ping),
            Opened::Pong(_) => return Err(self.wrong_kind("a pong opened a stream")),
        };
        self.counters.streams_in += 1;
        let Received {
            want_reply,
            msg,
            ask_tags,
            digest,
            buckets,
            ..
        } = received;
        let sender = msg.sender.clone();
        let sender_addr = canonical(sender.addr());
        // What the asker named, to leave out of the answer (taken before the list is applied).
        let known = want_reply.then(|| PeerList::of(&msg.entries));
        if sender_addr.ip() != canonical(peer).ip() {
            self.counters.spoofed += 1;
            return Err(GossipError::Rejected(
                "state sender is not the stream's source",
            ));
        }
        // A list restricted to some buckets names them; one that names them badly is refused.
        let only = match buckets.as_ref().filter(|b| b.of != 0) {
            None => None,
            Some(b) => match BucketFilter::new(b.of, &b.wanted) {
                Some(filter) => Some(filter),
                None => {
                    self.counters.malformed += 1;
                    return Err(GossipError::Decode("bad bucket filter".into()));
                }
            },
        };
        if sender_addr == canonical(self.identity().addr()) {
            return Err(GossipError::Rejected("state sent as this node"));
        }
        if self.is_member(sender_addr) {
            self.apply_state(msg, Vec::new(), now);
        } else {
            // A stranger (usually a joiner whose announce is still on the way): only itself,
            // broadcast as foca broadcasts a member its announce introduces.
            self.counters.unknown_sender += 1;
            let update = foca::Member::alive(sender);
            if let Err(e) = self
                .swim
                .apply_many(std::iter::once(update), true, &mut self.rt)
            {
                tracing::debug!(target: "gossip", error = %e, "stream introduction");
            }
            self.after_swim(now);
        }
        if !want_reply || self.leaving || !self.is_member(sender_addr) {
            return Ok(None);
        }
        // A digest round is answered with this node's digest (and its per-bucket sums when the
        // digests differ); a list with what it lacks (of the buckets it names, if it does).
        let digest_round = digest.is_some() && only.is_none();
        Ok(self.state_frame(FrameSpec {
            give_tags: ask_tags,
            known: known.as_ref(),
            digest: digest_round,
            asker: digest,
            only: only.as_ref(),
            ..FrameSpec::default()
        }))
    }

    /// The answer to an exchange this node started with `to`: applied whole (this node asked
    /// for it), provided it comes from the member at `to`.
    pub fn handle_stream_reply(
        &mut self,
        to: SocketAddr,
        frame: &[u8],
        now: Duration,
    ) -> Result<(), GossipError> {
        let received = match self.open_stream(frame)? {
            Opened::State(received) => received,
            Opened::Ping(_) | Opened::Pong(_) => {
                return Err(self.wrong_kind("a member-list stream answered with a ping or pong"));
            }
        };
        let Received {
            msg,
            tags,
            digest,
            buckets,
            ..
        } = received;
        if canonical(msg.sender.addr()) != canonical(to) {
            self.counters.spoofed += 1;
            return Err(GossipError::Rejected("state reply from another member"));
        }
        if buckets
            .as_ref()
            .is_some_and(|b| !b.sums.is_empty() && !b.sums.len().is_power_of_two())
        {
            self.counters.malformed += 1;
            return Err(GossipError::Decode("bad bucket sums".into()));
        }
        self.apply_state(msg, tags, now);
        // A digest round whose lists differ: the members of the buckets whose sums differ follow;
        // the answer carries what this node lacks there, and no digest, so this happens once per
        // round. An answer whose digest agreed with this node's list as it was when it asked
        // (empty sums; the list changed since) ends the round: the answerer held all of it. An
        // older node's answer (no sums part) is followed by the whole list.
        let Some(theirs) = digest else {
            return Ok(());
        };
        let same_now = theirs == self.list_digest();
        // A round that found nothing to repair (its digest's answer agreed) ends the early
        // rounds; one that repaired something does not, even though the two lists now agree:
        // the peer may lack what this node lacks while the pool is still forming. An older
        // node's answer (no sums part) agreed if the lists are the same now.
        let agreed = match &buckets {
            Some(b) => b.of == 0 && (b.sums.is_empty() || same_now),
            None => same_now,
        };
        if agreed {
            self.lists_agreed();
        }
        if buckets.as_ref().is_some_and(|b| b.of != 0) || same_now || self.leaving {
            return Ok(());
        }
        self.counters.digest_mismatches += 1;
        match buckets {
            None => self.push_pull(to, false),
            Some(b) => {
                if let Some(only) = self
                    .differing_buckets(&b.sums)
                    .filter(|_| !b.sums.is_empty())
                {
                    self.open_exchange_with(
                        to,
                        FrameSpec {
                            want_reply: true,
                            only: Some(&only),
                            ..FrameSpec::default()
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// An exchange with `to` got no answer on a stream (none could be opened, or it broke):
    /// the member lists go by datagrams instead.
    pub fn stream_failed(&mut self, to: SocketAddr, now: Duration) {
        self.counters.stream_failures += 1;
        self.early_round_failed();
        if !self.leaving {
            self.send_member_list(to, true);
        }
        self.after_swim(now);
    }

    /// Applies a member list, and the tags that came with it (an answer this node asked for):
    /// a member listed for the first time takes its tags from there instead of pulling them.
    fn apply_state(&mut self, msg: StateMsg, tags: Vec<Arc<TagsMsg>>, now: Duration) {
        self.knowledge.lock().witness_ltime(msg.ltime);
        // Shared copies: every node that learns a member's tags this way holds the same one.
        for t in tags {
            self.incoming_tags.insert_shared(t);
        }
        self.apply_entries(msg.entries, now);
        // Tags of members already listed: news only if newer than what is known.
        if !self.incoming_tags.is_empty() {
            let mut k = self.knowledge.lock();
            for t in self.incoming_tags.drain() {
                if k.table.get(&t.name).is_some() {
                    k.learn_shared_tags(t);
                }
            }
        }
    }

    /// Applies member-list entries as alive members (this node's own address skipped), without
    /// broadcasting them.
    pub(crate) fn apply_entries(&mut self, entries: Vec<(NodeId, u16)>, now: Duration) {
        let me = self.identity().addr();
        let updates = entries
            .into_iter()
            .filter(|(id, _)| id.addr() != me)
            .map(|(id, inc)| foca::Member::new(id, inc, foca::State::Alive));
        if let Err(e) = self.swim.apply_many(updates, false, &mut self.rt) {
            tracing::debug!(target: "gossip", error = %e, "state apply");
        }
        self.after_swim(now);
        // A whole member list notifies once per member it brings: the runtime's queues, drained
        // now, would keep room for all of them (a pool of N formed by joins kept N² such slots).
        if self.rt.backlog() == 0 {
            self.rt = foca::AccumulatingRuntime::new();
        }
    }
}
