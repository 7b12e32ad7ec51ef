//! Three replicas of the cluster state on in-process Raft nodes (an in-memory router instead
//! of sockets): the same log gives the same state, snapshots round-trip, a leadership change
//! neither loses nor doubles an evaluation, forged commands change nothing, and reads are
//! consistent or blocking as asked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::acl::{AclWrite, Token, TokenType};
use caravan_agent_core::jobs::{Job, JobType, Node, Task, TaskGroup};
use caravan_agent_core::query::{ReadOptions, StateAnswer, StateQuery};
use caravan_cluster::command::{self, MAX_COMMAND_BYTES};
use caravan_cluster::{Cluster, ClusterError, ClusterState, Command, Outcome};
use caravan_raft::{BoxFuture, RaftConfig, StateMachine, Transport};
use caravan_sched::broker::EvalBroker;
use parking_lot::Mutex;

/// Delivers calls to the nodes by address; a cut address neither sends nor receives.
#[derive(Default)]
struct Router {
    nodes: Mutex<HashMap<String, Arc<Cluster>>>,
    cut: Mutex<HashSet<String>>,
}

struct Link {
    router: Arc<Router>,
    from: String,
}

impl Transport for Link {
    fn call(
        &self,
        addr: &str,
        method: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>> {
        let router = self.router.clone();
        let (from, to) = (self.from.clone(), addr.to_string());
        Box::pin(async move {
            let node = {
                let cut = router.cut.lock();
                if cut.contains(&from) || cut.contains(&to) {
                    return Err("unreachable".into());
                }
                router.nodes.lock().get(&to).cloned()
            };
            let node = node.ok_or("no such node")?;
            tokio::time::timeout(timeout, node.handle(method, &body))
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())
        })
    }
}

struct Trio {
    router: Arc<Router>,
    members: Vec<(String, Arc<Cluster>)>,
}

const ACL_KEY: [u8; 32] = [3; 32];

async fn trio() -> Trio {
    let router = Arc::new(Router::default());
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let addr = format!("n{id}");
        let link = Arc::new(Link {
            router: router.clone(),
            from: addr.clone(),
        });
        let mut config = RaftConfig::new(id, addr.clone());
        config.heartbeat = Duration::from_millis(50);
        config.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
        let cluster = Arc::new(Cluster::start(config, ACL_KEY, link).await.expect("start"));
        router.nodes.lock().insert(addr.clone(), cluster.clone());
        members.push((addr, cluster));
    }
    let voters: BTreeMap<u64, String> = (1..=3u64).map(|id| (id, format!("n{id}"))).collect();
    members[0]
        .1
        .raft()
        .initialize(voters)
        .await
        .expect("initialize");
    let trio = Trio { router, members };
    trio.leader(Duration::from_secs(10)).await;
    for (_, c) in &trio.members {
        let c = c.clone();
        tokio::spawn(caravan_cluster::duties::follow_leadership(
            c,
            Arc::new(NoDirectory),
        ));
    }
    trio
}

/// Duties need a directory; these tests only follow leadership.
struct NoDirectory;

impl caravan_cluster::duties::ServerDirectory for NoDirectory {
    fn servers(&self) -> Vec<caravan_agent_core::member::ServerInfo> {
        Vec::new()
    }
    fn can_confirm(&self) -> bool {
        false
    }
    fn server_id_at(
        &self,
        _: std::net::SocketAddr,
    ) -> caravan_cluster::duties::DirFuture<'_, Option<String>> {
        Box::pin(async { None })
    }
    fn raft_peers_at(
        &self,
        _: std::net::SocketAddr,
    ) -> caravan_cluster::duties::DirFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn leadership_changed(&self, _: bool) {}
}

