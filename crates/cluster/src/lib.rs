//! Caravan's replicated state machine, as a library: what servers agree on through Raft
//! ([`caravan_raft`]) and how they read it.
//!
//! - [`command`]: [`Command`], one typed variant per write (ACL writes, jobs, nodes,
//!   evaluations, an operator's state restore), and [`Outcome`]; postcard behind a version
//!   byte, bounded by [`command::MAX_COMMAND_BYTES`].
//! - [`state`]: [`ClusterState`], the state machine: the ACL table (tokens found by a keyed
//!   hash, policies compiled when written) and the job [`store`]; it feeds the leader's eval
//!   broker from `apply`.
//! - [`node`]: [`Cluster`], a Raft node with that state: writes, and reads that are
//!   linearizable unless `stale` and that block on `index`.
//! - [`duties`]: bootstrap, reconciliation, leadership and GC, seeing the agent only through
//!   [`duties::ServerDirectory`].
//!
//! Invariants:
//! - A command's effect depends only on the state and the command: IDs come from a seed or
//!   the proposer inside it, time from the proposer's clock inside it, placement from the
//!   evaluation's index.
//! - `apply` trusts nothing because it came through Raft: it re-runs every check the HTTP API
//!   runs, bounds sizes, refuses a replayed index, and a refused command changes nothing.
//! - `apply` and `snapshot` return errors; there is no empty snapshot standing for a failure.
//! - The broker is fed only from `apply` and from `set_leading`, under one lock, so a
//!   leadership change neither loses nor doubles an evaluation.
//!
//! ```
//! use caravan_agent_core::acl::AclWrite;
//! use caravan_cluster::{ClusterState, Command, Outcome};
//! use caravan_sched::broker::EvalBroker;
//!
//! let state = ClusterState::new(std::sync::Arc::new(EvalBroker::new(Default::default())), [1; 32]);
//! let write = Command::Acl(AclWrite::PolicyUpsert {
//!     name: "readers".into(),
//!     description: String::new(),
//!     rules: r#"agent { policy = "read" }"#.into(),
//! });
//! assert_eq!(state.apply_command(1, write.clone()), Outcome::Acl(None));
//! // The same command again at an index already applied (a replay) changes nothing.
//! assert!(matches!(state.apply_command(1, write), Outcome::Refused(_)));
//! assert!(state.acl_read(|acl| acl.policies.contains_key("readers")));
//! ```
#![deny(missing_docs)]

mod alloc_index;
pub mod command;
pub mod duties;
pub mod heartbeats;
pub mod node;
pub mod state;
pub mod store;

pub use command::{Command, Outcome, StateSnapshot};
pub use node::{Cluster, WRITE_TIMEOUT, raft_id, seed};
pub use state::ClusterState;

/// Every error this crate returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The state machine refused the command; nothing changed.
    Refused(String),
    /// Raft could not take or confirm the operation (no leader, no quorum, timeout, storage).
    Raft(caravan_raft::RaftError),
    /// A command, outcome or snapshot could not be encoded or decoded.
    Encoding(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Refused(why) => f.write_str(why),
            ClusterError::Raft(e) => write!(f, "{e}"),
            ClusterError::Encoding(e) => write!(f, "cluster encoding: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {}

impl From<caravan_raft::RaftError> for ClusterError {
    fn from(e: caravan_raft::RaftError) -> ClusterError {
        ClusterError::Raft(e)
    }
}
