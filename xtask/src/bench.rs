//! `cargo xtask bench http`: throughput and latency of `GET /v1/agent/health` and `/self` against
//! a bare hyper server answering a fixed 20-byte JSON body, measured in the same run with `wrk`
//! (an external load generator, installed from Debian if missing: a generator in the same runtime
//! as this code would hide server cost); idle RSS of `agent -dev`; exec → first 200 from
//! `/health`. The CI smoke run drives the load from this process instead (no figures).
//!
//! Everything runs from release builds: `cargo xtask` (a debug build) builds them and hands over to
//! `target/release/xtask bench-run`.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::{run, target_dir};

const CONNECTIONS: usize = 64;

/// How much of `bench-run` to do, and from which build.
struct Scale {
    /// `release` to measure; `debug` for CI's smoke run, whose figures mean nothing.
    profile: &'static str,
    warm_up: Duration,
    round: Duration,
    rounds: usize,
    startup_runs: usize,
}

const MEASURE: Scale = Scale {
    profile: "release",
    warm_up: Duration::from_millis(500),
    round: Duration::from_secs(3),
    rounds: 5,
    startup_runs: 10,
};

/// CI: every step once, briefly, from the debug build, so a panic in this code fails CI.
const SMOKE: Scale = Scale {
    profile: "debug",
    warm_up: Duration::from_millis(50),
    round: Duration::from_millis(200),
    rounds: 1,
    startup_runs: 2,
};

/// Builds release binaries and runs the measurement from them.
pub fn http() -> Result<(), String> {
    hand_over("bench-run")
}

/// Builds the release agent and xtask, then runs `target/release/xtask <task>`, so a
/// measurement never runs from a debug build.
pub fn hand_over(task: &str) -> Result<(), String> {
    hand_over_with(task, &[])
}

/// [`hand_over`] passing `args` on to the task.
pub fn hand_over_with(task: &str, args: &[String]) -> Result<(), String> {
    run(
        "cargo",
        &["build", "--release", "-p", "caravan-agent", "-p", "xtask"],
    )?;
    let xtask = target_dir().join("release").join("xtask");
    let status = Command::new(&xtask)
        .arg(task)
        .args(args)
        .status()
        .map_err(|e| format!("{}: {e}", xtask.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{task} failed: {status}"))
    }
}

pub fn free_port() -> Result<u16, String> {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch_config(http: u16) -> Result<PathBuf, String> {
    let path =
        std::env::temp_dir().join(format!("caravan-bench-{}-{http}.hcl", std::process::id()));
    // One load generator opens many connections from one IP: lift the per-client limit.
    let text = format!(
        "ports {{\n  http = {http}\n  rpc = {}\n  serf = {}\n}}\nlimits {{\n  http_max_conns_per_client = 0\n}}\n",
        free_port()?,
        free_port()?
    );
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

fn start_caravan(bin: &Path, http: u16) -> Result<Proc, String> {
    start_caravan_env(bin, http, &[])
}

/// [`start_caravan`] with extra environment variables (`CARAVAN_METRICS=off`).
fn start_caravan_env(bin: &Path, http: u16, env: &[(&str, &str)]) -> Result<Proc, String> {
    let cfg = scratch_config(http)?;
    Command::new(bin)
        .envs(env.iter().copied())
        .args(["agent", "-dev", "-log-level=INFO"])
        .arg(format!("-config={}", cfg.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Proc)
        .map_err(|e| format!("{}: {e}", bin.display()))
}

async fn get_once(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

async fn wait_ready(addr: SocketAddr, path: &str, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if get_once(addr, path).await == Ok(200) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("{addr}{path} did not answer 200 within {limit:?}"))
}

/// Figures of one load round.
#[derive(Clone)]
struct Round {
    rps: f64,
    p50_us: u32,
    p99_us: u32,
}

/// Makes sure `wrk` is installed (Debian's package), installing it when it is not.
fn ensure_wrk() -> Result<(), String> {
    let present = |()| {
        Command::new("wrk")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if present(()) {
        return Ok(());
    }
    println!("wrk not found: installing Debian's wrk package");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "wrk"])
        .status();
    if present(()) {
        Ok(())
    } else {
        Err("wrk is not installed and `apt-get install wrk` failed: no figure produced".into())
    }
}

/// One `wrk -t1 -c64` round against `addr` + `path`: requests per second and the 50th and 99th
/// latency percentiles from its `--latency` report.
fn wrk_round(addr: SocketAddr, path: &str, duration: Duration) -> Result<Round, String> {
    let url = format!("http://{addr}{path}");
    let secs = duration.as_secs().max(1).to_string();
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs}s"),
            "--latency",
            &url,
        ])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") {
        return Err(format!("wrk {url}: {}\n{text}", out.status));
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("wrk {url}: no `{prefix}` line, no figure produced:\n{text}"))
    };
    let rps: f64 = field("Requests/sec:")?
        .parse()
        .map_err(|e| format!("wrk {url}: Requests/sec: {e}"))?;
    Ok(Round {
        rps,
        p50_us: wrk_micros(&field("50%")?)?,
        p99_us: wrk_micros(&field("99%")?)?,
    })
}

