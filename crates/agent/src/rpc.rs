//! The agent RPC listener: request/response calls between agents over HTTP/2 (prior knowledge,
//! h2c, or mutual TLS) on the `rpc` port, served and called with hyper. Separate from the public
//! HTTP API: nothing here is routed from the HTTP port, and the HTTP router knows no RPC path.
//!
//! Calls are `POST /rpc/<Service.Method>` with a JSON body and a JSON reply; a failed call is a
//! non-200 with the error text:
//! - `Status.Ping`, `Status.Leader`, `Status.Peers`: liveness, the Raft leader, the voters.
//! - `Agent.Members`, `Agent.Host`, `Agent.Profile`, `Agent.Monitor`: a client-only agent's
//!   member list; host data, profiles and log streams (the only streaming call) for
//!   `server_id` targeting.
//! - `ACL.State`: a client-only agent with ACLs on refreshes its copy of the ACL state.
//! - `Raft.*`: openraft's messages and forwarded writes (see [`caravan_raft::method`]).
//! - `Eval.Dequeue`, `Eval.Ack`, `Eval.Nack`: workers of other servers use the leader's broker.
//!
//! The client keeps one multiplexed HTTP/2 connection per server. For tests, the environment
//! variable `CARAVAN_RPC_FAULTS` names a file of `ip:port` lines: calls to those addresses fail
//! at once, as if the network were cut (re-read at most every 100 ms).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use caravan_http::AgentApi;
use caravan_http::response::{self, Body};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::agent::Agent;
use crate::tls::RpcClientTls;

/// The path of the ping call.
pub const PING_PATH: &str = "/rpc/Status.Ping";
/// The path of the leader call.
pub const LEADER_PATH: &str = "/rpc/Status.Leader";
/// The path of the peers call.
pub const PEERS_PATH: &str = "/rpc/Status.Peers";
/// The path of the member-list call.
pub const MEMBERS_PATH: &str = "/rpc/Agent.Members";
/// The path of the host-data call.
pub const HOST_PATH: &str = "/rpc/Agent.Host";
/// The path of the profile call (pprof forwarded by `server_id`).
pub const PROFILE_PATH: &str = "/rpc/Agent.Profile";
/// The path of the monitor call (a log stream relayed for `server_id`).
pub const MONITOR_PATH: &str = "/rpc/Agent.Monitor";
/// The path of the ACL state call (client-only agents cache it to resolve tokens).
pub const ACL_STATE_PATH: &str = "/rpc/ACL.State";
/// The leader's broker: dequeue.
pub const DEQUEUE_PATH: &str = "/rpc/Eval.Dequeue";
/// The leader's broker: ack.
pub const ACK_PATH: &str = "/rpc/Eval.Ack";
/// The leader's broker: nack.
pub const NACK_PATH: &str = "/rpc/Eval.Nack";

/// The largest request body the listener reads (Raft snapshot chunks are far smaller).
const MAX_BODY: usize = 64 << 20;

/// Answers one RPC request.
pub async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "rpc: calls are POST".into());
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("rpc: bad body: {e}")),
    };
    if path == MONITOR_PATH {
        let request: Result<caravan_http::api::MonitorRequest, _> = serde_json::from_slice(&body);
        return match request {
            Ok(r) => caravan_http::monitor::endpoint::serve(agent.monitor_hub(), &r)
                .unwrap_or_else(|e| error(e.status, e.message)),
            Err(e) => error(StatusCode::BAD_REQUEST, format!("rpc: bad request: {e}")),
        };
    }
    let answer = match path.strip_prefix("/rpc/") {
        Some(method) if method.starts_with("Raft.") => agent.raft_rpc(method, &body).await,
        _ => crate::cluster::serve_rpc(&agent, &path, &body).await,
    };
    match answer {
        Ok(bytes) => response::with_type(StatusCode::OK, response::JSON, bytes),
        Err((status, text)) => error(status, text),
    }
}

fn error(status: StatusCode, text: String) -> Response<Body> {
    response::with_type(status, response::TEXT_UTF8, text.into_bytes())
}

/// Addresses calls must not reach (fault injection for tests), from `CARAVAN_RPC_FAULTS`.
struct Faults {
    path: Option<PathBuf>,
    cache: Mutex<(Option<Instant>, HashSet<SocketAddr>)>,
}

impl Faults {
    fn from_env() -> Faults {
        Faults {
            path: std::env::var_os("CARAVAN_RPC_FAULTS").map(PathBuf::from),
            cache: Mutex::new((None, HashSet::new())),
        }
    }

