//! [`Cluster`]: one server's Raft node and the state it replicates, with the write path
//! (propose, wait until applied here) and the read path (linearizable unless `stale`, blocking
//! on `index`).

use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::query::{Indexed, ReadOptions, StateAnswer, StateQuery};
use caravan_raft::{RaftConfig, RaftError, RaftNode, Transport};
use caravan_sched::broker::{BrokerConfig, EvalBroker};

use crate::ClusterError;
use crate::command::{self, Command, Outcome};
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

/// One server's Raft node and replicated state.
pub struct Cluster {
    raft: Arc<RaftNode>,
    state: Arc<ClusterState>,
}

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
        let raft = RaftNode::start(config, state.clone(), transport).await?;
        Ok(Cluster {
            raft: Arc::new(raft),
            state,
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
    pub async fn write(&self, command: &Command) -> Result<Outcome, ClusterError> {
        let bytes = command.encode()?;
        let applied = self.raft.apply(bytes).await?;
        if !self.raft.wait_applied(applied.index, WRITE_TIMEOUT).await {
            // Committed, but this replica has not caught up: a read here may not show it yet.
            tracing::warn!(target: "cluster", index = applied.index, "write committed but not yet applied here");
        }
        match command::decode::<Outcome>(&applied.response)? {
            Outcome::Refused(why) => Err(ClusterError::Refused(why)),
            outcome => Ok(outcome),
        }
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

    fn indexed(&self, value: StateAnswer, index: u64) -> Indexed<StateAnswer> {
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
