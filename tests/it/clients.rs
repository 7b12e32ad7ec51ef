//! Client agents against real servers: registration with a node secret, heartbeats, the
//! server list from heartbeat replies, node_id forwarding through any server (D4/D5), the
//! allocations reaching their client, failover when the client's server dies, and a dead
//! client marked down after its TTL and grace.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::monitor::{decode_frames, open_full, read_until};
use crate::support::{Agent, Ports, Scratch, call};

/// Heartbeat settings short enough for a test (Nomad's defaults are 10 s, 10 s, 5 min).
const FAST_HEARTBEATS: &str =
    "  min_heartbeat_ttl = \"1s\"\n  heartbeat_grace = \"1s\"\n  failover_heartbeat_ttl = \"3s\"\n";

async fn server(name: &str, ports: Ports, join: Option<u16>, data: &Scratch) -> Agent {
    let retry = join.map_or(String::new(), |p| {
        format!("  server_join {{\n    retry_join = [\"127.0.0.1:{p}\"]\n    retry_interval = \"200ms\"\n  }}\n")
    });
    let hcl = format!(
        "name = \"{name}\"\nbind_addr = \"127.0.0.1\"\nenable_debug = true\nserver {{\n  bootstrap_expect = 3\n{FAST_HEARTBEATS}{retry}}}\n"
    );
    let data = format!("-data-dir={}", data.0.display());
    Agent::start_at(ports, &["-server", &data], &hcl).await
}

