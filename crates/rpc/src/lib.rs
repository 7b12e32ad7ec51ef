//! Caravan's agent-to-agent RPC: the one place where an agent decides who is calling it and what
//! that caller may do.
//!
//! A connection is TCP, then an authenticated encryption layer, then [yamux] streams, one call
//! per stream:
//! - **Identity** ([`identity`]): mutual TLS when `tls.rpc` is set (the peer certificate's name
//!   says its role: `server.<region>.nomad` or `client.<region>.nomad`), otherwise a Noise
//!   handshake ([`noise`]): `NNpsk0` with a key derived (HKDF-SHA256) from the gossip `encrypt`
//!   key proves a server, plain `NN` encrypts an anonymous caller's stream.
//! - **Methods** ([`method`]): every call names a method from one table that says who may call
//!   it ([`Access`]) and how large its request and reply may be. The router refuses an unknown
//!   method, a caller without the right role, or a body over the limit *before* reading the body.
//! - **Either side calls** ([`Conn`]): the side that accepted a connection can open streams on it
//!   too, so a server can call a client agent over the connection the client opened.
//!
//! What a method does is the embedder's: it implements [`Handler`]. User-acting methods carry the
//! user's token in the request header; the handler checks it with the same rules as the HTTP
//! endpoint the method stands for.
//!
//! ```no_run
//! # async fn run() -> Result<(), caravan_rpc::RpcError> {
//! use std::sync::Arc;
//! use caravan_rpc::{Call, Handler, Refusal, Reply, RpcClient, Server, Trust, Dial, BoxFuture};
//!
//! struct Pong;
//! impl Handler for Pong {
//!     fn call(&self, _call: Call) -> BoxFuture<Result<Reply, Refusal>> {
//!         Box::pin(async { Ok(Reply::whole(b"{}".to_vec())) })
//!     }
//! }
//! let key = caravan_rpc::identity::server_key(b"0123456789abcdef");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(caravan_rpc::RpcError::io)?;
//! let addr = listener.local_addr().map_err(caravan_rpc::RpcError::io)?;
//! let server = Server::new(Trust::with_server_key("global", key), Arc::new(Pong), Default::default());
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! tokio::spawn(server.serve(listener, stopped));
//! let client = RpcClient::new(Dial::with_server_key(key), Default::default());
//! let reply = client.call(addr, "Status.Ping", None, b"{}".to_vec()).await?;
//! assert_eq!(&reply[..], b"{}");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
#[cfg(feature = "faults")]
pub mod faults;
mod frame;
pub mod identity;
pub mod method;
mod mux;
pub mod noise;
mod server;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use client::{ClientOptions, Conn, RpcClient};
pub use identity::{Dial, Peer, Proof, Role, ServerKeys, Trust};
pub use method::{Access, MethodSpec};
pub use server::{Call, Handler, Refusal, Reply, Server, ServerOptions};

/// A boxed future, as [`Handler::call`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Every error this crate returns. Texts never contain a key, a token or a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The network failed (connect, read, write).
    Io(String),
    /// The handshake failed: wrong key, wrong certificate, not a Caravan RPC peer.
    Handshake(String),
    /// The call did not finish in time.
    Timeout(Duration),
    /// A request or reply was larger than its method allows.
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// A frame could not be decoded.
    BadFrame(String),
    /// The remote side refused or failed the call (`code` follows HTTP status codes).
    Remote {
        /// 400, 403, 404, 413, 500, ...
        code: u16,
        /// The remote side's explanation.
        message: String,
    },
    /// The connection is closed.
    Closed,
}

impl RpcError {
    /// An I/O error.
    pub fn io(e: impl std::fmt::Display) -> RpcError {
        RpcError::Io(e.to_string())
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Io(e) => write!(f, "rpc error: {e}"),
            RpcError::Handshake(e) => write!(f, "rpc error: handshake failed: {e}"),
            RpcError::Timeout(d) => write!(f, "rpc error: timed out after {d:?}"),
            RpcError::TooLarge { what, limit } => {
                write!(f, "rpc error: {what} larger than {limit} bytes")
            }
            RpcError::BadFrame(e) => write!(f, "rpc error: bad frame: {e}"),
            RpcError::Remote { code, message } => write!(f, "rpc error: {code} {message}"),
            RpcError::Closed => f.write_str("rpc error: connection closed"),
        }
    }
}

impl std::error::Error for RpcError {}

/// TCP keep-alive probes on every RPC connection, both sides: a peer that vanished without
/// closing (power loss, a cut link) is noticed within about 30 s, not the kernel's two hours.
pub(crate) fn keep_alive(tcp: &tokio::net::TcpStream) {
    let params = socket2::TcpKeepalive::new()
        .with_time(KEEP_ALIVE_IDLE)
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&params) {
        tracing::debug!(target: "rpc", error = %e, "cannot set TCP keep-alive");
    }
}

/// Idle time before the first keep-alive probe.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests;
