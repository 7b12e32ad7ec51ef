//! [`ClusterState`], the replicated state machine: the ACL table and the job store, changed only
//! by [`Command`]s applied in log order, plus the leader's eval broker that `apply` feeds.
//!
//! `apply` trusts nothing because it came through Raft: every command is checked again with the
//! same rules the HTTP API applies (`AclState::apply`, `Job::validate`, `Node::validate`), its
//! size is bounded, and a replayed index is refused. A refused command changes nothing and
//! answers [`Outcome::Refused`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use caravan_agent_core::acl::{Acl, AclState, AclTable};
use caravan_agent_core::jobs::Evaluation;
use caravan_raft::StateMachine;
use caravan_sched::broker::EvalBroker;
use parking_lot::{Mutex, RwLock};

use crate::command::{self, Command, MAX_BATCH, MAX_COMMAND_BYTES, Outcome, StateSnapshot};
use crate::store::{Store, broker_eval};

/// Moves every ACL index past `at` back to `at` (see `Tables::clamp_indexes`).
fn clamp_acl(acl: &mut AclState, at: u64) {
    for p in acl.policies.values_mut() {
        p.create_index = p.create_index.min(at);
        p.modify_index = p.modify_index.min(at);
    }
    for t in acl.tokens.values_mut() {
        t.create_index = t.create_index.min(at);
        t.modify_index = t.modify_index.min(at);
    }
    acl.index = acl.index.min(at);
}

/// The longest job or node ID a command may name.
pub const MAX_ID_BYTES: usize = 128;

/// A waiter's handle on a node's wakeups ([`ClusterState::node_changes`]).
pub struct NodeChanges<'a> {
    state: &'a ClusterState,
    node: String,
    notify: Arc<tokio::sync::Notify>,
}

impl NodeChanges<'_> {
    /// The wakeup to wait on.
    pub fn notify(&self) -> &tokio::sync::Notify {
        &self.notify
    }
}

impl Drop for NodeChanges<'_> {
    fn drop(&mut self) {
        let mut watch = self.state.node_watch.lock();
        // Released under the lock, so two waiters leaving at once cannot both see the other.
        let mine = std::mem::take(&mut self.notify);
        // Ours and the map's: no other waiter left.
        if Arc::strong_count(&mine) <= 2 {
            watch.remove(&self.node);
        }
        drop(mine);
    }
}

/// The replicated state, plus the leader's broker it feeds.
pub struct ClusterState {
    acl: RwLock<AclTable>,
    store: Store,
    broker: Arc<EvalBroker>,
    /// Whether this server leads (its broker takes new evaluations). Held across each apply so
    /// a leadership change never loses or doubles an evaluation.
    leading: Mutex<bool>,
    /// The log index of the last command applied (0: none).
    applied: AtomicU64,
    /// Told the index after every apply, for blocking queries.
    changes: tokio::sync::watch::Sender<u64>,
    /// Per-node wakeups for clients' blocking allocation queries: an apply wakes the queries
    /// of the nodes whose allocations it changed, not every waiting client.
    node_watch: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl ClusterState {
    /// An empty state feeding `broker` while leading; secrets are indexed with `acl_key`
    /// (random per process).
    pub fn new(broker: Arc<EvalBroker>, acl_key: [u8; 32]) -> ClusterState {
        ClusterState {
            acl: RwLock::new(AclTable::new(acl_key)),
            store: Store::default(),
            broker,
            leading: Mutex::new(false),
            applied: AtomicU64::new(0),
            changes: tokio::sync::watch::channel(0).0,
            node_watch: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// What wakes the blocking allocation queries of `node`: shared by its waiters, dropped
    /// with the last of them (so the map holds only nodes someone waits for).
    pub fn node_changes(&self, node: &str) -> NodeChanges<'_> {
        let notify = self
            .node_watch
            .lock()
            .entry(node.to_string())
            .or_default()
            .clone();
        NodeChanges {
            state: self,
            node: node.to_string(),
            notify,
        }
    }

    /// Wakes the allocation queries of the nodes the last applies changed.
    fn wake_nodes(&self) {
        let watch = self.node_watch.lock();
        match self.store.take_touched_nodes() {
            crate::store::Touched::Nodes(nodes) => {
                for n in nodes {
                    if let Some(w) = watch.get(&n) {
                        w.notify_waiters();
                    }
                }
            }
            crate::store::Touched::All => watch.values().for_each(|w| w.notify_waiters()),
        }
    }

    /// The job store (reads).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The broker this server runs while leading.
    pub fn broker(&self) -> &Arc<EvalBroker> {
        &self.broker
    }

    /// Reads the ACL state.
    pub fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        read(self.acl.read().state())
    }

    /// Resolves a token to its permissions in O(1) ([`AclTable::resolve`]).
    pub fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        self.acl.read().resolve(token)
    }

