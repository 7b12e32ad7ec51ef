//! A deterministic simulator: many [`Node`]s in one process on virtual time, with per-link loss,
//! latency and partitions, and no sockets. What passes here runs the same code as on UDP.
//!
//! Member-list streams are modelled as TCP would carry them: one frame each way, never lost but
//! delayed by the handshake and by a retransmission timeout for every lost segment; a stream to a
//! node that is down is refused after a round trip, and one across a cut link fails after the
//! connect timeout (then the node falls back to datagrams, as on UDP).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::member::MemberStatus;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::exchange::{STREAM_CONNECT_TIMEOUT, StreamPurpose, StreamRequest};
use crate::identity::NodeId;
use crate::node::{MemberEvent, Node, NodeConfig, NodeTimer, Output};

mod pool;
use pool::Pool;

/// Payload bytes per simulated TCP segment.
const SEGMENT: usize = 1400;

/// What a lost segment costs a simulated stream: Linux's minimum retransmission timeout.
const RETRANSMIT: Duration = Duration::from_millis(200);

/// Linux's initial retransmission timeout for a SYN (or SYN-ACK) that got no answer; it doubles
/// with each retry.
const SYN_RETRANSMIT: Duration = Duration::from_secs(1);

/// The TCP segments `bytes` of stream data take.
fn segments(bytes: usize) -> u64 {
    (bytes / SEGMENT + 1) as u64
}

/// How a simulation is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub members: usize,
    /// Probability that any datagram is lost.
    pub loss: f64,
    /// Base one-way latency.
    pub latency: Duration,
    /// Extra random latency, uniform in `0..jitter`.
    pub jitter: Duration,
    /// Seed for every random choice.
    pub seed: u64,
    /// Disseminate (small) tags too.
    pub tags: bool,
    /// Gossip key for every node.
    pub key: Option<Vec<u8>>,
    /// Lifeguard on every node (the default, [`crate::swim_config`]); `false` runs plain SWIM,
    /// for comparison.
    pub lifeguard: bool,
    /// Threads that run nodes at once: every event due within one latency of the first one
    /// pending is delivered together, each node running its own in order, and what they sent
    /// is then queued in the order one thread would have (a run is the same on any number).
    pub threads: usize,
}

impl SimConfig {
    /// `members` nodes, no loss, 1 ms ± 1 ms latency.
    pub fn new(members: usize, seed: u64) -> SimConfig {
        SimConfig {
            members,
            loss: 0.0,
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
            seed,
            tags: true,
            key: None,
            lifeguard: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

enum Ev {
    Deliver {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        life: u32,
        timer: NodeTimer,
    },
    /// A member-list frame arrives on a stream node `from` opened to node `to`.
    StreamOpen {
        to: usize,
        from: usize,
        life: u32,
        frame: Vec<u8>,
        purpose: StreamPurpose,
    },
    /// The answer reaches node `node` (if it is still in life `life`).
    StreamReply {
        node: usize,
        life: u32,
        to: SocketAddr,
        frame: Vec<u8>,
        purpose: StreamPurpose,
    },
    /// The stream node `node` opened to `to` got no answer.
    StreamFailed {
        node: usize,
        life: u32,
        to: SocketAddr,
        purpose: StreamPurpose,
    },
}

/// The event queue: the order (time, then sequence number) of small keys, the events themselves
/// in a slab they do not move out of until they are due. Keys due within the next few seconds sit
/// in a ring of ~1 ms buckets (a calendar queue: a bucket becomes a small heap when the clock
/// reaches it), later ones in a binary heap that feeds the ring as the clock advances. One heap
/// of every key cost a quarter of a 3,000-member run's profile in its pops (tens of thousands of
/// pending datagrams and timers, millions at a seeded pool's start); the ring made the steady
/// state of that run 15 % faster. The order, and so every run of a seed, is the same as the
/// heap's.
struct EventQueue {
    /// `ring[b % RING]` holds the keys of bucket `b`, for `cursor < b < cursor + RING`.
    ring: Vec<Vec<Reverse<Key>>>,
    /// The keys of bucket `cursor`, the one being drained (and of any pushed for an earlier
    /// instant, which the clock never goes back to).
    current: BinaryHeap<Reverse<Key>>,
    /// Keys in the ring and in `current`.
    in_ring: usize,
    /// The bucket being drained.
    cursor: u64,
    /// Keys beyond the ring's horizon.
    far: BinaryHeap<Reverse<Key>>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
}

/// An event's place in the order: its time in nanoseconds, its sequence number, its slab slot.
type Key = (u64, u64, u32);

/// A bucket spans 2^20 ns (about 1 ms, the simulated latency).
const BUCKET_SHIFT: u32 = 20;

/// Buckets in the ring: a horizon of about 4.4 s (probe rounds and datagrams; suspicion, reap,
/// tags and anti-entropy timers wait in the heap).
const RING: u64 = 4096;

/// A virtual instant as a heap key: nanoseconds, saturating (584 years).
fn nanos(at: Duration) -> u64 {
    u64::try_from(at.as_nanos()).unwrap_or(u64::MAX)
}

impl EventQueue {
    fn new() -> EventQueue {
        EventQueue {
            ring: (0..RING).map(|_| Vec::new()).collect(),
            current: BinaryHeap::new(),
            in_ring: 0,
            cursor: 0,
            far: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
        }
    }

    fn push(&mut self, at: Duration, seq: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(ev);
                slot
            }
            None => {
                self.slab.push(Some(ev));
                // A simulation holds far fewer than 2^32 events at once.
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let key = (nanos(at), seq, slot);
        let bucket = key.0 >> BUCKET_SHIFT;
        if bucket <= self.cursor {
            self.current.push(Reverse(key));
            self.in_ring += 1;
        } else if bucket < self.cursor + RING {
            self.ring[(bucket % RING) as usize].push(Reverse(key));
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(key));
        }
    }

    /// The next event if it is due by `until`, with its time.
    fn pop_due(&mut self, until: Duration) -> Option<(Duration, Ev)> {
        let limit = nanos(until);
        loop {
            if let Some(&Reverse((at, _, slot))) = self.current.peek() {
                if at > limit {
                    return None;
                }
                self.current.pop();
                self.in_ring -= 1;
                let ev = self.slab.get_mut(slot as usize)?.take()?;
                self.free.push(slot);
                return Some((Duration::from_nanos(at), ev));
            }
            // The bucket is drained: on to the next one that may hold keys, unless `until`
            // falls in this one.
            let limit_bucket = limit >> BUCKET_SHIFT;
            if self.cursor >= limit_bucket {
                return None;
            }
            self.cursor = if self.in_ring == 0 {
                let far = self
                    .far
                    .peek()
                    .map_or(u64::MAX, |Reverse(k)| k.0 >> BUCKET_SHIFT);
                far.min(limit_bucket).max(self.cursor + 1)
            } else {
                self.cursor + 1
            };
            while let Some(&Reverse(key)) = self.far.peek() {
                let bucket = key.0 >> BUCKET_SHIFT;
                if bucket >= self.cursor + RING {
                    break;
                }
                self.far.pop();
                self.ring[(bucket.max(self.cursor) % RING) as usize].push(Reverse(key));
                self.in_ring += 1;
            }
            // The bucket reached becomes the current heap (in linear time); the drained heap's
            // room goes back to the ring.
            let slot = &mut self.ring[(self.cursor % RING) as usize];
            let mut drained = std::mem::take(&mut self.current).into_vec();
            drained.clear();
            self.current = BinaryHeap::from(std::mem::replace(slot, drained));
        }
    }

    fn len(&self) -> usize {
        self.in_ring + self.far.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Ev> {
        self.slab.iter().flatten()
    }
}

/// Per-node traffic totals.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    /// Datagrams sent, and TCP segments (with data or without: SYN, ACK, FIN).
    pub packets: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Of those, anti-entropy member lists sent without a key: datagrams
    /// ([`crate::wire::KIND_SYNC`]) and stream frames ([`crate::wire::KIND_STATE`]).
    pub sync_bytes: u64,
    /// Of those, direct tags pushes and pulls sent without a key (the periodic re-broadcasts
    /// ride in foca's packets).
    pub tags_bytes: u64,
}

/// The simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    /// Boxed, so a batch moves each into the task that runs it.
    nodes: Vec<Option<Box<Node>>>,
    lives: Vec<u32>,
    addrs: Arc<[SocketAddr]>,
    queue: EventQueue,
    seq: u64,
    now: Duration,
    rng: SmallRng,
    link_loss: HashMap<(usize, usize), f64>,
    /// Extra delay on everything a node sends (a slow member).
    slow: HashMap<usize, Duration>,
    traffic: Vec<Traffic>,
    /// Anti-entropy timers that fired on each node.
    syncs: Vec<u64>,
    /// Fewer events than this in a batch are delivered one by one ([`PARALLEL_MIN_EVENTS`]).
    batch_min: usize,
    /// Batches delivered on more than one thread.
    batches: u64,
    /// The last instant of the batch being delivered, if one is: nothing it makes may be due
    /// by then.
    window_end: Option<Duration>,
    /// The threads that run batches, when `cfg.threads` is more than one.
    pool: Option<Pool<NodeTask>>,
    /// Which task of the batch being built runs each node ([`NO_TASK`]: none).
    task_of: Vec<u32>,
    /// Every member event other than a member coming up alive (N² of those while a pool
    /// forms), with the time and the node that saw it.
    pub events: Vec<(Duration, usize, MemberEvent)>,
}

/// The simulated address of node `i`.
pub fn sim_addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddr::new(IpAddr::V4(ip), 4648)
}

