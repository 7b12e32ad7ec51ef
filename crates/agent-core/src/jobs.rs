//! Jobs, evaluations, allocations and nodes: the minimum of Nomad's job model that gives
//! scheduler workers real work. Allocations are placements (decisions and used capacity), not
//! running processes.

use std::collections::BTreeMap;

use crate::CoreError;

/// The most allocations one task group may ask for (a guard against runaway submissions).
pub const MAX_COUNT: u32 = 100_000;

/// The largest CPU (MHz) or memory (MiB) a task may ask for.
pub const MAX_RESOURCE: u64 = 1 << 40;

/// The most task groups one job may have, and tasks one group may have.
pub const MAX_GROUPS: usize = 100;

/// The most datacenters one job may name.
pub const MAX_DATACENTERS: usize = 64;

/// The longest name, driver or datacenter text in a job.
pub const MAX_NAME_BYTES: usize = 128;

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

/// A job as submitted, before defaults: every field the submitter may leave out is `None`.
/// [`Job::from_submission`] fills the defaults and checks the result. A plain value: the HTTP
/// API converts its wire form (Nomad's casing) into this, and so can any other door.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSubmission {
    /// ID (required).
    pub id: Option<String>,
    /// Name (default: the ID).
    pub name: Option<String>,
    /// Scheduler type by its wire name (default: `service`).
    pub job_type: Option<String>,
    /// Priority (default: 50).
    pub priority: Option<u32>,
    /// Datacenters it may run in (required).
    pub datacenters: Option<Vec<String>>,
    /// Task groups (required).
    pub groups: Option<Vec<GroupSubmission>>,
}

/// A task group as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSubmission {
    /// Name (required).
    pub name: Option<String>,
    /// Allocations wanted (default: 1).
    pub count: Option<u32>,
    /// Tasks (required).
    pub tasks: Option<Vec<TaskSubmission>>,
}

/// A task as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSubmission {
    /// Name (required).
    pub name: Option<String>,
    /// Driver (required).
    pub driver: Option<String>,
    /// MHz (default: [`DEFAULT_CPU`]).
    pub cpu: Option<u64>,
    /// MiB (default: [`DEFAULT_MEMORY_MB`]).
    pub memory_mb: Option<u64>,
}

/// A job's priority when the submission gives none.
pub const DEFAULT_PRIORITY: u32 = 50;

/// A task's CPU (MHz) when the submission gives none.
pub const DEFAULT_CPU: u64 = 100;

/// A task's memory (MiB) when the submission gives none.
pub const DEFAULT_MEMORY_MB: u64 = 300;

