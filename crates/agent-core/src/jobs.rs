//! Jobs, evaluations, allocations and nodes: the minimum of Nomad's job model that gives
//! scheduler workers real work. Allocations are placements (decisions and used capacity), not
//! running processes.

use std::collections::BTreeMap;

use crate::CoreError;

/// The most allocations one task group may ask for (a guard against runaway submissions).
pub const MAX_COUNT: u32 = 100_000;

/// The largest CPU (MHz) or memory (MiB) a task may ask for.
pub const MAX_RESOURCE: u64 = 1 << 40;

/// Scheduler types a job can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobType {
    /// Long-running, bin-packed.
    Service,
    /// Run to completion, bin-packed.
    Batch,
    /// One per eligible node.
    System,
    /// One per eligible node, to completion.
    Sysbatch,
}

impl JobType {
    /// The wire (and scheduler) name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Service => "service",
            JobType::Batch => "batch",
            JobType::System => "system",
            JobType::Sysbatch => "sysbatch",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<JobType> {
        match text {
            "service" => Some(JobType::Service),
            "batch" => Some(JobType::Batch),
            "system" => Some(JobType::System),
            "sysbatch" => Some(JobType::Sysbatch),
            _ => None,
        }
    }

    /// One allocation per node rather than bin-packed counts.
    pub fn per_node(self) -> bool {
        matches!(self, JobType::System | JobType::Sysbatch)
    }
}

/// A task: what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// Name.
    pub name: String,
    /// Driver (recorded; Caravan runs no tasks).
    pub driver: String,
    /// MHz.
    pub cpu: u64,
    /// MiB.
    pub memory_mb: u64,
}

/// A group of tasks placed together.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskGroup {
    /// Name.
    pub name: String,
    /// Allocations wanted (ignored for system jobs).
    pub count: u32,
    /// Tasks.
    pub tasks: Vec<Task>,
}

