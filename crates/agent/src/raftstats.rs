//! `stats.raft` in `/v1/agent/self`, with the keys and value formats of hashicorp/raft's
//! `Stats()` that Nomad reports.

use std::collections::BTreeMap;

use caravan_agent_core::duration::format_go_duration;
use caravan_raft::RaftStatus;

/// The raft stats map; `ids` names voters by server ID where gossip knows them.
pub fn raft_stats(status: &RaftStatus, ids: &BTreeMap<u64, String>) -> BTreeMap<String, String> {
    let configuration: Vec<String> = status
        .voters
        .iter()
        .map(|(id, addr)| {
            let name = ids.get(id).cloned().unwrap_or_else(|| format!("{id:016x}"));
            format!("{{Suffrage:Voter ID:{name} Address:{addr}}}")
        })
        .collect();
    let last_contact = match status.last_contact {
        None => "never".to_string(),
        Some(d) if d.is_zero() => "0".to_string(),
        Some(d) => format_go_duration(d),
    };
    let num_peers = status.voters.keys().filter(|&&id| id != status.id).count();
    let pairs = [
        ("applied_index", status.applied_index.to_string()),
        ("commit_index", status.commit_index.to_string()),
        ("fsm_pending", "0".to_string()),
        ("last_contact", last_contact),
        ("last_log_index", status.last_log_index.to_string()),
        ("last_log_term", status.last_log_term.to_string()),
        ("last_snapshot_index", status.last_snapshot.0.to_string()),
        ("last_snapshot_term", status.last_snapshot.1.to_string()),
        (
            "latest_configuration",
            format!("[{}]", configuration.join(" ")),
        ),
        (
            "latest_configuration_index",
            status.configuration_index.to_string(),
        ),
        ("num_peers", num_peers.to_string()),
        ("protocol_version", "3".to_string()),
        ("protocol_version_max", "3".to_string()),
        ("protocol_version_min", "0".to_string()),
        ("snapshot_version_max", "1".to_string()),
        ("snapshot_version_min", "0".to_string()),
        ("state", status.state.to_string()),
        ("term", status.term.to_string()),
        ("logstore_backend", "redb".to_string()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_hashicorp_raft() {
        let status = RaftStatus {
            id: 1,
            state: "Follower",
            term: 3,
            last_log_index: 10,
            last_log_term: 3,
            commit_index: 10,
            applied_index: 9,
            last_snapshot: (0, 0),
            leader: Some((2, "127.0.0.1:4647".into())),
            voters: BTreeMap::from([(1, "127.0.0.1:4648".into()), (2, "127.0.0.1:4647".into())]),
            configuration_index: 1,
            last_contact: Some(Duration::from_millis(15)),
        };
        let ids = BTreeMap::from([(2, "b8c5".to_string())]);
        let s = raft_stats(&status, &ids);
        assert_eq!(s["state"], "Follower");
        assert_eq!(s["num_peers"], "1");
        assert_eq!(s["last_contact"], "15ms");
        assert_eq!(
            s["latest_configuration"],
            "[{Suffrage:Voter ID:0000000000000001 Address:127.0.0.1:4648} {Suffrage:Voter ID:b8c5 Address:127.0.0.1:4647}]"
        );
    }
}
