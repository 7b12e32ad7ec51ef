//! The agent RPC listener: request/response calls between agents over HTTP/2 (prior knowledge,
//! h2c) on the `rpc` port, served and called with hyper. Separate from the public HTTP API:
//! nothing here is routed from the HTTP port, and the HTTP router knows no RPC path.
//!
//! Calls are `POST /rpc/<Service.Method>` with a JSON body and a JSON reply:
//! - `Status.Ping`: a client checks a server before adding it to its list.
//! - `Agent.Members`: a client-only agent asks a server for `/v1/agent/members`.
//! - `ACL.State`: a client-only agent with ACLs on refreshes its copy of the ACL state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use caravan_http::response::{self, Body};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;

use crate::agent::Agent;
use crate::tls::RpcClientTls;

/// The path of the ping call.
pub const PING_PATH: &str = "/rpc/Status.Ping";
/// The path of the member-list call.
pub const MEMBERS_PATH: &str = "/rpc/Agent.Members";
/// The path of the ACL state call (client-only agents cache it to resolve tokens).
pub const ACL_STATE_PATH: &str = "/rpc/ACL.State";

/// Answers one RPC request.
pub async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "rpc: calls are POST".into());
    }
    match path.as_str() {
        PING_PATH => response::json(&serde_json::json!({}), false),
        ACL_STATE_PATH => match agent.acl_snapshot() {
            Some(state) => response::json(&state, false),
            None => error(
                StatusCode::BAD_REQUEST,
                "rpc: this agent runs no server".into(),
            ),
        },
        MEMBERS_PATH => match agent.local_members() {
            Some(m) => response::json(&m, false),
            None => error(
                StatusCode::BAD_REQUEST,
                "rpc: this agent runs no server".into(),
            ),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            format!("rpc: can't find method {path}"),
        ),
    }
}

fn error(status: StatusCode, text: String) -> Response<Body> {
    response::with_type(status, response::TEXT_UTF8, text.into_bytes())
}

/// Pings the agent RPC listener at `addr`, bounded by `timeout` overall.
pub async fn ping(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&RpcClientTls>,
) -> Result<(), String> {
    call::<serde_json::Value>(addr, PING_PATH, timeout, tls)
        .await
        .map(|_| ())
}

/// Calls `path` on the agent at `addr` and decodes the JSON reply, bounded by `timeout`.
pub async fn call<T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    tls: Option<&RpcClientTls>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call_inner(addr, path, tls)).await {
        Ok(result) => {
            let body = result?;
            serde_json::from_slice(&body).map_err(|e| format!("rpc error: bad reply: {e}"))
        }
        Err(_) => Err(format!("rpc error: timed out after {timeout:?}")),
    }
}

async fn call_inner(
    addr: SocketAddr,
    path: &str,
    tls: Option<&RpcClientTls>,
) -> Result<Bytes, String> {
    let rpc_err = |e: &dyn std::fmt::Display| format!("rpc error: {e}");
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| rpc_err(&e))?;
    let stream: Box<dyn caravan_http::serve::Stream> = match tls {
        None => Box::new(tcp),
        Some(tls) => Box::new(
            tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), tcp)
                .await
                .map_err(|e| rpc_err(&e))?,
        ),
    };
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| rpc_err(&e))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let req = Request::post(path)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::from_static(b"{}")))
            .map_err(|e| rpc_err(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| rpc_err(&e))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| rpc_err(&e))?
            .to_bytes();
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(format!(
                "rpc error: {} {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
            ))
        }
    }
    .await;
    driver.abort();
    result
}