/// The name of node `i`.
pub fn sim_name(i: usize) -> String {
    format!("node{i}.global")
}

impl Sim {
    /// Creates the nodes; none knows another yet.
    pub fn new(cfg: SimConfig) -> Sim {
        let addrs: Arc<[SocketAddr]> = (0..cfg.members).map(sim_addr).collect();
        let mut sim = Sim {
            nodes: (0..cfg.members).map(|_| None).collect(),
            lives: vec![0; cfg.members],
            addrs,
            queue: EventQueue::new(),
            seq: 0,
            now: Duration::ZERO,
            rng: SmallRng::seed_from_u64(cfg.seed ^ 0x5eed),
            link_loss: HashMap::new(),
            slow: HashMap::new(),
            traffic: vec![Traffic::default(); cfg.members],
            syncs: vec![0; cfg.members],
            batch_min: PARALLEL_MIN_EVENTS,
            batches: 0,
            window_end: None,
            pool: (cfg.threads > 1).then(|| Pool::new(cfg.threads - 1, run_task)),
            task_of: vec![NO_TASK; cfg.members],
            events: Vec::new(),
            cfg,
        };
        for i in 0..sim.cfg.members {
            sim.boot(i);
        }
        sim
    }

    fn node_config(&self, i: usize) -> NodeConfig {
        let mut c = NodeConfig::new(sim_name(i), self.addrs[i], self.cfg.members as u32);
        c.generation = u64::from(self.lives[i]);
        c.key = self.cfg.key.clone();
        if !self.cfg.lifeguard {
            c.swim.lifeguard = None;
        }
        c.tags = self.cfg.tags.then(|| {
            BTreeMap::from([
                ("role".to_string(), "nomad".to_string()),
                ("dc".to_string(), "dc1".to_string()),
            ])
        });
        c
    }

    // The simulator is a measuring harness: a node that cannot start (its configuration is the
    // simulator's own) invalidates every figure of the run, so it stops the run loudly.
    #[allow(clippy::panic)]
    fn boot(&mut self, i: usize) {
        let cfg = self.node_config(i);
        let seed = self
            .cfg
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(i as u64 * 7919 + u64::from(self.lives[i]));
        match Node::new(cfg, seed, self.now) {
            Ok(mut node) => {
                let out = node.drain();
                self.nodes[i] = Some(Box::new(node));
                self.absorb(i, out);
            }
            Err(e) => panic!("sim node {i} failed to start: {e}"),
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Node `i`, unless crashed.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_deref()
    }

    /// Node `i` starts joining through node `via`.
    pub fn join(&mut self, i: usize, via: usize) {
        let addr = self.addrs[via];
        let now = self.now;
        if let Some(node) = self.nodes[i].as_mut() {
            let _ = node.join(addr, now);
            let out = node.drain();
            self.absorb(i, out);
        }
    }

    /// Node `i` stops at once (no leave): a crash.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.lives[i] += 1;
    }

    /// Node `i` starts again with a new generation (after a crash) and joins through `via`.
    pub fn restart(&mut self, i: usize, via: usize) {
        self.crash(i);
        self.boot(i);
        self.join(i, via);
    }

    /// Every running node in `nodes` learns every other one as alive, without broadcasting it:
    /// a pool restarting from saved member lists, formed without N joins' worth of gossip.
    pub fn seed(&mut self, nodes: std::ops::Range<usize>) {
        let nodes = nodes.start..nodes.end.min(self.nodes.len());
        let ids: Vec<(usize, NodeId)> = nodes
            .clone()
            .filter(|&j| self.nodes[j].is_some())
            .map(|j| {
                let id = NodeId::new(self.addrs[j], &sim_name(j), u64::from(self.lives[j]));
                (j, id)
            })
            .collect();
        let now = self.now;
        for i in nodes {
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            let others = ids
                .iter()
                .filter(|(j, _)| *j != i)
                .map(|(_, id)| id.clone());
            node.learn(others, now);
            let out = node.drain();
            self.absorb(i, out);
        }
    }

