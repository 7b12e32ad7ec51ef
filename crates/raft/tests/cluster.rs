//! In-process clusters over a fault-injecting router: election, forwarding, failover, durable
//! restart, snapshots, and a cut-off minority that refuses writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test says where it failed

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use caravan_raft::{BoxFuture, RaftConfig, RaftError, RaftNode, Transport};
use parking_lot::Mutex;

mod common;

use common::Log;

#[derive(Default, Clone)]
struct Router {
    nodes: Arc<Mutex<HashMap<String, Arc<RaftNode>>>>,
    /// Cut links (from, to), both directions listed.
    cut: Arc<Mutex<HashSet<(String, String)>>>,
}

struct Link {
    from: String,
    router: Router,
}

impl Transport for Link {
    fn call(
        &self,
        addr: &str,
        method: &'static str,
        body: Vec<u8>,
        t: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>> {
        let cut = self
            .router
            .cut
            .lock()
            .contains(&(self.from.clone(), addr.to_string()));
        let node = self.router.nodes.lock().get(addr).cloned();
        Box::pin(async move {
            if cut {
                return Err("link cut".into());
            }
            let node = node.ok_or("connection refused")?;
            tokio::time::timeout(t, node.handle(method, &body))
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())
        })
    }
}

struct Cluster {
    router: Router,
    nodes: BTreeMap<u64, (Arc<RaftNode>, Arc<Log>)>,
    dir: PathBuf,
    /// Applied to every node's configuration after the test defaults.
    tweak: fn(&mut RaftConfig),
}

fn addr(id: u64) -> String {
    format!("n{id}")
}

impl Cluster {
    async fn new(n: u64) -> Cluster {
        Cluster::with(n, |_| {}).await
    }

