//! Hostile peer input against one durable node: requests that used to break openraft (a term
//! or an index near `u64::MAX`, snapshot chunks far past the end) are refused before openraft
//! sees them, and the node keeps (or regains) its leadership, restarts included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test says where it failed

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caravan_raft::{
    BoxFuture, RaftConfig, RaftError, RaftNode, Transport, TypeConfig, codec, method,
};
use openraft::error::{InstallSnapshotError, RaftError as OpenraftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod common;

use common::{Log, Nowhere, scratch};

fn config(dir: &Path) -> RaftConfig {
    let mut cfg = RaftConfig::new(1, "n1");
    cfg.dir = Some(dir.to_path_buf());
    cfg.heartbeat = Duration::from_millis(50);
    cfg.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
    cfg.write_timeout = Duration::from_secs(3);
    cfg
}

async fn start(dir: &Path) -> RaftNode {
    RaftNode::start(config(dir), Arc::new(Log::default()), Arc::new(Nowhere))
        .await
        .unwrap()
}

/// Waits (bounded: 10 s) until the node leads, then proves it with a write.
async fn leads_and_writes(node: &RaftNode, what: &str) {
    for _ in 0..200 {
        if node.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node.is_leader(), "{what}: no leader: {:?}", node.status());
    node.apply(format!("after {what}").into())
        .await
        .unwrap_or_else(|e| panic!("{what}: write failed: {e}"));
}

fn log_id(term: u64, index: u64) -> Value {
    json!({"leader_id": {"term": term, "node_id": 4242}, "index": index})
}

fn vote(term: u64, committed: bool) -> Value {
    json!({"leader_id": {"term": term, "node_id": 4242}, "committed": committed})
}

/// Tests write requests as JSON for readability; the wire carries them in [`codec`]'s format.
/// A JSON text that is not the method's request goes as it is (and fails to decode there).
fn wire(method: &str, json: &[u8]) -> Vec<u8> {
    fn typed<T: Serialize + DeserializeOwned>(json: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<T>(json) {
            Ok(value) => codec::encode(&value).unwrap(),
            Err(_) => json.to_vec(),
        }
    }
    match method {
        method::VOTE => typed::<VoteRequest<u64>>(json),
        method::APPEND_ENTRIES => typed::<AppendEntriesRequest<TypeConfig>>(json),
        method::INSTALL_SNAPSHOT => typed::<InstallSnapshotRequest<TypeConfig>>(json),
        _ => json.to_vec(), // Raft.Apply: the command's bytes
    }
}

/// An answer off the wire, as JSON for the tests to read.
fn answer_json(method: &str, bytes: &[u8]) -> Vec<u8> {
    fn typed<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&codec::decode::<T>(bytes).unwrap()).unwrap()
    }
    match method {
        method::VOTE => typed::<Result<VoteResponse<u64>, OpenraftError<u64>>>(bytes),
        method::APPEND_ENTRIES => {
            typed::<Result<AppendEntriesResponse<u64>, OpenraftError<u64>>>(bytes)
        }
        method::INSTALL_SNAPSHOT => typed::<
            Result<InstallSnapshotResponse<u64>, OpenraftError<u64, InstallSnapshotError>>,
        >(bytes),
        _ => typed::<Result<caravan_raft::Applied, RaftError>>(bytes),
    }
}

/// [`RaftNode::handle`] with a JSON request and a JSON answer.
async fn handle(node: &RaftNode, method: &str, json: &[u8]) -> Result<Vec<u8>, RaftError> {
    node.handle(method, &wire(method, json))
        .await
        .map(|answer| answer_json(method, &answer))
}

fn bad_request(r: Result<Vec<u8>, RaftError>) -> String {
    match r {
        Err(RaftError::BadRequest(text)) => text,
        other => panic!(
            "expected a bad request, got {:?}",
            other.map(|b| String::from_utf8_lossy(&b).into_owned())
        ),
    }
}

