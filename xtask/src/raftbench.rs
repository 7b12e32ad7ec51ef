//! `cargo xtask bench raft`: writes through Raft on three local release servers (durable logs
//! in temp data dirs), against the same writes on a single server measured in the same run:
//! - latency: sequential ACL policy writes (one Raft entry each) on the leader and through a
//!   follower (forwarded), p50/p99;
//! - throughput: job registrations from 16 concurrent connections for 3 s;
//! - failover: kill -9 the leader, time until the survivors agree on a new one (3 rounds).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::bench::{Proc, free_port, median, verdict};
use crate::target_dir;

const CONCURRENCY: usize = 16;

/// How much of `raft-bench-run` to do, and from which build.
#[derive(Clone, Copy)]
struct Scale {
    /// `release` to measure; `debug` for CI's smoke run, whose figures mean nothing.
    profile: &'static str,
    sequential: usize,
    load: Duration,
    failovers: usize,
}

const MEASURE: Scale = Scale {
    profile: "release",
    sequential: 300,
    load: Duration::from_secs(3),
    failovers: 3,
};

/// CI: every step once, briefly, from the debug build, so a panic in this code fails CI.
const SMOKE: Scale = Scale {
    profile: "debug",
    sequential: 20,
    load: Duration::from_millis(300),
    failovers: 1,
};

/// Builds release binaries and runs the measurement from them.
pub fn raft() -> Result<(), String> {
    crate::bench::hand_over("raft-bench-run")
}

struct Server {
    proc: Option<Proc>,
    http: SocketAddr,
    rpc: SocketAddr,
    serf: u16,
    dir: PathBuf,
}

impl Server {
    fn new(root: &Path, i: usize) -> Result<Server, String> {
        Ok(Server {
            proc: None,
            http: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            rpc: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            serf: free_port()?,
            dir: root.join(format!("s{i}")),
        })
    }

    fn start(
        &mut self,
        bin: &Path,
        i: usize,
        expect: usize,
        join: Option<u16>,
    ) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let retry = join.map_or(String::new(), |p| {
            format!("  server_join {{\n    retry_join = [\"127.0.0.1:{p}\"]\n    retry_interval = \"200ms\"\n  }}\n")
        });
        let hcl = format!(
            "name = \"s{i}\"\nbind_addr = \"127.0.0.1\"\ndata_dir = \"{}\"\nacl {{\n  enabled = true\n}}\nports {{\n  http = {}\n  rpc = {}\n  serf = {}\n}}\nlimits {{\n  http_max_conns_per_client = 0\n}}\nserver {{\n  enabled = true\n  bootstrap_expect = {expect}\n  encrypt = \"rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=\"\n{retry}}}\n",
            self.dir.display(),
            self.http.port(),
            self.rpc.port(),
            self.serf
        );
        let cfg = self.dir.join("agent.hcl");
        std::fs::write(&cfg, hcl).map_err(|e| e.to_string())?;
        // Appended across restarts, kept when the run fails.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["agent", "-log-level=WARN"])
            .arg(format!("-config={}", cfg.display()))
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        self.proc = Some(Proc(child));
        Ok(())
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(tx)
}

pub(crate) async fn send(
    tx: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    token: &str,
    body: String,
) -> Result<(u16, Bytes), String> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("X-Nomad-Token", token)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

async fn once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: String,
) -> Result<(u16, Bytes), String> {
    let mut tx = connect(addr).await?;
    send(&mut tx, method, path, token, body).await
}

async fn leader_of(http: SocketAddr) -> String {
    match once(http, "GET", "/v1/status/leader", "", String::new()).await {
        Ok((200, b)) => String::from_utf8_lossy(&b).trim_matches('"').to_string(),
        _ => String::new(),
    }
}

/// Index of the leader the running servers agree on, within `limit`.
async fn agreed(servers: &[Server], limit: Duration) -> Result<usize, String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut seen = BTreeSet::new();
        for s in servers.iter().filter(|s| s.proc.is_some()) {
            seen.insert(leader_of(s.http).await);
        }
        if seen.len() == 1
            && let Some(addr) = seen.into_iter().next()
            && let Some(i) = servers
                .iter()
                .position(|s| s.proc.is_some() && s.rpc.to_string() == addr)
        {
            return Ok(i);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("no agreed leader within {limit:?}"))
}