    async fn with(n: u64, tweak: fn(&mut RaftConfig)) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "caravan-raft-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let mut c = Cluster {
            router: Router::default(),
            nodes: BTreeMap::new(),
            dir,
            tweak,
        };
        for id in 1..=n {
            c.start(id).await;
        }
        let voters = (1..=n).map(|id| (id, addr(id))).collect();
        c.nodes[&1].0.initialize(voters).await.unwrap();
        c
    }

    async fn start(&mut self, id: u64) {
        let mut cfg = RaftConfig::new(id, addr(id));
        cfg.dir = Some(self.dir.join(id.to_string()));
        cfg.heartbeat = Duration::from_millis(50);
        cfg.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
        cfg.snapshot_every = 20;
        cfg.write_timeout = Duration::from_secs(3);
        (self.tweak)(&mut cfg);
        let log = Arc::new(Log::default());
        let link = Link {
            from: addr(id),
            router: self.router.clone(),
        };
        let node = Arc::new(
            RaftNode::start(cfg, log.clone(), Arc::new(link))
                .await
                .unwrap(),
        );
        self.router.nodes.lock().insert(addr(id), node.clone());
        self.nodes.insert(id, (node, log));
    }

    /// Stops every node and removes the data directory.
    async fn finish(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Heals every cut link and waits (10 s) until `behind` has applied what the leader has,
    /// which must be `acked`, in order.
    async fn heal_and_expect(&self, leader: u64, behind: u64, acked: &[String]) {
        self.router.cut.lock().clear();
        let last = self.nodes[&leader].0.applied_index();
        let (node, log) = &self.nodes[&behind];
        assert!(node.wait_applied(last, Duration::from_secs(10)).await);
        assert_eq!(*log.0.lock(), acked);
    }

    async fn stop(&mut self, id: u64) {
        self.router.nodes.lock().remove(&addr(id));
        if let Some((node, _)) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// The leader all running nodes agree on, within 10 s.
    async fn leader(&self) -> u64 {
        for _ in 0..200 {
            let leaders: HashSet<Option<u64>> = self
                .nodes
                .values()
                .map(|(n, _)| n.leader().map(|l| l.0))
                .collect();
            if leaders.len() == 1
                && let Some(Some(l)) = leaders.into_iter().next()
                && self.nodes.get(&l).is_some_and(|(n, _)| n.is_leader())
            {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no agreed leader");
    }

    fn cut(&self, a: &[u64], b: &[u64]) {
        let mut cut = self.router.cut.lock();
        for x in a {
            for y in b {
                cut.insert((addr(*x), addr(*y)));
                cut.insert((addr(*y), addr(*x)));
            }
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_every_acknowledged_write_and_restart_catches_up() {
    let mut c = Cluster::new(3).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    // Writes through a follower are forwarded.
    let mut acked = Vec::new();
    for i in 0..30 {
        let cmd = format!("w{i}");
        c.nodes[&follower]
            .0
            .apply(cmd.clone().into())
            .await
            .unwrap();
        acked.push(cmd);
    }
    // Kill the leader; a new one is elected and takes writes.
    c.stop(leader).await;
    let second = c.leader().await;
    assert_ne!(second, leader);
    for i in 30..40 {
        let cmd = format!("w{i}");
        c.nodes[&second].0.apply(cmd.clone().into()).await.unwrap();
        acked.push(cmd);
    }
    // The old leader restarts from disk (snapshot + log) and catches up.
    c.start(leader).await;
    let last = c.nodes[&second].0.applied_index();
    for (id, (node, log)) in &c.nodes {
        assert!(
            node.wait_applied(last, Duration::from_secs(10)).await,
            "node {id} did not catch up"
        );
        assert_eq!(*log.0.lock(), acked, "node {id}");
    }
    let status = c.nodes[&leader].0.status();
    assert!(
        status.last_snapshot.0 > 0,
        "snapshots were taken: {status:?}"
    );
    assert_eq!(status.voters.len(), 3);
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_refuses_writes_majority_accepts() {
    let c = Cluster::new(5).await;
    let leader = c.leader().await;
    c.nodes[&leader].0.apply("before".into()).await.unwrap();
    // Cut the leader and one follower off from the other three.
    let other = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    let minority = [leader, other];
    let majority: Vec<u64> = c
        .nodes
        .keys()
        .copied()
        .filter(|id| !minority.contains(id))
        .collect();
    c.cut(&minority, &majority);
    // The majority elects a new leader and accepts writes.
    let mut new_leader = None;
    for _ in 0..200 {
        if let Some(&id) = majority.iter().find(|id| c.nodes[id].0.is_leader()) {
            new_leader = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = new_leader.expect("majority elected a leader");
    c.nodes[&majority[0]]
        .0
        .apply("during".into())
        .await
        .unwrap();
    // The old leader stops heartbeats without a quorum: its follower in the minority loses it
    // (and finds no other), instead of following a leader that can commit nothing.
    let mut follower_lost_it = false;
    for _ in 0..100 {
        if c.nodes[&other].0.leader().is_none() {
            follower_lost_it = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        follower_lost_it,
        "the minority follower still follows {:?}",
        c.nodes[&other].0.leader()
    );
    // The minority refuses with a clear error, on both of its nodes.
    for id in minority {
        let err = c.nodes[&id].0.apply("lost".into()).await.unwrap_err();
        assert!(
            matches!(err, RaftError::NoLeader | RaftError::Transport(_)),
            "{err:?}"
        );
    }
    // Heal: everyone converges on the majority's log; the refused write is nowhere.
    c.router.cut.lock().clear();
    let last = c.nodes[&new_leader].0.applied_index();
    for (id, (node, log)) in &c.nodes {
        assert!(
            node.wait_applied(last, Duration::from_secs(10)).await,
            "node {id}"
        );
        assert_eq!(*log.0.lock(), ["before", "during"], "node {id}");
    }
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_add_and_remove() {
    let mut c = Cluster::new(3).await;
    let leader = c.leader().await;
    c.start(4).await;
    c.nodes[&leader].0.add_voter(4, addr(4)).await.unwrap();
    c.nodes[&leader].0.apply("x".into()).await.unwrap();
    // The leader has committed the change; node 4 learns of it with the next append (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.nodes[&4].0.status().voters.len() != 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.nodes[&4].0.status().voters.len(), 4);
    let victim = *c.nodes.keys().find(|&&id| id != leader && id != 4).unwrap();
    c.stop(victim).await;
    c.nodes[&leader].0.remove_server(victim).await.unwrap();
    let voters = c.nodes[&leader].0.status().voters;
    assert_eq!(voters.len(), 3);
    assert!(!voters.contains_key(&victim));
    c.finish().await;
}

#[tokio::test]
async fn bad_requests_are_errors() {
    let log = Arc::new(Log::default());
    let link = Link {
        from: "n1".into(),
        router: Router::default(),
    };
    let node = RaftNode::start(RaftConfig::new(1, "n1"), log, Arc::new(link))
        .await
        .unwrap();
    assert!(matches!(
        node.handle("Raft.Vote", b"{not json").await,
        Err(RaftError::BadRequest(_))
    ));
    assert!(matches!(
        node.handle("Raft.Nope", b"{}").await,
        Err(RaftError::BadRequest(_))
    ));
    assert!(matches!(
        node.handle("Raft.ReadIndex", b"x").await,
        Err(RaftError::BadRequest(_))
    ));
    // Not a leader: Raft.ReadIndex answers NoLeader (it never forwards again).
    let answer: Result<u64, RaftError> =
        caravan_raft::codec::decode(&node.handle("Raft.ReadIndex", b"").await.unwrap()).unwrap();
    assert_eq!(answer, Err(RaftError::NoLeader));
    // Not initialized: no leader, a clear error within the write timeout.
    let mut cfg = RaftConfig::new(2, "n2");
    cfg.write_timeout = Duration::from_millis(300);
    let lonely = RaftNode::start(
        cfg,
        Arc::new(Log::default()),
        Arc::new(Link {
            from: "n2".into(),
            router: Router::default(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        lonely.apply("x".into()).await.unwrap_err().to_string(),
        "No cluster leader"
    );
    node.shutdown().await;
    lonely.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_behind_the_purged_log_catches_up_by_snapshot() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let behind = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.cut(&[behind], &[1, 2, 3]);
    // More than the 256 entries kept after a snapshot: the leader purges what `behind` lacks,
    // so it can only catch up through Raft.InstallSnapshot.
    let mut acked = Vec::new();
    for i in 0..320 {
        let cmd = format!("w{i}");
        c.nodes[&leader].0.apply(cmd.clone().into()).await.unwrap();
        acked.push(cmd);
    }
    c.heal_and_expect(leader, behind, &acked).await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_splits_batches_over_the_payload_limit() {
    // Followers refuse an AppendEntries with more than 2,000 bytes of payload.
    let c = Cluster::with(3, |cfg| {
        cfg.max_command_bytes = 1_000;
        cfg.max_append_bytes = 2_000;
    })
    .await;
    let leader = c.leader().await;
    let behind = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.cut(&[behind], &[1, 2, 3]);
    // A backlog of 15 commands of 900 bytes: 13,500 bytes, which the leader must send in
    // batches of at most two.
    let mut acked = Vec::new();
    for i in 0..15 {
        let cmd = format!("{i:03}{}", "x".repeat(897));
        c.nodes[&leader].0.apply(cmd.clone().into()).await.unwrap();
        acked.push(cmd);
    }
    c.heal_and_expect(leader, behind, &acked).await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_server_joins_a_cluster_thousands_of_terms_old() {
    let mut c = Cluster::new(3).await;
    c.leader().await;
    // A cluster that has been through 5,000 elections: a leader (ID 99, not a member) at term
    // 5,000, reached in steps as elections would, makes every node adopt that term; one of them
    // is then elected at 5,001.
    for term in (500..=5000).step_by(500) {
        let fake = serde_json::json!({
            "vote": {"leader_id": {"term": term, "node_id": 99}, "committed": true},
            "prev_log_id": null, "leader_commit": null, "entries": [],
        });
        let fake: openraft::raft::AppendEntriesRequest<caravan_raft::TypeConfig> =
            serde_json::from_value(fake).unwrap();
        let wire = caravan_raft::codec::encode(&fake).unwrap();
        for (node, _) in c.nodes.values() {
            node.handle("Raft.AppendEntries", &wire).await.unwrap();
        }
    }
    let leader = c.leader().await;
    assert!(c.nodes[&leader].0.status().term > 5000);
    // A fresh server (term 0) takes the leader's term 5,001 and joins.
    c.start(4).await;
    c.nodes[&leader].0.add_voter(4, addr(4)).await.unwrap();
    c.nodes[&leader].0.apply("x".into()).await.unwrap();
    let last = c.nodes[&leader].0.applied_index();
    assert!(
        c.nodes[&4]
            .0
            .wait_applied(last, Duration::from_secs(10))
            .await
    );
    assert_eq!(*c.nodes[&4].1.0.lock(), ["x"]);
    c.finish().await;
}

/// A write acknowledged on the leader is in a follower's state once `read_index` returns there,
/// even when the follower had not received it yet (it was cut off while the write was made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_on_a_follower_sees_every_acknowledged_write() {
    // A long election timeout, so that the short cut below costs no election.
    let c = Cluster::with(3, |cfg| {
        cfg.election_timeout = (Duration::from_millis(1500), Duration::from_millis(3000));
    })
    .await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.nodes[&leader].0.apply("first".into()).await.unwrap();
    c.cut(&[follower], &[leader]);
    let mut acked = vec!["first".to_string()];
    let mut last = 0;
    for i in 0..5 {
        let cmd = format!("w{i}");
        last = c.nodes[&leader]
            .0
            .apply(cmd.clone().into())
            .await
            .unwrap()
            .index;
        acked.push(cmd);
    }
    assert!(c.nodes[&follower].0.applied_index() < last);
    c.router.cut.lock().clear();
    let (node, log) = &c.nodes[&follower];
    let index = tokio::time::timeout(
        Duration::from_secs(10),
        node.read_index(Duration::from_secs(5)),
    )
    .await
    .expect("read_index is bounded by its timeout")
    .unwrap();
    assert!(
        index >= last,
        "read index {index} is before the write at {last}"
    );
    assert_eq!(
        *log.0.lock(),
        acked,
        "the follower's state after read_index"
    );
    // On the leader, too.
    let index = c.nodes[&leader]
        .0
        .read_index(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(index >= last);
    c.finish().await;
}

/// A follower cut off from the leader (which it may still believe in) does not answer a read
/// from its stale state: NoLeader or Timeout, within its timeout. A leader cut off from its
/// quorum refuses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_refuses_without_the_leader_or_a_quorum() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    let other = *c
        .nodes
        .keys()
        .find(|&&id| id != leader && id != follower)
        .unwrap();
    c.cut(&[follower], &[leader, other]);
    c.nodes[&leader].0.apply("unseen".into()).await.unwrap();
    refuses_read(&c.nodes[&follower].0).await;
    assert!(c.nodes[&follower].1.0.lock().is_empty());
    // The leader alone, without its quorum.
    c.router.cut.lock().clear();
    c.cut(&[leader], &[follower, other]);
    refuses_read(&c.nodes[&leader].0).await;
    c.finish().await;
}

/// `read_index` with a 1 s timeout answers NoLeader or Timeout, not a stale index, and within a
/// few times its timeout (the 10 s guard only keeps a broken build from hanging).
async fn refuses_read(node: &caravan_raft::RaftNode) {
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        node.read_index(Duration::from_secs(1)),
    )
    .await
    .expect("read_index is bounded by its timeout")
    .unwrap_err();
    assert!(
        matches!(err, RaftError::NoLeader | RaftError::Timeout),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