/// C2: one `Raft.Vote` with term and last index `u64::MAX`. openraft would grant it once the
/// leader lease has run out, persist the term, and panic computing `term + 1` at the next
/// election, on every start from the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vote_with_term_u64_max_is_refused_and_not_persisted() {
    let dir = scratch("vote");
    let node = start(&dir).await;
    node.initialize(BTreeMap::from([(1, "n1".to_string())]))
        .await
        .unwrap();
    leads_and_writes(&node, "start").await;
    let evil = json!({
        "vote": vote(u64::MAX, false),
        "last_log_id": log_id(u64::MAX, u64::MAX),
    })
    .to_string();
    // Once inside the leader lease and once after it has run out (the lease is the election
    // timeout's maximum, 400 ms here), when openraft itself would grant the vote.
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(handle(&node, method::VOTE, evil.as_bytes()).await);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    leads_and_writes(&node, "the vote").await;
    assert!(node.status().term < 1000, "{:?}", node.status());
    for answer in answers {
        let text = bad_request(answer);
        assert!(text.contains("vote.term"), "{text}");
    }
    // Nothing was persisted: a restart from the same directory leads again.
    node.shutdown().await;
    drop(node);
    let node = start(&dir).await;
    leads_and_writes(&node, "a restart").await;
    assert!(node.status().term < 1000, "{:?}", node.status());
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn entry(term: u64, index: u64) -> Value {
    json!({"log_id": log_id(term, index), "payload": {"Normal": b"junk"}})
}

fn snapshot_chunk(
    term: u64,
    last: Value,
    id: &str,
    offset: u64,
    data: &[u8],
    done: bool,
) -> String {
    json!({
        "vote": vote(term, true),
        "meta": {
            "last_log_id": last,
            "last_membership": {
                "log_id": null,
                "membership": {"configs": [[1]], "nodes": {"1": {"addr": "n1"}}},
            },
            "snapshot_id": id,
        },
        "offset": offset,
        "data": data,
        "done": done,
    })
    .to_string()
}

/// Terms and log indices from peers that no legitimate peer sends (far ahead of this node's,
/// or entries that do not follow each other) are refused, naming the field, and change
/// nothing: the node keeps leading with its own small term and log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_terms_and_indices_are_refused_naming_the_field() {
    let dir = scratch("bounds");
    let node = start(&dir).await;
    node.initialize(BTreeMap::from([(1, "n1".to_string())]))
        .await
        .unwrap();
    leads_and_writes(&node, "start").await;
    let max = u64::MAX;
    let far = 1u64 << 41;
    let ae = |v: Value, prev: Value, commit: Value, entries: Vec<Value>| {
        json!({"vote": v, "prev_log_id": prev, "leader_commit": commit, "entries": entries})
            .to_string()
    };
    // A request in the node's own name (it is node 1).
    let own = json!({"leader_id": {"term": 4, "node_id": 1}, "committed": true});
    let cases: Vec<(&str, &str, String)> = vec![
        (
            method::VOTE,
            "vote.term",
            json!({"vote": vote(max, false), "last_log_id": null}).to_string(),
        ),
        (
            method::VOTE,
            "last_log_id.index",
            json!({"vote": vote(5, false), "last_log_id": log_id(5, max)}).to_string(),
        ),
        (
            method::VOTE,
            "last_log_id.index",
            json!({"vote": vote(5, false), "last_log_id": log_id(5, far)}).to_string(),
        ),
        (
            method::VOTE,
            "last_log_id.term",
            json!({"vote": vote(5, false), "last_log_id": log_id(6, 1)}).to_string(),
        ),
        (
            method::APPEND_ENTRIES,
            "vote.term",
            ae(vote(max, true), Value::Null, Value::Null, vec![]),
        ),
        (
            method::APPEND_ENTRIES,
            "vote.term",
            ae(vote(1 << 21, true), Value::Null, Value::Null, vec![]),
        ),
        (
            method::APPEND_ENTRIES,
            "prev_log_id.index",
            ae(vote(5, true), log_id(5, max), Value::Null, vec![]),
        ),
        (
            method::APPEND_ENTRIES,
            "leader_commit.index",
            ae(vote(5, true), Value::Null, log_id(5, max), vec![]),
        ),
        (
            method::APPEND_ENTRIES,
            "entries[0].log_id.index",
            ae(vote(5, true), Value::Null, Value::Null, vec![entry(5, max)]),
        ),
        (
            method::APPEND_ENTRIES,
            "entries[1].log_id.index",
            ae(
                vote(5, true),
                log_id(1, 7),
                Value::Null,
                vec![entry(5, 8), entry(5, 10)],
            ),
        ),
        (
            method::APPEND_ENTRIES,
            "entries[0].log_id.term",
            ae(vote(5, true), log_id(1, 7), Value::Null, vec![entry(6, 8)]),
        ),
        (
            method::APPEND_ENTRIES,
            "vote.committed",
            ae(vote(4, false), Value::Null, Value::Null, vec![]),
        ),
        (
            method::APPEND_ENTRIES,
            "vote.leader_id.node_id",
            ae(own.clone(), Value::Null, Value::Null, vec![]),
        ),
        (
            method::VOTE,
            "vote.leader_id.node_id",
            json!({"vote": own, "last_log_id": null}).to_string(),
        ),
        (
            // Two leaders of term 4: node 4242 (the vote's) and node 77. Index 2 is the last
            // entry here, node 1's write of term 1.
            method::APPEND_ENTRIES,
            "entries[0].log_id.leader_id.node_id",
            ae(
                vote(4, true),
                json!({"leader_id": {"term": 1, "node_id": 1}, "index": 2}),
                Value::Null,
                vec![
                    json!({"log_id": {"leader_id": {"term": 4, "node_id": 77}, "index": 3},
                            "payload": {"Normal": b"junk"}}),
                ],
            ),
        ),
        (
            // Index 1 is committed here as node 1's entry of term 1.
            method::APPEND_ENTRIES,
            "prev_log_id T1-N4242-1 conflicts with the committed log",
            ae(vote(4, true), log_id(1, 1), Value::Null, vec![]),
        ),
        (
            method::INSTALL_SNAPSHOT,
            "vote.term",
            snapshot_chunk(max, log_id(1, 5), "s", 0, b"[]", true),
        ),
        (
            method::INSTALL_SNAPSHOT,
            "vote.committed",
            snapshot_chunk(4, log_id(1, 5), "s", 0, b"[]", true)
                .replace("\"committed\":true", "\"committed\":false"),
        ),
        (
            method::INSTALL_SNAPSHOT,
            "meta.last_log_id.index",
            snapshot_chunk(5, log_id(5, max), "s", 0, b"[]", true),
        ),
    ];
    for (method, field, body) in &cases {
        let text = bad_request(handle(&node, method, body.as_bytes()).await);
        assert!(text.contains(field), "{method} {field}: {text}");
    }
    leads_and_writes(&node, "the refused requests").await;
    let status = node.status();
    assert!(status.term < 5, "{status:?}");
    assert!(status.last_log_index < 10, "{status:?}");
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a caller of `Raft.InstallSnapshot` decodes: openraft's answer, as JSON.
fn snapshot_answer(r: Result<Vec<u8>, RaftError>) -> Value {
    let body = r.unwrap_or_else(|e| panic!("expected an answer, got {e:?}"));
    serde_json::from_slice(&body).unwrap()
}

