//! Servers forming a Raft cluster: real processes on 127.0.0.1, faults injected in the RPC
//! transport through `CARAVAN_RPC_FAULTS`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Agent, Ports, Resp, Scratch, eventually, send};

/// One server of a test cluster: its process, data dir, ports and fault file.
struct Server {
    agent: Option<Agent>,
    name: String,
    ports: Ports,
    data: Scratch,
    faults: String,
}

impl Server {
    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("server is running")
    }

    fn rpc(&self) -> String {
        format!("127.0.0.1:{}", self.ports.rpc)
    }

    /// Starts the server (ACLs on, a gossip key) with a client too: each server registers its
    /// own node through the cluster, so jobs have somewhere to be placed.
    async fn start(&mut self, expect: usize, join: Option<u16>) {
        // Servers with ACLs that join others need a gossip key (or TLS) to authenticate RPC.
        const KEY: &str = "rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=";
        let data = format!("-data-dir={}", self.data.0.display());
        let retry = join.map_or(String::new(), |p| {
            format!("  server_join {{\n    retry_join = [\"127.0.0.1:{p}\"]\n    retry_interval = \"200ms\"\n  }}\n")
        });
        // A log file in the data dir, for `monitor/export?server_id=…`.
        let hcl = format!(
            "name = \"{}\"\nbind_addr = \"127.0.0.1\"\nlog_file = \"{}/logs/\"\nacl {{\n  enabled = true\n}}\nclient {{\n  enabled = true\n}}\nserver {{\n  bootstrap_expect = {expect}\n  encrypt = \"{KEY}\"\n{retry}}}\n",
            self.name,
            self.data.0.display()
        );
        let env = [("CARAVAN_RPC_FAULTS", self.faults.as_str())];
        self.agent = Some(Agent::start_env(self.ports, &["-server", &data], &hcl, &env).await);
    }

    fn cut_from(&self, others: &[&Server]) {
        let lines: Vec<String> = others.iter().map(|o| o.rpc()).collect();
        std::fs::write(&self.faults, lines.join("\n")).expect("write fault file");
    }

    fn heal(&self) {
        std::fs::write(&self.faults, "").expect("write fault file");
    }
}

async fn cluster(n: usize) -> Vec<Server> {
    let mut servers: Vec<Server> = (0..n)
        .map(|i| {
            let data = Scratch::new();
            let faults = data.write("faults", "");
            Server {
                agent: None,
                name: format!("s{i}"),
                ports: Ports::free(),
                data,
                faults,
            }
        })
        .collect();
    let first_serf = servers[0].ports.serf;
    for (i, s) in servers.iter_mut().enumerate() {
        s.start(n, (i > 0).then_some(first_serf)).await;
    }
    servers
}

