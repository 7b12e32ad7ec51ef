//! Network faults between real servers (through [`crate::faultproxy`]) while concurrent clients
//! write and read registers, with every operation recorded and the history checked
//! ([`crate::history`]) afterwards.
//!
//! Scenarios: five servers partitioned 3|2 with the leader on the small side, then healed (run by
//! `cargo xtask ci`); a leader cut off from its followers but not from clients; a lossy link
//! between the leader and a follower for 60 s (30 % of datagrams dropped and TCP chunks held a
//! retransmission time as often, for 2 s; cut for 1 s; and again) (both `#[ignore]`d: `cargo
//! xtask ci --long` runs them), and the flapping link's short form, 18 s, run by `cargo xtask
//! ci`. No check reads another process's clock: every time is this process's monotonic clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::faultproxy::{Fault, Net};
use crate::history::{self, Kind, Op, Outcome, Time};
use crate::support::{Agent, Ports, Scratch, call, send};

const KEY: &str = "rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=";

/// The registers: jobs (value: the job's `Name`) and ACL policies (value: `Description`).
const JOBS: [&str; 4] = ["reg-job-0", "reg-job-1", "reg-job-2", "reg-job-3"];
const POLICIES: [&str; 3] = ["reg-pol-0", "reg-pol-1", "reg-pol-2"];

/// Reads every scenario checks at least.
const MIN_READS: usize = 1_000;

/// Servers behind the fault proxy.
struct Cluster {
    net: Net,
    agents: Vec<Agent>,
    _data: Vec<Scratch>,
    token: String,
}

impl Cluster {
    /// `n` servers (ACLs on, a gossip key, one scheduler worker each, no client) advertising
    /// the proxy's addresses, joined through server 0's proxy; waits for one leader and
    /// bootstraps ACLs.
    async fn start(n: usize) -> Cluster {
        let net = Net::start(n).await;
        let mut agents = Vec::new();
        let mut data = Vec::new();
        let join = net.endpoints(0).proxy_serf;
        for i in 0..n {
            let e = net.endpoints(i);
            let dir = Scratch::new();
            let hcl = format!(
                "name = \"f{i}\"\nbind_addr = \"127.0.0.1\"\n\
                 advertise {{\n  rpc = \"{}\"\n  serf = \"{}\"\n}}\n\
                 acl {{\n  enabled = true\n}}\n\
                 server {{\n  bootstrap_expect = {n}\n  encrypt = \"{KEY}\"\n  num_schedulers = 1\n\
                 server_join {{\n    retry_join = [\"{join}\"]\n    retry_interval = \"200ms\"\n  }}\n}}\n",
                e.proxy_rpc, e.proxy_serf
            );
            let ports = Ports {
                http: crate::support::free_port(),
                rpc: e.real_rpc.port(),
                serf: e.real_serf.port(),
            };
            let dd = format!("-data-dir={}", dir.0.display());
            let agent = Agent::start_env(ports, &["-server", &dd], &hcl, &[]).await;
            net.set_pid(i, Some(agent.child.id()));
            agents.push(agent);
            data.push(dir);
        }
        let mut c = Cluster {
            net,
            agents,
            _data: data,
            token: String::new(),
        };
        let all: Vec<usize> = (0..n).collect();
        let leader = c.agreed_leader(&all, Duration::from_secs(60)).await;
        c.token = bootstrap(&c.agents[leader]).await;
        c
    }

