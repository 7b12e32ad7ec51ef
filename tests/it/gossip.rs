//! Gossip across real agent processes on 127.0.0.1.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Agent, Ports, Scratch};

/// A server agent named `name`, with its own data dir, and `extra` HCL.
async fn server(name: &str, extra: &str) -> (Agent, Scratch) {
    server_at(Ports::free(), name, extra).await
}

async fn server_at(ports: Ports, name: &str, extra: &str) -> (Agent, Scratch) {
    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let hcl = format!("name = \"{name}\"\nbind_addr = \"127.0.0.1\"\n{extra}");
    (Agent::start_at(ports, &["-server", &data], &hcl).await, dir)
}

async fn members(agent: &Agent) -> Vec<Value> {
    let r = agent.get("/v1/agent/members").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["Members"].as_array().cloned().unwrap_or_default()
}

fn status_of(members: &[Value], name: &str) -> Option<String> {
    members
        .iter()
        .find(|m| m["Name"] == name)
        .and_then(|m| m["Status"].as_str().map(str::to_string))
}

/// Waits (bounded) until every agent reports `name` with `status` (`None`: absent); returns the
/// time it took.
async fn wait_all(
    agents: &[&Agent],
    name: &str,
    status: Option<&str>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for a in agents {
            if status_of(&members(a).await, name).as_deref() != status {
                all = false;
                break;
            }
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} did not become {status:?} everywhere within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn join(agent: &Agent, target: &Agent) -> Value {
    let r = agent
        .call(
            "PUT",
            &format!("/v1/agent/join?address={}", target.serf),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn three_servers_fail_restart_force_leave_prune() {
    let (s1, _d1) = server("s1", "").await;
    let (s2, _d2) = server("s2", "").await;
    let (mut s3, d3) = server("s3", "").await;
    for s in [&s2, &s3] {
        let v = join(s, &s1).await;
        assert_eq!(
            v,
            serde_json::json!({"num_joined": 1, "error": "", "warning": ""})
        );
    }
    for name in ["s1.global", "s2.global", "s3.global"] {
        wait_all(&[&s1, &s2, &s3], name, Some("alive"), LIMIT).await;
    }
    let r = s2.get("/v1/agent/members").await.json();
    assert_eq!(r["ServerName"], "s2");
    assert_eq!(r["ServerRegion"], "global");
    assert_eq!(r["ServerDC"], "dc1");
    let m = r["Members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == "s1.global")
        .unwrap()
        .clone();
    assert_eq!(m["Addr"], "127.0.0.1");
    assert_eq!(m["Port"], s1.serf.port());
    assert_eq!(m["Tags"]["role"], "nomad");
    assert_eq!(m["Tags"]["port"], s1.rpc.port().to_string());
    let self_v = s1.get("/v1/agent/self").await.json();
    assert_eq!(self_v["stats"]["serf"]["members"], "3");
    assert_eq!(self_v["member"]["Name"], "s1.global");

    // SIGKILL: the others see `failed`.
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    let took = wait_all(&[&s1, &s2], "s3.global", Some("failed"), LIMIT).await;
    eprintln!("killed server seen failed everywhere after {took:?}");

    // Restart with the same name and ports: alive again.
    let ports = s3.ports;
    drop(s3);
    let (s3, _d3b) = server_at(ports, "s3", "").await;
    drop(d3);
    join(&s3, &s1).await;
    wait_all(&[&s1, &s2, &s3], "s3.global", Some("alive"), LIMIT).await;

    // Kill again, force-leave: `left`; then prune: gone everywhere.
    let mut s3 = s3;
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    wait_all(&[&s1, &s2], "s3.global", Some("failed"), LIMIT).await;
    let r = s1
        .call("PUT", "/v1/agent/force-leave?node=s3.global", &[])
        .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    wait_all(&[&s1, &s2], "s3.global", Some("left"), LIMIT).await;
    let r = s2
        .call("POST", "/v1/agent/force-leave?node=s3.global&prune=1", &[])
        .await;
    assert_eq!(r.status, 200);
    wait_all(&[&s1, &s2], "s3.global", None, LIMIT).await;

    // Unknown node: not an error.
    let r = s1
        .call("PUT", "/v1/agent/force-leave?node=nobody.global", &[])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn graceful_stop_is_left() {
    let (s1, _d1) = server("g1", "").await;
    let (mut s2, _d2) = server("g2", "").await;
    join(&s2, &s1).await;
    wait_all(&[&s1], "g2.global", Some("alive"), LIMIT).await;
    let pid = s2.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = s2.child.wait();
    wait_all(&[&s1], "g2.global", Some("left"), LIMIT).await;
}

#[tokio::test]
async fn join_where_nobody_listens_is_200_with_error() {
    let (s1, _d) = server("j1", "").await;
    let dead = crate::support::free_udp_port();
    let r = s1
        .call(
            "PUT",
            &format!("/v1/agent/join?address=127.0.0.1:{dead}"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["num_joined"], 0);
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("1 error occurred:\n\t* Failed to join 127.0.0.1:"),
        "{error}"
    );
    assert_eq!(v["warning"], "");
    assert_eq!(
        s1.call("PUT", "/v1/agent/join", &[]).await.text(),
        "missing address to join"
    );
}

#[tokio::test]
async fn mismatched_keys_never_merge() {
    let k1 = "server {\n  encrypt = \"Ym9ib2JvYm9ib2JvYm9ib2JvYm9ib2JvYm9ib2JvYm8=\"\n}\n";
    let k2 = "server {\n  encrypt = \"YWxpY2VhbGljZWFsaWNlYWxpY2VhbGljZWFsaWNlYWw=\"\n}\n";
    let (a, _da) = server("ka", k1).await;
    let (b, _db) = server("kb", k2).await;
    let (c, _dc) = server("kc", k1).await;
    let v = join(&b, &a).await;
    assert_eq!(v["num_joined"], 0, "{v}");
    let v = join(&c, &a).await;
    assert_eq!(v["num_joined"], 1, "{v}");
    wait_all(&[&a, &c], "kc.global", Some("alive"), LIMIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(members(&a).await.len(), 2);
    assert_eq!(members(&b).await.len(), 1);
    let stats = a.get("/v1/agent/self").await.json()["stats"]["serf"].clone();
    assert_eq!(stats["encrypted"], "true");
    assert_ne!(stats["decrypt_failures"], "0");
}

#[tokio::test]
async fn join_and_retry_join_at_start() {
    let (s1, _d1) = server("r1", "").await;
    let (s2, _d2) = {
        let dir = Scratch::new();
        let data = format!("-data-dir={}", dir.0.display());
        let join = format!("-join={}", s1.serf);
        let hcl = "name = \"r2\"\nbind_addr = \"127.0.0.1\"\n";
        (Agent::start(&["-server", &data, &join], hcl).await, dir)
    };
    let hcl = format!(
        "name = \"r3\"\nbind_addr = \"127.0.0.1\"\nserver {{\n  server_join {{\n    retry_join = [\"127.0.0.1:{}\", \"{}\"]\n    retry_interval = \"200ms\"\n  }}\n}}\n",
        crate::support::free_udp_port(),
        s1.serf
    );
    let (s3, _d3) = server(
        "r3",
        &hcl.replace("name = \"r3\"\nbind_addr = \"127.0.0.1\"\n", ""),
    )
    .await;
    for name in ["r1.global", "r2.global", "r3.global"] {
        wait_all(&[&s1, &s2, &s3], name, Some("alive"), LIMIT).await;
    }
}

#[tokio::test]
async fn client_only_agent_asks_a_server_for_members() {
    let (s1, _d1) = server("c1", "").await;
    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let servers = format!("-servers={}", s1.rpc);
    let client = Agent::start(&["-client", &data, &servers], "bind_addr = \"127.0.0.1\"\n").await;
    let r = client.get("/v1/agent/members").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ServerName"], "c1");
    assert_eq!(
        client
            .call("PUT", "/v1/agent/join?address=x", &[])
            .await
            .status,
        501
    );
    assert_eq!(
        client
            .call("PUT", "/v1/agent/force-leave?node=x", &[])
            .await
            .status,
        501
    );
    let v = client.get("/v1/agent/self").await.json();
    assert!(v["stats"].get("serf").is_none());
}

/// Five servers with `encrypt` form one pool by `retry_join` through the first one's address
/// alone: every one lists all five `alive` (the time it took is printed; the target is 5 s), and
/// the member lists travelled over TCP (`streams_in` on the address they joined through).
#[tokio::test]
async fn five_encrypted_servers_form_one_pool_by_retry_join_through_one_address() {
    let key = "Ym9ib2JvYm9ib2JvYm9ib2JvYm9ib2JvYm9ib2JvYm8=";
    let (s1, _d1) = server("e1", &format!("server {{\n  encrypt = \"{key}\"\n}}\n")).await;
    let retry = format!(
        "server {{\n  encrypt = \"{key}\"\n  server_join {{\n    retry_join = [\"{}\"]\n    retry_interval = \"1s\"\n  }}\n}}\n",
        s1.serf
    );
    let mut others = Vec::new();
    let first = Instant::now();
    for i in 2..=5 {
        others.push(server(&format!("e{i}"), &retry).await);
    }
    let all_up = Instant::now();
    let mut all: Vec<&Agent> = vec![&s1];
    all.extend(others.iter().map(|(a, _)| a));
    for i in 1..=5 {
        wait_all(&all, &format!("e{i}.global"), Some("alive"), LIMIT).await;
    }
    eprintln!(
        "five encrypted servers list all five alive {:?} after the last one started, {:?} after the first retry_join agent was launched",
        all_up.elapsed(),
        first.elapsed()
    );
    // The announce travels by datagram and the member list by stream, so the pool can be whole
    // before the seed has read a joiner's list: wait for one (bounded), as the pool's forming
    // does not say the streams are done.
    let started = Instant::now();
    loop {
        let stats = s1.get("/v1/agent/self").await.json()["stats"]["serf"].clone();
        assert_eq!(stats["encrypted"], "true");
        assert_eq!(stats["decrypt_failures"], "0", "{stats}");
        let streams: u64 = stats["streams_in"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if streams >= 1 {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no member list came over TCP within {LIMIT:?}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
