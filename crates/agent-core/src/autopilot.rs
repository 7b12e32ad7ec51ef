//! Autopilot's server health (`/v1/operator/autopilot/health`), as Nomad's autopilot judges
//! it: a server is healthy when gossip sees it alive, it heard from the leader within the
//! last-contact threshold, its last log term is the leader's and its last index trails the
//! leader's by at most `max_trailing_logs`. The cluster is healthy when every voter is; its
//! failure tolerance is how many healthy voters it could lose and keep a quorum. Times are
//! passed in (durations and seconds since the epoch).

use std::time::Duration;

/// Nomad's defaults (`autopilot { last_contact_threshold, max_trailing_logs }`).
pub const LAST_CONTACT_THRESHOLD: Duration = Duration::from_millis(200);
/// See [`LAST_CONTACT_THRESHOLD`].
pub const MAX_TRAILING_LOGS: u64 = 250;

/// What a server says of its Raft log (`Status.RaftStats`), or `None` when it did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RaftStats {
    /// Time since it last heard from the leader, in milliseconds (0 on the leader).
    pub last_contact_ms: u64,
    /// The term of its last log entry.
    pub last_term: u64,
    /// Its last log index.
    pub last_index: u64,
}

/// One voter as the health check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// Server ID.
    pub id: String,
    /// Member name.
    pub name: String,
    /// RPC address.
    pub address: String,
    /// Gossip status (`alive`, `failed`, …; `none` when gossip does not know it).
    pub serf_status: String,
    /// Whether it leads.
    pub leader: bool,
    /// Its Raft stats, `None` when it did not answer.
    pub stats: Option<RaftStats>,
}

/// One voter's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHealth {
    /// The facts it was judged on.
    pub facts: ServerFacts,
    /// The verdict.
    pub healthy: bool,
}

/// The cluster's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// Every voter healthy.
    pub healthy: bool,
    /// Healthy voters beyond a quorum (never negative).
    pub failure_tolerance: u64,
    /// Each voter.
    pub servers: Vec<ServerHealth>,
}

/// Judges `servers` (the voters) against the leader's stats (`None` without a leader: no
/// server is healthy then).
pub fn assess(servers: Vec<ServerFacts>, leader: Option<RaftStats>) -> ClusterHealth {
    let servers: Vec<ServerHealth> = servers
        .into_iter()
        .map(|facts| {
            let healthy = match (facts.stats, leader) {
                (Some(s), Some(l)) => {
                    facts.serf_status == "alive"
                        && Duration::from_millis(s.last_contact_ms) <= LAST_CONTACT_THRESHOLD
                        && s.last_term == l.last_term
                        && l.last_index.saturating_sub(s.last_index) <= MAX_TRAILING_LOGS
                }
                _ => false,
            };
            ServerHealth { facts, healthy }
        })
        .collect();
    let voters = servers.len() as u64;
    let healthy_voters = servers.iter().filter(|s| s.healthy).count() as u64;
    let quorum = voters / 2 + 1;
    ClusterHealth {
        healthy: voters > 0 && healthy_voters == voters,
        failure_tolerance: healthy_voters.saturating_sub(quorum),
        servers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, status: &str, stats: Option<(u64, u64, u64)>) -> ServerFacts {
        ServerFacts {
            id: name.into(),
            name: name.into(),
            address: String::new(),
            serf_status: status.into(),
            leader: name == "s1",
            stats: stats.map(|(c, t, i)| RaftStats {
                last_contact_ms: c,
                last_term: t,
                last_index: i,
            }),
        }
    }

    /// Three voters (`s1` leads at term 2, index 1000); the expected health of each, the
    /// cluster's and its failure tolerance.
    fn check(servers: [ServerFacts; 3], expected: ([bool; 3], bool, u64)) {
        let leader = servers[0].stats;
        let got = assess(servers.to_vec(), leader);
        let each: Vec<bool> = got.servers.iter().map(|s| s.healthy).collect();
        assert_eq!(
            (each.as_slice(), got.healthy, got.failure_tolerance),
            (&expected.0[..], expected.1, expected.2)
        );
    }

    #[test]
    fn health_follows_autopilots_rules() {
        let ok = |n: &str| server(n, "alive", Some((10, 2, 1000)));
        check([ok("s1"), ok("s2"), ok("s3")], ([true; 3], true, 1));
        check(
            [
                ok("s1"),
                ok("s2"),
                server("s3", "failed", Some((10, 2, 1000))),
            ],
            ([true, true, false], false, 0),
        );
        check(
            [ok("s1"), ok("s2"), server("s3", "alive", None)],
            ([true, true, false], false, 0),
        );
        check(
            [
                ok("s1"),
                ok("s2"),
                server("s3", "alive", Some((201, 2, 1000))),
            ],
            ([true, true, false], false, 0),
        );
        check(
            [
                ok("s1"),
                ok("s2"),
                server("s3", "alive", Some((10, 1, 1000))),
            ],
            ([true, true, false], false, 0),
        );
        check(
            [
                ok("s1"),
                ok("s2"),
                server("s3", "alive", Some((10, 2, 749))),
            ],
            ([true, true, false], false, 0),
        );
        check(
            [
                ok("s1"),
                ok("s2"),
                server("s3", "alive", Some((10, 2, 750))),
            ],
            ([true; 3], true, 1),
        );
        let none = assess(vec![server("s1", "alive", None)], None);
        assert!(!none.healthy && none.failure_tolerance == 0);
        assert!(!assess(Vec::new(), None).healthy);
    }
}
