//! Raft messages and snapshot chunks through [`RaftNode::handle`], the entry point a server's
//! RPC handler gives every `Raft.*` call, on a one-server in-memory node whose state machine
//! is the real [`ClusterState`] (a complete snapshot is restored into it).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use caravan_cluster::ClusterState;
use caravan_raft::{BoxFuture, RaftConfig, RaftNode, Transport, TypeConfig, codec, method};
use caravan_sched::broker::EvalBroker;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde_json::{Value, json};

/// The methods an input picks from (byte 0).
pub const METHODS: [&str; 5] = [
    method::APPEND_ENTRIES,
    method::VOTE,
    method::INSTALL_SNAPSHOT,
    method::APPLY,
    method::READ_INDEX,
];

/// The most one call may take: a write waits for its commit (at most the node's 1 s write
/// timeout), everything else answers at once.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// A one-server cluster has nobody to call.
struct Nowhere;

impl Transport for Nowhere {
    fn call(
        &self,
        _addr: &str,
        _method: &'static str,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, String>> {
        Box::pin(async { Err("no peers".to_string()) })
    }
}

fn node() -> &'static RaftNode {
    static NODE: OnceLock<RaftNode> = OnceLock::new();
    NODE.get_or_init(|| {
        crate::runtime().block_on(async {
            let mut config = RaftConfig::new(1, "n1");
            config.heartbeat = Duration::from_millis(50);
            config.election_timeout = (Duration::from_millis(150), Duration::from_millis(300));
            config.write_timeout = Duration::from_secs(1);
            config.snapshot_every = 256;
            let state = Arc::new(ClusterState::new(
                Arc::new(EvalBroker::new(Default::default())),
                [3; 32],
            ));
            let node = match RaftNode::start(config, state, Arc::new(Nowhere)).await {
                Ok(node) => node,
                Err(e) => panic!("the raft node does not start: {e}"),
            };
            let voters = [(1, "n1".to_string())].into_iter().collect();
            if let Err(e) = node.initialize(voters).await {
                panic!("the raft node does not initialize: {e}");
            }
            node
        })
    })
}

/// One Raft RPC: `[method][body]`, `method` indexing [`METHODS`]; the body is what a peer
/// sends (postcard requests, or a command's bytes for `Raft.Apply`).
///
/// Invariant: no panic (openraft asserts on peers' numbers; `caravan_raft::limits` must refuse
/// those first) and an answer within [`ANSWER_WITHIN`], whatever a peer sends; a request body
/// that decodes ([`codec`]) encodes back to bytes that decode to the same request (decode →
/// encode → decode round trip, see [`request_round_trip`]). The node lives for the whole
/// process: its term, log and snapshot buffer carry over from input to input, as a real
/// server's do.
pub fn raft(data: &[u8]) {
    let [pick, body @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*pick) % METHODS.len()];
    request_round_trip(method, body);
    let node = node();
    let answered = crate::runtime()
        .block_on(async { tokio::time::timeout(ANSWER_WITHIN, node.handle(method, body)).await });
    assert!(
        answered.is_ok(),
        "{method}: no answer within {ANSWER_WITHIN:?}"
    );
}

/// The round trip of the request `method` carries, when `body` decodes as it: encoded again and
/// decoded, it is the same request (compared as values where openraft's type compares, and
/// always as encodings: the second encoding equals the first). `Raft.Apply`'s body is a
/// command's bytes (the `cluster` target's round trip) and `Raft.ReadIndex`'s is empty.
pub fn request_round_trip(method: &str, body: &[u8]) {
    match method {
        method::APPEND_ENTRIES => {
            round_trip::<AppendEntriesRequest<TypeConfig>>(method, body);
        }
        method::VOTE => {
            if let Some((first, again)) = round_trip::<VoteRequest<u64>>(method, body) {
                assert_eq!(again, first, "{method}: decoded again, another request");
            }
        }
        method::INSTALL_SNAPSHOT => {
            if let Some((first, again)) =
                round_trip::<InstallSnapshotRequest<TypeConfig>>(method, body)
            {
                assert_eq!(again, first, "{method}: decoded again, another request");
            }
        }
        _ => {}
    }
}

/// `body` decoded, encoded, decoded and encoded again: the two values, after checking that the
/// two encodings are equal; `None` when `body` does not decode.
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(
    what: &str,
    body: &[u8],
) -> Option<(T, T)> {
    let first: T = codec::decode(body).ok()?;
    let printed = match codec::encode(&first) {
        Ok(p) => p,
        Err(e) => panic!("{what}: a decoded request does not encode: {e}"),
    };
    let again: T = match codec::decode(&printed) {
        Ok(a) => a,
        Err(e) => panic!("{what}: a decoded request encodes to bytes that do not decode: {e}"),
    };
    match codec::encode(&again) {
        Ok(reprinted) => assert_eq!(
            reprinted, printed,
            "{what}: decoded, encoded and decoded again, it encodes otherwise"
        ),
        Err(e) => panic!("{what}: a request decoded twice does not encode: {e}"),
    }
    Some((first, again))
}