/// C3: a first chunk at offset 0, then a second on the same snapshot ID at offset 2^40. openraft
/// seeks its `Cursor<Vec<u8>>` there and zero-fills a terabyte. The chunk is refused (with
/// openraft's `SnapshotMismatch`, which makes a real leader start over) without allocating;
/// over-long chunks and transfers are refused; an honest transfer still installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunk_far_past_the_end_is_refused_without_allocating() {
    let mut cfg = RaftConfig::new(1, "n1");
    cfg.max_snapshot_bytes = 1024;
    let log = Arc::new(Log::default());
    let node = RaftNode::start(cfg, log.clone(), Arc::new(Nowhere))
        .await
        .unwrap();
    let last = || log_id(100, 1000);
    let first = snapshot_chunk(100, last(), "x", 0, &[1, 2, 3], false);
    let answer = snapshot_answer(handle(&node, method::INSTALL_SNAPSHOT, first.as_bytes()).await);
    assert!(answer.get("Ok").is_some(), "{answer}");
    let evil = snapshot_chunk(100, last(), "x", 1 << 40, &[1, 2, 3], false);
    let answer = snapshot_answer(handle(&node, method::INSTALL_SNAPSHOT, evil.as_bytes()).await);
    assert_eq!(
        answer["Err"]["APIError"]["SnapshotMismatch"]["expect"]["offset"], 3,
        "{answer}"
    );
    assert!(
        node.snapshot_receive_bytes() <= 1024,
        "{}",
        node.snapshot_receive_bytes()
    );
    // A gap, or a chunk for another snapshot that does not start at 0, is refused too.
    for (id, offset) in [("x", 4), ("x", 2), ("y", 3)] {
        let chunk = snapshot_chunk(100, last(), id, offset, &[1], false);
        let answer =
            snapshot_answer(handle(&node, method::INSTALL_SNAPSHOT, chunk.as_bytes()).await);
        assert!(
            answer["Err"]["APIError"]["SnapshotMismatch"].is_object(),
            "{id}@{offset}: {answer}"
        );
    }
    // One chunk over the bound; then a transfer that grows past it (its buffer is dropped).
    let big = snapshot_chunk(100, last(), "z", 0, &[b' '; 1025], false);
    let text = bad_request(handle(&node, method::INSTALL_SNAPSHOT, big.as_bytes()).await);
    assert!(text.contains("data: 1025 bytes"), "{text}");
    let half = |offset| snapshot_chunk(100, last(), "z", offset, &[b' '; 600], false);
    let answer = snapshot_answer(handle(&node, method::INSTALL_SNAPSHOT, half(0).as_bytes()).await);
    assert!(answer.get("Ok").is_some(), "{answer}");
    let text = bad_request(handle(&node, method::INSTALL_SNAPSHOT, half(600).as_bytes()).await);
    assert!(text.contains("max_snapshot_bytes"), "{text}");
    assert_eq!(node.snapshot_receive_bytes(), 0);
    // An honest transfer, in two chunks, is installed.
    let data = br#"["a","b"]"#;
    for (offset, part, done) in [(0, &data[..4], false), (4, &data[4..], true)] {
        let chunk = snapshot_chunk(100, last(), "honest", offset, part, done);
        let answer =
            snapshot_answer(handle(&node, method::INSTALL_SNAPSHOT, chunk.as_bytes()).await);
        assert!(answer.get("Ok").is_some(), "{answer}");
    }
    assert!(node.wait_applied(1000, Duration::from_secs(10)).await);
    assert_eq!(*log.0.lock(), ["a", "b"]);
    assert_eq!(node.snapshot_receive_bytes(), 0);
    node.shutdown().await;
}

