//! The client role: how this agent reaches servers (its server list, `/v1/agent/servers`), the
//! token resolutions it asks of them when it runs no server (with their cache), and the client
//! node it is (its ID, and this machine as a [`Node`]). Every agent has one: a server-only agent
//! keeps a server list too.

use std::net::SocketAddr;
use std::sync::Arc;

use caravan_agent_core::acl::Acl;
use caravan_agent_core::config::{AgentConfig, parse_host_port};
use caravan_agent_core::jobs::Node;
use caravan_agent_core::server_list;
use caravan_agent_core::token_cache::TokenCache;
use caravan_client::NodeClient;
use caravan_http::multi_error;
use caravan_rpc::method as m;
use parking_lot::{Mutex, RwLock};

use crate::rpc::{PING_TIMEOUT, Rpc};

/// Default RPC port for server addresses given without one.
pub const DEFAULT_RPC_PORT: u16 = 4647;

/// Token resolutions a client-only agent asks of servers at once. Each one holds a runtime
/// worker (`resolve_token` is synchronous), so they are few: a flood of unknown tokens is
/// refused beyond this instead of taking every thread of the runtime.
pub const MAX_REMOTE_RESOLUTIONS: usize = 8;

/// The client side of an agent.
pub struct ClientRole {
    /// The client node, when this agent runs a client: it owns the server list then.
    node: Option<Arc<NodeClient>>,
    /// The server list of an agent that runs no client.
    servers: RwLock<server_list::ServerList>,
    rpc: Arc<Rpc>,
    /// Token resolutions asked of a server (servers read the replicated ACL state).
    tokens: Mutex<TokenCache>,
    /// Remote token resolutions in flight, at most [`MAX_REMOTE_RESOLUTIONS`].
    resolving: tokio::sync::Semaphore,
    runtime: tokio::runtime::Handle,
}

impl ClientRole {
    /// The client side of an agent configured by `config`, with its node's ID and secret when
    /// it runs a client. Its servers are `client.servers` (unresolvable ones are logged and
    /// skipped), plus its own RPC address when it also runs a server.
    pub async fn new(
        config: &AgentConfig,
        node: Option<(String, String)>,
        rpc: Arc<Rpc>,
    ) -> ClientRole {
        let mut initial = Vec::new();
        for text in &config.client.servers {
            match resolve(text).await {
                Ok(addrs) => initial.extend(addrs),
                Err(e) => {
                    tracing::warn!(target: "client", server = %text, error = %e, "ignoring server address")
                }
            }
        }
        if config.client.enabled && config.server.enabled {
            initial.push(config.advertise.rpc);
        }
        let node = node.map(|(id, secret)| {
            let node = local_node(config, &id, secret);
            NodeClient::new(node, rpc.client().clone(), initial.clone())
        });
        ClientRole {
            node,
            servers: RwLock::new(server_list::ServerList::new(initial)),
            rpc,
            tokens: Mutex::new(TokenCache::default()),
            resolving: tokio::sync::Semaphore::new(MAX_REMOTE_RESOLUTIONS),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The client's node ID, when this agent runs a client.
    pub fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.node_id())
    }

    /// Registers the node and keeps it alive until `shutdown` (agents that run a client).
    pub fn spawn(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        if let Some(node) = &self.node {
            tokio::spawn(node.clone().run(shutdown));
        }
    }

    /// The servers known now.
    fn server_addrs(&self) -> Vec<SocketAddr> {
        match &self.node {
            // The server the node talks to first: what the agent asks goes where its
            // heartbeats go.
            Some(node) => node.servers_in_order(),
            None => self.servers.read().servers().to_vec(),
        }
    }

    /// The client's health: it needs a server to talk to.
    pub fn health(&self) -> Result<(), String> {
        if self.server_addrs().is_empty() {
            Err("no known servers".into())
        } else {
            Ok(())
        }
    }

    /// `stats.client` (spec §1): the node, its servers, allocations and heartbeats.
    pub fn stats(&self) -> Option<std::collections::BTreeMap<String, String>> {
        use caravan_agent_core::duration::format_go_duration;
        let node = self.node.as_ref()?;
        let status = node.status();
        let servers: Vec<String> = self.server_addrs().iter().map(|a| a.to_string()).collect();
        let since = status
            .last_heartbeat
            .map(|t| format_go_duration(t.elapsed()))
            .unwrap_or_else(|| "0s".into());
        Some(std::collections::BTreeMap::from([
            ("node_id".into(), node.node_id().to_string()),
            ("known_servers".into(), servers.join(",")),
            ("num_allocations".into(), status.num_allocations.to_string()),
            ("last_heartbeat".into(), since),
            (
                "heartbeat_ttl".into(),
                format_go_duration(status.heartbeat_ttl),
            ),
        ]))
    }

