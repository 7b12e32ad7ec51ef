//! The job store: jobs, evaluations, allocations and nodes, and the schedulers that turn an
//! evaluation into placements ([`caravan_sched::placement`]). Every change happens at a log
//! index the caller passes in: objects record it as their create/modify index, and each table
//! remembers the index of its last change (Nomad's `X-Nomad-Index` for that table).
//!
//! Deterministic: IDs come from a SplitMix64 generator the caller seeds before each command,
//! placement from the evaluation's index. Replicas applying the same commands agree on every
//! byte.

use std::collections::BTreeMap;

use caravan_agent_core::jobs::{Allocation, EvalStatus, Evaluation, Job, Node};
use caravan_agent_core::query::{StateAnswer, StateQuery};
use caravan_sched::broker::Eval;

pub use crate::alloc_index::Touched;
use crate::alloc_index::{AllocIndex, ReadyNodes};
use caravan_sched::placement::{Ask, Nodes, Picker, bin_pack, one_per_node};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The index of the last change of each table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIndexes {
    /// Jobs.
    pub jobs: u64,
    /// Evaluations.
    pub evals: u64,
    /// Allocations.
    pub allocs: u64,
    /// Nodes.
    pub nodes: u64,
}

/// Every table, as one value: what a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    jobs: BTreeMap<String, Job>,
    evals: BTreeMap<String, Evaluation>,
    allocs: BTreeMap<String, Allocation>,
    nodes: BTreeMap<String, Node>,
    indexes: TableIndexes,
    /// The ID generator's state (SplitMix64), reseeded by every command that creates IDs.
    ids: u64,
    /// Derived from `allocs`, kept in step by [`Tables::put_alloc`] and
    /// [`Tables::change_alloc`], rebuilt by [`Tables::reindex`].
    #[serde(skip)]
    by: AllocIndex,
    /// The ready nodes for placement, kept between evaluations; dropped by
    /// [`Tables::nodes_changed`].
    #[serde(skip)]
    ready: ReadyNodes,
}

impl Tables {
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

