//! The UDP driver: one tokio task owns a [`Node`] and its socket; everyone else sends commands
//! through a cloneable [`Gossip`] handle and reads the latest published [`Snapshot`].
//!
//! ```no_run
//! # async fn run() -> Result<(), caravan_gossip::GossipError> {
//! use caravan_gossip::{NodeConfig, udp::Gossip};
//! let addr = "127.0.0.1:7946".parse().unwrap();
//! let gossip = Gossip::start(NodeConfig::new("a.global", addr, 3), addr).await?;
//! let outcome = gossip.join(vec!["127.0.0.1:7947".into()]).await;
//! println!("joined {} ({:?})", outcome.joined, outcome.errors);
//! for m in &gossip.snapshot().members { println!("{} {}", m.name, m.status.as_str()); }
//! gossip.leave().await;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::member::Member;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::GossipError;
use crate::node::{MAX_DATAGRAM, Node, NodeConfig, NodeTimer, Output};

/// How long a join waits for an answer from each address.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a graceful leave keeps gossiping before the task stops (Nomad's `LeavePropagateDelay`).
pub const LEAVE_PROPAGATE: Duration = Duration::from_secs(1);

/// Most addresses one join call contacts; further addresses are reported as errors, so a single
/// (possibly anonymous, see `/v1/agent/join`) request cannot make this node a reflector towards
/// an arbitrary list. Matches [`crate::MAX_SOLICITED_SYNCS`].
pub const MAX_JOIN_ADDRESSES: usize = 64;

/// Default gossip port for join addresses given without one.
pub const DEFAULT_SERF_PORT: u16 = 4648;

/// The published state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every member, this one included, sorted by name.
    pub members: Vec<Member>,
    /// `stats.serf`.
    pub stats: BTreeMap<String, String>,
}

/// The result of a join: how many addresses answered, and why the others did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinOutcome {
    /// Addresses contacted (the same address twice counts twice).
    pub joined: usize,
    /// One message per failed address.
    pub errors: Vec<String>,
}

enum Command {
    Join(Vec<SocketAddr>, oneshot::Sender<JoinOutcome>),
    Leave(oneshot::Sender<()>),
    ForceLeave(String, bool, oneshot::Sender<()>),
    SetTags(
        BTreeMap<String, String>,
        oneshot::Sender<Result<(), GossipError>>,
    ),
}

/// A handle on the gossip task.
#[derive(Clone)]
pub struct Gossip {
    commands: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    local_addr: SocketAddr,
}

impl Gossip {
    /// Binds `bind` and starts the owner task.
    pub async fn start(cfg: NodeConfig, bind: SocketAddr) -> Result<Gossip, GossipError> {
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| GossipError::Io(format!("failed to bind gossip on {bind}: {e}")))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| GossipError::Io(e.to_string()))?;
        let seed = cfg.generation ^ u64::from(local_addr.port());
        let clock = Instant::now();
        let node = Node::new(cfg, seed, Duration::ZERO)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let first = Arc::new(Snapshot {
            members: node.members(),
            stats: node.stats(),
        });
        let (pub_tx, pub_rx) = watch::channel(first);
        let driver = Driver {
            node,
            socket,
            clock,
            timers: BinaryHeap::new(),
            seq: 0,
            joins: Joins::default(),
            publish: pub_tx,
        };
        tokio::spawn(driver.run(rx));
        Ok(Gossip {
            commands: tx,
            snapshot: pub_rx,
            local_addr,
        })
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The latest member list and stats.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that changes whenever the snapshot does.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Joins through each address (`host[:port]`, port defaulting to 4648); at most
    /// [`MAX_JOIN_ADDRESSES`] of them, the others are reported as errors without being resolved
    /// or contacted.
    pub async fn join(&self, addresses: Vec<String>) -> JoinOutcome {
        let mut outcome = JoinOutcome::default();
        let mut targets = Vec::new();
        for (i, text) in addresses.into_iter().enumerate() {
            if i >= MAX_JOIN_ADDRESSES {
                outcome.errors.push(format!(
                    "Failed to join {}: at most {MAX_JOIN_ADDRESSES} addresses per join",
                    printable(&text)
                ));
                continue;
            }
            match resolve(&text).await {
                Ok(addr) => targets.push(addr),
                Err(e) => outcome.errors.push(format!("Failed to join {text}: {e}")),
            }
        }
        if targets.is_empty() {
            return outcome;
        }
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Join(targets, tx)).is_err() {
            outcome.errors.push(GossipError::Stopped.to_string());
            return outcome;
        }
        match rx.await {
            Ok(o) => {
                outcome.joined += o.joined;
                outcome.errors.extend(o.errors);
            }
            Err(_) => outcome.errors.push(GossipError::Stopped.to_string()),
        }
        outcome
    }

    /// Leaves gracefully and stops the task (after about a second of propagation).
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Force-leaves a member by name (see [`Node::force_leave`]).
    pub async fn force_leave(&self, name: &str, prune: bool) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::ForceLeave(name.to_string(), prune, tx))
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// Replaces this member's tags.
    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetTags(tags, tx))
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }
}

