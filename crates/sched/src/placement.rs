//! Placement: where a job's allocations go. Service and batch jobs bin-pack each allocation onto
//! the best of a few feasible candidates (Nomad's idea: score
//! `20 − (10^free_cpu_fraction + 10^free_mem_fraction)`, candidates limited to
//! `max(2, ⌈log2 n⌉)` sampled nodes); system and sysbatch jobs place one allocation per eligible
//! node. Works on a snapshot of node capacities kept as a struct of arrays.

/// What one allocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// MHz.
    pub cpu: u64,
    /// MiB.
    pub memory_mb: u64,
}

/// Node capacities and usage, column-wise.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    /// Node IDs.
    pub ids: Vec<String>,
    /// Datacenter of each node.
    pub datacenters: Vec<String>,
    /// Total CPU (MHz).
    pub cpu_total: Vec<u64>,
    /// Total memory (MiB).
    pub mem_total: Vec<u64>,
    /// CPU in use.
    pub cpu_used: Vec<u64>,
    /// Memory in use.
    pub mem_used: Vec<u64>,
}

impl Nodes {
    /// Adds a node.
    pub fn push(&mut self, id: &str, datacenter: &str, cpu: u64, memory_mb: u64) {
        self.ids.push(id.to_string());
        self.datacenters.push(datacenter.to_string());
        self.cpu_total.push(cpu);
        self.mem_total.push(memory_mb);
        self.cpu_used.push(0);
        self.mem_used.push(0);
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn fits(&self, i: usize, ask: Ask) -> bool {
        self.cpu_used[i].saturating_add(ask.cpu) <= self.cpu_total[i]
            && self.mem_used[i].saturating_add(ask.memory_mb) <= self.mem_total[i]
    }

    /// Nomad's bin-pack score of node `i` after taking `ask` (higher is a tighter fit).
    pub fn score(&self, i: usize, ask: Ask) -> f64 {
        let free = |used: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                1.0 - (used as f64 / total as f64)
            }
        };
        let cpu = free(self.cpu_used[i].saturating_add(ask.cpu), self.cpu_total[i]);
        let mem = free(
            self.mem_used[i].saturating_add(ask.memory_mb),
            self.mem_total[i],
        );
        (20.0 - (10f64.powf(cpu) + 10f64.powf(mem))).clamp(0.0, 18.0)
    }

    fn take(&mut self, i: usize, ask: Ask) {
        self.cpu_used[i] = self.cpu_used[i].saturating_add(ask.cpu);
        self.mem_used[i] = self.mem_used[i].saturating_add(ask.memory_mb);
    }
}

/// The outcome of placing a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Node index per placed allocation.
    pub nodes: Vec<usize>,
    /// Allocations that found no node, and why.
    pub unplaced: usize,
    /// Why the last one failed (`""` when all were placed).
    pub reason: String,
}

/// A small seeded generator for candidate sampling (reproducible placements).
#[derive(Debug, Clone)]
pub struct Picker(u64);

impl Picker {
    /// Seeded.
    pub fn new(seed: u64) -> Picker {
        Picker(seed | 1)
    }

    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Places `count` allocations of `ask` for a service/batch group in `datacenters`.
pub fn bin_pack(
    nodes: &mut Nodes,
    datacenters: &[String],
    ask: Ask,
    count: usize,
    picker: &mut Picker,
) -> Placement {
    let eligible: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            datacenters
                .iter()
                .any(|d| d == &nodes.datacenters[i] || d == "*")
        })
        .collect();
    let mut out = Placement::default();
    if eligible.is_empty() {
        out.unplaced = count;
        out.reason = format!("no nodes in datacenters {datacenters:?}");
        return out;
    }
    let k = (usize::BITS - eligible.len().leading_zeros()).max(2) as usize;
    for _ in 0..count {
        let mut best: Option<(usize, f64)> = None;
        // Sample k candidates; if none fits, fall back to a full scan before giving up.
        for _ in 0..k {
            let i = eligible[picker.next(eligible.len())];
            if nodes.fits(i, ask) {
                let s = nodes.score(i, ask);
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((i, s));
                }
            }
        }
        if best.is_none() {
            best = eligible
                .iter()
                .filter(|&&i| nodes.fits(i, ask))
                .map(|&i| (i, nodes.score(i, ask)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
        }
        match best {
            Some((i, _)) => {
                nodes.take(i, ask);
                out.nodes.push(i);
            }
            None => {
                out.unplaced += 1;
                out.reason = format!(
                    "resources exhausted: no node in {datacenters:?} has {} MHz CPU and {} MiB memory free",
                    ask.cpu, ask.memory_mb
                );
            }
        }
    }
    out
}

