//! Cluster state (jobs, evaluations, allocations, nodes) and the schedulers that turn an
//! evaluation into placements. In-memory behind one lock; the rest of the code talks to it
//! through these methods, so a replicated store can replace it later.

use std::collections::BTreeMap;

use caravan_agent_core::jobs::{Allocation, EvalStatus, Evaluation, Job, JobType, Node};
use parking_lot::Mutex;

use crate::broker::Eval;
use crate::placement::{Ask, Nodes, Picker, bin_pack, one_per_node};

/// Every table, as one value: what a snapshot holds.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Tables {
    jobs: BTreeMap<String, Job>,
    evals: BTreeMap<String, Evaluation>,
    allocs: BTreeMap<String, Allocation>,
    nodes: BTreeMap<String, Node>,
    index: u64,
    /// The ID generator's state (SplitMix64): IDs depend only on the seed and the writes, so
    /// replicas applying the same writes after the same seed agree on every ID.
    #[serde(skip)]
    ids: u64,
}

impl Tables {
    fn next(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn new_id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        for half in bytes.chunks_mut(8) {
            self.ids = self.ids.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.ids;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            half.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    fn new_eval(&mut self, job: &Job, triggered_by: &str, status: EvalStatus) -> Evaluation {
        let scheduler = job.job_type.as_str();
        self.record_eval(&job.id, job.priority, scheduler, triggered_by, status)
    }

    /// Creates and stores an evaluation with fresh IDs and indexes.
    fn record_eval(
        &mut self,
        job_id: &str,
        priority: u32,
        scheduler: &str,
        triggered_by: &str,
        status: EvalStatus,
    ) -> Evaluation {
        let index = self.next();
        let eval = Evaluation {
            id: self.new_id(),
            job_id: job_id.to_string(),
            priority,
            scheduler: scheduler.to_string(),
            triggered_by: triggered_by.to_string(),
            status,
            status_description: String::new(),
            blocked_eval: String::new(),
            queued: BTreeMap::new(),
            create_index: index,
            modify_index: index,
        };
        self.evals.insert(eval.id.clone(), eval.clone());
        eval
    }

    /// Capacity snapshot: ready nodes with the usage of running allocations.
    fn capacity(&self) -> (Nodes, Vec<String>) {
        let mut nodes = Nodes::default();
        let mut ids = Vec::new();
        for n in self.nodes.values().filter(|n| n.status == "ready") {
            nodes.push(&n.id, &n.datacenter, n.cpu, n.memory_mb);
            ids.push(n.id.clone());
        }
        for a in self.allocs.values().filter(|a| a.desired_status == "run") {
            if let Some(i) = ids.iter().position(|id| id == &a.node_id) {
                nodes.cpu_used[i] = nodes.cpu_used[i].saturating_add(a.cpu);
                nodes.mem_used[i] = nodes.mem_used[i].saturating_add(a.memory_mb);
            }
        }
        (nodes, ids)
    }
}

/// The broker's view of an evaluation.
pub fn broker_eval(e: &Evaluation) -> Eval {
    Eval {
        id: e.id.clone(),
        job_id: e.job_id.clone(),
        priority: e.priority,
        scheduler: e.scheduler.clone(),
        create_index: e.create_index,
    }
}

/// The store.
pub struct Store {
    tables: Mutex<Tables>,
}

impl Default for Store {
    /// An empty store whose IDs are seeded at random.
    fn default() -> Store {
        let tables = Tables {
            ids: uuid::Uuid::new_v4().as_u64_pair().0,
            ..Tables::default()
        };
        Store {
            tables: Mutex::new(tables),
        }
    }
}

/// What a registration or deregistration created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobWrite {
    /// The evaluation to enqueue.
    pub eval: Evaluation,
    /// The job's modify index.
    pub job_modify_index: u64,
}

impl Store {
    /// Seeds the ID generator. A replicated store calls it with the same seed before the same
    /// write on every replica.
    pub fn reseed(&self, seed: u64) {
        self.tables.lock().ids = seed;
    }

    /// A copy of every table.
    pub fn export(&self) -> Tables {
        self.tables.lock().clone()
    }

    /// Replaces every table.
    pub fn import(&self, tables: Tables) {
        let mut t = self.tables.lock();
        let ids = t.ids;
        *t = tables;
        t.ids = ids;
    }

    /// Evaluations waiting for a worker (what a new leader's broker starts with).
    pub fn pending_evals(&self) -> Vec<Evaluation> {
        let t = self.tables.lock();
        let mut out: Vec<Evaluation> = t
            .evals
            .values()
            .filter(|e| e.status == EvalStatus::Pending)
            .cloned()
            .collect();
        out.sort_by_key(|e| e.create_index);
        out
    }

