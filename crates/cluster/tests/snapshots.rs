//! Snapshots of the real cluster state (ACLs, jobs, evaluations, allocations, nodes) on durable
//! in-process members: taken every few entries, a restart from one, and a follower that fell
//! behind the leader's compacted log catching up by one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test says where it failed

mod common;

use std::path::PathBuf;
use std::time::Duration;

use caravan_cluster::Command;
use common::*;

/// Entries between snapshots in these tests (the agent's default is Nomad's 8,192).
const EVERY: u64 = 16;

/// Entries openraft keeps behind a snapshot (`max_in_snapshot_log_to_keep` in caravan-raft).
const KEPT_BEHIND_SNAPSHOT: u64 = 256;

fn scratch(test: &str) -> impl Fn(u64) -> Option<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let root = std::env::temp_dir().join(format!(
        "caravan-cluster-{test}-{}-{nanos}",
        std::process::id()
    ));
    move |id| Some(root.join(format!("n{id}")))
}

/// `n` node upserts through `via`, one log entry each; returns the last index written.
async fn upserts(via: &caravan_cluster::Cluster, from: usize, n: usize) {
    for i in from..from + n {
        let c = Command::NodeUpsert {
            node: node(&format!("extra-{i}")),
            seed: i as u64,
        };
        via.write(&c).await.expect("node upsert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_the_real_state_survive_a_restart_and_catch_up_a_lagging_follower() {
    let dirs = scratch("snapshots");
    let trio = trio_with(EVERY, &dirs).await;
    history(&trio).await; // ACL bootstrap and policy, a node, a job placed three times
    let leader = trio.leader(Duration::from_secs(5)).await;
    upserts(&leader, 0, 3 * EVERY as usize).await;
    let last = leader.raft().status().last_log_index;
    trio.settled(last).await;
    let want = leader.state().export();
    for (addr, c) in &trio.members {
        assert_eq!(c.state().export(), want, "{addr}");
        assert!(
            c.raft().status().last_snapshot.0 > 0,
            "{addr} took no snapshot"
        );
    }

    // A follower restarts from its own snapshot and log.
    let follower = trio.follower(&leader);
    let addr = trio.addr_of(&follower);
    let id = follower.raft().id();
    follower.raft().shutdown().await;
    drop(follower);
    let back = member(&trio.router, id, &addr, EVERY, dirs(id)).await;
    assert!(
        back.raft()
            .wait_applied(last, Duration::from_secs(10))
            .await
    );
    assert_eq!(back.state().export(), want, "restarted {addr}");
    let snapshot_at_start = back.raft().status().last_snapshot.0;
    assert!(snapshot_at_start > 0);

    // Cut it off while the leader writes past what its log keeps, then heal: the entries it
    // misses are compacted away on the leader, so only a snapshot can bring it back.
    let behind = back.raft().status().last_log_index;
    trio.router.cut.lock().insert(addr.clone());
    let leader = trio.leader(Duration::from_secs(10)).await;
    upserts(&leader, 1000, (KEPT_BEHIND_SNAPSHOT + 3 * EVERY) as usize).await;
    let leader_snapshot = leader.raft().status().last_snapshot.0;
    assert!(
        leader_snapshot > behind + KEPT_BEHIND_SNAPSHOT,
        "the leader still holds the entries the follower misses ({leader_snapshot} vs {behind})"
    );
    trio.router.cut.lock().clear();
    let last = leader.raft().status().last_log_index;
    assert!(
        back.raft()
            .wait_applied(last, Duration::from_secs(20))
            .await
    );
    let status = back.raft().status();
    assert!(
        status.last_snapshot.0 > behind,
        "caught up without a snapshot: {status:?}"
    );
    assert_eq!(back.state().export(), leader.state().export());
    // The ACL state came with it: the bootstrap token resolves on the restored follower.
    assert_eq!(
        back.state()
            .resolve_token(Some(&uuid(2)))
            .map(|a| a.is_management()),
        Ok(true)
    );
    for (_, c) in &trio.members {
        c.raft().shutdown().await;
    }
    back.raft().shutdown().await;
    if let Some(root) = dirs(0).and_then(|d| d.parent().map(PathBuf::from)) {
        let _ = std::fs::remove_dir_all(root);
    }
}