    /// A generated ID no evaluation or allocation has yet (deterministic: the next draw when
    /// one is taken), so a replayed seed can never overwrite an object.
    fn fresh_id(&mut self) -> String {
        loop {
            let id = self.new_id();
            if !self.evals.contains_key(&id) && !self.allocs.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds (or replaces) an allocation, keeping the derived index in step.
    fn put_alloc(&mut self, alloc: Allocation) {
        if let Some(old) = self.allocs.get(&alloc.id) {
            let old = old.clone();
            self.by.remove(&old, alloc.modify_index);
        }
        self.by.add(&alloc);
        self.allocs.insert(alloc.id.clone(), alloc);
    }

    /// Changes allocation `id` with `change` (if it exists), keeping the index in step.
    fn change_alloc(&mut self, id: &str, at: u64, change: impl FnOnce(&mut Allocation)) {
        let Some(a) = self.allocs.get_mut(id) else {
            return;
        };
        let before = a.clone();
        change(a);
        let after = a.clone();
        self.by.remove(&before, at);
        self.by.add(&after);
    }

    /// Rebuilds the derived index (after a snapshot is installed, or a bulk removal).
    fn reindex(&mut self) {
        self.by = AllocIndex::of(self.allocs.values());
        self.nodes_changed();
    }

    /// A node was added, changed or removed: the placement snapshot is rebuilt when next used.
    fn nodes_changed(&mut self) {
        self.ready.0 = None;
    }

    fn check_alloc_updates(
        &self,
        node_id: &str,
        secret: &str,
        updates: &[(String, String)],
    ) -> Result<(), String> {
        let Some(node) = self.nodes.get(node_id) else {
            return Err(format!("node not found: {node_id:?}"));
        };
        if !caravan_agent_core::acl::secrets_equal(&node.secret_id, secret) {
            return Err("node secret ID does not match".into());
        }
        if updates.len() > MAX_ALLOC_UPDATES {
            return Err(format!(
                "{} allocation updates; at most {MAX_ALLOC_UPDATES}",
                updates.len()
            ));
        }
        for (id, status) in updates {
            if !ALLOC_CLIENT_STATUSES.contains(&status.as_str()) {
                return Err(format!(
                    "Alloc.ClientStatus: invalid status {status:?} (want running, complete or failed)"
                ));
            }
            match self.allocs.get(id) {
                Some(a) if a.node_id == node_id => {}
                _ => {
                    return Err(format!(
                        "allocation {id:?} is not placed on node {node_id:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Allocations of `job` (by the index).
    fn job_allocs(&self, job: &str) -> impl Iterator<Item = &Allocation> {
        self.by.of_job(job).filter_map(|id| self.allocs.get(id))
    }

    /// Allocations placed on `node` (by the index).
    fn node_allocs(&self, node: &str) -> impl Iterator<Item = &Allocation> {
        self.by.on_node(node).filter_map(|id| self.allocs.get(id))
    }

    /// The newest index anywhere in the tables.
    pub fn max_index(&self) -> u64 {
        let i = self.indexes;
        i.jobs.max(i.evals).max(i.allocs).max(i.nodes)
    }

    /// Moves every index past `at` back to `at` (a restored snapshot taken from a longer log):
    /// order among indexes at or before `at` is kept, and nothing is newer than the log.
    pub fn clamp_indexes(&mut self, at: u64) {
        let clamp = |i: &mut u64| *i = (*i).min(at);
        for j in self.jobs.values_mut() {
            clamp(&mut j.create_index);
            clamp(&mut j.modify_index);
        }
        for e in self.evals.values_mut() {
            clamp(&mut e.create_index);
            clamp(&mut e.modify_index);
        }
        for a in self.allocs.values_mut() {
            clamp(&mut a.create_index);
            clamp(&mut a.modify_index);
        }
        for n in self.nodes.values_mut() {
            clamp(&mut n.create_index);
            clamp(&mut n.modify_index);
        }
        let i = &mut self.indexes;
        for table in [&mut i.jobs, &mut i.evals, &mut i.allocs, &mut i.nodes] {
            clamp(table);
        }
        self.reindex();
    }

    /// The index a query's answer would report, without building the answer.
    fn index_for(&self, query: &StateQuery) -> u64 {
        let i = self.indexes;
        match query {
            StateQuery::Jobs => i.jobs,
            StateQuery::Job(id) => self.jobs.get(id).map_or(i.jobs, |j| j.modify_index),
            StateQuery::JobAllocations(_) | StateQuery::Allocations => i.allocs,
            // What a client's blocking query waits on: its own node's allocations only.
            StateQuery::NodeAllocations(id) => self.by.node_changed(id).max(1),
            StateQuery::Evaluations | StateQuery::JobEvaluations(_) => i.evals,
            StateQuery::Evaluation(id) => self.evals.get(id).map_or(i.evals, |e| e.modify_index),
            StateQuery::Allocation(id) => self.allocs.get(id).map_or(i.allocs, |a| a.modify_index),
            StateQuery::Nodes => i.nodes,
            StateQuery::Node(id) => self.nodes.get(id).map_or(i.nodes, |n| n.modify_index),
        }
    }

    /// Creates and stores an evaluation at `index`.
    fn record_eval(
        &mut self,
        index: u64,
        job: (&str, u32, &str),
        triggered_by: &str,
        status: EvalStatus,
    ) -> Evaluation {
        let (job_id, priority, scheduler) = job;
        let eval = Evaluation {
            id: self.fresh_id(),
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
        self.indexes.evals = index;
        eval
    }

    fn job_eval(
        &mut self,
        index: u64,
        job: &Job,
        triggered_by: &str,
        status: EvalStatus,
    ) -> Evaluation {
        let key = (job.id.as_str(), job.priority, job.job_type.as_str());
        self.record_eval(index, key, triggered_by, status)
    }

    /// Capacity snapshot for one placement: the ready nodes (kept from the last placement unless
    /// a node changed since) with the usage of the allocations meant to run now. Give it back
    /// with [`Tables::keep_capacity`].
    fn take_capacity(&mut self) -> Nodes {
        let mut nodes = self.ready.0.take().unwrap_or_else(|| {
            let mut nodes = Nodes::default();
            for n in self.nodes.values().filter(|n| n.status == "ready") {
                nodes.push(&n.id, &n.datacenter, n.cpu, n.memory_mb);
            }
            nodes
        });
        for i in 0..nodes.ids.len() {
            let (cpu, mem) = self.by.used(&nodes.ids[i]);
            nodes.cpu_used[i] = cpu;
            nodes.mem_used[i] = mem;
        }
        nodes
    }

    /// Keeps a snapshot [`Tables::take_capacity`] gave for the next placement.
    fn keep_capacity(&mut self, nodes: Nodes) {
        self.ready.0 = Some(nodes);
    }

    /// A node went down: its allocations that should run are lost, and each of their jobs gets
    /// a `node-update` evaluation (which places replacements elsewhere).
    fn lose_allocs_of(&mut self, index: u64, node_id: &str) -> Vec<Evaluation> {
        let mut jobs = std::collections::BTreeSet::new();
        let running: Vec<(String, String)> = self
            .node_allocs(node_id)
            .filter(|a| a.desired_status == "run")
            .map(|a| (a.id.clone(), a.job_id.clone()))
            .collect();
        for (id, job) in running {
            self.change_alloc(&id, index, |a| {
                a.desired_status = "stop".into();
                a.client_status = "lost".into();
                a.modify_index = index;
            });
            jobs.insert(job);
        }
        if !jobs.is_empty() {
            self.indexes.allocs = index;
        }
        self.evals_for(index, jobs)
    }

    /// `node-update` evaluations for the system jobs that run (a node joined or came back).
    fn system_job_evals(&mut self, index: u64) -> Vec<Evaluation> {
        let jobs = self
            .jobs
            .values()
            .filter(|j| j.job_type.per_node() && !j.stop)
            .map(|j| j.id.clone())
            .collect();
        self.evals_for(index, jobs)
    }

    fn evals_for(
        &mut self,
        index: u64,
        jobs: std::collections::BTreeSet<String>,
    ) -> Vec<Evaluation> {
        let mut out = Vec::new();
        for id in jobs {
            if let Some(job) = self.jobs.get(&id).cloned() {
                out.push(self.job_eval(index, &job, "node-update", EvalStatus::Pending));
            }
        }
        out
    }

    /// Stops the running allocations `ids` at `index`.
    fn stop_allocs(&mut self, index: u64, ids: &[String]) {
        for id in ids {
            if self.allocs.contains_key(id) {
                self.change_alloc(id, index, |a| {
                    a.desired_status = "stop".into();
                    a.client_status = "complete".into();
                    a.modify_index = index;
                });
                self.indexes.allocs = index;
            }
        }
    }

    fn finish(
        &mut self,
        index: u64,
        eval_id: &str,
        status: EvalStatus,
        description: String,
        queued: BTreeMap<String, u64>,
    ) {
        if let Some(e) = self.evals.get_mut(eval_id) {
            e.status = status;
            e.status_description = description;
            e.queued = queued;
            e.modify_index = index;
            self.indexes.evals = index;
        }
    }

    /// Blocked evaluations go back to pending when capacity may have appeared.
    fn unblock(&mut self, index: u64) -> Vec<Evaluation> {
        let mut out = Vec::new();
        for e in self
            .evals
            .values_mut()
            .filter(|e| e.status == EvalStatus::Blocked)
        {
            e.status = EvalStatus::Pending;
            e.modify_index = index;
            out.push(e.clone());
        }
        if !out.is_empty() {
            self.indexes.evals = index;
        }
        out
    }

    /// The answer to a query and the index to report with it: a found object's modify index,
    /// else the index of the table read (Nomad's rule, [`Tables::index_for`]).
    fn query(&self, query: &StateQuery) -> (StateAnswer, u64) {
        fn all<T: Clone>(table: &BTreeMap<String, T>) -> Vec<T> {
            table.values().cloned().collect()
        }
        let answer = match query {
            StateQuery::Jobs => StateAnswer::Jobs(all(&self.jobs)),
            StateQuery::Job(id) => StateAnswer::Job(self.jobs.get(id).cloned()),
            StateQuery::JobAllocations(id) => StateAnswer::JobAllocations(
                self.jobs
                    .get(id)
                    .map(|_| self.job_allocs(id).cloned().collect()),
            ),
            StateQuery::Evaluations => StateAnswer::Evaluations(all(&self.evals)),
            StateQuery::JobEvaluations(id) => StateAnswer::Evaluations(
                self.evals
                    .values()
                    .filter(|e| e.job_id == *id)
                    .cloned()
                    .collect(),
            ),
            StateQuery::Evaluation(id) => StateAnswer::Evaluation(self.evals.get(id).cloned()),
            StateQuery::Allocations => StateAnswer::Allocations(all(&self.allocs)),
            StateQuery::Allocation(id) => StateAnswer::Allocation(self.allocs.get(id).cloned()),
            StateQuery::Nodes => StateAnswer::Nodes(all(&self.nodes)),
            StateQuery::Node(id) => StateAnswer::Node(self.nodes.get(id).cloned()),
            StateQuery::NodeAllocations(id) => {
                StateAnswer::Allocations(self.node_allocs(id).cloned().collect())
            }
        };
        (answer, self.index_for(query))
    }

    /// Checks a whole snapshot: every job and node passes the checks of a write, keys match
    /// IDs, and no object is newer than its table.
    fn validate(&self) -> Result<(), String> {
        let i = self.indexes;
        for (id, j) in &self.jobs {
            j.validate().map_err(|e| format!("job {id:?}: {e}"))?;
            if id != &j.id || j.modify_index > i.jobs {
                return Err(format!("job {id:?} does not match its table"));
            }
        }
        for (id, n) in &self.nodes {
            n.validate().map_err(|e| format!("node {id:?}: {e}"))?;
            if id != &n.id || n.modify_index > i.nodes {
                return Err(format!("node {id:?} does not match its table"));
            }
        }
        for (id, e) in &self.evals {
            if id != &e.id || e.modify_index > i.evals {
                return Err(format!("evaluation {id:?} does not match its table"));
            }
        }
        for (id, a) in &self.allocs {
            if id != &a.id || a.modify_index > i.allocs {
                return Err(format!("allocation {id:?} does not match its table"));
            }
        }
        Ok(())
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

/// The most client nodes the state holds (a bound on what registrations can grow).
pub const MAX_NODES: usize = 200_000;

/// The most allocation updates one report may carry.
pub const MAX_ALLOC_UPDATES: usize = 10_000;

/// Client statuses a client may report for an allocation.
pub const ALLOC_CLIENT_STATUSES: [&str; 3] = ["running", "complete", "failed"];

/// A node status change (see [`Store::update_node_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatusChange {
    /// The node.
    pub node_id: String,
    /// The secret the node presented; empty for the leader's heartbeat timer.
    pub secret_id: String,
    /// The new status.
    pub status: String,
    /// The proposer's clock, Unix seconds.
    pub now_secs: u64,
}

/// The store: [`Tables`] behind one lock.
#[derive(Default)]
pub struct Store {
    tables: Mutex<Tables>,
}

/// What a registration or deregistration created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobWrite {
    /// The evaluation to enqueue.
    pub eval: Evaluation,
    /// The job's modify index.
    pub job_modify_index: u64,
}

impl Store {
    /// Seeds the ID generator from a command's seed and its log index (so the same seed
    /// proposed twice still draws new IDs). A replicated store calls it before applying the
    /// command, on every replica.
    pub fn reseed(&self, seed: u64, index: u64) {
        self.tables.lock().ids = seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    }

    /// The nodes whose allocations changed since the last call (what a server wakes its
    /// clients' blocking queries for).
    pub fn take_touched_nodes(&self) -> Touched {
        self.tables.lock().by.take_touched()
    }

    /// The index `query`'s answer would report, without building the answer (cheap: a blocking
    /// query checks it on every change).
    pub fn index_for(&self, query: &StateQuery) -> u64 {
        self.tables.lock().index_for(query)
    }

    /// The newest index anywhere in the tables.
    pub fn max_index(&self) -> u64 {
        self.tables.lock().max_index()
    }

    /// A copy of every table.
    pub fn export(&self) -> Tables {
        self.tables.lock().clone()
    }

    /// Replaces every table with a snapshot's, after checking it (nothing changes if it is
    /// refused).
    pub fn import(&self, tables: Tables) -> Result<(), String> {
        tables.validate()?;
        let mut tables = tables;
        tables.reindex();
        *self.tables.lock() = tables;
        Ok(())
    }

    /// The answer to `query` and its index.
    pub fn query(&self, query: &StateQuery) -> (StateAnswer, u64) {
        self.tables.lock().query(query)
    }

    /// Every node's ID and whether it is down: what the leader's heartbeat timers walk every
    /// few seconds, without copying the nodes.
    pub fn node_liveness(&self) -> Vec<(String, bool)> {
        let t = self.tables.lock();
        t.nodes
            .values()
            .map(|n| (n.id.clone(), n.status == "down"))
            .collect()
    }

    /// Whether an evaluation exists.
    pub fn has_eval(&self, id: &str) -> bool {
        self.tables.lock().evals.contains_key(id)
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

    /// Creates a pending `_core` (garbage collection) evaluation at `index`.
    pub fn core_eval(&self, index: u64) -> Evaluation {
        let mut t = self.tables.lock();
        let job = ("core-gc", 200, "_core");
        t.record_eval(index, job, "scheduled", EvalStatus::Pending)
    }

    /// Adds or updates a node at `index`; blocked evaluations become pending again (returned to
    /// enqueue).
    pub fn upsert_node(&self, index: u64, mut node: Node) -> Vec<Evaluation> {
        let mut t = self.tables.lock();
        node.create_index = t.nodes.get(&node.id).map_or(index, |n| n.create_index);
        node.modify_index = index;
        t.nodes.insert(node.id.clone(), node);
        t.nodes_changed();
        t.indexes.nodes = index;
        t.unblock(index)
    }

    /// A client registers its node at `index` (Nomad's `Node.Register`): a new node, or the same
    /// node again (a restarted client) presenting the secret it registered with. The node is
    /// `ready`; one that was down gets `node-update` evaluations for the system jobs, and
    /// blocked evaluations become pending. Returns the evaluations to enqueue.
    pub fn register_node(&self, index: u64, mut node: Node) -> Result<Vec<Evaluation>, String> {
        let mut t = self.tables.lock();
        if node.secret_id.is_empty() {
            return Err("Node.SecretID: missing node secret".into());
        }
        let previous = t.nodes.get(&node.id);
        match previous {
            Some(p)
                if !p.secret_id.is_empty()
                    && !caravan_agent_core::acl::secrets_equal(&p.secret_id, &node.secret_id) =>
            {
                return Err("node secret ID does not match. Not registering node.".into());
            }
            None if t.nodes.len() >= MAX_NODES => {
                return Err(format!("too many nodes: at most {MAX_NODES}"));
            }
            _ => {}
        }
        let was_down = previous.is_some_and(|p| p.status == "down");
        let is_new = previous.is_none();
        node.create_index = previous.map_or(index, |p| p.create_index);
        node.modify_index = index;
        node.status = "ready".into();
        node.down_since = None;
        t.nodes.insert(node.id.clone(), node);
        t.nodes_changed();
        t.indexes.nodes = index;
        let mut out = t.unblock(index);
        if was_down || is_new {
            out.extend(t.system_job_evals(index));
        }
        Ok(out)
    }

    /// A node's status changes at `index`. A client presents its `secret`; without one (the
    /// leader's heartbeat timer) the only change allowed is to `down`. A node going down loses
    /// its allocations (desired `stop`, client status `lost`) and each job that had one gets a
    /// `node-update` evaluation; a node coming back makes the system jobs re-evaluate and
    /// blocked evaluations pending. Returns the evaluations to enqueue.
    pub fn update_node_status(
        &self,
        index: u64,
        change: &NodeStatusChange,
    ) -> Result<Vec<Evaluation>, String> {
        let mut t = self.tables.lock();
        let Some(node) = t.nodes.get(&change.node_id) else {
            return Err(format!("node not found: {:?}", change.node_id));
        };
        if change.secret_id.is_empty() {
            if change.status != "down" {
                return Err(
                    "a status change without the node's secret may only mark it down".into(),
                );
            }
        } else if !caravan_agent_core::acl::secrets_equal(&node.secret_id, &change.secret_id) {
            return Err("node secret ID does not match".into());
        }
        if !caravan_agent_core::jobs::NODE_STATUSES.contains(&change.status.as_str()) {
            return Err(format!("Node.Status: invalid status {:?}", change.status));
        }
        if node.status == change.status {
            return Ok(Vec::new());
        }
        let going_down = change.status == "down";
        let coming_back = node.status == "down" && change.status == "ready";
        t.nodes_changed();
        if let Some(n) = t.nodes.get_mut(&change.node_id) {
            n.status = change.status.clone();
            n.down_since = going_down.then_some(change.now_secs);
            n.modify_index = index;
        }
        t.indexes.nodes = index;
        let mut out = Vec::new();
        if going_down {
            out = t.lose_allocs_of(index, &change.node_id);
        } else if coming_back {
            out = t.unblock(index);
            out.extend(t.system_job_evals(index));
        }
        Ok(out)
    }

    /// The checks of an allocation report, made by the server that takes it (before anything is
    /// written) and again by the state machine: the node exists, the secret is its own, at
    /// most [`MAX_ALLOC_UPDATES`] updates, each a known client status for an allocation on
    /// that node.
    pub fn check_alloc_updates(
        &self,
        node_id: &str,
        secret: &str,
        updates: &[(String, String)],
    ) -> Result<(), String> {
        self.tables
            .lock()
            .check_alloc_updates(node_id, secret, updates)
    }

    /// The checks of a registration that the server makes before writing (the state machine
    /// makes them again): an existing node keeps its secret.
    pub fn check_registration(&self, node: &Node) -> Result<(), String> {
        let t = self.tables.lock();
        match t.nodes.get(&node.id) {
            Some(p)
                if !p.secret_id.is_empty()
                    && !caravan_agent_core::acl::secrets_equal(&p.secret_id, &node.secret_id) =>
            {
                Err("node secret ID does not match. Not registering node.".into())
            }
            None if t.nodes.len() >= MAX_NODES => {
                Err(format!("too many nodes: at most {MAX_NODES}"))
            }
            _ => Ok(()),
        }
    }

    /// A client reports its allocations' client status at `index` (`running` once it has one,
    /// `complete` once it stopped one, `failed`). Each allocation must be placed on that node,
    /// and the node's `secret` must match. A status that does not move forward is ignored.
    pub fn update_allocs(
        &self,
        index: u64,
        node_id: &str,
        secret: &str,
        updates: &[(String, String)],
    ) -> Result<(), String> {
        let mut t = self.tables.lock();
        t.check_alloc_updates(node_id, secret, updates)?;
        for (id, status) in updates {
            let forward = t.allocs.get(id).is_some_and(|a| {
                match (a.client_status.as_str(), status.as_str()) {
                    ("pending", _) => a.desired_status == "run" || status != "running",
                    ("running", "complete" | "failed") => true,
                    _ => false,
                }
            });
            if forward {
                t.change_alloc(id, index, |a| {
                    a.client_status = status.clone();
                    a.modify_index = index;
                });
                t.indexes.allocs = index;
            }
        }
        Ok(())
    }

    /// Registers (or updates) a job at `index` and creates its evaluation.
    pub fn register(&self, index: u64, mut job: Job) -> JobWrite {
        let mut t = self.tables.lock();
        let previous = t.jobs.get(&job.id);
        job.create_index = previous.map_or(index, |p| p.create_index);
        job.version = previous.map_or(0, |p| p.version.saturating_add(1));
        job.modify_index = index;
        job.stop = false;
        job.status = "pending".into();
        t.jobs.insert(job.id.clone(), job.clone());
        t.indexes.jobs = index;
        let eval = t.job_eval(index, &job, "job-register", EvalStatus::Pending);
        JobWrite {
            eval,
            job_modify_index: index,
        }
    }

    /// Stops a job at `index`; its evaluation will stop the allocations. `None` if unknown.
    pub fn deregister(&self, index: u64, id: &str) -> Option<JobWrite> {
        let mut t = self.tables.lock();
        let job = t.jobs.get_mut(id)?;
        job.stop = true;
        job.status = "dead".into();
        job.modify_index = index;
        let job = job.clone();
        t.indexes.jobs = index;
        let eval = t.job_eval(index, &job, "job-deregister", EvalStatus::Pending);
        Some(JobWrite {
            eval,
            job_modify_index: index,
        })
    }

    /// Runs the scheduler for an evaluation at `index`; returns evaluations to enqueue
    /// (unblocked ones). An evaluation already processed (a redelivery) changes nothing.
    pub fn process(
        &self,
        index: u64,
        eval_id: &str,
        gc_threshold_secs: u64,
        now_secs: u64,
    ) -> Result<Vec<Evaluation>, String> {
        let mut t = self.tables.lock();
        let Some(eval) = t.evals.get(eval_id).cloned() else {
            return Err(format!("evaluation {eval_id} not found"));
        };
        if eval.status != EvalStatus::Pending {
            return Ok(Vec::new());
        }
        if eval.scheduler == "_core" {
            collect_garbage(&mut t, index, gc_threshold_secs, now_secs);
            t.finish(
                index,
                eval_id,
                EvalStatus::Complete,
                String::new(),
                BTreeMap::new(),
            );
            return Ok(Vec::new());
        }
        let Some(job) = t.jobs.get(&eval.job_id).cloned() else {
            let why = "job not found".to_string();
            t.finish(index, eval_id, EvalStatus::Complete, why, BTreeMap::new());
            return Ok(Vec::new());
        };
        if job.stop {
            let running: Vec<String> = t
                .job_allocs(&job.id)
                .filter(|a| a.desired_status == "run")
                .map(|a| a.id.clone())
                .collect();
            t.stop_allocs(index, &running);
            t.finish(
                index,
                eval_id,
                EvalStatus::Complete,
                String::new(),
                BTreeMap::new(),
            );
            // Freed capacity may unblock others.
            return Ok(t.unblock(index));
        }
        let (queued, reasons) = place(&mut t, index, &job, &eval);
        if queued.values().any(|&n| n > 0) {
            let mut blocked = t.job_eval(index, &job, "queued-allocs", EvalStatus::Blocked);
            blocked.status_description = reasons.clone();
            blocked.queued = queued.clone();
            t.evals.insert(blocked.id.clone(), blocked.clone());
            if let Some(e) = t.evals.get_mut(eval_id) {
                e.blocked_eval = blocked.id.clone();
            }
        }
        t.finish(index, eval_id, EvalStatus::Complete, reasons, queued);
        // A status change is a write of the job, at this index, so blocking job reads see it.
        let changed = match t.jobs.get_mut(&job.id) {
            Some(j) if j.status != "running" => {
                j.status = "running".into();
                j.modify_index = index;
                true
            }
            _ => false,
        };
        if changed {
            t.indexes.jobs = index;
        }
        Ok(Vec::new())
    }

    /// Marks an evaluation failed (past the broker's delivery limit) at `index`.
    pub fn fail(&self, index: u64, eval_id: &str) {
        let mut t = self.tables.lock();
        let why = "evaluation reached delivery limit".to_string();
        t.finish(index, eval_id, EvalStatus::Failed, why, BTreeMap::new());
    }
}

/// Places what is missing for each group; returns unplaced counts per group and why they did
/// not fit (empty when everything was placed).
fn place(
    t: &mut Tables,
    index: u64,
    job: &Job,
    eval: &Evaluation,
) -> (BTreeMap<String, u64>, String) {
    let mut nodes = t.take_capacity();
    let mut picker = Picker::new(eval.create_index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut queued = BTreeMap::new();
    let mut reasons = Vec::new();
    for group in &job.groups {
        let (cpu, memory_mb) = group.ask();
        let ask = Ask { cpu, memory_mb };
        let running: Vec<Allocation> = t
            .job_allocs(&job.id)
            .filter(|a| a.task_group == group.name && a.desired_status == "run")
            .cloned()
            .collect();
        let placement = if job.job_type.per_node() {
            let taken: std::collections::HashSet<&str> =
                running.iter().map(|a| a.node_id.as_str()).collect();
            let mut p = one_per_node(&mut nodes, &job.datacenters, ask);
            p.nodes.retain(|&i| !taken.contains(nodes.ids[i].as_str()));
            p
        } else {
            let want = group.count as usize;
            if running.len() > want {
                let extra: Vec<String> = running.iter().skip(want).map(|a| a.id.clone()).collect();
                t.stop_allocs(index, &extra);
            }
            let missing = want.saturating_sub(running.len());
            bin_pack(&mut nodes, &job.datacenters, ask, missing, &mut picker)
        };
        let start = running.len();
        for (k, &node) in placement.nodes.iter().enumerate() {
            let alloc = Allocation {
                id: t.fresh_id(),
                name: format!("{}.{}[{}]", job.id, group.name, start + k),
                job_id: job.id.clone(),
                task_group: group.name.clone(),
                node_id: nodes.ids[node].clone(),
                eval_id: eval.id.clone(),
                cpu,
                memory_mb,
                desired_status: "run".into(),
                client_status: "pending".into(),
                create_index: index,
                modify_index: index,
            };
            t.put_alloc(alloc);
            t.indexes.allocs = index;
        }
        queued.insert(group.name.clone(), placement.unplaced as u64);
        if placement.unplaced > 0 {
            reasons.push(format!("{}: {}", group.name, placement.reason));
        }
    }
    t.keep_capacity(nodes);
    (queued, reasons.join("; "))
}

/// `_core`: drops stopped allocations, finished evaluations of dead jobs, dead jobs with no
/// allocations left, and nodes down longer than the threshold.
fn collect_garbage(t: &mut Tables, index: u64, gc_threshold_secs: u64, now_secs: u64) {
    let counts = (t.allocs.len(), t.evals.len(), t.jobs.len(), t.nodes.len());
    t.allocs.retain(|_, a| a.desired_status == "run");
    if t.allocs.len() != counts.0 {
        t.reindex();
    }
    let dead: std::collections::HashSet<String> = t
        .jobs
        .values()
        .filter(|j| j.stop)
        .map(|j| j.id.clone())
        .collect();
    // Finished evaluations of dead jobs, and of earlier `_core` runs (whose job, `core-gc`, is
    // no job in the table, so they were never dead and stayed forever, one per GC interval).
    t.evals.retain(|_, e| {
        !((dead.contains(&e.job_id) || e.scheduler == "_core")
            && matches!(
                e.status,
                EvalStatus::Complete | EvalStatus::Failed | EvalStatus::Canceled
            ))
    });
    let with_allocs: std::collections::HashSet<&str> =
        t.allocs.values().map(|a| a.job_id.as_str()).collect();
    let gone: Vec<String> = dead
        .iter()
        .filter(|id| !with_allocs.contains(id.as_str()))
        .cloned()
        .collect();
    for id in gone {
        t.jobs.remove(&id);
    }
    t.nodes.retain(|_, n| {
        n.status != "down"
            || n.down_since
                .is_none_or(|s| now_secs.saturating_sub(s) < gc_threshold_secs)
    });
    if t.nodes.len() != counts.3 {
        t.nodes_changed();
    }
    let i = &mut t.indexes;
    for (before, after, table) in [
        (counts.0, t.allocs.len(), &mut i.allocs),
        (counts.1, t.evals.len(), &mut i.evals),
        (counts.2, t.jobs.len(), &mut i.jobs),
        (counts.3, t.nodes.len(), &mut i.nodes),
    ] {
        if before != after {
            *table = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_agent_core::jobs::{JobType, Task, TaskGroup};

    pub(crate) fn node(id: &str, cpu: u64) -> Node {
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
            secret_id: String::new(),
            attributes: Default::default(),
            create_index: 0,
            modify_index: 0,
        }
    }

    pub(crate) fn job(id: &str, ty: JobType, count: u32, cpu: u64) -> Job {
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

    /// The index kept in step with every write equals one rebuilt from the allocations.
    fn index_in_step(s: &Store) {
        let t = s.tables.lock();
        let rebuilt = AllocIndex::of(t.allocs.values());
        assert!(
            t.by.same_views(&rebuilt),
            "derived index out of step: {:?} vs {rebuilt:?}",
            t.by
        );
    }

    fn running(s: &Store, job: &str) -> usize {
        match s.query(&StateQuery::JobAllocations(job.into())).0 {
            StateAnswer::JobAllocations(Some(a)) => {
                a.iter().filter(|a| a.desired_status == "run").count()
            }
            _ => 0,
        }
    }

    fn eval(s: &Store, id: &str) -> Evaluation {
        match s.query(&StateQuery::Evaluation(id.into())).0 {
            StateAnswer::Evaluation(Some(e)) => e,
            other => panic!("no evaluation {id}: {other:?}"),
        }
    }

    fn with_secret(id: &str, secret: &str) -> Node {
        let mut n = node(id, 1000);
        n.secret_id = secret.into();
        n
    }

    fn status(node_id: &str, secret: &str, status: &str) -> NodeStatusChange {
        NodeStatusChange {
            node_id: node_id.into(),
            secret_id: secret.into(),
            status: status.into(),
            now_secs: 100,
        }
    }

    fn node_status(s: &Store, id: &str) -> String {
        match s.query(&StateQuery::Node(id.into())).0 {
            StateAnswer::Node(Some(n)) => n.status,
            other => panic!("no node {id}: {other:?}"),
        }
    }

    fn node_allocs(s: &Store, id: &str) -> Vec<Allocation> {
        match s.query(&StateQuery::NodeAllocations(id.into())).0 {
            StateAnswer::Allocations(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// One node write and what it must answer (`Ok(n)`: `n` evaluations to enqueue).
    enum Write<'a> {
        Register(Node),
        Status(NodeStatusChange),
        Allocs(&'a str, &'a str, Vec<(String, String)>),
    }

    fn check(s: &Store, index: u64, write: Write<'_>, expected: Result<usize, &str>) {
        let got = match write {
            Write::Register(n) => s.register_node(index, n).map(|e| e.len()),
            Write::Status(c) => s.update_node_status(index, &c).map(|e| e.len()),
            Write::Allocs(node, secret, u) => s.update_allocs(index, node, secret, &u).map(|()| 0),
        };
        match (&got, expected) {
            (Ok(n), Ok(want)) => assert_eq!(*n, want, "at index {index}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "at index {index}: {e}"),
            _ => panic!("at index {index}: got {got:?}, want {expected:?}"),
        }
    }

    #[test]
    fn a_job_that_starts_running_is_written_at_that_index() {
        let s = Store::default();
        check(&s, 1, Write::Register(with_secret("a", "sa")), Ok(0));
        let w = s.register(2, job("web", JobType::Service, 1, 100));
        s.process(3, &w.eval.id, 86400, 0).unwrap();
        let (answer, index) = s.query(&StateQuery::Job("web".into()));
        let StateAnswer::Job(Some(j)) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(
            (j.status.as_str(), j.modify_index, index),
            ("running", 3, 3)
        );
        assert_eq!(s.query(&StateQuery::Jobs).1, 3);
    }

    #[test]
    fn a_jobs_evaluations_are_its_own_and_read_at_the_evaluation_index() {
        let s = Store::default();
        let web = s.register(1, job("web", JobType::Service, 1, 100)).eval.id;
        let db = s.register(2, job("db", JobType::Service, 1, 100)).eval.id;
        let web2 = s.register(3, job("web", JobType::Service, 2, 100)).eval.id;
        let ids = |job: &str| match s.query(&StateQuery::JobEvaluations(job.into())) {
            (StateAnswer::Evaluations(evals), index) => {
                let mut ids: Vec<String> = evals.into_iter().map(|e| e.id).collect();
                ids.sort();
                (ids, index)
            }
            other => panic!("{other:?}"),
        };
        // An evaluation write that touches no job: the answer's index is the evaluations'.
        s.fail(4, &db);
        let mut expected = vec![web, web2];
        expected.sort();
        assert_eq!(ids("web"), (expected, 4));
        assert_eq!(ids("db"), (vec![db], 4));
        assert_eq!(ids("nope"), (vec![], 4));
    }

    #[test]
    fn node_writes_need_the_nodes_secret() {
        let s = Store::default();
        check(&s, 1, Write::Register(with_secret("n1", "s1")), Ok(0));
        check(
            &s,
            2,
            Write::Register(with_secret("n1", "other")),
            Err("node secret ID does not match"),
        );
        check(
            &s,
            3,
            Write::Register(with_secret("n2", "")),
            Err("missing node secret"),
        );
        check(&s, 4, Write::Register(with_secret("n1", "s1")), Ok(0));
        check(
            &s,
            5,
            Write::Status(status("n1", "other", "down")),
            Err("does not match"),
        );
        check(
            &s,
            6,
            Write::Status(status("n1", "", "ready")),
            Err("may only mark it down"),
        );
        check(
            &s,
            7,
            Write::Status(status("nope", "", "down")),
            Err("node not found"),
        );
        check(
            &s,
            8,
            Write::Status(status("n1", "s1", "bogus")),
            Err("invalid status"),
        );
        let bad = vec![("x".to_string(), "running".to_string())];
        check(
            &s,
            9,
            Write::Allocs("n1", "other", bad.clone()),
            Err("does not match"),
        );
        check(
            &s,
            10,
            Write::Allocs("n1", "s1", bad),
            Err("is not placed on node"),
        );
        assert_eq!(node_status(&s, "n1"), "ready");
        assert_eq!(
            s.query(&StateQuery::Node("n2".into())).0,
            StateAnswer::Node(None)
        );
    }

    #[test]
    fn a_node_down_loses_its_allocations_and_they_are_placed_again() {
        let s = Store::default();
        check(&s, 1, Write::Register(with_secret("a", "sa")), Ok(0));
        let w = s.register(2, job("web", JobType::Service, 2, 400));
        s.process(3, &w.eval.id, 86400, 0).unwrap();
        let placed = node_allocs(&s, "a");
        assert_eq!(placed.len(), 2);
        // The client has them: pending → running.
        let ids: Vec<(String, String)> = placed
            .iter()
            .map(|a| (a.id.clone(), "running".to_string()))
            .collect();
        check(&s, 4, Write::Allocs("a", "sa", ids), Ok(0));
        assert!(
            node_allocs(&s, "a")
                .iter()
                .all(|a| a.client_status == "running")
        );
        check(&s, 5, Write::Register(with_secret("b", "sb")), Ok(0));
        // The leader's timer marks `a` down: one node-update evaluation for `web`.
        let lost = s.update_node_status(6, &status("a", "", "down")).unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].triggered_by, "node-update");
        assert_eq!(node_status(&s, "a"), "down");
        assert!(
            node_allocs(&s, "a")
                .iter()
                .all(|a| a.client_status == "lost")
        );
        s.process(7, &lost[0].id, 86400, 0).unwrap();
        assert_eq!(running(&s, "web"), 2);
        assert_eq!(node_allocs(&s, "b").len(), 2);
        // Down again is no change; the client comes back with its secret.
        check(&s, 8, Write::Status(status("a", "", "down")), Ok(0));
        check(&s, 9, Write::Status(status("a", "sa", "ready")), Ok(0));
        assert_eq!(node_status(&s, "a"), "ready");
        index_in_step(&s);
    }

    #[test]
    fn only_the_nodes_whose_allocations_changed_are_woken() {
        let s = Store::default();
        for (i, n) in ["a", "b"].iter().enumerate() {
            check(
                &s,
                i as u64 + 1,
                Write::Register(with_secret(n, "s")),
                Ok(0),
            );
        }
        s.take_touched_nodes();
        let w = s.register(3, job("one", JobType::Service, 1, 900));
        s.process(4, &w.eval.id, 86400, 0).unwrap();
        let placed = node_allocs(&s, "a").len() + node_allocs(&s, "b").len();
        assert_eq!(placed, 1);
        let on = if node_allocs(&s, "a").is_empty() {
            "b"
        } else {
            "a"
        };
        assert_eq!(s.take_touched_nodes(), Touched::Nodes(vec![on.to_string()]));
        assert_eq!(s.take_touched_nodes(), Touched::Nodes(vec![]));
        s.import(s.export()).unwrap();
        assert_eq!(s.take_touched_nodes(), Touched::All);
    }

    #[test]
    fn place_block_unblock_stop_gc() {
        let s = Store::default();
        s.upsert_node(1, node("a", 1000));
        let w = s.register(2, job("web", JobType::Service, 3, 400));
        assert!(s.process(3, &w.eval.id, 86400, 0).unwrap().is_empty());
        let e = eval(&s, &w.eval.id);
        assert_eq!(
            (e.status, e.queued["g"], e.modify_index),
            (EvalStatus::Complete, 1, 3)
        );
        assert_eq!(eval(&s, &e.blocked_eval).status, EvalStatus::Blocked);
        assert!(e.status_description.contains("resources exhausted"));
        assert_eq!(running(&s, "web"), 2);
        // New capacity unblocks the blocked evaluation.
        let again = s.upsert_node(4, node("b", 1000));
        assert_eq!(again.len(), 1);
        s.process(5, &again[0].id, 86400, 0).unwrap();
        assert_eq!(running(&s, "web"), 3);
        index_in_step(&s);
        // Deregister stops everything; GC removes it.
        let d = s.deregister(6, "web").unwrap();
        s.process(7, &d.eval.id, 86400, 0).unwrap();
        assert_eq!(running(&s, "web"), 0);
        index_in_step(&s);
        let core = s.core_eval(8);
        assert_eq!(s.pending_evals(), std::slice::from_ref(&core));
        s.process(9, &core.id, 86400, 0).unwrap();
        assert_eq!(
            s.query(&StateQuery::Job("web".into())),
            (StateAnswer::Job(None), 9)
        );
        assert_eq!(eval(&s, &core.id).status, EvalStatus::Complete);
        // Processing again (a redelivery after a leader change) changes nothing.
        let before = s.export();
        assert!(s.process(10, &core.id, 86400, 0).unwrap().is_empty());
        assert_eq!(s.export(), before);
        assert!(s.deregister(11, "nope").is_none());
        index_in_step(&s);
        // The next GC removes the finished `_core` evaluation before it; only its own stays.
        let next = s.core_eval(12);
        s.process(13, &next.id, 86400, 0).unwrap();
        assert_eq!(
            s.query(&StateQuery::Evaluation(core.id.clone())).0,
            StateAnswer::Evaluation(None)
        );
        assert_eq!(eval(&s, &next.id).status, EvalStatus::Complete);
        index_in_step(&s);
    }

    #[test]
    fn indexes_follow_the_tables_written() {
        let s = Store::default();
        s.upsert_node(3, node("a", 1000));
        let w = s.register(5, job("web", JobType::Service, 1, 100));
        let i = s.export().indexes;
        assert_eq!((i.nodes, i.jobs, i.evals, i.allocs), (3, 5, 5, 0));
        // The job turns `running` at 8: a write of the job (Nomad's setJobStatus).
        s.process(8, &w.eval.id, 86400, 0).unwrap();
        let i = s.export().indexes;
        assert_eq!((i.nodes, i.jobs, i.evals, i.allocs), (3, 8, 8, 8));
        assert_eq!(s.query(&StateQuery::Nodes).1, 3);
        assert_eq!(s.query(&StateQuery::Job("web".into())).1, 8);
        assert_eq!(s.query(&StateQuery::Job("nope".into())).1, 8);
        assert_eq!(s.query(&StateQuery::Allocations).1, 8);
    }

    #[test]
    fn replicas_with_the_same_seeds_agree_on_every_id() {
        let replica = || {
            let s = Store::default();
            s.reseed(1, 0);
            s.upsert_node(1, node("a", 1000));
            s.upsert_node(2, node("b", 1000));
            s.reseed(2, 0);
            let w = s.register(3, job("web", JobType::Service, 5, 300));
            s.reseed(3, 0);
            s.process(4, &w.eval.id, 86400, 0).unwrap();
            s.export()
        };
        let (a, b) = (replica(), replica());
        assert_eq!(a, b);
        assert_eq!(a.allocs.len(), 5);
    }

    #[test]
    fn a_replica_with_a_kept_snapshot_places_as_one_that_rebuilt_it() {
        // Placement is deterministic only if the kept capacity snapshot is exactly the one a
        // replica that just restarted (or installed a snapshot) builds.
        let history = |s: &Store| {
            for (i, n) in ["a", "b", "c"].iter().enumerate() {
                s.upsert_node(i as u64 + 1, node(n, 1000));
            }
            s.reseed(9, 0);
            let w = s.register(4, job("one", JobType::Service, 4, 300));
            s.process(5, &w.eval.id, 86400, 0).unwrap();
        };
        let (warm, cold) = (Store::default(), Store::default());
        history(&warm);
        history(&cold);
        // `cold` drops every derived view before each placement, as a restarted replica would.
        let restart = |s: &Store| {
            if std::ptr::eq(s, &cold) {
                s.import(s.export()).unwrap();
            }
        };
        for s in [&warm, &cold] {
            s.reseed(11, 0);
            let w = s.register(6, job("two", JobType::Service, 4, 300));
            restart(s);
            s.process(7, &w.eval.id, 86400, 0).unwrap();
            s.upsert_node(8, node("d", 1000));
            s.reseed(12, 0);
            let w = s.register(9, job("three", JobType::Service, 3, 300));
            restart(s);
            s.process(10, &w.eval.id, 86400, 0).unwrap();
        }
        assert_eq!(warm.export(), cold.export());
        index_in_step(&warm);
    }

    #[test]
    fn system_jobs_one_per_node_and_idempotent() {
        let s = Store::default();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            s.upsert_node(i as u64 + 1, node(id, 1000));
        }
        let w = s.register(4, job("sys", JobType::System, 0, 100));
        s.process(5, &w.eval.id, 86400, 0).unwrap();
        let w2 = s.register(6, job("sys", JobType::System, 0, 100));
        s.process(7, &w2.eval.id, 86400, 0).unwrap();
        let StateAnswer::JobAllocations(Some(allocs)) =
            s.query(&StateQuery::JobAllocations("sys".into())).0
        else {
            panic!("no allocations");
        };
        let mut nodes: Vec<_> = allocs.iter().map(|a| a.node_id.clone()).collect();
        nodes.sort();
        assert_eq!(nodes, ["a", "b", "c"]);
    }

    #[test]
    fn a_bad_snapshot_is_refused_and_changes_nothing() {
        let s = Store::default();
        s.upsert_node(1, node("a", 1000));
        let before = s.export();
        let mut bad = before.clone();
        if let Some(n) = bad.nodes.get_mut("a") {
            n.modify_index = 99;
        }
        assert!(s.import(bad).unwrap_err().contains("does not match"));
        let mut bad = before.clone();
        let mut j = job(
            "web",
            JobType::Service,
            caravan_agent_core::jobs::MAX_COUNT + 1,
            1,
        );
        j.modify_index = 0;
        bad.jobs.insert("web".into(), j);
        assert!(s.import(bad).unwrap_err().contains("Count"));
        assert_eq!(s.export(), before);
    }
}