async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(SinceLastHeartbeat, HeartbeatTTL)` of `node_id` in a `/v1/nodes/heartbeats` answer.
fn last_heartbeat(beats: &Value, node_id: &str) -> Option<(u64, u64)> {
    let beat = beats.as_array()?.iter().find(|b| b["NodeID"] == node_id)?;
    Some((
        beat["SinceLastHeartbeat"].as_u64()?,
        beat["HeartbeatTTL"].as_u64()?,
    ))
}

async fn nodes(agent: &Agent) -> Vec<Value> {
    let r = agent.get("/v1/nodes?stale=true").await;
    let v = serde_json::from_str::<Value>(&r.text()).unwrap_or_default();
    v.as_array().cloned().unwrap_or_default()
}

fn client_stats(agent_self: &Value) -> Value {
    agent_self["stats"]["client"].clone()
}

#[tokio::test]
async fn a_client_registers_is_reached_through_any_server_fails_over_and_goes_down() {
    let ports: Vec<Ports> = (0..3).map(|_| Ports::free()).collect();
    let dirs: Vec<Scratch> = (0..3).map(|_| Scratch::new()).collect();
    let s1 = server("s1", ports[0], None, &dirs[0]).await;
    let s2 = server("s2", ports[1], Some(ports[0].serf), &dirs[1]).await;
    let s3 = server("s3", ports[2], Some(ports[0].serf), &dirs[2]).await;
    let mut servers = [Some(s1), Some(s2), Some(s3)];
    for s in servers.iter().flatten() {
        s.wait_raft_leader().await;
    }
    let data = Scratch::new();
    let first = servers[0].as_ref().unwrap().rpc;
    let client = Agent::start(
        &[
            "-client",
            &format!("-data-dir={}", data.0.display()),
            &format!("-servers={first}"),
        ],
        &format!(
            "name = \"c1\"\nbind_addr = \"127.0.0.1\"\nenable_debug = true\nlog_file = \"{}/client.log\"\n",
            data.0.display()
        ),
    )
    .await;

    // Registered, ready, and told about every server by its heartbeats.
    let node_id = eventually(
        "the client's node ready on s2",
        Duration::from_secs(15),
        async || {
            let n = nodes(servers[1].as_ref().unwrap()).await;
            let ready = n
                .iter()
                .find(|n| n["Status"] == "ready" && n["Name"] == "c1")?;
            Some(ready["ID"].as_str()?.to_string())
        },
    )
    .await;
    let stats = client_stats(&client.get("/v1/agent/self").await.json());
    assert_eq!(stats["node_id"], node_id.as_str());
    assert!(
        stats["heartbeat_ttl"].as_str().unwrap().ends_with('s'),
        "{stats}"
    );
    eventually(
        "known_servers lists all three",
        Duration::from_secs(10),
        async || {
            let s = client_stats(&client.get("/v1/agent/self").await.json());
            let known = s["known_servers"].as_str()?.to_string();
            servers
                .iter()
                .flatten()
                .all(|s| known.contains(&s.rpc.to_string()))
                .then_some(())
        },
    )
    .await;

    // The secret the client generated (0600 under its data dir) never leaves through HTTP.
    let secret_file = data.0.join("client").join("secret-id");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for s in servers.iter().flatten() {
        let body = s
            .get(&format!("/v1/node/{node_id}?stale=true"))
            .await
            .text();
        assert!(
            body.contains(&node_id) && !body.contains(secret.trim()),
            "{body}"
        );
    }
    // Its last heartbeat as the leader saw it, through every server (followers ask the
    // leader) and through the client agent (which passes the request to a server): within its
    // TTL and grace, or the node would be down.
    for a in servers.iter().flatten().chain([&client]) {
        let r = a.get("/v1/nodes/heartbeats").await;
        assert!(!r.text().contains(secret.trim()), "{}", r.text());
        let (since, ttl) = last_heartbeat(&r.json(), &node_id)
            .unwrap_or_else(|| panic!("no heartbeat of {node_id} via {}: {}", a.http, r.text()));
        assert!(ttl > 0 && since <= ttl + 10_000_000_000, "{since} {ttl}");
    }

    // Host data of the client through each server (one holds its connection, the others
    // find that one), and through the client itself.
    for s in servers.iter().flatten() {
        let r = s.get(&format!("/v1/agent/host?node_id={node_id}")).await;
        assert_eq!(r.status, 200, "via {}: {}", s.http, r.text());
        assert_eq!(r.json()["AgentID"], node_id.as_str());
    }
    let r = client
        .get(&format!("/v1/agent/host?node_id={node_id}"))
        .await;
    assert_eq!(
        (r.status, r.json()["AgentID"].clone()),
        (200, json!(node_id))
    );
    let r = servers[2]
        .as_ref()
        .unwrap()
        .get("/v1/agent/host?node_id=nope")
        .await;
    assert_eq!(
        (r.status, r.text()),
        (404, "Unknown node \"nope\"".to_string())
    );
    let r = client.get("/v1/agent/host?node_id=nope").await;
    assert_eq!(
        (r.status, r.text()),
        (404, "Unknown node \"nope\"".to_string())
    );
    let r = servers[1]
        .as_ref()
        .unwrap()
        .get(&format!("/v1/agent/pprof/cmdline?node_id={node_id}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("caravan"), "{}", r.text());

    // The client's logs through a server: a request to the client shows up in the stream.
    let s3 = servers[2].as_ref().unwrap();
    let (mut stream, head) = open_full(
        s3,
        &format!("node_id={node_id}&log_level=debug"),
        None,
        None,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for _ in 0..5 {
        client.get("/v1/agent/health?marker=through-a-server").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw = read_until(&mut stream, |b| {
        decode_frames(b).contains("through-a-server")
    })
    .await;
    assert!(
        decode_frames(&raw).contains("through-a-server"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    drop(stream);

    // The client's log file through a server that may not hold its connection.
    let r = servers[2]
        .as_ref()
        .unwrap()
        .get(&format!(
            "/v1/agent/monitor/export?node_id={node_id}&on_disk=true&plain=true"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("node registered"), "{}", r.text());

    // A job lands on the only node; the client takes its allocations: running.
    let job = json!({"Job": {"ID": "web", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 2, "Tasks": [{"Name": "t", "Driver": "docker", "Resources": {"CPU": 100, "MemoryMB": 64}}]}]}});
    let r = call(
        servers[0].as_ref().unwrap().http,
        "POST",
        "/v1/jobs",
        &[],
        Bytes::from(job.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(
        "both allocations running on the client",
        Duration::from_secs(15),
        async || {
            let r = servers[1]
                .as_ref()
                .unwrap()
                .get("/v1/job/web/allocations?stale=true")
                .await;
            let a = serde_json::from_str::<Value>(&r.text())
                .ok()?
                .as_array()?
                .clone();
            (a.len() == 2
                && a.iter()
                    .all(|a| a["ClientStatus"] == "running" && a["NodeID"] == node_id.as_str()))
            .then_some(())
        },
    )
    .await;
    eventually("num_allocations 2", Duration::from_secs(5), async || {
        (client_stats(&client.get("/v1/agent/self").await.json())["num_allocations"] == "2")
            .then_some(())
    })
    .await;

    // Kill the server the client talks to: it moves to another and stays ready.
    // It registered through the only server it was given, and stays with it while it answers.
    let victim = 0;
    servers[victim] = None; // dropping the Agent kills the process
    let alive: Vec<&Agent> = servers.iter().flatten().collect();
    for s in &alive {
        s.wait_raft_leader().await;
    }
    let before = Instant::now();
    eventually(
        "the client heartbeats through another server",
        Duration::from_secs(20),
        async || {
            let s = client_stats(&client.get("/v1/agent/self").await.json());
            let last = s["last_heartbeat"].as_str()?.to_string();
            let secs = caravan_agent_core::duration::parse_go_duration(&last).ok()?;
            (secs < before.elapsed()).then_some(())
        },
    )
    .await;
    for s in &alive {
        // Read with `?stale`: a server still applying a down-then-ready of a slow failover
        // catches up within the wait.
        eventually(
            "the node ready on every server",
            Duration::from_secs(20),
            async || {
                let n = nodes(s).await;
                n.iter()
                    .any(|n| n["ID"] == node_id.as_str() && n["Status"] == "ready")
                    .then_some(())
            },
        )
        .await;
        let r = s.get(&format!("/v1/agent/host?node_id={node_id}")).await;
        assert_eq!(r.status, 200, "via {} after failover: {}", s.http, r.text());
        // The leader now (a new one, if the killed server led) lists it once it heartbeat.
        eventually(
            "its heartbeat listed after failover",
            Duration::from_secs(30),
            async || last_heartbeat(&s.get("/v1/nodes/heartbeats").await.json(), &node_id),
        )
        .await;
    }

    // Kill the client: down after its TTL and grace, its allocations lost.
    drop(client);
    eventually("the node down", Duration::from_secs(20), async || {
        let n = nodes(alive[0]).await;
        n.iter()
            .any(|n| n["ID"] == node_id.as_str() && n["Status"] == "down")
            .then_some(())
    })
    .await;
    eventually(
        "its allocations lost",
        Duration::from_secs(10),
        async || {
            let r = alive[0].get("/v1/job/web/allocations?stale=true").await;
            let a = serde_json::from_str::<Value>(&r.text())
                .ok()?
                .as_array()?
                .clone();
            a.iter()
                .filter(|a| a["NodeID"] == node_id.as_str())
                .all(|a| a["ClientStatus"] == "lost")
                .then_some(())
        },
    )
    .await;
    let r = alive[0]
        .get(&format!("/v1/agent/host?node_id={node_id}"))
        .await;
    assert_eq!((r.status, r.text()), (404, "No path to node".to_string()));
}

async fn region_server(region: &str, ports: Ports, join: Option<u16>, data: &Scratch) -> Agent {
    let retry = join.map_or(String::new(), |p| {
        format!("  server_join {{\n    retry_join = [\"127.0.0.1:{p}\"]\n    retry_interval = \"200ms\"\n  }}\n")
    });
    let hcl = format!(
        "name = \"{region}-1\"\nregion = \"{region}\"\nbind_addr = \"127.0.0.1\"\nserver {{\n  bootstrap_expect = 1\n{retry}}}\n"
    );
    let data = format!("-data-dir={}", data.0.display());
    Agent::start_at(ports, &["-server", &data], &hcl).await
}

async fn post_job(agent: &Agent, query: &str, id: &str) -> crate::support::Resp {
    let job = json!({"Job": {"ID": id, "Type": "batch", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Driver": "exec", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]}});
    call(
        agent.http,
        "POST",
        &format!("/v1/jobs{query}"),
        &[],
        Bytes::from(job.to_string()),
    )
    .await
    .unwrap()
}

fn job_ids(r: &crate::support::Resp) -> Vec<String> {
    let v: Value = serde_json::from_str(&r.text()).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|j| j["ID"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn two_regions_share_a_pool_and_forward_both_ways() {
    let (pg, pe) = (Ports::free(), Ports::free());
    let (dg, de, dc) = (Scratch::new(), Scratch::new(), Scratch::new());
    let global = region_server("global", pg, None, &dg).await;
    let eu = region_server("eu", pe, Some(pg.serf), &de).await;
    global.wait_raft_leader().await;
    eu.wait_raft_leader().await;
    for s in [&global, &eu] {
        eventually("both regions listed", Duration::from_secs(10), async || {
            (s.get("/v1/regions").await.text() == r#"["eu","global"]"#).then_some(())
        })
        .await;
        let stats = s.get("/v1/agent/self").await.json();
        assert_eq!(stats["stats"]["nomad"]["known_regions"], "2");
    }

    // Each region is its own cluster: a job written for eu through global lands in eu only.
    let r = post_job(&global, "?region=eu", "in-eu").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_job(&eu, "?region=global", "in-global").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(job_ids(&eu.get("/v1/jobs").await), ["in-eu"]);
    assert_eq!(job_ids(&global.get("/v1/jobs").await), ["in-global"]);
    assert_eq!(job_ids(&global.get("/v1/jobs?region=eu").await), ["in-eu"]);
    let leader = global.get("/v1/status/leader?region=eu").await.json();
    assert_eq!(leader, json!(eu.rpc.to_string()));
    let r = global.get("/v1/jobs?region=nowhere").await;
    assert_eq!((r.status, r.text()), (500, "No path to region".to_string()));

    // A client-only agent of global passes cluster requests to its server, region and all.
    let client = Agent::start(
        &[
            "-client",
            &format!("-data-dir={}", dc.0.display()),
            &format!("-servers={}", global.rpc),
        ],
        "name = \"c1\"\nbind_addr = \"127.0.0.1\"\n",
    )
    .await;
    assert_eq!(job_ids(&client.get("/v1/jobs").await), ["in-global"]);
    assert_eq!(job_ids(&client.get("/v1/jobs?region=eu").await), ["in-eu"]);
    assert_eq!(client.get("/v1/regions").await.text(), r#"["eu","global"]"#);
    let r = client.get("/v1/jobs?region=nowhere").await;
    assert_eq!((r.status, r.text()), (500, "No path to region".to_string()));
    let node = eventually(
        "the client's node in global",
        Duration::from_secs(10),
        async || {
            let n = nodes(&client).await;
            n.first()?["Name"].as_str().map(String::from)
        },
    )
    .await;
    assert_eq!(node, "c1");
    assert!(nodes(&eu).await.is_empty());
}

#[tokio::test]
async fn forwarded_calls_keep_the_acl_rules_of_their_endpoints() {
    use crate::acl::{bootstrap, policy, token};
    let sd = Scratch::new();
    let server = Agent::start(
        &[
            "-server",
            "-acl-enabled",
            &format!("-data-dir={}", sd.0.display()),
        ],
        "name = \"s1\"\nbind_addr = \"127.0.0.1\"\nserver {\n  bootstrap_expect = 1\n}\n",
    )
    .await;
    server.wait_raft_leader().await;
    let mgmt = bootstrap(&server).await;
    policy(
        &server,
        &mgmt,
        "agent-read",
        "agent {\n  policy = \"read\"\n}\n",
    )
    .await;
    policy(
        &server,
        &mgmt,
        "agent-write",
        "agent {\n  policy = \"write\"\n}\n",
    )
    .await;
    policy(
        &server,
        &mgmt,
        "node-read",
        "node {\n  policy = \"read\"\n}\n",
    )
    .await;
    let tokens = [
        ("none", None),
        (
            "agent-read",
            Some(token(&server, &mgmt, &["agent-read"]).await),
        ),
        (
            "agent-write",
            Some(token(&server, &mgmt, &["agent-write"]).await),
        ),
        (
            "node-read",
            Some(token(&server, &mgmt, &["node-read"]).await),
        ),
        ("management", Some(mgmt.clone())),
    ];
    let cd = Scratch::new();
    let client = Agent::start(
        &[
            "-client",
            "-acl-enabled",
            &format!("-data-dir={}", cd.0.display()),
            &format!("-servers={}", server.rpc),
        ],
        "name = \"c1\"\nbind_addr = \"127.0.0.1\"\n",
    )
    .await;
    let mgmt_header = [("X-Nomad-Token", mgmt.as_str())];
    let node_id = eventually(
        "the client's node registered",
        Duration::from_secs(15),
        async || {
            let r = call(server.http, "GET", "/v1/nodes", &mgmt_header, Bytes::new())
                .await
                .ok()?;
            let v: Value = serde_json::from_str(&r.text()).ok()?;
            v.as_array()?.first()?["ID"].as_str().map(String::from)
        },
    )
    .await;
    // Who may: host (the debug rule: agent:read), pprof (agent:write), the node list
    // (node:read) and the token list (management), through the server and through the client.
    let cases: [(String, [u16; 5]); 4] = [
        (
            format!("/v1/agent/host?node_id={node_id}"),
            [403, 200, 200, 403, 200],
        ),
        (
            format!("/v1/agent/pprof/cmdline?node_id={node_id}"),
            [403, 403, 200, 403, 200],
        ),
        ("/v1/nodes".to_string(), [403, 403, 403, 200, 200]),
        ("/v1/acl/tokens".to_string(), [403, 403, 403, 403, 200]),
    ];
    for (path, want) in &cases {
        for ((label, secret), want) in tokens.iter().zip(want) {
            let headers: Vec<(&str, &str)> = secret
                .iter()
                .map(|s| ("X-Nomad-Token", s.as_str()))
                .collect();
            for (via, agent) in [("server", &server), ("client", &client)] {
                let r = call(agent.http, "GET", path, &headers, Bytes::new())
                    .await
                    .unwrap();
                assert_eq!(
                    r.status,
                    *want,
                    "{path} via the {via} with the {label} token: {}",
                    r.text()
                );
            }
        }
    }
}

#[tokio::test]
async fn one_connection_registers_a_bounded_number_of_nodes() {
    // Without client certificates anyone may register a node; one caller's connection may
    // register at most 64, so a stranger cannot grow the state as fast as it can send.
    let agent = Agent::start(&["-dev"], "client {\n  enabled = false\n}\n").await;
    agent.wait_raft_leader().await;
    let rpc = caravan_rpc::RpcClient::new(caravan_rpc::Dial::anonymous(), Default::default());
    let register = |i: usize| {
        json!({"node": {
            "id": format!("stranger-{i}"), "name": "s", "datacenter": "dc1", "node_class": "",
            "meta": {}, "cpu": 1000, "memory_mb": 1024, "status": "ready", "down_since": null,
            "secret_id": format!("secret-{i}"), "attributes": {}, "create_index": 0, "modify_index": 0}})
        .to_string()
        .into_bytes()
    };
    for i in 0..64 {
        let r = rpc
            .call(
                agent.rpc,
                caravan_rpc::method::NODE_REGISTER,
                None,
                register(i),
            )
            .await;
        assert!(r.is_ok(), "registration {i}: {r:?}");
    }
    // The same node again is fine; a 65th is not.
    rpc.call(
        agent.rpc,
        caravan_rpc::method::NODE_REGISTER,
        None,
        register(3),
    )
    .await
    .unwrap();
    let err = rpc
        .call(
            agent.rpc,
            caravan_rpc::method::NODE_REGISTER,
            None,
            register(64),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, caravan_rpc::RpcError::Remote { code: 429, message } if message.contains("at most 64")),
        "{err:?}"
    );
    assert_eq!(nodes(&agent).await.len(), 64);

    // Calls that the node's secret does not back are refused before anything is written.
    let raft_index = async || {
        let s = agent.get("/v1/agent/self").await.json();
        s["stats"]["raft"]["last_log_index"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = raft_index().await;
    let refused = [
        (
            caravan_rpc::method::NODE_UPDATE_ALLOC,
            json!({"node_id": "stranger-1", "secret_id": "wrong", "updates": {"a": "running"}}),
            403,
        ),
        (
            caravan_rpc::method::NODE_UPDATE_ALLOC,
            json!({"node_id": "stranger-1", "secret_id": "secret-1", "updates": {"not-on-it": "running"}}),
            400,
        ),
        (
            caravan_rpc::method::NODE_UPDATE_STATUS,
            json!({"node_id": "stranger-1", "secret_id": "secret-1", "status": "down"}),
            400,
        ),
        (
            caravan_rpc::method::NODE_UPDATE_STATUS,
            json!({"node_id": "stranger-1", "secret_id": "wrong", "status": "ready"}),
            403,
        ),
    ];
    for (method, body, code) in refused {
        let err = rpc
            .call(agent.rpc, method, None, body.to_string().into_bytes())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, caravan_rpc::RpcError::Remote { code: c, .. } if *c == code),
            "{method} {body}: {err:?}"
        );
    }
    let mut wrong = register(1);
    wrong = String::from_utf8(wrong)
        .unwrap()
        .replace("secret-1", "another")
        .into_bytes();
    let err = rpc
        .call(agent.rpc, caravan_rpc::method::NODE_REGISTER, None, wrong)
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("node secret ID does not match"),
        "{err:?}"
    );
    assert_eq!(
        raft_index().await,
        before,
        "a refused node call wrote to the log"
    );

    // HTTP.Forward carries only what agents pass on: not the agent's own write routes.
    for (path, allowed) in [
        ("/v1/agent/join?address=1.2.3.4:4648", false),
        ("/v1/status/leader", true),
    ] {
        let request = caravan_agent_core::client_rpc::ForwardedRequest {
            method: "PUT".into(),
            path_and_query: path.into(),
            content_type: None,
            hops: 1,
        };
        let body = request.encode(b"").unwrap();
        let answer = rpc
            .stream(
                agent.rpc,
                caravan_rpc::method::HTTP_FORWARD,
                None,
                body,
                Duration::from_secs(5),
            )
            .await;
        match (answer, allowed) {
            (Ok(_), true) => {}
            (Err(caravan_rpc::RpcError::Remote { code: 403, message }), false) => {
                assert!(
                    message.contains("is not passed between agents"),
                    "{message}"
                )
            }
            (other, _) => panic!("{path}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_server_that_cannot_authenticate_servers_gives_clients_only_itself() {
    // ACLs on, no gossip key, no TLS: a single server, as the agent allows. A stranger joins
    // the gossip pool claiming to be a server of the region; clients must never be sent to it.
    let (ps, pr) = (Ports::free(), Ports::free());
    let (ds, dr, dc) = (Scratch::new(), Scratch::new(), Scratch::new());
    let server = Agent::start_at(
        ps,
        &[
            "-server",
            "-acl-enabled",
            &format!("-data-dir={}", ds.0.display()),
        ],
        "name = \"real\"\nbind_addr = \"127.0.0.1\"\nserver {\n  bootstrap_expect = 1\n}\n",
    )
    .await;
    server.wait_raft_leader().await;
    let rogue_hcl = format!(
        "name = \"rogue\"\nbind_addr = \"127.0.0.1\"\nserver {{\n  bootstrap_expect = 1\n  server_join {{\n    retry_join = [\"127.0.0.1:{}\"]\n    retry_interval = \"200ms\"\n  }}\n}}\n",
        ps.serf
    );
    let rogue = Agent::start_at(
        pr,
        &["-server", &format!("-data-dir={}", dr.0.display())],
        &rogue_hcl,
    )
    .await;
    let mgmt = crate::acl::bootstrap(&server).await;
    let header = [("X-Nomad-Token", mgmt.as_str())];
    eventually(
        "the rogue's server tags in the real server's gossip",
        Duration::from_secs(20),
        async || {
            let r = call(
                server.http,
                "GET",
                "/v1/agent/members",
                &header,
                Bytes::new(),
            )
            .await
            .ok()?;
            let v = serde_json::from_str::<Value>(&r.text()).ok()?;
            v["Members"]
                .as_array()?
                .iter()
                .any(|m| m["Name"] == "rogue.global" && m["Tags"]["role"] == "nomad")
                .then_some(())
        },
    )
    .await;
    let client = Agent::start(
        &[
            "-client",
            "-acl-enabled",
            &format!("-data-dir={}", dc.0.display()),
            &format!("-servers={}", server.rpc),
        ],
        "name = \"c1\"\nbind_addr = \"127.0.0.1\"\n",
    )
    .await;
    eventually(
        "a few heartbeats answered",
        Duration::from_secs(10),
        async || {
            let r = call(client.http, "GET", "/v1/agent/self", &header, Bytes::new())
                .await
                .ok()?;
            let s = serde_json::from_str::<Value>(&r.text()).ok()?;
            (s["stats"]["client"]["last_heartbeat"] != "0s").then_some(())
        },
    )
    .await;
    let r = call(
        client.http,
        "GET",
        "/v1/agent/servers",
        &header,
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.text(),
        format!("[\"{}\"]", server.rpc),
        "the client was given: {}",
        r.text()
    );
    assert!(!r.text().contains(&rogue.rpc.to_string()));
}
