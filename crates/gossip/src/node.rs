//! The sans-I/O gossip node: foca plus Caravan's member table and tags. Feed it packets and timer
//! events with the current time; take the packets to send, the timers to set and the member events
//! from [`Node::drain`]. The same node runs on UDP ([`crate::udp`]) and in the simulator
//! ([`crate::sim`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::member::{Member, MemberStatus, NOMAD_VERSIONS};
use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::GossipError;
pub use crate::exchange::StreamRequest;
use crate::identity::NodeId;
use crate::keyring::Keyring;
use crate::knowledge::{Handler, Knowledge};
use crate::table::IntentEffect;
use crate::wire::{
    Broadcast, ENCRYPTION_OVERHEAD, IntentKind, IntentMsg, KIND_FOCA, KIND_SYNC, KIND_TAGS_PULL,
    KIND_TAGS_PUSH, MAX_TAGS_BYTES, TagsMsg,
};

/// Largest datagram a node sends.
pub const MAX_DATAGRAM: usize = 1400;

/// Most members one foca packet from a sender that is not a known member may introduce (its
/// cluster updates beyond this are dropped; the sender itself comes on top). An announce carries
/// none and a join's feed is completed by the member-list exchange, so joins lose nothing, while
/// a stranger cannot fill the table: after its first packet it is a member, probed like any other.
/// A member-list exchange ([`crate::wire::KIND_SYNC`]) from a stranger introduces no member at all.
pub const MAX_UNKNOWN_INTRODUCTIONS: usize = 64;

/// No cluster update encodes in fewer bytes (an IPv4 address and port take at least six, the
/// name's length, the generation, the incarnation and the state one each): a foca packet of at
/// most `MAX_UNKNOWN_INTRODUCTIONS` times this many bytes cannot carry more updates than a stranger
/// may introduce, so its sender is not looked up (a look-up per packet was a tenth of a large
/// pool's steady state, where most packets are probes and acks of a few hundred bytes).
const MIN_UPDATE_BYTES: usize = 10;

/// Member-list requests from senders not known yet that are remembered, to be answered once the
/// sender becomes a member (a join's announce and its request may arrive in either order).
pub const MAX_PENDING_SYNC_REPLIES: usize = 16;

/// How long such a request waits for its sender to become a member.
pub const PENDING_SYNC_REPLY_TTL: Duration = Duration::from_secs(5);

/// Tag pulls from senders not known yet that are remembered, to be answered (with a push) once
/// the sender becomes a member: a member that learns of a new one by gossip pulls its tags, and
/// the new one may not have learned the puller yet. Members do not push their tags to every
/// member that comes up, so this is how such a puller gets them before the next re-broadcast.
pub const MAX_PENDING_TAG_PULLS: usize = 64;

/// Addresses this node asked for their member list during a join, whose replies are applied even
/// though the sender is not a member yet (one join call takes at most as many addresses:
/// [`crate::udp::MAX_JOIN_ADDRESSES`]).
pub const MAX_SOLICITED_SYNCS: usize = 64;

/// How long after a join the target's member list is accepted as a reply.
pub const SOLICITED_SYNC_WINDOW: Duration = Duration::from_secs(5);

/// Anti-entropy rounds a member runs early after it joins, at most, instead of waiting for its
/// first periodic round (up to [`sync_interval`]: 300 s at 10,000 members). A pool formed by
/// many joins at once (a fleet started together) leaves each member missing the few joins whose
/// broadcasts it did not get; a push/pull with a random member repairs them. The first round
/// waits until the member list stops growing; each later one waits twice as long as the one
/// before ([`EARLY_SYNC_CHECK`], then twice, four times that...), and the rounds end at the
/// first whose answer agrees with this node's list (a round between members that agree costs
/// a few dozen bytes), and stop at two when a round's stream fails (its list then goes whole, by
/// datagrams). So a member that a join's gossip missed while the pool was still forming
/// is repaired soon after the pool has formed, whenever that is, not at its first periodic
/// round: with a fixed two rounds, spent while a 10,000-member pool formed, one or two such
/// pairs stayed apart for up to 100 s in 3 runs of 5. A few streams per join, jittered: never
/// a storm of them.
pub const EARLY_SYNC_ROUNDS: u8 = 8;

/// How often a member that joined looks whether its member list is still growing (its early
/// rounds wait until it is not), with up to half of it again at random; the first two early
/// rounds are this far apart too (later ones twice as far as the gap before).
pub const EARLY_SYNC_CHECK: Duration = Duration::from_secs(2);

/// An address in the form identities carry (an IPv4-mapped IPv6 source becomes IPv4), so a
/// datagram's source compares equal to the address its sender advertises.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// How a node behaves.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Member name (`node.region`).
    pub name: String,
    /// Advertised gossip address.
    pub addr: SocketAddr,
    /// Generation; use something that grows across restarts (e.g. start time in ms).
    pub generation: u64,
    /// This member's tags; `None` disseminates no tags at all (the simulator's scale runs).
    pub tags: Option<BTreeMap<String, String>>,
    /// Gossip encryption key (16, 24 or 32 bytes): the primary, which seals.
    pub key: Option<Vec<u8>>,
    /// Further keys accepted besides `key` (a keyring loaded from `serf.keyring` mid-rotation);
    /// ignored without `key`.
    pub extra_keys: Vec<Vec<u8>>,
    /// How long a failed member stays listed (Nomad: 72 h).
    pub reconnect_timeout: Duration,
    /// How long a left member stays listed (Serf: 24 h).
    pub tombstone_timeout: Duration,
    /// How often expired members are reaped (Serf: 15 s).
    pub reap_interval: Duration,
    /// How often a member re-broadcasts its tags.
    pub tags_interval: Duration,
    /// How often a member exchanges its whole member list with a random member (anti-entropy).
    pub sync_interval: Duration,
    /// Exchange member lists (a join's, anti-entropy's) over a reliable stream
    /// ([`Output::streams`]), with datagrams as the fallback; `false` sends them as datagrams
    /// only (for a driver without streams).
    pub streams: bool,
    /// SWIM timing.
    pub swim: foca::Config,
}

