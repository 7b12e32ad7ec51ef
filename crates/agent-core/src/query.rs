//! Reads of the replicated state (jobs, evaluations, allocations, nodes) as values: what is
//! asked ([`StateQuery`]), how ([`ReadOptions`]: Nomad's `stale`, `index` and `wait`), and the
//! answer with the index and leader facts Nomad reports in `X-Nomad-*` headers ([`Indexed`]).
//! The HTTP API builds these; the server answers them; a forwarded read can carry them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::jobs::{Allocation, Evaluation, Job, Node};

/// How long a blocking query waits when `wait` is not given (Nomad: 5 minutes).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);

/// The longest a blocking query waits, whatever `wait` says (Nomad: 10 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// One read of the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateQuery {
    /// Every job.
    Jobs,
    /// One job by ID.
    Job(String),
    /// A job's allocations.
    JobAllocations(String),
    /// Every evaluation.
    Evaluations,
    /// A job's evaluations (answered as [`StateAnswer::Evaluations`]; none for an unknown
    /// job, as Nomad).
    JobEvaluations(String),
    /// One evaluation by ID.
    Evaluation(String),
    /// Every allocation.
    Allocations,
    /// One allocation by ID.
    Allocation(String),
    /// Every client node.
    Nodes,
    /// One node by ID.
    Node(String),
    /// The allocations placed on a node (answered as [`StateAnswer::Allocations`]; none for
    /// an unknown node).
    NodeAllocations(String),
}

/// The answer to a [`StateQuery`], of the same variant. `None`: the object is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateAnswer {
    /// Every job.
    Jobs(Vec<Job>),
    /// One job.
    Job(Option<Job>),
    /// A job's allocations (`None`: the job is unknown).
    JobAllocations(Option<Vec<Allocation>>),
    /// Every evaluation.
    Evaluations(Vec<Evaluation>),
    /// One evaluation.
    Evaluation(Option<Evaluation>),
    /// Every allocation.
    Allocations(Vec<Allocation>),
    /// One allocation.
    Allocation(Option<Allocation>),
    /// Every node.
    Nodes(Vec<Node>),
    /// One node.
    Node(Option<Node>),
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReadOptions {
    /// `?stale`: any server may answer from its own replica, which may lag. Without it the
    /// answer is at least as new as every write acknowledged before the read started.
    pub stale: bool,
    /// `?index`: a blocking query; answer once the result's index is past this one (or the
    /// wait is over). 0: answer at once.
    pub min_index: u64,
    /// `?wait`: how long a blocking query may wait (zero: [`DEFAULT_WAIT`]).
    pub wait: Duration,
}

impl ReadOptions {
    /// How long this read may block: nothing without `min_index`, else `wait` (default
    /// [`DEFAULT_WAIT`]) capped at [`MAX_WAIT`], plus Nomad's jitter of up to a sixteenth
    /// (`jitter` is a number in 0..1 the caller draws).
    pub fn blocking_wait(&self, jitter: f64) -> Duration {
        if self.min_index == 0 {
            return Duration::ZERO;
        }
        let wait = if self.wait.is_zero() {
            DEFAULT_WAIT
        } else {
            self.wait.min(MAX_WAIT)
        };
        wait + wait.div_f64(16.0).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A read's answer and what Nomad reports with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexed<T> {
    /// The answer.
    pub value: T,
    /// `X-Nomad-Index`: the index of the last change to what was read (at least 1).
    pub index: u64,
    /// `X-Nomad-KnownLeader`: whether the answering server knew a leader.
    pub known_leader: bool,
    /// `X-Nomad-LastContact`: how long since the answering server heard from the leader (zero
    /// on the leader).
    pub last_contact: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_wait() {
        let check = |min_index, wait_secs, jitter, want_secs: f64| {
            let o = ReadOptions {
                stale: false,
                min_index,
                wait: Duration::from_secs(wait_secs),
            };
            assert_eq!(
                o.blocking_wait(jitter),
                Duration::from_secs_f64(want_secs),
                "{min_index} {wait_secs} {jitter}"
            );
        };
        check(0, 30, 1.0, 0.0);
        check(5, 0, 0.0, 300.0);
        check(5, 16, 1.0, 17.0);
        check(5, 3600, 0.0, 600.0);
        check(5, 16, 7.0, 17.0);
    }
}