    /// The log index of the last command applied.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// A receiver told the applied index after every command.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Leadership changed: the broker is flushed and, on a new leader, refilled with every
    /// pending evaluation.
    pub fn set_leading(&self, leading: bool) {
        let mut on = self.leading.lock();
        *on = leading;
        self.broker.flush();
        if leading {
            for e in self.store.pending_evals() {
                self.broker.enqueue(broker_eval(&e));
            }
        }
    }

    /// Applies one encoded command at log `index`.
    pub fn apply_bytes(&self, index: u64, bytes: &[u8]) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = match command::decode::<Command>(bytes) {
            Err(e) => Outcome::Refused(format!("undecodable command: {e}")),
            Ok(c) if bytes.len() > MAX_COMMAND_BYTES && !matches!(c, Command::StateRestore(_)) => {
                Outcome::Refused(format!(
                    "command of {} bytes is over the limit",
                    bytes.len()
                ))
            }
            Ok(c) => self.apply_command(index, c),
        };
        if let Outcome::Refused(why) = &outcome {
            tracing::warn!(target: "cluster", index, reason = %why, "command refused");
        }
        metrics::histogram!("nomad.raft.fsm.apply")
            .record(started.elapsed().as_secs_f64() * 1000.0);
        outcome
    }

    /// Checks and applies one command at log `index`; a refusal changes nothing. The commands
    /// of a batch are applied in order at the same index, each answered on its own.
    pub fn apply_command(&self, index: u64, command: Command) -> Outcome {
        let last = self.applied_index();
        if index <= last {
            return Outcome::Refused(format!("stale command at index {index}: applied {last}"));
        }
        let outcome = match command {
            Command::Batch(commands) => self.apply_batch(index, commands),
            command => self.apply_one(index, command),
        };
        self.applied.store(index, Ordering::Release);
        self.changes.send_replace(index);
        self.wake_nodes();
        outcome
    }

    fn apply_batch(&self, index: u64, commands: Vec<Command>) -> Outcome {
        if commands.len() > MAX_BATCH {
            return Outcome::Refused(format!(
                "batch of {} commands; at most {MAX_BATCH}",
                commands.len()
            ));
        }
        let nested = |c: &Command| matches!(c, Command::Batch(_) | Command::StateRestore(_));
        if commands.iter().any(nested) {
            return Outcome::Refused("a batch may not hold batches or restores".into());
        }
        Outcome::Batch(
            commands
                .into_iter()
                .map(|c| self.apply_one(index, c))
                .collect(),
        )
    }

    fn apply_one(&self, index: u64, command: Command) -> Outcome {
        let on = self.leading.lock();
        let enqueue = |evals: &[Evaluation]| {
            if *on {
                for e in evals {
                    self.broker.enqueue(broker_eval(e));
                }
            }
        };
        match self.check(&command) {
            Err(why) => Outcome::Refused(why),
            Ok(()) => self.run(index, command, &enqueue),
        }
    }

    /// The checks `Store` does not make itself: shapes and sizes of what a command carries.
    fn check(&self, command: &Command) -> Result<(), String> {
        let id = |what: &str, id: &str| {
            if id.is_empty() || id.len() > MAX_ID_BYTES {
                Err(format!("{what}: ID must be 1 to {MAX_ID_BYTES} bytes"))
            } else {
                Ok(())
            }
        };
        match command {
            Command::Acl(_) => Ok(()), // AclState::apply checks every write
            Command::JobRegister { job, .. } => job.validate().map_err(|e| e.to_string()),
            Command::JobDeregister { id: job, .. } => id("job", job),
            Command::NodeUpsert { node, .. } | Command::NodeRegister { node, .. } => {
                node.validate().map_err(|e| e.to_string())
            }
            Command::NodeStatus { change, .. } => id("node", &change.node_id),
            Command::AllocClientUpdate { node_id, .. } => id("node", node_id),
            Command::EvalProcess { eval_id, .. } | Command::EvalFail { eval_id } => {
                if self.store.has_eval(eval_id) {
                    Ok(())
                } else {
                    Err(format!("evaluation {eval_id:?} not found"))
                }
            }
            Command::CoreEval { .. } => Ok(()),
            Command::Batch(_) => Err("a batch may not hold batches".into()),
            Command::StateRestore(snapshot) => snapshot
                .acl
                .validate()
                .map_err(|e| format!("bad snapshot: {e}")),
        }
    }

    fn run(&self, index: u64, command: Command, enqueue: &dyn Fn(&[Evaluation])) -> Outcome {
        let s = &self.store;
        match command {
            Command::Batch(_) => Outcome::Refused("a batch may not hold batches".into()),
            Command::Acl(write) => match self.acl.write().apply(index, &write) {
                Ok(token) => Outcome::Acl(token),
                Err(e) => Outcome::Refused(e.to_string()),
            },
            Command::JobRegister { job, seed } => {
                s.reseed(seed, index);
                let w = s.register(index, job);
                enqueue(std::slice::from_ref(&w.eval));
                Outcome::Job(Some(w))
            }
            Command::JobDeregister { id, seed } => {
                s.reseed(seed, index);
                let w = s.deregister(index, &id);
                if let Some(w) = &w {
                    enqueue(std::slice::from_ref(&w.eval));
                }
                Outcome::Job(w)
            }
            Command::NodeUpsert { node, seed } => {
                s.reseed(seed, index);
                enqueue(&s.upsert_node(index, node));
                Outcome::Applied
            }
            Command::NodeRegister { node, seed } => {
                s.reseed(seed, index);
                match s.register_node(index, node) {
                    Ok(evals) => {
                        enqueue(&evals);
                        Outcome::Applied
                    }
                    Err(e) => Outcome::Refused(e),
                }
            }
            Command::NodeStatus { change, seed } => {
                s.reseed(seed, index);
                match s.update_node_status(index, &change) {
                    Ok(evals) => {
                        enqueue(&evals);
                        Outcome::Applied
                    }
                    Err(e) => Outcome::Refused(e),
                }
            }
            Command::AllocClientUpdate {
                node_id,
                secret_id,
                updates,
            } => match s.update_allocs(index, &node_id, &secret_id, &updates) {
                Ok(()) => Outcome::Applied,
                Err(e) => Outcome::Refused(e),
            },
            Command::EvalProcess {
                eval_id,
                gc_threshold_secs,
                now_secs,
                seed,
            } => {
                s.reseed(seed, index);
                match s.process(index, &eval_id, gc_threshold_secs, now_secs) {
                    Ok(unblocked) => {
                        enqueue(&unblocked);
                        Outcome::Applied
                    }
                    Err(e) => Outcome::Refused(e),
                }
            }
            Command::EvalFail { eval_id } => {
                s.fail(index, &eval_id);
                Outcome::Applied
            }
            Command::CoreEval { seed } => {
                s.reseed(seed, index);
                enqueue(&[s.core_eval(index)]);
                Outcome::Applied
            }
            Command::StateRestore(mut snapshot) => {
                // A snapshot from a longer log (a backup restored into a rebuilt cluster) is
                // brought back to this entry's index, so the next write is newer than all of it.
                clamp_acl(&mut snapshot.acl, index);
                snapshot.tables.clamp_indexes(index);
                match self.restore_state(*snapshot) {
                    Ok(()) => {
                        self.broker.flush();
                        enqueue(&s.pending_evals());
                        Outcome::Applied
                    }
                    Err(e) => Outcome::Refused(e),
                }
            }
        }
    }

    /// Installs a snapshot's ACL state and tables, both checked first (nothing changes if
    /// either is refused). The applied index is not moved back.
    fn restore_state(&self, snapshot: StateSnapshot) -> Result<(), String> {
        let mut acl = self.acl.write();
        let mut next = acl.clone();
        next.restore(snapshot.acl)
            .map_err(|e| format!("bad snapshot: {e}"))?;
        self.store
            .import(snapshot.tables)
            .map_err(|e| format!("bad snapshot: {e}"))?;
        *acl = next;
        Ok(())
    }

    /// The whole state as one value.
    pub fn export(&self) -> StateSnapshot {
        let acl = self.acl.read();
        StateSnapshot {
            index: self.applied_index(),
            acl: acl.state().clone(),
            tables: self.store.export(),
        }
    }
}

