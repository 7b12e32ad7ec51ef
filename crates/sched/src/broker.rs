//! The evaluation broker: a ready queue per scheduler type ordered by priority then age, one
//! outstanding evaluation per job (later ones wait), at-least-once delivery with ack/nack, a
//! delivery limit (then the failed queue) and an unack timeout that redelivers.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::SchedError;

/// An evaluation as the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Eval {
    /// Evaluation ID.
    pub id: String,
    /// The job it evaluates.
    pub job_id: String,
    /// Higher first.
    pub priority: u32,
    /// Scheduler type (`service`, `batch`, `system`, `sysbatch`, `_core`).
    pub scheduler: String,
    /// Older first among equal priorities.
    pub create_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ready(Eval);

impl Ord for Ready {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0
            .priority
            .cmp(&o.0.priority)
            .then(Reverse(self.0.create_index).cmp(&Reverse(o.0.create_index)))
    }
}
impl PartialOrd for Ready {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

struct Unacked {
    eval: Eval,
    token: u64,
    deadline: Instant,
}

/// Broker timing and limits.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfig {
    /// An unacked evaluation is redelivered after this (Nomad: 60 s).
    pub nack_timeout: Duration,
    /// Deliveries before an evaluation moves to the failed queue (Nomad: 3).
    pub delivery_limit: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            nack_timeout: Duration::from_secs(60),
            delivery_limit: 3,
        }
    }
}

#[derive(Default)]
struct State {
    ready: HashMap<String, BinaryHeap<Ready>>,
    waiting: HashMap<String, VecDeque<Eval>>,
    outstanding_jobs: HashSet<String>,
    unacked: HashMap<String, Unacked>,
    deliveries: HashMap<String, u32>,
    failed: Vec<Eval>,
    next_token: u64,
    wake_generation: u64,
}

/// Broker counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Evaluations ready to dequeue.
    pub ready: usize,
    /// Evaluations waiting for their job's outstanding one.
    pub waiting: usize,
    /// Delivered, not yet acked.
    pub unacked: usize,
    /// Past the delivery limit.
    pub failed: usize,
}

/// The broker; share it with `Arc`.
pub struct EvalBroker {
    state: Mutex<State>,
    ready_cond: Condvar,
    config: BrokerConfig,
}

impl EvalBroker {
    /// An empty broker.
    pub fn new(config: BrokerConfig) -> EvalBroker {
        EvalBroker {
            state: Mutex::new(State::default()),
            ready_cond: Condvar::new(),
            config,
        }
    }

    /// Adds an evaluation: ready at once unless its job already has one outstanding.
    pub fn enqueue(&self, eval: Eval) {
        let mut s = self.state.lock();
        if s.outstanding_jobs.contains(&eval.job_id) {
            s.waiting
                .entry(eval.job_id.clone())
                .or_default()
                .push_back(eval);
            return;
        }
        s.outstanding_jobs.insert(eval.job_id.clone());
        s.ready
            .entry(eval.scheduler.clone())
            .or_default()
            .push(Ready(eval));
        drop(s);
        self.ready_cond.notify_one();
    }

