//! The durable half of the storage: one redb database file holding the log (index → JSON entry)
//! and a small meta table (vote, committed, purged, snapshot). Every write is its own redb
//! transaction, committed with fsync before openraft is told it is done.
//!
//! The file holds every replicated command, secrets included, so it is private to the agent's
//! user: the directory (and any parent this creates) is mode 0700, `raft.db` 0600, set again at
//! every start in case they were made wider.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::{Entry, LogId, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::storage::StoredSnapshot;
use crate::{NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Everything read back at start.
#[derive(Default)]
pub(crate) struct Loaded {
    pub log: BTreeMap<u64, Entry<TypeConfig>>,
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub purged: Option<LogId<NodeId>>,
    pub snapshot: Option<StoredSnapshot>,
}

/// Mode 0700 for `dir` (and the parents it creates), 0600 for `file`, created empty if missing
/// (redb initializes an empty file); both are set even if they existed with wider modes.
#[cfg(unix)]
fn private(dir: &Path, file: &Path) -> Result<(), String> {
    use std::fs::{DirBuilder, OpenOptions, Permissions, set_permissions};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let show = |p: &Path| p.display().to_string();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(&show(dir), e))?;
    set_permissions(dir, Permissions::from_mode(0o700)).map_err(|e| err(&show(dir), e))?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| err(&show(file), e))?;
    set_permissions(file, Permissions::from_mode(0o600)).map_err(|e| err(&show(file), e))
}

/// Elsewhere the directory is only created.
#[cfg(not(unix))]
fn private(dir: &Path, _file: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| err(&dir.display().to_string(), e))
}

/// The redb-backed store.
pub(crate) struct Disk {
    db: Database,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("raft store: {what}: {e}")
}

impl Disk {
    /// Opens (or creates) `dir/raft.db`, private to this user.
    pub fn open(dir: &Path) -> Result<Disk, String> {
        let path = dir.join("raft.db");
        private(dir, &path)?;
        let db = Database::create(&path).map_err(|e| err(&path.display().to_string(), e))?;
        let tx = db.begin_write().map_err(|e| err("begin", e))?;
        tx.open_table(LOG).map_err(|e| err("open log", e))?;
        tx.open_table(META).map_err(|e| err("open meta", e))?;
        tx.commit().map_err(|e| err("commit", e))?;
        Ok(Disk { db })
    }

    /// Reads the whole store.
    pub fn load(&self) -> Result<Loaded, String> {
        let tx = self.db.begin_read().map_err(|e| err("begin read", e))?;
        let log_table = tx.open_table(LOG).map_err(|e| err("open log", e))?;
        let mut out = Loaded::default();
        for row in log_table.iter().map_err(|e| err("read log", e))? {
            let (k, v) = row.map_err(|e| err("read log", e))?;
            let entry: Entry<TypeConfig> =
                serde_json::from_slice(v.value()).map_err(|e| err("decode log entry", e))?;
            out.log.insert(k.value(), entry);
        }
        let meta = tx.open_table(META).map_err(|e| err("open meta", e))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, String> {
            Ok(meta
                .get(key)
                .map_err(|e| err(key, e))?
                .map(|v| v.value().to_vec()))
        };
        let decode = |key: &str| -> Result<Option<serde_json::Value>, String> {
            get(key)?
                .map(|b| serde_json::from_slice(&b).map_err(|e| err(key, e)))
                .transpose()
        };
        if let Some(v) = decode("vote")? {
            out.vote = serde_json::from_value(v).map_err(|e| err("vote", e))?;
        }
        if let Some(v) = decode("committed")? {
            out.committed = serde_json::from_value(v).map_err(|e| err("committed", e))?;
        }
        if let Some(v) = decode("purged")? {
            out.purged = serde_json::from_value(v).map_err(|e| err("purged", e))?;
        }
        if let Some(v) = decode("snapshot")? {
            out.snapshot = serde_json::from_value(v).map_err(|e| err("snapshot", e))?;
        }
        Ok(out)
    }

    fn write(
        &self,
        what: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(|e| err(what, e))?;
        f(&tx).map_err(|e| err(what, e))?;
        tx.commit().map_err(|e| err(what, e))
    }

    fn put_meta(&self, key: &str, value: &impl serde::Serialize) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| err(key, e))?;
        self.write(key, |tx| {
            tx.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Appends (or overwrites) entries.
    pub fn append(&self, entries: &[Entry<TypeConfig>]) -> Result<(), String> {
        let mut encoded = Vec::with_capacity(entries.len());
        for e in entries {
            encoded.push((
                e.log_id.index,
                serde_json::to_vec(e).map_err(|e| err("encode log entry", e))?,
            ));
        }
        self.write("append", |tx| {
            let mut t = tx.open_table(LOG)?;
            for (index, bytes) in &encoded {
                t.insert(*index, bytes.as_slice())?;
            }
            Ok(())
        })
    }

    /// Removes entries at and after `index` (a conflict).
    pub fn delete_from(&self, index: u64) -> Result<(), String> {
        self.write("truncate", |tx| {
            tx.open_table(LOG)?.retain_in(index.., |_, _| false)?;
            Ok(())
        })
    }

    /// Removes entries up to and including `log_id`, remembering it as purged.
    pub fn purge_upto(&self, log_id: LogId<NodeId>) -> Result<(), String> {
        let bytes = serde_json::to_vec(&log_id).map_err(|e| err("purged", e))?;
        self.write("purge", |tx| {
            tx.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            tx.open_table(META)?.insert("purged", bytes.as_slice())?;
            Ok(())
        })
    }

    /// Saves the vote.
    pub fn save_vote(&self, vote: &Vote<NodeId>) -> Result<(), String> {
        self.put_meta("vote", vote)
    }

    /// Saves the committed log id.
    pub fn save_committed(&self, committed: Option<LogId<NodeId>>) -> Result<(), String> {
        self.put_meta("committed", &committed)
    }

    /// Saves the current snapshot.
    pub fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), String> {
        self.put_meta("snapshot", snapshot)
    }
}
