//! The agent's side of [`caravan_rpc`]: which identity this agent dials with and trusts
//! ([`dial`], [`trust`], refusing an unprotected cluster with ACLs at start), JSON calls over
//! the pooled client ([`Rpc`]), and the JSON helpers of the handlers (`crate::handler`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use caravan_agent_core::config::AgentConfig;
use caravan_rpc::method as m;
use std::sync::OnceLock;

use caravan_rpc::{
    BoxFuture, Call, Dial, Handler, Refusal, Reply, RpcClient, RpcError, ServerKeys, Trust,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// The environment variable that lets a server with ACLs run a multi-server cluster with
/// neither `encrypt` nor `tls.rpc` (every RPC caller is then trusted as a server).
pub const INSECURE_ENV: &str = "CARAVAN_INSECURE_RPC";

/// How long one server ping (or one short call asking a server) may take.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// How this agent proves itself when it calls others: its TLS certificate, else (servers) the
/// key derived from the gossip key, else nothing (encrypted, anonymous).
/// `keys` are a server's keys derived from its gossip keyring ([`crate::keyring`]).
pub fn dial(
    config: &AgentConfig,
    live: Option<&Arc<crate::tls::LiveTls>>,
    keys: Option<&ServerKeys>,
) -> Result<Dial, String> {
    if let (true, Some(live)) = (config.tls.rpc, live) {
        let tls = crate::tls::rpc_client(live, &config.region)?;
        return Ok(Dial::with_tls(tls.config, tls.server_name));
    }
    match keys {
        Some(keys) => Ok(Dial::with_server_keys(keys.clone())),
        None => Ok(Dial::anonymous()),
    }
}

/// Whether a server expects other servers (so it needs to trust some RPC callers as servers).
fn expects_peers(config: &AgentConfig) -> bool {
    let s = &config.server;
    s.bootstrap_expect > 1 || !s.start_join.is_empty() || !s.server_join.retry_join.is_empty()
}

/// How this agent's RPC listener decides who its callers are. A server with ACLs that expects
/// peers but has neither TLS nor a gossip key is refused (unless [`INSECURE_ENV`] is `1`).
pub fn trust(
    config: &AgentConfig,
    live: Option<&Arc<crate::tls::LiveTls>>,
    keys: Option<&ServerKeys>,
) -> Result<Trust, String> {
    let region = &config.region;
    if let (true, Some(live)) = (config.tls.rpc, live) {
        let tls = crate::tls::server_config(live, &[], true)?;
        return Ok(Trust::with_tls(region, tls));
    }
    if let Some(keys) = keys {
        return Ok(Trust::with_server_keys(region, keys.clone()));
    }
    if !config.server.enabled {
        return Ok(Trust::anonymous(region));
    }
    let insecure = std::env::var(INSECURE_ENV).is_ok_and(|v| v == "1");
    if config.acl_enabled && expects_peers(config) && !insecure {
        return Err(format!(
            "a server with ACLs enabled that joins other servers needs `encrypt` (server {{ encrypt = \"...\" }}) or `tls {{ rpc = true }}` to authenticate them; without either, anyone who reaches the RPC port could write to Raft ({INSECURE_ENV}=1 overrides)"
        ));
    }
    if config.acl_enabled && !insecure {
        tracing::warn!(target: "rpc", "no `encrypt` key and no `tls.rpc`: server-only RPC is refused to every caller (fine for a single server)");
        return Ok(Trust::anonymous(region));
    }
    tracing::warn!(target: "rpc", "no `encrypt` key and no `tls.rpc`: every RPC caller is trusted as a server; set `encrypt` or `tls.rpc` to protect the cluster");
    Ok(Trust::open(region))
}

/// Whether this agent can tell a real server from anyone else over RPC: it dials with TLS or
/// the server key, or it runs without ACLs (an open cluster, by choice), or the operator set
/// [`INSECURE_ENV`]. Without that, no gossip claim may change Raft membership and no user's
/// token is forwarded to another server.
pub fn confirms_servers(config: &AgentConfig, keyring: bool) -> bool {
    config.tls.rpc
        || (config.server.enabled && keyring)
        || !config.acl_enabled
        || std::env::var(INSECURE_ENV).is_ok_and(|v| v == "1")
}

/// JSON calls over the pooled RPC client; errors are texts for the HTTP layer.
pub struct Rpc {
    client: Arc<RpcClient>,
    confirms_servers: bool,
    calls_back: Arc<CallsBack>,
}

impl Rpc {
    /// A client proving what `dial` says; `confirms_servers` as [`confirms_servers`] decided.
    /// Calls the peers make back over its connections are refused until
    /// [`Rpc::serve_calls_back`] names their handler.
    pub fn new(dial: Dial, confirms_servers: bool) -> Rpc {
        let calls_back = Arc::new(CallsBack::default());
        let client = RpcClient::new(dial, Default::default()).serving(calls_back.clone());
        Rpc {
            client: Arc::new(client),
            confirms_servers,
            calls_back,
        }
    }

    /// Serves the calls peers make back over the connections this agent opened (a server
    /// reaching this client agent) with `handler`. Only the first handler given counts.
    pub fn serve_calls_back(&self, handler: Arc<dyn Handler>) {
        let _ = self.calls_back.0.set(handler);
    }

    /// The pooled RPC client.
    pub fn client(&self) -> &Arc<RpcClient> {
        &self.client
    }

    /// Whether an answer over this client proves a server (see [`confirms_servers`]).
    pub fn confirms_servers(&self) -> bool {
        self.confirms_servers
    }

    /// Calls `method` at `addr` with `request` as JSON (and the user's `token`), decoding the
    /// JSON reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, String> {
        let reply = self
            .raw(addr, method, token, json(request)?, timeout)
            .await?;
        serde_json::from_slice(&reply).map_err(|e| format!("rpc error: bad reply: {e}"))
    }

    /// Calls `method` with a raw body and returns the raw reply.
    pub async fn raw(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        self.client
            .call_within(addr, method, token, body, timeout)
            .await
            .map_err(|e| text(&e))
    }

    /// Starts a streaming call.
    pub async fn stream(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<Bytes>, String> {
        self.client
            .stream(addr, method, token, json(request)?, timeout)
            .await
            .map_err(|e| text(&e))
    }

    /// Starts a streaming call whose refusal keeps the callee's status: a `400 No nomad log
    /// file defined` at the target is a 400 here too.
    pub async fn stream_coded(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<Bytes>, caravan_http::ApiError> {
        use caravan_http::ApiError;
        let body = json(request).map_err(ApiError::from_message)?;
        match self.client.stream(addr, method, token, body, timeout).await {
            Ok(rx) => Ok(rx),
            Err(RpcError::Remote { code, message }) => Err(
                match http::StatusCode::from_u16(code)
                    .ok()
                    .filter(|c| !c.is_success())
                {
                    Some(status) => ApiError::new(status, message),
                    None => ApiError::from_message(message),
                },
            ),
            Err(other) => Err(ApiError::from_message(other.to_string())),
        }
    }

    /// Pings `addr`; returns the server ID it answers with (`None` from a client agent).
    pub async fn ping(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        let pong: Pong = self.call(addr, m::PING, None, &(), timeout).await?;
        Ok(pong.server_id)
    }
}

fn json(value: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("rpc error: {e}"))
}

/// An error for the HTTP layer: the remote side's own text when it answered, else ours.
fn text(e: &RpcError) -> String {
    match e {
        RpcError::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The handler of calls made back over this agent's connections, named once the agent is
/// built (the handler needs the RPC client first).
#[derive(Default)]
struct CallsBack(OnceLock<Arc<dyn Handler>>);

impl Handler for CallsBack {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        match self.0.get() {
            Some(handler) => handler.call(call),
            None => Box::pin(async { Err(Refusal::new(503, "rpc: the agent is starting")) }),
        }
    }
}

/// An RPC error for the HTTP layer, keeping a 4xx's code (`RPC Error:: <code>,<text>`, which
/// `ApiError::from_message` reads back), as Nomad's coded errors do.
pub fn coded_text(e: &RpcError) -> String {
    match e {
        RpcError::Remote { code, message } if (400..500).contains(code) => {
            format!("RPC Error:: {code},{message}")
        }
        other => text(other),
    }
}

/// `Status.Ping`'s answer: who answered (a server's ID proves it, over an authenticated
/// connection, to the leader confirming a new voter).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Pong {
    /// The server ID, on servers.
    pub server_id: Option<String>,
}

/// Decodes a JSON request body (400 with serde's text when it does not fit).
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::bad_request(format!("rpc: bad request: {e}")))
}

/// A JSON reply.
pub(crate) fn reply(value: &impl Serialize) -> Result<Reply, Refusal> {
    serde_json::to_vec(value)
        .map(Reply::Whole)
        .map_err(|e| Refusal::internal(e.to_string()))
}

/// The longest a forwarded request may take to answer its head (a blocking query waits at
/// most 10 minutes, a profile at most an hour).
pub const FORWARDED_HEAD_TIMEOUT: Duration = Duration::from_secs(65 * 60);

/// Reads the head an `HTTP.Forward` answer starts with; the rest of `rx` is the body.
pub async fn forwarded_head(
    rx: &mut mpsc::Receiver<Bytes>,
) -> Result<caravan_agent_core::client_rpc::ForwardedHead, String> {
    let first = tokio::time::timeout(FORWARDED_HEAD_TIMEOUT, rx.recv())
        .await
        .map_err(|_| "rpc error: the forwarded request did not answer in time".to_string())?
        .ok_or("rpc error: the forwarded request ended without an answer")?;
    serde_json::from_slice(&first).map_err(|e| format!("rpc error: bad forwarded answer: {e}"))
}
