//! What the store derives from its allocations and keeps in step with every change, so that the
//! scheduler's and the clients' reads cost the allocations they are about, not all of them:
//! allocation IDs by node and by job, the CPU and memory that allocations meant to run take on
//! each node, and the log index of the last change to each node's allocations (what a client's
//! blocking query waits on). Never serialized: rebuilt from the allocations after a snapshot is
//! installed.

use std::collections::{BTreeSet, HashMap};

use caravan_agent_core::jobs::Allocation;

/// The derived views of the allocation table.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllocIndex {
    by_node: HashMap<String, BTreeSet<String>>,
    by_job: HashMap<String, BTreeSet<String>>,
    used: HashMap<String, (u64, u64)>,
    node_changed: HashMap<String, u64>,
    /// Nodes whose allocations changed since [`AllocIndex::take_touched`] (`None`: too many
    /// to list, treat every node as changed).
    touched: Option<std::collections::HashSet<String>>,
}

/// Past this many changed nodes between two drains, every node counts as changed.
const MAX_TOUCHED: usize = 100_000;

/// Which nodes' allocations changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// These nodes.
    Nodes(Vec<String>),
    /// Too many to list: every node.
    All,
}

/// Derived data: two indexes of equal tables are equal.
impl PartialEq for AllocIndex {
    fn eq(&self, _: &AllocIndex) -> bool {
        true
    }
}

impl Eq for AllocIndex {}

impl AllocIndex {
    /// The index of `allocs`.
    pub(crate) fn of<'a>(allocs: impl Iterator<Item = &'a Allocation>) -> AllocIndex {
        let mut index = AllocIndex::default();
        for a in allocs {
            index.add(a);
        }
        // A rebuilt index (a snapshot installed) may differ anywhere.
        index.touched = None;
        index
    }

    /// Counts `a` in.
    pub(crate) fn add(&mut self, a: &Allocation) {
        self.by_node
            .entry(a.node_id.clone())
            .or_default()
            .insert(a.id.clone());
        self.by_job
            .entry(a.job_id.clone())
            .or_default()
            .insert(a.id.clone());
        if a.desired_status == "run" {
            let used = self.used.entry(a.node_id.clone()).or_default();
            used.0 = used.0.saturating_add(a.cpu);
            used.1 = used.1.saturating_add(a.memory_mb);
        }
        self.touch(&a.node_id, a.modify_index);
    }

    /// Counts `a` out (at log index `at`).
    pub(crate) fn remove(&mut self, a: &Allocation, at: u64) {
        if let Some(ids) = self.by_node.get_mut(&a.node_id) {
            ids.remove(&a.id);
            if ids.is_empty() {
                self.by_node.remove(&a.node_id);
            }
        }
        if let Some(ids) = self.by_job.get_mut(&a.job_id) {
            ids.remove(&a.id);
            if ids.is_empty() {
                self.by_job.remove(&a.job_id);
            }
        }
        if a.desired_status == "run"
            && let Some(used) = self.used.get_mut(&a.node_id)
        {
            used.0 = used.0.saturating_sub(a.cpu);
            used.1 = used.1.saturating_sub(a.memory_mb);
        }
        self.touch(&a.node_id, at);
    }

    fn touch(&mut self, node: &str, at: u64) {
        let changed = self.node_changed.entry(node.to_string()).or_default();
        *changed = (*changed).max(at);
        if let Some(touched) = &mut self.touched {
            if touched.len() >= MAX_TOUCHED {
                self.touched = None;
            } else {
                touched.insert(node.to_string());
            }
        }
    }

    /// The nodes whose allocations changed since the last call.
    pub(crate) fn take_touched(&mut self) -> Touched {
        match self.touched.replace(Default::default()) {
            Some(nodes) => Touched::Nodes(nodes.into_iter().collect()),
            None => Touched::All,
        }
    }

    /// The allocation IDs placed on `node`.
    pub(crate) fn on_node(&self, node: &str) -> impl Iterator<Item = &String> {
        self.by_node.get(node).into_iter().flatten()
    }

    /// The allocation IDs of `job`.
    pub(crate) fn of_job(&self, job: &str) -> impl Iterator<Item = &String> {
        self.by_job.get(job).into_iter().flatten()
    }

    /// CPU and memory taken on `node` by allocations meant to run.
    pub(crate) fn used(&self, node: &str) -> (u64, u64) {
        self.used.get(node).copied().unwrap_or_default()
    }

    /// Whether the views (not the change indexes) equal `other`'s: tests compare the index kept
    /// in step with one rebuilt from scratch.
    #[cfg(test)]
    pub(crate) fn same_views(&self, other: &AllocIndex) -> bool {
        let used = |m: &HashMap<String, (u64, u64)>| -> HashMap<String, (u64, u64)> {
            m.iter()
                .filter(|(_, v)| **v != (0, 0))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        self.by_node == other.by_node
            && self.by_job == other.by_job
            && used(&self.used) == used(&other.used)
    }

    /// The log index of the last change to `node`'s allocations (0: none yet).
    pub(crate) fn node_changed(&self, node: &str) -> u64 {
        self.node_changed.get(node).copied().unwrap_or(0)
    }
}

/// The ready nodes' capacities in the column form placement takes, kept between evaluations
/// (derived: dropped whenever a node changes, rebuilt by the next placement). Their usage is
/// refreshed from [`AllocIndex`] before each use.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadyNodes(pub(crate) Option<caravan_sched::placement::Nodes>);

/// Derived data: equal tables have equal caches.
impl PartialEq for ReadyNodes {
    fn eq(&self, _: &ReadyNodes) -> bool {
        true
    }
}

impl Eq for ReadyNodes {}