    /// Creates a pending `_core` (garbage collection) evaluation.
    pub fn core_eval(&self) -> Evaluation {
        let mut t = self.tables.lock();
        t.record_eval("core-gc", 200, "_core", "scheduled", EvalStatus::Pending)
    }

    /// Adds or updates a node; blocked evaluations become pending again (returned to enqueue).
    pub fn upsert_node(&self, mut node: Node) -> Vec<Evaluation> {
        let mut t = self.tables.lock();
        let index = t.next();
        node.create_index = t.nodes.get(&node.id).map_or(index, |n| n.create_index);
        node.modify_index = index;
        t.nodes.insert(node.id.clone(), node);
        Self::unblock(&mut t)
    }

    /// Registers (or updates) a job and creates its evaluation.
    pub fn register(&self, mut job: Job) -> JobWrite {
        let mut t = self.tables.lock();
        let index = t.next();
        let previous = t.jobs.get(&job.id).cloned();
        job.create_index = previous.as_ref().map_or(index, |p| p.create_index);
        job.version = previous.as_ref().map_or(0, |p| p.version + 1);
        job.modify_index = index;
        job.status = "pending".into();
        t.jobs.insert(job.id.clone(), job.clone());
        let eval = t.new_eval(&job, "job-register", EvalStatus::Pending);
        JobWrite {
            eval,
            job_modify_index: index,
        }
    }

    /// Stops a job; its evaluation will stop the allocations. `None` if unknown.
    pub fn deregister(&self, id: &str) -> Option<JobWrite> {
        let mut t = self.tables.lock();
        let index = t.next();
        let job = t.jobs.get_mut(id)?;
        job.stop = true;
        job.status = "dead".into();
        job.modify_index = index;
        let job = job.clone();
        let eval = t.new_eval(&job, "job-deregister", EvalStatus::Pending);
        Some(JobWrite {
            eval,
            job_modify_index: index,
        })
    }

    /// Every job.
    pub fn jobs(&self) -> Vec<Job> {
        self.tables.lock().jobs.values().cloned().collect()
    }

    /// One job.
    pub fn job(&self, id: &str) -> Option<Job> {
        self.tables.lock().jobs.get(id).cloned()
    }

    /// A job's allocations; `None` if the job is unknown.
    pub fn job_allocations(&self, id: &str) -> Option<Vec<Allocation>> {
        let t = self.tables.lock();
        t.jobs.get(id)?;
        Some(
            t.allocs
                .values()
                .filter(|a| a.job_id == id)
                .cloned()
                .collect(),
        )
    }

