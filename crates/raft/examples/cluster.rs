//! Three Raft nodes in one process sharing a key-value map: a write on a follower is forwarded to
//! the leader and read back on every node, each after a linearizable `read_index`. A real service would put its RPC client behind
//! `Transport` and call `RaftNode::handle` from its RPC server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use caravan_raft::{BoxFuture, RaftConfig, RaftNode, StateMachine, Transport};
use parking_lot::Mutex;

/// The replicated state: `key=value` commands.
#[derive(Default)]
struct Kv(Mutex<BTreeMap<String, String>>);

impl StateMachine for Kv {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, String> {
        // A command that is not `key=value` text is refused in the response, not an error: an
        // error would stop the node.
        let Ok(command) = std::str::from_utf8(command) else {
            return Ok(b"refused: not UTF-8".to_vec());
        };
        let (k, v) = command.split_once('=').unwrap_or((command, ""));
        let old = self.0.lock().insert(k.into(), v.into());
        Ok(old.unwrap_or_default().into_bytes())
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&*self.0.lock()).map_err(|e| e.to_string())
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        *self.0.lock() = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Delivers calls to the node registered under an address.
#[derive(Default, Clone)]
struct Router(Arc<Mutex<HashMap<String, Arc<RaftNode>>>>);

impl Transport for Router {
    fn call(
        &self,
        addr: &str,
        method: &'static str,
        body: Vec<u8>,
        _t: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>> {
        let node = self.0.lock().get(addr).cloned();
        Box::pin(async move {
            let node = node.ok_or("unreachable")?;
            node.handle(method, &body).await.map_err(|e| e.to_string())
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::default();
    let mut nodes = Vec::new();
    let mut maps = Vec::new();
    for id in 1..=3u64 {
        let kv = Arc::new(Kv::default());
        let node = RaftNode::start(
            RaftConfig::new(id, format!("n{id}")),
            kv.clone(),
            Arc::new(router.clone()),
        )
        .await?;
        let node = Arc::new(node);
        router.0.lock().insert(format!("n{id}"), node.clone());
        nodes.push(node);
        maps.push(kv);
    }
    nodes[0]
        .initialize((1..=3).map(|id| (id, format!("n{id}"))).collect())
        .await?;
    let follower = loop {
        if let Some((leader, _)) = nodes[0].leader() {
            break nodes
                .iter()
                .find(|n| n.id() != leader)
                .cloned()
                .ok_or("no follower")?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let written = follower.apply(b"greeting=hello".to_vec()).await?;
    println!("written at index {}", written.index);
    for (node, kv) in nodes.iter().zip(&maps) {
        // A linearizable read: after `read_index`, this node's map has every acknowledged write.
        node.read_index(Duration::from_secs(5)).await?;
        println!(
            "node {}: greeting = {:?}",
            node.id(),
            kv.0.lock().get("greeting")
        );
    }
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(())
}
