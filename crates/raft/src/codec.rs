//! The wire format of Raft messages between servers: postcard, a compact binary serde format
//! (varint integers, raw bytes), so snapshot chunks travel as bytes instead of JSON arrays of
//! numbers and a heartbeat is a few dozen bytes. Requests, answers and errors all go through
//! here, and so does everything the log keeps on disk.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a Raft message.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|e| format!("raft codec: {e}"))
}

/// Decodes a Raft message; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| format!("raft codec: {e}"))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(format!("raft codec: {} trailing bytes", rest.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TypeConfig;
    use openraft::raft::{InstallSnapshotRequest, VoteRequest};

    #[test]
    fn messages_round_trip_and_chunks_travel_as_bytes() {
        let chunk: InstallSnapshotRequest<TypeConfig> = serde_json::from_value(serde_json::json!({
            "vote": {"leader_id": {"term": 3, "node_id": 1}, "committed": true},
            "meta": {"last_log_id": {"leader_id": {"term": 3, "node_id": 1}, "index": 9},
                     "last_membership": {"log_id": null, "membership": {"configs": [[1]],
                     "nodes": {"1": {"addr": "127.0.0.1:4647"}}}}, "snapshot_id": "s"},
            "offset": 0, "data": vec![200u8; 3000], "done": false
        }))
        .unwrap();
        let wire = encode(&chunk).unwrap();
        let back: InstallSnapshotRequest<TypeConfig> = decode(&wire).unwrap();
        assert_eq!(back, chunk);
        let json = serde_json::to_vec(&chunk).unwrap();
        assert!(
            wire.len() * 3 < json.len(),
            "{} vs {}",
            wire.len(),
            json.len()
        );
        let vote: VoteRequest<u64> = serde_json::from_value(serde_json::json!({
            "vote": {"leader_id": {"term": 3, "node_id": 1}, "committed": false},
            "last_log_id": null
        }))
        .unwrap();
        let mut wire = encode(&vote).unwrap();
        assert_eq!(decode::<VoteRequest<u64>>(&wire).unwrap(), vote);
        wire.push(0);
        assert!(
            decode::<VoteRequest<u64>>(&wire)
                .unwrap_err()
                .contains("trailing")
        );
    }
}