/// A wrk latency (`812.00us`, `1.23ms`, `2.00s`) in whole microseconds.
fn wrk_micros(text: &str) -> Result<u32, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return Err(format!("wrk latency {text:?}: unknown unit"));
    };
    let value: f64 = number
        .parse()
        .map_err(|e| format!("wrk latency {text:?}: {e}"))?;
    Ok((value * scale).round() as u32)
}

async fn load(addr: SocketAddr, path: &'static str, duration: Duration) -> Result<Round, String> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let req = Request::get(path)
                    .header("host", "127.0.0.1")
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let t = Instant::now();
                let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("{path}: status {}", resp.status()));
                }
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                lat.push(t.elapsed().as_micros() as u32);
            }
            Ok::<_, String>(lat)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64();
    if all.is_empty() {
        return Err(format!(
            "{addr}{path}: no request completed in {duration:?}, no figure produced"
        ));
    }
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(Round {
        rps: all.len() as f64 / secs,
        p50_us: pick(0.50),
        p99_us: pick(0.99),
    })
}

pub fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Resident set size of `pid`; an error (naming the figure) when it cannot be read, never 0.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| format!("agent RSS not produced: {path}: {e}"))?;
    status_field_kib(&status, "VmRSS:")
        .ok_or_else(|| format!("agent RSS not produced: no VmRSS in {path}"))
}

/// A `kB` field of `/proc/<pid>/status` (`RssAnon:`, `RssFile:`), if the process and field exist.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    status_field_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        field,
    )
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How a figure stands against its target: printed, never an error.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// `xtask bench-run [--smoke]`: the measurement itself (release build), or with `--smoke` a
/// brief pass from the debug build that checks the code runs and measures nothing.
pub fn bench_run(smoke: bool) -> Result<(), String> {
    let Scale {
        profile,
        warm_up,
        round,
        rounds,
        startup_runs,
    } = if smoke { SMOKE } else { MEASURE };
    let release = target_dir().join(profile);
    let caravan = release.join("caravan");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let bare_port = free_port()?;
        let _bare = Command::new(release.join("bare-server"))
            .arg(bare_port.to_string())
            .spawn()
            .map(Proc)
            .map_err(|e| e.to_string())?;
        let bare = SocketAddr::from(([127, 0, 0, 1], bare_port));
        wait_ready(bare, "/", Duration::from_secs(10)).await?;

        let http_port = free_port()?;
        let agent = start_caravan(&caravan, http_port)?;
        let api = SocketAddr::from(([127, 0, 0, 1], http_port));
        wait_ready(api, "/v1/agent/health", Duration::from_secs(10)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss = rss_kib(agent.0.id())?;
        // The same agent with no metrics recorder installed: the metrics' cost on the path.
        let quiet_port = free_port()?;
        let _quiet = start_caravan_env(&caravan, quiet_port, &[("CARAVAN_METRICS", "off")])?;
        let quiet = SocketAddr::from(([127, 0, 0, 1], quiet_port));
        wait_ready(quiet, "/v1/agent/health", Duration::from_secs(10)).await?;

        if smoke {
            println!("smoke run (debug build, tiny rounds): these figures are not measurements");
        }
        if smoke {
            println!("load: {CONNECTIONS} keep-alive connections from this process, {rounds} round of {round:?}");
        } else {
            ensure_wrk()?;
            println!("load: wrk -t1 -c{CONNECTIONS}, {rounds} rounds of {round:?} per target, targets interleaved; medians");
        }
        println!("{:<26} {:>12} {:>9} {:>9}", "target", "req/s", "p50 µs", "p99 µs");
        let targets = [
            ("bare hyper (20 B JSON)", bare, "/"),
            ("GET /v1/agent/health", api, "/v1/agent/health"),
            ("GET /v1/agent/self", api, "/v1/agent/self"),
            ("/health, metrics off", quiet, "/v1/agent/health"),
        ];
        // Rounds interleave the targets, so a noisy neighbour slows each of them alike.
        let mut rounds_of: Vec<Vec<Round>> = vec![Vec::new(); targets.len()];
        for &(_, addr, path) in &targets {
            let _ = load(addr, path, warm_up).await?;
        }
        for _ in 0..rounds {
            for (i, &(_, addr, path)) in targets.iter().enumerate() {
                let r = if smoke {
                    load(addr, path, round).await?
                } else {
                    wrk_round(addr, path, round)?
                };
                rounds_of[i].push(r);
            }
        }
        let mut results = Vec::new();
        for ((name, _, _), done) in targets.iter().zip(rounds_of) {
            let rps = median(done.iter().map(|r| r.rps).collect());
            let p50 = median(done.iter().map(|r| r.p50_us).collect());
            let p99 = median(done.iter().map(|r| r.p99_us).collect());
            println!("{name:<26} {rps:>12.0} {p50:>9} {p99:>9}");
            results.push(rps);
        }
        let loaded_rss = rss_kib(agent.0.id())?;
        let health_ratio = results[1] / results[0];
        println!(
            "ratio /health ÷ bare: {health_ratio:.2} (target ≥ 0.90: {}); /self ÷ bare: {:.2}",
            verdict(health_ratio >= 0.90),
            results[2] / results[0]
        );
        let metrics_ratio = results[1] / results[3];
        println!(
            "ratio /health metrics on ÷ off: {metrics_ratio:.3} (target ≥ 0.95: {})",
            verdict(metrics_ratio >= 0.95)
        );
        println!(
            "agent -dev RSS: idle {:.1} MiB (target ≤ 20 MiB: {}), after load {:.1} MiB",
            idle_rss as f64 / 1024.0,
            verdict(idle_rss <= 20 * 1024),
            loaded_rss as f64 / 1024.0
        );
        drop(agent);

        let mut startups = Vec::new();
        for _ in 0..startup_runs {
            let port = free_port()?;
            let cfg_started = Instant::now();
            let proc = start_caravan(&caravan, port)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_ready(addr, "/v1/agent/health", Duration::from_secs(10)).await?;
            startups.push(cfg_started.elapsed());
            drop(proc);
        }
        let med = median(startups.clone());
        let max = startups.iter().max().copied().unwrap_or_default();
        println!(
            "exec → first 200 from /health: median {:.1} ms, max {:.1} ms over {startup_runs} runs (target ≤ 150 ms: {})",
            med.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            verdict(med <= Duration::from_millis(150))
        );
        Ok(())
    })
}

