//! The bodies of the RPC methods between client agents and servers (`Node.*`, `ClientAgent.*`):
//! one type per request and answer, shared by both sides so they cannot differ, each checked
//! where it is decoded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jobs::{Allocation, Node};

/// The longest a client's allocation query may block.
pub const MAX_ALLOCS_WAIT_MS: u64 = 5 * 60 * 1000;

/// `Node.Register`: the node, with the secret it will present from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The fingerprinted node (status is set by the server).
    pub node: Node,
}

/// `Node.UpdateStatus`: a heartbeat (status `ready`) or a status a client reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatusRequest {
    /// The node.
    pub node_id: String,
    /// Its secret.
    pub secret_id: String,
    /// The status it reports (`ready` for a heartbeat).
    pub status: String,
    /// Set by a server passing the heartbeat on to the leader (the client's connection is
    /// the forwarding server's, not this one's).
    #[serde(default)]
    pub forwarded: bool,
}

/// What `Node.Register` and `Node.UpdateStatus` answer: when to heartbeat next and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The TTL the leader gives this node, in milliseconds: heartbeat again within it.
    pub heartbeat_ttl_ms: u64,
    /// The RPC addresses of the region's servers, for the client's server list.
    pub servers: Vec<String>,
    /// The leader's RPC address, when known.
    pub leader: String,
}

/// `Node.GetClientAllocs`: the allocations on a node once the allocation table passes
/// `min_index`, waiting at most `wait_ms` ([`MAX_ALLOCS_WAIT_MS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAllocsRequest {
    /// The node.
    pub node_id: String,
    /// Its secret.
    pub secret_id: String,
    /// Block until the allocation table's index is above this.
    pub min_index: u64,
    /// The longest wait, in milliseconds.
    pub wait_ms: u64,
}

/// The allocations placed on a node, at an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAllocsReply {
    /// The allocations.
    pub allocs: Vec<Allocation>,
    /// The index they are current at.
    pub index: u64,
}

/// `Node.UpdateAlloc`: client statuses of allocations on the caller's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocUpdateRequest {
    /// The node.
    pub node_id: String,
    /// Its secret.
    pub secret_id: String,
    /// Allocation ID → client status (`running`, `complete`, `failed`).
    pub updates: BTreeMap<String, String>,
}

/// `Node.HasConn`: does the server asked hold this node's connection?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HasConnRequest {
    /// The node.
    pub node_id: String,
}

/// `ClientAgent.*`: a request for a client node, through a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForNode<T> {
    /// The client node the request is for.
    pub node_id: String,
    /// The request, as the `Agent.*` method takes it.
    pub request: T,
    /// Set by a server passing the request on to the server that holds the node's
    /// connection: that one serves it or answers `No path to node`, never forwards again.
    #[serde(default)]
    pub forwarded: bool,
}

/// The most times one HTTP request is passed between agents (a client-only agent to a server,
/// that server to a server of the region asked for).
pub const MAX_FORWARD_HOPS: u8 = 2;

/// `HTTP.Forward`: an HTTP API request passed to a server (of another region, or from an
/// agent that runs none), served there by the same HTTP application. The user's token travels
/// in the call header, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedRequest {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The path and query, as the user sent them.
    pub path_and_query: String,
    /// `Content-Type`, when the request had one.
    #[serde(default)]
    pub content_type: Option<String>,
    /// How many agents passed it on so far (at most [`MAX_FORWARD_HOPS`]).
    pub hops: u8,
}

/// The first chunk of an `HTTP.Forward` answer: the response head. The body follows as
/// chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedHead {
    /// The HTTP status.
    pub status: u16,
    /// Response headers (hop-by-hop ones left out).
    pub headers: Vec<(String, String)>,
}

impl ForwardedRequest {
    /// The call body: `[head length u32 BE][head JSON][request body]`.
    pub fn encode(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let head = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        let len = u32::try_from(head.len()).map_err(|_| "request head too large".to_string())?;
        let mut out = Vec::with_capacity(4 + head.len() + body.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Splits what [`ForwardedRequest::encode`] wrote; the texts name what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<(ForwardedRequest, &[u8]), String> {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("forwarded request: missing head length")?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err("forwarded request: head longer than the call".into());
        }
        let (head, body) = rest.split_at(len);
        let head: ForwardedRequest = serde_json::from_slice(head)
            .map_err(|e| format!("forwarded request: bad head: {e}"))?;
        if head.hops > MAX_FORWARD_HOPS {
            return Err(format!(
                "forwarded request: passed on {} times; at most {MAX_FORWARD_HOPS}",
                head.hops
            ));
        }
        if !head.path_and_query.starts_with("/v1/") || head.path_and_query.len() > 8192 {
            return Err("forwarded request: not an API path".into());
        }
        Ok((head, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, hops: u8) -> ForwardedRequest {
        ForwardedRequest {
            method: "GET".into(),
            path_and_query: path.into(),
            content_type: None,
            hops,
        }
    }

    fn check(bytes: &[u8], expected: Result<(&str, &[u8]), &str>) {
        match (ForwardedRequest::decode(bytes), expected) {
            (Ok((head, body)), Ok((path, want))) => {
                assert_eq!((head.path_and_query.as_str(), body), (path, want))
            }
            (Err(e), Err(want)) => assert!(e.contains(want), "{e}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn forwarded_requests_round_trip_and_bad_ones_are_named() {
        let ok = request("/v1/jobs?region=eu", 1).encode(b"{}").unwrap();
        check(&ok, Ok(("/v1/jobs?region=eu", b"{}")));
        check(&[0, 0], Err("missing head length"));
        check(&[0, 0, 1, 0, b'{'], Err("head longer than the call"));
        check(&[0, 0, 0, 1, b'{'], Err("bad head"));
        let far = request("/v1/jobs", MAX_FORWARD_HOPS + 1)
            .encode(b"")
            .unwrap();
        check(&far, Err("at most 2"));
        let elsewhere = request("http://evil/", 0).encode(b"").unwrap();
        check(&elsewhere, Err("not an API path"));
    }
}
