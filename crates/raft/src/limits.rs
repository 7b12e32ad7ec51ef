//! Bounds on what peers send, checked in [`crate::RaftNode::handle`] before openraft sees a
//! request, and on what they answer, checked in the network before openraft sees a reply.
//!
//! openraft trusts its peers: it adds one to a term it was given, indexes its log with the
//! indices it was given, and writes snapshot chunks wherever their offset says. A peer (hostile,
//! buggy or a forged request) could send a term of `u64::MAX` that overflows at the next
//! election and is persisted, so the node breaks for good (C2 in the security review), or an
//! index near `u64::MAX` that overflows the log's arithmetic. Legitimate values are far from
//! these bounds: a term grows by one per election, an index by one per write.
//!
//! Bounds are relative to this node's durable state (so a peer cannot move it far in one
//! step) and absolute (so nothing ever gets near `u64::MAX`).

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{EntryPayload, LogId, Vote};

use crate::{NodeId, RaftError, TypeConfig};

/// How far above the local durable term a peer's term may be, in a request or an answer: 2^20
/// (about a million).
///
/// It cannot be small. Terms grow by one per election, and a legitimate peer can be far ahead:
/// a new server starts at term 0 and must follow a leader at the cluster's term (a cluster that
/// has been through thousands of elections is not unusual over its life; a learner never
/// campaigns, so it could never catch up otherwise), and a server cut off from the others
/// campaigns about once per election timeout (some 4,000 times an hour by default). 2^20
/// covers a million elections, or nine days alone. It still keeps a peer from ever getting
/// near `u64::MAX`: reaching [`MAX_TERM`] takes 2^42 accepted (and fsynced) requests.
pub const MAX_TERM_JUMP: u64 = 1 << 20;

/// The highest term accepted from a peer in any case: far from `u64::MAX`, so `term + 1` can
/// never overflow, in Caravan or in openraft.
pub const MAX_TERM: u64 = 1 << 62;

/// How far beyond the local last log index a peer's log index may be: 2^40 writes, more than
/// a cluster makes in years. A node that is far behind is brought up to date with a snapshot
/// whose index is within this bound of its own.
pub const MAX_INDEX_JUMP: u64 = 1 << 40;

/// The highest log index accepted from a peer in any case: far from `u64::MAX`, so
/// `index + 1` can never overflow.
pub const MAX_INDEX: u64 = 1 << 62;

/// The most entries one `Raft.AppendEntries` may carry. The leader sends at most
/// [`APPEND_ENTRIES_BATCH`], so this leaves room for a peer configured differently.
pub const MAX_APPEND_ENTRIES: usize = 1_024;

/// How many entries this node's leader puts in one AppendEntries (openraft's
/// `max_payload_entries`); at most [`MAX_APPEND_ENTRIES`].
pub const APPEND_ENTRIES_BATCH: u64 = 256;

/// The default for [`crate::RaftConfig::max_command_bytes`]: 4 MiB, four times the HTTP API's
/// 1 MiB body limit, so any command built from one HTTP request fits (and an ACL state of some
/// ten thousand tokens, which `AclReplace` carries whole), yet junk sent through `Raft.Apply`
/// cannot fill memory and disk in a few calls.
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 4 << 20;

/// The default for [`crate::RaftConfig::max_append_bytes`]: 16 MiB of entry payload per
/// AppendEntries. The leader splits batches to fit it.
pub const DEFAULT_MAX_APPEND_BYTES: usize = 16 << 20;

/// The default for [`crate::RaftConfig::max_snapshot_bytes`]: 256 MiB.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// The most data one `Raft.InstallSnapshot` chunk may carry: 16 MiB. openraft's leader sends
/// chunks of 3 MiB (its `snapshot_max_chunk_size`).
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize = 16 << 20;

/// The longest snapshot ID accepted from a peer (Caravan's are a log ID and a counter).
pub const MAX_SNAPSHOT_ID_BYTES: usize = 256;

/// What a peer's terms and indices are measured against: this node's durable vote term and
/// last known log index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The local current term.
    pub term: u64,
    /// The local last log index (0 when empty); snapshot and purge points included.
    pub last_index: u64,
    /// The newest log ID known committed here.
    pub committed: Option<LogId<NodeId>>,
}

impl Bounds {
    /// The highest term a peer may send.
    pub fn max_term(&self) -> u64 {
        self.term.saturating_add(MAX_TERM_JUMP).min(MAX_TERM)
    }

    /// The highest log index a peer may send.
    pub fn max_index(&self) -> u64 {
        self.last_index
            .saturating_add(MAX_INDEX_JUMP)
            .min(MAX_INDEX)
    }