    /// Node `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(node) = self.nodes[i].as_mut() {
            node.leave(now);
            let out = node.drain();
            self.absorb(i, out);
        }
    }

    /// Node `i` force-leaves the member named `name`; whether node `i` runs and knew it.
    pub fn force_leave(&mut self, i: usize, name: &str, prune: bool) -> bool {
        let now = self.now;
        let Some(node) = self.nodes[i].as_mut() else {
            return false;
        };
        let known = node.force_leave(name, prune, now);
        let out = node.drain();
        self.absorb(i, out);
        known
    }

    /// Sets the loss on the one-way link `from → to` (1.0 cuts it).
    pub fn set_link_loss(&mut self, from: usize, to: usize, loss: f64) {
        self.link_loss.insert((from, to), loss);
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.set_link_loss(x, y, 1.0);
                self.set_link_loss(y, x, 1.0);
            }
        }
    }

    /// Delays everything node `i` sends (datagrams, stream frames and answers) by `delay`, as a
    /// member whose packets queue behind a saturated link or a stalled process; zero restores it.
    pub fn set_slow(&mut self, i: usize, delay: Duration) {
        if delay.is_zero() {
            self.slow.remove(&i);
        } else {
            self.slow.insert(i, delay);
        }
    }

    fn slowness(&self, i: usize) -> Duration {
        if self.slow.is_empty() {
            return Duration::ZERO;
        }
        self.slow.get(&i).copied().unwrap_or_default()
    }

    /// The node whose address is `addr` ([`sim_addr`] read backwards, so a packet costs no
    /// hashing of its address).
    fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        let IpAddr::V4(ip) = addr.ip() else {
            return None;
        };
        let [_, a, b, c] = ip.octets();
        let i = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
        (self.addrs.get(i) == Some(&addr)).then_some(i)
    }

    /// What waits in the event queue, by kind (`kind count`, most first), with the bytes of
    /// the payloads it holds: where a large run's memory goes.
    pub fn queue_census(&self) -> String {
        let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut payload = 0usize;
        for ev in self.queue.iter() {
            let kind = match ev {
                Ev::Deliver { bytes, .. } => {
                    payload += bytes.capacity();
                    "datagram"
                }
                Ev::StreamOpen { frame, .. } | Ev::StreamReply { frame, .. } => {
                    payload += frame.capacity();
                    "stream frame"
                }
                Ev::StreamFailed { .. } => "stream failed",
                Ev::Timer { timer, .. } => match timer {
                    NodeTimer::Foca(foca::Timer::SuspicionTimeout { .. }) => "suspicion timeout",
                    NodeTimer::Foca(foca::Timer::ChangeSuspectToDown { .. }) => "suspect to down",
                    NodeTimer::Foca(foca::Timer::RemoveDown(_)) => "remove down",
                    NodeTimer::Foca(foca::Timer::SendNack { .. }) => "send nack",
                    NodeTimer::Foca(_) => "other foca timer",
                    _ => "node timer",
                },
            };
            *kinds.entry(kind).or_default() += 1;
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|(_, n)| Reverse(*n));
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "queue {} events ({} B each) + {} MB of payloads: {}",
            self.queue.len(),
            std::mem::size_of::<Option<Ev>>(),
            payload >> 20,
            kinds.join(", ")
        )
    }

    /// Restores every link to the global loss.
    pub fn heal(&mut self) {
        self.link_loss.clear();
    }

    /// Sets the global loss.
    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        debug_assert!(
            self.window_end.is_none_or(|end| at > end),
            "an event for {at:?} made inside the batch window ending {:?}: a timer shorter than MAX_LOOKAHEAD?",
            self.window_end
        );
        self.seq += 1;
        self.queue.push(at, self.seq, ev);
    }

    fn absorb(&mut self, i: usize, out: Output) {
        let now = self.now;
        for ev in out.events {
            if ev.status == Some(MemberStatus::Alive) {
                continue;
            }
            self.events.push((now, i, ev));
        }
        for (delay, timer) in out.timers {
            let life = self.lives[i];
            self.push(
                now + delay,
                Ev::Timer {
                    node: i,
                    life,
                    timer,
                },
            );
        }
        for req in out.streams {
            self.start_stream(i, req);
        }
        for (to, bytes) in out.packets {
            let t = &mut self.traffic[i];
            t.packets += 1;
            t.bytes += bytes.len() as u64;
            // Without a key the kind is the first byte in clear.
            if self.cfg.key.is_none() {
                match bytes.first() {
                    Some(&crate::wire::KIND_SYNC) => t.sync_bytes += bytes.len() as u64,
                    Some(&(crate::wire::KIND_TAGS_PUSH | crate::wire::KIND_TAGS_PULL)) => {
                        t.tags_bytes += bytes.len() as u64
                    }
                    _ => {}
                }
            }
            let Some(dst) = self.node_at(to) else {
                continue;
            };
            let loss = self.loss(i, dst);
            if loss > 0.0 && self.rng.random::<f64>() < loss {
                continue;
            }
            let at = now + self.cfg.latency + self.jitter() + self.slowness(i);
            let from = self.addrs[i];
            self.push(
                at,
                Ev::Deliver {
                    to: dst,
                    from,
                    bytes,
                },
            );
        }
    }

    fn loss(&self, from: usize, to: usize) -> f64 {
        if self.link_loss.is_empty() {
            return self.cfg.loss;
        }
        self.link_loss
            .get(&(from, to))
            .copied()
            .unwrap_or(self.cfg.loss)
    }

    fn jitter(&mut self) -> Duration {
        if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.cfg.jitter.mul_f64(self.rng.random::<f64>())
        }
    }

    /// Counts a stream frame as sent by node `i`, in segments (a member list as anti-entropy
    /// bytes when there is no key to hide its kind).
    fn count_frame(&mut self, i: usize, frame: &[u8], purpose: StreamPurpose) {
        let t = &mut self.traffic[i];
        t.packets += segments(frame.len());
        t.bytes += frame.len() as u64;
        if self.cfg.key.is_none() && purpose == StreamPurpose::Exchange {
            t.sync_bytes += frame.len() as u64;
        }
    }

    /// Counts TCP's segments without data (SYN, SYN-ACK, ACK, FIN) as packets node `i` sent;
    /// they carry no payload, so no bytes.
    fn count_control(&mut self, i: usize, n: u64) {
        self.traffic[i].packets += n;
    }

    /// How long a connection from `from` to `to` takes to open: a round trip, plus Linux's
    /// initial retransmission timeout (1 s, doubling) for each SYN or SYN-ACK the links lose.
    fn handshake_delay(&mut self, from: usize, to: usize) -> Duration {
        let mut delay = self.cfg.latency * 2 + self.jitter();
        for (a, b) in [(from, to), (to, from)] {
            let loss = self.loss(a, b);
            let mut timeout = SYN_RETRANSMIT;
            while loss > 0.0 && self.rng.random::<f64>() < loss && timeout <= SYN_RETRANSMIT * 4 {
                delay += timeout;
                timeout *= 2;
            }
        }
        delay
    }

    /// How long `bytes` take from node `from` to node `to` on a stream: one-way latency, plus a
    /// retransmission timeout for every segment the link loses.
    fn stream_delay(&mut self, from: usize, to: usize, bytes: usize) -> Duration {
        let loss = self.loss(from, to);
        let mut delay = self.cfg.latency + self.jitter();
        for _ in 0..=bytes / SEGMENT {
            if loss > 0.0 && self.rng.random::<f64>() < loss {
                delay += RETRANSMIT;
            }
        }
        delay
    }

    fn start_stream(&mut self, i: usize, req: StreamRequest) {
        let now = self.now;
        let life = self.lives[i];
        let purpose = req.purpose;
        self.count_frame(i, &req.body, purpose);
        // SYN, ACK and FIN.
        self.count_control(i, 3);
        let failed = |to| Ev::StreamFailed {
            node: i,
            life,
            to,
            purpose,
        };
        let Some(dst) = self.node_at(req.to) else {
            self.push(now + STREAM_CONNECT_TIMEOUT, failed(req.to));
            return;
        };
        if self.loss(i, dst) >= 1.0 || self.loss(dst, i) >= 1.0 {
            self.push(now + STREAM_CONNECT_TIMEOUT, failed(req.to));
            return;
        }
        // The handshake before the frame's one-way trip; the receiver's SYN-ACK, FIN and an ACK
        // a segment.
        let handshake = self.handshake_delay(i, dst);
        self.count_control(dst, 2 + segments(req.body.len()));
        let at = now + handshake + self.stream_delay(i, dst, req.body.len()) + self.slowness(i);
        self.push(
            at,
            Ev::StreamOpen {
                to: dst,
                from: i,
                life,
                frame: req.body,
                purpose,
            },
        );
    }

    /// Tells `from` (in its life `life`), one latency from now, that its stream to `to` failed.
    fn stream_failed(&mut self, from: usize, life: u32, to: SocketAddr, purpose: StreamPurpose) {
        let at = self.now + self.cfg.latency;
        self.push(
            at,
            Ev::StreamFailed {
                node: from,
                life,
                to,
                purpose,
            },
        );
    }

    /// Sends node `to`'s answer to the stream `from` opened (in its life `life`), or fails the
    /// stream when there is none.
    fn answer_stream(
        &mut self,
        to: usize,
        from: usize,
        life: u32,
        answer: Option<Vec<u8>>,
        purpose: StreamPurpose,
    ) {
        let to_addr = self.addrs[to];
        match answer {
            Some(reply) => {
                self.count_frame(to, &reply, purpose);
                self.count_control(from, segments(reply.len()));
                let at = self.now + self.stream_delay(to, from, reply.len()) + self.slowness(to);
                self.push(
                    at,
                    Ev::StreamReply {
                        node: from,
                        life,
                        to: to_addr,
                        frame: reply,
                        purpose,
                    },
                );
            }
            None => self.stream_failed(from, life, to_addr, purpose),
        }
    }

    /// Processes events until virtual time `until`.
    pub fn run_until(&mut self, until: Duration) {
        // Nothing a node sends arrives sooner than one latency later, and no timer a running
        // node asks for fires sooner than `MAX_LOOKAHEAD` (foca's shortest is 200 ms), so the
        // events due within the smaller of the two after the first one pending cannot have
        // caused each other.
        let lookahead = self.cfg.latency.min(MAX_LOOKAHEAD);
        let parallel = self.pool.is_some() && !lookahead.is_zero();
        while let Some((at, ev)) = self.queue.pop_due(until) {
            if !parallel {
                self.now = at;
                self.deliver(ev);
                continue;
            }
            let last = (at + lookahead - Duration::from_nanos(1)).min(until);
            self.window_end = Some(last);
            let mut batch = vec![(at, ev)];
            while let Some(next) = self.queue.pop_due(last) {
                batch.push(next);
            }
            if batch.len() < self.batch_min {
                for (at, ev) in batch {
                    self.now = at;
                    self.deliver(ev);
                }
            } else {
                self.deliver_batch(batch);
            }
            self.window_end = None;
        }
        self.now = until;
    }

    /// Runs for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs in `step`s until `done` holds or `limit` passes; returns the time it took.
    pub fn run_until_true(
        &mut self,
        step: Duration,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start <= limit {
            if done(self) {
                return Some(self.now - start);
            }
            self.run_for(step);
        }
        None
    }

    fn deliver(&mut self, ev: Ev) {
        let at = self.now;
        let handled = match self.target(&ev) {
            Some(i) => self.nodes[i]
                .as_mut()
                .map(|node| run_on(node, at, &ev, &self.addrs)),
            None => None,
        };
        self.settle(ev, handled);
    }

    /// The node `ev` runs on, if it runs on one: that node is up and, for an event of a life
    /// (a timer, a stream's answer), still lives it.
    fn target(&self, ev: &Ev) -> Option<usize> {
        let (node, life) = match *ev {
            Ev::Deliver { to, .. } => (to, None),
            Ev::StreamOpen { to, from, life, .. } => {
                if self.lives[from] != life {
                    return None;
                }
                (to, None)
            }
            Ev::StreamReply { node, life, .. }
            | Ev::StreamFailed { node, life, .. }
            | Ev::Timer { node, life, .. } => (node, Some(life)),
        };
        let alive = self.nodes[node].is_some() && life.is_none_or(|l| self.lives[node] == l);
        alive.then_some(node)
    }

    /// The simulator's side of an event, once its node (if any) has run it: what the node
    /// produced is sent, a stream's answer travels back, a refused stream fails.
    fn settle(&mut self, ev: Ev, handled: Option<Handled>) {
        match ev {
            Ev::StreamOpen {
                to,
                from,
                life,
                purpose,
                ..
            } => {
                if self.lives[from] != life {
                    return;
                }
                let Some(handled) = handled else {
                    // Nobody listens: refused.
                    return self.stream_failed(from, life, self.addrs[to], purpose);
                };
                self.absorb(to, handled.out);
                self.answer_stream(to, from, life, handled.answer, purpose);
            }
            Ev::Timer { node, timer, .. } => {
                if let Some(handled) = handled {
                    if timer == NodeTimer::Sync {
                        self.syncs[node] += 1;
                    }
                    self.absorb(node, handled.out);
                }
            }
            Ev::Deliver { to: node, .. }
            | Ev::StreamReply { node, .. }
            | Ev::StreamFailed { node, .. } => {
                if let Some(handled) = handled {
                    self.absorb(node, handled.out);
                }
            }
        }
    }

    /// Delivers a batch of events that no other event of the batch can have caused (all due
    /// within one latency of the first: whatever a node sends arrives a latency or more after
    /// it was sent). Each node runs its own events in order, as one task of the pool; what the
    /// nodes produced is then settled on this thread in the batch's order, so a run is the same
    /// event for event as one event at a time.
    fn deliver_batch(&mut self, batch: Vec<(Duration, Ev)>) {
        let Some(pool) = self.pool.take() else {
            for (at, ev) in batch {
                self.now = at;
                self.deliver(ev);
            }
            return;
        };
        self.batches += 1;
        let targets: Vec<Option<usize>> = batch.iter().map(|(_, ev)| self.target(ev)).collect();
        let mut times = Vec::with_capacity(batch.len());
        let mut slots: Vec<Option<(Ev, Option<Handled>)>> = Vec::with_capacity(batch.len());
        let mut tasks: Vec<NodeTask> = Vec::new();
        for (j, ((at, ev), target)) in batch.into_iter().zip(targets).enumerate() {
            times.push(at);
            let task = target.and_then(|i| self.task_for(i, &mut tasks));
            match task {
                Some(t) => {
                    tasks[t].events.push((j, at, ev));
                    slots.push(None);
                }
                None => slots.push(Some((ev, None))),
            }
        }
        let done = pool.run_all(tasks);
        self.pool = Some(pool);
        for task in done {
            self.task_of[task.index] = NO_TASK;
            for ((j, _, ev), handled) in task.events.into_iter().zip(task.handled) {
                slots[j] = Some((ev, Some(handled)));
            }
            self.nodes[task.index] = Some(task.node);
        }
        for (at, slot) in times.into_iter().zip(slots) {
            if let Some((ev, handled)) = slot {
                self.now = at;
                self.settle(ev, handled);
            }
        }
    }

    /// The task of this batch that runs node `i`'s events: made (the node moved into it) for
    /// the node's first event.
    fn task_for(&mut self, i: usize, tasks: &mut Vec<NodeTask>) -> Option<usize> {
        if let Some(&t) = self.task_of.get(i)
            && t != NO_TASK
        {
            return Some(t as usize);
        }
        let node = self.nodes.get_mut(i)?.take()?;
        let t = tasks.len();
        self.task_of[i] = u32::try_from(t).ok()?;
        tasks.push(NodeTask {
            index: i,
            node,
            events: Vec::new(),
            handled: Vec::new(),
            addrs: self.addrs.clone(),
        });
        Some(t)
    }

    /// Whether every running node other than `subject` sees member `name` with `status`.
    pub fn all_see(&self, name: &str, status: Option<MemberStatus>, subject: usize) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != subject)
            .filter_map(|(_, n)| n.as_ref())
            .all(|n| n.status_of(name) == status)
    }

    /// Whether every running node sees every running node alive.
    pub fn converged(&self) -> bool {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        running.iter().all(|&i| {
            let node = self.nodes[i].as_ref();
            running.iter().all(|&j| {
                node.is_some_and(|n| n.status_of(&sim_name(j)) == Some(MemberStatus::Alive))
            })
        })
    }

    /// Traffic each node has sent so far.
    pub fn traffic(&self) -> &[Traffic] {
        &self.traffic
    }

    /// How many times a running node marked another running (never crashed) node `failed`.
    pub fn false_failures(&self, since: Duration, crashed: &[usize]) -> usize {
        let crashed_names: Vec<String> = crashed.iter().map(|&i| sim_name(i)).collect();
        self.events
            .iter()
            .filter(|(t, _, e)| {
                *t >= since
                    && e.status == Some(MemberStatus::Failed)
                    && !crashed_names.contains(&e.name)
            })
            .count()
    }
}