/// Resolves `host[:port]` with the default gossip port.
pub async fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = caravan_agent_core::config::parse_host_port(text, DEFAULT_SERF_PORT) {
        return Ok(addr);
    }
    let with_port = if text.contains(':') {
        text.to_string()
    } else {
        format!("{text}:{DEFAULT_SERF_PORT}")
    };
    tokio::net::lookup_host(with_port)
        .await
        .map_err(|e| format!("failed to resolve: {e}"))?
        .next()
        .ok_or_else(|| "failed to resolve: no addresses".to_string())
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), for logging names and addresses
/// that peers or callers chose: nothing they send reaches a log or terminal raw.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

struct PendingJoin {
    addr: SocketAddr,
    deadline: Instant,
    batch: u64,
}

struct JoinBatch {
    outcome: JoinOutcome,
    waiting: usize,
    reply: Option<oneshot::Sender<JoinOutcome>>,
}

/// Join calls in progress: the addresses still to answer, and one batch per call, removed as
/// soon as the call has its outcome.
#[derive(Default)]
struct Joins {
    pending: Vec<PendingJoin>,
    batches: HashMap<u64, JoinBatch>,
    next: u64,
}

impl Joins {
    /// A new batch for one join call.
    fn open(&mut self, reply: oneshot::Sender<JoinOutcome>) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.batches.insert(
            id,
            JoinBatch {
                outcome: JoinOutcome::default(),
                waiting: 0,
                reply: Some(reply),
            },
        );
        id
    }

    fn batch(&mut self, id: u64) -> Option<&mut JoinBatch> {
        self.batches.get_mut(&id)
    }

    /// Waits for `addr` to answer within `deadline`.
    fn wait(&mut self, id: u64, addr: SocketAddr, deadline: Instant) {
        if let Some(b) = self.batches.get_mut(&id) {
            b.waiting += 1;
            self.pending.push(PendingJoin {
                addr,
                deadline,
                batch: id,
            });
        }
    }

    /// Sends the batch's outcome and forgets it once nothing is pending.
    fn finish(&mut self, id: u64) {
        let done = self.batches.get(&id).is_some_and(|b| b.waiting == 0);
        if done
            && let Some(mut b) = self.batches.remove(&id)
            && let Some(reply) = b.reply.take()
        {
            let _ = reply.send(std::mem::take(&mut b.outcome));
        }
    }

    /// `from` answered: every join waiting on it counts it as joined.
    fn answered(&mut self, from: SocketAddr) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].addr == from {
                let j = self.pending.swap_remove(i);
                if let Some(b) = self.batches.get_mut(&j.batch) {
                    b.outcome.joined += 1;
                    b.waiting = b.waiting.saturating_sub(1);
                }
                self.finish(j.batch);
            } else {
                i += 1;
            }
        }
    }

    /// Joins whose deadline passed count as failed.
    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline <= now {
                let j = self.pending.swap_remove(i);
                if let Some(b) = self.batches.get_mut(&j.batch) {
                    b.outcome.errors.push(format!(
                        "Failed to join {}: no answer within {JOIN_TIMEOUT:?}",
                        j.addr
                    ));
                    b.waiting = b.waiting.saturating_sub(1);
                }
                self.finish(j.batch);
            } else {
                i += 1;
            }
        }
    }

    /// The earliest deadline of a pending join.
    fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|j| j.deadline).min()
    }
}

