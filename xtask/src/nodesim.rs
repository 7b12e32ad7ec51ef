//! `cargo xtask nodesim --nodes N --servers ADDR[,ADDR...]`: N lightweight client nodes in one
//! process (as Nomad's nomad-nodesim), each a real `caravan_client::NodeClient` that registers
//! with its own secret, heartbeats and follows its allocations over RPC. Nodes share RPC
//! connections in groups (`--per-conn`, default 8), so a run of 10,000 needs 1,250 connections:
//! the servers must allow that many from one address (`limits { rpc_max_conns_per_client = 0 }`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::jobs::Node;
use caravan_client::NodeClient;
use caravan_rpc::{Dial, RpcClient};
use parking_lot::Mutex;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct NodesimOptions {
    /// How many nodes.
    pub nodes: usize,
    /// The servers' RPC addresses.
    pub servers: Vec<SocketAddr>,
    /// Nodes per RPC connection.
    pub per_conn: usize,
    /// Each node's CPU (MHz) and memory (MiB).
    pub cpu: u64,
    /// Memory (MiB).
    pub memory_mb: u64,
    /// Name prefix (`<prefix>-<i>`).
    pub prefix: String,
}

/// A running simulation.
pub struct Nodesim {
    /// The nodes.
    pub clients: Vec<Arc<NodeClient>>,
    /// Heartbeat round trips, in microseconds, since the last `take_latencies`.
    latencies: Arc<Mutex<Vec<u32>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Nodesim {
    /// Starts every node (registrations spread over `ramp`).
    pub async fn start(opts: &NodesimOptions, ramp: Duration) -> Nodesim {
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut clients = Vec::with_capacity(opts.nodes);
        let mut rpc = Arc::new(RpcClient::new(Dial::anonymous(), Default::default()));
        let pause = ramp / opts.nodes.max(1) as u32;
        for i in 0..opts.nodes {
            if i % opts.per_conn.max(1) == 0 {
                rpc = Arc::new(RpcClient::new(Dial::anonymous(), Default::default()));
            }
            let node = node(opts, i);
            let client = NodeClient::new(node, rpc.clone(), opts.servers.iter().copied());
            let sink = latencies.clone();
            client.observe_heartbeats(Arc::new(move |d: Duration| {
                sink.lock().push(d.as_micros().min(u32::MAX as u128) as u32);
            }));
            tokio::spawn(client.clone().run(stopped.clone()));
            clients.push(client);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Nodesim {
            clients,
            latencies,
            stop,
        }
    }

    /// Nodes registered so far.
    pub fn registered(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.status().registered)
            .count()
    }

    /// Nodes a server would now mark down: not registered, or whose last answered heartbeat is
    /// older than the TTL that answer gave plus `grace` (the servers' `heartbeat_grace`). A
    /// client heartbeats once per TTL, as Nomad's does, so a heartbeat in flight is past its
    /// TTL alone for a round trip; the grace is what the server allows for it.
    pub fn late(&self, grace: Duration) -> usize {
        self.clients
            .iter()
            .filter(|c| {
                let s = c.status();
                !s.registered
                    || s.last_heartbeat
                        .is_none_or(|t| t.elapsed() > s.heartbeat_ttl.saturating_add(grace))
            })
            .count()
    }

    /// Allocations the nodes hold (desired `run`).
    pub fn allocations(&self) -> usize {
        self.clients
            .iter()
            .map(|c| c.status().num_allocations)
            .sum()
    }

    /// The heartbeat round trips (µs) recorded since the last call.
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *self.latencies.lock())
    }

    /// Stops every node.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

fn node(opts: &NodesimOptions, i: usize) -> Node {
    Node {
        id: uuid_like(i),
        name: format!("{}-{i}", opts.prefix),
        datacenter: "dc1".into(),
        node_class: "sim".into(),
        meta: Default::default(),
        cpu: opts.cpu,
        memory_mb: opts.memory_mb,
        status: "ready".into(),
        down_since: None,
        secret_id: caravan_client::fingerprint::new_secret(),
        attributes: [("kernel.name".to_string(), "linux".to_string())].into(),
        create_index: 0,
        modify_index: 0,
    }
}

/// A node ID that is unique per process run and index.
fn uuid_like(i: usize) -> String {
    let secret = caravan_client::fingerprint::new_secret();
    format!("{}{:012x}", &secret[..24], i)
}

/// The `p`-th percentile (0..=100) of `v` (sorted here).
pub fn percentile(v: &mut [u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let at = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[at.min(v.len() - 1)]
}

/// `cargo xtask nodesim --nodes N --servers A,B [--per-conn K] [--minutes M]`.
pub fn nodesim(args: &[String]) -> Result<(), String> {
    let mut opts = NodesimOptions {
        nodes: 100,
        servers: Vec::new(),
        per_conn: 8,
        cpu: 4000,
        memory_mb: 8192,
        prefix: "sim".into(),
    };
    let mut minutes = 0u64;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--nodes" => opts.nodes = number()? as usize,
            "--per-conn" => opts.per_conn = number()?.max(1) as usize,
            "--minutes" => minutes = number()?,
            "--cpu" => opts.cpu = number()?,
            "--memory-mb" => opts.memory_mb = number()?,
            "--servers" => {
                for a in value.split(',') {
                    opts.servers
                        .push(a.parse().map_err(|e| format!("--servers {a}: {e}"))?);
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if opts.servers.is_empty() {
        return Err("usage: cargo xtask nodesim --nodes N --servers ADDR[,ADDR...] [--per-conn K] [--minutes M]".into());
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let sim = Nodesim::start(&opts, Duration::from_secs(10)).await;
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let mut l = sim.take_latencies();
            println!(
                "{:>5}s registered {}/{} heartbeats {} p50 {} µs p99 {} µs allocations {}",
                started.elapsed().as_secs(),
                sim.registered(),
                opts.nodes,
                l.len(),
                percentile(&mut l, 50.0),
                percentile(&mut l, 99.0),
                sim.allocations()
            );
            if minutes > 0 && started.elapsed() >= Duration::from_secs(minutes * 60) {
                sim.stop();
                return Ok(());
            }
        }
    })
}
