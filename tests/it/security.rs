//! The agent-to-agent door, tried as the security review's attacker did (real processes on
//! 127.0.0.1; `../shared/reviews/security-review.md`, C1–C3, H1, M2, M6, M7): the RPC port serves
//! no secret and no server-only method to a caller that proved nothing, checks forwarded tokens
//! with the HTTP rules, and a server with ACLs that expects peers refuses to run unprotected.

use std::net::SocketAddr;
use std::time::Duration;

use caravan_rpc::method::{self as m, Access, METHODS};
use caravan_rpc::{Dial, RpcClient, RpcError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Agent, Scratch, run_caravan, send};

const KEY: &str = "rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=";

fn key_bytes() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap()
}

async fn bootstrap(agent: &Agent) -> String {
    let r = send(agent, "POST", "/v1/acl/bootstrap", None, Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["SecretID"].as_str().unwrap().to_string()
}

/// A token whose policy grants `agent:read` only.
async fn reader(agent: &Agent, mgmt: &str) -> String {
    let body = json!({"Name": "readers", "Rules": "agent {\n  policy = \"read\"\n}\n"});
    let r = send(agent, "POST", "/v1/acl/policy/readers", Some(mgmt), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json!({"Name": "r", "Type": "client", "Policies": ["readers"]});
    let r = send(agent, "POST", "/v1/acl/token", Some(mgmt), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["SecretID"].as_str().unwrap().to_string()
}

/// The body each method is called with: what its handler needs to get past decoding.
fn body_for(method: &str) -> Vec<u8> {
    let v = match method {
        m::PROFILE => json!({"name": "cmdline", "seconds": 1, "debug": 0, "gc": 0}),
        m::MONITOR => {
            json!({"log_level": "info", "log_json": false, "plain": true, "include_location": false})
        }
        m::RAFT_VOTE => json!({
            "vote": {"leader_id": {"term": u64::MAX, "node_id": 4242}, "committed": false},
            "last_log_id": {"leader_id": {"term": u64::MAX, "node_id": 4242}, "index": u64::MAX}
        }),
        m::RAFT_APPLY => {
            // The review's command minting a management token (C1); its base never matches,
            // so even a caller holding the server key changes nothing here.
            return br#"{"op":"AclReplace","base":18446744073709551615,"state":{"policies":{},"tokens":{"evil-accessor":{"accessor_id":"evil-accessor","secret_id":"00000000-0000-4000-8000-0000000e7711","name":"attacker","token_type":"Management","policies":[],"global":true,"create_time":"2026-01-01T00:00:00Z","create_index":1,"modify_index":1}},"bootstrapped":true,"index":2}}"#.to_vec();
        }
        // A log-file export of an agent without a log file: past the token, the target's own
        // check refuses it (400), so no reader is started.
        m::MONITOR_EXPORT => json!({"on_disk": true, "follow": false, "plain": true,
            "logs_since": 0, "service_name": ""}),
        m::EVAL_DEQUEUE => json!({"types": ["service"], "timeout_ms": 10}),
        // A stranger may register a new node (the node's secret is its credential from then on,
        // as in Nomad without mTLS); every later node call needs that node and its secret.
        m::NODE_REGISTER => json!({"node": {
            "id": "stranger-node", "name": "s", "datacenter": "dc1", "node_class": "",
            "meta": {}, "cpu": 1000, "memory_mb": 1024, "status": "ready", "down_since": null,
            "secret_id": "stranger-secret", "attributes": {}, "create_index": 0, "modify_index": 0}}),
        m::NODE_UPDATE_STATUS => {
            json!({"node_id": "no-such-node", "secret_id": "s", "status": "ready"})
        }
        m::NODE_GET_CLIENT_ALLOCS => {
            json!({"node_id": "no-such-node", "secret_id": "s", "min_index": 0, "wait_ms": 10})
        }
        m::NODE_UPDATE_ALLOC => json!({"node_id": "no-such-node", "secret_id": "s", "updates": {}}),
        m::NODE_HAS_CONN => json!({"node_id": "no-such-node"}),
        m::CLIENT_HOST => json!({"node_id": "no-such-node", "request": null}),
        m::CLIENT_PROFILE => json!({"node_id": "no-such-node", "request":
            {"name": "cmdline", "seconds": 1, "debug": 0, "gc": 0}}),
        m::CLIENT_MONITOR_EXPORT => json!({"node_id": "no-such-node", "request":
            {"on_disk": true, "follow": false, "plain": true, "logs_since": 0, "service_name": ""}}),
        m::CLIENT_MONITOR => json!({"node_id": "no-such-node", "request":
            {"log_level": "info", "log_json": false, "plain": true, "include_location": false}}),
        m::EVAL_ACK | m::EVAL_NACK => json!({"eval_id": "x", "token": 1}),
        _ => json!({}),
    };
    v.to_string().into_bytes()
}

/// Calls `method` and returns the reply's status: 200, or the refusal's code.
async fn status(
    c: &RpcClient,
    addr: SocketAddr,
    method: &str,
    token: Option<&str>,
) -> (u16, String) {
    let call = if method == m::MONITOR || method == m::MONITOR_EXPORT {
        c.stream(
            addr,
            method,
            token,
            body_for(method),
            Duration::from_secs(5),
        )
        .await
        .map(|_| bytes::Bytes::new())
    } else {
        c.call_within(
            addr,
            method,
            token,
            body_for(method),
            Duration::from_secs(10),
        )
        .await
    };
    match call {
        Ok(body) => (200, String::from_utf8_lossy(&body).into_owned()),
        Err(RpcError::Remote { code, message }) => (code, message),
        Err(e) => panic!("{method}: {e}"),
    }
}

/// The expected status of a user-acting method for a token: none, unknown, agent:read, or
/// management.
fn user_expectation(method: &str, token: &str) -> u16 {
    match (method, token) {
        (m::RESOLVE_TOKEN, "none") => 200, // the anonymous policy's permissions
        // The forwarded request's own endpoint checks the token; an empty call is malformed.
        (m::HTTP_FORWARD, _) => 400,
        (_, "none" | "unknown") => 403,
        (m::MEMBERS | m::PROFILE | m::CLIENT_PROFILE, "read") => 403, // node:read, agent:write
        // Allowed through, for a node the state does not have.
        (m::CLIENT_HOST | m::CLIENT_PROFILE | m::CLIENT_MONITOR | m::CLIENT_MONITOR_EXPORT, _) => {
            404
        }
        (m::MONITOR_EXPORT, _) => 400, // agent:read passed; no log file here
        _ => 200,
    }
}

#[tokio::test]
async fn rpc_authorization_matrix_and_no_secret_in_any_reply() {
    let agent = Agent::start(&["-dev", "-acl-enabled", &format!("-encrypt={KEY}")], "").await;
    agent.wait_raft_leader().await;
    let mgmt = bootstrap(&agent).await;
    let read = reader(&agent, &mgmt).await;
    let unknown = "00000000-0000-4000-8000-0000000e7711";
    let server_key = caravan_rpc::identity::server_key(&key_bytes());
    let stranger = RpcClient::new(Dial::anonymous(), Default::default());
    let server = RpcClient::new(Dial::with_server_key(server_key), Default::default());
    let wrong = RpcClient::new(
        Dial::with_server_key(caravan_rpc::identity::server_key(b"not the key")),
        Default::default(),
    );
    let mut replies = String::new();
    for spec in METHODS {
        for (label, token) in [
            ("none", None),
            ("unknown", Some(unknown)),
            ("read", Some(read.as_str())),
            ("management", Some(mgmt.as_str())),
        ] {
            let (code, text) = status(&stranger, agent.rpc, spec.name, token).await;
            replies.push_str(&text);
            let want = match spec.access {
                Access::Public
                    if spec.name.starts_with("Node.") && spec.name != m::NODE_REGISTER =>
                {
                    404 // through the door; no such node
                }
                Access::Public => 200,
                Access::User => user_expectation(spec.name, label),
                Access::Client | Access::Server => 403,
            };
            assert_eq!(
                code, want,
                "stranger, {} with a {label} token: {text}",
                spec.name
            );

            // The server key passes the door; what the method then does is its own business
            // (a hostile vote is refused by Raft's bounds, an unknown evaluation by the broker).
            let (code, text) = status(&server, agent.rpc, spec.name, token).await;
            replies.push_str(&text);
            if spec.access == Access::Server {
                assert_ne!(code, 403, "server key, {}: {text}", spec.name);
            }
            let err = wrong
                .call_within(
                    agent.rpc,
                    spec.name,
                    token,
                    body_for(spec.name),
                    Duration::from_secs(5),
                )
                .await
                .unwrap_err();
            assert!(matches!(err, RpcError::Handshake(_)), "{err:?}");
        }
    }
    // C1: no reply of the whole run carried a secret the run created (ACL.State is gone).
    assert!(
        !replies.contains(&mgmt),
        "the management secret leaked over RPC"
    );
    assert!(!replies.contains(&read), "a token secret leaked over RPC");
    let (code, _) = status(&stranger, agent.rpc, "ACL.State", None).await;
    assert_eq!(code, 404);
    // C1: the minted token of the review's Raft.Apply does not exist.
    let r = send(&agent, "GET", "/v1/acl/tokens", Some(unknown), Value::Null).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // C2: the hostile vote left the server with its leader.
    let r = send(&agent, "GET", "/v1/agent/health", Some(&mgmt), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn the_review_h2c_request_is_not_answered() {
    let agent = Agent::start(&["-dev", "-acl-enabled"], "").await;
    let mut tcp = tokio::net::TcpStream::connect(agent.rpc).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf))
        .await
        .expect("the connection is closed within the handshake timeout");
    assert!(read.is_err() || buf.is_empty(), "answered: {buf:?}");
}

#[tokio::test]
async fn without_a_key_acl_servers_serve_no_server_method_and_refuse_to_join_peers() {
    // A single server with ACLs and no key: nobody is a server to it.
    let agent = Agent::start(&["-dev", "-acl-enabled"], "").await;
    agent.wait_raft_leader().await;
    let c = RpcClient::new(Dial::anonymous(), Default::default());
    for method in [
        m::RAFT_VOTE,
        m::RAFT_APPLY,
        m::RAFT_SNAPSHOT,
        m::EVAL_DEQUEUE,
    ] {
        let (code, text) = status(&c, agent.rpc, method, None).await;
        assert_eq!(code, 403, "{method}: {text}");
    }
    // A server with ACLs that expects peers will not start unprotected...
    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let args = [
        "agent",
        "-server",
        "-acl-enabled",
        "-bootstrap-expect=3",
        "-bind=127.0.0.1",
        &data,
    ];
    let out = run_caravan(&args, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs `encrypt`") && err.contains("tls"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // ...unless told to, explicitly.
    let started = Agent::start_env(
        crate::support::Ports::free(),
        &["-server", "-acl-enabled", "-bootstrap-expect=3", &data],
        "bind_addr = \"127.0.0.1\"\n",
        &[("CARAVAN_INSECURE_RPC", "1")],
    )
    .await;
    drop(started);
}

#[tokio::test]
async fn forwarded_profiles_carry_the_callers_token() {
    // server_id targeting a server other than the one asked goes over RPC; the target checks the
    // token again. With ACLs, an agent:read token may not profile (agent:write) anywhere.
    let agent = Agent::start(&["-dev", "-acl-enabled", &format!("-encrypt={KEY}")], "").await;
    agent.wait_raft_leader().await;
    let mgmt = bootstrap(&agent).await;
    let c = RpcClient::new(Dial::anonymous(), Default::default());
    let (code, body) = status(&c, agent.rpc, m::PROFILE, Some(&mgmt)).await;
    assert_eq!(code, 200, "{body}");
    // The cmdline is redacted: the gossip key given with -encrypt is not in it.
    assert!(
        !body.contains(KEY),
        "the gossip key leaked through cmdline: {body}"
    );
    // M6: an unbounded profile duration is refused by the request's type.
    let huge = json!({"name": "profile", "seconds": u64::MAX, "debug": 0, "gc": 0});
    let err = c
        .call_within(
            agent.rpc,
            m::PROFILE,
            Some(&mgmt),
            huge.to_string().into_bytes(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote { code: 400, message } if message.contains("at most 3600")),
        "{err:?}"
    );
}

/// The review of this door, F1: a stranger starts its own server (no ACLs, `bootstrap_expect =
/// 2`) and joins the gossip pool of a single ACL server that has no `encrypt` key. The ACL
/// server cannot authenticate it, so it never makes it a voter (which would hand it every
/// secret in the log and half the quorum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_server_without_a_key_takes_no_stranger_into_raft() {
    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let victim = Agent::start(
        &["-server", "-acl-enabled", "-bootstrap-expect=1", &data],
        "bind_addr = \"127.0.0.1\"\n",
    )
    .await;
    victim.wait_raft_leader().await;
    let mgmt = bootstrap(&victim).await;
    let join = format!("-join=127.0.0.1:{}", victim.ports.serf);
    let other = Scratch::new();
    let other_data = format!("-data-dir={}", other.0.display());
    let stranger = Agent::start(
        &[
            "-server",
            "-bootstrap-expect=2",
            "-node=attacker",
            &join,
            &other_data,
        ],
        "bind_addr = \"127.0.0.1\"\n",
    )
    .await;
    // The stranger is in the victim's gossip pool...
    let mut seen = false;
    for _ in 0..200 {
        let r = send(
            &victim,
            "GET",
            "/v1/agent/members",
            Some(&mgmt),
            Value::Null,
        )
        .await;
        if r.text().contains("attacker.global") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the stranger never joined gossip");
    // ...but after several reconciliations it is not a voter, and writes go on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let peers = send(&victim, "GET", "/v1/status/peers", None, Value::Null)
        .await
        .json();
    assert_eq!(peers, json!([victim.rpc.to_string()]), "{peers}");
    let r = send(&victim, "GET", "/v1/agent/health", None, Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // And nothing of the victim's log reached the stranger.
    let db = other.0.join("server").join("raft").join("raft.db");
    let held = std::fs::read(&db).unwrap_or_default();
    assert!(
        !held.windows(mgmt.len()).any(|w| w == mgmt.as_bytes()),
        "the bootstrap secret reached the stranger's raft.db"
    );
    drop(stranger);
}

/// F2: a flood of requests with random tokens at a client-only agent (each one unknown, so each
/// would be resolved through a server) neither freezes it nor outlives the flood, even when its
/// server accepts connections and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_token_flood_does_not_freeze_a_client_agent() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp); // accepted, never answered
        }
    });
    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let servers = format!("-servers={silent_addr}");
    let client = Agent::start(
        &["-client", "-acl-enabled", &data, &servers],
        "bind_addr = \"127.0.0.1\"\nlimits {\n  http_max_conns_per_client = 0\n}\n",
    )
    .await;
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..800u64 {
        let http = client.http;
        flood.spawn(async move {
            let token = format!("{i:08x}-0000-4000-8000-{:012x}", i * 7919);
            let headers = [("X-Nomad-Token", token.as_str())];
            crate::support::call(http, "GET", "/v1/agent/self", &headers, bytes::Bytes::new())
                .await
                .map(|r| r.status)
        });
    }
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while flood.join_next().await.is_some() {}
    })
    .await;
    assert!(
        drained.is_ok(),
        "the flood's requests did not all end within 60 s"
    );
    // The agent still answers at once.
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        crate::support::get(client.http, "/v1/agent/health"),
    )
    .await
    .expect("health answered within 5 s after the flood");
    assert!(health.is_ok(), "{health:?}");
    // Nor can a stranger make it resolve tokens over RPC: only its servers forward to it.
    let stranger = RpcClient::new(Dial::anonymous(), Default::default());
    let (code, text) = status(
        &stranger,
        client.rpc,
        m::HOST,
        Some("00000000-0000-4000-8000-000000000001"),
    )
    .await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("from its servers only"), "{text}");
}