impl NodeConfig {
    /// Defaults for a member in a cluster of about `cluster_size`.
    pub fn new(name: impl Into<String>, addr: SocketAddr, cluster_size: u32) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            addr,
            generation: 0,
            tags: Some(BTreeMap::new()),
            key: None,
            extra_keys: Vec::new(),
            reconnect_timeout: Duration::from_secs(72 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            reap_interval: Duration::from_secs(15),
            tags_interval: Duration::from_secs(30),
            sync_interval: sync_interval(cluster_size),
            streams: true,
            swim: swim_config(cluster_size),
        }
    }
}

/// Caravan's SWIM timing: LAN probing (1 s period, 500 ms round trip, 5 indirect probes and a
/// fallback ping over TCP, as memberlist's) with a
/// shorter suspicion than memberlist's, `max(2 s, log10(n) s)`, so a crash is known everywhere in
/// seconds rather than Nomad's 35–40 s, while suspicion still outlasts refutation at scale; and
/// Lifeguard as memberlist ships it ([`foca::Lifeguard::memberlist`]): a member whose own probes
/// go unanswered probes more patiently, and every member times a suspicion it hears of, from six
/// times that suspicion down to it as confirmations arrive. Each membership update is
/// piggybacked memberlist's retransmit limit of times, `4·ceil(log10(n + 1))`.
pub fn swim_config(cluster_size: u32) -> foca::Config {
    let n = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
    let mut c = foca::Config::new_lan(n);
    let log = f64::from(n.get()).log10();
    c.suspect_to_down_after = Duration::from_secs_f64(log.max(2.0));
    // Five indirect probes instead of three: under 5 % loss a false suspicion needs every one of
    // them to fail, which cuts suspicions (and the refutation traffic they cause) about 30-fold.
    // The fallback ping over TCP does not replace them: a lost SYN costs it a second, more than
    // the half probe period it has (with three, a 1,000-member pool at 5 % loss sent 350-480 B/s
    // per member and knew a crash in up to 7.8 s; with five, 366-376 B/s and 5.4 s, seeds 1 and 5).
    c.num_indirect_probes = NonZeroUsize::new(5).unwrap_or(c.num_indirect_probes);
    c.lifeguard = Some(foca::Lifeguard::memberlist());
    c.max_transmissions = transmissions(n);
    c
}

/// How many times a member piggybacks each membership update: memberlist's retransmit limit,
/// `RetransmitMult` (4) times `ceil(log10(n + 1))`, which is four times the number of decimal
/// digits of `n` (16 from 1,000 to 9,999 members, 20 at 10,000). A pool formed by a join storm
/// relays every join that many times from every member, which is most of what forming it costs;
/// the few member-pairs that fewer relays miss are repaired by the early anti-entropy rounds
/// ([`EARLY_SYNC_ROUNDS`]). Six times `log10(n + 1)`, 24 at 10,000, made the simulator's
/// 10,000-member run take 8 % longer (475 and 503 s of wall time, against 450 s at 20, run
/// back to back), for the same formation (79 s); four times `log10(n + 1)` without the
/// ceiling (12 at 1,000) let a crash at 1,000 members take up to 7.8 s to be known everywhere,
/// against 6.0 s at 16.
fn transmissions(n: NonZeroU32) -> std::num::NonZeroU8 {
    let digits = n.get().ilog10() + 1;
    let limit = u8::try_from(digits.saturating_mul(4)).unwrap_or(u8::MAX);
    std::num::NonZeroU8::new(limit).unwrap_or(std::num::NonZeroU8::MIN)
}

/// memberlist's push/pull scaling: 30 s up to 32 members, one more 30 s step per doubling beyond.
pub fn sync_interval(cluster_size: u32) -> Duration {
    let n = f64::from(cluster_size.max(1));
    let steps = (n.log2() - 32f64.log2()).ceil().max(0.0) + 1.0;
    Duration::from_secs(30).mul_f64(steps)
}

/// Mixed into a node's seed for the random first tick of its periodic timers.
const STAGGER_SEED: u64 = 0x7157_a66e_4f1e_57a6;

/// A timer a node asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeTimer {
    /// foca's own timer.
    Foca(Timer<NodeId>),
    /// Reap expired failed/left members.
    Reap,
    /// Re-broadcast this member's tags.
    Tags,
    /// Exchange member lists with a random member.
    Sync,
    /// After a join: look whether the member list stopped growing, and if so run an early
    /// anti-entropy round ([`EARLY_SYNC_ROUNDS`]).
    EarlySync,
}

/// A change in the member list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    /// The member's name.
    pub name: String,
    /// Its new status; `None` when it was removed (reaped or pruned).
    pub status: Option<MemberStatus>,
}

/// What a node wants done after a call.
#[derive(Debug, Default)]
pub struct Output {
    /// Datagrams to send.
    pub packets: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to set: fire `NodeTimer` after the delay.
    pub timers: Vec<(Duration, NodeTimer)>,
    /// Member changes.
    pub events: Vec<MemberEvent>,
    /// Member-list exchanges to run over streams.
    pub streams: Vec<StreamRequest>,
}

/// Packet counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped because they did not decrypt with our key.
    pub decrypt_failures: u64,
    /// Datagrams dropped as malformed.
    pub malformed: u64,
    /// foca packets dropped because the identity they claim to come from has another address
    /// than the datagram's source.
    pub spoofed: u64,
    /// Requests (tag pulls, member lists) from senders that are not known members, left
    /// unanswered and unapplied, and foca packets from such senders whose updates were capped.
    pub unknown_sender: u64,
    /// Tags and intents ignored: forged for another member, of another generation, or too far
    /// ahead (see [`crate::MAX_LTIME_AHEAD`]).
    pub rejected: u64,
    /// Member-list exchanges this node started over a stream.
    pub streams_out: u64,
    /// Member lists received on streams other members opened.
    pub streams_in: u64,
    /// Exchanges started over a stream that got no answer (then sent as datagrams).
    pub stream_failures: u64,
    /// Anti-entropy digests that differed from this node's list (a whole list followed).
    pub digest_mismatches: u64,
    /// Probe rounds started (one member probed each).
    pub probes: u64,
    /// Fallback pings sent over a stream to a probed member whose ping went unanswered.
    pub pings_out: u64,
    /// Fallback pings answered for other members.
    pub pings_in: u64,
    /// Probes that a fallback ping's answer saved from failing.
    pub pings_reached: u64,
}

