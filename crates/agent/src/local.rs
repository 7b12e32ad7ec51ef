//! What this agent process is, whatever its roles: its configuration, build, log fan-out and
//! runtime. It answers [`Debugging`] (host data, profiles and the monitor are this process's).

use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::member::BuildInfo;
use caravan_http::Debugging;
use caravan_http::api::{ExportRequest, ProfileRequest};
use caravan_http::dto::HostData;
use caravan_http::monitor::MonitorHub;

/// The facts of this agent process every role shares.
pub struct Local {
    /// The running configuration.
    pub config: AgentConfig,
    /// This build's version facts.
    pub build: BuildInfo,
    /// The log fan-out `/v1/agent/monitor` subscribes to.
    pub hub: MonitorHub,
    /// The runtime, for synchronous callers and its statistics.
    pub runtime: tokio::runtime::Handle,
}

impl Local {
    /// This process, on the current runtime.
    pub fn new(config: AgentConfig, hub: MonitorHub) -> Local {
        Local {
            config,
            build: build_info(),
            hub,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// This build's version facts.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        revision: env!("CARAVAN_REVISION").to_string(),
    }
}

/// CPUs of this machine.
pub fn num_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

impl Debugging for Local {
    async fn host_data(&self) -> Result<HostData, String> {
        tokio::task::spawn_blocking(crate::host::gather)
            .await
            .map_err(|e| format!("failed to gather host data: {e}"))
    }

    async fn profile(&self, request: ProfileRequest) -> Result<Vec<u8>, caravan_http::ApiError> {
        crate::profiles::collect(request, &self.hub).await
    }

    fn monitor_hub(&self) -> &MonitorHub {
        &self.hub
    }

    async fn export_logs(
        &self,
        request: ExportRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, caravan_http::ApiError> {
        crate::logfile::export(self.config.log_file.as_ref(), &request)
    }
}