    /// A term from a peer.
    pub fn term(&self, field: &str, term: u64) -> Result<(), RaftError> {
        let max = self.max_term();
        if term > max {
            return Err(RaftError::BadRequest(format!(
                "{field} {term} is out of bounds: the local term is {}, and a peer may be at most {MAX_TERM_JUMP} terms ahead (up to {max})",
                self.term
            )));
        }
        Ok(())
    }

    /// A vote from a peer.
    pub fn vote(&self, field: &str, vote: &Vote<NodeId>) -> Result<(), RaftError> {
        self.term(&format!("{field}.term"), vote.leader_id.term)
    }

    /// A log ID from a peer, whose term may not exceed `max_term` (the term of the vote it
    /// came with: no entry is newer than its leader).
    pub fn log_id(
        &self,
        field: &str,
        log_id: Option<&LogId<NodeId>>,
        max_term: u64,
    ) -> Result<(), RaftError> {
        let Some(log_id) = log_id else {
            return Ok(());
        };
        if log_id.leader_id.term > max_term {
            return Err(RaftError::BadRequest(format!(
                "{field}.term {} is out of bounds: above the request's vote term {max_term}",
                log_id.leader_id.term
            )));
        }
        let max = self.max_index();
        if log_id.index > max {
            return Err(RaftError::BadRequest(format!(
                "{field}.index {} is out of bounds: the local last index is {}, and a peer may be at most {MAX_INDEX_JUMP} entries ahead (up to {max})",
                log_id.index, self.last_index
            )));
        }
        Ok(())
    }

    /// A log ID from a peer at an index this node has committed must not be newer than the
    /// committed one nor of another leader of its term: an honest leader has every committed
    /// entry, and openraft asserts so (`Some(log_id) <= self.committed()`) instead of checking.
    pub fn committed_match(
        &self,
        field: &str,
        log_id: Option<&LogId<NodeId>>,
    ) -> Result<(), RaftError> {
        let (Some(log_id), Some(committed)) = (log_id, self.committed.as_ref()) else {
            return Ok(());
        };
        let fits = log_id.index > committed.index
            || matches!(
                log_id.partial_cmp(committed),
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            );
        if fits {
            Ok(())
        } else {
            Err(RaftError::BadRequest(format!(
                "{field} {log_id} conflicts with the committed log at {committed}: a leader has every committed entry"
            )))
        }
    }
}

/// The payload bytes an entry adds to the log (a membership change counts its encoding).
pub(crate) fn payload_bytes(payload: &EntryPayload<TypeConfig>) -> usize {
    match payload {
        EntryPayload::Blank => 0,
        EntryPayload::Normal(command) => command.len(),
        EntryPayload::Membership(m) => crate::codec::encode(m).map_or(usize::MAX, |v| v.len()),
    }
}

/// Only an elected leader appends entries or sends snapshots, and its vote is committed:
/// openraft's follower asserts it (`vote must be committed`) and would otherwise take a
/// candidate's vote as a leader's.
fn leader_vote(vote: &Vote<NodeId>) -> Result<(), RaftError> {
    if vote.committed {
        Ok(())
    } else {
        Err(RaftError::BadRequest(
            "vote.committed is false: only an elected leader appends entries or sends snapshots"
                .to_string(),
        ))
    }
}

/// The vote of a peer's request (a candidate's or a leader's) names that peer, never this
/// node: openraft takes a vote for its own ID as its own, and a leader handed an append in its
/// own name asserts (`self.leader.is_none()`) or, in release builds, follows itself.
pub(crate) fn check_peer_vote(local: NodeId, vote: &Vote<NodeId>) -> Result<(), RaftError> {
    if vote.leader_id.node_id == local {
        Err(RaftError::BadRequest(format!(
            "vote.leader_id.node_id {local} is this node's own ID: a peer cannot vote or lead as it"
        )))
    } else {
        Ok(())
    }
}

/// A `Raft.Vote` request: its term, and a last log ID no newer than that term.
pub(crate) fn check_vote(bounds: &Bounds, req: &VoteRequest<NodeId>) -> Result<(), RaftError> {
    bounds.vote("vote", &req.vote)?;
    bounds.log_id(
        "last_log_id",
        req.last_log_id.as_ref(),
        req.vote.leader_id.term,
    )
}