/// The early anti-entropy rounds a member still owes after its join.
#[derive(Clone, Copy, Debug)]
struct EarlySync {
    /// Rounds still to run.
    rounds_left: u8,
    /// Active members at the last check.
    last_count: usize,
    /// Whether a round ran already (the later ones do not wait for the list to stop growing:
    /// the round itself grows it).
    ran: bool,
    /// How long after the next round the one after it comes (doubles each round).
    gap: Duration,
    /// An answer agreed with this node's list: no round is owed any more.
    agreed: bool,
    /// A round's stream failed (its list then went by datagrams, whole): no round beyond the
    /// second is run, since such a round cannot end in agreement.
    failed: bool,
    /// After this instant the periodic round takes over.
    until: Duration,
}

type Swim = Foca<NodeId, PostcardCodec, SmallRng, Handler>;

/// One gossip member, without I/O.
pub struct Node {
    pub(crate) swim: Swim,
    pub(crate) rt: AccumulatingRuntime<NodeId>,
    pub(crate) knowledge: Arc<Mutex<Knowledge>>,
    pub(crate) cfg: NodeConfig,
    pub(crate) keyring: Option<Keyring>,
    tags_version: u64,
    pub(crate) leaving: bool,
    pub(crate) out: Output,
    pub(crate) counters: Counters,
    pick: u64,
    /// Strangers' member-list requests waiting for the sender to become a member, with their
    /// deadlines.
    pending_replies: Vec<(SocketAddr, Duration)>,
    /// The last fallback ping sent (see `ping.rs`).
    pub(crate) probe_ping: Option<crate::ping::ProbePing>,
    /// When a fallback ping last saved a probe that datagrams could not (warned at most once a
    /// minute).
    pub(crate) ping_warned: Option<Duration>,
    /// Strangers' tag pulls waiting for the sender to become a member, with their deadlines
    /// (at most [`MAX_PENDING_TAG_PULLS`]).
    pending_pulls: Vec<(SocketAddr, Duration)>,
    /// Join targets whose member list is accepted until the deadline.
    solicited: Vec<(SocketAddr, Duration)>,
    /// The early anti-entropy rounds still owed after a join (see [`EARLY_SYNC_ROUNDS`]).
    early_sync: Option<EarlySync>,
    /// With [`Node::track_changes`], members whose status changed since [`Node::take_changed`].
    changed: Option<std::collections::HashSet<String>>,
    /// While a member list this node asked for is applied, the tags that came with it, by member
    /// name (see [`Node::member_up`]).
    pub(crate) incoming_tags: crate::knowledge::TagsTable,
    /// This node's tags as last encoded for a push, with the generation and tags version they
    /// encode.
    own_tags_encoded: Option<((u64, u64), Vec<u8>)>,
    /// The table's [`MemberTable::removals`](crate::table::MemberTable::removals) count at
    /// which it was last seen listing every active foca member: while the count stays there, a
    /// packet's sender needs no look-up in the table (see [`Node::receive_foca`]).
    table_complete_at: Option<u64>,
}

impl Node {
    /// Applies a keyring operation (`list` included) and returns the keys held after it; a node
    /// without a key has no keyring to show or change.
    pub fn keyring_apply(
        &mut self,
        op: &caravan_agent_core::keyring::KeyringOp,
    ) -> Result<caravan_agent_core::keyring::KeyList, GossipError> {
        use caravan_agent_core::keyring::{KeyringError, KeyringOp};
        let Some(keyring) = &mut self.keyring else {
            let list = matches!(op, KeyringOp::List);
            return Err(GossipError::Keyring(KeyringError::NoEncryption { list }));
        };
        keyring.apply(op).map_err(GossipError::Keyring)?;
        Ok(keyring.list().clone())
    }

    /// `data` opened with the pool key when one is set (a failure counted as a decrypt
    /// failure), or as it came.
    pub(crate) fn unseal<'a>(
        &mut self,
        data: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, GossipError> {
        match &self.keyring {
            Some(c) => match c.open(data) {
                Some(plain) => Ok(std::borrow::Cow::Owned(plain)),
                None => {
                    self.counters.decrypt_failures += 1;
                    Err(GossipError::Crypto)
                }
            },
            None => Ok(std::borrow::Cow::Borrowed(data)),
        }
    }

    /// A node that knows only itself. `seed` makes its random choices reproducible.
    pub fn new(mut cfg: NodeConfig, seed: u64, now: Duration) -> Result<Node, GossipError> {
        let keyring = match &cfg.key {
            Some(key) => Some(Keyring::from_keys(key, &cfg.extra_keys)?),
            None => None,
        };
        let overhead = 1 + if keyring.is_some() {
            ENCRYPTION_OVERHEAD
        } else {
            0
        };
        cfg.swim.max_packet_size =
            NonZeroUsize::new(MAX_DATAGRAM - overhead).unwrap_or(NonZeroUsize::MIN);
        cfg.swim.remove_down_after = Some(cfg.reconnect_timeout.max(cfg.tombstone_timeout));
        let id = NodeId::new(cfg.addr, &cfg.name, cfg.generation);
        let knowledge = Arc::new(Mutex::new(Knowledge::new(id.clone(), now)));
        let handler = Handler {
            shared: knowledge.clone(),
        };
        let swim = Foca::with_custom_broadcast(
            id.clone(),
            cfg.swim.clone(),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            handler,
        );
        let mut node = Node {
            swim,
            rt: AccumulatingRuntime::new(),
            knowledge,
            keyring,
            tags_version: 0,
            leaving: false,
            out: Output::default(),
            counters: Counters::default(),
            pick: seed | 1,
            pending_replies: Vec::new(),
            probe_ping: None,
            ping_warned: None,
            pending_pulls: Vec::new(),
            solicited: Vec::new(),
            early_sync: None,
            changed: None,
            incoming_tags: Default::default(),
            own_tags_encoded: None,
            table_complete_at: Some(0),
            cfg,
        };
        // As memberlist does, the first tick of each periodic timer comes after a random part of
        // its interval, then every interval: members that start together (a fleet restarted, a
        // simulated pool) do not all exchange member lists or re-broadcast tags in the same
        // instant.
        let mut stagger = SmallRng::seed_from_u64(seed ^ STAGGER_SEED);
        let mut first = |interval: Duration| interval.mul_f64(1.0 - stagger.random::<f64>());
        let (reap, sync, tags) = (
            first(node.cfg.reap_interval),
            first(node.cfg.sync_interval),
            first(node.cfg.tags_interval),
        );
        node.out.timers.push((reap, NodeTimer::Reap));
        node.out.timers.push((sync, NodeTimer::Sync));
        if let Some(own_tags) = node.cfg.tags.clone() {
            node.set_tags(own_tags, now)?;
            node.out.timers.push((tags, NodeTimer::Tags));
        }
        Ok(node)
    }

