//! Serving Nomad's `/v1/agent/*` wire format from another service: implement [`AgentApi`] over
//! your own state, wrap it in an [`App`], and serve it. This example answers one request on a free
//! port and shuts down.

use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
use caravan_agent_core::config::{AgentConfig, HostFacts, dev_defaults, tree_to_file};
use caravan_agent_core::member::Member;
use caravan_http::App;
use caravan_http::api::{
    AclWriteError, AgentApi, Indexed, JoinResult, ReadError, ReadOptions, StateAnswer, StateQuery,
    Stats,
};
use caravan_http::dto::{HostData, MembersResponse, VersionDto};
use caravan_http::monitor::MonitorHub;
use caravan_http::serve::{ServeOptions, serve_http1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct MyService {
    config: AgentConfig,
    hub: MonitorHub,
}

impl AgentApi for MyService {
    fn config(&self) -> &AgentConfig {
        &self.config
    }
    fn version(&self) -> VersionDto {
        VersionDto::release("1.0.0", "")
    }
    fn member(&self) -> Member {
        Member::none()
    }
    fn stats(&self) -> Stats {
        Stats::new()
    }
    fn server_health(&self) -> Result<(), String> {
        Ok(())
    }
    fn client_health(&self) -> Result<(), String> {
        Err("no known servers".into())
    }
    fn node_id(&self) -> Option<String> {
        None
    }
    fn server_id(&self) -> Option<String> {
        None
    }
    fn is_leader(&self) -> bool {
        true
    }
    async fn host_data(&self) -> Result<HostData, String> {
        Err("host data is not shared by this service".into())
    }
    fn servers(&self) -> Vec<String> {
        Vec::new()
    }
    async fn set_servers(&self, _addresses: Vec<String>) -> Result<(), String> {
        Err("this service keeps no server list".into())
    }

    async fn members(&self, _token: Option<&str>) -> Result<MembersResponse, String> {
        Ok(MembersResponse {
            server_name: "h".into(),
            server_region: "global".into(),
            server_dc: "dc1".into(),
            members: vec![],
        })
    }
    async fn join(&self, addresses: Vec<String>) -> JoinResult {
        JoinResult {
            joined: 0,
            errors: addresses
                .iter()
                .map(|a| format!("Failed to join {a}"))
                .collect(),
        }
    }
    async fn force_leave(&self, _name: String, _prune: bool) -> Result<(), String> {
        Ok(())
    }

    fn schedulers(&self) -> Option<Vec<caravan_agent_core::sched::WorkerInfo>> {
        None
    }
    fn scheduler_config(&self) -> Option<caravan_agent_core::sched::SchedulerConfig> {
        None
    }
    fn set_scheduler_config(
        &self,
        config: caravan_agent_core::sched::SchedulerConfig,
    ) -> caravan_agent_core::sched::SchedulerConfig {
        config
    }
    async fn register_job(
        &self,
        _job: caravan_agent_core::jobs::Job,
    ) -> Result<caravan_http::api::JobWriteResult, caravan_http::api::JobWriteError> {
        Err(caravan_http::api::JobWriteError::NoServer)
    }
    async fn deregister_job(
        &self,
        _id: &str,
    ) -> Result<Option<caravan_http::api::JobWriteResult>, caravan_http::api::JobWriteError> {
        Ok(None)
    }
    async fn status_leader(&self) -> Result<String, String> {
        Ok(String::new())
    }
    async fn status_peers(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    async fn read_state(
        &self,
        _query: StateQuery,
        _options: ReadOptions,
    ) -> Result<Indexed<StateAnswer>, ReadError> {
        Err(ReadError::NoServer)
    }
    fn num_cpus(&self) -> u32 {
        2
    }
    fn monitor_hub(&self) -> &MonitorHub {
        &self.hub
    }
    async fn profile(
        &self,
        request: caravan_http::api::ProfileRequest,
    ) -> Result<Vec<u8>, caravan_http::ApiError> {
        Ok(request.name.into_bytes())
    }
    fn resolve_token(&self, _token: Option<&str>) -> Result<Acl, String> {
        Err("Permission denied".into())
    }
    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        read(&AclState::default())
    }
    async fn acl_write(&self, _write: AclWrite) -> Result<Option<Token>, AclWriteError> {
        Err(AclWriteError::Unavailable(
            "this service keeps no ACL state".into(),
        ))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = HostFacts {
        hostname: "embedded".into(),
        num_cpus: 1,
        private_ip: "127.0.0.1".parse()?,
    };
    let config = AgentConfig::resolve(tree_to_file(&dev_defaults().tree)?, true, &host, vec![])?;
    let app = App::new(MyService {
        config,
        hub: MonitorHub::new(),
    })
    .map_err(|e| e.message)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_http1(listener, app, ServeOptions::default(), stopped));

    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET /v1/agent/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await?;
    println!("{}", reply.lines().next().unwrap_or_default());
    println!("{}", reply.lines().last().unwrap_or_default());

    stop.send(true)?;
    server.await?;
    Ok(())
}