    /// Takes the best ready evaluation among `types`, waiting up to `timeout`. Returns `None`
    /// on timeout or as soon as `cancel()` is true after a [`EvalBroker::wake_all`].
    pub fn dequeue(
        &self,
        types: &[String],
        timeout: Duration,
        cancel: &dyn Fn() -> bool,
    ) -> Option<(Eval, u64)> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        loop {
            if cancel() {
                return None;
            }
            self.redeliver_expired(&mut s);
            if let Some(found) = Self::take_best(&mut s, types, self.config.nack_timeout) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let next_expiry = s.unacked.values().map(|u| u.deadline).min();
            let wait_until = next_expiry.map_or(deadline, |e| e.min(deadline));
            self.ready_cond.wait_until(&mut s, wait_until);
        }
    }

    fn take_best(s: &mut State, types: &[String], nack_timeout: Duration) -> Option<(Eval, u64)> {
        let best = types
            .iter()
            .filter_map(|t| {
                s.ready
                    .get(t)
                    .and_then(|h| h.peek())
                    .map(|r| (t, r.clone()))
            })
            .max_by(|a, b| a.1.cmp(&b.1))
            .map(|(t, _)| t.clone())?;
        let Ready(eval) = s.ready.get_mut(&best)?.pop()?;
        s.next_token += 1;
        let token = s.next_token;
        *s.deliveries.entry(eval.id.clone()).or_insert(0) += 1;
        s.unacked.insert(
            eval.id.clone(),
            Unacked {
                eval: eval.clone(),
                token,
                deadline: Instant::now() + nack_timeout,
            },
        );
        Some((eval, token))
    }

    fn redeliver_expired(&self, s: &mut State) {
        let now = Instant::now();
        let expired: Vec<String> = s
            .unacked
            .iter()
            .filter(|(_, u)| u.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(u) = s.unacked.remove(&id) {
                tracing::debug!(target: "sched", eval = %id, "unacked evaluation timed out; redelivering");
                self.requeue(s, u.eval);
            }
        }
    }

    /// Back to ready, or to the failed queue past the delivery limit.
    fn requeue(&self, s: &mut State, eval: Eval) {
        let deliveries = s.deliveries.get(&eval.id).copied().unwrap_or(0);
        if deliveries >= self.config.delivery_limit {
            s.deliveries.remove(&eval.id);
            Self::release_job(s, &eval.job_id);
            s.failed.push(eval);
        } else {
            s.ready
                .entry(eval.scheduler.clone())
                .or_default()
                .push(Ready(eval));
        }
        self.ready_cond.notify_all();
    }

    /// The job's next waiting evaluation becomes ready, or the job is free.
    fn release_job(s: &mut State, job_id: &str) {
        let next = s.waiting.get_mut(job_id).and_then(VecDeque::pop_front);
        if s.waiting.get(job_id).is_some_and(VecDeque::is_empty) {
            s.waiting.remove(job_id);
        }
        match next {
            Some(eval) => s
                .ready
                .entry(eval.scheduler.clone())
                .or_default()
                .push(Ready(eval)),
            None => {
                s.outstanding_jobs.remove(job_id);
            }
        }
    }

    /// Acknowledges a delivered evaluation.
    pub fn ack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        let mut s = self.state.lock();
        match s.unacked.get(eval_id) {
            Some(u) if u.token == token => {}
            Some(_) => return Err(SchedError::TokenMismatch(eval_id.to_string())),
            None => return Err(SchedError::NotOutstanding(eval_id.to_string())),
        }
        let Some(u) = s.unacked.remove(eval_id) else {
            return Err(SchedError::NotOutstanding(eval_id.to_string()));
        };
        s.deliveries.remove(eval_id);
        Self::release_job(&mut s, &u.eval.job_id);
        drop(s);
        self.ready_cond.notify_all();
        Ok(())
    }

    /// Negatively acknowledges: redelivered, or failed past the delivery limit.
    pub fn nack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        let mut s = self.state.lock();
        match s.unacked.get(eval_id) {
            Some(u) if u.token == token => {}
            Some(_) => return Err(SchedError::TokenMismatch(eval_id.to_string())),
            None => return Err(SchedError::NotOutstanding(eval_id.to_string())),
        }
        if let Some(u) = s.unacked.remove(eval_id) {
            self.requeue(&mut s, u.eval);
        }
        Ok(())
    }

    /// Wakes every waiting dequeue so it re-checks its cancel condition (pause, stop).
    pub fn wake_all(&self) {
        let mut s = self.state.lock();
        s.wake_generation += 1;
        drop(s);
        self.ready_cond.notify_all();
    }

    /// Evaluations past the delivery limit.
    pub fn failed(&self) -> Vec<Eval> {
        self.state.lock().failed.clone()
    }

    /// Removes and returns the evaluations past the delivery limit (to record them as failed).
    pub fn take_failed(&self) -> Vec<Eval> {
        std::mem::take(&mut self.state.lock().failed)
    }

    /// Forgets everything (a leader stepping down); outstanding deliveries become invalid.
    pub fn flush(&self) {
        let mut s = self.state.lock();
        let next_token = s.next_token;
        let wake_generation = s.wake_generation + 1;
        *s = State {
            next_token,
            wake_generation,
            ..State::default()
        };
        drop(s);
        self.ready_cond.notify_all();
    }

    /// Counters.
    pub fn stats(&self) -> BrokerStats {
        let s = self.state.lock();
        BrokerStats {
            ready: s.ready.values().map(BinaryHeap::len).sum(),
            waiting: s.waiting.values().map(VecDeque::len).sum(),
            unacked: s.unacked.len(),
            failed: s.failed.len(),
        }
    }

    /// Evaluations ready and delivered-but-unacked, by scheduler type.
    pub fn stats_by_scheduler(&self) -> std::collections::BTreeMap<String, (usize, usize)> {
        let s = self.state.lock();
        let mut out = std::collections::BTreeMap::<String, (usize, usize)>::new();
        for (scheduler, heap) in &s.ready {
            out.entry(scheduler.clone()).or_default().0 += heap.len();
        }
        for u in s.unacked.values() {
            out.entry(u.eval.scheduler.clone()).or_default().1 += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(id: &str, job: &str, priority: u32, index: u64) -> Eval {
        Eval {
            id: id.into(),
            job_id: job.into(),
            priority,
            scheduler: "service".into(),
            create_index: index,
        }
    }

    fn types() -> Vec<String> {
        vec!["service".into(), "batch".into()]
    }

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn priority_then_age() {
        let b = EvalBroker::new(BrokerConfig::default());
        b.enqueue(eval("low", "j1", 10, 1));
        b.enqueue(eval("high-new", "j2", 90, 5));
        b.enqueue(eval("high-old", "j3", 90, 2));
        let order: Vec<String> = (0..3)
            .map(|_| b.dequeue(&types(), NOW, &|| false).unwrap().0.id)
            .collect();
        assert_eq!(order, ["high-old", "high-new", "low"]);
    }

    #[test]
    fn one_outstanding_per_job() {
        let b = EvalBroker::new(BrokerConfig::default());
        b.enqueue(eval("a", "job", 50, 1));
        b.enqueue(eval("b", "job", 50, 2));
        let (first, token) = b.dequeue(&types(), NOW, &|| false).unwrap();
        assert_eq!(first.id, "a");
        assert!(
            b.dequeue(&types(), NOW, &|| false).is_none(),
            "b waits for a"
        );
        assert_eq!(b.stats().waiting, 1);
        b.ack("a", token).unwrap();
        assert_eq!(b.dequeue(&types(), NOW, &|| false).unwrap().0.id, "b");
    }

    #[test]
    fn nack_redelivers_until_the_limit() {
        let b = EvalBroker::new(BrokerConfig {
            nack_timeout: Duration::from_secs(60),
            delivery_limit: 2,
        });
        b.enqueue(eval("a", "job", 50, 1));
        let (_, t1) = b.dequeue(&types(), NOW, &|| false).unwrap();
        assert!(matches!(
            b.ack("a", t1 + 100),
            Err(SchedError::TokenMismatch(_))
        ));
        b.nack("a", t1).unwrap();
        let (again, t2) = b.dequeue(&types(), NOW, &|| false).unwrap();
        assert_eq!(again.id, "a");
        b.nack("a", t2).unwrap();
        assert!(b.dequeue(&types(), NOW, &|| false).is_none());
        assert_eq!(b.failed().len(), 1);
        assert!(matches!(b.ack("a", t2), Err(SchedError::NotOutstanding(_))));
        // The job is free again.
        b.enqueue(eval("c", "job", 50, 3));
        assert_eq!(b.dequeue(&types(), NOW, &|| false).unwrap().0.id, "c");
    }

    #[test]
    fn unack_timeout_redelivers() {
        let b = EvalBroker::new(BrokerConfig {
            nack_timeout: Duration::from_millis(30),
            delivery_limit: 3,
        });
        b.enqueue(eval("a", "job", 50, 1));
        let (_, t1) = b.dequeue(&types(), NOW, &|| false).unwrap();
        let (again, t2) = b
            .dequeue(&types(), Duration::from_secs(2), &|| false)
            .unwrap();
        assert_eq!(again.id, "a");
        assert_ne!(t1, t2);
        assert!(b.ack("a", t1).is_err(), "the old delivery's token is stale");
        b.ack("a", t2).unwrap();
    }

    #[test]
    fn only_requested_types_and_wakeups() {
        let b = std::sync::Arc::new(EvalBroker::new(BrokerConfig::default()));
        let mut sys = eval("s", "j", 50, 1);
        sys.scheduler = "system".into();
        b.enqueue(sys);
        assert!(b.dequeue(&types(), NOW, &|| false).is_none());
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let got = b.dequeue(&["batch".to_string()], Duration::from_secs(5), &|| false);
                (got.map(|g| g.0.id), started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let mut batch = eval("b", "k", 50, 2);
        batch.scheduler = "batch".into();
        b.enqueue(batch);
        let (got, took) = waiter.join().unwrap();
        assert_eq!(got.as_deref(), Some("b"));
        assert!(took < Duration::from_secs(5));
    }
}
