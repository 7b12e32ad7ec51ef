//! Scheduler workers: OS threads pulling evaluations from the broker, with Nomad's status model
//! (Starting → Started; WaitingToDequeue / WaitingForRaft / Scheduling / Backoff; Pausing →
//! Paused; Resuming → Started; Stopping → Stopped). A pause reaches a waiting worker at once: the
//! broker wakes it rather than letting it finish a long poll.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use caravan_agent_core::sched::{WorkerInfo, WorkerStatus, WorkloadStatus};
use parking_lot::{Condvar, Mutex};

use crate::SchedError;
use crate::broker::{Eval, EvalBroker};

/// Where workers take evaluations from: the local [`EvalBroker`], or (on a server that is not
/// the leader) the leader's broker over RPC.
pub trait EvalSource: Send + Sync + 'static {
    /// Takes the best ready evaluation among `types` within `timeout`; `None` on timeout or as
    /// soon as `cancel()` is true after [`EvalSource::wake_all`].
    fn dequeue(
        &self,
        types: &[String],
        timeout: Duration,
        cancel: &dyn Fn() -> bool,
    ) -> Option<(Eval, u64)>;
    /// Acknowledges a delivery.
    fn ack(&self, eval_id: &str, token: u64) -> Result<(), SchedError>;
    /// Negatively acknowledges a delivery.
    fn nack(&self, eval_id: &str, token: u64) -> Result<(), SchedError>;
    /// Wakes waiting dequeues so they re-check `cancel`.
    fn wake_all(&self);
}

impl EvalSource for EvalBroker {
    fn dequeue(
        &self,
        types: &[String],
        timeout: Duration,
        cancel: &dyn Fn() -> bool,
    ) -> Option<(Eval, u64)> {
        EvalBroker::dequeue(self, types, timeout, cancel)
    }
    fn ack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        EvalBroker::ack(self, eval_id, token)
    }
    fn nack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        EvalBroker::nack(self, eval_id, token)
    }
    fn wake_all(&self) {
        EvalBroker::wake_all(self)
    }
}

/// What a worker runs for each evaluation: `Ok` acks it, `Err` nacks it (after a backoff).
pub type Scheduler = Arc<dyn Fn(&Eval) -> Result<(), String> + Send + Sync>;

/// How long one dequeue waits before the loop goes round (Nomad: 500 ms).
pub const DEQUEUE_TIMEOUT: Duration = Duration::from_millis(500);

struct Cell {
    status: WorkerStatus,
    workload: WorkloadStatus,
    pause_requested: bool,
    stop_requested: bool,
}

struct Shared {
    cell: Mutex<Cell>,
    cond: Condvar,
}

/// One worker thread and its state.
pub struct Worker {
    id: String,
    enabled: Vec<String>,
    started: SystemTime,
    shared: Arc<Shared>,
    broker: Arc<dyn EvalSource>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker thread serving `enabled` scheduler types.
    pub fn start(
        enabled: Vec<String>,
        broker: Arc<dyn EvalSource>,
        scheduler: Scheduler,
    ) -> Worker {
        let shared = Arc::new(Shared {
            cell: Mutex::new(Cell {
                status: WorkerStatus::Starting,
                workload: WorkloadStatus::Unknown,
                pause_requested: false,
                stop_requested: false,
            }),
            cond: Condvar::new(),
        });
        let id = uuid::Uuid::new_v4().to_string();
        let thread = {
            let shared = shared.clone();
            let broker = broker.clone();
            let enabled = enabled.clone();
            std::thread::Builder::new()
                .name(format!("sched-{}", &id[..8]))
                .spawn(move || run(shared, broker, enabled, scheduler))
                .ok()
        };
        Worker {
            id,
            enabled,
            started: SystemTime::now(),
            shared,
            broker,
            thread,
        }
    }

