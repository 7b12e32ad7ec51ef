//! `cargo xtask bench clients [--minutes M]`: client agents at scale, from release builds, with
//! simulated nodes in this process (`nodesim`) against three local servers:
//! - **heartbeats**: 10,000 nodes for M minutes (default 10), `kill -9` of the leader half way:
//!   nodes falsely marked down (any: none of them ever stops), heartbeat round trips p50/p99
//!   (all, and in the minute after the kill), the leader's CPU and RSS;
//! - **C1M shape**: 5,000 nodes, 10,000 jobs of 10 allocations (100,000 placements) submitted
//!   from 16 HTTP connections; placements per second from the first submit until the clients
//!   hold every allocation (Nomad's published C1M figure: 3,750/s; target 37,500/s);
//! - **node_id forwarding**: `/v1/agent/host?node_id=` through a server that does not hold
//!   the node's connection, against the same client's local `/v1/agent/host` (medians of 200).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bench::{Proc, free_port, median, rss_kib, verdict};
use crate::nodesim::{Nodesim, NodesimOptions, percentile};
use crate::raftbench::{connect, send};
use crate::target_dir;

pub(crate) struct Server {
    pub(crate) proc: Option<Proc>,
    pub(crate) http: SocketAddr,
    pub(crate) rpc: SocketAddr,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start_agent(bin: &Path, dir: &Path, name: &str, hcl: &str) -> Result<Proc, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let cfg = dir.join("agent.hcl");
    std::fs::write(&cfg, hcl).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args(["agent", "-log-level=WARN"])
        .arg(format!("-config={}", cfg.display()))
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    Ok(Proc(child))
}

pub(crate) fn servers(bin: &Path, root: &Path) -> Result<Vec<Server>, String> {
    let mut out = Vec::new();
    let first_serf = free_port()?;
    for i in 0..3 {
        let (http, rpc) = (free_port()?, free_port()?);
        let serf = if i == 0 { first_serf } else { free_port()? };
        let dir = root.join(format!("s{i}"));
        let join = if i == 0 {
            String::new()
        } else {
            format!(
                "  server_join {{\n    retry_join = [\"127.0.0.1:{first_serf}\"]\n    retry_interval = \"200ms\"\n  }}\n"
            )
        };
        let hcl = format!(
            "name = \"s{i}\"\nbind_addr = \"127.0.0.1\"\nenable_debug = true\ndata_dir = \"{}\"\nports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\nlimits {{\n  http_max_conns_per_client = 0\n  rpc_max_conns_per_client = 0\n}}\nserver {{\n  enabled = true\n  bootstrap_expect = 3\n{join}}}\n",
            dir.display()
        );
        let proc = start_agent(bin, &dir, &format!("s{i}"), &hcl)?;
        out.push(Server {
            proc: Some(proc),
            http: local(http),
            rpc: local(rpc),
        });
    }
    Ok(out)
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
    let mut tx = connect(addr).await?;
    send(&mut tx, "GET", path, "", String::new()).await
}

