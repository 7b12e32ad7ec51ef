//! The UDP driver: one tokio task owns a [`Node`] and its socket; everyone else sends commands
//! through a cloneable [`Gossip`] handle and reads the latest published [`Snapshot`].
//!
//! Member-list exchanges (a join's, anti-entropy's) go over TCP on the same port, one frame each
//! way (`[length u32 BE][frame]`, the frame sealed by the node when it has a key): an accept task
//! reads each inbound frame under a size cap and a timeout and hands it to the owner task, which
//! answers; outbound exchanges run in their own tasks and hand the reply back. When no stream can
//! be had the node sends its list as datagrams instead.
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

use caravan_agent_core::keyring::{KeyList, KeyringOp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::GossipError;
use crate::exchange::{
    MAX_STATE_FRAME, STREAM_CONNECT_TIMEOUT, STREAM_TIMEOUT, StreamPurpose, StreamRequest,
};
use crate::list::MemberList;
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

/// Most inbound member-list streams served at once (memberlist allows 128); a connection beyond
/// is closed at once. Each holds at most one frame of [`MAX_STATE_FRAME`] bytes for at most
/// [`STREAM_TIMEOUT`].
pub const MAX_INBOUND_STREAMS: usize = 32;

/// Most outbound member-list exchanges at once; one beyond is sent as datagrams.
pub const MAX_OUTBOUND_STREAMS: usize = 16;

/// Shortest time between two publications of the [`Snapshot`] while members change: under
/// churn readers see at most ten a second, each costing the owner task the changed members
/// only ([`MemberList`]).
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// How often the snapshot is republished when no member changed (for `stats.serf`'s counters).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The published state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every member, this one included, sorted by name (chunks shared with earlier snapshots).
    pub members: MemberList,
    /// `stats.serf`.
    pub stats: BTreeMap<String, String>,
    /// The node's traffic counters (for metrics).
    pub counters: crate::Counters,
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
    Keyring(KeyringOp, oneshot::Sender<Result<KeyList, GossipError>>),
}

/// A handle on the gossip task.
#[derive(Clone)]
pub struct Gossip {
    commands: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    local_addr: SocketAddr,
}

impl Gossip {
    /// Binds `bind` (UDP, and TCP on the same port for member-list exchanges) and starts the
    /// owner task. When the TCP port is taken the node still runs: peers' exchanges with it
    /// fall back to datagrams.
    pub async fn start(cfg: NodeConfig, bind: SocketAddr) -> Result<Gossip, GossipError> {
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| GossipError::Io(format!("failed to bind gossip on {bind}: {e}")))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| GossipError::Io(e.to_string()))?;
        let listener = match TcpListener::bind(local_addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(target: "gossip", addr = %local_addr, error = %e, "cannot listen for member-list streams; peers will exchange lists with this node by datagrams");
                None
            }
        };
        let (stream_tx, stream_rx) = mpsc::channel(MAX_INBOUND_STREAMS + MAX_OUTBOUND_STREAMS);
        if let Some(listener) = listener {
            tokio::spawn(accept_streams(listener, stream_tx.clone()));
        }
        let seed = cfg.generation ^ u64::from(local_addr.port());
        let clock = Instant::now();
        let mut node = Node::new(cfg, seed, Duration::ZERO)?;
        node.track_changes();
        let (tx, rx) = mpsc::unbounded_channel();
        let list = MemberList::new(node.members());
        let first = Arc::new(Snapshot {
            members: list.clone(),
            stats: node.stats(),
            counters: node.counters(),
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
            list,
            pacer: Pacer::default(),
            stream_tx,
            outbound: Arc::new(Semaphore::new(MAX_OUTBOUND_STREAMS)),
        };
        tokio::spawn(driver.run(rx, stream_rx));
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

impl Gossip {
    /// Applies a keyring operation to this member (`list` included) and returns the keys it
    /// holds after it, primary first. Packets already in flight under a removed key are dropped
    /// as undecryptable, so remove a key only once every member uses another.
    pub async fn keyring(&self, op: KeyringOp) -> Result<KeyList, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Keyring(op, tx))
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
    /// The member list as last published, updated by the changed members only.
    list: MemberList,
    /// Spaces publications ([`PUBLISH_INTERVAL`]).
    pacer: Pacer,
    /// Where stream tasks report to the owner task.
    stream_tx: mpsc::Sender<StreamEvent>,
    /// Bounds outbound exchanges ([`MAX_OUTBOUND_STREAMS`]).
    outbound: Arc<Semaphore>,
}