    /// This node's identity.
    pub fn identity(&self) -> &NodeId {
        self.swim.identity()
    }

    /// Starts joining the cluster `addr` belongs to: an announce (foca does not retry it) and,
    /// as memberlist's join does, an exchange of whole member lists with `addr` over a stream
    /// (datagrams if none can be opened), so a new member knows the pool at once rather than
    /// after the next anti-entropy round.
    pub fn join(&mut self, addr: SocketAddr, now: Duration) -> Result<(), GossipError> {
        let result = self.swim.announce(NodeId::placeholder(addr), &mut self.rt);
        // The announce goes out first, so the target usually knows the joiner by the time the
        // list arrives; otherwise it answers once the announce has made the joiner a member.
        self.after_swim(now);
        let addr = canonical(addr);
        self.solicited
            .retain(|(a, until)| *a != addr && *until > now);
        if self.solicited.len() >= MAX_SOLICITED_SYNCS {
            self.solicited.remove(0);
        }
        self.solicited.push((addr, now + SOLICITED_SYNC_WINDOW));
        self.push_pull(addr, true);
        self.plan_early_sync(now);
        result.map_err(GossipError::from)
    }

    /// After a join: owes up to [`EARLY_SYNC_ROUNDS`] anti-entropy rounds, the first once the
    /// member list stops growing, each later one twice as far from the one before, until one
    /// agrees, all within one [`sync_interval`] of the join (the periodic round takes over after
    /// that). Another join restarts the count; one check timer runs at a time.
    fn plan_early_sync(&mut self, now: Duration) {
        let pending = self.early_sync.is_some();
        self.early_sync = Some(EarlySync {
            rounds_left: EARLY_SYNC_ROUNDS,
            last_count: self.swim.num_members(),
            ran: false,
            gap: EARLY_SYNC_CHECK,
            agreed: false,
            failed: false,
            until: now + self.cfg.sync_interval,
        });
        if !pending {
            let delay = self.early_sync_delay(EARLY_SYNC_CHECK);
            self.out.timers.push((delay, NodeTimer::EarlySync));
        }
    }

    /// `base` and up to half of it again, at random.
    fn early_sync_delay(&mut self, base: Duration) -> Duration {
        let r = self.next_random() % 1000;
        base + base.mul_f64(r as f64 / 2000.0)
    }

    /// An early round's check (see [`Node::plan_early_sync`]): while the member list grows it
    /// waits; once it has not grown since the last check (or a round ran), one push/pull with a
    /// random member. Nothing more once an answer agreed.
    fn early_sync_check(&mut self, now: Duration) {
        let Some(mut early) = self.early_sync.take() else {
            return;
        };
        let past_second = early.rounds_left <= EARLY_SYNC_ROUNDS.saturating_sub(2);
        if self.leaving || now >= early.until || early.agreed || (early.failed && past_second) {
            return;
        }
        let count = self.swim.num_members();
        let delay = if count == 0 || (!early.ran && count > early.last_count) {
            early.last_count = count;
            self.early_sync_delay(EARLY_SYNC_CHECK)
        } else {
            self.start_sync();
            early.ran = true;
            early.rounds_left = early.rounds_left.saturating_sub(1);
            let gap = early.gap;
            early.gap = gap.saturating_mul(2);
            self.early_sync_delay(gap)
        };
        if early.rounds_left > 0 {
            self.early_sync = Some(early);
            self.out.timers.push((delay, NodeTimer::EarlySync));
        }
    }

    /// An anti-entropy answer agreed with this node's member list: the early rounds end (once
    /// one of them ran: an answer to a round opened before a new join does not end that join's).
    pub(crate) fn lists_agreed(&mut self) {
        if let Some(early) = self.early_sync.as_mut().filter(|e| e.ran) {
            early.agreed = true;
        }
    }

    /// An exchange's stream failed: the early rounds stop at two (see [`EarlySync::failed`]).
    pub(crate) fn early_round_failed(&mut self) {
        if let Some(early) = self.early_sync.as_mut().filter(|e| e.ran) {
            early.failed = true;
        }
    }

    /// Teaches the node members known from elsewhere (a previous run, a seed list), as alive,
    /// without broadcasting them.
    pub fn learn(&mut self, members: impl IntoIterator<Item = NodeId>, now: Duration) {
        let updates = members.into_iter().map(foca::Member::alive);
        if let Err(e) = self.swim.apply_many(updates, false, &mut self.rt) {
            tracing::debug!(target: "gossip", error = %e, "learn");
        }
        self.after_swim(now);
    }

    /// Handles one received datagram.
    pub fn handle_packet(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Duration,
    ) -> Result<(), GossipError> {
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        let plain = self.unseal(data)?;
        let plain: &[u8] = &plain;
        let from = canonical(from);
        let result = match plain.split_first() {
            Some((&KIND_FOCA, rest)) => self.receive_foca(from, rest, now),
            Some((&KIND_TAGS_PUSH, rest)) => self.receive_tags(from, rest, now),
            Some((&KIND_TAGS_PULL, _)) => {
                if self.is_member(from) {
                    self.push_tags(from)
                } else {
                    // Answered if the sender becomes a member soon (see `member_up`).
                    self.counters.unknown_sender += 1;
                    self.pending_pulls
                        .retain(|(a, until)| *a != from && *until > now);
                    if self.pending_pulls.len() >= MAX_PENDING_TAG_PULLS {
                        self.pending_pulls.remove(0);
                    }
                    self.pending_pulls
                        .push((from, now + PENDING_SYNC_REPLY_TTL));
                    Err(GossipError::Rejected("tag pull from a stranger"))
                }
            }
            Some((&KIND_SYNC, rest)) => self.receive_sync(from, rest, now),
            _ => Err(GossipError::Decode("unknown envelope".into())),
        };
        if matches!(result, Err(GossipError::Decode(_) | GossipError::Swim(_))) {
            self.counters.malformed += 1;
        }
        result
    }

