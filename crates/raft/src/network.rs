//! openraft's network over a [`Transport`]: each Raft RPC is one request whose body is the
//! [`crate::codec`] (postcard) encoding of openraft's request, and whose answer is the encoding
//! of the remote `Result`.
//!
//! Answers are peer input too: a vote term or log index near `u64::MAX` in an answer would reach
//! openraft's `term + 1` just as one in a request would, and some malformed answers trip
//! openraft's assertions or unwraps. They are checked here, against the same [`Bounds`] as
//! requests, and turned into network errors.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::{Bounds, payload_bytes};
use crate::storage::Storage;
use crate::{BasicNode, NodeId, Transport, TypeConfig, method};

/// Makes one [`Conn`] per target.
pub(crate) struct Network {
    pub transport: Arc<dyn Transport>,
    /// The most entry payload one AppendEntries carries; larger batches are split.
    pub max_append_bytes: usize,
    /// What answers are measured against.
    pub storage: Arc<Storage>,
}

/// A connection to one target (stateless: the transport pools connections).
pub(crate) struct Conn {
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
    max_append_bytes: usize,
    storage: Arc<Storage>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Conn {
        Conn {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            max_append_bytes: self.max_append_bytes,
            storage: self.storage.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Conn {
    async fn send<Req, Resp, E>(
        &self,
        method: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = crate::codec::encode(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let bytes = self
            .transport
            .call(&self.addr, method, body, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let answer: Result<Resp, RaftError<NodeId, E>> = crate::codec::decode(&bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A malformed answer, as openraft's network error.
fn bad_answer<E: std::error::Error>(what: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "bad raft answer: {what}"
    ))))
}

fn check_vote(bounds: &Bounds, field: &str, vote: &Vote<NodeId>) -> Result<(), String> {
    bounds.vote(field, vote).map_err(|e| e.to_string())
}

fn check_log_id(
    bounds: &Bounds,
    field: &str,
    log_id: Option<&LogId<NodeId>>,
    max_term: u64,
) -> Result<(), String> {
    bounds
        .log_id(field, log_id, max_term)
        .map_err(|e| e.to_string())
}

/// An AppendEntries answer: a partial success within what was sent, a conflict only where
/// there was a previous entry to conflict with, a higher vote that is higher and bounded.
fn check_append_answer(
    bounds: &Bounds,
    rpc: &AppendEntriesRequest<TypeConfig>,
    answer: &AppendEntriesResponse<NodeId>,
) -> Result<(), String> {
    match answer {
        AppendEntriesResponse::Success => Ok(()),
        AppendEntriesResponse::PartialSuccess(matching) => {
            let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
            let index = |l: Option<LogId<NodeId>>| l.map(|l| l.index);
            if *matching < rpc.prev_log_id
                || *matching > last
                || index(*matching) < index(rpc.prev_log_id)
                || index(*matching) > index(last)
            {
                return Err(format!(
                    "PartialSuccess({matching:?}) is outside the entries sent ({:?}..={last:?})",
                    rpc.prev_log_id
                ));
            }
            Ok(())
        }
        AppendEntriesResponse::Conflict if rpc.prev_log_id.is_none() => {
            Err("Conflict with no previous entry sent".to_string())
        }
        AppendEntriesResponse::Conflict => Ok(()),
        AppendEntriesResponse::HigherVote(vote) => {
            check_vote(bounds, "HigherVote", vote)?;
            if *vote <= rpc.vote {
                return Err(format!("HigherVote({vote}) is not above {}", rpc.vote));
            }
            Ok(())
        }
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        // Split a batch over the payload limit (openraft retries with the hint at once); a
        // single entry goes as it is.
        let mut bytes = 0usize;
        let fit = rpc
            .entries
            .iter()
            .take_while(|e| {
                bytes = bytes.saturating_add(payload_bytes(&e.payload));
                bytes <= self.max_append_bytes
            })
            .count();
        if fit < rpc.entries.len() && rpc.entries.len() > 1 {
            let hint = u64::try_from(fit.max(1)).unwrap_or(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let answer = self.send(method::APPEND_ENTRIES, &rpc, &option).await?;
        check_append_answer(&self.storage.bounds(), &rpc, &answer).map_err(bad_answer)?;
        Ok(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let answer: InstallSnapshotResponse<NodeId> =
            self.send(method::INSTALL_SNAPSHOT, &rpc, &option).await?;
        check_vote(&self.storage.bounds(), "vote", &answer.vote).map_err(bad_answer)?;
        Ok(answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let answer: VoteResponse<NodeId> = self.send(method::VOTE, &rpc, &option).await?;
        let bounds = self.storage.bounds();
        check_vote(&bounds, "vote", &answer.vote)
            .and_then(|()| {
                check_log_id(
                    &bounds,
                    "last_log_id",
                    answer.last_log_id.as_ref(),
                    answer.vote.leader_id.term,
                )
            })
            .map_err(bad_answer)?;
        Ok(answer)
    }
}