/// What a node did with an event: what it produced, and for a stream opened to it, its answer.
struct Handled {
    out: Output,
    answer: Option<Vec<u8>>,
}

/// The widest batch window: no timer a running node asks for is shorter (foca's shortest, its
/// periodic gossip, is 200 ms; the node's own are seconds).
const MAX_LOOKAHEAD: Duration = Duration::from_millis(1);

/// Fewer events than this in a batch are delivered one by one on the simulator's thread (the
/// threads would cost more than they share).
const PARALLEL_MIN_EVENTS: usize = 8;

/// Runs event `ev`, due at `at`, on `node`, the node [`Sim::target`] chose for it.
fn run_on(node: &mut Node, at: Duration, ev: &Ev, addrs: &[SocketAddr]) -> Handled {
    let mut answer = None;
    match ev {
        Ev::Deliver { from, bytes, .. } => {
            let _ = node.handle_packet(*from, bytes, at);
        }
        Ev::StreamOpen { from, frame, .. } => {
            // The stream comes from the node's IP and an ephemeral port.
            let peer = SocketAddr::new(addrs[*from].ip(), 40000);
            answer = node.handle_stream(peer, frame, at).ok().flatten();
        }
        Ev::StreamReply {
            to, frame, purpose, ..
        } => {
            let _ = match purpose {
                StreamPurpose::Exchange => node.handle_stream_reply(*to, frame, at),
                StreamPurpose::Ping => node.handle_ping_reply(*to, frame, at),
            };
        }
        Ev::StreamFailed {
            to,
            purpose: StreamPurpose::Exchange,
            ..
        } => node.stream_failed(*to, at),
        // A fallback ping's failure needs nothing: the probe fails as it would have.
        Ev::StreamFailed {
            purpose: StreamPurpose::Ping,
            ..
        } => {}
        Ev::Timer { timer, .. } => node.handle_timer(timer.clone(), at),
    }
    Handled {
        out: node.drain(),
        answer,
    }
}

