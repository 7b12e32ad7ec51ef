//! Autopilot's health of the voters (`/v1/operator/autopilot/health`): this server asks every
//! voter for its Raft stats (`Status.RaftStats`, itself directly) and judges them against the
//! leader's with agent-core's rules; it remembers since when each verdict has held.

use std::time::{Duration, SystemTime};

use caravan_agent_core::autopilot::{RaftStats, ServerFacts, assess};
use caravan_agent_core::duration::format_go_duration;
use caravan_cluster::raft_id;
use caravan_http::dto::{AutopilotHealthDto, ServerHealthDto};
use caravan_rpc::method as m;

use super::ServerRole;

/// How long a voter may take to say how far it is.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

impl ServerRole {
    /// This server's Raft stats (`Status.RaftStats`).
    pub fn raft_stats(&self) -> RaftStats {
        let status = self.cluster.raft().status();
        RaftStats {
            last_contact_ms: status.last_contact.map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }),
            last_term: status.last_log_term,
            last_index: status.last_log_index,
        }
    }

    /// The voters' health, judged here.
    pub(super) async fn autopilot_health(&self) -> AutopilotHealthDto {
        let status = self.cluster.raft().status();
        let leader = status.leader.as_ref().map(|(id, _)| *id);
        let members = self.gossip.snapshot().members.to_vec();
        let servers = self.region_servers();
        let own = raft_id(&self.id);
        let members = &members;
        let asks = status.voters.iter().map(|(&raft, addr)| {
            let known = servers.iter().find(|s| raft_id(&s.id) == raft);
            async move {
                let stats = if raft == own {
                    Some(self.raft_stats())
                } else {
                    match addr.parse() {
                        Ok(at) => self
                            .rpc
                            .call::<RaftStats>(at, m::RAFT_STATS, None, &(), STATS_TIMEOUT)
                            .await
                            .ok(),
                        Err(_) => None,
                    }
                };
                let name = known.map(|s| s.name.clone()).unwrap_or_default();
                let member = members.iter().find(|m| m.name == name);
                let serf_status = member.map_or("none", |m| m.status.as_str()).to_string();
                let version = member
                    .and_then(|m| m.tags.as_ref()?.get("build").cloned())
                    .unwrap_or_default();
                let facts = ServerFacts {
                    id: known.map_or_else(|| format!("{raft:016x}"), |s| s.id.clone()),
                    name,
                    address: addr.clone(),
                    serf_status,
                    leader: leader == Some(raft),
                    stats,
                };
                (facts, version)
            }
        });
        let answered = futures::future::join_all(asks).await;
        let leader_stats = answered
            .iter()
            .find(|(f, _)| f.leader)
            .and_then(|(f, _)| f.stats);
        let versions: Vec<String> = answered.iter().map(|(_, v)| v.clone()).collect();
        let health = assess(answered.into_iter().map(|(f, _)| f).collect(), leader_stats);
        let now = SystemTime::now();
        let mut stable = self.stable.lock();
        stable.retain(|id, _| health.servers.iter().any(|s| &s.facts.id == id));
        let servers = health
            .servers
            .into_iter()
            .zip(versions)
            .map(|(s, version)| {
                let since = stable.entry(s.facts.id.clone()).or_insert((s.healthy, now));
                if since.0 != s.healthy {
                    *since = (s.healthy, now);
                }
                let stats = s.facts.stats.unwrap_or_default();
                ServerHealthDto {
                    id: s.facts.id,
                    name: s.facts.name,
                    address: s.facts.address,
                    serf_status: s.facts.serf_status,
                    version,
                    leader: s.facts.leader,
                    last_contact: match s.facts.stats {
                        Some(st) if st.last_contact_ms != u64::MAX => {
                            format_go_duration(Duration::from_millis(st.last_contact_ms))
                        }
                        _ => String::new(),
                    },
                    last_term: stats.last_term,
                    last_index: stats.last_index,
                    healthy: s.healthy,
                    voter: true,
                    stable_since: humantime::format_rfc3339_seconds(since.1).to_string(),
                }
            })
            .collect();
        AutopilotHealthDto {
            healthy: health.healthy,
            failure_tolerance: health.failure_tolerance,
            servers,
        }
    }
}