impl Job {
    /// The job a submission describes, with every default filled (type `service`, priority
    /// [`DEFAULT_PRIORITY`], name = ID, count 1, [`DEFAULT_CPU`], [`DEFAULT_MEMORY_MB`],
    /// status `pending`, indexes and version 0), then [validated](Job::validate). An empty type
    /// or name counts as none given.
    pub fn from_submission(sub: JobSubmission) -> Result<Job, CoreError> {
        let job_type = match sub.job_type.as_deref() {
            None | Some("") => JobType::Service,
            Some(t) => JobType::parse(t).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "Job.Type: invalid job type {t:?} (want service, batch, system or sysbatch)"
                ))
            })?,
        };
        let id = sub.id.unwrap_or_default();
        let job = Job {
            name: sub
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.clone()),
            id,
            job_type,
            priority: sub.priority.unwrap_or(DEFAULT_PRIORITY),
            datacenters: sub.datacenters.unwrap_or_default(),
            groups: sub
                .groups
                .unwrap_or_default()
                .into_iter()
                .map(|g| TaskGroup {
                    name: g.name.unwrap_or_default(),
                    count: g.count.unwrap_or(1),
                    tasks: g
                        .tasks
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| Task {
                            name: t.name.unwrap_or_default(),
                            driver: t.driver.unwrap_or_default(),
                            cpu: t.cpu.unwrap_or(DEFAULT_CPU),
                            memory_mb: t.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
                        })
                        .collect(),
                })
                .collect(),
            stop: false,
            status: "pending".into(),
            create_index: 0,
            modify_index: 0,
            version: 0,
        };
        job.validate()?;
        Ok(job)
    }

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
        if self.name.is_empty() || self.name.len() > MAX_NAME_BYTES {
            return bad(format!("Job.Name: must be 1 to {MAX_NAME_BYTES} bytes"));
        }
        if self.datacenters.is_empty() {
            return bad("Job.Datacenters: missing job datacenters".into());
        }
        if self.datacenters.len() > MAX_DATACENTERS
            || self
                .datacenters
                .iter()
                .any(|d| d.is_empty() || d.len() > MAX_NAME_BYTES)
        {
            return bad(format!(
                "Job.Datacenters: at most {MAX_DATACENTERS} names of 1 to {MAX_NAME_BYTES} bytes"
            ));
        }
        if self.groups.is_empty() {
            return bad("Job.TaskGroups: missing job task groups".into());
        }
        if self.groups.len() > MAX_GROUPS {
            return bad(format!("Job.TaskGroups: at most {MAX_GROUPS} groups"));
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
            if group.name.len() > MAX_NAME_BYTES {
                return bad(format!(
                    "Job.TaskGroups[{g}].Name: at most {MAX_NAME_BYTES} bytes"
                ));
            }
            if group.tasks.is_empty() {
                return bad(format!("Job.TaskGroups[{g}].Tasks: missing tasks"));
            }
            if group.tasks.len() > MAX_GROUPS {
                return bad(format!(
                    "Job.TaskGroups[{g}].Tasks: at most {MAX_GROUPS} tasks"
                ));
            }
            if group
                .tasks
                .iter()
                .any(|t| t.name.len() > MAX_NAME_BYTES || t.driver.len() > MAX_NAME_BYTES)
            {
                return bad(format!(
                    "Job.TaskGroups[{g}].Tasks: names and drivers at most {MAX_NAME_BYTES} bytes"
                ));
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
        let total: u64 = self.groups.iter().map(|g| u64::from(g.count)).sum();
        if total > u64::from(MAX_COUNT) {
            return bad(format!(
                "Job.TaskGroups: at most {MAX_COUNT} allocations in all, asked for {total}"
            ));
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
    /// `initializing`, `ready`, `down` or `disconnected` ([`NODE_STATUSES`]).
    pub status: String,
    /// When it went down (node clock, seconds), for GC.
    pub down_since: Option<u64>,
    /// The node's secret (Nomad's `Node.SecretID`): generated by the client, presented with
    /// every later node call, never shown by the HTTP API.
    pub secret_id: String,
    /// Fingerprinted attributes (`kernel.name`, `cpu.arch`, `os.name`, …).
    pub attributes: BTreeMap<String, String>,
    /// Creation index.
    pub create_index: u64,
    /// Last change index.
    pub modify_index: u64,
}

/// Node statuses a node write may carry.
pub const NODE_STATUSES: [&str; 4] = ["initializing", "ready", "down", "disconnected"];

/// The most metadata entries a node may carry.
pub const MAX_NODE_META: usize = 64;

/// The longest node metadata key, in bytes.
pub const MAX_NODE_META_KEY_BYTES: usize = 128;

/// The longest node secret, in bytes (Nomad's are UUIDs: 36).
pub const MAX_NODE_SECRET_BYTES: usize = 128;

/// The most bytes a node's metadata and attributes (keys and values) may take together.
pub const MAX_NODE_META_TOTAL_BYTES: usize = 16 * 1024;

/// The longest node metadata value, in bytes.
pub const MAX_NODE_META_VALUE_BYTES: usize = 1024;

impl Node {
    /// Checks a node as written to the state (every node write is checked, whoever sends it);
    /// errors name the field, e.g. `Node.Datacenter`.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::Invalid(m));
        if self.id.is_empty() {
            return bad("Node.ID: missing node ID".into());
        }
        if self.id.contains(' ') || self.id.len() > 128 {
            return bad("Node.ID: must be at most 128 bytes without spaces".into());
        }
        if self.name.len() > 256 {
            return bad("Node.Name: must be at most 256 bytes".into());
        }
        if self.datacenter.is_empty() {
            return bad("Node.Datacenter: missing datacenter".into());
        }
        if self.datacenter.len() > 128 {
            return bad("Node.Datacenter: must be at most 128 bytes".into());
        }
        if self.node_class.len() > 128 {
            return bad("Node.NodeClass: must be at most 128 bytes".into());
        }
        if !NODE_STATUSES.contains(&self.status.as_str()) {
            return bad(format!(
                "Node.Status: invalid status {:?} (want initializing, ready, down or disconnected)",
                self.status
            ));
        }
        if self.cpu > MAX_RESOURCE {
            return bad(format!(
                "Node.NodeResources.Cpu: must be at most {MAX_RESOURCE}"
            ));
        }
        if self.memory_mb > MAX_RESOURCE {
            return bad(format!(
                "Node.NodeResources.Memory: must be at most {MAX_RESOURCE}"
            ));
        }
        if self.meta.len() > MAX_NODE_META {
            return bad(format!(
                "Node.Meta: {} entries; at most {MAX_NODE_META}",
                self.meta.len()
            ));
        }
        if self.secret_id.len() > MAX_NODE_SECRET_BYTES {
            return bad(format!(
                "Node.SecretID: must be at most {MAX_NODE_SECRET_BYTES} bytes"
            ));
        }
        if self.attributes.len() > MAX_NODE_META {
            return bad(format!(
                "Node.Attributes: {} entries; at most {MAX_NODE_META}",
                self.attributes.len()
            ));
        }
        let texts = [
            ("Node.ID", self.id.as_str()),
            ("Node.Name", &self.name),
            ("Node.Datacenter", &self.datacenter),
            ("Node.NodeClass", &self.node_class),
        ];
        let pairs = self.meta.iter().chain(&self.attributes);
        let fields = texts
            .into_iter()
            .chain(pairs.flat_map(|(k, v)| [("Node.Meta", k.as_str()), ("Node.Meta", v.as_str())]));
        for (field, text) in fields {
            if text.chars().any(char::is_control) {
                return bad(format!("{field}: control characters are not allowed"));
            }
        }
        let total: usize = self
            .meta
            .iter()
            .chain(&self.attributes)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if total > MAX_NODE_META_TOTAL_BYTES {
            return bad(format!(
                "Node.Meta and Node.Attributes: {total} bytes; at most {MAX_NODE_META_TOTAL_BYTES}"
            ));
        }
        for (key, value) in self.meta.iter().chain(&self.attributes) {
            if key.len() > MAX_NODE_META_KEY_BYTES {
                return bad(format!(
                    "Node.Meta: a key of {} bytes; at most {MAX_NODE_META_KEY_BYTES}",
                    key.len()
                ));
            }
            if value.len() > MAX_NODE_META_VALUE_BYTES {
                return bad(format!(
                    "Node.Meta[{key:?}]: a value of {} bytes; at most {MAX_NODE_META_VALUE_BYTES}",
                    value.len()
                ));
            }
        }
        Ok(())
    }
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

    /// The least a submission must say: an ID, a datacenter, one group with one task.
    fn submission() -> JobSubmission {
        JobSubmission {
            id: Some("web".into()),
            datacenters: Some(vec!["dc1".into()]),
            groups: Some(vec![GroupSubmission {
                name: Some("g".into()),
                tasks: Some(vec![TaskSubmission {
                    name: Some("t".into()),
                    driver: Some("docker".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    /// The job [`submission`] gives: every default filled.
    fn defaulted() -> Job {
        Job {
            id: "web".into(),
            name: "web".into(),
            job_type: JobType::Service,
            priority: 50,
            datacenters: vec!["dc1".into()],
            groups: vec![TaskGroup {
                name: "g".into(),
                count: 1,
                tasks: vec![Task {
                    name: "t".into(),
                    driver: "docker".into(),
                    cpu: 100,
                    memory_mb: 300,
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
    fn from_submission_fills_defaults_and_refuses() {
        type Change<T> = Box<dyn Fn(&mut T)>;
        let check = |change: Change<JobSubmission>, want: Result<Change<Job>, &str>| {
            let mut sub = submission();
            change(&mut sub);
            let got = Job::from_submission(sub.clone());
            match want {
                Ok(expect) => {
                    let mut job = defaulted();
                    expect(&mut job);
                    assert_eq!(got, Ok(job), "{sub:?}");
                }
                Err(text) => {
                    assert_eq!(got, Err(CoreError::Invalid(text.into())), "{sub:?}")
                }
            }
        };
        let same: fn() -> Change<Job> = || Box::new(|_| {});
        check(Box::new(|_| {}), Ok(same()));
        check(Box::new(|s| s.name = Some(String::new())), Ok(same()));
        check(Box::new(|s| s.job_type = Some(String::new())), Ok(same()));
        check(
            Box::new(|s| s.name = Some("Web".into())),
            Ok(Box::new(|j| j.name = "Web".into())),
        );
        check(
            Box::new(|s| s.job_type = Some("sysbatch".into())),
            Ok(Box::new(|j| j.job_type = JobType::Sysbatch)),
        );
        check(
            Box::new(|s| s.priority = Some(90)),
            Ok(Box::new(|j| j.priority = 90)),
        );
        check(
            Box::new(|s| {
                let g = &mut s.groups.as_mut().unwrap()[0];
                g.count = Some(0);
                let t = &mut g.tasks.as_mut().unwrap()[0];
                (t.cpu, t.memory_mb) = (Some(500), Some(64));
            }),
            Ok(Box::new(|j| {
                j.groups[0].count = 0;
                (j.groups[0].tasks[0].cpu, j.groups[0].tasks[0].memory_mb) = (500, 64);
            })),
        );
        check(
            Box::new(|s| s.job_type = Some("cron".into())),
            Err(r#"Job.Type: invalid job type "cron" (want service, batch, system or sysbatch)"#),
        );
        // The type is checked before anything else, as the HTTP API always did.
        check(
            Box::new(|s| {
                s.job_type = Some("Service".into());
                s.id = None;
            }),
            Err(
                r#"Job.Type: invalid job type "Service" (want service, batch, system or sysbatch)"#,
            ),
        );
        check(Box::new(|s| s.id = None), Err("Job.ID: missing job ID"));
        check(
            Box::new(|s| s.id = Some("a b".into())),
            Err("Job.ID: must be at most 128 characters without spaces"),
        );
        check(
            Box::new(|s| s.priority = Some(0)),
            Err("Job.Priority: 0 is outside 1..=100"),
        );
        check(
            Box::new(|s| s.datacenters = None),
            Err("Job.Datacenters: missing job datacenters"),
        );
        check(
            Box::new(|s| s.groups = None),
            Err("Job.TaskGroups: missing job task groups"),
        );
        check(
            Box::new(|s| s.groups.as_mut().unwrap()[0].name = None),
            Err("Job.TaskGroups[0].Name: missing task group name"),
        );
        check(
            Box::new(|s| s.groups.as_mut().unwrap()[0].tasks = None),
            Err("Job.TaskGroups[0].Tasks: missing tasks"),
        );
        check(
            Box::new(|s| s.groups.as_mut().unwrap()[0].count = Some(MAX_COUNT + 1)),
            Err("Job.TaskGroups[0].Count: at most 100000"),
        );
        check(
            Box::new(|s| {
                let g = s.groups.as_mut().unwrap();
                let mut second = g[0].clone();
                second.name = Some("h".into());
                g[0].count = Some(MAX_COUNT);
                second.count = Some(1);
                g.push(second);
            }),
            Err("Job.TaskGroups: at most 100000 allocations in all, asked for 100001"),
        );
        check(
            Box::new(|s| {
                let g = s.groups.as_mut().unwrap();
                let one = g[0].clone();
                *g = (0..=MAX_GROUPS)
                    .map(|i| {
                        let mut x = one.clone();
                        x.name = Some(format!("g{i}"));
                        x
                    })
                    .collect();
            }),
            Err("Job.TaskGroups: at most 100 groups"),
        );
        check(
            Box::new(|s| s.datacenters = Some(vec!["d".repeat(MAX_NAME_BYTES + 1)])),
            Err("Job.Datacenters: at most 64 names of 1 to 128 bytes"),
        );
        check(
            Box::new(|s| s.groups.as_mut().unwrap()[0].tasks.as_mut().unwrap()[0].driver = None),
            Err("Job.TaskGroups[0].Tasks[0].Driver: missing task driver"),
        );
        check(
            Box::new(|s| s.groups.as_mut().unwrap()[0].tasks.as_mut().unwrap()[0].cpu = Some(0)),
            Err("Job.TaskGroups[0].Tasks[0].Resources.CPU: must be at least 1"),
        );
    }

    fn node() -> Node {
        Node {
            id: "n1".into(),
            name: "client-1".into(),
            datacenter: "dc1".into(),
            node_class: String::new(),
            meta: BTreeMap::new(),
            cpu: 4000,
            memory_mb: 8192,
            status: "ready".into(),
            down_since: None,
            secret_id: String::new(),
            attributes: Default::default(),
            create_index: 0,
            modify_index: 0,
        }
    }

    #[test]
    fn node_validation_names_the_field() {
        let check = |change: &dyn Fn(&mut Node), want: Result<(), &str>| {
            let mut n = node();
            change(&mut n);
            assert_eq!(n.validate(), want.map_err(|m| CoreError::Invalid(m.into())));
        };
        let long = |n: usize| "x".repeat(n);
        let meta = |entries: usize, key: usize, value: usize| -> BTreeMap<String, String> {
            (0..entries)
                .map(|i| (format!("{i:0key$}"), long(value)))
                .collect()
        };
        // Good, at every bound.
        check(&|_| {}, Ok(()));
        for status in NODE_STATUSES {
            check(&|n| n.status = status.into(), Ok(()));
        }
        check(
            &|n| {
                n.id = long(128);
                n.name = long(256);
                n.datacenter = long(128);
                n.node_class = long(128);
                n.cpu = MAX_RESOURCE;
                n.memory_mb = MAX_RESOURCE;
                n.meta = meta(64, 128, 100); // 14,592 bytes in all, within 16 KiB
            },
            Ok(()),
        );
        check(&|n| n.meta = meta(1, 128, 1024), Ok(()));
        check(&|n| n.name.clear(), Ok(()));
        // Bad.
        check(&|n| n.id.clear(), Err("Node.ID: missing node ID"));
        check(
            &|n| n.id = "a b".into(),
            Err("Node.ID: must be at most 128 bytes without spaces"),
        );
        check(
            &|n| n.id = long(129),
            Err("Node.ID: must be at most 128 bytes without spaces"),
        );
        check(
            &|n| n.name = long(257),
            Err("Node.Name: must be at most 256 bytes"),
        );
        check(
            &|n| n.datacenter.clear(),
            Err("Node.Datacenter: missing datacenter"),
        );
        check(
            &|n| n.datacenter = long(129),
            Err("Node.Datacenter: must be at most 128 bytes"),
        );
        check(
            &|n| n.node_class = long(129),
            Err("Node.NodeClass: must be at most 128 bytes"),
        );
        check(
            &|n| n.status = "Ready".into(),
            Err(
                r#"Node.Status: invalid status "Ready" (want initializing, ready, down or disconnected)"#,
            ),
        );
        check(
            &|n| n.status.clear(),
            Err(
                r#"Node.Status: invalid status "" (want initializing, ready, down or disconnected)"#,
            ),
        );
        check(
            &|n| n.cpu = MAX_RESOURCE + 1,
            Err("Node.NodeResources.Cpu: must be at most 1099511627776"),
        );
        check(
            &|n| n.memory_mb = MAX_RESOURCE + 1,
            Err("Node.NodeResources.Memory: must be at most 1099511627776"),
        );
        check(
            &|n| n.meta = meta(65, 2, 1),
            Err("Node.Meta: 65 entries; at most 64"),
        );
        check(
            &|n| n.meta = meta(1, 129, 1),
            Err("Node.Meta: a key of 129 bytes; at most 128"),
        );
        check(
            &|n| n.meta = BTreeMap::from([("rack".into(), long(1025))]),
            Err(r#"Node.Meta["rack"]: a value of 1025 bytes; at most 1024"#),
        );
        // Names reach logs: no control characters (a forged log line needs a newline).
        check(
            &|n| n.id = "n1\n[ERROR]forged".into(),
            Err("Node.ID: control characters are not allowed"),
        );
        check(
            &|n| n.name = "a\u{1b}[31m".into(),
            Err("Node.Name: control characters are not allowed"),
        );
        check(
            &|n| n.attributes = BTreeMap::from([("k".into(), "v\r".into())]),
            Err("Node.Meta: control characters are not allowed"),
        );
        // 32 values of 1,000 bytes each fit one by one, not together.
        check(
            &|n| n.meta = meta(32, 8, 1000),
            Err("Node.Meta and Node.Attributes: 32256 bytes; at most 16384"),
        );
    }
}
