//! [`Cluster`]: one server's Raft node and the state it replicates, with the write path
//! (propose, wait until applied here) and the read path (linearizable unless `stale`, blocking
//! on `index`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::query::{Indexed, ReadOptions, StateAnswer, StateQuery};
use caravan_raft::{Applied, RaftConfig, RaftError, RaftNode, Transport};
use caravan_sched::broker::{BrokerConfig, EvalBroker};

use crate::ClusterError;
use crate::command::{self, Command, MAX_BATCH, MAX_COMMAND_BYTES, Outcome};
use crate::state::ClusterState;

/// How long a write may take, forwarding and leader changes included, and how long a
/// consistent read waits for the leader's confirmation.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Raft ID of a server: the first 64 bits of its server ID (a UUID; 0 if it is not one).
pub fn raft_id(server_id: &str) -> u64 {
    uuid::Uuid::parse_str(server_id).map_or(0, |u| u.as_u64_pair().0)
}

/// A fresh random seed for a command's IDs.
pub fn seed() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// How many writes may wait for the proposer at once; a writer past it waits for room.
const PROPOSAL_QUEUE: usize = 4096;

/// How many batches may be committing at once. One: openraft 0.9 appends and fsyncs each
/// entry before replicating it and takes entries one at a time, so batches committing side by
/// side only get smaller (measured with `cargo xtask bench raft`: 4 in flight gave 0.45× the
/// registrations per second of 1).
const MAX_IN_FLIGHT: usize = 1;

/// How long the proposer lets the writers of a shared batch send their next write before it
/// proposes a smaller one (it yields meanwhile; a lone writer never waits).
const LINGER: Duration = Duration::from_micros(300);

/// One server's Raft node and replicated state.
pub struct Cluster {
    raft: Arc<RaftNode>,
    state: Arc<ClusterState>,
    /// Writes waiting for the proposer, which commits them in batches.
    proposals: tokio::sync::mpsc::Sender<Proposal>,
}

/// A write waiting to be proposed, and where its outcome goes.
struct Proposal {
    command: Command,
    bytes: usize,
    reply: tokio::sync::oneshot::Sender<Result<(u64, Outcome), ClusterError>>,
}

/// Where a proposal's log index and outcome arrive.
type Answer = tokio::sync::oneshot::Receiver<Result<(u64, Outcome), ClusterError>>;

impl Cluster {
    /// Starts the Raft node described by `config` (durable under `config.dir`, in memory
    /// without), replicating a fresh [`ClusterState`] whose token index is keyed with
    /// `acl_key`, reaching peers through `transport`.
    pub async fn start(
        config: RaftConfig,
        acl_key: [u8; 32],
        transport: Arc<dyn Transport>,
    ) -> Result<Cluster, ClusterError> {
        let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
        let state = Arc::new(ClusterState::new(broker, acl_key));
        let raft = Arc::new(RaftNode::start(config, state.clone(), transport).await?);
        let (proposals, queue) = tokio::sync::mpsc::channel(PROPOSAL_QUEUE);
        tokio::spawn(propose(raft.clone(), queue));
        Ok(Cluster {
            raft,
            state,
            proposals,
        })
    }

    /// The Raft node.
    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    /// The replicated state.
    pub fn state(&self) -> &Arc<ClusterState> {
        &self.state
    }

    /// Replicates a command and waits until this server has applied it. A refused command is
    /// [`ClusterError::Refused`] with the state machine's reason.
    ///
    /// Writes made while one is being committed wait and are then committed together, as one
    /// [`Command::Batch`] log entry (group commit): one fsync and one round of replication for
    /// all of them, at no cost to a lone write.
    pub async fn write(&self, command: &Command) -> Result<Outcome, ClusterError> {
        let answer = self.submit(command.clone()).await?;
        match answer.await.map_err(|_| shut_down())?? {
            (_, Outcome::Refused(why)) => Err(ClusterError::Refused(why)),
            (_, outcome) => Ok(outcome),
        }
    }

    /// Queues a command for the proposer.
    async fn submit(&self, command: Command) -> Result<Answer, ClusterError> {
        let bytes = command.encode()?.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let proposal = Proposal {
            command,
            bytes,
            reply,
        };
        self.proposals
            .send(proposal)
            .await
            .map_err(|_| shut_down())?;
        Ok(answer)
    }