async fn bootstrap_acl(http: SocketAddr) -> Result<String, String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok((200, b)) = once(http, "POST", "/v1/acl/bootstrap", "", String::new()).await {
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
            return Ok(v["SecretID"].as_str().unwrap_or_default().to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("ACL bootstrap failed".into())
}

/// p50 and p99 (µs) of `n` sequential policy writes through `http`.
async fn sequential(
    http: SocketAddr,
    token: &str,
    tag: &str,
    n: usize,
) -> Result<(u32, u32), String> {
    let mut tx = connect(http).await?;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!(r#"{{"Name":"p{tag}{i}","Rules":"agent {{ policy = \"read\" }}"}}"#);
        let t = Instant::now();
        let (status, b) = send(
            &mut tx,
            "PUT",
            &format!("/v1/acl/policy/p{tag}{i}"),
            token,
            body,
        )
        .await?;
        if status != 200 {
            return Err(format!(
                "policy write: {status} {}",
                String::from_utf8_lossy(&b)
            ));
        }
        lat.push(t.elapsed().as_micros() as u32);
    }
    lat.sort_unstable();
    Ok((lat[lat.len() / 2], lat[lat.len() * 99 / 100]))
}

/// Job registrations per second from `CONCURRENCY` connections.
async fn throughput(
    http: SocketAddr,
    token: &str,
    tag: &str,
    load: Duration,
) -> Result<f64, String> {
    let deadline = Instant::now() + load;
    let mut tasks = Vec::new();
    for c in 0..CONCURRENCY {
        let token = token.to_string();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut tx = connect(http).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let body = format!(
                    r#"{{"Job":{{"ID":"j{tag}-{c}-{n}","Type":"batch","Datacenters":["dc1"],"TaskGroups":[{{"Name":"g","Count":0,"Tasks":[{{"Name":"t","Driver":"exec","Resources":{{"CPU":1,"MemoryMB":1}}}}]}}]}}}}"#
                );
                let (status, b) = send(&mut tx, "POST", "/v1/jobs", &token, body).await?;
                if status != 200 {
                    return Err(format!("job write: {status} {}", String::from_utf8_lossy(&b)));
                }
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|e| e.to_string())??;
    }
    if total == 0 {
        return Err(format!(
            "job registrations through {http}: none completed in {load:?}, no figure produced"
        ));
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// `xtask raft-bench-run [--smoke]`: the measurement itself (release build), or with `--smoke` a
/// brief pass from the debug build that checks the code runs and measures nothing.
pub fn raft_bench_run(smoke: bool) -> Result<(), String> {
    let scale = if smoke { SMOKE } else { MEASURE };
    let bin = target_dir().join(scale.profile).join("caravan");
    let root = std::env::temp_dir().join(format!("caravan-raft-bench-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result: Result<(), String> = rt.block_on(async {
        // Baseline: one server, the same writes, no replication.
        let mut single = vec![Server::new(&root.join("single"), 0)?];
        single[0].start(&bin, 0, 1, None)?;
        agreed(&single, Duration::from_secs(20)).await?;
        let token = bootstrap_acl(single[0].http).await?;
        let (b50, b99) = sequential(single[0].http, &token, "w", scale.sequential).await?;
        let btp = throughput(single[0].http, &token, "w", scale.load).await?;
        drop(single);

        let mut servers = Vec::new();
        for i in 0..3 {
            servers.push(Server::new(&root, i)?);
        }
        let first = servers[0].serf;
        for (i, s) in servers.iter_mut().enumerate() {
            s.start(&bin, i, 3, (i > 0).then_some(first))?;
        }
        let leader = agreed(&servers, Duration::from_secs(30)).await?;
        let token = bootstrap_acl(servers[leader].http).await?;
        let follower = (leader + 1) % 3;
        let (l50, l99) = sequential(servers[leader].http, &token, "l", scale.sequential).await?;
        let (f50, f99) = sequential(servers[follower].http, &token, "f", scale.sequential).await?;
        let tp = throughput(servers[leader].http, &token, "t", scale.load).await?;
        if smoke {
            println!("smoke run (debug build, tiny counts): these figures are not measurements");
        }
        println!("writes through Raft, 3 local servers, durable logs (redb, fsync); single server in the same run as baseline");
        println!("{:<44} {:>9} {:>9}", "sequential ACL policy writes", "p50 µs", "p99 µs");
        println!("{:<44} {b50:>9} {b99:>9}", "single server (baseline)");
        println!("{:<44} {l50:>9} {l99:>9}", "3 servers, on the leader");
        println!("{:<44} {f50:>9} {f99:>9}", "3 servers, through a follower (forwarded)");
        println!(
            "p50 ratio leader ÷ single: {:.2} (target ≤ 1.5: {}); target p50 ≤ 5 ms: {}",
            l50 as f64 / b50.max(1) as f64,
            verdict(l50 * 2 <= b50 * 3),
            verdict(l50 <= 5000)
        );
        println!(
            "job registrations, {CONCURRENCY} connections, {:?}: single {btp:.0}/s, 3 servers {tp:.0}/s (ratio {:.2})",
            scale.load,
            tp / btp
        );

        let mut failovers = Vec::new();
        for _ in 0..scale.failovers {
            let leader = agreed(&servers, Duration::from_secs(30)).await?;
            let killed = Instant::now();
            servers[leader].proc = None; // kill -9 (Proc's drop)
            let next = agreed(&servers, Duration::from_secs(30)).await?;
            let took = killed.elapsed();
            failovers.push(took);
            println!("  leader s{leader} killed → s{next} leads after {:.2} s", took.as_secs_f64());
            let rejoin = servers[next].serf;
            servers[leader].start(&bin, leader, 3, Some(rejoin))?;
            agreed(&servers, Duration::from_secs(30)).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let med = median(failovers.clone());
        println!(
            "failover (kill -9 → survivors agree on a new leader): median {:.2} s over {} (target ≤ 5 s: {})",
            med.as_secs_f64(),
            scale.failovers,
            verdict(med <= Duration::from_secs(5))
        );
        Ok(())
    });
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&root);
            Ok(())
        }
        Err(e) => Err(format!(
            "{e} (server logs kept in {}/*/agent.log)",
            root.display()
        )),
    }
}
