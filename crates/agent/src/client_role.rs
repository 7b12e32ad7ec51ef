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
    node_id: Option<String>,
    servers: RwLock<server_list::ServerList>,
    rpc: Arc<Rpc>,
    /// Token resolutions asked of a server (servers read the replicated ACL state).
    tokens: Mutex<TokenCache>,
    /// Remote token resolutions in flight, at most [`MAX_REMOTE_RESOLUTIONS`].
    resolving: tokio::sync::Semaphore,
    runtime: tokio::runtime::Handle,
}

impl ClientRole {
    /// The client side of an agent configured by `config`, with node ID `node_id` when it runs
    /// a client. Its servers are `client.servers` (unresolvable ones are logged and skipped),
    /// plus its own RPC address when it also runs a server.
    pub async fn new(config: &AgentConfig, node_id: Option<String>, rpc: Arc<Rpc>) -> ClientRole {
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
        ClientRole {
            node_id,
            servers: RwLock::new(server_list::ServerList::new(initial)),
            rpc,
            tokens: Mutex::new(TokenCache::default()),
            resolving: tokio::sync::Semaphore::new(MAX_REMOTE_RESOLUTIONS),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The client's node ID, when this agent runs a client.
    pub fn node_id(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    /// The client's health: it needs a server to talk to.
    pub fn health(&self) -> Result<(), String> {
        if self.servers.read().is_empty() {
            Err("no known servers".into())
        } else {
            Ok(())
        }
    }

    /// Asks the first server that answers, for the user holding `token`. A server's refusal is
    /// final; only unreachable servers make it try the next.
    pub async fn ask_a_server<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        token: Option<&str>,
    ) -> Result<T, String> {
        let servers = self.servers.read().servers().to_vec();
        let mut last = "No known servers".to_string();
        for server in servers {
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
        self.servers.read().addresses()
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

/// This machine as a client node: CPU in MHz (cores × frequency) and memory from sysinfo.
pub fn local_node(config: &AgentConfig, id: &str) -> Node {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let (mhz, memory_bytes) = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_cpu_all();
            sys.refresh_memory();
            let mhz: u64 = sys.cpus().iter().map(|c| c.frequency()).sum();
            (mhz, sys.total_memory())
        }
        Err(e) => {
            tracing::warn!(target: "client", error = %e, "cannot read CPU and memory; assuming 1 GiB");
            (0, 1 << 30)
        }
    };
    let cpu = if mhz == 0 { cores * 2000 } else { mhz };
    Node {
        id: id.to_string(),
        name: config.node_name.clone(),
        datacenter: config.datacenter.clone(),
        node_class: config.client.node_class.clone(),
        meta: config.client.meta.clone(),
        cpu,
        memory_mb: memory_bytes >> 20,
        status: "ready".into(),
        down_since: None,
        create_index: 0,
        modify_index: 0,
    }
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