/// M4: junk applied through `Raft.Apply` was kept (fsynced, replicated, held in memory).
/// Commands over `max_command_bytes`, and AppendEntries over the entry count or payload bound,
/// are refused and never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_commands_and_batches_are_refused() {
    let dir = scratch("size");
    let mut cfg = config(&dir);
    cfg.max_command_bytes = 100;
    cfg.max_append_bytes = 100;
    let node = RaftNode::start(cfg, Arc::new(Log::default()), Arc::new(Nowhere))
        .await
        .unwrap();
    node.initialize(BTreeMap::from([(1, "n1".to_string())]))
        .await
        .unwrap();
    leads_and_writes(&node, "start").await;
    let before = node.status().last_log_index;
    let junk = "j".repeat(101);
    let err = node.apply(junk.clone().into()).await.unwrap_err();
    assert!(
        matches!(&err, RaftError::BadRequest(t) if t.contains("max_command_bytes")),
        "{err:?}"
    );
    let answer: Result<Value, RaftError> =
        serde_json::from_slice(&handle(&node, method::APPLY, junk.as_bytes()).await.unwrap())
            .unwrap();
    assert!(
        matches!(&answer, Err(RaftError::BadRequest(t)) if t.contains("max_command_bytes")),
        "{answer:?}"
    );
    let batch = |entries: Vec<Value>| {
        json!({"vote": vote(5, true), "prev_log_id": log_id(1, before), "leader_commit": null,
               "entries": entries})
        .to_string()
    };
    let normal = |index: u64| json!({"log_id": log_id(5, index), "payload": {"Normal": "n".repeat(60).into_bytes()}});
    let two = batch(vec![normal(before + 1), normal(before + 2)]);
    let text = bad_request(handle(&node, method::APPEND_ENTRIES, two.as_bytes()).await);
    assert!(text.contains("max_append_bytes"), "{text}");
    let blanks = (1..=1025)
        .map(|i| json!({"log_id": log_id(5, before + i), "payload": "Blank"}))
        .collect();
    let text = bad_request(handle(&node, method::APPEND_ENTRIES, batch(blanks).as_bytes()).await);
    assert!(text.contains("1025 entries"), "{text}");
    assert_eq!(node.status().last_log_index, before);
    assert!(node.is_leader());
    node.apply("k".repeat(100).into()).await.unwrap();
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer that answers with what openraft cannot take: a vote or a higher vote at term
/// `u64::MAX` (openraft adopts it, then overflows `term + 1` at the next election). Such
/// answers are dropped as network errors; once the peer answers sanely, the node leads.
struct FakePeer {
    /// 0: hostile votes; 1: honest votes, hostile appends; 2: honest.
    phase: std::sync::atomic::AtomicU8,
    /// How many hostile answers were given.
    hostile: std::sync::atomic::AtomicUsize,
}

