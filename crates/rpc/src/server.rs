//! The accepting side: connection limits, the handshake (bounded in time), then one task per
//! connection that serves its streams, each a call checked against the method table before its
//! body is read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use caravan_agent_core::conn_limit::{ConnGuard, ConnLimiter};

use crate::client::Conn;
use crate::frame::{self, KIND_CHUNK, KIND_END, KIND_OK};
use crate::identity::{Peer, Proof, Role, Trust};
use crate::method::{self, Access, MethodSpec};
use crate::mux::{self, MuxStream};
use crate::{BoxFuture, RpcError};

/// One call as the handler sees it: who asked, which method, the user's token (user-acting
/// methods), and the body (within the method's limit).
#[derive(Debug)]
pub struct Call {
    /// The caller.
    pub peer: Peer,
    /// The method.
    pub method: &'static MethodSpec,
    /// The user's ACL token, when the caller sent one.
    pub token: Option<String>,
    /// The request body.
    pub body: Bytes,
    /// The connection the call came on: the handler can call the peer back over it (a server
    /// reaching a client agent over the connection the client opened).
    pub conn: Conn,
}

/// A handler's answer.
#[derive(Debug)]
pub enum Reply {
    /// One body.
    Whole(Vec<u8>),
    /// Chunks until the sender is dropped (streaming methods).
    Stream(mpsc::Receiver<Bytes>),
}

impl Reply {
    /// One body.
    pub fn whole(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Whole(body.into())
    }
}

/// A refused or failed call: an HTTP-like status code and a text for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 403, 404, 409, 413, 500, ...
    pub code: u16,
    /// The explanation (never a secret).
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// `400`.
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(400, message)
    }

    /// `500`.
    pub fn internal(message: impl Into<String>) -> Refusal {
        Refusal::new(500, message)
    }
}

/// What the embedder does for each call.
pub trait Handler: Send + Sync + 'static {
    /// Answers one call. The caller's role already satisfies the method's [`Access`]; a
    /// user-acting method must still check `call.token`.
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>>;
}

/// Connection handling settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections allowed per client IP (per /64 for IPv6); 0 = unlimited.
    pub max_conns_per_ip: u32,
    /// Connections allowed in all; 0 = unlimited.
    pub max_conns: u32,
    /// Time a caller has to complete the handshake.
    pub handshake_timeout: Duration,
    /// A connection with no call in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Time a caller has to send a request's header and body.
    pub request_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_conns_per_ip: 100,
            max_conns: 4096,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// How long the calls in flight on a connection whose server key was removed may go on (a
/// stream such as a log follow would otherwise keep it forever).
pub const REVOKED_DRAIN: Duration = Duration::from_secs(30);

/// How long the accept loop waits after a failed accept (usually: out of file descriptors).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The accepting side of the RPC port.
pub struct Server {
    trust: Arc<Trust>,
    handler: Arc<dyn Handler>,
    opts: ServerOptions,
    accepted: Option<mpsc::UnboundedSender<Conn>>,
}

impl Server {
    /// A server deciding identities by `trust` and serving calls with `handler`.
    pub fn new(trust: Trust, handler: Arc<dyn Handler>, opts: ServerOptions) -> Server {
        Server {
            trust: Arc::new(trust),
            handler,
            opts,
            accepted: None,
        }
    }

    /// Every accepted connection is also sent here, so the embedder can call the peer back over
    /// the connection it opened.
    pub fn on_accept(mut self, accepted: mpsc::UnboundedSender<Conn>) -> Server {
        self.accepted = Some(accepted);
        self
    }