impl TaskGroup {
    /// CPU and memory one allocation of this group needs.
    pub fn ask(&self) -> (u64, u64) {
        self.tasks.iter().fold((0u64, 0u64), |(c, m), t| {
            (c.saturating_add(t.cpu), m.saturating_add(t.memory_mb))
        })
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Scheduler type.
    pub job_type: JobType,
    /// 1–100, higher first.
    pub priority: u32,
    /// Datacenters it may run in.
    pub datacenters: Vec<String>,
    /// Task groups.
    pub groups: Vec<TaskGroup>,
    /// Deregistered.
    pub stop: bool,
    /// `pending`, `running` or `dead`.
    pub status: String,
    /// Creation index.
    pub create_index: u64,
    /// Last change index.
    pub modify_index: u64,
    /// Bumped on every registration.
    pub version: u64,
}

impl Job {
    /// Checks a submitted job; errors name the field, e.g. `Job.TaskGroups[0].Count`.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::Invalid(m));
        if self.id.is_empty() {
            return bad("Job.ID: missing job ID".into());
        }
        if self.id.contains(' ') || self.id.len() > 128 {
            return bad("Job.ID: must be at most 128 characters without spaces".into());
        }
        if !(1..=100).contains(&self.priority) {
            return bad(format!(
                "Job.Priority: {} is outside 1..=100",
                self.priority
            ));
        }
        if self.datacenters.is_empty() {
            return bad("Job.Datacenters: missing job datacenters".into());
        }
        if self.groups.is_empty() {
            return bad("Job.TaskGroups: missing job task groups".into());
        }
        let mut names = std::collections::HashSet::new();
        for (g, group) in self.groups.iter().enumerate() {
            if group.name.is_empty() {
                return bad(format!("Job.TaskGroups[{g}].Name: missing task group name"));
            }
            if !names.insert(&group.name) {
                return bad(format!(
                    "Job.TaskGroups[{g}].Name: duplicate task group {:?}",
                    group.name
                ));
            }
            if group.tasks.is_empty() {
                return bad(format!("Job.TaskGroups[{g}].Tasks: missing tasks"));
            }
            if group.count > MAX_COUNT {
                return bad(format!("Job.TaskGroups[{g}].Count: at most {MAX_COUNT}"));
            }
            for (t, task) in group.tasks.iter().enumerate() {
                let at = format!("Job.TaskGroups[{g}].Tasks[{t}]");
                if task.name.is_empty() {
                    return bad(format!("{at}.Name: missing task name"));
                }
                if task.driver.is_empty() {
                    return bad(format!("{at}.Driver: missing task driver"));
                }
                if task.cpu == 0 {
                    return bad(format!("{at}.Resources.CPU: must be at least 1"));
                }
                if task.memory_mb == 0 {
                    return bad(format!("{at}.Resources.MemoryMB: must be at least 1"));
                }
                if task.cpu > MAX_RESOURCE || task.memory_mb > MAX_RESOURCE {
                    return bad(format!(
                        "{at}.Resources: CPU and MemoryMB must be at most {MAX_RESOURCE}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Evaluation states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EvalStatus {
    /// Waiting for a worker.
    Pending,
    /// Done.
    Complete,
    /// Gave up after the delivery limit.
    Failed,
    /// Waiting for capacity.
    Blocked,
    /// Superseded.
    Canceled,
}

impl EvalStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EvalStatus::Pending => "pending",
            EvalStatus::Complete => "complete",
            EvalStatus::Failed => "failed",
            EvalStatus::Blocked => "blocked",
            EvalStatus::Canceled => "canceled",
        }
    }
}

/// An evaluation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// ID.
    pub id: String,
    /// Job.
    pub job_id: String,
    /// Priority (the job's).
    pub priority: u32,
    /// Scheduler type.
    pub scheduler: String,
    /// `job-register`, `job-deregister`, `queued-allocs`, `scheduled`.
    pub triggered_by: String,
    /// State.
    pub status: EvalStatus,
    /// Why, for blocked and failed evaluations.
    pub status_description: String,
    /// The blocked evaluation this one spawned, if any.
    pub blocked_eval: String,
    /// Unplaced allocations per task group.
    pub queued: BTreeMap<String, u64>,
    /// Creation index.
    pub create_index: u64,
    /// Last change index.
    pub modify_index: u64,
}

/// A placement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    /// ID.
    pub id: String,
    /// `job.group[index]`.
    pub name: String,
    /// Job.
    pub job_id: String,
    /// Task group.
    pub task_group: String,
    /// Node.
    pub node_id: String,
    /// The evaluation that placed it.
    pub eval_id: String,
    /// CPU taken (MHz).
    pub cpu: u64,
    /// Memory taken (MiB).
    pub memory_mb: u64,
    /// `run` or `stop`.
    pub desired_status: String,
    /// `pending` (placed) or `complete` (stopped).
    pub client_status: String,
    /// Creation index.
    pub create_index: u64,
    /// Last change index.
    pub modify_index: u64,
}

/// A client node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Datacenter.
    pub datacenter: String,
    /// Class.
    pub node_class: String,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Total CPU (MHz).
    pub cpu: u64,
    /// Total memory (MiB).
    pub memory_mb: u64,
    /// `ready` or `down`.
    pub status: String,
    /// When it went down (node clock, seconds), for GC.
    pub down_since: Option<u64>,
    /// Creation index.
    pub create_index: u64,
    /// Last change index.
    pub modify_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: "web".into(),
            name: "web".into(),
            job_type: JobType::Service,
            priority: 50,
            datacenters: vec!["dc1".into()],
            groups: vec![TaskGroup {
                name: "g".into(),
                count: 2,
                tasks: vec![Task {
                    name: "t".into(),
                    driver: "docker".into(),
                    cpu: 100,
                    memory_mb: 64,
                }],
            }],
            stop: false,
            status: "pending".into(),
            create_index: 0,
            modify_index: 0,
            version: 0,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(job().validate().is_ok());
        type Change = Box<dyn Fn(&mut Job)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|j| j.id.clear()), "Job.ID"),
            (Box::new(|j| j.priority = 0), "Job.Priority"),
            (Box::new(|j| j.datacenters.clear()), "Job.Datacenters"),
            (Box::new(|j| j.groups.clear()), "Job.TaskGroups"),
            (
                Box::new(|j| j.groups[0].tasks[0].cpu = 0),
                "Job.TaskGroups[0].Tasks[0].Resources.CPU",
            ),
            (
                Box::new(|j| j.groups[0].tasks[0].memory_mb = 0),
                "Job.TaskGroups[0].Tasks[0].Resources.MemoryMB",
            ),
            (
                Box::new(|j| j.groups[0].tasks[0].driver.clear()),
                "Job.TaskGroups[0].Tasks[0].Driver",
            ),
            (
                Box::new(|j| {
                    let g = j.groups[0].clone();
                    j.groups.push(g);
                }),
                "Job.TaskGroups[1].Name",
            ),
        ];
        for (change, field) in cases {
            let mut j = job();
            change(&mut j);
            let e = j.validate().unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
        assert_eq!(job().groups[0].ask(), (100, 64));
    }
}
