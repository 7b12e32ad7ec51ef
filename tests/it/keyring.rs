//! The gossip keyring across real server processes: a rotation under gossip with no member
//! ever `failed`, the `serf.keyring` file, the RPC keys following it, the CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Agent, Ports, Resp, Scratch, cli, eventually, send};

const K1: &str = "rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=";
const K2: &str = "HD5HAaR4KRF2sOBKR9SH1+eVxyGMzXPAdgQ5j9lHEyk=";

pub(crate) struct Server {
    pub(crate) agent: Option<Agent>,
    pub(crate) ports: Ports,
    data: Scratch,
    name: String,
}

impl Server {
    /// A server named `s<i>` that has not started.
    pub(crate) fn new(i: usize) -> Server {
        Server {
            agent: None,
            ports: Ports::free(),
            data: Scratch::new(),
            name: format!("s{i}"),
        }
    }

    pub(crate) fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("running")
    }

    /// Starts it (gossip key K1, no client), joining the gossip port `join`.
    pub(crate) async fn start(&mut self, join: Option<u16>) {
        let data = format!("-data-dir={}", self.data.0.display());
        let retry = join.map_or(String::new(), |p| {
            format!("  server_join {{\n    retry_join = [\"127.0.0.1:{p}\"]\n    retry_interval = \"200ms\"\n  }}\n")
        });
        // Always configured with K1: after the rotation the keyring file must win.
        let hcl = format!(
            "name = \"{}\"\nbind_addr = \"127.0.0.1\"\nclient {{\n  enabled = false\n}}\nserver {{\n  bootstrap_expect = 3\n  encrypt = \"{K1}\"\n{retry}}}\n",
            self.name
        );
        self.agent = Some(Agent::start_at(self.ports, &["-server", &data], &hcl).await);
    }

    fn keyring_file(&self) -> std::path::PathBuf {
        self.data.0.join("server").join("serf.keyring")
    }
}

async fn keyring(agent: &Agent, op: &str, key: Option<&str>) -> Resp {
    let body = key.map_or(Value::Null, |k| json!({ "Key": k }));
    send(agent, "PUT", &format!("/v1/agent/keyring/{op}"), None, body).await
}

/// Three servers (`s1` to `s3`, gossip key K1) joined through the first one's gossip port,
/// every member alive on every agent; and that port.
pub(crate) async fn three_servers() -> (Vec<Server>, u16) {
    let mut servers: Vec<Server> = (1..=3).map(Server::new).collect();
    let first = servers[0].ports.serf;
    for (i, s) in servers.iter_mut().enumerate() {
        s.start((i > 0).then_some(first)).await;
    }
    let agents: Vec<&Agent> = servers.iter().map(Server::agent).collect();
    eventually(Duration::from_secs(30), "a pool of three", async || {
        all_alive(&agents, 3).await
    })
    .await;
    (servers, first)
}

