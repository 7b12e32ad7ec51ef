//! Client heartbeats on the leader, as Nomad's `nodeHeartbeater`: a node's heartbeat (checked
//! against its secret in the state) re-arms its timer and tells it its TTL; a node whose TTL
//! and grace pass is marked `down` through Raft ([`Command::NodeStatus`] without a secret),
//! which re-evaluates its allocations. A server that becomes leader gives every node that is
//! not down `failover_heartbeat_ttl`, so a leader change never marks the fleet down at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caravan_agent_core::acl::secrets_equal;
use caravan_agent_core::heartbeat::{HeartbeatRule, HeartbeatTimers, LastHeartbeat};
use caravan_agent_core::jobs::Node;
use caravan_agent_core::query::{StateAnswer, StateQuery};
use parking_lot::Mutex;

use crate::ClusterError;
use crate::command::Command;
use crate::node::{Cluster, seed};
use crate::store::NodeStatusChange;

/// How often the leader looks for expired timers.
pub const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// How often the leader looks for nodes without a timer (every this many ticks: 5 s).
const ARM_MISSING_EVERY: u32 = 20;

/// The most nodes marked down per tick (each is one write; they share log entries).
pub const MAX_EXPIRED_PER_TICK: usize = 1024;

/// The leader's heartbeat timers and rule.
pub struct Heartbeats {
    rule: HeartbeatRule,
    timers: Mutex<HeartbeatTimers>,
    /// When each node last heartbeat here and the TTL it was told (kept for down nodes too,
    /// dropped with the node).
    last: Mutex<HashMap<String, (Instant, Duration)>>,
    draws: AtomicU64,
}

impl Heartbeats {
    /// Heartbeats by `rule`.
    pub fn new(rule: HeartbeatRule) -> Heartbeats {
        Heartbeats {
            rule,
            timers: Mutex::new(HeartbeatTimers::default()),
            last: Mutex::new(HashMap::new()),
            draws: AtomicU64::new(seed()),
        }
    }

    /// The rule.
    pub fn rule(&self) -> &HeartbeatRule {
        &self.rule
    }

    /// Nodes with a running timer.
    pub fn tracked(&self) -> usize {
        self.timers.lock().len()
    }

