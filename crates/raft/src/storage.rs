//! openraft's storage (v1 `RaftStorage`, wrapped by `Adaptor`): the log, the vote and the
//! snapshot in memory, written through to a [`Disk`] when the node is durable, and the
//! application's [`StateMachine`] applied under the same lock that snapshots read, so a snapshot
//! is always exactly the state at its `last_log_id`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftStorage, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::limits::Bounds;
use crate::{BasicNode, NodeId, StateMachine, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// A snapshot as kept in memory and on disk.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub data: String,
}

#[derive(Default)]
struct Inner {
    log: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
}

/// The log store and state machine of one Raft node.
pub struct Storage {
    inner: Mutex<Inner>,
    disk: Option<Disk>,
    sm: Arc<dyn StateMachine>,
}

impl Storage {
    /// Opens the storage; with a disk, loads the log, vote and snapshot and restores the state
    /// machine from the snapshot (openraft re-applies the committed log after it).
    pub(crate) fn open(disk: Option<Disk>, sm: Arc<dyn StateMachine>) -> Result<Storage, String> {
        let mut inner = Inner::default();
        if let Some(d) = &disk {
            let loaded = d.load()?;
            inner.log = loaded.log;
            inner.vote = loaded.vote;
            inner.committed = loaded.committed;
            inner.purged = loaded.purged;
            if let Some(s) = loaded.snapshot {
                sm.restore(&s.data)?;
                inner.last_applied = s.meta.last_log_id;
                inner.membership = s.meta.last_membership.clone();
                inner.snapshot = Some(s);
            }
        }
        Ok(Storage {
            inner: Mutex::new(inner),
            disk,
            sm,
        })
    }

    /// The applied index (0 before anything is applied).
    pub(crate) fn applied_index(&self) -> u64 {
        self.inner.lock().last_applied.map_or(0, |l| l.index)
    }

    /// The index and term of the last snapshot.
    pub(crate) fn snapshot_log_id(&self) -> Option<LogId<NodeId>> {
        self.inner
            .lock()
            .snapshot
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
    }

    /// The term of the entry at `last_log_index` and the committed index.
    pub(crate) fn log_facts(&self, last_log_index: Option<u64>) -> (u64, u64) {
        let inner = self.inner.lock();
        let term = last_log_index
            .and_then(|i| inner.log.get(&i).map(|e| e.log_id.leader_id.term))
            .or(inner.purged.map(|p| p.leader_id.term))
            .unwrap_or(0);
        (term, inner.committed.map_or(0, |c| c.index))
    }

    /// The durable term and the last log index a peer's request is measured against.
    pub(crate) fn bounds(&self) -> Bounds {
        let inner = self.inner.lock();
        let term = inner.vote.map_or(0, |v| v.leader_id.term);
        let last_index = [
            inner.log.keys().next_back().copied(),
            inner.purged.map(|l| l.index),
            inner.committed.map(|l| l.index),
            inner.last_applied.map(|l| l.index),
            inner
                .snapshot
                .as_ref()
                .and_then(|s| s.meta.last_log_id.map(|l| l.index)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        Bounds { term, last_index }
    }

    fn disk<T>(&self, f: impl FnOnce(&Disk) -> Result<T, String>) -> Result<Option<T>, String> {
        self.disk.as_ref().map(f).transpose()
    }
}

fn write_err(e: String) -> StorageError<NodeId> {
    StorageIOError::write(&std::io::Error::other(e)).into()
}

impl RaftLogReader<TypeConfig> for Arc<Storage> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Arc<Storage> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let stored = {
            let mut inner = self.inner.lock();
            inner.snapshot_seq = inner.snapshot_seq.saturating_add(1);
            let data = self.sm.snapshot();
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
                data,
            };
            inner.snapshot = Some(stored.clone());
            stored
        };
        self.disk(|d| d.save_snapshot(&stored)).map_err(write_err)?;
        tracing::info!(target: "raft", index = ?stored.meta.last_log_id.map(|l| l.index), bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data.into_bytes())),
        })
    }
}

impl RaftStorage<TypeConfig> for Arc<Storage> {
    type LogReader = Self;
    type SnapshotBuilder = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last.or(inner.purged),
        })
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.disk(|d| d.save_vote(vote)).map_err(write_err)?;
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.disk(|d| d.save_committed(committed))
            .map_err(write_err)?;
        self.inner.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().committed)
    }

    async fn last_applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.disk(|d| d.delete_from(log_id.index))
            .map_err(write_err)?;
        self.inner.lock().log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.disk(|d| d.purge_upto(log_id)).map_err(write_err)?;
        let mut inner = self.inner.lock();
        inner.purged = Some(log_id);
        // Everything up to and including `log_id.index` goes; at `u64::MAX` that is all.
        inner.log = match log_id.index.checked_add(1) {
            Some(first_kept) => inner.log.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        Ok(())
    }

    async fn append_to_log<I>(&mut self, entries: I) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        self.disk(|d| d.append(&entries)).map_err(write_err)?;
        let mut inner = self.inner.lock();
        for e in entries {
            inner.log.insert(e.log_id.index, e);
        }
        Ok(())
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> StorageResult<Vec<String>> {
        let mut inner = self.inner.lock();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => out.push(String::new()),
                EntryPayload::Normal(command) => {
                    out.push(self.sm.apply(entry.log_id.index, command));
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    out.push(String::new());
                }
            }
        }
        Ok(out)
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = String::from_utf8(snapshot.into_inner()).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        {
            let mut inner = self.inner.lock();
            self.sm.restore(&stored.data).map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(
                    Some(meta.signature()),
                    &std::io::Error::other(e),
                ))
            })?;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some(stored.clone());
        }
        self.disk(|d| d.save_snapshot(&stored)).map_err(write_err)?;
        tracing::info!(target: "raft", index = ?meta.last_log_id.map(|l| l.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone().into_bytes())),
        }))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};

    use super::*;

    struct Nothing;

    impl StateMachine for Nothing {
        fn apply(&self, _index: u64, _command: &str) -> String {
            String::new()
        }
        fn snapshot(&self) -> String {
            String::new()
        }
        fn restore(&self, _snapshot: &str) -> Result<(), String> {
            Ok(())
        }
    }

    /// L2: purging up to the last possible index used to compute `index + 1` (a panic in debug
    /// builds, a wrap to 0 that kept the whole log in release ones).
    #[tokio::test]
    async fn purge_up_to_the_last_index_empties_the_log() {
        let mut s = Arc::new(Storage::open(None, Arc::new(Nothing)).unwrap());
        let entry = |index| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        };
        s.append_to_log([entry(1), entry(2)]).await.unwrap();
        let last = LogId::new(CommittedLeaderId::new(1, 1), u64::MAX);
        s.purge_logs_upto(last).await.unwrap();
        assert!(s.inner.lock().log.is_empty());
        assert_eq!(s.bounds().last_index, u64::MAX);
    }
}
