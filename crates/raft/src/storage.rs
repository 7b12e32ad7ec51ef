//! openraft's storage, v2 API: [`LogStore`] (`RaftLogStorage`: the log, vote, committed and
//! purged log IDs) and [`SmStore`] (`RaftStateMachine`: the application's [`StateMachine`] and
//! its snapshot), two handles on one [`Storage`].
//!
//! Everything is kept in memory (reads never touch the disk); a durable node also hands every
//! change to the log [`Writer`] thread, in openraft's order, and tells openraft it is done only
//! once the writer has committed it. The state machine is applied under the same lock that
//! snapshots are taken under, so a snapshot is exactly the state at its `last_log_id`; a snapshot
//! is queued for the disk under that lock too, so the file keeps snapshots in the order memory
//! does.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{
    LogFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot,
};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::disk::{Write, encode};
use crate::limits::Bounds;
use crate::writer::{Done, Writer};
use crate::{BasicNode, NodeId, StateMachine, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// A snapshot as kept in memory.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Arc<Vec<u8>>,
}

/// The log half.
#[derive(Default)]
struct LogInner {
    log: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

/// The state machine half.
#[derive(Default)]
struct SmInner {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
}

/// The log store and state machine of one Raft node. Locks are taken log first, then state
/// machine, never the other way.
pub(crate) struct Storage {
    log: Mutex<LogInner>,
    sm: Mutex<SmInner>,
    machine: Arc<dyn StateMachine>,
    /// `None` in memory.
    writer: Option<Writer>,
    /// The applied index, sent after each apply batch and snapshot install.
    applied: watch::Sender<u64>,
}

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e)
}

impl Storage {
    /// Opens the storage; with a directory, starts the log writer on `dir/raft.db`, loads the
    /// log, vote and snapshot and restores the state machine from the snapshot (openraft
    /// re-applies the committed log after it).
    pub(crate) async fn open(
        dir: Option<&Path>,
        machine: Arc<dyn StateMachine>,
    ) -> Result<Storage, String> {
        let mut log = LogInner::default();
        let mut sm = SmInner::default();
        let writer = match dir {
            None => None,
            Some(dir) => {
                let (writer, loaded) = Writer::start(dir.to_path_buf()).await?;
                log.log = loaded.log;
                log.vote = loaded.vote;
                log.committed = loaded.committed;
                log.purged = loaded.purged;
                if let Some((meta, data)) = loaded.snapshot {
                    machine
                        .restore(&data)
                        .map_err(|e| format!("raft store: restoring the snapshot: {e}"))?;
                    sm.last_applied = meta.last_log_id;
                    sm.membership = meta.last_membership.clone();
                    sm.snapshot = Some(StoredSnapshot {
                        meta,
                        data: Arc::new(data),
                    });
                }
                Some(writer)
            }
        };
        let (applied, _) = watch::channel(sm.last_applied.map_or(0, |l| l.index));
        Ok(Storage {
            log: Mutex::new(log),
            sm: Mutex::new(sm),
            machine,
            writer,
            applied,
        })
    }

    /// The applied index (0 before anything is applied).
    pub(crate) fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A receiver of the applied index.
    pub(crate) fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The index and term of the last snapshot.
    pub(crate) fn snapshot_log_id(&self) -> Option<LogId<NodeId>> {
        self.sm
            .lock()
            .snapshot
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
    }

    /// The term of the entry at `last_log_index` and the committed index.
    pub(crate) fn log_facts(&self, last_log_index: Option<u64>) -> (u64, u64) {
        let inner = self.log.lock();
        let term = last_log_index
            .and_then(|i| inner.log.get(&i).map(|e| e.log_id.leader_id.term))
            .or(inner.purged.map(|p| p.leader_id.term))
            .unwrap_or(0);
        (term, inner.committed.map_or(0, |c| c.index))
    }