struct Driver {
    node: Node,
    socket: UdpSocket,
    clock: Instant,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    seq: u64,
    joins: Joins,
    publish: watch::Sender<Arc<Snapshot>>,
}

/// A timer in the heap; ordered only by its position `(deadline, seq)`.
struct TimerSlot(NodeTimer);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Driver {
    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 64];
        let first = self.node.drain();
        self.flush(first).await;
        let mut leave_reply: Option<(Instant, oneshot::Sender<()>)> = None;
        let mut publish_at = Instant::now();
        let mut tags_seen = self.node.tags_version();
        loop {
            let next_timer = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| *at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let next_join = self.joins.next_deadline();
            let wake = next_join.map_or(next_timer, |j| j.min(next_timer));
            let wake = leave_reply.as_ref().map_or(wake, |(at, _)| wake.min(*at));
            let mut changed = false;
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((len, from)) = received {
                        let now = self.now();
                        let ok = self.node.handle_packet(from, &buf[..len], now).is_ok();
                        if ok {
                            self.joins.answered(from);
                        }
                        let out = self.node.drain();
                        changed |= !out.events.is_empty();
                        self.flush(out).await;
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    changed = true;
                    match command {
                        Command::Join(targets, reply) => {
                            self.start_join(targets, reply).await;
                        }
                        Command::Leave(reply) => {
                            let now = self.now();
                            self.node.leave(now);
                            let out = self.node.drain();
                            self.flush(out).await;
                            leave_reply = Some((Instant::now() + LEAVE_PROPAGATE, reply));
                        }
                        Command::ForceLeave(name, prune, reply) => {
                            let now = self.now();
                            self.node.force_leave(&name, prune, now);
                            let out = self.node.drain();
                            self.flush(out).await;
                            let _ = reply.send(());
                        }
                        Command::SetTags(tags, reply) => {
                            let now = self.now();
                            let result = self.node.set_tags(tags, now);
                            let out = self.node.drain();
                            self.flush(out).await;
                            let _ = reply.send(result);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    changed |= self.fire_due().await;
                    self.joins.expire(Instant::now());
                    if let Some((at, _)) = &leave_reply
                        && Instant::now() >= *at
                    {
                        if let Some((_, reply)) = leave_reply.take() {
                            self.publish_now();
                            let _ = reply.send(());
                        }
                        break;
                    }
                }
            }
            let tags_now = self.node.tags_version();
            changed |= tags_now != tags_seen;
            tags_seen = tags_now;
            if changed || Instant::now() >= publish_at {
                self.publish_now();
                publish_at = Instant::now() + Duration::from_secs(1);
            }
        }
    }

    fn publish_now(&self) {
        let snap = Snapshot {
            members: self.node.members(),
            stats: self.node.stats(),
        };
        let _ = self.publish.send(Arc::new(snap));
    }

    async fn fire_due(&mut self) -> bool {
        let mut changed = false;
        loop {
            let due =
                matches!(self.timers.peek(), Some(Reverse((at, _, _))) if *at <= Instant::now());
            if !due {
                break;
            }
            let Some(Reverse((_, _, TimerSlot(timer)))) = self.timers.pop() else {
                break;
            };
            let now = self.now();
            self.node.handle_timer(timer, now);
            let out = self.node.drain();
            changed |= !out.events.is_empty();
            self.flush(out).await;
        }
        changed
    }

    async fn flush(&mut self, out: Output) {
        let now = Instant::now();
        for (delay, timer) in out.timers {
            self.seq += 1;
            self.timers
                .push(Reverse((now + delay, self.seq, TimerSlot(timer))));
        }
        for (to, packet) in out.packets {
            if let Err(e) = self.socket.send_to(&packet, to).await {
                tracing::debug!(target: "gossip", %to, error = %e, "send failed");
            }
        }
        for ev in out.events {
            let status = ev.status.map_or("removed", |s| s.as_str());
            // Names come from peers: escaped, so control characters never reach the log raw.
            let member = printable(&ev.name);
            tracing::info!(target: "gossip", member = %member, status, "member changed");
        }
    }

    async fn start_join(&mut self, targets: Vec<SocketAddr>, reply: oneshot::Sender<JoinOutcome>) {
        let batch = self.joins.open(reply);
        let own = self.node.identity().addr();
        let local = self.socket.local_addr().unwrap_or(own);
        for addr in targets {
            if addr == own || addr == local {
                if let Some(b) = self.joins.batch(batch) {
                    b.outcome.joined += 1;
                }
                continue;
            }
            let now = self.now();
            if let Err(e) = self.node.join(addr, now) {
                if let Some(b) = self.joins.batch(batch) {
                    b.outcome.errors.push(format!("Failed to join {addr}: {e}"));
                }
                continue;
            }
            self.joins.wait(batch, addr, Instant::now() + JOIN_TIMEOUT);
        }
        let out = self.node.drain();
        self.flush(out).await;
        self.joins.finish(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_agent_core::member::MemberStatus;

    async fn start(name: &str) -> Gossip {
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Bind first to learn the port, so the advertised address is the real one.
        let probe = std::net::UdpSocket::bind(bind).unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let mut cfg = NodeConfig::new(name, addr, 3);
        cfg.generation = 1;
        Gossip::start(cfg, addr).await.unwrap()
    }

    async fn wait_for(g: &Gossip, f: impl Fn(&Snapshot) -> bool) -> bool {
        for _ in 0..200 {
            if f(&g.snapshot()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn two_nodes_join_over_udp_and_one_leaves() {
        let a = start("a.global").await;
        let b = start("b.global").await;
        let outcome = b.join(vec![a.local_addr().to_string()]).await;
        assert_eq!(
            outcome,
            JoinOutcome {
                joined: 1,
                errors: vec![]
            }
        );
        assert!(wait_for(&a, |s| s.members.len() == 2).await);
        b.leave().await;
        assert!(
            wait_for(&a, |s| s
                .members
                .iter()
                .any(|m| m.name == "b.global" && m.status == MemberStatus::Left))
            .await
        );
    }

    #[test]
    fn join_batches_are_forgotten_once_they_have_their_outcome() {
        let mut joins = Joins::default();
        let later = Instant::now() + JOIN_TIMEOUT;
        let mut replies = Vec::new();
        for i in 0..1000u16 {
            let (tx, rx) = oneshot::channel();
            let id = joins.open(tx);
            let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i));
            joins.wait(id, addr, later);
            joins.finish(id);
            replies.push(rx);
        }
        // Half answer, half time out.
        for i in 0..500u16 {
            joins.answered(SocketAddr::from(([127, 0, 0, 1], 1000 + i)));
        }
        joins.expire(later);
        assert!(
            joins.batches.is_empty(),
            "{} batches kept",
            joins.batches.len()
        );
        assert!(joins.pending.is_empty());
        let outcomes: Vec<JoinOutcome> = replies
            .into_iter()
            .map(|mut rx| rx.try_recv().expect("outcome sent"))
            .collect();
        assert_eq!(outcomes.iter().filter(|o| o.joined == 1).count(), 500);
        assert_eq!(outcomes.iter().filter(|o| o.errors.len() == 1).count(), 500);
    }

    #[tokio::test]
    async fn one_join_contacts_at_most_64_addresses() {
        let a = start("a.global").await;
        let own = a.local_addr().to_string();
        let outcome = a.join(vec![own; MAX_JOIN_ADDRESSES + 6]).await;
        assert_eq!(outcome.joined, MAX_JOIN_ADDRESSES);
        assert_eq!(outcome.errors.len(), 6, "{:?}", outcome.errors);
        assert!(
            outcome.errors[0].contains("at most 64"),
            "{:?}",
            outcome.errors
        );
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert!(matches!(printable("s1.global"), Cow::Borrowed("s1.global")));
        assert_eq!(printable("é \"x\""), "é \"x\"");
        assert_eq!(
            printable("evil\x1b[2J\n\rfake.global\u{7f}"),
            "evil\\u{1b}[2J\\n\\rfake.global\\u{7f}"
        );
        assert!(!printable("a\x1b\x07\x00b").chars().any(char::is_control));
    }

    #[tokio::test]
    async fn join_nowhere_reports_an_error() {
        let a = start("a.global").await;
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let outcome = a.join(vec![addr.to_string(), "bad host".into()]).await;
        assert_eq!(outcome.joined, 0);
        assert_eq!(outcome.errors.len(), 2, "{:?}", outcome.errors);
    }
}
