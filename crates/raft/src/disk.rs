//! The durable half of the storage: one redb database file holding the log (index → entry) and
//! a small meta table (format, vote, committed, purged, snapshot meta and snapshot bytes), all in
//! [`crate::codec`]'s compact binary format (postcard); the snapshot's bytes are stored raw.
//!
//! Only the log writer thread ([`crate::writer`]) touches a [`Disk`] after start: it hands it a
//! batch of [`Write`]s, which go into one redb transaction committed with a single fsync.
//!
//! The file holds every replicated command, secrets included, so it is private to the agent's
//! user: the directory (and any parent this creates) is mode 0700, `raft.db` 0600, set again at
//! every start in case they were made wider.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::{Entry, LogId, SnapshotMeta, Vote};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::{BasicNode, NodeId, TypeConfig, codec};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The meta key naming the file's format, and the format this crate writes.
const FORMAT_KEY: &str = "format";
const FORMAT: &[u8] = b"caravan-raft/postcard/1";

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

/// Everything read back at start.
#[derive(Default)]
pub(crate) struct Loaded {
    pub log: BTreeMap<u64, Entry<TypeConfig>>,
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub purged: Option<LogId<NodeId>>,
    pub snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
}

/// One write, already encoded by the caller (so the writer thread only does I/O).
pub(crate) enum Write {
    /// Entries to insert (or overwrite), by index.
    Append(Vec<(u64, Vec<u8>)>),
    /// The encoded vote.
    Vote(Vec<u8>),
    /// The encoded committed log ID. The only write that needs no fsync of its own: openraft
    /// does not require it to be durable, and the next durable commit carries it.
    Committed(Vec<u8>),
    /// Removes entries at and after this index (a conflict).
    Truncate(u64),
    /// Removes entries up to and including `upto`, remembering the encoded log ID as purged.
    Purge { upto: u64, log_id: Vec<u8> },
    /// The encoded snapshot meta and the snapshot's bytes.
    Snapshot { meta: Vec<u8>, data: Arc<Vec<u8>> },
}

/// Encodes a value for the store.
pub(crate) fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>, String> {
    codec::encode(value).map_err(|e| format!("raft store: encoding {what}: {e}"))
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
    /// The file's path, for error messages.
    path: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("raft store: {what}: {e}")
}

impl Disk {
    /// Opens (or creates) `dir/raft.db`, private to this user. A file written in another
    /// format (an older Caravan's JSON) is refused, naming it.
    pub fn open(dir: &Path) -> Result<Disk, String> {
        let path = dir.join("raft.db");
        private(dir, &path)?;
        let shown = path.display().to_string();
        let db = Database::create(&path).map_err(|e| err(&shown, e))?;
        let disk = Disk { db, path: shown };
        let tx = disk.db.begin_write().map_err(|e| disk.err("begin", e))?;
        {
            let log = tx.open_table(LOG).map_err(|e| disk.err("open log", e))?;
            let mut meta = tx.open_table(META).map_err(|e| disk.err("open meta", e))?;
            let format = meta
                .get(FORMAT_KEY)
                .map_err(|e| disk.err("read format", e))?
                .map(|v| v.value().to_vec());
            match format {
                Some(f) if f == FORMAT => {}
                Some(f) => {
                    return Err(disk.err(
                        "format",
                        format!(
                            "written in format {:?}, this build reads {:?}",
                            String::from_utf8_lossy(&f),
                            String::from_utf8_lossy(FORMAT)
                        ),
                    ));
                }
                None => {
                    let empty = log.is_empty().map_err(|e| disk.err("read log", e))?
                        && meta.is_empty().map_err(|e| disk.err("read meta", e))?;
                    if !empty {
                        return Err(disk.err(
                            "format",
                            "written by an older Caravan (JSON entries), which this build cannot read; move the file away to start this server afresh",
                        ));
                    }
                    meta.insert(FORMAT_KEY, FORMAT)
                        .map_err(|e| disk.err("write format", e))?;
                }
            }
        }
        tx.commit().map_err(|e| disk.err("commit", e))?;
        Ok(disk)
    }

    /// An error about this file.
    fn err(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("raft store {}: {what}: {e}", self.path)
    }