impl Transport for FakePeer {
    fn call(
        &self,
        _addr: &str,
        method: &'static str,
        body: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>> {
        let phase = self.phase.load(std::sync::atomic::Ordering::SeqCst);
        let req: Value = match method {
            method::VOTE => codec::decode::<VoteRequest<u64>>(&body)
                .ok()
                .and_then(|r| serde_json::to_value(r).ok())
                .unwrap_or_default(),
            _ => Value::Null,
        };
        if matches!(
            (method, phase),
            (method::VOTE, 0) | (method::APPEND_ENTRIES, 1)
        ) {
            self.hostile
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let answer = match (method, phase) {
            (method::VOTE, 0) => json!({"Ok": {"vote": vote(u64::MAX, false),
                "vote_granted": false, "last_log_id": null}}),
            (method::VOTE, _) => json!({"Ok": {"vote": req["vote"],
                "vote_granted": true, "last_log_id": null}}),
            (method::APPEND_ENTRIES, 1) => json!({"Ok": {"HigherVote": vote(u64::MAX, true)}}),
            (method::APPEND_ENTRIES, _) => json!({"Ok": "Success"}),
            _ => return Box::pin(async { Err("unexpected".to_string()) }),
        };
        let wire = match method {
            method::VOTE => codec::encode(
                &serde_json::from_value::<Result<VoteResponse<u64>, OpenraftError<u64>>>(answer)
                    .unwrap(),
            ),
            _ => codec::encode(
                &serde_json::from_value::<Result<AppendEntriesResponse<u64>, OpenraftError<u64>>>(
                    answer,
                )
                .unwrap(),
            ),
        };
        Box::pin(async move { wire })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_term_u64_max_are_dropped() {
    let peer = Arc::new(FakePeer {
        phase: Default::default(),
        hostile: Default::default(),
    });
    let mut cfg = RaftConfig::new(1, "n1");
    cfg.heartbeat = Duration::from_millis(50);
    cfg.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
    let node = RaftNode::start(cfg, Arc::new(Log::default()), peer.clone())
        .await
        .unwrap();
    node.initialize(BTreeMap::from([
        (1, "n1".to_string()),
        (2, "n2".to_string()),
    ]))
    .await
    .unwrap();
    // Wait (bounded) for a few elections, each answered with term u64::MAX.
    let mut watch = node.watch();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|m| m.current_term >= 3),
    )
    .await;
    assert!(
        (3..1000).contains(&node.status().term),
        "{:?}",
        node.status()
    );
    // Honest votes: it leads; appends answered with a higher vote at u64::MAX do not unseat it.
    peer.phase.store(1, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..200 {
        if node.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node.is_leader(), "{:?}", node.status());
    let seen = peer.hostile.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..200 {
        if peer.hostile.load(std::sync::atomic::Ordering::SeqCst) >= seen + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(peer.hostile.load(std::sync::atomic::Ordering::SeqCst) >= seen + 3);
    assert!(node.status().term < 1000, "{:?}", node.status());
    peer.phase.store(2, std::sync::atomic::Ordering::SeqCst);
    leads_and_writes(&node, "honest answers").await;
    node.shutdown().await;
}

/// M1: `raft.db` holds every secret in the log and was world-readable (0644 in 0755
/// directories). The directories the node creates are 0700 and the file 0600, and wider
/// modes are narrowed again at the next start. A parent that already existed is left alone.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_files_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        format!(
            "{:o}",
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        )
    };
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let base = scratch("modes");
    std::fs::create_dir(&base).unwrap();
    set(&base, 0o755).unwrap();
    let server = base.join("server");
    let dir = server.join("raft");
    let db = dir.join("raft.db");
    let node = start(&dir).await;
    assert_eq!(
        (mode(&base), mode(&server), mode(&dir), mode(&db)),
        ("755".into(), "700".into(), "700".into(), "600".into())
    );
    node.shutdown().await;
    drop(node);
    set(&dir, 0o755).unwrap();
    set(&db, 0o644).unwrap();
    let node = start(&dir).await;
    assert_eq!((mode(&dir), mode(&db)), ("700".into(), "600".into()));
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}