    /// Its report.
    pub fn info(&self) -> WorkerInfo {
        let cell = self.shared.cell.lock();
        WorkerInfo {
            id: self.id.clone(),
            enabled_schedulers: self.enabled.clone(),
            started: self.started,
            status: cell.status,
            workload_status: cell.workload,
        }
    }

    /// Asks it to pause (ignored when pausing, paused, stopping or stopped).
    pub fn pause(&self) {
        let mut cell = self.shared.cell.lock();
        if matches!(
            cell.status,
            WorkerStatus::Pausing
                | WorkerStatus::Paused
                | WorkerStatus::Stopping
                | WorkerStatus::Stopped
        ) {
            return;
        }
        cell.status = WorkerStatus::Pausing;
        cell.pause_requested = true;
        drop(cell);
        self.shared.cond.notify_all();
        self.broker.wake_all();
    }

    /// Asks a paused worker to resume (ignored otherwise).
    pub fn resume(&self) {
        let mut cell = self.shared.cell.lock();
        if cell.status != WorkerStatus::Paused && cell.status != WorkerStatus::Pausing {
            return;
        }
        cell.status = WorkerStatus::Resuming;
        cell.pause_requested = false;
        drop(cell);
        self.shared.cond.notify_all();
    }

    /// Asks it to stop; a paused worker wakes and stops.
    pub fn stop(&self) {
        let mut cell = self.shared.cell.lock();
        if cell.status == WorkerStatus::Stopped {
            return;
        }
        cell.status = WorkerStatus::Stopping;
        cell.stop_requested = true;
        drop(cell);
        self.shared.cond.notify_all();
        self.broker.wake_all();
    }

    /// Waits (bounded) for its thread to end after [`Worker::stop`].
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_workload(shared: &Shared, workload: WorkloadStatus) {
    shared.cell.lock().workload = workload;
}

/// Returns false when the worker must stop.
fn pause_point(shared: &Shared) -> bool {
    let mut cell = shared.cell.lock();
    if cell.stop_requested {
        return false;
    }
    if !cell.pause_requested {
        return true;
    }
    let before = cell.workload;
    cell.status = WorkerStatus::Paused;
    cell.workload = WorkloadStatus::Paused;
    shared.cond.notify_all();
    while cell.pause_requested && !cell.stop_requested {
        shared.cond.wait(&mut cell);
    }
    if cell.stop_requested {
        return false;
    }
    cell.status = WorkerStatus::Started;
    cell.workload = before;
    true
}

fn millis_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// `nomad.nomad.worker.invoke_scheduler.<type>` for the known scheduler types (a fixed set of
/// names, so an evaluation cannot mint series).
fn invoke_metric(scheduler: &str) -> &'static str {
    match scheduler {
        "service" => "nomad.nomad.worker.invoke_scheduler.service",
        "batch" => "nomad.nomad.worker.invoke_scheduler.batch",
        "system" => "nomad.nomad.worker.invoke_scheduler.system",
        "sysbatch" => "nomad.nomad.worker.invoke_scheduler.sysbatch",
        "_core" => "nomad.nomad.worker.invoke_scheduler._core",
        _ => "nomad.nomad.worker.invoke_scheduler.other",
    }
}