impl Trio {
    /// The leader among the nodes not cut off, once there is one (bounded).
    async fn leader(&self, limit: Duration) -> Arc<Cluster> {
        let start = Instant::now();
        loop {
            let cut = self.router.cut.lock().clone();
            if let Some((_, c)) = self
                .members
                .iter()
                .find(|(a, c)| !cut.contains(a) && c.raft().is_leader())
            {
                return c.clone();
            }
            assert!(start.elapsed() < limit, "no leader within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn follower(&self, leader: &Arc<Cluster>) -> Arc<Cluster> {
        let (_, c) = self
            .members
            .iter()
            .find(|(_, c)| !Arc::ptr_eq(c, leader))
            .expect("a follower");
        c.clone()
    }

    /// Waits until every replica applied `index` (bounded).
    async fn settled(&self, index: u64) {
        for (addr, c) in &self.members {
            let ok = c.raft().wait_applied(index, Duration::from_secs(10)).await;
            assert!(ok, "{addr} did not apply index {index}");
        }
    }

    fn exports(&self) -> Vec<caravan_cluster::StateSnapshot> {
        self.members
            .iter()
            .map(|(_, c)| c.state().export())
            .collect()
    }
}

fn uuid(n: u32) -> String {
    format!("aaaaaaaa-0000-4000-8000-{n:012}")
}

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        name: id.into(),
        datacenter: "dc1".into(),
        node_class: String::new(),
        meta: BTreeMap::new(),
        cpu: 1000,
        memory_mb: 1024,
        status: "ready".into(),
        down_since: None,
        create_index: 0,
        modify_index: 0,
    }
}

fn job(id: &str, count: u32) -> Job {
    Job {
        id: id.into(),
        name: id.into(),
        job_type: JobType::Service,
        priority: 50,
        datacenters: vec!["dc1".into()],
        groups: vec![TaskGroup {
            name: "g".into(),
            count,
            tasks: vec![Task {
                name: "t".into(),
                driver: "docker".into(),
                cpu: 100,
                memory_mb: 64,
            }],
        }],
        stop: false,
        status: String::new(),
        create_index: 0,
        modify_index: 0,
        version: 0,
    }
}

fn eval_of(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Job(Some(w)) => w.eval.id.clone(),
        other => panic!("not a job write: {other:?}"),
    }
}

/// A mixed history written through the leader and a follower.
async fn history(trio: &Trio) -> u64 {
    let leader = trio.leader(Duration::from_secs(5)).await;
    let follower = trio.follower(&leader);
    let writes = [
        Command::Acl(AclWrite::Bootstrap {
            accessor_id: uuid(1),
            secret_id: uuid(2),
            create_time: "2026-11-30T00:00:00Z".into(),
        }),
        Command::Acl(AclWrite::PolicyUpsert {
            name: "readers".into(),
            description: String::new(),
            rules: r#"agent { policy = "read" }"#.into(),
        }),
        Command::NodeUpsert {
            node: node("a"),
            seed: 1,
        },
        Command::JobRegister {
            job: job("web", 3),
            seed: 2,
        },
    ];
    let mut last = None;
    for (i, w) in writes.iter().enumerate() {
        let via = if i % 2 == 0 { &leader } else { &follower };
        last = Some(via.write(w).await.expect("write"));
    }
    let eval_id = eval_of(&last.expect("a write"));
    let process = Command::EvalProcess {
        eval_id,
        gc_threshold_secs: 3600,
        now_secs: 1,
        seed: 3,
    };
    follower.write(&process).await.expect("process");
    leader.raft().status().last_log_index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_log_gives_the_same_state_and_snapshots_round_trip() {
    let trio = trio().await;
    let index = history(&trio).await;
    trio.settled(index).await;
    let states = trio.exports();
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);
    assert_eq!(states[0].tables_len(), (1, 1, 3, 1));
    // Snapshot round trip into a fresh replica.
    let source = trio.members[1].1.state();
    let bytes = StateMachine::snapshot(&**source).expect("snapshot");
    let fresh = ClusterState::new(Arc::new(EvalBroker::new(Default::default())), [9; 32]);
    StateMachine::restore(&fresh, &bytes).expect("restore");
    assert_eq!(fresh.export(), states[0]);
    assert_eq!(
        fresh
            .resolve_token(Some(&uuid(2)))
            .map(|a| a.is_management()),
        Ok(true)
    );
    // Garbage and truncated snapshots are refused and change nothing.
    for bad in [&b""[..], b"\x01garbage", &bytes[..bytes.len() / 2]] {
        assert!(StateMachine::restore(&fresh, bad).is_err());
        assert_eq!(fresh.export(), states[0]);
    }
}

trait Lens {
    fn tables_len(&self) -> (usize, usize, usize, usize);
}

