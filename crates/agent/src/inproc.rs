//! A real agent started inside this process, for the fuzz targets and tests that must reach the
//! agent's own RPC router: [`InProcessAgent::start`] builds a dev-mode agent (server and
//! client, Raft and the replicated state in memory) exactly as `caravan agent -dev` does, with a
//! gossip key of its own and ACLs on, and serves its RPC port on 127.0.0.1 (a port picked free)
//! with the real [`caravan_rpc::Server`] and the agent's real handler. [`InProcessAgent::call`]
//! makes one call over that port as a chosen caller, so every call takes the path a network
//! call takes: the handshake that proves the caller's role, the method table's role and size
//! checks, the handler's method router and its ACL checks, the decoders.
//!
//! [`sample_requests`] gives one valid request body of every method of the table, built from
//! the request types the agent's own callers send.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use caravan_agent_core::client_rpc::{
    AllocUpdateRequest, ClientAllocsRequest, ForNode, ForwardedRequest, HasConnRequest,
    RegisterRequest, UpdateStatusRequest,
};
use caravan_agent_core::config::{
    AgentConfig, HostFacts, LogLevel, dev_defaults, merge_trees, tree_to_file,
};
use caravan_agent_core::debug::{ExportRequest, MonitorRequest, ProfileRequest};
use caravan_agent_core::keyring::KeyringOp;
use caravan_rpc::method::{self as m, METHODS};
use caravan_rpc::{ClientOptions, Dial, RpcClient, RpcError, ServerKeys};
use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::cluster::{AckRequest, DequeueRequest};

/// The ID of the client node [`InProcessAgent::start`] registers over RPC (as a remote client
/// agent would), which the node methods of [`sample_requests`] name.
pub const SAMPLE_NODE_ID: &str = "f0220000-0000-4000-8000-00000000f022";
/// The secret [`SAMPLE_NODE_ID`] registers with.
pub const SAMPLE_NODE_SECRET: &str = "f0220000-0000-4000-8000-00000000cafe";

/// The name of the temporary directory of an agent's log file starts with this.
const LOG_DIR_PREFIX: &str = "caravan-inproc-";

/// How long [`InProcessAgent::start`] waits for the agent to lead, bootstrap its ACLs and
/// register its nodes.
const START_WITHIN: Duration = Duration::from_secs(60);

/// Who a call comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A server of the region: it proves the server key derived from the agent's gossip key.
    Server,
    /// Anyone who reaches the RPC port: an encrypted connection without an identity.
    Anonymous,
}

/// A call's answer.
#[derive(Debug)]
pub enum Answer {
    /// A whole reply.
    Whole(Bytes),
    /// A streaming method's chunks, as they come (dropping it ends the call).
    Stream(mpsc::Receiver<Bytes>),
}

/// A dev-mode agent running in this process, reachable over its RPC port.
pub struct InProcessAgent {
    agent: Agent,
    addr: SocketAddr,
    server: RpcClient,
    anonymous: RpcClient,
    /// Its own pooled connection, so a health check is not queued behind fuzzed calls.
    health: RpcClient,
    management: String,
    node_id: String,
    /// The directory of the agent's log file, removed on drop.
    log_dir: Option<std::path::PathBuf>,
    /// Stops the RPC listener when dropped.
    _stop: watch::Sender<bool>,
}