    /// Reads the whole store. A value that does not decode is an error naming the file and the
    /// value (the log index or the meta key).
    pub fn load(&self) -> Result<Loaded, String> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.err("begin read", e))?;
        let log_table = tx.open_table(LOG).map_err(|e| self.err("open log", e))?;
        let mut out = Loaded::default();
        for row in log_table.iter().map_err(|e| self.err("read log", e))? {
            let (k, v) = row.map_err(|e| self.err("read log", e))?;
            let index = k.value();
            let entry: Entry<TypeConfig> = codec::decode(v.value())
                .map_err(|e| self.err(&format!("log entry {index} does not decode"), e))?;
            if entry.log_id.index != index {
                return Err(self.err(
                    &format!("log entry {index}"),
                    format!("holds the entry of index {}", entry.log_id.index),
                ));
            }
            out.log.insert(index, entry);
        }
        let meta = tx.open_table(META).map_err(|e| self.err("open meta", e))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, String> {
            Ok(meta
                .get(key)
                .map_err(|e| self.err(key, e))?
                .map(|v| v.value().to_vec()))
        };
        fn decode<T: serde::de::DeserializeOwned>(
            disk: &Disk,
            key: &str,
            bytes: Option<Vec<u8>>,
        ) -> Result<Option<T>, String> {
            bytes
                .map(|b| {
                    codec::decode(&b).map_err(|e| disk.err(&format!("{key} does not decode"), e))
                })
                .transpose()
        }
        out.vote = decode(self, VOTE, get(VOTE)?)?;
        out.committed =
            decode::<Option<LogId<NodeId>>>(self, COMMITTED, get(COMMITTED)?)?.flatten();
        out.purged = decode(self, PURGED, get(PURGED)?)?;
        let snapshot_meta: Option<SnapshotMeta<NodeId, BasicNode>> =
            decode(self, SNAPSHOT_META, get(SNAPSHOT_META)?)?;
        if let Some(m) = snapshot_meta {
            let data = get(SNAPSHOT_DATA)?.ok_or_else(|| {
                self.err(
                    SNAPSHOT_DATA,
                    "missing, though the snapshot's meta is there",
                )
            })?;
            out.snapshot = Some((m, data));
        }
        Ok(out)
    }

    /// Commits an empty transaction with an fsync, making earlier non-durable commits durable.
    pub fn sync(&self) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        tx.commit().map_err(|e| self.err("commit", e))
    }

    /// Writes a batch in one transaction, in order, and commits it: with an fsync, unless every
    /// write is a [`Write::Committed`].
    pub fn write(&self, batch: &[&Write]) -> Result<(), String> {
        let mut tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        if batch.iter().all(|w| matches!(w, Write::Committed(_))) {
            tx.set_durability(Durability::None)
                .map_err(|e| self.err("durability", e))?;
        }
        let written = (|| -> Result<(), redb::Error> {
            let mut log = tx.open_table(LOG)?;
            let mut meta = tx.open_table(META)?;
            for w in batch {
                match w {
                    Write::Append(entries) => {
                        for (index, bytes) in entries {
                            log.insert(*index, bytes.as_slice())?;
                        }
                    }
                    Write::Vote(bytes) => {
                        meta.insert(VOTE, bytes.as_slice())?;
                    }
                    Write::Committed(bytes) => {
                        meta.insert(COMMITTED, bytes.as_slice())?;
                    }
                    Write::Truncate(from) => log.retain_in(*from.., |_, _| false)?,
                    Write::Purge { upto, log_id } => {
                        log.retain_in(..=*upto, |_, _| false)?;
                        meta.insert(PURGED, log_id.as_slice())?;
                    }
                    Write::Snapshot { meta: m, data } => {
                        meta.insert(SNAPSHOT_META, m.as_slice())?;
                        meta.insert(SNAPSHOT_DATA, data.as_slice())?;
                    }
                }
            }
            Ok(())
        })();
        written.map_err(|e| self.err("write", e))?;
        tx.commit().map_err(|e| self.err("commit", e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "caravan-raft-disk-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    fn entry(index: u64, command: &[u8]) -> (u64, Vec<u8>) {
        let e = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command.to_vec()),
        };
        (index, encode("entry", &e).unwrap())
    }

    /// A value that does not decode is an error naming the file and the value, not a panic.
    #[test]
    fn garbage_in_the_file_is_an_error_naming_it() {
        let dir = scratch("garbage");
        let disk = Disk::open(&dir).unwrap();
        disk.write(&[&Write::Append(vec![entry(1, b"ok")])])
            .unwrap();
        assert_eq!(disk.load().unwrap().log.len(), 1);
        disk.write(&[&Write::Append(vec![(2, vec![0xff; 7])])])
            .unwrap();
        let e = disk.load().err().unwrap();
        assert!(e.contains("raft.db") && e.contains("log entry 2"), "{e}");
        disk.write(&[&Write::Truncate(2), &Write::Vote(vec![0xff; 3])])
            .unwrap();
        let e = disk.load().err().unwrap();
        assert!(e.contains("raft.db") && e.contains("vote"), "{e}");
        drop(disk);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file of an older Caravan (JSON, no format key) is refused with a clear error.
    #[test]
    fn a_file_in_another_format_is_refused() {
        let dir = scratch("format");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = Database::create(dir.join("raft.db")).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert(
                    VOTE,
                    br#"{"leader_id":{"term":1,"node_id":1},"committed":true}"#.as_slice(),
                )
                .unwrap();
            tx.commit().unwrap();
        }
        let e = Disk::open(&dir).err().unwrap();
        assert!(e.contains("raft.db") && e.contains("older Caravan"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
