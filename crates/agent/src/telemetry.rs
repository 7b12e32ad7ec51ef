//! The process figures `/v1/metrics` shows, sampled every `telemetry.collection_interval`
//! (Nomad's `nomad.runtime.*` names where Nomad has the figure; Go's goroutines are tokio
//! tasks here): tasks, threads, resident memory, jemalloc's allocated bytes, open file
//! descriptors and uptime.

use std::time::{Duration, Instant};

/// Starts the sampler on the current runtime; it runs until the runtime stops.
pub fn spawn(interval: Duration) {
    let started = Instant::now();
    tokio::spawn(async move {
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
        }
    });
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
