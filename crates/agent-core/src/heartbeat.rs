//! Client heartbeats as Nomad's leader runs them: the TTL rule (`max(min_heartbeat_ttl, nodes /
//! max_heartbeats_per_second)` plus a random stagger, `heartbeat_grace` on top) and the timers
//! that find the nodes whose TTL ran out. Time and randomness are passed in.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The leader's heartbeat settings (Nomad's server keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatRule {
    /// `min_heartbeat_ttl`: the shortest TTL a node gets.
    pub min_ttl: Duration,
    /// `max_heartbeats_per_second`: the rate the TTLs aim for across the fleet.
    pub max_per_second: f64,
    /// `heartbeat_grace`: time past the TTL before a node is marked down.
    pub grace: Duration,
    /// `failover_heartbeat_ttl`: what every node gets when a leader takes over, so a new
    /// leader does not mark the fleet down before it has heard from it.
    pub failover_ttl: Duration,
}

impl Eq for HeartbeatRule {}

impl Default for HeartbeatRule {
    fn default() -> Self {
        HeartbeatRule {
            min_ttl: Duration::from_secs(10),
            max_per_second: 50.0,
            grace: Duration::from_secs(10),
            failover_ttl: Duration::from_secs(300),
        }
    }
}

impl HeartbeatRule {
    /// The TTL a node is told when the leader tracks `nodes` nodes: the rate-scaled interval
    /// plus a stagger of `draw / 2^64` of it (Nomad's `RateScaledInterval` + `RandomStagger`).
    pub fn ttl(&self, nodes: usize, draw: u64) -> Duration {
        let scaled = Duration::from_secs_f64(nodes as f64 / self.max_per_second);
        let base = scaled.max(self.min_ttl);
        // 53 bits: exactly representable, so the fraction stays below 1.
        let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
        base.saturating_add(base.mul_f64(fraction))
    }

    /// How long the leader waits for the next heartbeat of a node told `ttl`.
    pub fn deadline_after(&self, ttl: Duration) -> Duration {
        ttl.saturating_add(self.grace)
    }
}

/// A node's last heartbeat as the leader saw it: how long ago (as of the answer, so no two
/// clocks need agree) and the TTL the node was told then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastHeartbeat {
    /// The node.
    pub node_id: String,
    /// Milliseconds since its last heartbeat reached the leader.
    pub since_ms: u64,
    /// The TTL it was told, in milliseconds.
    pub ttl_ms: u64,
}

/// The leader's timers: one deadline per node, the expired ones taken in deadline order.
#[derive(Debug, Default)]
pub struct HeartbeatTimers {
    by_node: HashMap<String, (Instant, u64)>,
    by_deadline: BTreeSet<(Instant, u64, String)>,
    seq: u64,
}

impl HeartbeatTimers {
    /// Nodes with a running timer.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether no timer runs.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// Sets `node`'s deadline to `now + after` (replacing the one it had).
    pub fn reset(&mut self, node: &str, now: Instant, after: Duration) {
        self.remove(node);
        let at = now.checked_add(after).unwrap_or(now);
        self.seq = self.seq.wrapping_add(1);
        self.by_node.insert(node.to_string(), (at, self.seq));
        self.by_deadline.insert((at, self.seq, node.to_string()));
    }

    /// Whether `node` has a running timer.
    pub fn contains(&self, node: &str) -> bool {
        self.by_node.contains_key(node)
    }

    /// Stops `node`'s timer (it went down or was removed).
    pub fn remove(&mut self, node: &str) {
        if let Some((at, seq)) = self.by_node.remove(node) {
            self.by_deadline.remove(&(at, seq, node.to_string()));
        }
    }

    /// Stops every timer (leadership lost).
    pub fn clear(&mut self) {
        self.by_node.clear();
        self.by_deadline.clear();
    }

    /// Takes the nodes whose deadline is at or before `now`, at most `max`, earliest first.
    pub fn take_expired(&mut self, now: Instant, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((at, _, _)) = self.by_deadline.first() else {
                break;
            };
            if *at > now {
                break;
            }
            if let Some((_, _, node)) = self.by_deadline.pop_first() {
                self.by_node.remove(&node);
                out.push(node);
            }
        }
        out
    }

    /// The earliest deadline, if any timer runs.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ttl(nodes: usize, draw: u64, expected_ms: u64) {
        let rule = HeartbeatRule::default();
        assert_eq!(
            rule.ttl(nodes, draw).as_millis() as u64,
            expected_ms,
            "{nodes} nodes, draw {draw}"
        );
    }

    #[test]
    fn ttl_is_rate_scaled_with_a_stagger() {
        check_ttl(0, 0, 10_000);
        check_ttl(1, 0, 10_000);
        check_ttl(500, 0, 10_000);
        check_ttl(1_000, 0, 20_000);
        check_ttl(10_000, 0, 200_000);
        check_ttl(0, u64::MAX / 2, 15_000);
        check_ttl(10_000, u64::MAX / 2, 300_000);
        // The stagger adds at most the TTL again.
        assert!(HeartbeatRule::default().ttl(0, u64::MAX) <= Duration::from_secs(20));
    }

    #[test]
    fn timers_expire_in_deadline_order_and_reset_postpones() {
        let t0 = Instant::now();
        let mut timers = HeartbeatTimers::default();
        timers.reset("a", t0, Duration::from_secs(3));
        timers.reset("b", t0, Duration::from_secs(1));
        timers.reset("c", t0, Duration::from_secs(2));
        timers.reset("b", t0, Duration::from_secs(10)); // a heartbeat postpones b
        assert_eq!(timers.len(), 3);
        assert!(timers.take_expired(t0, 10).is_empty());
        assert_eq!(timers.take_expired(t0 + Duration::from_secs(3), 1), ["c"]);
        assert_eq!(timers.take_expired(t0 + Duration::from_secs(3), 10), ["a"]);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(10)));
        timers.remove("b");
        assert!(timers.is_empty());
        assert!(
            timers
                .take_expired(t0 + Duration::from_secs(60), 10)
                .is_empty()
        );
    }
}