    /// Whether `addr` is the gossip address of an active (alive or suspect) member.
    pub(crate) fn is_member(&self, addr: SocketAddr) -> bool {
        self.swim
            .member_at(&addr)
            .is_some_and(|m| m.state() != foca::State::Down)
    }

    /// A foca packet: dropped unless the identity it claims to come from has the datagram's
    /// source address; from a stranger, its cluster updates are capped.
    fn receive_foca(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Duration,
    ) -> Result<(), GossipError> {
        // An identity is encoded address first: decoding just that costs no interning.
        let (src, _): (SocketAddr, _) =
            postcard::take_from_bytes(data).map_err(|e| GossipError::Decode(e.to_string()))?;
        if canonical(src) != from {
            self.counters.spoofed += 1;
            return Err(GossipError::Rejected("claimed source is not the sender"));
        }
        let capped =
            if data.len() <= MAX_UNKNOWN_INTRODUCTIONS * MIN_UPDATE_BYTES || self.is_member(from) {
                None
            } else {
                cap_updates(data, MAX_UNKNOWN_INTRODUCTIONS)?
            };
        if capped.is_some() {
            self.counters.unknown_sender += 1;
        }
        let r = self
            .swim
            .handle_data(capped.as_deref().unwrap_or(data), &mut self.rt);
        self.after_swim(now);
        // A member that talks to us is alive: if a prune removed it from the table and its
        // refutation got lost (intents are best effort), hearing from it lists it again. Only a
        // removal from the table can leave an active member out of it, so while none happened
        // since the table was last seen complete there is nothing to look up (two hash look-ups
        // per datagram otherwise: a fifth of a large pool's profile).
        let complete = self.table_complete_at == Some(self.knowledge.lock().table.removals());
        if complete {
            return r.map_err(GossipError::from);
        }
        let talking = self
            .swim
            .member_at(&from)
            .filter(|m| m.state() != foca::State::Down)
            .map(|m| m.id().clone());
        if let Some(id) = talking
            && self.knowledge.lock().table.get(id.name()).is_none()
        {
            self.member_up(id, now);
        }
        r.map_err(GossipError::from)
    }

    /// Handles a timer this node asked for.
    pub fn handle_timer(&mut self, timer: NodeTimer, now: Duration) {
        match timer {
            NodeTimer::Foca(t) => {
                if matches!(t, foca::Timer::ProbeRandomMember(_)) {
                    self.counters.probes += 1;
                }
                let indirect = matches!(t, foca::Timer::SendIndirectProbe { .. });
                if let Err(e) = self.swim.handle_timer(t, &mut self.rt) {
                    tracing::debug!(target: "gossip", error = %e, "timer");
                }
                if indirect {
                    self.ping_unanswered_probe();
                }
                self.after_swim(now);
            }
            NodeTimer::Reap => {
                self.reap(now);
                self.out
                    .timers
                    .push((self.cfg.reap_interval, NodeTimer::Reap));
            }
            NodeTimer::Sync => {
                if !self.leaving {
                    self.start_sync();
                }
                self.out
                    .timers
                    .push((self.cfg.sync_interval, NodeTimer::Sync));
            }
            NodeTimer::EarlySync => self.early_sync_check(now),
            NodeTimer::Tags => {
                if !self.leaving {
                    self.announce_tags();
                }
                self.out
                    .timers
                    .push((self.cfg.tags_interval, NodeTimer::Tags));
            }
        }
    }

    /// Replaces this member's tags and broadcasts them (at most 512 bytes encoded).
    pub fn set_tags(
        &mut self,
        tags: BTreeMap<String, String>,
        now: Duration,
    ) -> Result<(), GossipError> {
        let size = postcard::to_stdvec(&tags)
            .map_err(|e| GossipError::Encode(e.to_string()))?
            .len();
        if size > MAX_TAGS_BYTES {
            return Err(GossipError::TagsTooLarge(size));
        }
        self.tags_version += 1;
        self.cfg.tags = Some(tags);
        self.announce_tags();
        self.after_swim(now);
        Ok(())
    }

    fn own_tags(&self) -> Option<TagsMsg> {
        Some(TagsMsg {
            name: self.cfg.name.clone(),
            generation: self.identity().generation(),
            version: self.tags_version,
            tags: self.cfg.tags.clone()?,
        })
    }

    fn announce_tags(&mut self) {
        let Some(msg) = self.own_tags() else { return };
        match Broadcast::Tags(msg).encode() {
            Ok(bytes) => {
                if let Err(e) = self.swim.add_broadcast(&bytes) {
                    tracing::debug!(target: "gossip", error = %e, "tag broadcast");
                }
            }
            Err(e) => tracing::debug!(target: "gossip", error = %e, "tag encode"),
        }
    }

    fn push_tags(&mut self, to: SocketAddr) -> Result<(), GossipError> {
        // Encoded once per identity and version: a node pushes its tags to every member that
        // comes up.
        let key = (self.identity().generation(), self.tags_version);
        let encoded = match self.own_tags_encoded.take() {
            Some((known, bytes)) if known == key => bytes,
            _ => {
                let Some(msg) = self.own_tags() else {
                    return Ok(());
                };
                postcard::to_stdvec(&msg).map_err(|e| GossipError::Encode(e.to_string()))?
            }
        };
        self.send(to, KIND_TAGS_PUSH, &encoded);
        self.own_tags_encoded = Some((key, encoded));
        Ok(())
    }

    /// A member's tags pushed directly: accepted only from that member's own address (held
    /// briefly when the member is not listed yet, in case its alive update is on the way).
    fn receive_tags(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Duration,
    ) -> Result<(), GossipError> {
        let msg: TagsMsg =
            postcard::from_bytes(bytes).map_err(|e| GossipError::Decode(e.to_string()))?;
        let mut k = self.knowledge.lock();
        let result = match k.table.get(&msg.name).map(|e| canonical(e.id.addr())) {
            Some(addr) if addr == from => {
                k.learn_tags(msg);
                Ok(())
            }
            Some(_) => {
                k.rejected += 1;
                Err(GossipError::Rejected("tags pushed for another member"))
            }
            None => {
                k.hold_tags(Some(from), msg);
                Ok(())
            }
        };
        drop(k);
        self.after_swim(now);
        result
    }

