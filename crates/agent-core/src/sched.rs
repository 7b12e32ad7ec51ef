//! Scheduler worker states and the scheduler pool configuration, as `/v1/agent/schedulers`
//! reports them.

use std::time::SystemTime;

use crate::config::SCHEDULER_TYPES;

/// A worker's lifecycle status (Nomad's `WorkerStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Unknown.
    Unknown,
    /// Created, not yet running.
    Starting,
    /// Running.
    Started,
    /// Asked to pause; will at its next pause point.
    Pausing,
    /// Paused.
    Paused,
    /// Asked to resume.
    Resuming,
    /// Asked to stop.
    Stopping,
    /// Stopped.
    Stopped,
}

impl WorkerStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Unknown => "Unknown",
            WorkerStatus::Starting => "Starting",
            WorkerStatus::Started => "Started",
            WorkerStatus::Pausing => "Pausing",
            WorkerStatus::Paused => "Paused",
            WorkerStatus::Resuming => "Resuming",
            WorkerStatus::Stopping => "Stopping",
            WorkerStatus::Stopped => "Stopped",
        }
    }
}

/// What a worker is doing (Nomad's `SchedulerWorkerStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadStatus {
    /// Not known yet.
    Unknown,
    /// Running its loop.
    Running,
    /// Blocked on the eval broker.
    WaitingToDequeue,
    /// Waiting for state to catch up with the evaluation.
    WaitingForRaft,
    /// Running a scheduler.
    Scheduling,
    /// Submitting a plan.
    Submitting,
    /// Backing off after an error.
    Backoff,
    /// Stopped.
    Stopped,
    /// Paused.
    Paused,
}

impl WorkloadStatus {
    /// The wire name (`UnknownStatus`, not `Unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadStatus::Unknown => "UnknownStatus",
            WorkloadStatus::Running => "Running",
            WorkloadStatus::WaitingToDequeue => "WaitingToDequeue",
            WorkloadStatus::WaitingForRaft => "WaitingForRaft",
            WorkloadStatus::Scheduling => "Scheduling",
            WorkloadStatus::Submitting => "Submitting",
            WorkloadStatus::Backoff => "Backoff",
            WorkloadStatus::Stopped => "Stopped",
            WorkloadStatus::Paused => "Paused",
        }
    }
}

/// One worker as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// UUID.
    pub id: String,
    /// Scheduler types it serves.
    pub enabled_schedulers: Vec<String>,
    /// When it was created.
    pub started: SystemTime,
    /// Lifecycle status.
    pub status: WorkerStatus,
    /// Workload status.
    pub workload_status: WorkloadStatus,
}

/// The scheduler pool's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Worker count.
    pub num_schedulers: i64,
    /// Scheduler types.
    pub enabled_schedulers: Vec<String>,
}

impl SchedulerConfig {
    /// Nomad's rule: `0 ≤ num_schedulers ≤ CPUs`, every type known, `_core` present.
    pub fn is_valid(&self, num_cpus: u32) -> bool {
        (0..=i64::from(num_cpus)).contains(&self.num_schedulers)
            && self
                .enabled_schedulers
                .iter()
                .all(|t| SCHEDULER_TYPES.contains(&t.as_str()))
            && self.enabled_schedulers.iter().any(|t| t == "_core")
    }

    /// Whether applying `other` changes anything: a different count, or a different set of
    /// types (order aside). Nomad compares sorted lists by prefix and can crash on a longer list;
    /// this compares them whole.
    pub fn differs_from(&self, other: &SchedulerConfig) -> bool {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        self.num_schedulers != other.num_schedulers
            || sorted(&self.enabled_schedulers) != sorted(&other.enabled_schedulers)
    }
}

/// How many of `n` workers a leader pauses: ⌊3n/4⌋ when `n > 1`.
pub fn leader_paused_workers(n: usize) -> usize {
    if n > 1 { 3 * n / 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: i64, types: &[&str]) -> SchedulerConfig {
        SchedulerConfig {
            num_schedulers: n,
            enabled_schedulers: types.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn validation() {
        assert!(cfg(0, &["_core"]).is_valid(2));
        assert!(cfg(2, &["service", "_core"]).is_valid(2));
        assert!(!cfg(3, &["_core"]).is_valid(2));
        assert!(!cfg(-1, &["_core"]).is_valid(2));
        assert!(!cfg(1, &["service"]).is_valid(2));
        assert!(!cfg(1, &["_core", "gpu"]).is_valid(2));
        assert!(!cfg(0, &[]).is_valid(2));
    }

    #[test]
    fn change_detection_is_whole_and_sane() {
        let a = cfg(2, &["service", "_core"]);
        assert!(!a.differs_from(&cfg(2, &["_core", "service"])));
        assert!(
            a.differs_from(&cfg(2, &["_core"])),
            "a prefix is still a change"
        );
        assert!(
            a.differs_from(&cfg(2, &["service", "batch", "_core"])),
            "a longer list"
        );
        assert!(a.differs_from(&cfg(1, &["service", "_core"])));
    }

    #[test]
    fn leader_pause_count() {
        assert_eq!([1, 2, 3, 4, 8].map(leader_paused_workers), [0, 1, 2, 3, 6]);
    }

    #[test]
    fn names() {
        assert_eq!(WorkloadStatus::Unknown.as_str(), "UnknownStatus");
        assert_eq!(WorkerStatus::Paused.as_str(), "Paused");
    }
}