fn run(
    shared: Arc<Shared>,
    broker: Arc<dyn EvalSource>,
    enabled: Vec<String>,
    scheduler: Scheduler,
) {
    {
        let mut cell = shared.cell.lock();
        if cell.status == WorkerStatus::Starting {
            cell.status = WorkerStatus::Started;
        }
        cell.workload = WorkloadStatus::Running;
    }
    let mut backoff = Duration::from_millis(20);
    while pause_point(&shared) {
        set_workload(&shared, WorkloadStatus::WaitingToDequeue);
        let cancel = || {
            let cell = shared.cell.lock();
            cell.pause_requested || cell.stop_requested
        };
        let waited = std::time::Instant::now();
        let Some((eval, token)) = broker.dequeue(&enabled, DEQUEUE_TIMEOUT, &cancel) else {
            continue;
        };
        metrics::histogram!("nomad.nomad.worker.dequeue_eval").record(millis_since(waited));
        // State is local until consensus arrives: nothing to wait for, but the status is real.
        set_workload(&shared, WorkloadStatus::WaitingForRaft);
        set_workload(&shared, WorkloadStatus::Scheduling);
        // A panicking scheduler must not take the worker with it: treat it as a failure.
        let invoked = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scheduler(&eval)))
            .unwrap_or_else(|_| Err("scheduler panicked".to_string()));
        // Nomad's name, the scheduler type as its last part (`…invoke_scheduler.service`).
        metrics::histogram!(invoke_metric(&eval.scheduler)).record(millis_since(invoked));
        match outcome {
            Ok(()) => {
                backoff = Duration::from_millis(20);
                let acking = std::time::Instant::now();
                if let Err(e) = broker.ack(&eval.id, token) {
                    tracing::warn!(target: "sched", eval = %eval.id, error = %e, "ack failed");
                }
                metrics::histogram!("nomad.nomad.worker.send_ack").record(millis_since(acking));
            }
            Err(e) => {
                tracing::warn!(target: "sched", eval = %eval.id, error = %e, "scheduling failed; nacking");
                let _ = broker.nack(&eval.id, token);
                set_workload(&shared, WorkloadStatus::Backoff);
                let mut cell = shared.cell.lock();
                if !cell.stop_requested {
                    shared.cond.wait_for(&mut cell, backoff);
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    let mut cell = shared.cell.lock();
    cell.status = WorkerStatus::Stopped;
    cell.workload = WorkloadStatus::Stopped;
}

/// A pool of workers with one configuration.
pub struct WorkerPool {
    workers: Vec<Worker>,
    broker: Arc<dyn EvalSource>,
    scheduler: Scheduler,
}

impl WorkerPool {
    /// Starts `n` workers serving `enabled`.
    pub fn new(
        n: usize,
        enabled: &[String],
        broker: Arc<dyn EvalSource>,
        scheduler: Scheduler,
    ) -> WorkerPool {
        let workers = (0..n)
            .map(|_| Worker::start(enabled.to_vec(), broker.clone(), scheduler.clone()))
            .collect();
        WorkerPool {
            workers,
            broker,
            scheduler,
        }
    }

    /// Every worker's report, in pool order.
    pub fn info(&self) -> Vec<WorkerInfo> {
        self.workers.iter().map(Worker::info).collect()
    }

    /// Replaces every worker (new IDs); the old ones stop in the background.
    pub fn rebuild(&mut self, n: usize, enabled: &[String]) {
        let old = std::mem::take(&mut self.workers);
        for w in &old {
            w.stop();
        }
        std::thread::spawn(move || old.into_iter().for_each(Worker::join));
        self.workers = (0..n)
            .map(|_| {
                Worker::start(
                    enabled.to_vec(),
                    self.broker.clone(),
                    self.scheduler.clone(),
                )
            })
            .collect();
    }

    /// Leadership: a leader pauses the first ⌊3n/4⌋ workers (n > 1); a follower resumes them.
    pub fn set_leader(&self, leader: bool) {
        let paused = caravan_agent_core::sched::leader_paused_workers(self.workers.len());
        for w in self.workers.iter().take(paused) {
            if leader {
                w.pause();
            } else {
                w.resume();
            }
        }
    }

    /// Pauses worker `i`.
    pub fn pause(&self, i: usize) {
        if let Some(w) = self.workers.get(i) {
            w.pause();
        }
    }

    /// Resumes worker `i`.
    pub fn resume(&self, i: usize) {
        if let Some(w) = self.workers.get(i) {
            w.resume();
        }
    }

    /// Stops every worker and waits for their threads.
    pub fn shutdown(&mut self) {
        let old = std::mem::take(&mut self.workers);
        for w in &old {
            w.stop();
        }
        old.into_iter().for_each(Worker::join);
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        for w in &self.workers {
            w.stop();
        }
    }
}
