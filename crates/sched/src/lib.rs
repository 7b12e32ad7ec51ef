//! Caravan's scheduling core: the evaluation [`broker`] and the scheduler [`workers`] (OS
//! threads with Nomad's status model). No HTTP, no sockets: embed it with any state behind the
//! [`workers::Scheduler`] function.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use caravan_sched::broker::{BrokerConfig, Eval, EvalBroker};
//! use caravan_sched::workers::WorkerPool;
//!
//! let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
//! let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
//! let counter = done.clone();
//! let mut pool = WorkerPool::new(2, &["service".to_string(), "_core".to_string()], broker.clone(),
//!     Arc::new(move |_eval: &Eval| { counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst); Ok(()) }));
//! broker.enqueue(Eval { id: "e1".into(), job_id: "web".into(), priority: 50,
//!     scheduler: "service".into(), create_index: 1 });
//! for _ in 0..200 {
//!     if done.load(std::sync::atomic::Ordering::SeqCst) == 1 { break; }
//!     std::thread::sleep(Duration::from_millis(10));
//! }
//! assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 1);
//! pool.shutdown();
//! ```
#![deny(missing_docs)]

pub mod broker;
pub mod placement;
pub mod workers;

/// Every error this crate returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedError {
    /// The evaluation is not delivered (already acked, nacked, or timed out).
    NotOutstanding(String),
    /// The delivery token is not the current one for this evaluation.
    TokenMismatch(String),
    /// A remote broker could not be reached or refused the call.
    Remote(String),
}

impl std::fmt::Display for SchedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchedError::NotOutstanding(id) => write!(f, "evaluation {id} is not outstanding"),
            SchedError::TokenMismatch(id) => write!(f, "evaluation {id}: token does not match"),
            SchedError::Remote(e) => write!(f, "eval broker: {e}"),
        }
    }
}

impl std::error::Error for SchedError {}

#[cfg(test)]
mod tests;