/// Spaces publications at least [`PUBLISH_INTERVAL`] apart.
#[derive(Default)]
struct Pacer {
    last: Option<Instant>,
}

impl Pacer {
    /// Whether a publication may go out at `now`.
    fn ready(&self, now: Instant) -> bool {
        self.last.is_none_or(|last| now >= last + PUBLISH_INTERVAL)
    }

    /// When the next publication may go out.
    fn next(&self, now: Instant) -> Instant {
        self.last.map_or(now, |last| last + PUBLISH_INTERVAL)
    }

    fn published(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

/// What stream tasks hand the owner task.
enum StreamEvent {
    /// A frame received on a stream from `peer`; the answer (if any) goes back on `reply`.
    Request {
        peer: SocketAddr,
        frame: Vec<u8>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    /// The answer to an exchange (or a fallback ping) started with `to`.
    Reply {
        to: SocketAddr,
        frame: Vec<u8>,
        purpose: StreamPurpose,
    },
    /// An exchange (or a fallback ping) with `to` got no answer.
    Failed {
        to: SocketAddr,
        error: String,
        purpose: StreamPurpose,
    },
}

/// Reads one `[length u32 BE][frame]`, refusing a length beyond [`MAX_STATE_FRAME`] before
/// reading the frame, and growing the buffer only as bytes arrive.
async fn read_frame(conn: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len == 0 || len > MAX_STATE_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (limit {MAX_STATE_FRAME})"),
        ));
    }
    let mut frame = Vec::with_capacity(len.min(64 * 1024));
    conn.take(len as u64).read_to_end(&mut frame).await?;
    if frame.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(frame)
}

/// Writes one `[length u32 BE][frame]`.
async fn write_frame(conn: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(frame.len())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    conn.write_all(&len.to_be_bytes()).await?;
    conn.write_all(frame).await?;
    conn.flush().await
}

/// Accepts member-list streams until the owner task stops: at most [`MAX_INBOUND_STREAMS`] at
/// once, each served within [`STREAM_TIMEOUT`].
async fn accept_streams(listener: TcpListener, events: mpsc::Sender<StreamEvent>) {
    let limit = Arc::new(Semaphore::new(MAX_INBOUND_STREAMS));
    loop {
        let accepted = tokio::select! {
            _ = events.closed() => break,
            accepted = listener.accept() => accepted,
        };
        let (conn, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, usually: let it pass rather than spin.
                tracing::debug!(target: "gossip", error = %e, "stream accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(target: "gossip", %peer, "too many member-list streams; closed");
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let served = tokio::time::timeout(STREAM_TIMEOUT, serve_stream(conn, peer, events));
            if let Ok(Err(e)) | Err(e) = served.await.map_err(std::io::Error::from) {
                tracing::debug!(target: "gossip", %peer, error = %e, "member-list stream");
            }
            drop(permit);
        });
    }
}

async fn serve_stream(
    mut conn: TcpStream,
    peer: SocketAddr,
    events: mpsc::Sender<StreamEvent>,
) -> std::io::Result<()> {
    let frame = read_frame(&mut conn).await?;
    let (reply, answer) = oneshot::channel();
    let stopped = || std::io::Error::other("gossip stopped");
    events
        .send(StreamEvent::Request { peer, frame, reply })
        .await
        .map_err(|_| stopped())?;
    if let Some(frame) = answer.await.map_err(|_| stopped())? {
        write_frame(&mut conn, &frame).await?;
    }
    conn.shutdown().await
}

