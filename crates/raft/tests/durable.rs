//! One durable node: writes made concurrently (batched by the log writer) are all there after a
//! restart, snapshots included; and a state machine that cannot snapshot stops the node instead
//! of leaving an empty snapshot behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test says where it failed

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caravan_raft::{RaftConfig, RaftError, RaftNode, StateMachine};

mod common;

use common::{Log, Nowhere, scratch};

fn config(dir: Option<&Path>, snapshot_every: u64) -> RaftConfig {
    let mut cfg = RaftConfig::new(1, "n1");
    cfg.dir = dir.map(Path::to_path_buf);
    cfg.heartbeat = Duration::from_millis(50);
    cfg.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
    cfg.write_timeout = Duration::from_secs(5);
    cfg.snapshot_every = snapshot_every;
    cfg
}

/// A node that formed a cluster of itself and leads it.
async fn leader_alone(config: RaftConfig, state: Arc<dyn StateMachine>) -> RaftNode {
    let node = RaftNode::start(config, state, Arc::new(Nowhere))
        .await
        .unwrap();
    node.initialize(BTreeMap::from([(1, "n1".to_string())]))
        .await
        .unwrap();
    leads(&node).await;
    node
}

async fn leads(node: &RaftNode) {
    for _ in 0..200 {
        if node.is_leader() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader: {:?}", node.status());
}

/// 300 writes made at once (so the writer takes several in one transaction), with a snapshot
/// every 64 entries: after a restart from the same directory every acknowledged write is in
/// the state, once, in index order; the files are still private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_survive_a_restart() {
    const N: usize = 300;
    let dir = scratch("batch");
    let log = Arc::new(Log::default());
    let node = Arc::new(
        RaftNode::start(config(Some(&dir), 64), log.clone(), Arc::new(Nowhere))
            .await
            .unwrap(),
    );
    node.initialize(BTreeMap::from([(1, "n1".to_string())]))
        .await
        .unwrap();
    leads(&node).await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let cmd = format!("c{i}");
            let applied = node.apply(cmd.clone().into()).await;
            (cmd, applied)
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        let (cmd, applied) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("writes finish")
            .unwrap();
        acked.insert(applied.unwrap().index, cmd);
    }
    assert_eq!(acked.len(), N, "every write has its own index");
    let last = *acked.keys().next_back().unwrap();
    assert!(node.status().last_snapshot.0 > 0, "{:?}", node.status());
    node.shutdown().await;
    drop(node);

    let log = Arc::new(Log::default());
    let node = RaftNode::start(config(Some(&dir), 64), log.clone(), Arc::new(Nowhere))
        .await
        .unwrap();
    leads(&node).await;
    assert!(node.wait_applied(last, Duration::from_secs(10)).await);
    let expected: Vec<String> = acked.into_values().collect();
    assert_eq!(*log.0.lock(), expected);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("raft.db")), 0o600);
    }
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Applies like [`Log`] but cannot snapshot.
#[derive(Default)]
struct NoSnapshot(Log);

impl StateMachine for NoSnapshot {
    fn apply(&self, index: u64, command: &[u8]) -> Result<Vec<u8>, String> {
        self.0.apply(index, command)
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Err("the disk is full".into())
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        self.0.restore(snapshot)
    }
}

/// A snapshot the state machine cannot take is a storage error: the node stops (writes fail
/// with a storage error) and no snapshot, empty or not, is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_state_machine_cannot_take_stops_the_node() {
    let node = leader_alone(config(None, 5), Arc::new(NoSnapshot::default())).await;
    let mut failed = None;
    for i in 0..100 {
        match node.apply(format!("c{i}").into()).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("the node stopped once a snapshot was due");
    assert!(
        matches!(&failed, RaftError::Storage(_) | RaftError::Shutdown),
        "{failed:?}"
    );
    assert_eq!(node.status().last_snapshot, (0, 0), "{:?}", node.status());
    node.shutdown().await;
}

/// `applied_watch` moves with every write, by the time the write is acknowledged (what a
/// blocking query waits on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_watch_moves_with_each_write() {
    let node = leader_alone(config(None, 4096), Arc::new(Log::default())).await;
    let mut rx = node.applied_watch();
    for i in 0..5 {
        let seen = *rx.borrow_and_update();
        let applied = node.apply(format!("c{i}").into()).await.unwrap();
        assert!(applied.index > seen);
        let moved = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        assert!(matches!(moved, Ok(Ok(()))), "write {i}: {moved:?}");
        assert!(*rx.borrow() >= applied.index);
    }
    assert_eq!(node.last_contact(), Some(Duration::ZERO));
    node.shutdown().await;
}