/// `cargo xtask bench sched`: runs the criterion scheduling benches and prints their medians as
/// rates next to the targets, each target `met` or `missed`. A figure this run did not produce
/// (no estimate, or one left from an earlier run) is an error naming it; a missed target is not.
pub fn sched() -> Result<(), String> {
    let started = std::time::SystemTime::now();
    run(
        "cargo",
        &["bench", "-p", "caravan-benches", "--bench", "sched"],
    )?;
    let root = target_dir().join("criterion");
    let median_ns = |dir: &str| -> Result<f64, String> {
        let path = root.join(dir).join("new").join("estimates.json");
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if fresh < started {
            return Err(format!("{} is from an earlier run", path.display()));
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = "\"median\":{\"confidence_interval\":";
        let pe = "\"point_estimate\":";
        text.find(key)
            .map(|at| &text[at..])
            .and_then(|rest| rest.find(pe).map(|i| &rest[i + pe.len()..]))
            .and_then(|v| v.split([',', '}']).next()?.parse().ok())
            .ok_or_else(|| format!("{}: no median point estimate", path.display()))
    };
    // (criterion directory, label, elements per iteration, minimum rate per second, as printed)
    let rows = [
        (
            "broker round trip/1 thread",
            "broker round trips/s, 1 thread",
            1.0,
            Some((1_000_000.0, "≥ 1,000,000/s")),
        ),
        (
            "broker round trip/2 threads",
            "broker round trips/s, 2 threads",
            1.0,
            None,
        ),
        (
            "placement/service_ 10,000 allocs over 5,000 nodes",
            "placements/s, 10,000 allocs over 5,000 nodes",
            10_000.0,
            Some((100_000.0, "≥ 100,000/s")),
        ),
        (
            "placement/system_ one per node over 10,000 nodes",
            "placements/s, system job over 10,000 nodes",
            10_000.0,
            Some((100_000.0, "≥ 100,000/s")),
        ),
    ];
    println!(
        "{:<48} {:>16} {:>16}",
        "benchmark (criterion median)", "rate", "target"
    );
    let mut missing = Vec::new();
    for (dir, label, per_iter, target) in rows {
        match median_ns(dir) {
            Ok(ns) => {
                let rate = per_iter * 1e9 / ns;
                let target = target.map_or("–".to_string(), |(min, text)| {
                    format!("{text} {}", verdict(rate >= min))
                });
                println!("{label:<48} {rate:>14.0}/s {target:>16}");
            }
            Err(e) => {
                println!("{label:<48} {:>16}", "not produced");
                missing.push(format!("{label} ({e})"));
            }
        }
    }
    match median_ns("pause → Paused (worker waiting to dequeue)") {
        Ok(ns) => println!(
            "{:<48} {:>14.1}µs {:>16}",
            "pause → Paused",
            ns / 1e3,
            format!("≤ 10 ms {}", verdict(ns <= 10e6))
        ),
        Err(e) => {
            println!("{:<48} {:>16}", "pause → Paused", "not produced");
            missing.push(format!("pause → Paused ({e})"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "bench sched: figures not produced: {}",
            missing.join("; ")
        ))
    }
}