    /// One evaluation.
    pub fn evaluation(&self, id: &str) -> Option<Evaluation> {
        self.tables.lock().evals.get(id).cloned()
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<Node> {
        self.tables.lock().nodes.values().cloned().collect()
    }

    /// Runs the scheduler for an evaluation; returns evaluations to enqueue (unblocked ones).
    pub fn process(
        &self,
        eval_id: &str,
        gc_threshold_secs: u64,
        now_secs: u64,
    ) -> Result<Vec<Evaluation>, String> {
        let mut t = self.tables.lock();
        let Some(eval) = t.evals.get(eval_id).cloned() else {
            return Err(format!("evaluation {eval_id} not found"));
        };
        if eval.status != EvalStatus::Pending {
            // Delivered again (a leader change): it was already processed.
            return Ok(Vec::new());
        }
        if eval.scheduler == "_core" {
            Self::collect_garbage(&mut t, gc_threshold_secs, now_secs);
            Self::complete(&mut t, eval_id, "");
            return Ok(Vec::new());
        }
        let Some(job) = t.jobs.get(&eval.job_id).cloned() else {
            Self::complete(&mut t, eval_id, "job not found");
            return Ok(Vec::new());
        };
        if job.stop {
            let index = t.next();
            for a in t
                .allocs
                .values_mut()
                .filter(|a| a.job_id == job.id && a.desired_status == "run")
            {
                a.desired_status = "stop".into();
                a.client_status = "complete".into();
                a.modify_index = index;
            }
            Self::complete(&mut t, eval_id, "");
            // Freed capacity may unblock others.
            return Ok(Self::unblock(&mut t));
        }
        let (queued, reasons) = Self::place(&mut t, &job, &eval);
        if queued.values().any(|&n| n > 0) {
            let mut blocked = t.new_eval(&job, "queued-allocs", EvalStatus::Blocked);
            blocked.status_description = reasons.clone();
            blocked.queued = queued.clone();
            t.evals.insert(blocked.id.clone(), blocked.clone());
            if let Some(e) = t.evals.get_mut(eval_id) {
                e.blocked_eval = blocked.id.clone();
            }
        }
        Self::finish(&mut t, eval_id, EvalStatus::Complete, reasons, queued);
        if let Some(j) = t.jobs.get_mut(&job.id) {
            j.status = "running".into();
        }
        Ok(Vec::new())
    }

    /// Places what is missing for each group; returns unplaced counts per group and why they
    /// did not fit (empty when everything was placed).
    fn place(t: &mut Tables, job: &Job, eval: &Evaluation) -> (BTreeMap<String, u64>, String) {
        let (mut nodes, ids) = t.capacity();
        let mut picker = Picker::new(eval.create_index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut queued = BTreeMap::new();
        let mut reasons = Vec::new();
        for group in &job.groups {
            let (cpu, memory_mb) = group.ask();
            let ask = Ask { cpu, memory_mb };
            let running: Vec<Allocation> = t
                .allocs
                .values()
                .filter(|a| {
                    a.job_id == job.id && a.task_group == group.name && a.desired_status == "run"
                })
                .cloned()
                .collect();
            let placement = if job.job_type.per_node() {
                let taken: Vec<usize> = running
                    .iter()
                    .filter_map(|a| ids.iter().position(|id| id == &a.node_id))
                    .collect();
                let mut p = one_per_node(&mut nodes, &job.datacenters, ask);
                p.nodes.retain(|i| !taken.contains(i));
                p
            } else {
                let want = group.count as usize;
                if running.len() > want {
                    let index = t.next();
                    for a in running.iter().skip(want) {
                        if let Some(a) = t.allocs.get_mut(&a.id) {
                            a.desired_status = "stop".into();
                            a.client_status = "complete".into();
                            a.modify_index = index;
                        }
                    }
                }
                bin_pack(
                    &mut nodes,
                    &job.datacenters,
                    ask,
                    want.saturating_sub(running.len()),
                    &mut picker,
                )
            };
            let index = t.next();
            let start = running.len();
            for (k, &node) in placement.nodes.iter().enumerate() {
                let alloc = Allocation {
                    id: t.new_id(),
                    name: format!("{}.{}[{}]", job.id, group.name, start + k),
                    job_id: job.id.clone(),
                    task_group: group.name.clone(),
                    node_id: ids[node].clone(),
                    eval_id: eval.id.clone(),
                    cpu,
                    memory_mb,
                    desired_status: "run".into(),
                    client_status: "pending".into(),
                    create_index: index,
                    modify_index: index,
                };
                t.allocs.insert(alloc.id.clone(), alloc);
            }
            queued.insert(group.name.clone(), placement.unplaced as u64);
            if placement.unplaced > 0 {
                reasons.push(format!("{}: {}", group.name, placement.reason));
            }
        }
        (queued, reasons.join("; "))
    }

    /// Completes an evaluation that queued nothing.
    fn complete(t: &mut Tables, eval_id: &str, description: &str) {
        let description = description.to_string();
        Self::finish(
            t,
            eval_id,
            EvalStatus::Complete,
            description,
            BTreeMap::new(),
        );
    }

    fn finish(
        t: &mut Tables,
        eval_id: &str,
        status: EvalStatus,
        description: String,
        queued: BTreeMap<String, u64>,
    ) {
        let index = t.next();
        if let Some(e) = t.evals.get_mut(eval_id) {
            e.status = status;
            e.status_description = description;
            e.queued = queued;
            e.modify_index = index;
        }
    }

    /// Marks an evaluation failed (past the broker's delivery limit).
    pub fn fail(&self, eval_id: &str) {
        let mut t = self.tables.lock();
        Self::finish(
            &mut t,
            eval_id,
            EvalStatus::Failed,
            "evaluation reached delivery limit".into(),
            BTreeMap::new(),
        );
    }

    /// Blocked evaluations go back to pending when capacity may have appeared.
    fn unblock(t: &mut Tables) -> Vec<Evaluation> {
        let index = t.next();
        let mut out = Vec::new();
        for e in t
            .evals
            .values_mut()
            .filter(|e| e.status == EvalStatus::Blocked)
        {
            e.status = EvalStatus::Pending;
            e.modify_index = index;
            out.push(e.clone());
        }
        out
    }

    /// `_core`: drops stopped allocations, finished evaluations of dead jobs, dead jobs with no
    /// allocations left, and nodes down longer than the threshold.
    fn collect_garbage(t: &mut Tables, gc_threshold_secs: u64, now_secs: u64) {
        t.allocs.retain(|_, a| a.desired_status == "run");
        let dead: Vec<String> = t
            .jobs
            .values()
            .filter(|j| j.stop)
            .map(|j| j.id.clone())
            .collect();
        t.evals.retain(|_, e| {
            !(dead.contains(&e.job_id)
                && matches!(
                    e.status,
                    EvalStatus::Complete | EvalStatus::Failed | EvalStatus::Canceled
                ))
        });
        for id in dead {
            if !t.allocs.values().any(|a| a.job_id == id) {
                t.jobs.remove(&id);
            }
        }
        t.nodes.retain(|_, n| {
            n.status != "down"
                || n.down_since
                    .is_none_or(|s| now_secs.saturating_sub(s) < gc_threshold_secs)
        });
    }
}

/// Whether a job type name is one the schedulers know.
pub fn known_type(name: &str) -> bool {
    JobType::parse(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_agent_core::jobs::{Task, TaskGroup};

    fn node(id: &str, cpu: u64) -> Node {
        Node {
            id: id.into(),
            name: id.into(),
            datacenter: "dc1".into(),
            node_class: String::new(),
            meta: BTreeMap::new(),
            cpu,
            memory_mb: 4096,
            status: "ready".into(),
            down_since: None,
            create_index: 0,
            modify_index: 0,
        }
    }

    fn job(id: &str, ty: JobType, count: u32, cpu: u64) -> Job {
        Job {
            id: id.into(),
            name: id.into(),
            job_type: ty,
            priority: 50,
            datacenters: vec!["dc1".into()],
            groups: vec![TaskGroup {
                name: "g".into(),
                count,
                tasks: vec![Task {
                    name: "t".into(),
                    driver: "docker".into(),
                    cpu,
                    memory_mb: 64,
                }],
            }],
            stop: false,
            status: String::new(),
            create_index: 0,
            modify_index: 0,
            version: 0,
        }
    }

    #[test]
    fn place_block_unblock_stop_gc() {
        let s = Store::default();
        s.upsert_node(node("a", 1000));
        let w = s.register(job("web", JobType::Service, 3, 400));
        assert!(s.process(&w.eval.id, 86400, 0).unwrap().is_empty());
        let e = s.evaluation(&w.eval.id).unwrap();
        assert_eq!(e.status, EvalStatus::Complete);
        assert_eq!(e.queued["g"], 1);
        assert!(!e.blocked_eval.is_empty());
        assert_eq!(
            s.evaluation(&e.blocked_eval).unwrap().status,
            EvalStatus::Blocked
        );
        assert!(e.status_description.contains("resources exhausted"));
        assert_eq!(s.job_allocations("web").unwrap().len(), 2);
        // New capacity unblocks the blocked evaluation.
        let again = s.upsert_node(node("b", 1000));
        assert_eq!(again.len(), 1);
        s.process(&again[0].id, 86400, 0).unwrap();
        assert_eq!(
            s.job_allocations("web")
                .unwrap()
                .iter()
                .filter(|a| a.desired_status == "run")
                .count(),
            3
        );
        // Deregister stops everything; GC removes it.
        let d = s.deregister("web").unwrap();
        s.process(&d.eval.id, 86400, 0).unwrap();
        assert!(
            s.job_allocations("web")
                .unwrap()
                .iter()
                .all(|a| a.desired_status == "stop")
        );
        let core = s.core_eval();
        assert_eq!(s.pending_evals(), std::slice::from_ref(&core));
        s.process(&core.id, 86400, 0).unwrap();
        assert!(s.job("web").is_none());
        assert_eq!(s.evaluation(&core.id).unwrap().status, EvalStatus::Complete);
        // Processing again (a redelivery after a leader change) changes nothing.
        assert!(s.process(&core.id, 86400, 0).unwrap().is_empty());
        assert!(s.deregister("nope").is_none());
    }

    #[test]
    fn replicas_with_the_same_seeds_agree_on_every_id() {
        let replica = || {
            let s = Store::default();
            s.reseed(1);
            s.upsert_node(node("a", 1000));
            s.upsert_node(node("b", 1000));
            s.reseed(2);
            let w = s.register(job("web", JobType::Service, 5, 300));
            s.reseed(3);
            s.process(&w.eval.id, 86400, 0).unwrap();
            let allocs = s.job_allocations("web").unwrap();
            let ids: Vec<(String, String)> =
                allocs.into_iter().map(|a| (a.id, a.node_id)).collect();
            let blocked = s.evaluation(&w.eval.id).unwrap().blocked_eval;
            (w.eval.id, blocked, ids)
        };
        let (a, b) = (replica(), replica());
        assert_eq!(a, b);
        assert_eq!(a.2.len(), 5);
    }

    #[test]
    fn system_jobs_one_per_node_and_idempotent() {
        let s = Store::default();
        for id in ["a", "b", "c"] {
            s.upsert_node(node(id, 1000));
        }
        let w = s.register(job("sys", JobType::System, 0, 100));
        s.process(&w.eval.id, 86400, 0).unwrap();
        let w2 = s.register(job("sys", JobType::System, 0, 100));
        s.process(&w2.eval.id, 86400, 0).unwrap();
        let allocs = s.job_allocations("sys").unwrap();
        let mut nodes: Vec<_> = allocs.iter().map(|a| a.node_id.clone()).collect();
        nodes.sort();
        assert_eq!(nodes, ["a", "b", "c"]);
    }
}
