//! Mounting the agent API inside a host's own hyper-util server: requests under `/v1/` go to the
//! [`App`] (a `tower::Service`), everything else to the host's own routes. Serves one connection
//! on a free port, asks both kinds of route, and stops.

use std::convert::Infallible;
use std::sync::Arc;

use caravan_agent_core::config::{AgentConfig, HostFacts};
use caravan_http::dto::VersionDto;
use caravan_http::{AgentInfo, App, Body};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tower_service::Service;

struct Info(AgentConfig);

impl AgentInfo for Info {
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

/// The host's router: its own `/hello`, and the agent API for `/v1/*`.
async fn route(mut api: App, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path().starts_with("/v1/") {
        return api.call(req).await;
    }
    let hello = Full::new("hello from the host\n".into()).map_err(|never| match never {});
    Ok(Response::new(hello.boxed()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = AgentConfig::dev(&HostFacts::loopback("mounted", 1))?;
    let api = App::builder(Arc::new(Info(config))).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let service = hyper::service::service_fn(move |req| route(api.clone(), req));
        auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await
            .map_err(std::io::Error::other)
    });
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    // The host's route, the agent API, and a capability this host did not give (501).
    let expected = [
        ("/hello", 200),
        ("/v1/agent/health?type=server", 200),
        ("/v1/agent/members", 501),
    ];
    for (path, want) in expected {
        let req = Request::get(path)
            .header("Host", "127.0.0.1")
            .body(Full::<bytes::Bytes>::default())?;
        let resp = client.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        assert_eq!(status.as_u16(), want, "{path}: {body:?}");
        println!(
            "{path}: {status} {}",
            String::from_utf8_lossy(&body).trim_end()
        );
    }
    drop(client);
    conn.await??;
    server.await??;
    Ok(())
}
