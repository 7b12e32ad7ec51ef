//! The figures `/v1/metrics` samples every `telemetry.collection_interval` (Nomad's names
//! where Nomad has the figure; Go's goroutines are tokio tasks here): tasks, threads, resident
//! memory, jemalloc's allocated bytes, open file descriptors and uptime; on a server, Raft's
//! state (term, indexes, leadership, last contact) and the eval broker's queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::ServerRole;

/// Starts the sampler on the current runtime; it runs until the runtime stops. `server` adds
/// the Raft and broker gauges.
pub fn spawn(interval: Duration, server: Option<Arc<ServerRole>>) {
    let started = Instant::now();
    tokio::spawn(async move {
        let server_gauges = server.map(|s| (s, ServerGauges::new()));
        let tasks = metrics::gauge!("nomad.runtime.num_goroutines");
        let threads = metrics::gauge!("nomad.runtime.num_threads");
        let rss = metrics::gauge!("nomad.runtime.sys_bytes");
        let alloc = metrics::gauge!("nomad.runtime.alloc_bytes");
        let fds = metrics::gauge!("nomad.process.open_fds");
        let uptime = metrics::gauge!("nomad.uptime");
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            tasks.set(
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks() as f64,
            );
            let facts = tokio::task::spawn_blocking(read_proc)
                .await
                .unwrap_or_default();
            threads.set(facts.threads as f64);
            rss.set(facts.rss_bytes as f64);
            fds.set(facts.open_fds as f64);
            alloc.set(allocated() as f64);
            uptime.set(started.elapsed().as_secs_f64());
            if let Some((server, gauges)) = &server_gauges {
                gauges.sample(server);
            }
        }
    });
}

/// Raft and broker gauges of a server, kept as handles.
struct ServerGauges {
    term: metrics::Gauge,
    commit_index: metrics::Gauge,
    applied_index: metrics::Gauge,
    last_log_index: metrics::Gauge,
    peers: metrics::Gauge,
    leader: metrics::Gauge,
    last_contact: metrics::Gauge,
    ready: metrics::Gauge,
    unacked: metrics::Gauge,
    blocked: metrics::Gauge,
    failed: metrics::Gauge,
    heartbeats_active: metrics::Gauge,
    probes: metrics::Counter,
    packets_in: metrics::Counter,
    packets_out: metrics::Counter,
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
    decrypt_failures: metrics::Counter,
}

/// The scheduler types whose broker queues are published.
const SCHEDULERS: [&str; 5] = ["service", "batch", "system", "sysbatch", "_core"];

impl ServerGauges {
    fn new() -> ServerGauges {
        ServerGauges {
            term: metrics::gauge!("nomad.raft.term"),
            commit_index: metrics::gauge!("nomad.raft.commitIndex"),
            applied_index: metrics::gauge!("nomad.raft.appliedIndex"),
            last_log_index: metrics::gauge!("nomad.raft.lastLogIndex"),
            peers: metrics::gauge!("nomad.raft.peers"),
            leader: metrics::gauge!("nomad.raft.leader"),
            last_contact: metrics::gauge!("nomad.raft.leader.lastContact"),
            ready: metrics::gauge!("nomad.nomad.broker.total_ready"),
            unacked: metrics::gauge!("nomad.nomad.broker.total_unacked"),
            blocked: metrics::gauge!("nomad.nomad.broker.total_blocked"),
            failed: metrics::gauge!("nomad.nomad.broker.total_failed"),
            heartbeats_active: metrics::gauge!("nomad.nomad.heartbeat.active"),
            probes: metrics::counter!("nomad.memberlist.probeNode"),
            packets_in: metrics::counter!("nomad.memberlist.udp.packets_received"),
            packets_out: metrics::counter!("nomad.memberlist.udp.packets_sent"),
            bytes_in: metrics::counter!("nomad.memberlist.udp.received"),
            bytes_out: metrics::counter!("nomad.memberlist.udp.sent"),
            decrypt_failures: metrics::counter!("nomad.memberlist.decrypt_failures"),
        }
    }

    fn sample(&self, server: &ServerRole) {
        let raft = server.cluster().raft().status();
        self.term.set(raft.term as f64);
        self.commit_index.set(raft.commit_index as f64);
        self.applied_index.set(raft.applied_index as f64);
        self.last_log_index.set(raft.last_log_index as f64);
        self.peers.set(raft.voters.len() as f64);
        self.leader
            .set(if raft.state == "Leader" { 1.0 } else { 0.0 });
        // Milliseconds since the leader was last heard from (0 on the leader itself).
        self.last_contact
            .set(raft.last_contact.map_or(0.0, |d| d.as_secs_f64() * 1000.0));
        let broker = server.cluster().state().broker().stats();
        self.ready.set(broker.ready as f64);
        self.unacked.set(broker.unacked as f64);
        self.blocked.set(broker.waiting as f64);
        self.failed.set(broker.failed as f64);
        let by_scheduler = server.cluster().state().broker().stats_by_scheduler();
        for scheduler in SCHEDULERS {
            let (ready, unacked) = by_scheduler.get(scheduler).copied().unwrap_or_default();
            let name = |what: &str| format!("nomad.nomad.broker.{scheduler}_{what}");
            metrics::gauge!(name("ready")).set(ready as f64);
            metrics::gauge!(name("unacked")).set(unacked as f64);
        }
        self.heartbeats_active
            .set(server.heartbeats_tracked() as f64);
        self.sample_gossip(server);
    }

    /// Serf's and memberlist's figures, from the published gossip snapshot: members by status
    /// (gauges) and the traffic counters (absolute, as the node counts them).
    fn sample_gossip(&self, server: &ServerRole) {
        let snapshot = server.gossip_snapshot();
        let mut by_status = std::collections::BTreeMap::<&str, usize>::new();
        for m in snapshot.members.iter() {
            *by_status.entry(m.status.as_str()).or_default() += 1;
        }
        for status in ["alive", "leaving", "left", "failed"] {
            let n = by_status.get(status).copied().unwrap_or(0);
            metrics::gauge!("nomad.serf.members", "status" => status).set(n as f64);
        }
        let c = snapshot.counters;
        self.probes.absolute(c.probes);
        self.packets_in.absolute(c.packets_in);
        self.packets_out.absolute(c.packets_out);
        self.bytes_in.absolute(c.bytes_in);
        self.bytes_out.absolute(c.bytes_out);
        self.decrypt_failures.absolute(c.decrypt_failures);
    }
}

/// What `/proc/self` says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcFacts {
    /// Threads.
    pub threads: u64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

fn read_proc() -> ProcFacts {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    ProcFacts {
        threads: field("Threads:"),
        rss_bytes: field("VmRSS:") * 1024,
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
    }
}

/// jemalloc's bytes allocated by the program (its statistics refreshed first).
fn allocated() -> u64 {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().map_or(0, |b| b as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_facts_are_read() {
        let f = super::read_proc();
        assert!(
            f.threads >= 1 && f.rss_bytes > 0 && f.open_fds >= 3,
            "{f:?}"
        );
    }
}