impl InProcessAgent {
    /// Starts the agent (on the current Tokio runtime, which must be multi-threaded) and waits
    /// until it leads its one-server cluster, has bootstrapped ACLs, and its own client node
    /// and [`SAMPLE_NODE_ID`] are registered.
    pub async fn start() -> Result<InProcessAgent, String> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| format!("no RPC listener: {e}"))?;
        let rpc_port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let config = config(rpc_port, free_port()?, free_port()?)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, rpc_port));
        let log_dir = config.log_file.as_ref().and_then(|f| {
            std::path::Path::new(&f.path)
                .parent()
                .map(|d| d.to_path_buf())
        });
        let hub = caravan_http::monitor::MonitorHub::new();
        // The process's logging (the first agent's hub gets the lines): errors on stdout.
        let level = crate::logging::init(LogLevel::Error, false, config.log_file.clone(), &hub)?;
        let keyring = crate::keyring::ServerKeyring::load(&config)?.map(Arc::new);
        let keys: ServerKeys = keyring
            .as_ref()
            .map(|k| k.rpc_keys().clone())
            .ok_or("the agent has no server keys")?;
        let trust = crate::rpc::trust(&config, None, Some(&keys))?;
        let agent = Agent::start(
            config,
            hub,
            crate::cli::AgentArgs::default(),
            level,
            None,
            caravan_http::metrics::MetricsSink::new(),
            keyring,
        )
        .await?;
        let (stop, stopped) = watch::channel(false);
        let server = caravan_rpc::Server::new(
            trust,
            Arc::new(agent.rpc_handler()),
            caravan_rpc::ServerOptions::default(),
        );
        tokio::spawn(server.serve(listener, stopped));
        agent.spawn_duties();
        let dial = || Dial::with_server_keys(keys.clone());
        let mut me = InProcessAgent {
            agent,
            addr,
            server: RpcClient::new(dial(), ClientOptions::default()),
            anonymous: RpcClient::new(Dial::anonymous(), ClientOptions::default()),
            health: RpcClient::new(dial(), ClientOptions::default()),
            management: String::new(),
            node_id: String::new(),
            log_dir,
            _stop: stop,
        };
        tokio::time::timeout(START_WITHIN, me.settle())
            .await
            .map_err(|_| format!("the agent was not ready within {START_WITHIN:?}"))??;
        Ok(me)
    }

    /// Waits for leadership, bootstraps ACLs, registers the sample node and waits for the
    /// agent's own node.
    async fn settle(&mut self) -> Result<(), String> {
        let server = self.agent.server_role().ok_or("the agent runs no server")?;
        while !server.is_leader() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bootstrap = self.http("PUT", "/v1/acl/bootstrap", None).await?;
        self.management = bootstrap
            .get("SecretID")
            .and_then(|s| s.as_str())
            .ok_or("the ACL bootstrap answered no SecretID")?
            .to_string();
        let register = json(&RegisterRequest {
            node: sample_node(),
        });
        let within = Duration::from_secs(10);
        self.call(Caller::Anonymous, m::NODE_REGISTER, None, register, within)
            .await
            .map_err(|e| format!("the sample node did not register: {e}"))?;
        // The agent's own node is the other one.
        loop {
            let token = Some(self.management.clone());
            let nodes = self.http("GET", "/v1/nodes", token.as_deref()).await?;
            let own = nodes.as_array().and_then(|list| {
                list.iter()
                    .filter_map(|n| n.get("ID").and_then(|i| i.as_str()))
                    .find(|id| *id != SAMPLE_NODE_ID)
                    .map(str::to_string)
            });
            if let Some(own) = own {
                self.node_id = own;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One request through the agent's HTTP application (for setting up), its JSON answer.
    async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        use http_body_util::BodyExt;
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("X-Nomad-Token", token);
        }
        let request = request
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = self.agent.app().handle(request).await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// Calls `method` over the agent's RPC port as `caller`, with the user's `token` and
    /// `body`, within `within` (for a streaming method: until it is accepted). A method the
    /// table does not know is called as a whole-reply one (the server refuses it).
    pub async fn call(
        &self,
        caller: Caller,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
        within: Duration,
    ) -> Result<Answer, RpcError> {
        let client = match caller {
            Caller::Server => &self.server,
            Caller::Anonymous => &self.anonymous,
        };
        let streaming = m::lookup(method).is_some_and(|spec| spec.streaming);
        if streaming {
            let rx = client
                .stream(self.addr, method, token, body, within)
                .await?;
            Ok(Answer::Stream(rx))
        } else {
            let reply = client
                .call_within(self.addr, method, token, body, within)
                .await?;
            Ok(Answer::Whole(reply))
        }
    }

    /// Whether the agent still serves: `Status.Ping` over a connection of its own, answered
    /// with this server's ID within `within`.
    pub async fn health(&self, within: Duration) -> Result<(), String> {
        let reply = self
            .health
            .call_within(self.addr, m::PING, None, b"null".to_vec(), within)
            .await
            .map_err(|e| format!("Status.Ping: {e}"))?;
        let pong: crate::rpc::Pong =
            serde_json::from_slice(&reply).map_err(|e| format!("Status.Ping answered {e}"))?;
        match (pong.server_id, self.agent.server_role()) {
            (Some(id), Some(server)) if id == server.id() => Ok(()),
            (other, _) => Err(format!("Status.Ping answered server ID {other:?}")),
        }
    }

    /// The RPC address.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The management token's secret (from the ACL bootstrap).
    pub fn management_token(&self) -> &str {
        &self.management
    }

    /// The agent's own client node's ID (random per start, as in dev mode).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        // Only the directory `config` made.
        let ours = |d: &std::path::Path| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(LOG_DIR_PREFIX))
        };
        if let Some(dir) = self.log_dir.as_deref().filter(|d| ours(d)) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The dev-mode configuration with ACLs on, a fresh gossip key, these ports on 127.0.0.1, and