pub(crate) async fn leader(servers: &[Server]) -> Result<usize, String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        for s in servers.iter().filter(|s| s.proc.is_some()) {
            if let Ok((200, b)) = get(s.http, "/v1/status/leader").await {
                let addr = String::from_utf8_lossy(&b).trim_matches('"').to_string();
                if let Some(i) = servers
                    .iter()
                    .position(|s| s.proc.is_some() && s.rpc.to_string() == addr)
                {
                    return Ok(i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no leader within 60 s".into())
}

/// Nodes by status on `http` (stale read).
async fn node_statuses(http: SocketAddr) -> Result<(usize, usize), String> {
    let (status, body) = get(http, "/v1/nodes?stale=true").await?;
    if status != 200 {
        return Err(format!("/v1/nodes: {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let nodes = v.as_array().cloned().unwrap_or_default();
    let down = nodes.iter().filter(|n| n["Status"] == "down").count();
    Ok((nodes.len(), down))
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(n(11) + n(12))
}

fn ticks_per_second() -> u64 {
    100
}

fn scratch(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("caravan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

async fn wait_registered(sim: &Nodesim, want: usize, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    while sim.registered() < want {
        if started.elapsed() > limit {
            return Err(format!(
                "{} of {want} nodes registered within {limit:?}",
                sim.registered()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(started.elapsed())
}

async fn heartbeats(bin: &Path, minutes: u64) -> Result<(), String> {
    let root = scratch("hb")?;
    let mut servers = servers(bin, &root)?;
    let l0 = leader(&servers).await?;
    let opts = NodesimOptions {
        nodes: 10_000,
        servers: servers.iter().map(|s| s.rpc).collect(),
        per_conn: 8,
        cpu: 4000,
        memory_mb: 8192,
        prefix: "hb".into(),
    };
    let sim = Nodesim::start(&opts, Duration::from_secs(30)).await;
    let took = wait_registered(&sim, opts.nodes, Duration::from_secs(180)).await?;
    println!(
        "heartbeats: 10,000 nodes registered in {:.1} s",
        took.as_secs_f64()
    );
    sim.take_latencies();
    let run = Duration::from_secs(minutes * 60);
    let started = Instant::now();
    let leader_pid = servers[l0].proc.as_ref().map(|p| p.0.id()).unwrap_or(0);
    let cpu0 = cpu_ticks(leader_pid)?;
    let mut max_down = 0;
    let mut killed = false;
    let mut before_kill = Vec::new();
    let mut after_kill = Vec::new();
    let mut leader_cpu = 0.0;
    let mut leader_rss = 0;
    while started.elapsed() < run {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let l = sim.take_latencies();
        if killed {
            after_kill.extend(l)
        } else {
            before_kill.extend(l)
        }
        let alive = servers.iter().find(|s| s.proc.is_some()).map(|s| s.http);
        if let Some(http) = alive
            && let Ok((_, down)) = node_statuses(http).await
        {
            max_down = max_down.max(down);
        }
        if !killed && started.elapsed() >= run / 2 {
            leader_cpu = (cpu_ticks(leader_pid)? - cpu0) as f64
                / ticks_per_second() as f64
                / started.elapsed().as_secs_f64();
            leader_rss = rss_kib(leader_pid)?;
            servers[l0].proc = None; // SIGKILL
            killed = true;
            let l1 = leader(&servers).await?;
            println!("heartbeats: killed leader s{l0}; new leader s{l1}");
        }
    }
    let survivor = servers
        .iter()
        .find(|s| s.proc.is_some())
        .map(|s| s.http)
        .ok_or("no server left")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (total, down) = node_statuses(survivor).await?;
    max_down = max_down.max(down);
    let mut all: Vec<u32> = before_kill.iter().chain(&after_kill).copied().collect();
    println!(
        "heartbeats: {} nodes known, {} down at the end, at most {} down at any check (target 0: {})",
        total,
        down,
        max_down,
        verdict(max_down == 0)
    );
    println!(
        "heartbeats: {} round trips, p50 {} µs, p99 {} µs; before the kill p99 {} µs, after {} µs",
        all.len(),
        percentile(&mut all, 50.0),
        percentile(&mut all, 99.0),
        percentile(&mut before_kill, 99.0),
        percentile(&mut after_kill, 99.0)
    );
    println!(
        "heartbeats: leader CPU {:.1} % of a core, RSS {} MiB (before the kill, 10,000 nodes)",
        leader_cpu * 100.0,
        leader_rss / 1024
    );
    sim.stop();
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn job_body(i: usize) -> String {
    serde_json::json!({"Job": {"ID": format!("c1m-{i}"), "Type": "batch", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 10, "Tasks": [{"Name": "t", "Driver": "exec", "Resources": {"CPU": 10, "MemoryMB": 10}}]}]}})
    .to_string()
}

async fn c1m(bin: &Path) -> Result<(), String> {
    const JOBS: usize = 10_000;
    const CONNS: usize = 16;
    let root = scratch("c1m")?;
    let servers = servers(bin, &root)?;
    leader(&servers).await?;
    let opts = NodesimOptions {
        nodes: 5_000,
        servers: servers.iter().map(|s| s.rpc).collect(),
        per_conn: 8,
        cpu: 1_000_000,
        memory_mb: 1_000_000,
        prefix: "c1m".into(),
    };
    let sim = Nodesim::start(&opts, Duration::from_secs(15)).await;
    wait_registered(&sim, opts.nodes, Duration::from_secs(120)).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNS {
        let http = servers[c % servers.len()].http;
        tasks.spawn(async move {
            let mut tx = connect(http).await?;
            let mut i = c;
            let mut retries = 0usize;
            while i < JOBS {
                // A 5xx under load is retried, as a real client would (at most 5 times a job).
                let mut attempt = 0;
                loop {
                    let (status, body) = send(&mut tx, "POST", "/v1/jobs", "", job_body(i)).await?;
                    if status == 200 {
                        break;
                    }
                    attempt += 1;
                    if status < 500 || attempt > 5 {
                        return Err(format!(
                            "job {i}: {status} {}",
                            String::from_utf8_lossy(&body)
                        ));
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                i += CONNS;
            }
            Ok::<usize, String>(retries)
        });
    }
    let mut retried = 0;
    while let Some(done) = tasks.join_next().await {
        retried += done.map_err(|e| e.to_string())??;
    }
    let submitted = started.elapsed();
    let want = JOBS * 10;
    let limit = Duration::from_secs(600);
    while sim.allocations() < want && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let held = sim.allocations();
    let rate = held as f64 / elapsed.as_secs_f64();
    println!(
        "c1m: {JOBS} jobs submitted in {:.1} s ({retried} submissions retried after a 5xx); clients hold {held}/{want} allocations after {:.1} s: {:.0} placements/s (target 37,500: {}; Nomad's C1M 3,750)",
        submitted.as_secs_f64(),
        elapsed.as_secs_f64(),
        rate,
        verdict(held == want && rate >= 37_500.0)
    );
    sim.stop();
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

async fn forwarding(bin: &Path) -> Result<(), String> {
    let root = scratch("fwd")?;
    let servers = servers(bin, &root)?;
    leader(&servers).await?;
    let (http, rpc, serf) = (free_port()?, free_port()?, free_port()?);
    let dir = root.join("client");
    let hcl = format!(
        "name = \"c1\"\nbind_addr = \"127.0.0.1\"\ndata_dir = \"{}\"\nenable_debug = true\nports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\nclient {{\n  enabled = true\n  servers = [\"{}\"]\n}}\n",
        dir.display(),
        servers[0].rpc
    );
    let _client = start_agent(bin, &dir, "client", &hcl)?;
    let started = Instant::now();
    let node_id = loop {
        if let Ok((200, b)) = get(local(http), "/v1/agent/self").await {
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
            let id = v["stats"]["client"]["node_id"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if !id.is_empty() && v["stats"]["client"]["last_heartbeat"] != "0s" {
                break id;
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the client did not register".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The client talks to s0; ask s1, which finds s0 and goes through it.
    let through = format!("/v1/agent/host?node_id={node_id}");
    let mut local_times = Vec::new();
    let mut forwarded = Vec::new();
    let mut direct = connect(local(http)).await?;
    let mut via = connect(servers[1].http).await?;
    for _ in 0..200 {
        let t = Instant::now();
        let (s, _) = send(&mut direct, "GET", "/v1/agent/host", "", String::new()).await?;
        local_times.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let (f, body) = send(&mut via, "GET", &through, "", String::new()).await?;
        forwarded.push(t.elapsed().as_secs_f64() * 1000.0);
        if s != 200 || f != 200 {
            return Err(format!(
                "host: local {s}, forwarded {f}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    let (l, f) = (median(local_times), median(forwarded));
    println!(
        "node_id forwarding: local /v1/agent/host p50 {l:.2} ms, through another server p50 {f:.2} ms: added {:.2} ms (target ≤ 2 ms: {})",
        f - l,
        verdict(f - l <= 2.0)
    );
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// The measurement (release build): `clients-bench-run [--minutes M] [--only heartbeats|c1m|forwarding]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut minutes = 10;
    let mut only = String::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => minutes = value.parse().map_err(|e| format!("--minutes: {e}"))?,
            "--only" => only = value.clone(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let bin = target_dir().join("release").join("caravan");
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        if only.is_empty() || only == "forwarding" {
            forwarding(&bin).await?;
        }
        if only.is_empty() || only == "c1m" {
            c1m(&bin).await?;
        }
        if only.is_empty() || only == "heartbeats" {
            heartbeats(&bin, minutes).await?;
        }
        Ok(())
    })
}

/// `cargo xtask bench clients [args]`: release builds, then [`run`].
pub fn bench(args: &[String]) -> Result<(), String> {
    crate::bench::hand_over_with("clients-bench-run", args)
}