/// A `Raft.AppendEntries` request: its term and log IDs, consecutive entries right after
/// `prev_log_id`, at most [`MAX_APPEND_ENTRIES`] of them and at most `max_bytes` of payload.
pub(crate) fn check_append(
    bounds: &Bounds,
    req: &AppendEntriesRequest<TypeConfig>,
    max_bytes: usize,
) -> Result<(), RaftError> {
    bounds.vote("vote", &req.vote)?;
    leader_vote(&req.vote)?;
    let term = req.vote.leader_id.term;
    bounds.log_id("prev_log_id", req.prev_log_id.as_ref(), term)?;
    bounds.log_id("leader_commit", req.leader_commit.as_ref(), term)?;
    let leader = &req.vote.leader_id;
    one_leader_per_term("prev_log_id", req.prev_log_id.as_ref(), leader)?;
    one_leader_per_term("leader_commit", req.leader_commit.as_ref(), leader)?;
    if req.entries.len() > MAX_APPEND_ENTRIES {
        return Err(RaftError::BadRequest(format!(
            "entries: {} entries in one request, more than {MAX_APPEND_ENTRIES}",
            req.entries.len()
        )));
    }
    let mut expected = match &req.prev_log_id {
        None => Some(0),
        Some(prev) => prev.index.checked_add(1),
    };
    let mut last_term = req.prev_log_id.map_or(0, |p| p.leader_id.term);
    let mut bytes = 0usize;
    for (i, entry) in req.entries.iter().enumerate() {
        let field = format!("entries[{i}].log_id");
        bounds.log_id(&field, Some(&entry.log_id), term)?;
        if Some(entry.log_id.index) != expected {
            return Err(RaftError::BadRequest(format!(
                "{field}.index {} does not follow the previous entry (expected {})",
                entry.log_id.index,
                expected.map_or_else(|| "none".to_string(), |e| e.to_string())
            )));
        }
        if entry.log_id.leader_id.term < last_term {
            return Err(RaftError::BadRequest(format!(
                "{field}.term {} is below the previous entry's term {last_term}",
                entry.log_id.leader_id.term
            )));
        }
        one_leader_per_term(&field, Some(&entry.log_id), leader)?;
        let before = i
            .checked_sub(1)
            .and_then(|j| req.entries.get(j))
            .map(|e| &e.log_id)
            .or(req.prev_log_id.as_ref());
        if let Some(before) = before {
            one_leader_per_term(&field, Some(&entry.log_id), &before.leader_id)?;
        }
        last_term = entry.log_id.leader_id.term;
        expected = entry.log_id.index.checked_add(1);
        bytes = bytes.saturating_add(payload_bytes(&entry.payload));
        if bytes > max_bytes {
            return Err(RaftError::BadRequest(format!(
                "entries: more than {max_bytes} bytes of payload in one request (max_append_bytes)"
            )));
        }
    }
    bounds.committed_match("prev_log_id", req.prev_log_id.as_ref())?;
    bounds.committed_match("leader_commit", req.leader_commit.as_ref())?;
    for (i, entry) in req.entries.iter().enumerate() {
        bounds.committed_match(&format!("entries[{i}].log_id"), Some(&entry.log_id))?;
    }
    Ok(())
}

/// A log ID of `leader`'s term names `leader`: a term has one leader, and openraft cannot order
/// two log IDs of one term from different nodes (it asserts on them once one is committed).
fn one_leader_per_term(
    field: &str,
    log_id: Option<&LogId<NodeId>>,
    leader: &openraft::LeaderId<NodeId>,
) -> Result<(), RaftError> {
    match log_id {
        Some(id) if id.leader_id.term == leader.term && id.leader_id.node_id != leader.node_id => {
            Err(RaftError::BadRequest(format!(
                "{field}.leader_id.node_id {} is not node {} that led term {}: a term has one leader",
                id.leader_id.node_id, leader.node_id, leader.term
            )))
        }
        _ => Ok(()),
    }
}

/// The vote and metadata of a `Raft.InstallSnapshot` chunk.
pub(crate) fn check_snapshot_meta(
    bounds: &Bounds,
    req: &InstallSnapshotRequest<TypeConfig>,
) -> Result<(), RaftError> {
    bounds.vote("vote", &req.vote)?;
    leader_vote(&req.vote)?;
    let term = req.vote.leader_id.term;
    bounds.log_id("meta.last_log_id", req.meta.last_log_id.as_ref(), term)?;
    one_leader_per_term(
        "meta.last_log_id",
        req.meta.last_log_id.as_ref(),
        &req.vote.leader_id,
    )?;
    bounds.committed_match("meta.last_log_id", req.meta.last_log_id.as_ref())?;
    bounds.log_id(
        "meta.last_membership.log_id",
        req.meta.last_membership.log_id().as_ref(),
        term,
    )?;
    if req.meta.last_membership.log_id().map(|l| l.index) > req.meta.last_log_id.map(|l| l.index) {
        return Err(RaftError::BadRequest(
            "meta.last_membership.log_id is beyond meta.last_log_id".to_string(),
        ));
    }
    if req.meta.snapshot_id.len() > MAX_SNAPSHOT_ID_BYTES {
        return Err(RaftError::BadRequest(format!(
            "meta.snapshot_id: {} bytes, more than {MAX_SNAPSHOT_ID_BYTES}",
            req.meta.snapshot_id.len()
        )));
    }
    Ok(())
}