/// `task_of` for a node with no task in the batch.
const NO_TASK: u32 = u32::MAX;

/// One node and its events of a batch, run on whichever thread of the pool takes it.
struct NodeTask {
    index: usize,
    node: Box<Node>,
    events: Vec<(usize, Duration, Ev)>,
    /// What the node did with each event, in order.
    handled: Vec<Handled>,
    addrs: Arc<[SocketAddr]>,
}

/// Runs a task's events on its node, in order.
fn run_task(task: &mut NodeTask) {
    for (_, at, ev) in &task.events {
        let handled = run_on(&mut task.node, *at, ev, &task.addrs);
        task.handled.push(handled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The event queue gives events back in (time, sequence) order, whatever bucket, the
    /// current one, the ring or the heap beyond it, they waited in, and never one after `until`.
    #[test]
    fn the_event_queue_keeps_time_then_sequence_order() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut q = EventQueue::new();
        let mut now = Duration::ZERO;
        let mut seq = 0u64;
        let mut expected: Vec<(Duration, u64)> = Vec::new();
        let mut got: Vec<(Duration, u64)> = Vec::new();
        let ev = |n: u64| Ev::Timer {
            node: n as usize,
            life: 0,
            timer: NodeTimer::Reap,
        };
        for round in 0..2000u64 {
            // Delays from nothing (the bucket being drained) to a minute (the heap).
            for _ in 0..rng.random_range(0..8) {
                let delay = match rng.random_range(0..4) {
                    0 => Duration::ZERO,
                    1 => Duration::from_micros(rng.random_range(0..3000)),
                    2 => Duration::from_millis(rng.random_range(0..5000)),
                    _ => Duration::from_secs(rng.random_range(0..60)),
                };
                seq += 1;
                q.push(now + delay, seq, ev(seq));
                expected.push((now + delay, seq));
            }
            // Every tenth round runs far ahead, as a quiet simulation does.
            let step = if round % 10 == 0 { 7000 } else { 3 };
            let until = now + Duration::from_millis(rng.random_range(0..step));
            while let Some((at, e)) = q.pop_due(until) {
                assert!(
                    at <= until && at >= now,
                    "{at:?} outside {now:?}..={until:?}"
                );
                now = at;
                let Ev::Timer { node, .. } = e else {
                    panic!("not the event pushed")
                };
                got.push((at, node as u64));
            }
            now = until;
        }
        while let Some((at, e)) = q.pop_due(Duration::MAX) {
            let Ev::Timer { node, .. } = e else {
                panic!("not the event pushed")
            };
            got.push((at, node as u64));
        }
        expected.sort();
        assert_eq!(q.len(), 0);
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "the queue's order differs from (time, sequence)"
        );
    }

    fn cluster(n: usize, seed: u64) -> Sim {
        let mut sim = Sim::new(SimConfig::new(n, seed));
        for i in 1..n {
            sim.join(i, 0);
        }
        let took = sim.run_until_true(S / 10, S * 30, Sim::converged);
        assert!(took.is_some(), "{n} nodes did not converge in 30 s");
        sim
    }

    #[test]
    fn joins_converge_and_tags_spread() {
        let sim = cluster(8, 1);
        let node = sim.node(3).unwrap();
        let members = node.members();
        assert_eq!(members.len(), 8);
        assert!(
            members
                .iter()
                .all(|m| m.tags.as_ref().unwrap()["role"] == "nomad")
        );
    }

    #[test]
    fn crash_is_failed_everywhere_then_restart_is_alive() {
        let mut sim = cluster(5, 2);
        sim.crash(4);
        let name = sim_name(4);
        let took = sim.run_until_true(S / 10, S * 20, |s| {
            s.all_see(&name, Some(MemberStatus::Failed), 4)
        });
        assert!(took.is_some_and(|t| t <= S * 8), "{took:?}");
        assert_eq!(sim.false_failures(Duration::ZERO, &[4]), 0);
        sim.restart(4, 0);
        let took = sim.run_until_true(S / 10, S * 20, |s| {
            s.all_see(&name, Some(MemberStatus::Alive), 4)
        });
        assert!(took.is_some(), "restart not seen alive");
    }

    #[test]
    fn graceful_leave_is_left() {
        let mut sim = cluster(4, 3);
        sim.leave(2);
        sim.run_for(S);
        sim.crash(2);
        let name = sim_name(2);
        let took = sim.run_until_true(S / 10, S * 20, |s| {
            s.all_see(&name, Some(MemberStatus::Left), 2)
        });
        assert!(took.is_some(), "leave not seen as left");
    }

    #[test]
    fn force_leave_and_prune() {
        let mut sim = cluster(4, 4);
        sim.crash(3);
        let name = sim_name(3);
        assert!(
            sim.run_until_true(S / 10, S * 20, |s| s.all_see(
                &name,
                Some(MemberStatus::Failed),
                3
            ))
            .is_some()
        );
        assert!(sim.force_leave(0, &name, false));
        assert!(
            sim.run_until_true(S / 10, S * 10, |s| s.all_see(
                &name,
                Some(MemberStatus::Left),
                3
            ))
            .is_some()
        );
        assert!(sim.force_leave(1, &name, true));
        assert!(
            sim.run_until_true(S / 10, S * 10, |s| s.all_see(&name, None, 3))
                .is_some()
        );
    }

    /// The force-leave takes effect (the forcing node marks the member `leaving` at once and the
    /// intent reaches the others), then the healthy member's refutation brings it back `alive`
    /// everywhere, and nobody ever marks it `left` or `failed`.
    #[test]
    fn force_leave_of_a_healthy_member_is_refuted() {
        let mut sim = cluster(4, 5);
        let name = sim_name(2);
        let since = sim.now();
        assert!(sim.force_leave(0, &name, false), "node 0 knows {name}");
        assert_eq!(
            sim.node(0).unwrap().status_of(&name),
            Some(MemberStatus::Leaving),
            "the force-leave took no effect on the node that forced it"
        );
        let refuted = sim.run_until_true(S / 10, S * 5, |s| {
            s.all_see(&name, Some(MemberStatus::Alive), 2)
        });
        assert!(refuted.is_some(), "{name} not alive again everywhere");
        let about: Vec<(usize, Option<MemberStatus>)> = sim
            .events
            .iter()
            .filter(|(t, _, e)| *t >= since && e.name == name)
            .map(|(_, i, e)| (*i, e.status))
            .collect();
        // The intent went out: another node saw the member leaving too (which ones depends on
        // whether the intent or the refutation reaches them first).
        assert!(
            about
                .iter()
                .any(|&(i, s)| i != 0 && s == Some(MemberStatus::Leaving)),
            "the force-leave intent reached nobody: {about:?}"
        );
        assert!(
            about.iter().all(|(_, s)| *s == Some(MemberStatus::Leaving)),
            "{about:?}"
        );
        assert_eq!(
            sim.node(2).unwrap().status_of(&name),
            Some(MemberStatus::Alive)
        );
        sim.run_for(S * 5);
        assert!(sim.all_see(&name, Some(MemberStatus::Alive), 2));
    }

    #[test]
    fn partition_then_heal() {
        let mut sim = cluster(6, 6);
        sim.partition(&[0, 1, 2], &[3, 4, 5]);
        let far = sim_name(5);
        assert!(
            sim.run_until_true(S / 10, S * 20, |s| {
                [0, 1, 2]
                    .iter()
                    .all(|&i| s.node(i).unwrap().status_of(&far) == Some(MemberStatus::Failed))
            })
            .is_some()
        );
        // No restarts: foca's announces to down members and the members' rejoin with renewed
        // identities bring the two sides back together.
        sim.heal();
        assert!(
            sim.run_until_true(S, S * 300, Sim::converged).is_some(),
            "sides did not merge after the partition healed"
        );
    }

    #[test]
    fn flapping_link_settles_alive() {
        let mut sim = cluster(5, 12);
        for round in 0..6 {
            let loss = if round % 2 == 0 { 1.0 } else { 0.0 };
            sim.set_link_loss(0, 4, loss);
            sim.set_link_loss(4, 0, loss);
            sim.run_for(S * 2);
        }
        sim.heal();
        assert!(sim.run_until_true(S, S * 300, Sim::converged).is_some());
    }

    #[test]
    fn loss_does_not_cause_false_failures() {
        let mut sim = cluster(20, 7);
        sim.set_loss(0.05);
        let since = sim.now();
        sim.run_for(S * 60);
        assert_eq!(sim.false_failures(since, &[]), 0);
        assert!(sim.converged());
    }

    #[test]
    fn one_way_partition_is_detected() {
        let mut sim = cluster(5, 8);
        // Node 4 can send but hears nothing.
        for i in 0..4 {
            sim.set_link_loss(i, 4, 1.0);
        }
        let name = sim_name(4);
        assert!(
            sim.run_until_true(S / 10, S * 20, |s| {
                (0..4).all(|i| s.node(i).unwrap().status_of(&name) != Some(MemberStatus::Alive))
            })
            .is_some()
        );
    }

    #[test]
    fn mismatched_keys_never_merge() {
        let mut cfg = SimConfig::new(2, 9);
        cfg.key = Some(vec![1; 32]);
        let mut sim = Sim::new(cfg);
        // Swap node 1 for one with another key.
        let mut other = sim.node_config(1);
        other.key = Some(vec![2; 32]);
        let mut node = Node::new(other, 99, sim.now()).unwrap();
        let out = node.drain();
        sim.nodes[1] = Some(Box::new(node));
        sim.absorb(1, out);
        sim.join(1, 0);
        sim.run_for(S * 10);
        assert_eq!(sim.node(0).unwrap().members().len(), 1);
        assert_eq!(sim.node(1).unwrap().members().len(), 1);
        assert!(sim.node(0).unwrap().counters().decrypt_failures > 0);
    }

    /// intent_max.py against a whole pool: Leave(prune) intents about node 2, sent to every other
    /// member with node 1's identity and source address (an attacker on the LAN). Far ahead of
    /// the clocks they are ignored; inside the window they prune, and the victim's refutation
    /// brings it back, attack after attack, without the clock ever reaching `u64::MAX`.
    #[test]
    fn a_forged_prune_intent_cannot_evict_a_member_for_good() {
        use crate::node::tests::{foca_packet, prune_intent};
        let mut sim = cluster(4, 13);
        let victim = sim_name(2);
        let posing_as = sim.node(1).map(|n| n.identity().clone()).expect("running");
        let window = crate::MAX_LTIME_AHEAD;
        for ltime in [u64::MAX, window, 2 * window, u64::MAX] {
            for i in [0, 2, 3] {
                let me = sim.node(i).map(|n| n.identity().clone()).expect("running");
                let bytes = foca_packet(
                    &posing_as,
                    &me,
                    foca::Message::Broadcast,
                    &[],
                    &[prune_intent(&victim, ltime)],
                );
                let (now, from) = (sim.now(), posing_as.addr());
                sim.push(now, Ev::Deliver { to: i, from, bytes });
            }
            // Deliver the forgeries (nothing they cause is due this soon).
            sim.run_for(Duration::from_micros(1));
            let evicted = [0, 3]
                .iter()
                .filter(|&&i| sim.node(i).is_some_and(|n| n.status_of(&victim).is_none()))
                .count();
            if ltime == u64::MAX {
                assert_eq!(evicted, 0, "a prune at u64::MAX was applied");
            } else {
                assert_eq!(
                    evicted, 2,
                    "a prune inside the window is an intent like any"
                );
            }
            let back = sim.run_until_true(S / 10, S * 20, |s| {
                s.all_see(&victim, Some(MemberStatus::Alive), 2)
            });
            assert!(back.is_some(), "{victim} evicted by a prune at {ltime}");
            let clock = sim.node(2).map(|n| n.stats()["member_time"].clone());
            assert_ne!(clock.as_deref(), Some(u64::MAX.to_string().as_str()));
        }
    }

    /// A pool that forms by joins, with loss, a crash and a restart, runs the same event for
    /// event with its nodes on two threads (every batch of two or more events split between
    /// them) as on one.
    #[test]
    fn threads_run_the_same_events_as_one_thread() {
        let run = |threads| {
            let mut cfg = SimConfig::new(40, 5);
            cfg.loss = 0.05;
            cfg.threads = threads;
            let mut sim = Sim::new(cfg);
            sim.batch_min = 2;
            for i in 1..40 {
                sim.join(i, 0);
                sim.run_for(S / 100);
            }
            sim.run_for(S * 5);
            sim.crash(7);
            sim.run_for(S * 10);
            sim.restart(7, 0);
            sim.run_for(S * 5);
            let traffic: Vec<(u64, u64)> =
                sim.traffic().iter().map(|t| (t.packets, t.bytes)).collect();
            (traffic, sim.events.clone(), sim.batches)
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.2, 0, "one thread delivers one event at a time");
        assert!(two.2 > 100, "only {} batches ran on two threads", two.2);
        assert_eq!(one.0, two.0, "traffic differs");
        assert_eq!(one.1, two.1, "member events differ");
    }

    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let mut sim = cluster(6, seed);
            sim.set_loss(0.1);
            sim.crash(5);
            sim.run_for(S * 10);
            sim.traffic().iter().map(|t| t.packets).collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
    }
}