impl Lens for caravan_cluster::StateSnapshot {
    /// (jobs, evaluations, allocations, nodes), read through queries.
    fn tables_len(&self) -> (usize, usize, usize, usize) {
        let store = caravan_cluster::store::Store::default();
        store.import(self.tables.clone()).expect("import");
        let count = |q| match store.query(&q).0 {
            StateAnswer::Jobs(v) => v.len(),
            StateAnswer::Evaluations(v) => v.len(),
            StateAnswer::Allocations(v) => v.len(),
            StateAnswer::Nodes(v) => v.len(),
            _ => 0,
        };
        (
            count(StateQuery::Jobs),
            count(StateQuery::Evaluations),
            count(StateQuery::Allocations),
            count(StateQuery::Nodes),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leadership_change_neither_loses_nor_doubles_an_evaluation() {
    let trio = trio().await;
    let old = trio.leader(Duration::from_secs(5)).await;
    old.write(&Command::NodeUpsert {
        node: node("a"),
        seed: 1,
    })
    .await
    .expect("node");
    let w = old
        .write(&Command::JobRegister {
            job: job("web", 1),
            seed: 2,
        })
        .await
        .expect("job");
    let eval_id = eval_of(&w);
    let old_addr = trio
        .members
        .iter()
        .find(|(_, c)| Arc::ptr_eq(c, &old))
        .map(|(a, _)| a.clone())
        .expect("leader address");
    trio.router.cut.lock().insert(old_addr);
    let new = trio.leader(Duration::from_secs(10)).await;
    assert!(!Arc::ptr_eq(&new, &old));
    let types = ["service".to_string()];
    let broker = new.state().broker();
    let got = broker.dequeue(&types, Duration::from_secs(5), &|| false);
    let (eval, _) = got.expect("the new leader's broker has the evaluation");
    assert_eq!(eval.id, eval_id);
    let again = broker.dequeue(&types, Duration::from_millis(300), &|| false);
    assert!(
        again.is_none(),
        "the evaluation was enqueued twice: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_commands_change_nothing_on_any_replica() {
    let trio = trio().await;
    let index = history(&trio).await;
    trio.settled(index).await;
    let before = trio.exports();
    let leader = trio.leader(Duration::from_secs(5)).await;
    let raw = |c: &Command| command::encode(c).expect("encode");
    let mut huge = job("huge", u32::MAX);
    huge.priority = 50;
    let forged = [
        (
            "oversized job",
            raw(&Command::JobRegister { job: huge, seed: 9 }),
        ),
        (
            "token naming an unknown policy",
            raw(&Command::Acl(AclWrite::TokenCreate {
                token: Token {
                    accessor_id: uuid(10),
                    secret_id: uuid(11),
                    name: "x".into(),
                    token_type: TokenType::Client,
                    policies: vec!["nope".into()],
                    global: false,
                    create_time: String::new(),
                    create_index: 0,
                    modify_index: 0,
                },
            })),
        ),
        (
            "second bootstrap",
            raw(&Command::Acl(AclWrite::Bootstrap {
                accessor_id: uuid(12),
                secret_id: uuid(13),
                create_time: String::new(),
            })),
        ),
        (
            "unknown evaluation",
            raw(&Command::EvalFail {
                eval_id: "nope".into(),
            }),
        ),
        ("garbage", b"\x01\xff\xff\xff".to_vec()),
        ("oversized bytes", {
            let mut b = raw(&Command::CoreEval { seed: 1 });
            b.resize(MAX_COMMAND_BYTES + 1, 0);
            b
        }),
    ];
    for (what, bytes) in forged {
        let applied = leader.raft().apply(bytes).await.expect(what);
        let outcome: Outcome = command::decode(&applied.response).expect("outcome");
        assert!(
            matches!(outcome, Outcome::Refused(_)),
            "{what}: {outcome:?}"
        );
        trio.settled(applied.index).await;
    }
    // Only the applied index moved.
    for (mut now, mut then) in trio.exports().into_iter().zip(before) {
        now.index = 0;
        then.index = 0;
        assert_eq!(now, then);
    }
    // A write at an index already applied (a replay) is refused too.
    let state = leader.state();
    let at = state.applied_index();
    let outcome = state.apply_command(at, Command::CoreEval { seed: 1 });
    assert!(
        matches!(outcome, Outcome::Refused(ref w) if w.contains("stale")),
        "{outcome:?}"
    );
    // And `write` reports a refusal as one.
    let e = leader
        .write(&Command::JobDeregister {
            id: String::new(),
            seed: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::Refused(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_consistent_unless_stale_and_block_on_index() {
    let trio = trio().await;
    let leader = trio.leader(Duration::from_secs(5)).await;
    let follower = trio.follower(&leader);
    let opts = |stale, min_index| ReadOptions {
        stale,
        min_index,
        wait: Duration::from_secs(5),
    };
    // A blocking query on the follower returns soon after the write that passes its index.
    let start = follower
        .read(&StateQuery::Nodes, opts(false, 0), 0.0)
        .await
        .expect("read");
    let waiter = {
        let follower = follower.clone();
        let min = start.index;
        tokio::spawn(async move {
            let r = follower
                .read(&StateQuery::Nodes, opts(false, min), 0.0)
                .await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "a blocking query returned before any write"
    );
    leader
        .write(&Command::NodeUpsert {
            node: node("a"),
            seed: 1,
        })
        .await
        .expect("write");
    let written = Instant::now();
    let (answer, at) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("blocking query returned")
        .expect("join");
    let answer = answer.expect("read");
    assert!(answer.index > start.index);
    assert!(matches!(answer.value, StateAnswer::Nodes(ref n) if n.len() == 1));
    assert!(answer.known_leader);
    assert!(at.saturating_duration_since(written) < Duration::from_secs(1));
    // Cut off, the follower still answers stale reads, but not consistent ones.
    let addr = trio
        .members
        .iter()
        .find(|(_, c)| Arc::ptr_eq(c, &follower))
        .map(|(a, _)| a.clone())
        .expect("follower address");
    trio.router.cut.lock().insert(addr);
    let stale = follower.read(&StateQuery::Nodes, opts(true, 0), 0.0).await;
    assert!(matches!(stale.expect("stale read").value, StateAnswer::Nodes(ref n) if n.len() == 1));
    let consistent = follower.read(&StateQuery::Nodes, opts(false, 0), 0.0).await;
    assert!(
        matches!(consistent, Err(ClusterError::Raft(_))),
        "{consistent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_are_answered_one_by_one() {
    let trio = trio().await;
    let leader = trio.leader(Duration::from_secs(5)).await;
    let follower = trio.follower(&leader);
    let before = leader.raft().status().last_log_index;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..64u32 {
        let via = if i % 2 == 0 {
            leader.clone()
        } else {
            follower.clone()
        };
        writes.spawn(async move {
            // Every eighth write is one apply refuses; it must not take its batch with it.
            let count = if i % 8 == 7 { u32::MAX } else { 1 };
            let c = Command::JobRegister {
                job: job(&format!("job-{i}"), count),
                seed: u64::from(i),
            };
            (i, via.write(&c).await)
        });
    }
    let mut ok = 0;
    while let Some(done) = writes.join_next().await {
        let (i, result) = done.expect("join");
        match result {
            Ok(Outcome::Job(Some(w))) if i % 8 != 7 => {
                assert!(w.eval.id.len() == 36, "job-{i}: {w:?}");
                ok += 1;
            }
            Err(ClusterError::Refused(why)) if i % 8 == 7 => {
                assert!(why.contains("Count"), "job-{i}: {why}");
            }
            other => panic!("job-{i}: {other:?}"),
        }
    }
    assert_eq!(ok, 56);
    let after = leader.raft().status().last_log_index;
    eprintln!("64 writes took {} log entries", after - before);
    assert!(
        after - before < 64,
        "no write shared an entry: {}",
        after - before
    );
    trio.settled(after).await;
    let states = trio.exports();
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);

    // Batches that would not come from a proposer are refused whole.
    let raw = |c: &Command| command::encode(c).expect("encode");
    let one = Command::CoreEval { seed: 1 };
    let forged = [
        Command::Batch(vec![Command::Batch(vec![one.clone()])]),
        Command::Batch(vec![
            one.clone(),
            Command::StateRestore(Box::new(states[0].clone())),
        ]),
        Command::Batch(vec![one.clone(); caravan_cluster::command::MAX_BATCH + 1]),
    ];
    for c in &forged {
        let applied = leader.raft().apply(raw(c)).await.expect("apply");
        let outcome: Outcome = command::decode(&applied.response).expect("outcome");
        assert!(matches!(outcome, Outcome::Refused(_)), "{outcome:?}");
    }
}