async fn leader_of(agent: &Agent) -> String {
    match crate::support::get(agent.http, "/v1/status/leader").await {
        Ok(r) if r.status == 200 => r.json().as_str().unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// Waits (bounded) until the running servers among `which` agree on a leader among them;
/// returns its index.
async fn agreed_leader(servers: &[Server], which: &[usize], limit: Duration) -> usize {
    eventually(limit, "an agreed leader", async || {
        let mut seen = BTreeSet::new();
        for &i in which {
            seen.insert(leader_of(servers[i].agent()).await);
        }
        let addr = match (seen.len(), seen.first()) {
            (1, Some(a)) => a.clone(),
            _ => return Err(format!("leaders {seen:?}")),
        };
        which
            .iter()
            .copied()
            .find(|&i| servers[i].rpc() == addr)
            .ok_or(format!("leader {addr:?} is not among them"))
    })
    .await
}

/// Bootstraps ACLs through `agent`; the management secret.
async fn bootstrap(agent: &Agent) -> String {
    let r = send(agent, "POST", "/v1/acl/bootstrap", None, Value::Null).await;
    assert_eq!(r.status, 200, "bootstrap: {}", r.text());
    r.json()["SecretID"].as_str().unwrap().to_string()
}

/// A GET with a token, decoded as JSON.
async fn get_json(agent: &Agent, path: &str, token: &str) -> Value {
    send(agent, "GET", path, Some(token), Value::Null)
        .await
        .json()
}

/// The member list `agent` reports (`Members`).
async fn members(agent: &Agent, token: &str) -> Vec<Value> {
    let r = send(agent, "GET", "/v1/agent/members", Some(token), Value::Null).await;
    if r.status != 200 {
        return Vec::new();
    }
    r.json()["Members"].as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) until each of `which` sees every one of them `alive`, with tags, in gossip.
async fn wait_members_alive(servers: &[Server], which: &[usize], token: &str) {
    eventually(Duration::from_secs(20), "gossip convergence", async || {
        for &i in which {
            let m = members(servers[i].agent(), token).await;
            let alive = m.iter().filter(|m| m["Status"] == "alive").count();
            let tagged = m.iter().all(|m| m["Tags"]["id"].is_string());
            if alive < which.len() || !tagged {
                return Err(format!("s{i} sees {alive} alive, tags complete: {tagged}"));
            }
        }
        Ok(())
    })
    .await
}

/// Waits (bounded) until `agent` pauses ⌊3n/4⌋ of its n workers (`leader`) or none.
async fn wait_pause(agent: &Agent, token: &str, leader: bool) {
    eventually(
        Duration::from_secs(10),
        "the leader's worker pause",
        async || {
            let r = send(
                agent,
                "GET",
                "/v1/agent/schedulers",
                Some(token),
                Value::Null,
            )
            .await;
            let workers = r.json()["schedulers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let n = workers.len();
            let paused = workers.iter().filter(|w| w["status"] == "Paused").count();
            let want = if leader && n > 1 { 3 * n / 4 } else { 0 };
            if paused == want {
                Ok(())
            } else {
                Err(format!(
                    "leader={leader}: {paused} of {n} paused, want {want}"
                ))
            }
        },
    )
    .await
}

/// Registers `job(id)` with `token`.
async fn register_job(agent: &Agent, token: &str, id: &str) -> Resp {
    send(agent, "POST", "/v1/jobs", Some(token), job(id)).await
}

fn job(id: &str) -> Value {
    json!({"Job": {"ID": id, "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 1, "Tasks": [
            {"Name": "t", "Driver": "docker", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]}})
}

/// What an acknowledged write created.
enum Written {
    Token(String),
    Job(String),
}

/// Write `i` of a stream (even: a token, odd: a job), sent to the first running server from
/// `i` on; the refusal's text when it is not acknowledged.
async fn write(servers: &[Server], i: usize, mgmt: &str) -> Result<Written, String> {
    let n = servers.len();
    let target = (0..n)
        .map(|k| (i + k) % n)
        .find(|&k| servers[k].agent.is_some())
        .expect("a running server");
    let agent = servers[target].agent();
    let r = if i.is_multiple_of(2) {
        let body = json!({"Name": format!("t{i}"), "Type": "client", "Policies": ["p"]});
        send(agent, "POST", "/v1/acl/token", Some(mgmt), body).await
    } else {
        register_job(agent, mgmt, &format!("job-{i}")).await
    };
    if r.status != 200 {
        return Err(format!("s{target}: {} {}", r.status, r.text()));
    }
    Ok(if i.is_multiple_of(2) {
        Written::Token(
            r.json()["AccessorID"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    } else {
        Written::Job(format!("job-{i}"))
    })
}

/// Token accessors and job IDs a server holds.
async fn holdings(agent: &Agent, mgmt: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let ids = |r: Resp, key: &str| -> BTreeSet<String> {
        if r.status != 200 {
            return BTreeSet::new();
        }
        r.json()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v[key].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let tokens = ids(
        send(agent, "GET", "/v1/acl/tokens", Some(mgmt), Value::Null).await,
        "AccessorID",
    );
    let jobs = ids(
        send(agent, "GET", "/v1/jobs", Some(mgmt), Value::Null).await,
        "ID",
    );
    (tokens, jobs)
}

/// Waits (bounded) until `agent` holds every acknowledged token and job.
async fn wait_holds(
    agent: &Agent,
    mgmt: &str,
    tokens: &BTreeSet<String>,
    jobs: &BTreeSet<String>,
    who: &str,
) {
    eventually(
        Duration::from_secs(20),
        "every acknowledged write",
        async || {
            let (t, j) = holdings(agent, mgmt).await;
            let missing_t: Vec<_> = tokens.difference(&t).collect();
            let missing_j: Vec<_> = jobs.difference(&j).collect();
            if missing_t.is_empty() && missing_j.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{who} lacks tokens {missing_t:?}, jobs {missing_j:?}"
                ))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_elect_fail_over_keep_writes_and_catch_up() {
    let mut servers = cluster(3).await;
    let all = [0, 1, 2];
    let leader = agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let follower = (leader + 1) % 3;

    // Raft facts are real on every server.
    let me = send(
        servers[follower].agent(),
        "GET",
        "/v1/agent/self",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(me.status, 403, "ACLs are on");
    let mgmt = bootstrap(servers[follower].agent()).await; // through a follower
    // The policy the tokens written below name (a token naming an unknown one is refused).
    crate::acl::policy(
        servers[follower].agent(),
        &mgmt,
        "p",
        "agent { policy = \"read\" }",
    )
    .await;
    let me = get_json(servers[follower].agent(), "/v1/agent/self", &mgmt).await;
    assert_eq!(me["stats"]["raft"]["state"], "Follower");
    assert_eq!(me["stats"]["raft"]["num_peers"], "2");
    assert_eq!(me["stats"]["nomad"]["leader"], "false");
    assert_eq!(me["stats"]["nomad"]["leader_addr"], servers[leader].rpc());
    wait_pause(servers[leader].agent(), &mgmt, true).await;
    wait_pause(servers[follower].agent(), &mgmt, false).await;
    let peers = send(
        servers[follower].agent(),
        "GET",
        "/v1/status/peers",
        None,
        Value::Null,
    )
    .await
    .json();
    assert_eq!(peers.as_array().map(Vec::len), Some(3), "{peers}");
    let health = send(
        servers[follower].agent(),
        "GET",
        "/v1/agent/health",
        Some(&mgmt),
        Value::Null,
    )
    .await;
    assert_eq!(health.status, 200, "{}", health.text());

    // server_id=leader from a follower answers with the leader's host data (once gossip has
    // told the follower the leader's name).
    wait_members_alive(&servers, &all, &mgmt).await;
    let host = send(
        servers[follower].agent(),
        "GET",
        "/v1/agent/host?server_id=leader",
        Some(&mgmt),
        Value::Null,
    )
    .await;
    assert_eq!(host.status, 200, "{}", host.text());
    assert_eq!(host.json()["AgentID"], format!("s{leader}.global"));
    assert!(host.json()["HostData"]["OS"].is_string());
    let by_name = send(
        servers[leader].agent(),
        "GET",
        &format!("/v1/agent/host?server_id=s{follower}.global"),
        Some(&mgmt),
        Value::Null,
    )
    .await;
    assert_eq!(by_name.status, 200, "{}", by_name.text());
    assert_eq!(by_name.json()["AgentID"], format!("s{follower}.global"));

    // So does a profile: the leader's command line, with its own data dir.
    let cmdline = send(
        servers[follower].agent(),
        "GET",
        "/v1/agent/pprof/cmdline?server_id=leader",
        Some(&mgmt),
        Value::Null,
    )
    .await;
    assert_eq!(cmdline.status, 200, "{}", cmdline.text());
    let leader_dir = servers[leader].data.0.display().to_string();
    assert!(cmdline.text().contains(&leader_dir), "{}", cmdline.text());

    // A monitor stream for the leader, asked of a follower, relays the leader's log lines.
    let (mut stream, head) = crate::monitor::open_full(
        servers[follower].agent(),
        "server_id=leader&log_level=debug",
        None,
        Some(&mgmt),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let marker = format!("/v1/agent/members?relay-marker-{leader}");
    let logged = crate::monitor::read_until(&mut stream, |raw| {
        crate::monitor::decode_frames(raw).contains("relay-marker")
    });
    let poke = async {
        loop {
            send(
                servers[leader].agent(),
                "GET",
                &marker,
                Some(&mgmt),
                Value::Null,
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let raw = tokio::select! {
        raw = logged => raw,
        _ = poke => Vec::new(),
    };
    assert!(
        crate::monitor::decode_frames(&raw).contains(&format!("relay-marker-{leader}")),
        "the relayed stream carries the leader's request log"
    );
    drop(stream);

    // So does a log export: the leader's log file, read over RPC.
    let export = send(
        servers[follower].agent(),
        "GET",
        "/v1/agent/monitor/export?server_id=leader&on_disk=true&plain=true",
        Some(&mgmt),
        Value::Null,
    )
    .await;
    assert_eq!(export.status, 200, "{}", export.text());
    let leader_log = std::fs::read(servers[leader].data.0.join("logs/nomad.log")).unwrap();
    assert!(
        !export.body.is_empty() && leader_log.starts_with(&export.body),
        "the export is the leader's log file"
    );
    assert!(
        export
            .text()
            .contains(&format!("agent started: node=s{leader} ")),
        "{}",
        export.text()
    );
    let anonymous = send(
        servers[follower].agent(),
        "GET",
        "/v1/agent/monitor/export?server_id=leader&on_disk=true",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(
        (anonymous.status, anonymous.text().as_str()),
        (403, "Permission denied")
    );

    // Every server registered its client node through the cluster.
    let node_ids = eventually(Duration::from_secs(20), "three client nodes", async || {
        let nodes = get_json(servers[follower].agent(), "/v1/nodes", &mgmt).await;
        let list = nodes.as_array().cloned().unwrap_or_default();
        let names: BTreeSet<&str> = list.iter().filter_map(|n| n["Name"].as_str()).collect();
        if names == BTreeSet::from(["s0", "s1", "s2"]) {
            Ok(list
                .iter()
                .filter_map(|n| n["ID"].as_str().map(String::from))
                .collect::<BTreeSet<String>>())
        } else {
            Err(format!("nodes {nodes}"))
        }
    })
    .await;

    // A stream of writes (tokens and jobs) to every server: all acknowledged before the leader
    // is killed, some may be refused while the survivors elect a new one, none after.
    let mut tokens = BTreeSet::new();
    let mut jobs = BTreeSet::new();
    for i in 0..20 {
        match write(&servers, i, &mgmt).await {
            Ok(Written::Token(t)) => tokens.insert(t),
            Ok(Written::Job(j)) => jobs.insert(j),
            Err(e) => panic!("write {i} before the kill: {e}"),
        };
    }
    let mut old = servers[leader].agent.take().expect("leader runs");
    old.child.kill().expect("kill -9 the leader");
    let _ = old.child.wait();
    let killed_at = Instant::now();
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let elected = std::sync::atomic::AtomicBool::new(false);
    let ((new_leader, failover), during) = tokio::join!(
        async {
            let l = agreed_leader(&servers, &survivors, Duration::from_secs(15)).await;
            elected.store(true, std::sync::atomic::Ordering::Release);
            (l, killed_at.elapsed())
        },
        async {
            let mut outcomes = Vec::new();
            for i in 20..40 {
                if elected.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                outcomes.push(write(&servers, i, &mgmt).await);
            }
            outcomes
        }
    );
    let refused = during.iter().filter(|o| o.is_err()).count();
    for o in during.into_iter().flatten() {
        match o {
            Written::Token(t) => tokens.insert(t),
            Written::Job(j) => jobs.insert(j),
        };
    }
    eprintln!(
        "failover: new leader s{new_leader} (old s{leader}) agreed {failover:?} after the kill; {refused} writes refused meanwhile"
    );
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );
    for i in 40..60 {
        match write(&servers, i, &mgmt).await {
            Ok(Written::Token(t)) => tokens.insert(t),
            Ok(Written::Job(j)) => jobs.insert(j),
            Err(e) => panic!("write {i} after the new leader s{new_leader} was agreed: {e}"),
        };
    }
    // The worker pause follows leadership.
    wait_pause(servers[new_leader].agent(), &mgmt, true).await;
    for &i in &survivors {
        wait_holds(servers[i].agent(), &mgmt, &tokens, &jobs, &servers[i].name).await;
    }
    // Every acknowledged job is placed: one allocation to run, on a registered node, made by
    // an evaluation a worker completed (also those written before the kill or during the
    // failover, whose evaluations the new leader's broker must hold).
    let reader = servers[survivors[0]].agent();
    eventually(
        Duration::from_secs(30),
        "every acknowledged job placed",
        async || {
            let evals = get_json(reader, "/v1/evaluations", &mgmt).await;
            let status = |id: &str| {
                evals
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["ID"] == id)
                    .map(|e| e["Status"].as_str().unwrap_or_default().to_string())
            };
            for id in &jobs {
                let allocs = get_json(reader, &format!("/v1/job/{id}/allocations"), &mgmt).await;
                let running: Vec<&Value> = allocs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["DesiredStatus"] == "run")
                    .collect();
                let [a] = running[..] else {
                    return Err(format!("{id}: allocations {allocs}"));
                };
                let node = a["NodeID"].as_str().unwrap_or_default();
                if !node_ids.contains(node) {
                    return Err(format!("{id}: placed on unknown node {node}"));
                }
                let eval = a["EvalID"].as_str().unwrap_or_default();
                match status(eval) {
                    Some(s) if s == "complete" => {}
                    other => return Err(format!("{id}: evaluation {eval} is {other:?}")),
                }
            }
            Ok(())
        },
    )
    .await;

    // The old leader restarts from its data dir and catches up.
    let rejoin = servers[new_leader].ports.serf;
    servers[leader].start(3, Some(rejoin)).await;
    wait_holds(
        servers[leader].agent(),
        &mgmt,
        &tokens,
        &jobs,
        "restarted old leader",
    )
    .await;
    let back = agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let st = get_json(servers[leader].agent(), "/v1/agent/self", &mgmt).await;
    assert_eq!(
        st["stats"]["raft"]["num_peers"], "2",
        "{}",
        st["stats"]["raft"]
    );
    eprintln!("after restart the leader is s{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_minority_cut_off_refuses_writes() {
    let servers = cluster(5).await;
    let all: Vec<usize> = (0..5).collect();
    let leader = agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let mgmt = bootstrap(servers[leader].agent()).await;

    // Cut the leader and one follower off from the other three (both directions).
    let minority = [leader, (leader + 1) % 5];
    let majority: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !minority.contains(i))
        .collect();
    for &i in &minority {
        let others: Vec<&Server> = majority.iter().map(|&j| &servers[j]).collect();
        servers[i].cut_from(&others);
    }
    for &i in &majority {
        let others: Vec<&Server> = minority.iter().map(|&j| &servers[j]).collect();
        servers[i].cut_from(&others);
    }
    let new_leader = agreed_leader(&servers, &majority, Duration::from_secs(30)).await;
    assert!(majority.contains(&new_leader));

    // The majority keeps accepting writes, through any of its servers.
    for (k, &i) in majority.iter().enumerate() {
        let r = register_job(servers[i].agent(), &mgmt, &format!("majority-{k}")).await;
        assert_eq!(r.status, 200, "majority write on s{i}: {}", r.text());
    }
    // The minority refuses, with a clear error (after at most the write timeout).
    for &i in &minority {
        let r = register_job(servers[i].agent(), &mgmt, "minority").await;
        assert_eq!(r.status, 500, "minority write on s{i}: {}", r.text());
        assert!(
            r.text().contains("No cluster leader") || r.text().contains("rpc error"),
            "{}",
            r.text()
        );
        let h = send(
            servers[i].agent(),
            "GET",
            "/v1/agent/health?type=server",
            Some(&mgmt),
            Value::Null,
        )
        .await;
        // The write above took the write timeout (far past the election timeout): the
        // minority's health says it has no working leader, whichever side the old leader is on.
        assert_eq!(h.status, 500, "minority health on s{i}: {}", h.text());
        let server = &h.json()["server"];
        assert_eq!(server["ok"], false, "{}", h.text());
        let why = server["message"].as_str().unwrap_or_default();
        assert!(
            why.contains("no leader") || why.contains("no quorum"),
            "minority health on s{i}: {why}"
        );
    }

    // Heal: the minority follows the majority's leader and has its writes, not the refused one.
    for s in &servers {
        s.heal();
    }
    agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let want: BTreeSet<String> = (0..majority.len())
        .map(|k| format!("majority-{k}"))
        .collect();
    for &i in &minority {
        wait_holds(
            servers[i].agent(),
            &mgmt,
            &BTreeSet::new(),
            &want,
            &servers[i].name,
        )
        .await;
        let (_, jobs) = holdings(servers[i].agent(), &mgmt).await;
        assert!(!jobs.contains("minority"), "a refused write never appears");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_leave_prune_removes_a_dead_server_from_raft() {
    let mut servers = cluster(3).await;
    let all = [0, 1, 2];
    let leader = agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let mgmt = bootstrap(servers[leader].agent()).await;
    wait_members_alive(&servers, &all, &mgmt).await;
    let victim = (leader + 1) % 3;
    let mut dead = servers[victim].agent.take().expect("victim runs");
    dead.child.kill().expect("kill -9");
    let _ = dead.child.wait();
    // As an operator would: once gossip reports it failed, force it out and prune it.
    let lead = servers[leader].agent();
    let name = format!("s{victim}.global");
    eventually(Duration::from_secs(20), "the victim failed", async || {
        let m = members(lead, &mgmt).await;
        let failed = m
            .iter()
            .any(|m| m["Name"] == name && m["Status"] == "failed");
        if failed {
            Ok(())
        } else {
            Err(format!("{name} not failed yet"))
        }
    })
    .await;
    let path = format!("/v1/agent/force-leave?node={name}&prune=true");
    let r = send(lead, "PUT", &path, Some(&mgmt), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The leader drops it from the Raft configuration: two voters remain, and writes go on.
    let gone = servers[victim].rpc();
    eventually(Duration::from_secs(20), "removal from Raft", async || {
        let peers = send(lead, "GET", "/v1/status/peers", None, Value::Null)
            .await
            .json();
        let list: Vec<String> = peers
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        if list.len() == 2 && !list.contains(&gone) {
            Ok(())
        } else {
            Err(format!("voters {list:?}"))
        }
    })
    .await;
    let r = register_job(servers[leader].agent(), &mgmt, "after-prune").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// H2 of the security review: a gossip member that claims to be a server (here one that joined
/// with the pool's key, as an insider or a leaked key would allow) is not made a Raft voter
/// unless its claimed RPC address answers, over authenticated RPC, as the server it claims to be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_claimed_in_gossip_is_not_a_voter_until_it_answers_as_itself() {
    use base64::Engine;
    let servers = cluster(3).await;
    let all = [0, 1, 2];
    let leader = agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let mgmt = bootstrap(servers[leader].agent()).await;
    wait_members_alive(&servers, &all, &mgmt).await;
    let lead = servers[leader].agent();
    // The leader's log, to see what reconciliation decides about the claim.
    let (mut log, head) =
        crate::monitor::open_full(lead, "log_level=info&plain=true", None, Some(&mgmt)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let nobody = crate::support::free_port();
    let serf = crate::support::free_udp_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{serf}").parse().unwrap();
    let mut cfg = caravan_gossip::NodeConfig::new("evil.global", addr, 4);
    cfg.generation = 1;
    cfg.key = Some(
        base64::engine::general_purpose::STANDARD
            .decode("rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=")
            .unwrap(),
    );
    cfg.tags = Some(
        [
            ("role", "nomad"),
            ("region", "global"),
            ("dc", "dc1"),
            ("id", "5e5e5e5e-0000-4000-8000-000000000bad"),
            ("rpc_addr", "127.0.0.1"),
            ("port", &nobody.to_string()),
            ("expect", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let evil = caravan_gossip::udp::Gossip::start(cfg, addr).await.unwrap();
    let joined = evil
        .join(vec![format!("127.0.0.1:{}", servers[0].ports.serf)])
        .await;
    assert_eq!(joined.joined, 1, "{:?}", joined.errors);
    eventually(
        Duration::from_secs(15),
        "the claim seen in gossip",
        async || {
            let m = members(lead, &mgmt).await;
            if m.iter()
                .any(|m| m["Name"] == "evil.global" && m["Status"] == "alive")
            {
                Ok(())
            } else {
                Err("evil.global not alive yet".into())
            }
        },
    )
    .await;
    // The leader reconciles every second and gives each ping 2 s: it refuses the claim, and
    // never starts adding it. The voters are still the three real servers.
    let said = crate::monitor::read_until(&mut log, |b| {
        String::from_utf8_lossy(b).contains("not adding server")
    })
    .await;
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.contains("not adding server") && said.contains("evil.global"),
        "{said}"
    );
    assert!(!said.contains("adding server to the cluster"), "{said}");
    let peers = send(lead, "GET", "/v1/status/peers", None, Value::Null)
        .await
        .json();
    let list: Vec<&str> = peers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(list.len(), 3, "voters {list:?}");
    assert!(
        !list.iter().any(|p| p.ends_with(&format!(":{nobody}"))),
        "{list:?}"
    );
    let r = register_job(lead, &mgmt, "after-claim").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The job IDs a read answered with (`/v1/jobs`), and its `X-Nomad-Index`.
fn listed(r: &Resp) -> (BTreeSet<String>, u64) {
    let ids = r
        .json()
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["ID"].as_str().map(str::to_string))
        .collect();
    let index = r
        .header("x-nomad-index")
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    (ids, index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_are_consistent_unless_stale_and_block_on_index() {
    let servers = cluster(3).await;
    let all: Vec<usize> = (0..3).collect();
    let leader = agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let mgmt = bootstrap(servers[leader].agent()).await;
    let f = (leader + 1) % 3;
    let get = |i: usize, path: String| {
        let mgmt = mgmt.clone();
        let agent = servers[i].agent();
        async move { send(agent, "GET", &path, Some(&mgmt), Value::Null).await }
    };

    // The token is resolved from the follower's own state before its read waits for the
    // leader's index, and the bootstrap may have committed with the other follower's ack: wait
    // until this follower knows the token.
    eventually(
        Duration::from_secs(20),
        "the follower knows the token",
        async || {
            let r = get(f, "/v1/acl/token/self".to_string()).await;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.text()))
            }
        },
    )
    .await;

    // A default read through a follower sees every write acknowledged before it started.
    for k in 0..10 {
        let id = format!("seen-{k}");
        let w = register_job(servers[leader].agent(), &mgmt, &id).await;
        assert_eq!(w.status, 200, "{}", w.text());
        let r = get(f, format!("/v1/job/{id}")).await;
        assert_eq!(
            r.status,
            200,
            "read after write on the follower: {}",
            r.text()
        );
        assert_eq!(r.header("x-nomad-knownleader").as_deref(), Some("true"));
        assert!(r.header("x-nomad-lastcontact").is_some());
    }

    // A blocking query on the follower returns once a write passes its index, long before
    // its wait is over. Another write may pass it first (an earlier job's evaluation changing
    // its status is a write of the jobs table too), so the query is asked again from the index
    // it answered, as a Nomad client does, until an answer lists the new job.
    let (_, index) = listed(&get(f, "/v1/jobs".into()).await);
    assert!(index > 0);
    let poll = async {
        let mut index = index;
        // Each of the ten jobs above may change status once or twice after the listing.
        for _ in 0..50 {
            let (ids, after) = listed(&get(f, format!("/v1/jobs?index={index}&wait=30s")).await);
            assert!(after > index, "index {after} after {index}");
            if ids.contains("wakes") {
                return Instant::now();
            }
            index = after;
        }
        panic!("fifty answers of the blocking query and none listed the new job");
    };
    let write = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let w = register_job(servers[leader].agent(), &mgmt, "wakes").await;
        assert_eq!(w.status, 200, "{}", w.text());
        Instant::now()
    };
    let (answered, written) = tokio::join!(poll, write);
    let late = answered.saturating_duration_since(written);
    eprintln!("blocking query answered {late:?} after the write was acknowledged");
    assert!(
        late < Duration::from_secs(5),
        "woken by the write, not the wait: {late:?}"
    );

    // Cut the follower off: `stale` reads answer from its replica, which lags; default reads
    // refuse rather than answer from it.
    let others: Vec<&Server> = all
        .iter()
        .filter(|&&i| i != f)
        .map(|&i| &servers[i])
        .collect();
    servers[f].cut_from(&others);
    for &i in all.iter().filter(|&&i| i != f) {
        servers[i].cut_from(&[&servers[f]]);
    }
    // The fault file is read as connections are made: write until one write stays unseen.
    let unseen = eventually(
        Duration::from_secs(30),
        "a write the cut follower misses",
        async || {
            let id = format!("unseen-{}", uuid_like());
            let w = register_job(servers[leader].agent(), &mgmt, &id).await;
            if w.status != 200 {
                return Err(w.text());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stale = get(f, "/v1/jobs?stale".into()).await;
            let (ids, _) = listed(&stale);
            if stale.status == 200 && ids.contains("wakes") && !ids.contains(&id) {
                Ok(id)
            } else {
                Err(format!("{}: {ids:?}", stale.status))
            }
        },
    )
    .await;
    let consistent = get(f, "/v1/jobs".into()).await;
    assert_eq!(consistent.status, 500, "{}", consistent.text());
    assert!(
        consistent.text().contains("No cluster leader"),
        "{}",
        consistent.text()
    );
    for s in &servers {
        s.heal();
    }
    eventually(
        Duration::from_secs(30),
        "the healed follower's consistent read",
        async || {
            let (ids, _) = listed(&get(f, "/v1/jobs".into()).await);
            if ids.contains(&unseen) {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        },
    )
    .await;
}

/// A fresh suffix for names.
fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// With no workers on the leader, every evaluation is taken from its broker by a follower's
/// workers over `Eval.Dequeue`/`Eval.Ack` and placed through the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_workers_place_jobs_through_the_leaders_broker() {
    let servers = cluster(3).await;
    let all: Vec<usize> = (0..3).collect();
    let leader = agreed_leader(&servers, &all, Duration::from_secs(30)).await;
    let mgmt = bootstrap(servers[leader].agent()).await;
    // Every server comes to see the same configuration: three voters, one of them the leader (a
    // follower learns of the last configuration change with the next append: bounded wait).
    let want_leader = servers[leader].rpc();
    for s in &servers {
        eventually(
            Duration::from_secs(20),
            "the agreed configuration",
            async || {
                // A follower may not have applied the bootstrap yet: its 403 is retried.
                let r = send(
                    s.agent(),
                    "GET",
                    "/v1/operator/raft/configuration",
                    Some(&mgmt),
                    Value::Null,
                )
                .await;
                if r.status != 200 {
                    return Err(format!("{} {}", r.status, r.text()));
                }
                let c = r.json();
                let list = c["Servers"].as_array().cloned().unwrap_or_default();
                let nodes: BTreeSet<&str> =
                    list.iter().filter_map(|p| p["Node"].as_str()).collect();
                let leaders: Vec<&str> = list
                    .iter()
                    .filter(|p| p["Leader"] == true)
                    .filter_map(|p| p["Address"].as_str())
                    .collect();
                let agreed = nodes == BTreeSet::from(["s0.global", "s1.global", "s2.global"])
                    && leaders == [want_leader.as_str()]
                    && list.iter().all(|p| p["Voter"] == true);
                if agreed { Ok(()) } else { Err(format!("{c}")) }
            },
        )
        .await;
    }
    let none = json!({"num_schedulers": 0, "enabled_schedulers": ["service", "_core"]});
    let r = send(
        servers[leader].agent(),
        "PUT",
        "/v1/agent/schedulers/config",
        Some(&mgmt),
        none,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let workers = get_json(servers[leader].agent(), "/v1/agent/schedulers", &mgmt).await;
    assert_eq!(workers["schedulers"], json!([]), "{workers}");
    eventually(Duration::from_secs(20), "three client nodes", async || {
        let nodes = get_json(servers[leader].agent(), "/v1/nodes", &mgmt).await;
        match nodes.as_array().map(Vec::len) {
            Some(3) => Ok(()),
            _ => Err(format!("nodes {nodes}")),
        }
    })
    .await;
    let r = register_job(servers[leader].agent(), &mgmt, "remote").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let eval_id = r.json()["EvalID"].as_str().unwrap_or_default().to_string();
    let leader_agent = servers[leader].agent();
    eventually(
        Duration::from_secs(20),
        "the job placed by a follower's worker",
        async || {
            let e = get_json(leader_agent, &format!("/v1/evaluation/{eval_id}"), &mgmt).await;
            let allocs = get_json(leader_agent, "/v1/job/remote/allocations", &mgmt).await;
            let running = allocs
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["DesiredStatus"] == "run")
                .count();
            if e["Status"] == "complete" && running == 1 {
                Ok(())
            } else {
                Err(format!("evaluation {e}, allocations {allocs}"))
            }
        },
    )
    .await;
    // Still no worker on the leader: the placement came from elsewhere.
    let workers = get_json(servers[leader].agent(), "/v1/agent/schedulers", &mgmt).await;
    assert_eq!(workers["schedulers"], json!([]), "{workers}");
}