/// Figures of the slow-member scenario (see [`slow_member`]).
#[derive(Clone, Debug)]
pub struct SlowReport {
    /// Members in the pool, the slow one included.
    pub members: usize,
    /// Whether the nodes ran Lifeguard.
    pub lifeguard: bool,
    /// How late everything the slow member sends arrives.
    pub delay: Duration,
    /// How long the slow member was slow (virtual time).
    pub run: Duration,
    /// `failed` events about healthy members (any node, any healthy member).
    pub healthy_failed: usize,
    /// Healthy members marked `failed` by at least one node.
    pub healthy_members_failed: usize,
    /// `failed` events about the slow member.
    pub slow_failed: usize,
    /// The slow member's highest Lifeguard health score, sampled every second.
    pub slow_max_health: u32,
}

/// One member of a seeded pool becomes slow (everything it sends arrives `delay` late) for
/// `run` of virtual time: how many times healthy members are marked `failed`, with Lifeguard or
/// without ([`SimConfig::lifeguard`]).
pub fn slow_member(cfg: SimConfig, delay: Duration, run: Duration) -> SlowReport {
    let n = cfg.members.max(3);
    let lifeguard = cfg.lifeguard;
    let mut sim = Sim::new(SimConfig { members: n, ..cfg });
    sim.seed(0..n);
    sim.run_for(Duration::from_secs(10));
    let slow = 1;
    let since = sim.now();
    sim.set_slow(slow, delay);
    let mut slow_max_health = 0u32;
    let end = sim.now() + run;
    while sim.now() < end {
        sim.run_for(Duration::from_secs(1));
        if let Some(score) = sim.node(slow).and_then(|node| {
            node.stats()
                .get("health_score")
                .and_then(|s| s.parse().ok())
        }) {
            slow_max_health = slow_max_health.max(score);
        }
    }
    let slow_name = sim_name(slow);
    let failed: Vec<&MemberEvent> = sim
        .events
        .iter()
        .filter(|(t, _, e)| *t >= since && e.status == Some(MemberStatus::Failed))
        .map(|(_, _, e)| e)
        .collect();
    let healthy: Vec<&&MemberEvent> = failed.iter().filter(|e| e.name != slow_name).collect();
    let mut names: Vec<&str> = healthy.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    SlowReport {
        members: n,
        lifeguard,
        delay,
        run,
        healthy_failed: healthy.len(),
        healthy_members_failed: names.len(),
        slow_failed: failed.len() - healthy.len(),
        slow_max_health,
    }
}