impl StateMachine for ClusterState {
    fn apply(&self, index: u64, command: &[u8]) -> Result<Vec<u8>, String> {
        let outcome = self.apply_bytes(index, command);
        command::encode(&outcome).map_err(|e| e.to_string())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        command::encode(&self.export()).map_err(|e| e.to_string())
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let snap: StateSnapshot =
            command::decode(snapshot).map_err(|e| format!("bad snapshot: {e}"))?;
        let index = snap.index;
        self.restore_state(snap)?;
        self.applied.store(index, Ordering::Release);
        self.changes.send_replace(index);
        self.wake_nodes();
        let leading = *self.leading.lock();
        self.set_leading(leading);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use caravan_agent_core::acl::AclWrite;

    use super::*;

    fn state() -> ClusterState {
        ClusterState::new(Arc::new(EvalBroker::new(Default::default())), [2; 32])
    }

    fn policy(name: &str) -> Command {
        Command::Acl(AclWrite::PolicyUpsert {
            name: name.into(),
            description: String::new(),
            rules: r#"agent { policy = "read" }"#.into(),
        })
    }

    #[test]
    fn an_operator_restore_replaces_the_state_or_changes_nothing() {
        let source = state();
        assert_eq!(source.apply_command(1, policy("a")), Outcome::Acl(None));
        assert_eq!(
            source.apply_command(2, Command::CoreEval { seed: 1 }),
            Outcome::Applied
        );
        let snapshot = source.export();

        let target = state();
        assert_eq!(target.apply_command(5, policy("b")), Outcome::Acl(None));
        let restore = Command::StateRestore(Box::new(snapshot.clone()));
        assert_eq!(target.apply_command(6, restore), Outcome::Applied);
        let now = target.export();
        assert_eq!(
            (&now.acl, &now.tables, now.index),
            (&snapshot.acl, &snapshot.tables, 6)
        );

        // A snapshot that would be refused piece by piece is refused whole.
        let mut bad = snapshot.clone();
        if let Some(p) = bad.acl.policies.get_mut("a") {
            p.rules = "agent { policy = \"nope\" }".into();
        }
        let before = target.export();
        let outcome = target.apply_command(7, Command::StateRestore(Box::new(bad)));
        assert!(
            matches!(outcome, Outcome::Refused(ref w) if w.contains("bad snapshot")),
            "{outcome:?}"
        );
        let after = target.export();
        assert_eq!((&after.acl, &after.tables), (&before.acl, &before.tables));
        // A snapshot from a longer log is brought back to the restoring entry's index, so the
        // next write is newer than everything in it.
        let early = state();
        let restore = Command::StateRestore(Box::new(snapshot));
        assert_eq!(early.apply_command(1, restore), Outcome::Applied);
        let restored = early.export();
        assert_eq!(restored.acl.index, 1);
        assert_eq!(restored.acl.policies["a"].modify_index, 1);
        assert!(restored.tables.max_index() <= 1);
        assert_eq!(early.apply_command(2, policy("c")), Outcome::Acl(None));
    }

    #[test]
    fn a_nodes_wakeup_lives_only_while_someone_waits() {
        let s = state();
        let a = s.node_changes("n1");
        let b = s.node_changes("n1");
        let c = s.node_changes("n2");
        assert_eq!(s.node_watch.lock().len(), 2);
        drop(a);
        assert_eq!(s.node_watch.lock().len(), 2, "b still waits on n1");
        drop((b, c));
        assert!(s.node_watch.lock().is_empty());
    }

    /// The same seed proposed twice (a retried write, or a forged one) never reuses an ID.
    #[test]
    fn a_repeated_seed_draws_new_ids() {
        let s = state();
        let node = caravan_agent_core::jobs::Node {
            id: "n".into(),
            name: "n".into(),
            datacenter: "dc1".into(),
            node_class: String::new(),
            meta: Default::default(),
            cpu: 1000,
            memory_mb: 1000,
            status: "ready".into(),
            down_since: None,
            secret_id: String::new(),
            attributes: Default::default(),
            create_index: 0,
            modify_index: 0,
        };
        s.apply_command(1, Command::NodeUpsert { node, seed: 7 });
        let job = caravan_agent_core::jobs::Job::from_submission(
            caravan_agent_core::jobs::JobSubmission {
                id: Some("web".into()),
                datacenters: Some(vec!["dc1".into()]),
                groups: Some(vec![caravan_agent_core::jobs::GroupSubmission {
                    name: Some("g".into()),
                    count: Some(1),
                    tasks: Some(vec![caravan_agent_core::jobs::TaskSubmission {
                        name: Some("t".into()),
                        driver: Some("docker".into()),
                        ..Default::default()
                    }]),
                }]),
                ..Default::default()
            },
        )
        .expect("job");
        let register = Command::JobRegister { job, seed: 7 };
        let ids: Vec<String> = (2..4)
            .map(|i| match s.apply_command(i, register.clone()) {
                Outcome::Job(Some(w)) => w.eval.id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_ne!(ids[0], ids[1]);
        let evals = s.export().tables;
        let store = Store::default();
        store.import(evals).expect("import");
        for id in &ids {
            assert!(store.has_eval(id), "evaluation {id} was overwritten");
        }
    }
}