    /// Accepts connections until `shutdown` turns true; open connections are then dropped.
    pub async fn serve(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let limits = Arc::new(Limits::new(&self.opts));
        let me = Arc::new(self);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, addr) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of descriptors, most likely: back off (at most 10 lines a second).
                            tracing::warn!(target: "rpc", error = %e, "accept failed");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                            continue;
                        }
                    };
                    let Some(slot) = limits.admit(addr.ip()) else {
                        // DEBUG, not WARN: a flood of rejections must not become a flood of log lines.
                        tracing::debug!(target: "rpc", peer = %addr, "too many connections; rejecting");
                        continue;
                    };
                    let me = me.clone();
                    let stop = shutdown.clone();
                    let limits = limits.clone();
                    conns.spawn(async move {
                        me.connection(tcp, addr, stop, &limits).await;
                        drop(slot);
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        conns.abort_all();
    }

    async fn connection(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        mut stop: watch::Receiver<bool>,
        limits: &Arc<Limits>,
    ) {
        let _ = tcp.set_nodelay(true);
        crate::keep_alive(&tcp);
        let handshake =
            tokio::time::timeout(self.opts.handshake_timeout, self.handshake(tcp, addr));
        let (session, mut inbound, peer, key_id) = match handshake.await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                tracing::debug!(target: "rpc", peer = %addr, error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(target: "rpc", peer = %addr, "handshake timed out");
                return;
            }
        };
        // Anonymous callers may hold only part of the connections, so strangers cannot lock
        // servers out of each other.
        let _anonymous = if peer.role == Role::Anonymous {
            match limits.admit_anonymous() {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(target: "rpc", peer = %addr, "too many anonymous connections; closing");
                    session.close();
                    return;
                }
            }
        } else {
            None
        };
        let conn = Conn::new(session.clone(), peer.clone(), false, key_id);
        if let Some(tx) = &self.accepted {
            let _ = tx.send(conn.clone());
        }
        let mut calls = JoinSet::new();
        // A key removed while the connection lives: no new call is taken, and the connection
        // ends once the calls in flight are done, or after `REVOKED_DRAIN` at the latest. The
        // check right after subscribing covers a removal during the handshake.
        let mut keys_changed = self.trust.keys.watch();
        let still_held = |id: &[u8; 8]| self.trust.keys.holds(id);
        let mut revoked = key_id.is_some_and(|id| !still_held(&id));
        let drain = tokio::time::sleep(REVOKED_DRAIN);
        tokio::pin!(drain);
        let mut draining = false;
        loop {
            let idle = calls.is_empty();
            if revoked && !draining {
                draining = true;
                drain
                    .as_mut()
                    .reset(tokio::time::Instant::now() + REVOKED_DRAIN);
            }
            if revoked && idle {
                tracing::debug!(target: "rpc", peer = %addr, "closing a connection whose server key was removed");
                break;
            }
            tokio::select! {
                stream = inbound.recv() => {
                    let Some(stream) = stream else { break };
                    if revoked {
                        // Dropping the stream resets it: the caller sees the call refused.
                        continue;
                    }
                    let handler = self.handler.clone();
                    let timeout = self.opts.request_timeout;
                    calls.spawn(serve_stream(stream, conn.clone(), handler, timeout));
                }
                Some(_) = calls.join_next(), if !calls.is_empty() => {}
                changed = keys_changed.changed(), if key_id.is_some() && !revoked => {
                    revoked = changed.is_err() || key_id.is_some_and(|id| !still_held(&id));
                }
                _ = &mut drain, if draining => {
                    tracing::debug!(target: "rpc", peer = %addr, "ending the calls of a connection whose server key was removed");
                    break;
                }
                _ = tokio::time::sleep(self.opts.idle_timeout), if idle => {
                    tracing::debug!(target: "rpc", peer = %addr, "closing idle connection");
                    break;
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        session.close();
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<
        (
            mux::Session,
            mpsc::Receiver<MuxStream>,
            Peer,
            Option<[u8; 8]>,
        ),
        RpcError,
    > {
        let mut first = [0u8; 1];
        tcp.peek(&mut first).await.map_err(RpcError::io)?;
        let (session, inbound, role, proof, key_id) = match &self.trust.tls {
            Some(tls) => {
                if first[0] != 0x16 {
                    return Err(RpcError::Handshake("TLS is required".into()));
                }
                let stream = tokio_rustls::TlsAcceptor::from(tls.config.clone())
                    .accept(tcp)
                    .await
                    .map_err(|e| RpcError::Handshake(e.to_string()))?;
                let (role, proof) = self.trust.role_of_certificate(
                    stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first()),
                );
                let (s, i) = mux::start(stream, false);
                (s, i, role, proof, None)
            }
            None => {
                let (stream, role, proof, key_id) = crate::noise::respond(tcp, &self.trust).await?;
                let (s, i) = mux::start(stream, false);
                (s, i, role, proof, key_id)
            }
        };
        let (role, proof) = if self.trust.open {
            (Role::Server, Proof::OpenCluster)
        } else {
            (role, proof)
        };
        Ok((session, inbound, Peer { addr, role, proof }, key_id))
    }
}

/// Whether `role` may call a method with `access`.
pub fn allowed(access: Access, role: Role) -> bool {
    match access {
        Access::Public | Access::User => true,
        Access::Client => role >= Role::Client,
        Access::Server => role == Role::Server,
    }
}

/// How long one reply frame may take to write: a caller that stops reading loses the call
/// instead of holding the stream (and its connection's idle timer) forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one call on one stream (also used for calls a dialed server makes back to us). Once
/// the request is read, the caller may send nothing more: a byte more is a protocol violation
/// that ends the call (yamux would otherwise buffer whatever it sends, frame by frame).
pub(crate) async fn serve_stream(
    mut stream: MuxStream,
    conn: Conn,
    handler: Arc<dyn Handler>,
    timeout: Duration,
) {
    let peer = conn.peer().clone();
    let call = match tokio::time::timeout(timeout, read_call(&mut stream, conn)).await {
        Ok(Ok(call)) => call,
        Ok(Err(refusal)) => {
            tracing::debug!(target: "rpc", peer = %peer.addr, code = refusal.code, error = %refusal.message, "call refused");
            let _ = tokio::time::timeout(
                WRITE_TIMEOUT,
                frame::write_error(&mut stream, refusal.code, &refusal.message),
            )
            .await;
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => {
            let _ = tokio::time::timeout(
                WRITE_TIMEOUT,
                frame::write_error(&mut stream, 408, "rpc: request not received in time"),
            )
            .await;
            return;
        }
    };
    let (mut extra, mut out) = tokio::io::split(stream);
    let answer = answer(&mut out, &peer, &handler, call);
    let violation = async {
        let mut byte = [0u8; 1];
        loop {
            match extra.read(&mut byte).await {
                Ok(0) => std::future::pending::<()>().await, // the caller closed its side
                Ok(_) => return,
                Err(_) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        written = answer => {
            if written.is_ok() {
                let _ = out.shutdown().await;
            }
        }
        () = violation => {
            tracing::debug!(target: "rpc", peer = %peer.addr, "caller sent data after its request; call ended");
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, body: &[u8]) -> Result<(), RpcError> {
    tokio::time::timeout(WRITE_TIMEOUT, frame::write_frame(w, kind, body))
        .await
        .map_err(|_| RpcError::Timeout(WRITE_TIMEOUT))?
}

/// Runs the handler and writes its answer, every frame within [`WRITE_TIMEOUT`].
async fn answer<W: AsyncWrite + Unpin>(
    out: &mut W,
    peer: &Peer,
    handler: &Arc<dyn Handler>,
    call: Call,
) -> Result<(), RpcError> {
    let name = call.method.name;
    match handler.call(call).await {
        Ok(Reply::Whole(body)) => write(out, KIND_OK, &body).await,
        Ok(Reply::Stream(mut rx)) => {
            // An empty chunk first: the call is accepted (the caller stops waiting for a refusal).
            write(out, KIND_CHUNK, &[]).await?;
            while let Some(chunk) = rx.recv().await {
                // An error means the caller left; dropping rx ends the producer.
                write(out, KIND_CHUNK, &chunk).await?;
            }
            write(out, KIND_END, &[]).await
        }
        Err(refusal) => {
            tracing::debug!(target: "rpc", peer = %peer.addr, method = name, code = refusal.code, error = %refusal.message, "call failed");
            let payload = (refusal.code, refusal.message);
            tokio::time::timeout(
                WRITE_TIMEOUT,
                frame::write_error(out, payload.0, &payload.1),
            )
            .await
            .map_err(|_| RpcError::Timeout(WRITE_TIMEOUT))?
        }
    }
}

async fn read_call(stream: &mut MuxStream, conn: Conn) -> Result<Call, Refusal> {
    let peer = conn.peer();
    let header = frame::read_header(stream)
        .await
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    let Some(spec) = method::lookup(&header.method) else {
        return Err(Refusal::new(
            404,
            format!("rpc: can't find method {:?}", truncate(&header.method)),
        ));
    };
    if !allowed(spec.access, peer.role) {
        let needs = match spec.access {
            Access::Server => "a server",
            _ => "a client or server",
        };
        return Err(Refusal::new(
            403,
            format!("Permission denied: {} needs {needs} identity", spec.name),
        ));
    }
    let len = frame::read_body_len(stream)
        .await
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    if len > spec.max_request {
        return Err(Refusal::new(
            413,
            format!(
                "rpc: {} request of {len} bytes is larger than {} bytes",
                spec.name, spec.max_request
            ),
        ));
    }
    let body = frame::read_exact_body(stream, len)
        .await
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    Ok(Call {
        peer: peer.clone(),
        method: spec,
        token: header.token,
        body: body.into(),
        conn,
    })
}

fn truncate(text: &str) -> &str {
    let end = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(method::MAX_NAME)
        .unwrap_or(text.len());
    &text[..end]
}

/// Open connections per client (IPv4 address, or IPv6 /64) and in all, counted as the HTTP API
/// counts them ([`ConnLimiter`]); anonymous ones (after the handshake) are held to
/// [`ANONYMOUS_SHARE`] quarters of the total.
struct Limits {
    conns: Arc<ConnLimiter>,
    total: u32,
    anonymous: std::sync::atomic::AtomicU32,
}

/// The share of `max_conns` anonymous callers may hold, in quarters: the last quarter stays
/// for callers that proved a role.
pub const ANONYMOUS_SHARE: u32 = 3;

/// One anonymous connection; dropping it frees the slot.
struct AnonymousSlot<'a>(&'a Limits);

impl Drop for AnonymousSlot<'_> {
    fn drop(&mut self) {
        self.0
            .anonymous
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Limits {
    fn new(opts: &ServerOptions) -> Limits {
        Limits {
            conns: ConnLimiter::new(opts.max_conns_per_ip, opts.max_conns),
            total: opts.max_conns,
            anonymous: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<ConnGuard> {
        self.conns.admit(ip).ok()
    }

    fn admit_anonymous(&self) -> Option<AnonymousSlot<'_>> {
        use std::sync::atomic::Ordering;
        let cap = self.total / 4 * ANONYMOUS_SHARE;
        let taken = self
            .anonymous
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (self.total == 0 || n < cap).then_some(n + 1)
            });
        taken.ok().map(|_| AnonymousSlot(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_client_and_in_all() {
        let opts = ServerOptions {
            max_conns_per_ip: 2,
            max_conns: 3,
            ..ServerOptions::default()
        };
        let limits = Arc::new(Limits::new(&opts));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "per-IP cap");
        let _b1 = limits.admit(b).unwrap();
        assert!(limits.admit(c).is_none(), "global cap");
        drop(a1);
        assert!(limits.admit(c).is_some());
    }

    #[test]
    fn anonymous_callers_hold_three_quarters_at_most() {
        let opts = ServerOptions {
            max_conns: 8,
            ..ServerOptions::default()
        };
        let limits = Limits::new(&opts);
        let held: Vec<_> = (0..6).map(|_| limits.admit_anonymous().unwrap()).collect();
        assert!(limits.admit_anonymous().is_none());
        drop(held);
        assert!(limits.admit_anonymous().is_some());
    }

    #[test]
    fn ipv6_counts_by_prefix() {
        let opts = ServerOptions {
            max_conns_per_ip: 1,
            ..ServerOptions::default()
        };
        let limits = Arc::new(Limits::new(&opts));
        let _one = limits.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            limits
                .admit("2001:db8:1:2::ffff".parse().unwrap())
                .is_none()
        );
        assert!(limits.admit("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = limits.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(limits.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn access_by_role() {
        let check = |access, role, expected| assert_eq!(allowed(access, role), expected);
        check(Access::Public, Role::Anonymous, true);
        check(Access::User, Role::Anonymous, true);
        check(Access::Client, Role::Anonymous, false);
        check(Access::Client, Role::Client, true);
        check(Access::Client, Role::Server, true);
        check(Access::Server, Role::Client, false);
        check(Access::Server, Role::Anonymous, false);
        check(Access::Server, Role::Server, true);
    }
}
