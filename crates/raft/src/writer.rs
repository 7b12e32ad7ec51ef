//! The log writer: one OS thread (`raft-log-writer`) that owns the redb file and does every
//! durable write, so no fsync ever runs on a tokio worker.
//!
//! Writes are queued on a channel in the order openraft issues them and return at once. The
//! thread takes everything queued, writes it in one redb transaction, commits it (one fsync) and
//! only then reports each write done, in order: an append's [`LogFlushed`] callback, or the
//! oneshot a vote, truncation, purge or snapshot save is awaited on. Nothing is reported done
//! before its commit has returned. Once a commit fails, every later write fails with the same
//! error (openraft stops the node on the first one).

use std::path::PathBuf;
use std::sync::mpsc;

use openraft::storage::LogFlushed;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::TypeConfig;
use crate::disk::{Disk, Loaded, Write};

/// The most writes committed in one transaction; more stay queued for the next one.
const MAX_BATCH: usize = 4096;

/// Whom to tell that a write is durable (or failed).
pub(crate) enum Done {
    /// openraft's callback for an append.
    Flushed(LogFlushed<TypeConfig>),
    /// Someone awaiting the write.
    Reply(oneshot::Sender<Result<(), String>>),
    /// Nobody (the committed log ID, which openraft does not need durable).
    Nothing,
}

impl Done {
    /// Reports the outcome.
    pub fn complete(self, result: Result<(), String>) {
        match self {
            Done::Flushed(callback) => {
                callback.log_io_completed(result.map_err(std::io::Error::other));
            }
            Done::Reply(tx) => {
                let _ = tx.send(result);
            }
            Done::Nothing => {}
        }
    }
}

enum Job {
    Write(Write, Done),
    /// Drop the database (closing the file) and answer.
    Close(oneshot::Sender<()>),
}

/// The handle to the writer thread.
pub(crate) struct Writer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// Test hook: held by a test, it keeps the thread from writing the batch it has taken.
    #[cfg(test)]
    pub gate: std::sync::Arc<Mutex<()>>,
}

/// Why a write could not be queued.
const STOPPED: &str = "raft store: the log writer thread has stopped";

impl Writer {
    /// Starts the thread, which opens (or creates) `dir/raft.db` and reads it back.
    pub async fn start(dir: PathBuf) -> Result<(Writer, Loaded), String> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (opened_tx, opened_rx) = oneshot::channel::<Result<Loaded, String>>();
        #[cfg(test)]
        let gate = std::sync::Arc::new(Mutex::new(()));
        #[cfg(test)]
        let thread_gate = gate.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || {
                let disk = match Disk::open(&dir).and_then(|d| d.load().map(|l| (d, l))) {
                    Ok((disk, loaded)) => {
                        if opened_tx.send(Ok(loaded)).is_err() {
                            return;
                        }
                        disk
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                #[cfg(test)]
                run(disk, rx, &thread_gate);
                #[cfg(not(test))]
                run(disk, rx);
            })
            .map_err(|e| format!("raft store: starting the log writer thread: {e}"))?;
        let loaded = opened_rx.await.map_err(|_| STOPPED.to_string())??;
        Ok((
            Writer {
                tx: Mutex::new(Some(tx)),
                #[cfg(test)]
                gate,
            },
            loaded,
        ))
    }

    /// Queues a write; `done` is told once it is durable. Returns at once. If the thread has
    /// stopped, `done` is dropped untold and the error returned.
    pub fn submit(&self, write: Write, done: Done) -> Result<(), String> {
        let tx = self.tx.lock();
        let Some(tx) = tx.as_ref() else {
            return Err(STOPPED.to_string());
        };
        tx.send(Job::Write(write, done))
            .map_err(|_| STOPPED.to_string())
    }

    /// Queues a write and waits until it is durable.
    pub async fn write(&self, write: Write) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.submit(write, Done::Reply(tx))?;
        rx.await.map_err(|_| STOPPED.to_string())?
    }

    /// Lets what is queued be written, then closes the file. Later writes fail.
    pub async fn close(&self) {
        let Some(tx) = self.tx.lock().take() else {
            return;
        };
        let (done_tx, done_rx) = oneshot::channel();
        if tx.send(Job::Close(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// The thread's loop: batch, write, commit, report; until closed or every sender is gone.
fn run(disk: Disk, rx: mpsc::Receiver<Job>, #[cfg(test)] gate: &Mutex<()>) {
    let mut failed: Option<String> = None;
    let mut close = None;
    // Whether the last commit was one without fsync (only a committed log ID).
    let mut unsynced = false;
    while close.is_none() {
        let Ok(first) = rx.recv() else { break };
        let mut writes = Vec::new();
        let mut dones = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(w, d) => {
                    writes.push(w);
                    dones.push(d);
                }
                Job::Close(reply) => {
                    close = Some(reply);
                    break;
                }
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        #[cfg(test)]
        drop(gate.lock());
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None if writes.is_empty() => Ok(()),
            None => {
                let batch: Vec<&Write> = writes.iter().collect();
                unsynced = writes.iter().all(|w| matches!(w, Write::Committed(_)));
                disk.write(&batch)
            }
        };
        if let (Err(e), None) = (&result, &failed) {
            tracing::error!(target: "raft", error = %e, "raft log write failed; the node stops");
            failed = Some(e.clone());
        }
        drop(writes);
        for done in dones {
            done.complete(result.clone());
        }
    }
    if unsynced
        && failed.is_none()
        && let Err(e) = disk.sync()
    {
        tracing::warn!(target: "raft", error = %e, "raft log: final sync failed");
    }
    drop(disk);
    if let Some(reply) = close {
        let _ = reply.send(());
    }
}
