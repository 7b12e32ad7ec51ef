//! Serving `/v1/agent/health` and `/v1/agent/members` from another program with two capabilities.
use caravan_agent_core::config::{AgentConfig, HostFacts};
use caravan_http::dto::{MembersResponse, VersionDto};
use caravan_http::{AgentInfo, App, JoinResult, Membership, serve};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct MyService(AgentConfig);

impl AgentInfo for MyService {
    fn config(&self) -> &AgentConfig {
        &self.0
    }
    fn version(&self) -> VersionDto {
        VersionDto::release("1.0.0", "")
    }
    fn server_health(&self) -> Result<(), String> {
        Ok(()) // up while it answers
    }
    fn client_health(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Membership for MyService {
    async fn members(&self, _token: Option<&str>) -> Result<MembersResponse, String> {
        Ok(MembersResponse::of(&self.0, Vec::new()))
    }
    async fn join(&self, _addresses: Vec<String>) -> JoinResult {
        JoinResult::failed("this service joins no pool")
    }
    async fn force_leave(&self, _name: String, _prune: bool) -> Result<(), String> {
        Err("this service has no pool to leave".into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = AgentConfig::dev(&HostFacts::loopback("embedded", 1))?;
    let service = Arc::new(MyService(config));
    let app = App::builder(service.clone()).membership(service).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = serve::serve_http1(listener, app, Default::default(), stopped);
    let server = tokio::spawn(serving);
    for path in ["/v1/agent/health", "/v1/agent/members"] {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await?;
        let status = reply.lines().next().unwrap_or_default();
        assert!(status.ends_with("200 OK"), "{path}: {reply}");
        println!("{path}: {}", reply.lines().last().unwrap_or_default());
    }
    stop.send(true)?;
    Ok(server.await?)
}