    /// Serves a peer's Raft request, as [`RaftNode::handle`] does, except that on the leader a
    /// write a follower forwarded (`Raft.Apply`) joins this server's own proposer queue, so
    /// writes from every server share log entries instead of each follower's batch taking one.
    pub async fn handle(&self, method: &str, body: &[u8]) -> Result<Vec<u8>, RaftError> {
        if method != caravan_raft::method::APPLY
            || !self.raft.is_leader()
            || body.len() > MAX_COMMAND_BYTES
        {
            return self.raft.handle(method, body).await;
        }
        let Ok(command) = command::decode::<Command>(body) else {
            // Not a command of ours: Raft takes it and the state machine refuses it.
            return self.raft.handle(method, body).await;
        };
        let answer = self.apply_forwarded(command).await;
        caravan_raft::codec::encode(&answer).map_err(RaftError::BadRequest)
    }

    /// Proposes each command of a forwarded write (a batch's one by one) and answers as
    /// `Raft.Apply` does: the newest log index holding any of them and the outcome(s).
    async fn apply_forwarded(&self, command: Command) -> Result<Applied, RaftError> {
        let (commands, batched) = match command {
            Command::Batch(commands) => (commands, true),
            one => (vec![one], false),
        };
        let raft_error = |e: ClusterError| match e {
            ClusterError::Raft(e) => e,
            other => RaftError::BadRequest(other.to_string()),
        };
        let mut answers = Vec::with_capacity(commands.len());
        for c in commands {
            answers.push(self.submit(c).await.map_err(raft_error)?);
        }
        let mut index = 0;
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            let (at, outcome) = answer
                .await
                .map_err(|_| RaftError::Shutdown)?
                .map_err(raft_error)?;
            index = index.max(at);
            outcomes.push(outcome);
        }
        let outcome = match (batched, outcomes.pop()) {
            (false, Some(one)) => one,
            (_, last) => {
                outcomes.extend(last);
                Outcome::Batch(outcomes)
            }
        };
        let response = command::encode(&outcome).map_err(raft_error)?;
        Ok(Applied { index, response })
    }

    /// Answers a state query as Nomad does: without `stale`, only once the leader confirmed it
    /// still leads and this replica applied everything committed before the read began; with
    /// `min_index`, once the answer's index passes it or the wait (with `jitter` in 0..1)
    /// ends.
    pub async fn read(
        &self,
        query: &StateQuery,
        options: ReadOptions,
        jitter: f64,
    ) -> Result<Indexed<StateAnswer>, ClusterError> {
        let wait = options.blocking_wait(jitter);
        let deadline = tokio::time::Instant::now() + wait;
        if let StateQuery::NodeAllocations(node) = query
            && options.min_index > 0
        {
            if !options.stale {
                self.raft.read_index(WRITE_TIMEOUT).await?;
            }
            return Ok(self
                .wait_for_node(node, query, options.min_index, deadline)
                .await);
        }
        let mut changes = self.state.subscribe();
        if !options.stale {
            self.raft.read_index(WRITE_TIMEOUT).await?;
        }
        loop {
            changes.borrow_and_update();
            let store = self.state.store();
            let due = tokio::time::Instant::now() >= deadline;
            // The index first (cheap); the answer is built only once it is due.
            if options.min_index == 0 || due || store.index_for(query) > options.min_index {
                let (value, index) = store.query(query);
                return Ok(self.indexed(value, index));
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(ClusterError::Raft(RaftError::Shutdown));
            }
        }
    }

    /// A client's blocking query for its node's allocations: woken only by applies that change
    /// that node's allocations (every waiting client woken by every apply would cost the server
    /// O(clients) per write).
    async fn wait_for_node(
        &self,
        node: &str,
        query: &StateQuery,
        min_index: u64,
        deadline: tokio::time::Instant,
    ) -> Indexed<StateAnswer> {
        let changes = self.state.node_changes(node);
        loop {
            // Registered before the check, so a change between the two is not missed.
            let changed = changes.notify().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let store = self.state.store();
            let due = tokio::time::Instant::now() >= deadline;
            if due || store.index_for(query) > min_index {
                let (value, index) = store.query(query);
                return self.indexed(value, index);
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    /// The whole state, encoded as [`Command::StateRestore`] takes it back, read as
    /// consistently as [`Cluster::read`] without `stale`. It holds every secret: hand it only
    /// to a management token.
    pub async fn save(&self) -> Result<Indexed<Vec<u8>>, ClusterError> {
        self.raft.read_index(WRITE_TIMEOUT).await?;
        let snapshot = self.state.export();
        let index = snapshot.index;
        Ok(self.indexed(command::encode(&snapshot)?, index))
    }

    fn indexed<T>(&self, value: T, index: u64) -> Indexed<T> {
        let status = self.raft.status();
        Indexed {
            value,
            index: index.max(1),
            known_leader: status.leader.is_some(),
            last_contact: if self.raft.is_leader() {
                Duration::ZERO
            } else {
                status.last_contact.unwrap_or(Duration::ZERO)
            },
        }
    }
}

/// The proposer: takes every write waiting, commits them as one log entry (a batch within
/// [`MAX_BATCH`] commands and [`MAX_COMMAND_BYTES`]) and answers each. Up to
/// [`MAX_IN_FLIGHT`] batches commit at once; a restore always goes alone.
async fn propose(raft: Arc<RaftNode>, mut incoming: tokio::sync::mpsc::Receiver<Proposal>) {
    let mut queue: VecDeque<Proposal> = VecDeque::new();
    let mut arrived = Vec::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut last = 0usize;
    loop {
        // Wait for a free slot first: writes arriving meanwhile join the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if queue.is_empty() && incoming.recv_many(&mut arrived, MAX_BATCH).await == 0 {
            return; // the cluster was dropped
        }
        gather(&mut incoming, &mut arrived, queue.len());
        // Writers answered by the last batch send their next write a moment later: when the
        // last batch was shared, give them that moment (a lone writer never waits).
        if last > 1 {
            let until = std::time::Instant::now() + LINGER;
            while queue.len() + arrived.len() < last && std::time::Instant::now() < until {
                tokio::task::yield_now().await;
                gather(&mut incoming, &mut arrived, queue.len());
            }
        }
        queue.extend(arrived.drain(..));
        let batch = next_batch(&mut queue);
        last = batch.len();
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Takes the writes already waiting, without waiting, up to a batch's worth.
fn gather(
    incoming: &mut tokio::sync::mpsc::Receiver<Proposal>,
    arrived: &mut Vec<Proposal>,
    queued: usize,
) {
    while queued + arrived.len() < MAX_BATCH {
        match incoming.try_recv() {
            Ok(p) => arrived.push(p),
            Err(_) => break,
        }
    }
}

/// The longest run at the front of `queue` that fits one log entry.
fn next_batch(queue: &mut VecDeque<Proposal>) -> Vec<Proposal> {
    // Room for the batch's own framing (version byte and length).
    let budget = MAX_COMMAND_BYTES.saturating_sub(16);
    let mut batch: Vec<Proposal> = Vec::new();
    let mut bytes = 0usize;
    while let Some(next) = queue.front() {
        let alone = matches!(next.command, Command::StateRestore(_));
        let full = batch.len() >= MAX_BATCH || bytes.saturating_add(next.bytes) > budget;
        if !batch.is_empty() && (alone || full) {
            break;
        }
        let Some(p) = queue.pop_front() else { break };
        bytes = bytes.saturating_add(p.bytes);
        batch.push(p);
        if alone {
            break;
        }
    }
    batch
}

/// Commits one batch and answers each of its writers.
async fn commit(raft: &RaftNode, batch: Vec<Proposal>) {
    let (mut commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let single = commands.len() == 1;
    let command = match commands.pop() {
        Some(only) if single => only,
        Some(last) => {
            commands.push(last);
            Command::Batch(commands)
        }
        None => return,
    };
    let result = async {
        let applied = raft.apply(command::encode(&command)?).await?;
        if !raft.wait_applied(applied.index, WRITE_TIMEOUT).await {
            // Committed, but this replica has not caught up: a read here may not show it yet.
            tracing::warn!(target: "cluster", index = applied.index, "write committed but not yet applied here");
        }
        Ok::<_, ClusterError>((applied.index, command::decode::<Outcome>(&applied.response)?))
    }
    .await;
    let answers: Vec<Result<(u64, Outcome), ClusterError>> = match result {
        Err(e) => replies.iter().map(|_| Err(e.clone())).collect(),
        Ok((at, outcome)) if single => vec![Ok((at, outcome))],
        Ok((at, Outcome::Batch(outcomes))) if outcomes.len() == replies.len() => {
            outcomes.into_iter().map(|o| Ok((at, o))).collect()
        }
        Ok((at, Outcome::Refused(why))) => replies
            .iter()
            .map(|_| Ok((at, Outcome::Refused(why.clone()))))
            .collect(),
        Ok((_, other)) => {
            let e = ClusterError::Encoding(format!("a batch answered {other:?}"));
            replies.iter().map(|_| Err(e.clone())).collect()
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer); // a writer that gave up is not waiting
    }
}

fn shut_down() -> ClusterError {
    ClusterError::Raft(RaftError::Shutdown)
}