    /// The durable term and the last log index a peer's request is measured against.
    pub(crate) fn bounds(&self) -> Bounds {
        let log = self.log.lock();
        let sm = self.sm.lock();
        let term = log.vote.map_or(0, |v| v.leader_id.term);
        let last_index = [
            log.log.keys().next_back().copied(),
            log.purged.map(|l| l.index),
            log.committed.map(|l| l.index),
            sm.last_applied.map(|l| l.index),
            sm.snapshot
                .as_ref()
                .and_then(|s| s.meta.last_log_id.map(|l| l.index)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        // The newest log ID known committed here (applied and snapshot points are committed).
        let committed = [
            log.committed,
            sm.last_applied,
            sm.snapshot.as_ref().and_then(|s| s.meta.last_log_id),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|l| l.index);
        Bounds {
            term,
            last_index,
            committed,
        }
    }

    /// Writes through the log writer and waits until it is durable; nothing in memory.
    async fn durable(&self, write: impl FnOnce() -> Result<Write, String>) -> Result<(), String> {
        match &self.writer {
            None => Ok(()),
            Some(w) => w.write(write()?).await,
        }
    }

    /// Appends entries: in memory at once, on disk through the writer; `done` is told when
    /// they are durable (at once in memory).
    pub(crate) fn append(&self, entries: Vec<Entry<TypeConfig>>, done: Done) -> Result<(), String> {
        let encoded = match &self.writer {
            None => None,
            Some(_) => {
                let mut encoded = Vec::with_capacity(entries.len());
                for e in &entries {
                    encoded.push((e.log_id.index, encode("log entry", e)?));
                }
                Some(encoded)
            }
        };
        {
            let mut inner = self.log.lock();
            for e in entries {
                inner.log.insert(e.log_id.index, e);
            }
        }
        match (&self.writer, encoded) {
            (Some(w), Some(encoded)) => w.submit(Write::Append(encoded), done),
            _ => {
                done.complete(Ok(()));
                Ok(())
            }
        }
    }

    /// Lets queued writes finish and closes the file; later writes fail.
    pub(crate) async fn close(&self) {
        if let Some(w) = &self.writer {
            w.close().await;
        }
    }

    #[cfg(test)]
    pub(crate) fn writer(&self) -> Option<&Writer> {
        self.writer.as_ref()
    }
}

/// openraft's log store: a handle on the [`Storage`].
#[derive(Clone)]
pub(crate) struct LogStore(pub Arc<Storage>);

/// openraft's state machine: a handle on the [`Storage`].
#[derive(Clone)]
pub(crate) struct SmStore(pub Arc<Storage>);

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.0.log.lock();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.0.log.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last.or(inner.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.0
            .durable(|| Ok(Write::Vote(encode("vote", vote)?)))
            .await
            .map_err(|e| StorageIOError::write_vote(io_err(e)))?;
        self.0.log.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.0.log.lock().vote)
    }