/// a log file in the temporary directory (for `Agent.MonitorExport`).
fn config(rpc: u16, serf: u16, http: u16) -> Result<AgentConfig, String> {
    use base64::Engine;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(a.as_bytes());
    key[16..].copy_from_slice(b.as_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let log_file = std::env::temp_dir()
        .join(format!("{LOG_DIR_PREFIX}{}-{rpc}", std::process::id()))
        .join("caravan.log");
    let mut tree = dev_defaults().tree;
    let ours = serde_json::json!({
        "bind_addr": "127.0.0.1",
        "ports": {"http": http, "rpc": rpc, "serf": serf},
        "acl": {"enabled": true},
        "server": {"encrypt": key},
        "log_file": log_file.to_string_lossy(),
    });
    merge_trees(&mut tree, ours);
    let file = tree_to_file(&tree).map_err(|e| e.to_string())?;
    let host = HostFacts::loopback("caravan-inproc", 2);
    AgentConfig::resolve(file, true, &host, Vec::new()).map_err(|e| e.to_string())
}

/// A port free on 127.0.0.1 now (for the listeners the agent binds itself).
fn free_port() -> Result<u16, String> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("no free port: {e}"))?;
    let udp = socket.local_addr().map_err(|e| e.to_string())?.port();
    // The same number must be free for TCP too (gossip binds both).
    match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, udp)) {
        Ok(_) => Ok(udp),
        Err(_) => free_port(),
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The node [`SAMPLE_NODE_ID`] registers.
fn sample_node() -> caravan_agent_core::jobs::Node {
    let mut node = caravan_client::fingerprint::node(SAMPLE_NODE_ID, "dc1");
    node.name = "sample-node".into();
    node.secret_id = SAMPLE_NODE_SECRET.into();
    node
}

/// One valid request body of every method of [`METHODS`] (in its order), encoded as the
/// agent's own callers encode it: JSON for the agent's methods, postcard for Raft's, and
/// `HTTP.Forward`'s own framing. The `ClientAgent.*` requests are for the client node
/// `client_node` (an in-process agent's [`InProcessAgent::node_id`]); the node methods name
/// [`SAMPLE_NODE_ID`]. Raft messages come from node 4242 at term 0 (a peer that is behind:
/// they are answered and refused, and leave the leader in place).
pub fn sample_requests(client_node: &str) -> Vec<(&'static str, Vec<u8>)> {
    METHODS
        .iter()
        .filter_map(|spec| Some((spec.name, sample(spec.name, client_node)?)))
        .collect()
}

/// The sample of `method`; `None` for a method this does not know (a test fails on it).
fn sample(method: &str, client_node: &str) -> Option<Vec<u8>> {
    let node = || SAMPLE_NODE_ID.to_string();
    let secret = || SAMPLE_NODE_SECRET.to_string();
    let for_node = |request: serde_json::Value| {
        json(&ForNode {
            node_id: client_node.to_string(),
            request,
            forwarded: false,
        })
    };
    let to_value = |v: serde_json::Result<serde_json::Value>| v.unwrap_or_default();
    let profile = ProfileRequest::new("cmdline", 1, 0, 0).ok();
    let monitor = MonitorRequest {
        log_level: "debug".into(),
        log_json: false,
        plain: true,
        include_location: false,
    };
    let export = ExportRequest {
        on_disk: true,
        follow: false,
        plain: true,
        logs_since: caravan_agent_core::debug::DEFAULT_LOGS_SINCE,
        service_name: String::new(),
    };
    let body = match method {
        m::PING
        | m::LEADER
        | m::PEERS
        | m::RAFT_STATS
        | m::MEMBERS
        | m::HOST
        | m::RESOLVE_TOKEN => json(&()),
        m::PROFILE => json(&profile),
        m::MONITOR => json(&monitor),
        m::MONITOR_EXPORT => json(&export),
        m::NODE_REGISTER => json(&RegisterRequest {
            node: sample_node(),
        }),
        m::NODE_UPDATE_STATUS => json(&UpdateStatusRequest {
            node_id: node(),
            secret_id: secret(),
            status: "ready".into(),
            forwarded: false,
        }),
        m::NODE_GET_CLIENT_ALLOCS => json(&ClientAllocsRequest {
            node_id: node(),
            secret_id: secret(),
            min_index: 0,
            wait_ms: 10,
        }),
        m::NODE_UPDATE_ALLOC => json(&AllocUpdateRequest {
            node_id: node(),
            secret_id: secret(),
            updates: Default::default(),
        }),
        m::NODE_HAS_CONN => json(&HasConnRequest { node_id: node() }),
        m::NODE_HEARTBEATS => json(&()),
        m::CLIENT_HOST => for_node(serde_json::Value::Null),
        m::CLIENT_PROFILE => for_node(to_value(serde_json::to_value(&profile))),
        m::CLIENT_MONITOR => for_node(to_value(serde_json::to_value(&monitor))),
        m::CLIENT_MONITOR_EXPORT => for_node(to_value(serde_json::to_value(&export))),
        m::HTTP_FORWARD => ForwardedRequest {
            method: "GET".into(),
            path_and_query: "/v1/jobs".into(),
            content_type: None,
            hops: 0,
        }
        .encode(&[])
        .unwrap_or_default(),
        m::KEYRING_OPERATION => json(&KeyringOp::List),
        m::EVAL_DEQUEUE => json(&DequeueRequest {
            types: vec!["service".into()],
            timeout_ms: 10,
        }),
        m::EVAL_ACK | m::EVAL_NACK => json(&AckRequest {
            eval_id: uuid::Uuid::nil().to_string(),
            token: 1,
        }),
        m::RAFT_APPEND | m::RAFT_VOTE | m::RAFT_SNAPSHOT | m::RAFT_APPLY | m::RAFT_READ_INDEX => {
            raft_sample(method)
        }
        _ => return None,
    };
    Some(body)
}

/// A Raft message from node 4242 at term 0.
fn raft_sample(method: &str) -> Vec<u8> {
    use caravan_raft::{TypeConfig, codec};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{SnapshotMeta, StoredMembership, Vote};
    let vote = Vote::new_committed(0, 4242);
    match method {
        m::RAFT_VOTE => codec::encode(&VoteRequest::<u64>::new(Vote::new(0, 4242), None)),
        m::RAFT_APPEND => codec::encode(&AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
        m::RAFT_SNAPSHOT => codec::encode(&InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: "0-0-sample".into(),
            },
            offset: 0,
            data: Vec::new(),
            done: false,
        }),
        m::RAFT_APPLY => {
            caravan_cluster::command::encode(&caravan_cluster::Command::NodeRegister {
                node: sample_node(),
                seed: 1,
            })
            .map_err(|e| e.to_string())
        }
        _ => Ok(Vec::new()),
    }
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a sample's call must not be: refused as malformed, unknown, too large or (called
    /// with the management token, as a server) forbidden.
    fn check(method: &str, result: &Result<Answer, RpcError>) {
        if let Err(RpcError::Remote { code, message }) = result {
            assert!(
                ![400, 403, 404, 413].contains(code),
                "{method}: refused {code}: {message}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_method_of_the_table_takes_its_sample_through_the_real_router() {
        let agent = InProcessAgent::start().await.unwrap();
        let node = agent.node_id().to_string();
        let samples = sample_requests(&node);
        let named: Vec<&str> = samples.iter().map(|(name, _)| *name).collect();
        let table: Vec<&str> = METHODS.iter().map(|spec| spec.name).collect();
        assert_eq!(named, table, "a method of the table has no sample");
        let token = agent.management_token().to_string();
        for (method, body) in samples {
            let within = Duration::from_secs(20);
            let result = agent
                .call(Caller::Server, method, Some(&token), body, within)
                .await;
            check(method, &result);
            agent.health(within).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_router_refuses_what_the_table_forbids() {
        let agent = InProcessAgent::start().await.unwrap();
        let within = Duration::from_secs(20);
        let code = |r: Result<Answer, RpcError>| match r {
            Err(RpcError::Remote { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // Unknown method; a server method from an anonymous caller; a user method without a
        // token under ACLs; bodies that do not decode.
        let body = || b"null".to_vec();
        let calls = [
            (Caller::Server, "Nope.Nothing", None, body(), 404),
            (Caller::Anonymous, m::RAFT_STATS, None, body(), 403),
            (Caller::Anonymous, m::MEMBERS, None, body(), 403),
            (
                Caller::Server,
                m::NODE_UPDATE_STATUS,
                None,
                b"{".to_vec(),
                400,
            ),
            // A Raft message a server sends that does not decode or breaks Raft's bounds is
            // the caller's fault: 400, not 500 (found by the rpc_methods fuzz target).
            (Caller::Server, m::RAFT_READ_INDEX, None, b"x".to_vec(), 400),
            (Caller::Server, m::RAFT_VOTE, None, b"\xff".to_vec(), 400),
        ];
        for (caller, method, token, body, expected) in calls {
            let got = code(agent.call(caller, method, token, body, within).await);
            assert_eq!(got, expected, "{method} as {caller:?}");
        }
        agent.health(within).await.unwrap();
    }
}
