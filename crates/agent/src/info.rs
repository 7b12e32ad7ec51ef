//! [`AgentInfo`] for the agent: who it is and how it is doing, from whichever roles it runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::member::Member;
use caravan_http::AgentInfo;
use caravan_http::api::Stats;
use caravan_http::dto::VersionDto;

use crate::client_role::ClientRole;
use crate::local::Local;
use crate::server::ServerRole;

/// The agent's facts and health: the process, its server role when it runs one, and its client
/// role.
pub struct Info {
    /// This process.
    pub local: Arc<Local>,
    /// The server role, on servers.
    pub server: Option<Arc<ServerRole>>,
    /// The client role.
    pub client: Arc<ClientRole>,
}

impl Info {
    fn runtime_stats(&self) -> BTreeMap<String, String> {
        let metrics = self.local.runtime.metrics();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        BTreeMap::from([
            ("arch".into(), std::env::consts::ARCH.into()),
            ("cpu_count".into(), cpus.to_string()),
            ("goroutines".into(), metrics.num_alive_tasks().to_string()),
            ("kernel.name".into(), std::env::consts::OS.into()),
            ("max_procs".into(), metrics.num_workers().to_string()),
            ("version".into(), env!("CARAVAN_RUSTC_VERSION").into()),
        ])
    }
}

impl AgentInfo for Info {
    fn config(&self) -> &AgentConfig {
        &self.local.config
    }

    fn version(&self) -> VersionDto {
        let build = &self.local.build;
        VersionDto::release(&build.version, &build.revision)
    }

    fn member(&self) -> Member {
        self.server
            .as_ref()
            .map_or_else(Member::none, |s| s.member())
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::new();
        stats.insert("runtime".into(), self.runtime_stats());
        if let Some(client) = self.client.stats() {
            stats.insert("client".into(), client);
        }
        if let Some(server) = &self.server {
            server.add_stats(&mut stats);
        }
        stats
    }

    fn server_health(&self) -> Result<(), String> {
        match &self.server {
            Some(server) => server.health(),
            None => Err("no leader".into()),
        }
    }

    fn client_health(&self) -> Result<(), String> {
        self.client.health()
    }

    fn node_id(&self) -> Option<String> {
        self.client.node_id().map(String::from)
    }

    fn server_id(&self) -> Option<String> {
        self.server.as_ref().map(|s| s.id().to_string())
    }

    fn is_leader(&self) -> bool {
        self.server.as_ref().is_some_and(|s| s.is_leader())
    }
}
