//! Commands (every replicated write) and their outcomes, with their binary encoding.
//!
//! A command carries everything its effect depends on besides the state: IDs come from a seed
//! or from the proposer (ACL writes carry their new IDs), time from the proposer's clock. The
//! encoding is postcard behind a version byte, so a later format can be told apart.

use caravan_agent_core::acl::{AclState, AclWrite, Token};
use caravan_agent_core::jobs::{Job, Node};
use serde::{Deserialize, Serialize};

use crate::ClusterError;
use crate::store::{JobWrite, NodeStatusChange, Tables};

/// The largest encoded command the cluster proposes or applies. A command over it is refused
/// before it reaches the log, and refused again by `apply` if it arrives anyway.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// The first byte of every encoded command, outcome and snapshot of this format.
const VERSION: u8 = 2;

/// One replicated write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An ACL change (bootstrap, policy or token upsert/delete), checked as the HTTP API
    /// checks it.
    Acl(AclWrite),
    /// Registers (or updates) a job.
    JobRegister {
        /// The job, canonical (defaults filled, see `Job::from_submission`).
        job: Job,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Stops a job.
    JobDeregister {
        /// Its ID.
        id: String,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Adds or updates a client node.
    NodeUpsert {
        /// The node.
        node: Node,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// A client registers its node (checked against the secret it registered with before).
    NodeRegister {
        /// The node, with its secret.
        node: Node,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// A node's status changes: a client's own report (with its secret) or the leader's
    /// heartbeat timer marking it down (no secret).
    NodeStatus {
        /// The change.
        change: NodeStatusChange,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// A client reports the client status of allocations placed on its node.
    AllocClientUpdate {
        /// The node.
        node_id: String,
        /// Its secret.
        secret_id: String,
        /// `(allocation ID, client status)`.
        updates: Vec<(String, String)>,
    },
    /// Runs the scheduler for an evaluation (placement is deterministic).
    EvalProcess {
        /// The evaluation.
        eval_id: String,
        /// `node_gc_threshold` in seconds.
        gc_threshold_secs: u64,
        /// The proposer's clock, Unix seconds.
        now_secs: u64,
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Marks an evaluation failed (past the delivery limit).
    EvalFail {
        /// The evaluation.
        eval_id: String,
    },
    /// Creates a `_core` garbage-collection evaluation.
    CoreEval {
        /// Seeds the IDs created.
        seed: u64,
    },
    /// Replaces the whole state with an operator's snapshot (management token only, checked by
    /// the proposer; the snapshot is checked again by `apply`).
    StateRestore(Box<StateSnapshot>),
    /// Several commands proposed together (group commit): applied in order at the same log
    /// index, each checked and answered on its own. At most [`MAX_BATCH`], no nesting, no
    /// `StateRestore` inside.
    Batch(Vec<Command>),
}

/// The most commands one [`Command::Batch`] carries.
pub const MAX_BATCH: usize = 256;

/// The whole replicated state: what a snapshot holds and what `StateRestore` installs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// The log index of the last command applied.
    pub index: u64,
    /// ACL policies and tokens.
    pub acl: AclState,
    /// Jobs, evaluations, allocations and nodes.
    pub tables: Tables,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; nothing to report.
    Applied,
    /// Refused: nothing changed. The text says why.
    Refused(String),
    /// An ACL write: the token created or changed, if any.
    Acl(Option<Token>),
    /// A job write: its evaluation and the job's modify index (`None`: unknown job).
    Job(Option<JobWrite>),
    /// A batch: one outcome per command, in order.
    Batch(Vec<Outcome>),
}

/// Encodes a value behind the version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ClusterError> {
    let mut out = vec![VERSION];
    postcard::to_io(value, &mut out).map_err(|e| ClusterError::Encoding(e.to_string()))?;
    Ok(out)
}

/// Decodes what [`encode`] wrote; another version, trailing bytes or garbage are errors.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ClusterError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            let (value, left) = postcard::take_from_bytes(rest)
                .map_err(|e| ClusterError::Encoding(e.to_string()))?;
            if left.is_empty() {
                Ok(value)
            } else {
                Err(ClusterError::Encoding(format!(
                    "{} trailing bytes",
                    left.len()
                )))
            }
        }
        Some((v, _)) => Err(ClusterError::Encoding(format!(
            "unknown format version {v}"
        ))),
        None => Err(ClusterError::Encoding("empty".into())),
    }
}

impl Command {
    /// The encoded command, refused if over [`MAX_COMMAND_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, ClusterError> {
        let bytes = encode(self)?;
        if bytes.len() > MAX_COMMAND_BYTES && !matches!(self, Command::StateRestore(_)) {
            return Err(ClusterError::Refused(format!(
                "command of {} bytes is over the limit of {MAX_COMMAND_BYTES} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let c = Command::CoreEval { seed: 7 };
        let bytes = c.encode().unwrap();
        assert_eq!(decode::<Command>(&bytes).unwrap(), c);
        let check = |bytes: &[u8], want: &str| {
            let e = decode::<Command>(bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{bytes:?}: {e}");
        };
        check(&[], "empty");
        check(&[9, 0], "unknown format version 9");
        check(&[VERSION, 200], "");
        let mut long = bytes.clone();
        long.push(0);
        check(&long, "1 trailing bytes");
        let big = Command::JobDeregister {
            id: "x".repeat(MAX_COMMAND_BYTES),
            seed: 0,
        };
        assert!(
            big.encode()
                .unwrap_err()
                .to_string()
                .contains("over the limit")
        );
    }
}