    fn blocked(&self, addr: SocketAddr) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let mut cache = self.cache.lock();
        if cache
            .0
            .is_none_or(|t| t.elapsed() > Duration::from_millis(100))
        {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            cache.1 = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            cache.0 = Some(Instant::now());
        }
        cache.1.contains(&addr)
    }
}

/// An RPC client with one multiplexed connection per server.
pub struct RpcClient {
    tls: Option<RpcClientTls>,
    conns: Mutex<HashMap<SocketAddr, SendRequest<Full<Bytes>>>>,
    faults: Faults,
}

impl RpcClient {
    /// A client (mutual TLS when `tls` is set).
    pub fn new(tls: Option<RpcClientTls>) -> RpcClient {
        RpcClient {
            tls,
            conns: Mutex::new(HashMap::new()),
            faults: Faults::from_env(),
        }
    }

    /// Pings the agent RPC listener at `addr`.
    pub async fn ping(&self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        self.call::<serde_json::Value>(addr, PING_PATH, timeout)
            .await
            .map(|_| ())
    }

    /// Calls `path` with an empty request and decodes the JSON reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<T, String> {
        self.call_with(addr, path, &serde_json::json!({}), timeout)
            .await
    }

    /// Calls `path` with `request` as JSON and decodes the JSON reply.
    pub async fn call_with<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        request: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<T, String> {
        let body = serde_json::to_vec(request).map_err(|e| format!("rpc error: {e}"))?;
        let reply = self.request(addr, path, body.into(), timeout).await?;
        serde_json::from_slice(&reply).map_err(|e| format!("rpc error: bad reply: {e}"))
    }

    /// Sends raw bytes and returns the raw reply, bounded by `timeout`.
    pub async fn request(
        &self,
        addr: SocketAddr,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        if self.faults.blocked(addr) {
            return Err("rpc error: connection refused (fault injection)".into());
        }
        match tokio::time::timeout(timeout, self.request_inner(addr, path, body)).await {
            Ok(result) => result,
            Err(_) => {
                self.conns.lock().remove(&addr);
                Err(format!("rpc error: timed out after {timeout:?}"))
            }
        }
    }

    /// Starts a streaming call: once the reply's head is a 200 (within `timeout`), its body
    /// arrives chunk by chunk on the receiver; dropping the receiver ends the stream.
    pub async fn stream(
        &self,
        addr: SocketAddr,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<tokio::sync::mpsc::Receiver<Bytes>, String> {
        if self.faults.blocked(addr) {
            return Err("rpc error: connection refused (fault injection)".into());
        }
        let rpc_err = |e: &dyn std::fmt::Display| format!("rpc error: {e}");
        let head = async {
            let mut sender = self.sender(addr).await?;
            let req = Request::post(path)
                .header("host", addr.to_string())
                .body(Full::new(body))
                .map_err(|e| rpc_err(&e))?;
            sender.ready().await.map_err(|e| rpc_err(&e))?;
            sender.send_request(req).await.map_err(|e| rpc_err(&e))
        };
        let resp = tokio::time::timeout(timeout, head)
            .await
            .map_err(|_| format!("rpc error: timed out after {timeout:?}"))??;
        let status = resp.status();
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!(
                "rpc error: {} {}",
                status.as_u16(),
                String::from_utf8_lossy(&text)
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send(data).await.is_err()
                {
                    return; // the reader left: dropping the body resets the stream
                }
            }
        });
        Ok(rx)
    }

    /// The pooled connection to `addr`, connecting when there is none.
    async fn sender(&self, addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
        let cached = self.conns.lock().get(&addr).cloned();
        match cached {
            Some(s) if !s.is_closed() => Ok(s),
            _ => {
                let s = self.connect(addr).await?;
                self.conns.lock().insert(addr, s.clone());
                Ok(s)
            }
        }
    }

    async fn request_inner(
        &self,
        addr: SocketAddr,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let rpc_err = |e: &dyn std::fmt::Display| format!("rpc error: {e}");
        let mut sender = self.sender(addr).await?;
        let req = Request::post(path)
            .header("host", addr.to_string())
            .body(Full::new(body))
            .map_err(|e| rpc_err(&e))?;
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        }
        .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.conns.lock().remove(&addr);
                return Err(rpc_err(&e));
            }
        };
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

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
        let rpc_err = |e: &dyn std::fmt::Display| format!("rpc error: {e}");
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| rpc_err(&e))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn caravan_http::serve::Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(
                tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| rpc_err(&e))?,
            ),
        };
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| rpc_err(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target: "rpc", %addr, error = %e, "rpc connection closed");
            }
        });
        Ok(sender)
    }
}