    /// Calls `method` with a raw `body` at the first server that answers, for the user holding
    /// `token`; a 404's code is kept (`RPC Error:: 404,…`). A server's refusal is final.
    pub async fn call_a_server(
        &self,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<bytes::Bytes, String> {
        let client = self.rpc.client();
        self.first_server(|server| client.call_within(server, method, token, body.clone(), timeout))
            .await
    }

    /// Starts a streaming `method` at the first server that answers.
    pub async fn stream_from_a_server(
        &self,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, String> {
        let client = self.rpc.client();
        self.first_server(|server| client.stream(server, method, token, body.clone(), PING_TIMEOUT))
            .await
    }

    /// The first answer of `attempt` over the known servers in turn: only a server that could
    /// not be reached makes it try the next; a refusal is final.
    async fn first_server<T, F, Fut>(&self, mut attempt: F) -> Result<T, String>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: std::future::Future<Output = Result<T, caravan_rpc::RpcError>>,
    {
        let mut last = "No known servers".to_string();
        for server in self.server_addrs() {
            match attempt(server).await {
                Ok(v) => return Ok(v),
                Err(e @ caravan_rpc::RpcError::Remote { .. }) => {
                    return Err(crate::rpc::coded_text(&e));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// Asks the first server that answers, for the user holding `token`. A server's refusal is
    /// final; only unreachable servers make it try the next.
    pub async fn ask_a_server<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        token: Option<&str>,
    ) -> Result<T, String> {
        let mut last = "No known servers".to_string();
        for server in self.server_addrs() {
            match self
                .rpc
                .call::<T>(server, method, token, &(), PING_TIMEOUT)
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Resolves a token through the servers (`ACL.ResolveToken`), as an agent without a server
    /// does, with answers cached (resolutions 30 s, denials 5 s, both bounded in number).
    pub fn resolve_remotely(&self, token: Option<&str>) -> Result<Acl, String> {
        let secret = token.unwrap_or("");
        let now = std::time::Instant::now();
        if let Some(known) = self.tokens.lock().get(secret, now) {
            return known;
        }
        let Ok(_permit) = self.resolving.try_acquire() else {
            return Err("too many token resolutions in flight; try again".into());
        };
        let ask = self.ask_a_server::<Acl>(m::RESOLVE_TOKEN, token);
        let answer = tokio::task::block_in_place(|| self.runtime.block_on(ask));
        match answer {
            Ok(acl) => {
                self.tokens.lock().put(secret, Ok(acl.clone()), now);
                Ok(acl)
            }
            Err(reason)
                if reason.starts_with("Permission denied")
                    || reason.starts_with("failed to parse") =>
            {
                self.tokens.lock().put(secret, Err(reason.clone()), now);
                Err(reason)
            }
            Err(reason) => Err(format!(
                "failed to resolve the token through a server: {reason}"
            )),
        }
    }

    /// Pings `text`'s addresses and returns the first that answers, or the error naming it.
    async fn reachable(rpc: Arc<Rpc>, text: String) -> Result<SocketAddr, String> {
        let shown = with_default_port(&text);
        let addrs = resolve(&text)
            .await
            .map_err(|e| format!("Server at address {shown} failed ping: {e}"))?;
        let mut last_err = String::new();
        for addr in addrs {
            match rpc.ping(addr, PING_TIMEOUT).await {
                Ok(_) => return Ok(addr),
                Err(e) => last_err = e,
            }
        }
        Err(format!("Server at address {shown} failed ping: {last_err}"))
    }
}

impl caravan_http::ServerList for ClientRole {
    fn servers(&self) -> Vec<String> {
        let mut servers: Vec<String> = self.server_addrs().iter().map(|a| a.to_string()).collect();
        servers.sort();
        servers
    }

    async fn set_servers(&self, addresses: Vec<String>) -> Result<(), String> {
        let checks = addresses
            .into_iter()
            .map(|text| ClientRole::reachable(self.rpc.clone(), text));
        let results = futures_join_all(checks).await;
        let (mut good, mut errors) = (Vec::new(), Vec::new());
        for result in results {
            match result {
                Ok(addr) => good.push(addr),
                Err(e) => errors.push(e),
            }
        }
        for e in &errors {
            tracing::warn!(target: "client", error = %e, "dropping unreachable server");
        }
        if good.is_empty() {
            return Err(multi_error(&errors));
        }
        if let Some(node) = &self.node {
            node.set_servers(good.clone());
        }
        self.servers.write().replace(good);
        Ok(())
    }
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut count = 0;
    for (i, f) in futures.enumerate() {
        set.spawn(async move { (i, f.await) });
        count += 1;
    }
    let mut out: Vec<Option<F::Output>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, value)) = joined {
            out[i] = Some(value);
        }
    }
    out.into_iter().flatten().collect()
}

/// Resolves `host[:port]` (port defaulting to 4647; bare IPv6 accepted).
pub async fn resolve(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = parse_host_port(text, DEFAULT_RPC_PORT) {
        return Ok(vec![addr]);
    }
    let with_port = if text.contains(':') {
        text.to_string()
    } else {
        format!("{text}:{DEFAULT_RPC_PORT}")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(with_port)
        .await
        .map_err(|e| format!("failed to resolve {text:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("failed to resolve {text:?}: no addresses"));
    }
    Ok(addrs)
}

/// A server address as Nomad names it in errors: with the default RPC port when none was given
/// (`127.0.0.1` → `127.0.0.1:4647`, `::1` → `[::1]:4647`, `host` → `host:4647`).
fn with_default_port(text: &str) -> String {
    if let Ok(addr) = parse_host_port(text, DEFAULT_RPC_PORT) {
        return addr.to_string();
    }
    if text.contains(':') {
        text.to_string()
    } else {
        format!("{text}:{DEFAULT_RPC_PORT}")
    }
}

/// This machine as client node `id` with `secret`, named and classed by `config`.
pub fn local_node(config: &AgentConfig, id: &str, secret: String) -> Node {
    let mut node = caravan_client::fingerprint::node(id, &config.datacenter);
    node.name = config.node_name.clone();
    node.node_class = config.client.node_class.clone();
    node.meta = config.client.meta.clone();
    node.secret_id = secret;
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_named_with_the_default_port() {
        for (given, shown) in [
            ("127.0.0.1", "127.0.0.1:4647"),
            ("127.0.0.1:4000", "127.0.0.1:4000"),
            ("::1", "[::1]:4647"),
            ("host", "host:4647"),
            ("host:4000", "host:4000"),
        ] {
            assert_eq!(with_default_port(given), shown, "{given}");
        }
    }
}
