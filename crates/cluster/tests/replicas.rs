//! Three replicas of the cluster state on in-process Raft nodes (an in-memory router instead
//! of sockets): the same log gives the same state, snapshots round-trip, a leadership change
//! neither loses nor doubles an evaluation, forged commands change nothing, and reads are
//! consistent or blocking as asked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test says where it failed

use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::acl::{AclWrite, Token, TokenType};
use caravan_agent_core::query::{ReadOptions, StateAnswer, StateQuery};
use caravan_cluster::command::{self, MAX_COMMAND_BYTES};
use caravan_cluster::{ClusterError, ClusterState, Command, Outcome};
use caravan_raft::StateMachine;
use caravan_sched::broker::EvalBroker;

mod common;

use common::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_evaluation_is_queued_again_when_capacity_appears() {
    let trio = trio().await;
    let leader = trio.leader(Duration::from_secs(5)).await;
    let broker = leader.state().broker().clone();
    let types = ["service".to_string()];
    let take = |wait_ms| broker.dequeue(&types, Duration::from_millis(wait_ms), &|| false);
    leader
        .write(&Command::NodeUpsert {
            node: node("a"),
            seed: 1,
        })
        .await
        .expect("node");
    // 20 × 100 MHz on one 1,000 MHz node: ten fit, the rest block.
    let w = leader
        .write(&Command::JobRegister {
            job: job("web", 20),
            seed: 2,
        })
        .await
        .expect("job");
    let (eval, token) = take(5_000).expect("the registration's evaluation");
    assert_eq!(eval.id, eval_of(&w));
    let process = Command::EvalProcess {
        eval_id: eval.id.clone(),
        gc_threshold_secs: 3600,
        now_secs: 1,
        seed: 3,
    };
    leader.write(&process).await.expect("process");
    broker.ack(&eval.id, token).expect("ack");
    let blocked = match leader
        .state()
        .store()
        .query(&StateQuery::Evaluation(eval.id))
        .0
    {
        StateAnswer::Evaluation(Some(e)) => e.blocked_eval,
        other => panic!("{other:?}"),
    };
    assert!(!blocked.is_empty(), "nothing blocked");
    assert!(take(300).is_none(), "a blocked evaluation is not ready");
    leader
        .write(&Command::NodeUpsert {
            node: node("b"),
            seed: 4,
        })
        .await
        .expect("second node");
    let (again, _) = take(5_000).expect("the blocked evaluation is queued again");
    assert_eq!(again.id, blocked);
}
