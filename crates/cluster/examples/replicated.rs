//! Three servers' replicated state in one process: Raft messages travel through an in-memory
//! router instead of sockets. A job registered through a follower is placed by the state
//! machine on every replica alike, and a consistent read on another follower sees it.
//!
//! Run with `cargo run -p caravan-cluster --example replicated`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::jobs::{GroupSubmission, Job, JobSubmission, Node, TaskSubmission};
use caravan_agent_core::query::{ReadOptions, StateAnswer, StateQuery};
use caravan_cluster::{Cluster, Command, Outcome};
use caravan_raft::{BoxFuture, RaftConfig, RaftNode, Transport};
use parking_lot::Mutex;

/// Hands each call to the node registered under its address.
#[derive(Clone, Default)]
struct Router(Arc<Mutex<HashMap<String, Arc<RaftNode>>>>);

impl Transport for Router {
    fn call(
        &self,
        addr: &str,
        method: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>> {
        let node = self.0.lock().get(addr).cloned();
        Box::pin(async move {
            let node = node.ok_or("no such node")?;
            tokio::time::timeout(timeout, node.handle(method, &body))
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())
        })
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::default();
    let mut servers = Vec::new();
    for id in 1..=3u64 {
        let addr = format!("server-{id}");
        let cluster = Cluster::start(
            RaftConfig::new(id, addr.clone()),
            [id as u8; 32], // each process keys its token index at random; fixed here
            Arc::new(router.clone()),
        )
        .await?;
        router.0.lock().insert(addr, cluster.raft().clone());
        servers.push(cluster);
    }
    let voters: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("server-{id}"))).collect();
    servers[0].raft().initialize(voters).await?;
    let started = Instant::now();
    while !servers.iter().any(|s| s.raft().is_leader()) {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no leader within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = servers
        .iter()
        .position(|s| s.raft().is_leader())
        .unwrap_or(0);
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    println!("server-{} leads", leader + 1);

    // A client node and a job, written through a follower (forwarded to the leader).
    let node = Node {
        id: "node-1".into(),
        name: "node-1".into(),
        datacenter: "dc1".into(),
        node_class: String::new(),
        meta: BTreeMap::new(),
        cpu: 4000,
        memory_mb: 8192,
        status: "ready".into(),
        down_since: None,
        secret_id: String::new(),
        attributes: Default::default(),
        create_index: 0,
        modify_index: 0,
    };
    servers[a]
        .write(&Command::NodeUpsert {
            node,
            seed: caravan_cluster::seed(),
        })
        .await?;
    let job = Job::from_submission(JobSubmission {
        id: Some("web".into()),
        datacenters: Some(vec!["dc1".into()]),
        groups: Some(vec![GroupSubmission {
            name: Some("frontend".into()),
            count: Some(3),
            tasks: Some(vec![TaskSubmission {
                name: Some("nginx".into()),
                driver: Some("docker".into()),
                ..TaskSubmission::default()
            }]),
        }]),
        ..JobSubmission::default()
    })?;
    let Outcome::Job(Some(written)) = servers[a]
        .write(&Command::JobRegister {
            job,
            seed: caravan_cluster::seed(),
        })
        .await?
    else {
        return Err("registration created no evaluation".into());
    };
    println!("job registered at index {}", written.job_modify_index);
    // What a scheduler worker does with the evaluation: the state machine places it.
    servers[a]
        .write(&Command::EvalProcess {
            eval_id: written.eval.id.clone(),
            gc_threshold_secs: 3600,
            now_secs: 0,
            seed: caravan_cluster::seed(),
        })
        .await?;

    // A consistent read on the other follower sees all of it.
    let read = servers[b]
        .read(
            &StateQuery::JobAllocations("web".into()),
            ReadOptions::default(),
            0.0,
        )
        .await?;
    let StateAnswer::JobAllocations(Some(allocs)) = read.value else {
        return Err("the job is unknown on server b".into());
    };
    println!(
        "server-{} reads {} allocations at index {} (known leader: {})",
        b + 1,
        allocs.len(),
        read.index,
        read.known_leader
    );
    for alloc in &allocs {
        println!("  {} on {}", alloc.name, alloc.node_id);
    }
    if allocs.len() != 3 {
        return Err(format!("expected 3 allocations, read {}", allocs.len()).into());
    }
    Ok(())
}
