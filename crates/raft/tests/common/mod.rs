//! What the raft crate's integration tests share: a state machine that records commands.

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
