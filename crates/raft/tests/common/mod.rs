//! What the raft crate's integration tests share: a state machine that records commands.

use caravan_raft::StateMachine;
use parking_lot::Mutex;

/// Every command applied, in order.
#[derive(Default)]
pub struct Log(pub Mutex<Vec<String>>);

impl StateMachine for Log {
    fn apply(&self, _index: u64, command: &str) -> String {
        let mut l = self.0.lock();
        l.push(command.to_string());
        l.len().to_string()
    }
    fn snapshot(&self) -> String {
        serde_json::to_string(&*self.0.lock()).unwrap()
    }
    fn restore(&self, snapshot: &str) -> Result<(), String> {
        *self.0.lock() = serde_json::from_str(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}