    /// Queued, not awaited: openraft does not need the committed log ID durable (a node that
    /// restarts with an older one re-applies less and learns the rest from the leader), and
    /// the writer orders it after the entries it covers.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.0.log.lock().committed = committed;
        if let Some(w) = &self.0.writer {
            let bytes =
                encode("committed", &committed).map_err(|e| StorageIOError::write(io_err(e)))?;
            w.submit(Write::Committed(bytes), Done::Nothing)
                .map_err(|e| StorageIOError::write(io_err(e)))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.0.log.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.0
            .append(entries.into_iter().collect(), Done::Flushed(callback))
            .map_err(|e| StorageIOError::write_logs(io_err(e)).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.0
            .durable(|| Ok(Write::Truncate(log_id.index)))
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        self.0.log.lock().log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.0
            .durable(|| {
                Ok(Write::Purge {
                    upto: log_id.index,
                    log_id: encode("purged", &log_id)?,
                })
            })
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        let mut inner = self.0.log.lock();
        inner.purged = Some(log_id);
        // Everything up to and including `log_id.index` goes; at `u64::MAX` that is all.
        inner.log = match log_id.index.checked_add(1) {
            Some(first_kept) => inner.log.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        Ok(())
    }
}

impl SmStore {
    /// Queues a snapshot for the disk (call with the state machine lock held, so the file gets
    /// snapshots in the order memory does); the receiver says when it is durable.
    fn queue_snapshot(
        &self,
        stored: &StoredSnapshot,
    ) -> Result<Option<oneshot::Receiver<Result<(), String>>>, String> {
        let Some(w) = &self.0.writer else {
            return Ok(None);
        };
        let meta = encode("snapshot meta", &stored.meta)?;
        let (tx, rx) = oneshot::channel();
        w.submit(
            Write::Snapshot {
                meta,
                data: stored.data.clone(),
            },
            Done::Reply(tx),
        )?;
        Ok(Some(rx))
    }
}

async fn wait_durable(rx: Option<oneshot::Receiver<Result<(), String>>>) -> Result<(), String> {
    match rx {
        None => Ok(()),
        Some(rx) => rx
            .await
            .map_err(|_| "raft store: the log writer thread has stopped".to_string())?,
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SmStore {
    /// Snapshots the state machine under the apply lock. A state machine that cannot snapshot is
    /// a storage error (openraft stops the node): never an empty snapshot.
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (stored, durable) = {
            let mut inner = self.0.sm.lock();
            let data = self.0.machine.snapshot().map_err(|e| {
                StorageIOError::read_state_machine(io_err(format!(
                    "the state machine could not snapshot: {e}"
                )))
            })?;
            inner.snapshot_seq = inner.snapshot_seq.saturating_add(1);
            let snapshot_id = match inner.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshot_seq),
                None => format!("--{}", inner.snapshot_seq),
            };
            let stored = StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: inner.last_applied,
                    last_membership: inner.membership.clone(),
                    snapshot_id,
                },
                data: Arc::new(data),
            };
            let durable = self.queue_snapshot(&stored).map_err(|e| {
                StorageIOError::write_snapshot(Some(stored.meta.signature()), io_err(e))
            })?;
            inner.snapshot = Some(stored.clone());
            (stored, durable)
        };
        wait_durable(durable).await.map_err(|e| {
            StorageIOError::write_snapshot(Some(stored.meta.signature()), io_err(e))
        })?;
        tracing::info!(target: "raft", index = ?stored.meta.last_log_id.map(|l| l.index), bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data.as_ref().clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SmStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.0.sm.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    /// Applies a batch under the lock, then publishes the applied index. A state machine
    /// error is a storage error: openraft stops the node.
    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<u8>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let result = {
            let mut inner = self.0.sm.lock();
            let mut result = Ok(());
            for entry in entries {
                match entry.payload {
                    EntryPayload::Blank => out.push(Vec::new()),
                    EntryPayload::Normal(command) => {
                        match self.0.machine.apply(entry.log_id.index, &command) {
                            Ok(response) => out.push(response),
                            Err(e) => {
                                result = Err(StorageIOError::apply(
                                    entry.log_id,
                                    io_err(format!("the state machine cannot go on: {e}")),
                                ));
                                break;
                            }
                        }
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), m);
                        out.push(Vec::new());
                    }
                }
                inner.last_applied = Some(entry.log_id);
            }
            let applied = inner.last_applied.map_or(0, |l| l.index);
            self.0.applied.send_replace(applied);
            result
        };
        result?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Restores the state machine from a snapshot a leader sent; one it cannot restore is a
    /// storage error.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(snapshot.into_inner()),
        };
        let durable = {
            let mut inner = self.0.sm.lock();
            self.0.machine.restore(&stored.data).map_err(|e| {
                StorageIOError::read_snapshot(
                    Some(meta.signature()),
                    io_err(format!("the state machine could not restore it: {e}")),
                )
            })?;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            let durable = self
                .queue_snapshot(&stored)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), io_err(e)))?;
            inner.snapshot = Some(stored);
            self.0
                .applied
                .send_replace(meta.last_log_id.map_or(0, |l| l.index));
            durable
        };
        wait_durable(durable)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), io_err(e)))?;
        tracing::info!(target: "raft", index = ?meta.last_log_id.map(|l| l.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.0.sm.lock();
        Ok(inner.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.as_ref().clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, LogId};

    use super::*;

    /// Applies anything but `fail`, restores only `good`, and cannot snapshot.
    struct Picky;

    impl StateMachine for Picky {
        fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, String> {
            if command == b"fail" {
                return Err("broken".into());
            }
            Ok(command.to_vec())
        }
        fn snapshot(&self) -> Result<Vec<u8>, String> {
            Err("no room to write it".into())
        }
        fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
            if snapshot == b"good" {
                Ok(())
            } else {
                Err("garbage".into())
            }
        }
    }

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn entry(index: u64, command: &[u8]) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(command.to_vec()),
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "caravan-raft-storage-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    /// L2: purging up to the last possible index used to compute `index + 1` (a panic in debug
    /// builds, a wrap to 0 that kept the whole log in release ones).
    #[tokio::test]
    async fn purge_up_to_the_last_index_empties_the_log() {
        let s = Arc::new(Storage::open(None, Arc::new(Picky)).await.unwrap());
        s.append(
            vec![
                Entry {
                    log_id: log_id(1),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(2),
                    payload: EntryPayload::Blank,
                },
            ],
            Done::Nothing,
        )
        .unwrap();
        LogStore(s.clone()).purge(log_id(u64::MAX)).await.unwrap();
        assert!(s.log.lock().log.is_empty());
        assert_eq!(s.bounds().last_index, u64::MAX);
    }

    /// A state machine that cannot snapshot, apply or restore makes the storage call fail: no
    /// empty snapshot is kept or handed out, and nothing counts as applied that was not.
    #[tokio::test]
    async fn state_machine_failures_are_storage_errors_never_empty_results() {
        let s = Arc::new(Storage::open(None, Arc::new(Picky)).await.unwrap());
        let mut sm = SmStore(s.clone());
        assert_eq!(
            sm.apply(vec![entry(1, b"a")]).await.unwrap(),
            vec![b"a".to_vec()]
        );
        let e = sm.build_snapshot().await.err().unwrap();
        assert!(e.to_string().contains("no room to write it"), "{e}");
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        assert!(s.snapshot_log_id().is_none());
        // A command the state machine cannot go on after: an error, applied stays before it.
        let e = sm
            .apply(vec![entry(2, b"b"), entry(3, b"fail"), entry(4, b"c")])
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("broken"), "{e}");
        assert_eq!(s.applied_index(), 2);
        // A snapshot that does not restore: an error, nothing installed.
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(9)),
            last_membership: StoredMembership::default(),
            snapshot_id: "x".into(),
        };
        let e = sm
            .install_snapshot(&meta, Box::new(Cursor::new(b"junk".to_vec())))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("garbage"), "{e}");
        assert_eq!(s.applied_index(), 2);
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        sm.install_snapshot(&meta, Box::new(Cursor::new(b"good".to_vec())))
            .await
            .unwrap();
        assert_eq!(s.applied_index(), 9);
    }

    /// An append is readable at once but reported done only after the writer has committed it;
    /// a vote queued behind it waits too; both are there after a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock)] // the gate holds up the writer thread, not a task
    async fn an_append_is_reported_only_once_committed() {
        let dir = scratch("commit");
        let s = Arc::new(Storage::open(Some(&dir), Arc::new(Picky)).await.unwrap());
        let gate = s.writer().unwrap().gate.clone();
        let held = gate.lock();
        let (tx, mut appended) = oneshot::channel();
        s.append(vec![entry(1, b"a"), entry(2, b"b")], Done::Reply(tx))
            .unwrap();
        let read = LogStore(s.clone()).try_get_log_entries(1..3).await.unwrap();
        assert_eq!(read.len(), 2);
        let vote = Vote::new_committed(3, 1);
        let mut log = LogStore(s.clone());
        let voted = tokio::spawn(async move { log.save_vote(&vote).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            matches!(
                appended.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ),
            "reported done before the writer committed it"
        );
        assert!(!voted.is_finished(), "the vote was done before the write");
        drop(held);
        let done = tokio::time::timeout(Duration::from_secs(5), appended).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        let voted = tokio::time::timeout(Duration::from_secs(5), voted).await;
        assert!(matches!(voted, Ok(Ok(Ok(())))), "{voted:?}");
        s.close().await;
        drop(s);
        let s = Storage::open(Some(&dir), Arc::new(Picky)).await.unwrap();
        assert_eq!(s.log.lock().log.len(), 2);
        assert_eq!(s.log.lock().vote, Some(vote));
        // After close, writes fail with an error instead of hanging or panicking.
        s.close().await;
        let e = LogStore(Arc::new(s)).save_vote(&vote).await.err().unwrap();
        assert!(e.to_string().contains("stopped"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