    /// A node heartbeat at `now` (its secret already checked): re-arms its timer and returns
    /// the TTL it is told.
    pub fn beat(&self, node_id: &str, now: Instant) -> Duration {
        let mut timers = self.timers.lock();
        let draw = splitmix(
            self.draws
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed),
        );
        let ttl = self.rule.ttl(timers.len(), draw);
        timers.reset(node_id, now, self.rule.deadline_after(ttl));
        drop(timers);
        let mut last = self.last.lock();
        match last.get_mut(node_id) {
            Some(seen) => *seen = (now, ttl),
            None => {
                last.insert(node_id.to_string(), (now, ttl));
            }
        }
        ttl
    }

    /// Every node's last heartbeat seen by this leader, as of `now`, by node ID. A leader that
    /// took over knows a node's only once it has heartbeat again.
    pub fn last_heartbeats(&self, now: Instant) -> Vec<LastHeartbeat> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut out: Vec<LastHeartbeat> = self
            .last
            .lock()
            .iter()
            .map(|(id, (at, ttl))| LastHeartbeat {
                node_id: id.clone(),
                since_ms: millis(now.saturating_duration_since(*at)),
                ttl_ms: millis(*ttl),
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Leadership lost: no timer runs and no heartbeat is remembered.
    fn stop(&self) {
        self.timers.lock().clear();
        self.last.lock().clear();
    }

    /// Leadership gained at `now`: every node not down (`(id, down)` pairs) gets `failover_ttl`.
    /// Heartbeats remembered from an earlier term (one that landed after leadership was lost)
    /// are forgotten.
    fn rearm(&self, nodes: &[(String, bool)], now: Instant) {
        self.last.lock().clear();
        let mut timers = self.timers.lock();
        timers.clear();
        for (id, _) in nodes.iter().filter(|(_, down)| !down) {
            timers.reset(id, now, self.rule.failover_ttl);
        }
    }

    /// Every node not down that has no timer gets `failover_ttl` (one registered in the log's
    /// tail that this leader had not applied when it re-armed, and that never heartbeat since).
    /// Heartbeats of nodes no longer in the state are forgotten.
    fn arm_missing(&self, nodes: &[(String, bool)], now: Instant) {
        let mut timers = self.timers.lock();
        for (id, _) in nodes.iter().filter(|(_, down)| !down) {
            if !timers.contains(id) {
                timers.reset(id, now, self.rule.failover_ttl);
            }
        }
        drop(timers);
        let known: std::collections::HashSet<&str> =
            nodes.iter().map(|(id, _)| id.as_str()).collect();
        self.last.lock().retain(|id, _| known.contains(id.as_str()));
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks a node's `secret` against the state. The errors are the texts a client sees.
pub fn check_node_secret(cluster: &Cluster, node_id: &str, secret: &str) -> Result<Node, String> {
    let (answer, _) = cluster
        .state()
        .store()
        .query(&StateQuery::Node(node_id.to_string()));
    match answer {
        StateAnswer::Node(Some(node)) if secrets_equal(&node.secret_id, secret) => Ok(node),
        StateAnswer::Node(Some(_)) => Err("node secret ID does not match".into()),
        _ => Err(format!("node not found: {node_id:?}")),
    }
}

/// A client's heartbeat on the leader: checks the node's secret, records the status it reports
/// when it changed (a node that was down comes back `ready`), re-arms its timer. Returns its
/// TTL.
pub async fn heartbeat(
    cluster: &Cluster,
    heartbeats: &Heartbeats,
    node_id: &str,
    secret: &str,
    status: &str,
) -> Result<Duration, ClusterError> {
    let node = check_node_secret(cluster, node_id, secret).map_err(ClusterError::Refused)?;
    metrics::counter!("nomad.nomad.heartbeat.received").increment(1);
    if node.status != status {
        cluster
            .write(&Command::NodeStatus {
                change: NodeStatusChange {
                    node_id: node_id.to_string(),
                    secret_id: secret.to_string(),
                    status: status.to_string(),
                    now_secs: now_secs(),
                },
                seed: seed(),
            })
            .await?;
    }
    if status == "down" {
        heartbeats.timers.lock().remove(node_id);
        return Ok(Duration::ZERO);
    }
    Ok(heartbeats.beat(node_id, Instant::now()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The leader's duty: re-arms every node's timer when this server becomes leader, stops them
/// when it stops leading, and marks down the nodes whose timer ran out.
pub async fn expire(cluster: Arc<Cluster>, heartbeats: Arc<Heartbeats>) {
    let mut leading = false;
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        let now_leading = cluster.raft().is_leader();
        if now_leading != leading {
            leading = now_leading;
            if leading {
                let nodes = cluster.state().store().node_liveness();
                heartbeats.rearm(&nodes, Instant::now());
                tracing::info!(target: "heartbeat", nodes = heartbeats.tracked(), ttl = ?heartbeats.rule.failover_ttl, "leader: heartbeat timers re-armed");
            } else {
                heartbeats.stop();
            }
        }
        if !leading {
            continue;
        }
        if ticks.is_multiple_of(ARM_MISSING_EVERY) {
            let nodes = cluster.state().store().node_liveness();
            heartbeats.arm_missing(&nodes, Instant::now());
        }
        let expired = heartbeats
            .timers
            .lock()
            .take_expired(Instant::now(), MAX_EXPIRED_PER_TICK);
        let mut writes = tokio::task::JoinSet::new();
        for node_id in expired {
            let cluster = cluster.clone();
            writes.spawn(async move { mark_down(&cluster, node_id).await });
        }
        while writes.join_next().await.is_some() {}
    }
}

async fn mark_down(cluster: &Cluster, node_id: String) {
    let command = Command::NodeStatus {
        change: NodeStatusChange {
            node_id: node_id.clone(),
            secret_id: String::new(),
            status: "down".into(),
            now_secs: now_secs(),
        },
        seed: seed(),
    };
    match cluster.write(&command).await {
        Ok(_) => {
            metrics::counter!("nomad.nomad.heartbeat.invalidate").increment(1);
            tracing::warn!(target: "heartbeat", node_id = %node_id, "node TTL expired; marked down")
        }
        Err(e) => {
            tracing::warn!(target: "heartbeat", node_id = %node_id, error = %e, "cannot mark an expired node down")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, status: &str) -> (String, bool) {
        (id.to_string(), status == "down")
    }

    /// `(node, since_ms)` pairs of what the leader reports.
    fn check(heartbeats: &Heartbeats, now: Instant, expected: &[(&str, u64)]) {
        let got: Vec<(String, u64)> = heartbeats
            .last_heartbeats(now)
            .into_iter()
            .map(|b| (b.node_id, b.since_ms))
            .collect();
        let expected: Vec<(String, u64)> =
            expected.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn last_heartbeats_are_ages_kept_until_the_node_leaves_the_state() {
        let hb = Heartbeats::new(HeartbeatRule::default());
        let t0 = Instant::now();
        let ttl = hb.beat("b", t0);
        hb.beat("a", t0 + Duration::from_secs(2));
        check(
            &hb,
            t0 + Duration::from_secs(5),
            &[("a", 3_000), ("b", 5_000)],
        );
        assert!(hb.last_heartbeats(t0)[1].ttl_ms >= 10_000, "{ttl:?}");
        // A re-arm is not a heartbeat; a node still in the state (even down) is kept.
        hb.arm_missing(
            &[node("a", "ready"), node("b", "down"), node("c", "ready")],
            t0,
        );
        check(
            &hb,
            t0 + Duration::from_secs(5),
            &[("a", 3_000), ("b", 5_000)],
        );
        // A node gone from the state is forgotten.
        hb.arm_missing(&[node("a", "ready")], t0);
        check(&hb, t0 + Duration::from_secs(5), &[("a", 3_000)]);
        // A clock read before the beat answers 0, not an underflow.
        check(&hb, t0, &[("a", 0)]);
        // Leadership lost: nothing is remembered.
        hb.stop();
        check(&hb, t0 + Duration::from_secs(5), &[]);
        assert_eq!(hb.tracked(), 0);
    }

    #[test]
    fn a_heartbeat_from_an_earlier_term_is_not_shown_by_a_new_one() {
        let hb = Heartbeats::new(HeartbeatRule::default());
        let t0 = Instant::now();
        hb.beat("a", t0);
        hb.stop();
        hb.beat("a", t0); // in flight when leadership was lost
        hb.rearm(&[node("a", "ready")], t0 + Duration::from_secs(3600));
        check(&hb, t0 + Duration::from_secs(3600), &[]);
    }

    #[test]
    fn live_nodes_without_a_timer_are_armed_and_down_ones_are_not() {
        let hb = Heartbeats::new(HeartbeatRule::default());
        let t0 = Instant::now();
        hb.rearm(&[node("a", "ready"), node("b", "down")], t0);
        assert_eq!(hb.tracked(), 1);
        hb.arm_missing(
            &[node("a", "ready"), node("b", "down"), node("c", "ready")],
            t0,
        );
        assert_eq!(hb.tracked(), 2);
        // Armed, not heartbeat: no last heartbeat is made up.
        check(&hb, t0, &[]);
    }
}