/// Figures of one measurement run (see [`measure`]).
#[derive(Clone, Debug)]
pub struct Report {
    /// Members in the cluster, the joiner included.
    pub members: usize,
    /// Time for the initial cluster to converge (virtual), from the first join.
    pub converge: Option<Duration>,
    /// Of that, the time from the last join to the pool being complete (no member-pair
    /// missing), checked every second (every 5 s above 2,000 members).
    pub converge_after_last_join: Option<Duration>,
    /// From a new member's join to every member seeing it alive.
    pub join_known_by_all: Option<Duration>,
    /// From a crash to every member seeing it failed.
    pub crash_known_by_all: Option<Duration>,
    /// `failed` events about members that never crashed.
    pub false_failures: usize,
    /// From the pool being complete to every node having piggybacked the last of the
    /// formation's membership updates (bounded by one anti-entropy interval), plus one tags
    /// interval for the tags' relays to end; the traffic windows start after it.
    pub settle: Option<Duration>,
    /// Member-pairs still not seeing each other alive when the figures start (0 once the pool
    /// has converged).
    pub missing_at_start: usize,
    /// Traffic over the plan's window (see [`Plan::window`]), from the moment the pool formed
    /// and settled.
    pub steady: WindowTraffic,
    /// Traffic over one whole anti-entropy interval from the same moment (or the plan's window if
    /// that is longer): every member's timers fire the same number of times in it, whatever their
    /// phase, so it holds each member's push/pull and its tags re-broadcasts.
    pub round: WindowTraffic,
}

/// Traffic sent by the pool's members (the joiner excluded) over one window.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowTraffic {
    /// Length of the window (virtual time).
    pub window: Duration,
    /// Bytes sent per member per second.
    pub bytes_per_member_sec: f64,
    /// Datagrams sent per member per second.
    pub packets_per_member_sec: f64,
    /// Of the bytes, anti-entropy member lists per member per second.
    pub sync_bytes_per_member_sec: f64,
    /// Of the bytes, direct tags pushes and pulls per member per second (the periodic
    /// re-broadcasts ride in SWIM packets).
    pub tags_bytes_per_member_sec: f64,
    /// Anti-entropy rounds started in the window, per member (each round is a push/pull).
    pub sync_rounds_per_member: f64,
}

impl WindowTraffic {
    fn between(before: &[Traffic], after: &[Traffic], members: usize, window: Duration) -> Self {
        let (mut bytes, mut packets, mut sync, mut tags) = (0u64, 0u64, 0u64, 0u64);
        for (now, then) in after.iter().zip(before).take(members) {
            bytes += now.bytes - then.bytes;
            packets += now.packets - then.packets;
            sync += now.sync_bytes - then.sync_bytes;
            tags += now.tags_bytes - then.tags_bytes;
        }
        let per = (members as f64) * window.as_secs_f64().max(1e-9);
        WindowTraffic {
            window,
            bytes_per_member_sec: bytes as f64 / per,
            packets_per_member_sec: packets as f64 / per,
            sync_bytes_per_member_sec: sync as f64 / per,
            tags_bytes_per_member_sec: tags as f64 / per,
            sync_rounds_per_member: 0.0,
        }
    }
}

/// How the initial pool forms in [`measure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Everyone joins through node 0, one every `pace` (a fleet starting up, as servers do with
    /// `retry_join`); lone nodes retry their join and anti-entropy fixes stragglers.
    Join {
        /// Time between two joins.
        pace: Duration,
    },
    /// Every node starts knowing every other ([`Sim::seed`]), then runs `settle` before the
    /// figures are taken.
    Seeded {
        /// Virtual time to run before measuring.
        settle: Duration,
    },
}

impl Bootstrap {
    /// Joins at 20 ms intervals up to 2,000 members; above that a seeded pool. N joins cost
    /// every node N broadcasts to apply and relay up to `4·ceil(log10(N+1))` times over: at
    /// 10,000 members the whole run by joins takes 7.5 to 10 minutes of wall time on two vCPUs
    /// (its 40 s join storm 4 to 6 of them, the forming that completes the pool 39 s after the
    /// last join another 2 to 2.5) and 13 GB; the figures measured after it are the same.
    pub fn for_members(n: usize) -> Bootstrap {
        if n <= 2000 {
            Bootstrap::Join {
                pace: Duration::from_millis(20),
            }
        } else {
            Bootstrap::Seeded {
                settle: Duration::from_secs(10),
            }
        }
    }
}

/// What [`measure`] runs, besides the cluster itself.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// How the pool forms.
    pub bootstrap: Bootstrap,
    /// The short window over which traffic is measured, from the moment the pool formed. The
    /// figures are also taken over one whole anti-entropy interval ([`Report::round`]).
    pub window: Duration,
    /// Bound on the join and crash measurements (virtual time).
    pub limit: Duration,
    /// Bound on the initial convergence; by default `limit` or four anti-entropy intervals,
    /// whichever is longer.
    pub converge_limit: Option<Duration>,
}

impl Plan {
    /// How long a pool of `members` may take to form by joins: the plan's bound, else `limit`
    /// or four anti-entropy intervals, whichever is longer.
    pub fn converge_bound(&self, members: usize) -> Duration {
        let rounds = crate::sync_interval(members as u32).mul_f64(4.0);
        self.converge_limit
            .unwrap_or_else(|| self.limit.max(rounds))
    }
}

/// Runs the standard measurement: form a pool of `members - 1` nodes (bounded by the plan's
/// converge limit), measure steady-state traffic for the window, then a join and a crash, each
/// bounded by the plan's limit of virtual time.
pub fn measure(cfg: SimConfig, plan: Plan) -> Report {
    measure_with(cfg, plan, |_, _| {})
}

/// [`measure`], telling `progress` each phase it has finished (its name and the virtual time
/// then), for a long run to show where it is.
pub fn measure_with(
    mut cfg: SimConfig,
    plan: Plan,
    mut progress: impl FnMut(&str, Duration),
) -> Report {
    let n = cfg.members.max(3);
    cfg.members = n;
    let mut sim = Sim::new(cfg.clone());
    let joiner = n - 1;
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    // The joiner runs from the start but talks to nobody until it joins.
    let (converge, converge_after_last_join) = match plan.bootstrap {
        Bootstrap::Join { pace } => form_by_joins(&mut sim, joiner, pace, plan, &mut progress),
        Bootstrap::Seeded { settle } => {
            sim.seed(0..joiner);
            sim.run_for(settle);
            (None, None)
        }
    };
    progress(&format!("formed; {}", sim.queue_census()), sim.now());
    // Steady state starts once the formation's membership updates and tags have been piggybacked
    // their last time everywhere, so the windows measure the pool, not the tail of its forming.
    let settle = sim.run_until_true(
        Duration::from_secs(1),
        crate::sync_interval(n as u32),
        |s| {
            s.nodes
                .iter()
                .flatten()
                .all(|node| node.updates_backlog() == 0)
        },
    );
    // Then one tags interval, in which every member's tags are re-broadcast once and the
    // formation's tag relays end.
    let tags_interval = sim.node_config(0).tags_interval;
    sim.run_for(tags_interval);
    let settle = settle.map(|d| d + tags_interval);
    let missing_at_start = missing_pairs(&sim, joiner);
    progress(&format!("settled; {}", sim.queue_census()), sim.now());

    let before: Vec<Traffic> = sim.traffic().to_vec();
    let syncs_before: u64 = sim.syncs[..joiner].iter().sum();
    let syncs_since =
        |sim: &Sim| (sim.syncs[..joiner].iter().sum::<u64>() - syncs_before) as f64 / joiner as f64;
    let steady_since = sim.now();
    let round_len = plan.window.max(crate::sync_interval(n as u32));
    sim.run_for(plan.window);
    let mut steady = WindowTraffic::between(&before, sim.traffic(), joiner, plan.window);
    steady.sync_rounds_per_member = syncs_since(&sim);
    sim.run_for(round_len - plan.window);
    let mut round = WindowTraffic::between(&before, sim.traffic(), joiner, round_len);
    round.sync_rounds_per_member = syncs_since(&sim);
    progress("traffic measured", sim.now());

    let via = rng.random_range(0..joiner);
    sim.join(joiner, via);
    let joiner_name = sim_name(joiner);
    let join_known_by_all = sim.run_until_true(Duration::from_millis(100), plan.limit, |s| {
        s.all_see(&joiner_name, Some(MemberStatus::Alive), joiner)
    });
    progress("join measured", sim.now());

    let victim = rng.random_range(1..joiner);
    sim.crash(victim);
    let victim_name = sim_name(victim);
    let crash_known_by_all = sim.run_until_true(Duration::from_millis(100), plan.limit, |s| {
        s.all_see(&victim_name, Some(MemberStatus::Failed), victim)
    });
    Report {
        members: n,
        converge,
        converge_after_last_join,
        settle,
        join_known_by_all,
        crash_known_by_all,
        false_failures: sim.false_failures(steady_since, &[victim]),
        missing_at_start,
        steady,
        round,
    }
}