/// Places one allocation of `ask` on every eligible node (system, sysbatch).
pub fn one_per_node(nodes: &mut Nodes, datacenters: &[String], ask: Ask) -> Placement {
    let mut out = Placement::default();
    for i in 0..nodes.len() {
        if !datacenters
            .iter()
            .any(|d| d == &nodes.datacenters[i] || d == "*")
        {
            continue;
        }
        if nodes.fits(i, ask) {
            nodes.take(i, ask);
            out.nodes.push(i);
        } else {
            out.unplaced += 1;
            out.reason = format!("resources exhausted on node {}", nodes.ids[i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cluster(n: usize, cpu: u64, mem: u64) -> Nodes {
        let mut nodes = Nodes::default();
        for i in 0..n {
            let dc = if i % 2 == 0 { "dc1" } else { "dc2" };
            nodes.push(&format!("n{i}"), dc, cpu, mem);
        }
        nodes
    }

    #[test]
    fn packs_tightly_and_reports_exhaustion() {
        let mut nodes = cluster(4, 1000, 1000);
        let dcs = vec!["dc1".to_string()];
        let p = bin_pack(
            &mut nodes,
            &dcs,
            Ask {
                cpu: 300,
                memory_mb: 300,
            },
            7,
            &mut Picker::new(1),
        );
        assert_eq!(p.nodes.len(), 6, "two dc1 nodes hold three each");
        assert_eq!(p.unplaced, 1);
        assert!(p.reason.contains("resources exhausted"));
        let p = bin_pack(
            &mut nodes,
            &["dc9".into()],
            Ask {
                cpu: 1,
                memory_mb: 1,
            },
            1,
            &mut Picker::new(1),
        );
        assert_eq!(p.unplaced, 1);
    }

    #[test]
    fn system_jobs_one_per_eligible_node() {
        let mut nodes = cluster(5, 1000, 1000);
        let p = one_per_node(
            &mut nodes,
            &["dc1".into(), "dc2".into()],
            Ask {
                cpu: 100,
                memory_mb: 100,
            },
        );
        assert_eq!(p.nodes, vec![0, 1, 2, 3, 4]);
    }

    proptest! {
        #[test]
        fn never_over_capacity_and_counts_honoured(
            n in 1usize..40,
            count in 0usize..200,
            cpu in 1u64..600,
            mem in 1u64..600,
            seed in any::<u64>(),
        ) {
            let mut nodes = cluster(n, 1000, 1000);
            let dcs = vec!["dc1".to_string(), "dc2".to_string()];
            let p = bin_pack(&mut nodes, &dcs, Ask { cpu, memory_mb: mem }, count, &mut Picker::new(seed));
            prop_assert_eq!(p.nodes.len() + p.unplaced, count);
            for i in 0..n {
                prop_assert!(nodes.cpu_used[i] <= nodes.cpu_total[i]);
                prop_assert!(nodes.mem_used[i] <= nodes.mem_total[i]);
            }
            // Nothing is left unplaced while some node still has room.
            let ask = Ask { cpu, memory_mb: mem };
            if p.unplaced > 0 {
                let room = (0..n).any(|i| nodes.fits(i, ask));
                prop_assert!(!room, "unplaced while a node has room");
            }
        }

        #[test]
        fn system_never_twice_on_a_node(n in 1usize..60, cpu in 1u64..2000) {
            let mut nodes = cluster(n, 1000, 1000);
            let p = one_per_node(&mut nodes, &["dc1".into(), "dc2".into()], Ask { cpu, memory_mb: 10 });
            let mut seen = p.nodes.clone();
            seen.dedup();
            prop_assert_eq!(seen.len(), p.nodes.len());
            prop_assert_eq!(p.nodes.len() + p.unplaced, n);
        }
    }
}