    /// The server whose advertised RPC address `agent` names as leader.
    async fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let r = crate::support::get(self.agents[i].http, "/v1/status/leader")
            .await
            .ok()?;
        let addr = r.json().as_str()?.to_string();
        (0..self.agents.len()).find(|&j| self.net.endpoints(j).proxy_rpc.to_string() == addr)
    }

    /// Waits (bounded) until every server of `which` names the same leader, one of them.
    async fn agreed_leader(&self, which: &[usize], limit: Duration) -> usize {
        let started = Instant::now();
        loop {
            let mut seen = BTreeSet::new();
            for &i in which {
                seen.insert(self.leader_seen_by(i).await);
            }
            if let (1, Some(Some(l))) = (seen.len(), seen.first())
                && which.contains(l)
            {
                return *l;
            }
            assert!(
                started.elapsed() < limit,
                "servers {which:?} did not agree on a leader among them within {limit:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn bootstrap(agent: &Agent) -> String {
    let started = Instant::now();
    loop {
        let r = send(agent, "POST", "/v1/acl/bootstrap", None, Value::Null).await;
        if r.status == 200 {
            return r.json()["SecretID"].as_str().expect("SecretID").to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bootstrap: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The recorded history and the workload's stop flag.
struct Recorder {
    start: Instant,
    ops: std::sync::Mutex<Vec<Op>>,
    stop: AtomicBool,
    reads_ok: AtomicUsize,
    seq: AtomicU64,
}

impl Recorder {
    fn now(&self) -> Time {
        self.start.elapsed().as_nanos() as Time
    }
}

/// A register key: a job or an ACL policy.
fn key_name(k: usize) -> &'static str {
    if k < JOBS.len() {
        JOBS[k]
    } else {
        POLICIES[k - JOBS.len()]
    }
}

fn job_body(id: &str, value: &str) -> Value {
    json!({"Job": {"ID": id, "Name": value, "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 1, "Tasks": [
            {"Name": "t", "Driver": "docker", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]}})
}

/// One write of `value` to `key` on `http`; whether it was acknowledged.
async fn write(http: std::net::SocketAddr, token: &str, key: &str, value: &str) -> bool {
    let (path, body) = if key.starts_with("reg-job") {
        ("/v1/jobs".to_string(), job_body(key, value))
    } else {
        (
            format!("/v1/acl/policy/{key}"),
            json!({"Name": key, "Description": value,
                   "Rules": "namespace \"default\" { policy = \"read\" }"}),
        )
    };
    let headers = [("X-Nomad-Token", token)];
    let r = call(http, "POST", &path, &headers, Bytes::from(body.to_string())).await;
    r.is_ok_and(|r| r.status == 200)
}

/// One read of `key` on `http`: `Some(value)` when answered (`None` inside: absent).
async fn read(
    http: std::net::SocketAddr,
    token: &str,
    key: &str,
    stale: bool,
) -> Option<Option<String>> {
    let (path, field) = if key.starts_with("reg-job") {
        (format!("/v1/job/{key}"), "Name")
    } else {
        (format!("/v1/acl/policy/{key}"), "Description")
    };
    let path = if stale { format!("{path}?stale") } else { path };
    let headers = [("X-Nomad-Token", token)];
    let r = call(http, "GET", &path, &headers, Bytes::new())
        .await
        .ok()?;
    match r.status {
        200 => Some(Some(answered_value(&r.body, field))),
        404 => Some(None),
        _ => None,
    }
}

/// The register's value in a `200` answer; an answer without it (not JSON, or no such string
/// field) is itself a wrong answer, recorded as a value nobody wrote so the checker flags it as
/// a phantom rather than the read being dropped.
fn answered_value(body: &[u8], field: &str) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v[field].as_str().map(String::from))
        .unwrap_or_else(|| {
            format!(
                "malformed answer: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })
}

/// A tiny deterministic generator per client.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Starts `writers` writer and `readers` reader tasks against every server (clients reach
/// servers directly, never through the proxy) until `rec.stop`.
fn workload(
    c: &Cluster,
    rec: &Arc<Recorder>,
    writers: usize,
    readers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let https: Vec<std::net::SocketAddr> = c.agents.iter().map(|a| a.http).collect();
    let keys = JOBS.len() + POLICIES.len();
    let mut tasks = Vec::new();
    for client in 0..writers + readers {
        let (rec, https, token) = (rec.clone(), https.clone(), c.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ ((client as u64 + 1) << 32);
            while !rec.stop.load(Ordering::Relaxed) {
                let server = next(&mut rng) as usize % https.len();
                let mut key = key_name(next(&mut rng) as usize % keys);
                // Readers favour the jobs (three reads in four).
                if client >= writers && !next(&mut rng).is_multiple_of(4) {
                    key = JOBS[next(&mut rng) as usize % JOBS.len()];
                }
                let invoked = rec.now();
                let (kind, outcome) = if client < writers {
                    let n = rec.seq.fetch_add(1, Ordering::Relaxed);
                    let value = format!("w{client}-{n}");
                    let ok = write(https[server], &token, key, &value).await;
                    (Kind::Write(value), ok)
                } else {
                    let stale = next(&mut rng).is_multiple_of(4);
                    let kind = |value| Kind::Read { value, stale };
                    match read(https[server], &token, key, stale).await {
                        Some(value) => (kind(value), true),
                        None => (kind(None), false),
                    }
                };
                let answered = rec.now();
                if outcome && matches!(kind, Kind::Read { stale: false, .. }) {
                    rec.reads_ok.fetch_add(1, Ordering::Relaxed);
                }
                rec.ops.lock().expect("history").push(Op {
                    key: key.to_string(),
                    kind,
                    server,
                    invoked,
                    answered,
                    outcome: if outcome {
                        Outcome::Ok
                    } else {
                        Outcome::Unknown
                    },
                });
                let pause = if client < writers { 30 } else { 5 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    tasks
}

/// Polls `count` every 200 ms until it reaches `min`, for at most `limit`; panics naming `what`.
async fn wait_count(limit: Duration, what: &str, min: usize, mut count: impl FnMut() -> usize) {
    let started = Instant::now();
    loop {
        let n = count();
        if n >= min {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: {n} of {min} not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each server's value of every register, read locally (`?stale`), once two rounds in a row
/// agree across servers (bounded; the last round otherwise, for the checker to judge).
async fn finals(c: &Cluster) -> Vec<BTreeMap<String, Option<String>>> {
    let keys = JOBS.len() + POLICIES.len();
    let started = Instant::now();
    let mut last: Vec<BTreeMap<String, Option<String>>> = Vec::new();
    loop {
        let mut round = Vec::new();
        for a in &c.agents {
            let mut m = BTreeMap::new();
            for k in 0..keys {
                let key = key_name(k);
                if let Some(v) = read(a.http, &c.token, key, true).await {
                    m.insert(key.to_string(), v);
                }
            }
            round.push(m);
        }
        let complete = round.iter().all(|m| m.len() == keys);
        let agree = complete && round.iter().all(|m| *m == round[0]);
        if agree && round == last {
            return round;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return round;
        }
        last = round;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A scenario's outcome, printed (`--nocapture`) for the closing note.
fn report(name: &str, ops: &[Op], r: &history::Report) {
    eprintln!(
        "scenario {name}: {} operations, {} reads checked ({} default, {} stale), {} writes acknowledged, {} indeterminate; violations: {}",
        ops.len(),
        r.reads,
        r.default_reads,
        r.reads - r.default_reads,
        r.writes_acked,
        r.writes_unknown,
        if r.violations.is_empty() {
            "none".to_string()
        } else {
            r.violations.join("; ")
        }
    );
}

/// What a scenario does to the links between `cut_at` and `heal`.
enum Trouble {
    /// Cut every link between `small` and the rest, both ways.
    Partition { small: Vec<usize> },
    /// Both ways between the leader and one follower for `secs`: `fault` for 2 s, then cut
    /// for 1 s, in turn.
    Flaky { fault: Fault, secs: u64 },
}

/// Runs the workload on an `n`-server cluster: a calm phase, the trouble (with the leader of
/// that moment on the small side of a partition: `small` names positions, 0 = the leader), a
/// heal, and enough reads; then checks the history.
async fn scenario(name: &str, n: usize, trouble: Trouble) {
    let c = Cluster::start(n).await;
    let all: Vec<usize> = (0..n).collect();
    let leader = c.agreed_leader(&all, Duration::from_secs(30)).await;
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        ops: std::sync::Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        reads_ok: AtomicUsize::new(0),
        seq: AtomicU64::new(0),
    });
    let tasks = workload(&c, &rec, 4, 8);
    let acked_since = |t: Time, on: &[usize]| {
        rec.ops
            .lock()
            .expect("history")
            .iter()
            .filter(|o| {
                o.invoked > t
                    && on.contains(&o.server)
                    && o.outcome == Outcome::Ok
                    && matches!(o.kind, Kind::Write(_))
            })
            .count()
    };
    // A calm phase: writes go through.
    wait_count(
        Duration::from_secs(60),
        "writes before the fault",
        20,
        || acked_since(0, &all),
    )
    .await;

    let mut small_side = Vec::new();
    let cut_at = rec.now();
    match &trouble {
        Trouble::Partition { small } => {
            // Positions: 0 is the leader, the others the followers after it.
            small_side = small.iter().map(|p| (leader + p) % n).collect();
            let big: Vec<usize> = all
                .iter()
                .copied()
                .filter(|i| !small_side.contains(i))
                .collect();
            c.net.partition(&small_side, &big);
            // The big side elects a leader of its own and keeps taking writes.
            let new_leader = c.agreed_leader(&big, Duration::from_secs(90)).await;
            eprintln!(
                "{name}: {small_side:?} cut off (s{leader} led); s{new_leader} leads {big:?}"
            );
            wait_count(
                Duration::from_secs(90),
                "writes on the majority",
                20,
                || acked_since(cut_at, &big),
            )
            .await;
            // The small side has answered (or given up on) its share of default requests.
            let tried_small = |rec: &Recorder| {
                rec.ops
                    .lock()
                    .expect("history")
                    .iter()
                    .filter(|o| o.invoked > cut_at && small_side.contains(&o.server))
                    .filter(|o| !matches!(o.kind, Kind::Read { stale: true, .. }))
                    .count()
            };
            wait_count(
                Duration::from_secs(90),
                "requests on the minority",
                20,
                || tried_small(&rec),
            )
            .await;
        }
        Trouble::Flaky { fault, secs } => {
            // The link flaps: `fault` for 2 s, cut for 1 s, over and over.
            let follower = (leader + 1) % n;
            let until = Instant::now() + Duration::from_secs(*secs);
            let cut = Fault {
                cut: true,
                ..Fault::default()
            };
            while Instant::now() < until {
                c.net.between(&[leader], &[follower], *fault);
                tokio::time::sleep(Duration::from_secs(2)).await;
                c.net.between(&[leader], &[follower], cut);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let heal_at = rec.now();
    c.net.heal();
    eprintln!("{name}: healed; proxy: {}", c.net.counters());

    // After the heal: one leader for all, and writes through every server again.
    c.agreed_leader(&all, Duration::from_secs(90)).await;
    let healed = rec.now();
    wait_count(Duration::from_secs(90), "writes after the heal", 20, || {
        acked_since(healed, &all)
    })
    .await;
    wait_count(Duration::from_secs(120), "enough reads", MIN_READS, || {
        rec.reads_ok.load(Ordering::Relaxed)
    })
    .await;
    rec.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a workload client panicked");
    }
    let ops = rec.ops.lock().expect("history").clone();
    let last = finals(&c).await;
    let r = history::check(&ops, &last);
    report(name, &ops, &r);

    // The small side neither wrote nor answered a default read while it was cut off.
    let answered_small: Vec<&Op> = ops
        .iter()
        .filter(|o| o.invoked > cut_at && o.answered < heal_at && small_side.contains(&o.server))
        .filter(|o| o.outcome == Outcome::Ok)
        .filter(|o| !matches!(o.kind, Kind::Read { stale: true, .. }))
        .collect();
    assert!(
        answered_small.is_empty(),
        "{name}: the minority acknowledged {} requests while cut off, e.g. {:?}",
        answered_small.len(),
        answered_small.first()
    );
    assert!(r.violations.is_empty(), "{name}: {:#?}", r.violations);
    assert!(
        r.default_reads >= MIN_READS,
        "{name}: only {} linearizable reads",
        r.default_reads
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_partitioned_3_2_keep_a_linearizable_history() {
    scenario("partition 3|2", 5, Trouble::Partition { small: vec![0, 1] }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo xtask ci --long"]
async fn leader_cut_off_from_followers_keeps_a_linearizable_history() {
    scenario("leader isolated", 5, Trouble::Partition { small: vec![0] }).await;
}

/// The flapping link's fault: 30 % of datagrams dropped and TCP chunks held as often.
fn lossy() -> Fault {
    Fault {
        drop: 0.3,
        ..Fault::default()
    }
}

/// The flapping link's short form for `cargo xtask ci`: 18 s (six flaps), then the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_briefly_keeps_a_linearizable_history() {
    let fault = lossy();
    scenario("flapping link 18 s", 5, Trouble::Flaky { fault, secs: 18 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo xtask ci --long"]
async fn flapping_link_keeps_a_linearizable_history() {
    let fault = lossy();
    scenario("flapping link", 5, Trouble::Flaky { fault, secs: 60 }).await;
}

/// A `200` read's value, or a value nobody wrote (which the checker flags as a phantom) when the
/// answer does not carry one.
#[test]
fn a_read_answer_without_its_value_is_a_wrong_answer() {
    fn check(body: &str, field: &str, expected: &str) {
        assert_eq!(answered_value(body.as_bytes(), field), expected, "{body}");
    }
    check(r#"{"Name": "w1-7"}"#, "Name", "w1-7");
    check(
        r#"{"Description": "w0-3", "Name": "p"}"#,
        "Description",
        "w0-3",
    );
    check("not json", "Name", "malformed answer: not json");
    check(r#"{"Name": 7}"#, "Name", r#"malformed answer: {"Name": 7}"#);
    check(r#"{"ID": "x"}"#, "Name", r#"malformed answer: {"ID": "x"}"#);
    let history = vec![Op {
        key: "reg-job-0".into(),
        kind: Kind::Read {
            value: Some(answered_value(b"<html>", "Name")),
            stale: false,
        },
        server: 0,
        invoked: 1,
        answered: 2,
        outcome: Outcome::Ok,
    }];
    let r = history::check(&history, &[]);
    assert!(
        r.violations.iter().any(|v| v.starts_with("phantom")),
        "{:?}",
        r.violations
    );
}