/// One outbound exchange: connect, write the frame, read the answer, all within
/// [`STREAM_TIMEOUT`] (the connection within [`STREAM_CONNECT_TIMEOUT`]).
async fn exchange(
    req: StreamRequest,
    events: mpsc::Sender<StreamEvent>,
    permit: OwnedSemaphorePermit,
) {
    let (to, purpose) = (req.to, req.purpose);
    let timeout = purpose.timeout();
    let run = async {
        let mut conn = tokio::time::timeout(STREAM_CONNECT_TIMEOUT, TcpStream::connect(to))
            .await
            .map_err(std::io::Error::from)??;
        write_frame(&mut conn, &req.body).await?;
        read_frame(&mut conn).await
    };
    let result = tokio::time::timeout(timeout, run).await;
    drop(permit);
    let event = match result {
        Ok(Ok(frame)) => StreamEvent::Reply { to, frame, purpose },
        Ok(Err(e)) => StreamEvent::Failed {
            to,
            error: e.to_string(),
            purpose,
        },
        Err(_) => StreamEvent::Failed {
            to,
            error: format!("no answer within {timeout:?}"),
            purpose,
        },
    };
    let _ = events.send(event).await;
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

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut streams: mpsc::Receiver<StreamEvent>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 64];
        let first = self.node.drain();
        self.flush(first).await;
        let mut leave_reply: Option<(Instant, oneshot::Sender<()>)> = None;
        let mut stats_at = Instant::now() + STATS_INTERVAL;
        loop {
            let next_timer = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| *at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let next_join = self.joins.next_deadline();
            let wake = next_join.map_or(next_timer, |j| j.min(next_timer));
            let wake = leave_reply.as_ref().map_or(wake, |(at, _)| wake.min(*at));
            let wake = wake.min(stats_at);
            let wake = if self.node.has_changes() {
                wake.min(self.pacer.next(Instant::now()))
            } else {
                wake
            };
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
                Some(event) = streams.recv() => {
                    let now = self.now();
                    match event {
                        StreamEvent::Request { peer, frame, reply } => {
                            let answer = self.node.handle_stream(peer, &frame, now);
                            if let Err(e) = &answer {
                                tracing::debug!(target: "gossip", %peer, error = %e, "member-list stream refused");
                            }
                            let _ = reply.send(answer.ok().flatten());
                        }
                        StreamEvent::Reply { to, frame, purpose: StreamPurpose::Ping } => {
                            if let Err(e) = self.node.handle_ping_reply(to, &frame, now) {
                                tracing::debug!(target: "gossip", %to, error = %e, "pong refused");
                            }
                        }
                        StreamEvent::Reply { to, frame, purpose: StreamPurpose::Exchange } => {
                            match self.node.handle_stream_reply(to, &frame, now) {
                                Ok(()) => self.joins.answered(to),
                                Err(e) => {
                                    tracing::debug!(target: "gossip", %to, error = %e, "member-list reply refused");
                                }
                            }
                        }
                        StreamEvent::Failed { to, error, purpose: StreamPurpose::Exchange } => {
                            tracing::debug!(target: "gossip", %to, %error, "member-list stream failed; sending datagrams");
                            self.node.stream_failed(to, now);
                        }
                        StreamEvent::Failed { to, error, purpose: StreamPurpose::Ping } => {
                            tracing::debug!(target: "gossip", %to, %error, "fallback ping failed");
                        }
                    }
                    let out = self.node.drain();
                    changed |= !out.events.is_empty();
                    self.flush(out).await;
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
                        Command::Keyring(op, reply) => {
                            let result = self.node.keyring_apply(&op);
                            let _ = reply.send(result);
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
            // Members that changed are published at most every PUBLISH_INTERVAL, each
            // publication costing the changed members; the counters once a STATS_INTERVAL.
            let now = Instant::now();
            let wanted = changed || self.node.has_changes();
            if (wanted && self.pacer.ready(now)) || now >= stats_at {
                self.publish_now();
                self.pacer.published(now);
                stats_at = now + STATS_INTERVAL;
            }
        }
    }

    fn publish_now(&mut self) {
        for name in self.node.take_changed() {
            let member = self.node.member(&name);
            self.list.set(&name, member);
        }
        let snap = Snapshot {
            members: self.list.clone(),
            stats: self.node.stats(),
            counters: self.node.counters(),
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
        for req in out.streams {
            let events = self.stream_tx.clone();
            match self.outbound.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(exchange(req, events, permit));
                }
                Err(_) => {
                    let (to, purpose) = (req.to, req.purpose);
                    let error = "too many member-list streams".to_string();
                    tokio::spawn(async move {
                        let failed = StreamEvent::Failed { to, error, purpose };
                        let _ = events.send(failed).await;
                    });
                }
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

    /// A 127.0.0.1 port free for both UDP and TCP (a free UDP port may be some connection's
    /// TCP port), so member-list streams have their listener.
    fn free_addr() -> SocketAddr {
        for _ in 0..50 {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = udp.local_addr().unwrap();
            if std::net::TcpListener::bind(addr).is_ok() {
                return addr;
            }
        }
        panic!("no port free for both UDP and TCP in 50 tries");
    }

    async fn start(name: &str) -> Gossip {
        let addr = free_addr();
        let mut cfg = NodeConfig::new(name, addr, 3);
        cfg.generation = 1;
        Gossip::start(cfg, addr).await.unwrap()
    }

    async fn wait_for(g: &Gossip, f: impl Fn(&Snapshot) -> bool) -> bool {
        for _ in 0..600 {
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

    async fn wait_stat(g: &Gossip, key: &str, f: impl Fn(u64) -> bool) -> bool {
        wait_for(g, |s| {
            s.stats
                .get(key)
                .and_then(|v| v.parse().ok())
                .is_some_and(&f)
        })
        .await
    }

    /// Two started members `a.global` and `b.global` sharing gossip key `[key; 32]`, each
    /// config passed through `tweak` first.
    async fn keyed_pair(key: u8, tweak: impl Fn(&mut NodeConfig)) -> (Gossip, Gossip) {
        let start = async |name: &str| {
            let addr = free_addr();
            let mut cfg = NodeConfig::new(name, addr, 3);
            cfg.generation = 1;
            cfg.key = Some(vec![key; 32]);
            tweak(&mut cfg);
            Gossip::start(cfg, addr).await.unwrap()
        };
        (start("a.global").await, start("b.global").await)
    }

    #[tokio::test]
    async fn with_a_key_a_join_exchanges_member_lists_over_tcp() {
        let (a, b) = keyed_pair(5, |_| {}).await;
        let outcome = b.join(vec![a.local_addr().to_string()]).await;
        assert_eq!(outcome.joined, 1, "{outcome:?}");
        assert!(wait_for(&b, |s| s.members.len() == 2).await);
        assert!(
            wait_stat(&a, "streams_in", |n| n >= 1).await,
            "{:?}",
            a.snapshot().stats
        );
        assert!(wait_stat(&b, "streams_out", |n| n >= 1).await);
        assert_eq!(b.snapshot().stats["stream_failures"], "0");
        assert_eq!(a.snapshot().stats["decrypt_failures"], "0");
    }

    /// After its join a member runs its early anti-entropy round (a digest, sealed, over TCP):
    /// the target reads the join's list and then the round's frame (it agrees: the two lists are
    /// the same, so the rounds end there), and no stream fails.
    #[tokio::test]
    async fn with_a_key_a_joiners_early_anti_entropy_rounds_go_over_tcp() {
        // No periodic round in the test's seconds: only the join and the early rounds.
        let (a, b) = keyed_pair(6, |cfg| cfg.sync_interval = Duration::from_secs(1_000_000)).await;
        let outcome = b.join(vec![a.local_addr().to_string()]).await;
        assert_eq!(outcome.joined, 1, "{outcome:?}");
        // The join's stream and the early round's.
        assert!(
            wait_stat(&a, "streams_in", |n| n >= 2).await,
            "{:?}",
            a.snapshot().stats
        );
        // No round after the one that agreed (a second would come 2-3 s after it).
        tokio::time::sleep(crate::node::EARLY_SYNC_CHECK * 2).await;
        assert_eq!(a.snapshot().stats["streams_in"], "2");
        assert_eq!(b.snapshot().stats["stream_failures"], "0");
        assert_eq!(a.snapshot().stats["decrypt_failures"], "0");
        assert_eq!(b.snapshot().stats["decrypt_failures"], "0");
    }

    #[tokio::test]
    async fn a_key_rotation_keeps_the_pool_whole_and_shuts_out_the_old_key() {
        use caravan_agent_core::keyring::{GossipKey, KeyringOp};
        let old = GossipKey::from_bytes(&[5; 32]).unwrap().to_base64();
        let new = GossipKey::from_bytes(&[6; 16]).unwrap().to_base64();
        let keyed = |name: &str| {
            let addr = free_addr();
            let mut cfg = NodeConfig::new(name, addr, 3);
            cfg.generation = 1;
            cfg.key = Some(vec![5; 32]);
            cfg
        };
        let mut pool = Vec::new();
        for name in ["a.global", "b.global", "c.global"] {
            let cfg = keyed(name);
            let addr = cfg.addr;
            pool.push(Gossip::start(cfg, addr).await.unwrap());
        }
        for g in &pool[1..] {
            assert_eq!(
                g.join(vec![pool[0].local_addr().to_string()]).await.joined,
                1
            );
        }
        for g in &pool {
            assert!(wait_for(g, |s| s.members.len() == 3).await);
        }
        // Install everywhere, use member by member, remove everywhere.
        for op in [
            KeyringOp::Install(new.clone()),
            KeyringOp::Use(new.clone()),
            KeyringOp::Remove(old.clone()),
        ] {
            for g in &pool {
                g.keyring(op.clone()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let held = pool[0].keyring(KeyringOp::List).await.unwrap();
        assert_eq!(held.keys().len(), 1);
        assert_eq!(held.primary().to_base64(), new);
        // A few probe rounds under the new key: nobody was ever suspected or failed.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for g in &pool {
            let s = g.snapshot();
            assert!(
                s.members.iter().all(|m| m.status == MemberStatus::Alive),
                "{:?}",
                s.members
            );
            // Every packet of the rotation opened with some key held.
            assert_eq!(s.stats["decrypt_failures"], "0", "{:?}", s.stats);
        }
        // A member still on the old key is no longer heard.
        let cfg = keyed("d.global");
        let addr = cfg.addr;
        let d = Gossip::start(cfg, addr).await.unwrap();
        let outcome = d.join(vec![pool[0].local_addr().to_string()]).await;
        assert_eq!(outcome.joined, 0, "{outcome:?}");
        assert!(wait_stat(&pool[0], "decrypt_failures", |n| n >= 1).await);
        // Refusals name the problem and change nothing.
        let e = pool[0]
            .keyring(KeyringOp::Remove(new.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "Removing the primary key is not allowed");
        let plain = start("e.global").await;
        let e = plain.keyring(KeyringOp::List).await.unwrap_err();
        assert_eq!(e.to_string(), "Keyring is empty (encryption not enabled)");
    }

    #[tokio::test]
    async fn a_join_falls_back_to_datagrams_when_no_member_list_stream_answers() {
        // Something else holds a's TCP port and hangs up on every connection.
        let addr = free_addr();
        let squatter = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            while let Ok((conn, _)) = squatter.accept().await {
                drop(conn);
            }
        });
        let mut cfg = NodeConfig::new("a.global", addr, 3);
        cfg.generation = 1;
        let a = Gossip::start(cfg, addr).await.unwrap();
        let b = start("b.global").await;
        let outcome = b.join(vec![a.local_addr().to_string()]).await;
        assert_eq!(outcome.joined, 1, "{outcome:?}");
        assert!(wait_for(&a, |s| s.members.len() == 2).await);
        assert!(wait_stat(&b, "stream_failures", |n| n >= 1).await);
    }

    /// A member whose datagrams all go unanswered (its UDP socket is never read) but whose TCP
    /// port answers as a node would: memberlist's fallback ping, sealed with the pool's key,
    /// keeps it alive.
    #[tokio::test]
    async fn a_member_unreachable_by_datagram_is_kept_alive_by_fallback_pings() {
        let addr_b = free_addr();
        let _black_hole = tokio::net::UdpSocket::bind(addr_b).await.unwrap();
        let listener = TcpListener::bind(addr_b).await.unwrap();
        let mut cfg = NodeConfig::new("b.global", addr_b, 3);
        cfg.generation = 1;
        cfg.key = Some(vec![3; 32]);
        let started = Instant::now();
        let mut b = Node::new(cfg, 2, Duration::ZERO).unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, peer)) = listener.accept().await {
                let Ok(frame) = read_frame(&mut conn).await else {
                    continue;
                };
                let answer = b.handle_stream(peer, &frame, started.elapsed());
                let _ = b.drain();
                if let Ok(Some(answer)) = answer {
                    let _ = write_frame(&mut conn, &answer).await;
                }
            }
        });
        let addr_a = free_addr();
        let mut cfg = NodeConfig::new("a.global", addr_a, 3);
        cfg.generation = 1;
        cfg.key = Some(vec![3; 32]);
        let a = Gossip::start(cfg, addr_a).await.unwrap();
        let outcome = a.join(vec![addr_b.to_string()]).await;
        assert_eq!(outcome.joined, 1, "{outcome:?}");
        assert!(wait_stat(&a, "stream_pings_reached", |n| n >= 3).await);
        let snapshot = a.snapshot();
        let b_status = snapshot.members.iter().find(|m| m.name == "b.global");
        assert_eq!(b_status.map(|m| m.status), Some(MemberStatus::Alive));
        assert_eq!(snapshot.stats["stream_failures"], "0");
    }

    #[tokio::test]
    async fn a_frame_longer_than_the_limit_is_refused_before_it_is_read() {
        let mut header: &[u8] = &u32::try_from(MAX_STATE_FRAME + 1).unwrap().to_be_bytes();
        let err = read_frame(&mut header).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        let mut empty: &[u8] = &0u32.to_be_bytes();
        assert!(read_frame(&mut empty).await.is_err());
        let mut ok = Vec::new();
        write_frame(&mut ok, b"abc").await.unwrap();
        assert_eq!(read_frame(&mut ok.as_slice()).await.unwrap(), b"abc");
    }

    #[test]
    fn under_churn_snapshots_are_published_at_most_ten_times_a_second() {
        let start = Instant::now();
        let mut pacer = Pacer::default();
        let mut published = 0;
        // A change every millisecond for one second.
        for ms in 0..1000 {
            let now = start + Duration::from_millis(ms);
            if pacer.ready(now) {
                pacer.published(now);
                published += 1;
            }
        }
        assert_eq!(published, 10);
        assert_eq!(pacer.next(start), start + Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn the_published_list_follows_joins_and_leaves() {
        let a = start("a.global").await;
        let b = start("b.global").await;
        b.join(vec![a.local_addr().to_string()]).await;
        assert!(wait_for(&a, |s| s.members.len() == 2).await);
        let before = a.snapshot();
        b.leave().await;
        assert!(
            wait_for(&a, |s| s
                .members
                .get("b.global")
                .is_some_and(|m| m.status == MemberStatus::Left))
            .await
        );
        let after = a.snapshot();
        assert_eq!(after.members.to_vec(), {
            let mut v = after.members.to_vec();
            v.sort_by(|x, y| x.name.cmp(&y.name));
            v
        });
        assert_eq!(
            before.members.get("a.global"),
            after.members.get("a.global")
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
