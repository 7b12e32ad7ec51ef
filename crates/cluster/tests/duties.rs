//! The leader's reconciliation against a scripted [`ServerDirectory`]: confirmed servers are
//! added as voters, unconfirmed ones are not, a server gossip says left is removed once it stops
//! answering (and kept while it answers), and evaluations past the delivery limit are recorded
//! as failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test says where it failed

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::jobs::EvalStatus;
use caravan_agent_core::member::{MemberStatus, ServerInfo};
use caravan_agent_core::query::{StateAnswer, StateQuery};
use caravan_cluster::duties::{DirFuture, ServerDirectory};
use caravan_cluster::{Cluster, Command};
use common::*;
use parking_lot::Mutex;

/// A server ID whose Raft ID is `n`.
fn server_id(n: u64) -> String {
    format!("00000000-0000-{n:04x}-0000-000000000000")
}

fn addr(n: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1000 + n as u16))
}

/// Gossip's view and who answers as whom, both scripted by the test.
#[derive(Default)]
struct Scripted {
    servers: Mutex<Vec<ServerInfo>>,
    answers: Mutex<HashMap<SocketAddr, String>>,
}

impl Scripted {
    fn set(&self, n: u64, status: MemberStatus, answers: bool) {
        let mut servers = self.servers.lock();
        servers.retain(|s| s.id != server_id(n));
        servers.push(ServerInfo {
            name: format!("s{n}.global"),
            id: server_id(n),
            rpc: addr(n),
            status,
            expect: 0,
        });
        let mut a = self.answers.lock();
        if answers {
            a.insert(addr(n), server_id(n));
        } else {
            a.remove(&addr(n));
        }
    }
}

impl ServerDirectory for Scripted {
    fn servers(&self) -> Vec<ServerInfo> {
        self.servers.lock().clone()
    }
    fn can_confirm(&self) -> bool {
        true
    }
    fn server_id_at(&self, addr: SocketAddr) -> DirFuture<'_, Option<String>> {
        let id = self.answers.lock().get(&addr).cloned();
        Box::pin(async move { id })
    }
    fn raft_peers_at(&self, _: SocketAddr) -> DirFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn leadership_changed(&self, _: bool) {}
}

async fn voters_become(c: &Cluster, want: &[u64], limit: Duration) {
    let want: BTreeSet<u64> = want.iter().copied().collect();
    let start = Instant::now();
    loop {
        let voters: BTreeSet<u64> = c.raft().status().voters.into_keys().collect();
        if voters == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "voters {voters:?}, want {want:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_adds_confirmed_servers_removes_departed_ones_and_records_failed_evals() {
    let router = Arc::new(Router::default());
    let mut members = Vec::new();
    for n in 1..=3u64 {
        let id = caravan_cluster::raft_id(&server_id(n));
        assert_eq!(id, n);
        members.push(member(&router, id, &addr(n).to_string(), 4096, None).await);
    }
    let first = members[0].clone();
    let voters = BTreeMap::from([(1, addr(1).to_string())]);
    first.raft().initialize(voters).await.expect("initialize");
    let dir = Arc::new(Scripted::default());
    for n in 1..=3 {
        dir.set(n, MemberStatus::Alive, true);
    }
    // A fourth server gossip claims, at an address that does not answer as it.
    dir.set(4, MemberStatus::Alive, false);
    tokio::spawn(caravan_cluster::duties::reconcile(
        first.clone(),
        dir.clone(),
    ));
    voters_become(&first, &[1, 2, 3], Duration::from_secs(20)).await;

    // Gossip says s3 left and it stops answering: removed. s2 "left" but still answers: kept.
    dir.set(3, MemberStatus::Left, false);
    dir.set(2, MemberStatus::Left, true);
    voters_become(&first, &[1, 2], Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    voters_become(&first, &[1, 2], Duration::from_secs(1)).await;

    // An evaluation nacked past the delivery limit is recorded as failed.
    let leader = first;
    assert!(leader.raft().is_leader());
    let w = leader
        .write(&Command::JobRegister {
            job: job("web", 1),
            seed: 1,
        })
        .await
        .expect("register");
    let eval_id = eval_of(&w);
    let types = ["service".to_string()];
    let broker = leader.state().broker().clone();
    for _ in 0..10 {
        let got = broker.dequeue(&types, Duration::from_millis(500), &|| false);
        let Some((eval, token)) = got else { break };
        assert_eq!(eval.id, eval_id);
        broker.nack(&eval.id, token).expect("nack");
    }
    let start = Instant::now();
    loop {
        let status = match leader
            .state()
            .store()
            .query(&StateQuery::Evaluation(eval_id.clone()))
            .0
        {
            StateAnswer::Evaluation(Some(e)) => e.status,
            other => panic!("{other:?}"),
        };
        if status == EvalStatus::Failed {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "evaluation still {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in members {
        c.raft().shutdown().await;
    }
}