fn log_id(term: u64, index: u64) -> Value {
    json!({"leader_id": {"term": term, "node_id": 4242}, "index": index})
}

fn vote(term: u64, committed: bool) -> Value {
    json!({"leader_id": {"term": term, "node_id": 4242}, "committed": committed})
}

fn encoded<T: serde::Serialize + serde::de::DeserializeOwned>(value: Value) -> Vec<u8> {
    serde_json::from_value::<T>(value)
        .ok()
        .and_then(|typed| codec::encode(&typed).ok())
        .unwrap_or_default()
}

fn with_method(pick: usize, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![u8::try_from(pick).unwrap_or(0)];
    out.extend(body);
    out
}

/// Seed inputs: a vote, appends with and without entries, snapshot chunks (the first of a
/// cluster snapshot, and a whole one), a write and a read index.
pub fn seeds() -> Vec<Vec<u8>> {
    let snapshot = caravan_cluster::command::encode(&caravan_cluster::StateSnapshot::default())
        .unwrap_or_default();
    let entry = |index: u64| json!({"log_id": log_id(1, index), "payload": {"Normal": [2, 0]}});
    let chunk = |offset: u64, data: &[u8], done: bool| {
        json!({
            "vote": vote(1, true),
            "meta": {
                "last_log_id": log_id(1, 3),
                "last_membership": {
                    "log_id": null,
                    "membership": {"configs": [[1]], "nodes": {"1": {"addr": "n1"}}},
                },
                "snapshot_id": "1-3-fuzz",
            },
            "offset": offset,
            "data": data,
            "done": done,
        })
    };
    vec![
        with_method(
            1,
            encoded::<VoteRequest<u64>>(
                json!({"vote": vote(2, false), "last_log_id": log_id(1, 1)}),
            ),
        ),
        with_method(
            0,
            encoded::<AppendEntriesRequest<TypeConfig>>(json!({
                "vote": vote(1, true), "prev_log_id": null, "leader_commit": null, "entries": [],
            })),
        ),
        with_method(
            0,
            encoded::<AppendEntriesRequest<TypeConfig>>(json!({
                "vote": vote(1, true), "prev_log_id": log_id(1, 1),
                "leader_commit": log_id(1, 2), "entries": [entry(2), entry(3)],
            })),
        ),
        with_method(
            2,
            encoded::<InstallSnapshotRequest<TypeConfig>>(chunk(0, &snapshot, true)),
        ),
        with_method(
            2,
            encoded::<InstallSnapshotRequest<TypeConfig>>(chunk(0, &snapshot[..1], false)),
        ),
        with_method(3, snapshot.clone()),
        with_method(4, Vec::new()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_codecs::{Lossy, panics};

    #[test]
    fn the_round_trip_check_fails_a_codec_that_encodes_otherwise() {
        let rows: [(&str, &dyn Fn(), bool); 4] = [
            (
                "a faithful u64",
                &|| {
                    let _ = round_trip::<u64>("u64", &[7]);
                },
                false,
            ),
            (
                "a lossy u8",
                &|| {
                    let _ = round_trip::<Lossy>("lossy", &[7]);
                },
                true,
            ),
            (
                "trailing bytes: no decode",
                &|| {
                    let _ = round_trip::<Lossy>("lossy", &[7, 7]);
                },
                false,
            ),
            (
                "the seeds' requests",
                &|| {
                    for seed in seeds() {
                        let [pick, body @ ..] = seed.as_slice() else {
                            continue;
                        };
                        let method = METHODS[usize::from(*pick) % METHODS.len()];
                        request_round_trip(method, body);
                    }
                },
                false,
            ),
        ];
        for (what, f, fails) in rows {
            assert_eq!(panics(f), fails, "{what}");
        }
    }

    #[test]
    fn the_seeds_hold_a_request_of_every_checked_kind() {
        let decoded = |method: &str| {
            seeds().iter().any(|seed| match seed.as_slice() {
                [pick, body @ ..] if METHODS[usize::from(*pick) % METHODS.len()] == method => {
                    match method {
                        method::APPEND_ENTRIES => {
                            codec::decode::<AppendEntriesRequest<TypeConfig>>(body).is_ok()
                        }
                        method::VOTE => codec::decode::<VoteRequest<u64>>(body).is_ok(),
                        _ => codec::decode::<InstallSnapshotRequest<TypeConfig>>(body).is_ok(),
                    }
                }
                _ => false,
            })
        };
        for method in [
            method::APPEND_ENTRIES,
            method::VOTE,
            method::INSTALL_SNAPSHOT,
        ] {
            assert!(decoded(method), "no seed of {method} decodes");
        }
    }
}
