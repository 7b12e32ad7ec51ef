//! What the cluster crate's integration tests share: in-process members behind a router that
//! can cut links, and the commands they write.
#![allow(dead_code)] // each test file uses a part

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::acl::AclWrite;
use caravan_agent_core::jobs::{Job, JobType, Node, Task, TaskGroup};
use caravan_cluster::{Cluster, Command, Outcome};
use caravan_raft::{BoxFuture, RaftConfig, Transport};
use parking_lot::Mutex;

/// Delivers calls to the nodes by address; a cut address neither sends nor receives.
#[derive(Default)]
pub struct Router {
    pub nodes: Mutex<HashMap<String, Arc<Cluster>>>,
    pub cut: Mutex<HashSet<String>>,
}

pub struct Link {
    pub router: Arc<Router>,
    pub from: String,
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

pub struct Trio {
    pub router: Arc<Router>,
    pub members: Vec<(String, Arc<Cluster>)>,
}

pub const ACL_KEY: [u8; 32] = [3; 32];

/// Starts one member reachable through `router` at `addr` (durable under `dir`).
pub async fn member(
    router: &Arc<Router>,
    id: u64,
    addr: &str,
    snapshot_every: u64,
    dir: Option<std::path::PathBuf>,
) -> Arc<Cluster> {
    let link = Arc::new(Link {
        router: router.clone(),
        from: addr.to_string(),
    });
    let mut config = RaftConfig::new(id, addr);
    config.heartbeat = Duration::from_millis(50);
    config.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
    config.snapshot_every = snapshot_every;
    config.dir = dir;
    let cluster = Arc::new(Cluster::start(config, ACL_KEY, link).await.expect("start"));
    router
        .nodes
        .lock()
        .insert(addr.to_string(), cluster.clone());
    tokio::spawn(caravan_cluster::duties::follow_leadership(
        cluster.clone(),
        Arc::new(NoDirectory),
    ));
    cluster
}

/// Three members `n1`..`n3` in one cluster with a leader (in memory).
pub async fn trio() -> Trio {
    trio_with(4096, |_| None).await
}

/// Three members taking a snapshot every `snapshot_every` entries, durable where `dir` says.
pub async fn trio_with(
    snapshot_every: u64,
    dir: impl Fn(u64) -> Option<std::path::PathBuf>,
) -> Trio {
    let router = Arc::new(Router::default());
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let addr = format!("n{id}");
        let cluster = member(&router, id, &addr, snapshot_every, dir(id)).await;
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
    trio
}

/// Duties need a directory; these tests only follow leadership.
pub struct NoDirectory;

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
    /// The address of a member.
    pub fn addr_of(&self, member: &Arc<Cluster>) -> String {
        self.members
            .iter()
            .find(|(_, c)| Arc::ptr_eq(c, member))
            .map(|(a, _)| a.clone())
            .expect("a member")
    }

    /// The leader among the nodes not cut off, once there is one (bounded).
    pub async fn leader(&self, limit: Duration) -> Arc<Cluster> {
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

    pub fn follower(&self, leader: &Arc<Cluster>) -> Arc<Cluster> {
        let (_, c) = self
            .members
            .iter()
            .find(|(_, c)| !Arc::ptr_eq(c, leader))
            .expect("a follower");
        c.clone()
    }

    /// Waits until every replica applied `index` (bounded).
    pub async fn settled(&self, index: u64) {
        for (addr, c) in &self.members {
            let ok = c.raft().wait_applied(index, Duration::from_secs(10)).await;
            assert!(ok, "{addr} did not apply index {index}");
        }
    }

    pub fn exports(&self) -> Vec<caravan_cluster::StateSnapshot> {
        self.members
            .iter()
            .map(|(_, c)| c.state().export())
            .collect()
    }
}

pub fn uuid(n: u32) -> String {
    format!("aaaaaaaa-0000-4000-8000-{n:012}")
}

pub fn node(id: &str) -> Node {
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
        secret_id: String::new(),
        attributes: Default::default(),
        create_index: 0,
        modify_index: 0,
    }
}

pub fn job(id: &str, count: u32) -> Job {
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

pub fn eval_of(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Job(Some(w)) => w.eval.id.clone(),
        other => panic!("not a job write: {other:?}"),
    }
}

/// A mixed history written through the leader and a follower.
pub async fn history(trio: &Trio) -> u64 {
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
