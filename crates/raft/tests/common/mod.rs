//! What the raft crate's integration tests share: a state machine that records commands, a
//! transport for single-node clusters, and scratch directories.
#![allow(dead_code)] // each test file uses a part

use caravan_raft::StateMachine;
use parking_lot::Mutex;

/// Every command applied, in order (tests send UTF-8 text).
#[derive(Default)]
pub struct Log(pub Mutex<Vec<String>>);

impl StateMachine for Log {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, String> {
        let command = String::from_utf8(command.to_vec()).map_err(|e| e.to_string())?;
        let mut l = self.0.lock();
        l.push(command);
        Ok(l.len().to_string().into_bytes())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&*self.0.lock()).map_err(|e| e.to_string())
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        *self.0.lock() = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A single-node cluster has no peers to call.
pub struct Nowhere;

impl caravan_raft::Transport for Nowhere {
    fn call(
        &self,
        _addr: &str,
        _method: &'static str,
        _body: Vec<u8>,
        _timeout: std::time::Duration,
    ) -> caravan_raft::BoxFuture<Result<Vec<u8>, String>> {
        Box::pin(async { Err("no peers".to_string()) })
    }
}

/// A fresh directory path under the system's temp dir (not created).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "caravan-raft-test-{name}-{}-{nanos}",
        std::process::id()
    ))
}