/// Every member `Alive` on every agent (`Err` names the first that is not).
pub(crate) async fn all_alive(agents: &[&Agent], n: usize) -> Result<(), String> {
    for a in agents {
        let r = a.get("/v1/agent/members").await;
        let members = r.json()["Members"].as_array().cloned().unwrap_or_default();
        if members.len() != n {
            return Err(format!("{} members on {}", members.len(), a.http));
        }
        if let Some(m) = members.iter().find(|m| m["Status"] != "alive") {
            return Err(format!("{} is {} on {}", m["Name"], m["Status"], a.http));
        }
    }
    Ok(())
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// An RPC client proving the server key derived from gossip key `key` (base64).
fn server_rpc(key: &str) -> caravan_rpc::RpcClient {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    let dial = caravan_rpc::Dial::with_server_key(caravan_rpc::identity::server_key(&raw));
    caravan_rpc::RpcClient::new(dial, Default::default())
}

/// Installs `new` on the one server at `addr` only, as a server holding `key` would ask it
/// (`Keyring.Operation`), so the pool is left with a member ahead of the others.
async fn install_on_one(key: &str, addr: std::net::SocketAddr, new: &str) {
    let rpc = server_rpc(key);
    let op = caravan_agent_core::keyring::KeyringOp::Install(new.to_string());
    let reply = rpc
        .call_within(
            addr,
            caravan_rpc::method::KEYRING_OPERATION,
            None,
            serde_json::to_vec(&op).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .expect("Keyring.Operation");
    let reply: caravan_agent_core::keyring::MemberKeyReply =
        serde_json::from_slice(&reply).unwrap();
    assert!(reply.result, "{reply:?}");
}

/// Calls `Raft.Vote` (server-only) at `addr` proving the server key derived from gossip key
/// `key`: `Ok` when the handshake passed and the method was not refused for the caller's role
/// (the vote itself may fail to decode: it is not a real vote).
async fn raft_vote_as(key: &str, addr: std::net::SocketAddr) -> Result<(), String> {
    let rpc = server_rpc(key);
    let result = rpc
        .call_within(
            addr,
            caravan_rpc::method::RAFT_VOTE,
            None,
            vec![0],
            Duration::from_secs(5),
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(caravan_rpc::RpcError::Remote { code, .. }) if code != 403 => Ok(()),
        Err(e) => Err(format!("{e:?}").to_lowercase()),
    }
}

#[tokio::test]
async fn three_servers_rotate_their_gossip_key_with_no_member_failed_and_keep_it_on_disk() {
    let (mut servers, first) = three_servers().await;
    let agents: Vec<&Agent> = servers.iter().map(Server::agent).collect();
    for a in &agents {
        a.wait_raft_leader().await;
    }
    // The encrypt key seeded each server's keyring file, 0600 in a 0700 directory.
    for s in &servers {
        let file = s.keyring_file();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("[\"{K1}\"]")
        );
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
    }

    // An RPC caller proving the server key derived from K1 is a server.
    let rpc_addr = std::net::SocketAddr::from(([127, 0, 0, 1], servers[0].ports.rpc));
    assert_eq!(raft_vote_as(K1, rpc_addr).await, Ok(()));

    // Watch every member on every agent through the whole rotation.
    let failed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = agents
        .iter()
        .map(|a| {
            let (http, failed, stop) = (a.http, failed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = crate::support::get(http, "/v1/agent/members").await {
                        for m in r.json()["Members"].as_array().into_iter().flatten() {
                            if m["Status"] != "alive" {
                                failed.store(true, Ordering::Relaxed);
                                seen.push(format!("{} {}", m["Name"], m["Status"]));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                seen
            })
        })
        .collect();

    let list = keyring(agents[1], "list", None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(
        list.json(),
        json!({"Messages": {}, "Keys": {K1: 3}, "NumNodes": 3})
    );

    // A member that missed the install: `use` is refused before any member changes, and
    // `remove` of a key some member seals with too.
    install_on_one(K1, rpc_addr, K2).await;
    let r = keyring(agents[1], "use", Some(K2)).await;
    assert_eq!(
        (r.status, r.text()),
        (
            500,
            "cannot use the key: 2/3 nodes do not hold it (install it first)".into()
        )
    );
    assert_eq!(
        keyring(agents[0], "list", None).await.json()["Keys"],
        json!({K1: 3, K2: 1})
    );

    // Install through the CLI of one server, use through another, remove through the third.
    let out = cli(
        agents[0].http,
        &["operator", "gossip", "keyring", "-install", K2],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Installing new gossip encryption key...\n"
    );
    let out = cli(
        agents[1].http,
        &["operator", "gossip", "keyring", "-list"],
        &[],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (a, b) = if K1 < K2 { (K1, K2) } else { (K2, K1) };
    assert_eq!(
        text,
        format!("Gathering installed encryption keys...\nKey\n{a}\n{b}\n")
    );
    let r = keyring(agents[1], "use", Some(K2)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = keyring(agents[2], "remove", Some(K1)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"Messages": {}, "Keys": {}, "NumNodes": 3}));
    assert_eq!(
        keyring(agents[0], "list", None).await.json()["Keys"],
        json!({K2: 3})
    );
    // The primary cannot be removed: refused before any member is asked to.
    let out = cli(
        agents[0].http,
        &["operator", "gossip", "keyring", "-remove", K2],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: Unexpected response code: 500 (cannot remove the key: it is the primary key on 3/3 nodes (use another first))"
    );
    // A few probe rounds under the new key only.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        let seen = w.await.unwrap();
        assert!(
            seen.is_empty(),
            "members seen not alive during the rotation: {seen:?}"
        );
    }
    assert!(!failed.load(Ordering::Relaxed));
    for s in &servers {
        assert_eq!(
            std::fs::read_to_string(s.keyring_file()).unwrap(),
            format!("[\"{K2}\"]")
        );
        assert_eq!(mode(&s.keyring_file()), 0o600);
    }

    // The RPC keys followed: K1 authenticates nothing new, K2 does.
    let refused = raft_vote_as(K1, rpc_addr).await.unwrap_err();
    assert!(refused.contains("handshake"), "{refused}");
    assert_eq!(raft_vote_as(K2, rpc_addr).await, Ok(()));

    // Server-to-server RPC now runs on keys derived from K2: a write through a follower is
    // forwarded to the leader and committed.
    let job = json!({"Job": {"ID": "after-rotation", "Type": "service", "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Driver": "docker"}]}]}});
    let leader = agents[0].get("/v1/status/leader").await.json();
    let follower = servers
        .iter()
        .find(|s| leader != json!(format!("127.0.0.1:{}", s.ports.rpc)))
        .expect("a follower");
    let r = send(follower.agent(), "PUT", "/v1/jobs", None, job).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A restarted server still configured with K1 loads K2 from its keyring file and rejoins.
    drop(servers[2].agent.take());
    servers[2].start(Some(first)).await;
    let agents: Vec<&Agent> = servers.iter().map(Server::agent).collect();
    eventually(
        Duration::from_secs(30),
        "the restarted server back",
        async || all_alive(&agents, 3).await,
    )
    .await;
    let list = keyring(agents[2], "list", None).await;
    assert_eq!(list.json()["Keys"], json!({K2: 3}), "{}", list.text());
}

#[tokio::test]
async fn without_encryption_every_member_reports_failure() {
    let agent = Agent::start(&["-dev"], "").await;
    let r = keyring(&agent, "list", None).await;
    assert_eq!(
        (r.status, r.text()),
        (500, "1/1 nodes reported failure".to_string())
    );
    let r = keyring(&agent, "install", Some(K2)).await;
    assert_eq!(
        (r.status, r.text()),
        (500, "1/1 nodes reported failure".to_string())
    );
    let r = keyring(&agent, "install", None).await;
    assert_eq!(
        (r.status, r.text()),
        (400, "Request body is empty".to_string())
    );
    let client = Agent::start(&["-dev"], "server {\n  enabled = false\n}\n").await;
    let r = keyring(&client, "list", None).await;
    assert_eq!((r.status, r.text()), (501, "Invalid method".to_string()));
    let out = cli(agent.http, &["operator", "gossip", "keyring"], &[]).await;
    assert!(!out.status.success());
    let out = cli(
        agent.http,
        &["operator", "gossip", "keyring", "-generate"],
        &[],
    )
    .await;
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(key.len(), 44, "{key}");
    let r = keyring(&agent, "use", Some(&key)).await;
    assert_eq!(r.status, 500, "{}", r.text());
}