/// How many (node, member) pairs among the first `nodes` nodes do not see each other alive. Only
/// those nodes run while a pool forms, so a node that counts that many alive members (itself
/// included) sees every one of them.
fn missing_pairs(sim: &Sim, nodes: usize) -> usize {
    (0..nodes)
        .map(|i| {
            sim.node(i).map_or(nodes, |node| {
                nodes.saturating_sub(node.count(MemberStatus::Alive))
            })
        })
        .sum()
}

/// Every node but the first joins through node 0, one every `pace`; then lone nodes retry until
/// every node sees the others alive. Returns the time that took from the first join and from the
/// last, if it converged.
fn form_by_joins(
    sim: &mut Sim,
    joiner: usize,
    pace: Duration,
    plan: Plan,
    progress: &mut impl FnMut(&str, Duration),
) -> (Option<Duration>, Option<Duration>) {
    let n = joiner + 1;
    let start = sim.now();
    let mut last_join = start;
    let quarter = (joiner / 4).max(1);
    for i in 1..joiner {
        last_join = sim.now();
        sim.join(i, 0);
        sim.run_for(pace);
        if i % quarter == 0 {
            progress(&format!("{i} joined; {}", sim.queue_census()), sim.now());
        }
    }
    progress(
        &format!("every node has joined; {}", sim.queue_census()),
        sim.now(),
    );
    // Completeness is looked at every second (a count per node); lone nodes rejoin every
    // second, or every 5 s above 2,000 members.
    let check = Duration::from_secs(1);
    let rejoin = if n > 2000 {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    };
    let converge_limit = plan.converge_bound(n);
    let deadline = sim.now() + converge_limit;
    let mut reported = sim.now();
    let mut rejoined: Option<Duration> = None;
    while sim.now() <= deadline {
        let missing = missing_pairs(sim, joiner);
        if missing == 0 {
            return (Some(sim.now() - start), Some(sim.now() - last_join));
        }
        // Every 30 s of virtual time, how far the pool is from complete.
        if sim.now() - reported >= Duration::from_secs(30) {
            reported = sim.now();
            progress(&format!("{missing} member-pairs missing"), sim.now());
        }
        if rejoined.is_none_or(|at| sim.now() - at >= rejoin) {
            rejoined = Some(sim.now());
            for i in 1..joiner {
                if sim.node(i).is_some_and(|node| node.num_active() == 0) {
                    sim.join(i, 0);
                }
            }
        }
        sim.run_for(check);
    }
    (None, None)
}

#[cfg(test)]
mod measure_tests {
    use super::*;

    fn plan(bootstrap: Bootstrap) -> Plan {
        Plan {
            bootstrap,
            window: Duration::from_secs(10),
            limit: Duration::from_secs(60),
            converge_limit: None,
        }
    }

    #[test]
    fn measurement_at_small_scale() {
        let mut cfg = SimConfig::new(30, 42);
        cfg.loss = 0.05;
        let r = measure(cfg, plan(Bootstrap::for_members(30)));
        assert!(r.converge.is_some(), "{r:?}");
        assert!(r.join_known_by_all.is_some(), "{r:?}");
        assert!(r.crash_known_by_all.is_some(), "{r:?}");
        assert_eq!(r.false_failures, 0, "{r:?}");
        assert!(r.steady.bytes_per_member_sec > 0.0);
        // Jittered timers: over one whole interval each member runs one anti-entropy round and
        // its list exchange is in the figure; a window shorter than the interval does not hold
        // every member's.
        assert_eq!(r.round.window, crate::sync_interval(30));
        assert!(
            (0.9..=1.1).contains(&r.round.sync_rounds_per_member),
            "{r:?}"
        );
        assert!(r.round.sync_bytes_per_member_sec > 0.0, "{r:?}");
        assert_eq!(r.missing_at_start, 0, "{r:?}");
    }

    #[test]
    fn seeded_pool_starts_converged_and_measures_the_same_things() {
        let mut cfg = SimConfig::new(40, 43);
        cfg.loss = 0.05;
        cfg.tags = false;
        let seeded = Bootstrap::Seeded {
            settle: Duration::from_secs(5),
        };
        let r = measure(cfg, plan(seeded));
        assert_eq!(
            r.converge, None,
            "a seeded pool reports no convergence time"
        );
        assert_eq!(r.missing_at_start, 0, "{r:?}");
        assert!(r.join_known_by_all.is_some(), "{r:?}");
        assert!(r.crash_known_by_all.is_some(), "{r:?}");
        assert_eq!(r.false_failures, 0, "{r:?}");
    }

    #[test]
    fn a_joiner_learns_the_whole_pool_from_its_target() {
        let mut cfg = SimConfig::new(200, 5);
        cfg.tags = false;
        let mut sim = Sim::new(cfg);
        sim.seed(0..199);
        sim.join(199, 7);
        // foca's feed alone carries a few dozen members; the pool's anti-entropy round at this
        // size is a minute away. The member-list exchange of the join brings all of them.
        let took = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(3), |s| {
            s.node(199)
                .is_some_and(|n| n.count(MemberStatus::Alive) == 200)
        });
        assert!(
            took.is_some(),
            "joiner knows {:?}",
            sim.node(199).map(|n| n.count(MemberStatus::Alive))
        );
        assert!(crate::sync_interval(200) > Duration::from_secs(30));
    }

    #[test]
    fn a_joiner_learns_the_pools_tags_from_its_target_without_pulling_them() {
        let mut sim = Sim::new(SimConfig::new(200, 6));
        sim.seed(0..199);
        // Let the seeded pool learn its tags first (pulls, pushes and their answers).
        sim.run_for(Duration::from_secs(5));
        let before = sim.traffic()[199];
        sim.join(199, 7);
        let with_tags = |s: &Sim| {
            s.node(199).map_or(0, |n| {
                n.members()
                    .iter()
                    .filter(|m| m.tags.as_ref().is_some_and(|t| t.get("role").is_some()))
                    .count()
            })
        };
        let took = sim.run_until_true(Duration::from_millis(100), Duration::from_secs(3), |s| {
            with_tags(s) == 200
        });
        assert!(
            took.is_some(),
            "joiner knows the tags of {}",
            with_tags(&sim)
        );
        // Its tags pushes and pulls: a handful (answers to the members that pull its tags as
        // they learn it), not one pull and one push for each of the 199 members it learned.
        let sent = sim.traffic()[199].tags_bytes - before.tags_bytes;
        // (2 KB measured; 15 KB when the join does not ask for the tags.)
        assert!(
            sent < 6000,
            "the joiner sent {sent} bytes of tags pushes and pulls"
        );
    }

    #[test]
    fn with_lifeguard_a_slow_member_gets_no_healthy_member_failed() {
        let run = |lifeguard| {
            let mut cfg = SimConfig::new(20, 3);
            cfg.lifeguard = lifeguard;
            cfg.tags = false;
            slow_member(cfg, Duration::from_secs(2), Duration::from_secs(120))
        };
        let without = run(false);
        assert!(
            without.healthy_failed > 0,
            "the scenario bites: {without:?}"
        );
        let with = run(true);
        assert_eq!(with.healthy_failed, 0, "{with:?}");
        assert!(with.slow_max_health > 0, "{with:?}");
    }

    #[test]
    fn seeding_teaches_only_the_given_nodes() {
        let mut sim = Sim::new(SimConfig::new(5, 1));
        sim.seed(0..4);
        for i in 0..4 {
            assert_eq!(sim.node(i).unwrap().count(MemberStatus::Alive), 4);
        }
        assert_eq!(sim.node(4).unwrap().count(MemberStatus::Alive), 1);
        assert_eq!(sim.node(0).unwrap().status_of(&sim_name(4)), None);
    }
}