    /// Exchanges member lists with one random active member.
    fn start_sync(&mut self) {
        let active: Vec<SocketAddr> = self.swim.iter_members().map(|m| m.id().addr()).collect();
        if active.is_empty() {
            return;
        }
        let to = active[(self.next_random() % active.len() as u64) as usize];
        self.anti_entropy(to);
    }

    /// xorshift: a cheap, seeded choice, so simulations stay reproducible.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.pick ^= self.pick << 13;
        self.pick ^= self.pick >> 7;
        self.pick ^= self.pick << 17;
        self.pick
    }

    /// Sends the active members (and this node) in as many datagrams as needed.
    pub(crate) fn send_member_list(&mut self, to: SocketAddr, want_reply: bool) {
        let me = (self.identity().clone(), 0u16);
        let mut entries: Vec<(NodeId, u16)> = self
            .swim
            .iter_members()
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        entries.push(me);
        let budget = self.cfg.swim.max_packet_size.get().saturating_sub(16);
        let mut chunk: Vec<(NodeId, u16)> = Vec::new();
        let mut size = 0;
        let mut first = true;
        for entry in entries {
            let len = postcard::to_stdvec(&entry).map_or(64, |v| v.len());
            if size + len > budget && !chunk.is_empty() {
                self.send_sync_chunk(to, want_reply && first, &chunk);
                first = false;
                chunk.clear();
                size = 0;
            }
            size += len;
            chunk.push(entry);
        }
        if !chunk.is_empty() {
            self.send_sync_chunk(to, want_reply && first, &chunk);
        }
    }

    /// One datagram of a member list: `[want_reply][entries][Lamport clock]`. The clock trails
    /// the entries (a node that does not read it ignores it), as Serf's push/pull carries its
    /// clock, so a node that missed intents catches up with the pool.
    fn send_sync_chunk(&mut self, to: SocketAddr, want_reply: bool, chunk: &[(NodeId, u16)]) {
        let ltime = self.knowledge.lock().ltime;
        match (postcard::to_stdvec(chunk), postcard::to_stdvec(&ltime)) {
            (Ok(bytes), Ok(clock)) => {
                let mut payload = Vec::with_capacity(bytes.len() + clock.len() + 1);
                payload.push(u8::from(want_reply));
                payload.extend_from_slice(&bytes);
                payload.extend_from_slice(&clock);
                self.send(to, KIND_SYNC, &payload);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(target: "gossip", error = %e, "sync encode")
            }
        }
    }

    fn receive_sync(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        now: Duration,
    ) -> Result<(), GossipError> {
        let Some((&want_reply, rest)) = payload.split_first() else {
            return Err(GossipError::Decode("empty sync".into()));
        };
        let (entries, tail): (Vec<(NodeId, u16)>, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| GossipError::Decode(e.to_string()))?;
        let their_clock: Option<u64> = postcard::from_bytes(tail).ok();
        let member = self.is_member(from);
        self.solicited.retain(|(_, until)| *until > now);
        let asked = self.solicited.iter().any(|(a, _)| *a == from);
        if !member && !asked {
            // A stranger: its list introduces nobody, and its request is answered only once it
            // has become a member (its announce may still be on the way).
            self.counters.unknown_sender += 1;
            if want_reply == 1 && !self.leaving {
                self.pending_replies
                    .retain(|(a, until)| *a != from && *until > now);
                if self.pending_replies.len() >= MAX_PENDING_SYNC_REPLIES {
                    self.pending_replies.remove(0);
                }
                self.pending_replies
                    .push((from, now + PENDING_SYNC_REPLY_TTL));
            }
            return Ok(());
        }
        if let Some(theirs) = their_clock {
            self.knowledge.lock().witness_ltime(theirs);
        }
        self.apply_entries(entries, now);
        if want_reply == 1 && !self.leaving && self.is_member(from) {
            self.send_member_list(from, false);
        }
        Ok(())
    }

    /// Leaves gracefully: a leave intent, then foca's leave. Keep delivering packets and timers
    /// for about a second afterwards so the news spreads.
    pub fn leave(&mut self, now: Duration) {
        self.leaving = true;
        let name = self.cfg.name.clone();
        if let Some(changed) = &mut self.changed {
            changed.insert(name.clone());
        }
        self.broadcast_intent(name, IntentKind::Leave, false);
        if let Err(e) = self.swim.leave_cluster(&mut self.rt) {
            tracing::debug!(target: "gossip", error = %e, "leave");
        }
        self.after_swim(now);
    }

    /// Serf's force-leave: a failed member becomes `left`, an alive one `leaving` (it refutes if
    /// healthy); with `prune` the member is removed everywhere at once. Returns whether the
    /// member was known; an unknown name is not an error (the intent is still broadcast).
    pub fn force_leave(&mut self, name: &str, prune: bool, now: Duration) -> bool {
        let known = self.knowledge.lock().table.get(name).is_some();
        self.broadcast_intent(name.to_string(), IntentKind::Leave, prune);
        self.after_swim(now);
        known
    }

    fn broadcast_intent(&mut self, name: String, kind: IntentKind, prune: bool) {
        let ltime = self.knowledge.lock().next_ltime();
        let msg = IntentMsg {
            name,
            ltime,
            kind,
            prune,
        };
        match Broadcast::Intent(msg).encode() {
            Ok(bytes) => {
                if let Err(e) = self.swim.add_broadcast(&bytes) {
                    tracing::debug!(target: "gossip", error = %e, "intent broadcast");
                }
            }
            Err(e) => tracing::debug!(target: "gossip", error = %e, "intent encode"),
        }
    }

    /// Takes everything the node produced since the last call.
    pub fn drain(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    /// Drains foca's runtime, applies notifications and fresh intents.
    pub(crate) fn after_swim(&mut self, now: Duration) {
        while let Some((to, data)) = self.rt.to_send() {
            self.send(to.addr(), KIND_FOCA, &data);
        }
        while let Some((delay, timer)) = self.rt.to_schedule() {
            self.out.timers.push((delay, NodeTimer::Foca(timer)));
        }
        while let Some(note) = self.rt.to_notify() {
            self.notify(note, now);
        }
        let fresh = std::mem::take(&mut self.knowledge.lock().fresh_intents);
        for intent in fresh {
            self.apply_intent(&intent, now);
        }
        let mut k = self.knowledge.lock();
        if !k.pending_tags.is_empty() {
            k.resolve_pending_tags();
        }
    }

    fn notify(&mut self, note: OwnedNotification<NodeId>, now: Duration) {
        match note {
            OwnedNotification::MemberUp(id) => self.member_up(id, now),
            OwnedNotification::Rename(old, new) => {
                if old.name() != new.name() {
                    let removed = {
                        let mut k = self.knowledge.lock();
                        let removed = k.table.remove(old.name()).is_some();
                        if removed {
                            k.forget(old.name());
                        }
                        removed
                    };
                    if removed {
                        self.event(old.name(), None);
                    }
                }
                self.member_up(new, now);
            }
            OwnedNotification::MemberDown(id) => {
                let down = self.knowledge.lock().table.down(&id, now);
                if let Some(status) = down {
                    self.event(id.name(), Some(status));
                }
            }
            OwnedNotification::Rejoin(id) => {
                tracing::debug!(target: "gossip", generation = id.generation(), "rejoined with a new identity");
            }
            _ => {}
        }
    }

    fn member_up(&mut self, id: NodeId, now: Duration) {
        let addr = id.addr();
        let generation = id.generation();
        self.knowledge.lock().table.up(id.clone(), now);
        let name = id.name();
        self.event(name, Some(MemberStatus::Alive));
        if let Some(i) = self.pending_replies.iter().position(|(a, _)| *a == addr) {
            let (_, until) = self.pending_replies.swap_remove(i);
            if until > now && !self.leaving {
                self.send_member_list(addr, false);
            }
        }
        if let Some(i) = self.pending_pulls.iter().position(|(a, _)| *a == addr) {
            let (_, until) = self.pending_pulls.swap_remove(i);
            if until > now {
                let _ = self.push_tags(addr);
            }
        }
        if self.cfg.tags.is_some() {
            // Listed by a member list this node asked for (its join), with the member's tags:
            // nothing to pull.
            if let Some(tags) = self.incoming_tags.take(name)
                && tags.generation == generation
            {
                self.knowledge.lock().learn_shared_tags(tags);
                return;
            }
            // The member's tags broadcast often rides in the packet that brought it, and waits
            // for the member to be listed: taken first, it spares a pull. Nothing is pushed: the
            // member pulls this node's tags in turn when it learns this node and lacks them (a
            // push to every member that comes up sent N² pushes while a pool formed, nearly all
            // to joiners that had the tags from their join's member list).
            let current = {
                let mut k = self.knowledge.lock();
                if !k.pending_tags.is_empty() {
                    k.resolve_pending_tags();
                }
                k.tags.get(name).is_some_and(|t| t.generation == generation)
            };
            if !current {
                self.send(addr, KIND_TAGS_PULL, &[]);
            }
        }
    }

    fn apply_intent(&mut self, intent: &IntentMsg, now: Duration) {
        if intent.name == self.cfg.name {
            if intent.kind == IntentKind::Leave && !self.leaving {
                // Someone says we are leaving; we are not: refute with a newer join.
                self.broadcast_intent(self.cfg.name.clone(), IntentKind::Join, false);
            }
            return;
        }
        let effect = self.knowledge.lock().table.intent(intent, now);
        match effect {
            IntentEffect::Changed => {
                let status = self.status_of(&intent.name);
                self.event(&intent.name, status);
            }
            IntentEffect::Pruned(id) => {
                self.knowledge.lock().forget(id.name());
                self.forget(id);
                self.event(&intent.name, None);
            }
            IntentEffect::Unknown if intent.kind == IntentKind::Join => {
                let found = self
                    .swim
                    .iter_members()
                    .find(|m| m.id().name() == intent.name)
                    .map(|m| m.id().clone());
                if let Some(id) = found {
                    self.member_up(id, now);
                }
            }
            IntentEffect::None | IntentEffect::Unknown => {}
        }
    }

    /// Makes foca forget a down identity now (prune, reap).
    fn forget(&mut self, id: NodeId) {
        let is_down = self
            .swim
            .member_at(&id.addr())
            .is_some_and(|m| m.id() == &id && m.state() == foca::State::Down);
        if is_down && let Err(e) = self.swim.handle_timer(Timer::RemoveDown(id), &mut self.rt) {
            tracing::debug!(target: "gossip", error = %e, "forget");
        }
    }

    fn reap(&mut self, now: Duration) {
        let gone = {
            let mut k = self.knowledge.lock();
            let gone = k
                .table
                .reap(now, self.cfg.reconnect_timeout, self.cfg.tombstone_timeout);
            k.sweep();
            // Whether the table lists every active member again (see `table_complete_at`):
            // looked at only after a removal since it was last seen complete.
            let removals = k.table.removals();
            if self.table_complete_at != Some(removals) {
                let complete = self
                    .swim
                    .iter_members()
                    .all(|m| k.table.get(m.id().name()).is_some());
                self.table_complete_at = complete.then_some(removals);
            }
            gone
        };
        self.pending_replies.retain(|(_, until)| *until > now);
        self.pending_pulls.retain(|(_, until)| *until > now);
        self.solicited.retain(|(_, until)| *until > now);
        for id in gone {
            let name = id.name().to_string();
            self.forget(id);
            self.event(&name, None);
        }
        self.after_swim(now);
    }

    fn event(&mut self, name: &str, status: Option<MemberStatus>) {
        if let Some(changed) = &mut self.changed {
            changed.insert(name.to_string());
        }
        self.out.events.push(MemberEvent {
            name: name.to_string(),
            status,
        });
    }

    fn send(&mut self, to: SocketAddr, kind: u8, payload: &[u8]) {
        let mut plain = Vec::with_capacity(payload.len() + 1);
        plain.push(kind);
        plain.extend_from_slice(payload);
        let packet = match &self.keyring {
            Some(c) => match c.seal(&plain) {
                Ok(p) => p,
                Err(_) => return,
            },
            None => plain,
        };
        self.counters.packets_out += 1;
        self.counters.bytes_out += packet.len() as u64;
        self.out.packets.push((to, packet));
    }

    /// A counter that changes whenever some member's tags do.
    pub fn tags_version(&self) -> u64 {
        self.knowledge.lock().tags_version
    }

    /// The member list as Serf reports it, sorted by name; this node included.
    pub fn members(&self) -> Vec<Member> {
        let knowledge = self.knowledge.lock();
        let mut members: Vec<Member> = knowledge
            .table
            .iter()
            .map(|e| self.member_of(&knowledge, e))
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    /// One member as Serf reports it (`None`: not listed).
    pub fn member(&self, name: &str) -> Option<Member> {
        let knowledge = self.knowledge.lock();
        let entry = knowledge.table.get(name)?;
        Some(self.member_of(&knowledge, entry))
    }

    fn member_of(&self, knowledge: &Knowledge, e: &crate::table::Entry) -> Member {
        let mut status = e.status;
        if e.id.name() == self.cfg.name && self.leaving {
            status = MemberStatus::Leaving;
        }
        Member {
            name: e.id.name().to_string(),
            addr: Some(e.id.addr().ip()),
            port: e.id.addr().port(),
            tags: Some(
                knowledge
                    .tags
                    .get(e.id.name())
                    .filter(|t| t.generation == e.id.generation())
                    .map(|t| t.tags.clone())
                    .unwrap_or_default(),
            ),
            status,
            versions: NOMAD_VERSIONS,
        }
    }

    /// Starts recording which members change (status or tags), for [`Node::take_changed`]: a
    /// driver that keeps a published list up to date by the changed members only. Off by
    /// default (a simulated pool of N would hold N² names nobody takes).
    pub fn track_changes(&mut self) {
        self.changed = Some(Default::default());
        self.knowledge.lock().track_tags(true);
    }

    /// Whether some member changed since the last [`Node::take_changed`].
    pub fn has_changes(&self) -> bool {
        self.changed.as_ref().is_some_and(|c| !c.is_empty())
            || self
                .knowledge
                .lock()
                .tags_changed
                .as_ref()
                .is_some_and(|c| !c.is_empty())
    }

    /// The names of the members whose status or tags changed (or that were removed) since the
    /// last call, each once; empty unless [`Node::track_changes`] was called.
    pub fn take_changed(&mut self) -> Vec<String> {
        let mut names: std::collections::HashSet<String> = self
            .changed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        if let Some(tags) = self.knowledge.lock().tags_changed.as_mut() {
            names.extend(tags.drain());
        }
        names.into_iter().collect()
    }

    /// The status of one member.
    pub fn status_of(&self, name: &str) -> Option<MemberStatus> {
        self.knowledge.lock().table.get(name).map(|e| e.status)
    }

    /// How many members (this node included) the table lists with `status`.
    pub fn count(&self, status: MemberStatus) -> usize {
        self.knowledge.lock().table.count(status)
    }

    /// Membership updates (joins, suspicions, failures) still waiting to be piggybacked on
    /// foca's packets.
    pub fn updates_backlog(&self) -> usize {
        self.swim.updates_backlog()
    }

    /// Tags and intents still waiting to be piggybacked on foca's packets (a member's own tags
    /// are there for a while after each periodic re-broadcast).
    pub fn custom_backlog(&self) -> usize {
        self.swim.custom_broadcast_backlog()
    }

    /// Members foca considers active (alive or suspect), this node excluded.
    pub fn num_active(&self) -> usize {
        self.swim.num_members()
    }

    /// Packet counters.
    pub fn counters(&self) -> Counters {
        Counters {
            rejected: self.knowledge.lock().rejected,
            ..self.counters
        }
    }

    /// Serf-style statistics for `/v1/agent/self` (`stats.serf`).
    pub fn stats(&self) -> BTreeMap<String, String> {
        let k = self.knowledge.lock();
        let c = self.counters;
        BTreeMap::from([
            ("members".into(), k.table.len().to_string()),
            (
                "failed".into(),
                k.table.count(MemberStatus::Failed).to_string(),
            ),
            ("left".into(), k.table.count(MemberStatus::Left).to_string()),
            ("health_score".into(), self.swim.health_score().to_string()),
            ("member_time".into(), k.ltime.to_string()),
            ("event_time".into(), "1".into()),
            ("query_time".into(), "1".into()),
            (
                "intent_queue".into(),
                self.swim.custom_broadcast_backlog().to_string(),
            ),
            ("event_queue".into(), "0".into()),
            ("query_queue".into(), "0".into()),
            ("encrypted".into(), self.keyring.is_some().to_string()),
            ("decrypt_failures".into(), c.decrypt_failures.to_string()),
            ("malformed_packets".into(), c.malformed.to_string()),
            ("spoofed_packets".into(), c.spoofed.to_string()),
            (
                "unknown_sender_packets".into(),
                c.unknown_sender.to_string(),
            ),
            ("rejected_messages".into(), k.rejected.to_string()),
            ("packets_in".into(), c.packets_in.to_string()),
            ("packets_out".into(), c.packets_out.to_string()),
            ("streams_out".into(), c.streams_out.to_string()),
            ("streams_in".into(), c.streams_in.to_string()),
            ("stream_failures".into(), c.stream_failures.to_string()),
            ("stream_pings_out".into(), c.pings_out.to_string()),
            ("stream_pings_in".into(), c.pings_in.to_string()),
            ("stream_pings_reached".into(), c.pings_reached.to_string()),
        ])
    }
}

/// Rewrites a foca packet (without the envelope byte) so it carries at most `max` cluster
/// updates; `None` when it already does (or carries none).
fn cap_updates(data: &[u8], max: usize) -> Result<Option<Vec<u8>>, GossipError> {
    let bad = |e: postcard::Error| GossipError::Decode(e.to_string());
    let (header, after): (foca::Header<NodeId>, &[u8]) =
        postcard::take_from_bytes(data).map_err(bad)?;
    if header.message == foca::Message::Broadcast {
        return Ok(None);
    }
    let [hi, lo, ref members @ ..] = *after else {
        return Ok(None);
    };
    let count = usize::from(u16::from_be_bytes([hi, lo]));
    if count <= max {
        return Ok(None);
    }
    let mut rest = members;
    let mut kept = 0;
    for i in 0..count {
        let (_, next): (foca::Member<NodeId>, &[u8]) =
            postcard::take_from_bytes(rest).map_err(bad)?;
        rest = next;
        if i + 1 == max {
            kept = members.len() - rest.len();
        }
    }
    let header_len = data.len() - after.len();
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..header_len]);
    out.extend_from_slice(&u16::try_from(max).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&members[..kept]);
    // What follows the updates (custom broadcasts) is kept as is.
    out.extend_from_slice(rest);
    Ok(Some(out))
}

#[cfg(test)]
#[path = "node_tests.rs"]
pub(crate) mod tests;
