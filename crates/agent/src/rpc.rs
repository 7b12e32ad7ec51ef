//! The agent RPC listener: request/response calls between agents over HTTP/2 (prior knowledge,
//! h2c) on the `rpc` port, served by hyper. Separate from the public HTTP API: nothing here is
//! routed from the HTTP port, and the HTTP router knows no RPC path.
//!
//! Calls are `POST /rpc/<Service.Method>` with a JSON body and a JSON reply. Today there is one:
//! `Status.Ping`, which a client uses to check a server before adding it to its list.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use caravan_http::response::{self, Body};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The path of the ping call.
pub const PING_PATH: &str = "/rpc/Status.Ping";

/// Answers one RPC request.
pub async fn handle(req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, PING_PATH) => response::json(&serde_json::json!({}), false),
        _ => response::with_type(
            StatusCode::NOT_FOUND,
            response::TEXT_UTF8,
            format!("rpc: can't find method {}", req.uri().path()).into_bytes(),
        ),
    }
}

/// Pings the agent RPC listener at `addr`, bounded by `timeout` overall.
pub async fn ping(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, ping_inner(addr)).await {
        Ok(result) => result,
        Err(_) => Err(format!("rpc error: timed out after {timeout:?}")),
    }
}

async fn ping_inner(addr: SocketAddr) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("rpc error: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("rpc error: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = Request::post(PING_PATH)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from_static(b"{}")))
        .map_err(|e| format!("rpc error: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("rpc error: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("rpc error: {e}"))?
            .to_bytes();
        if status == StatusCode::OK {
            Ok(())
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
