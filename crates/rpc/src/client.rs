//! The calling side: [`RpcClient`] keeps one connection per peer (one even when many calls start
//! at once), and [`Conn`] makes calls over a connection whichever side opened it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::frame::{self, Frame, RequestHeader};
use crate::identity::{Dial, Peer, ServerKeys, key_id};
use crate::method;
use crate::mux::{self, MuxStream};
use crate::server::{Handler, serve_stream};
use crate::{RpcError, noise};

/// The reply limit for a method this side does not know (the callee will refuse it anyway).
const UNKNOWN_METHOD_REPLY: usize = 64 * 1024;

/// Calling settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time to connect and complete the handshake.
    pub connect_timeout: Duration,
    /// Time a call a server makes back over our connection has to send its request.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// One multiplexed connection, opened by either side; cheap to clone.
#[derive(Clone)]
pub struct Conn {
    session: mux::Session,
    peer: Peer,
    dialed: bool,
    /// The server key the connection was authenticated with (Noise `NNpsk0`), by its id.
    key_id: Option<[u8; 8]>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Conn {
    pub(crate) fn new(
        session: mux::Session,
        peer: Peer,
        dialed: bool,
        key_id: Option<[u8; 8]>,
    ) -> Conn {
        Conn {
            session,
            peer,
            dialed,
            key_id,
        }
    }

    /// Whether this side opened the connection (to an address it chose): a call arriving on
    /// it comes from the peer this side dialed, such as a client agent's server.
    pub fn dialed(&self) -> bool {
        self.dialed
    }

    /// Who is on the other side (as proved when the connection was made).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    #[cfg(test)]
    pub(crate) fn session_for_tests(&self) -> &mux::Session {
        &self.session
    }

    async fn send(
        &self,
        name: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(mux::Opened, usize), RpcError> {
        let max_reply = method::lookup(name).map_or(UNKNOWN_METHOD_REPLY, |m| m.max_reply);
        let (mut stream, permit) = self.session.open().await?;
        let header = RequestHeader {
            method: name.to_string(),
            token: token.map(str::to_string),
        };
        frame::write_request(&mut stream, &header, body).await?;
        Ok(((stream, permit), max_reply))
    }

    /// Calls `method` with `body` (and the user's `token`) and returns the reply body.
    pub async fn call(
        &self,
        method: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<Bytes, RpcError> {
        let ((mut stream, _permit), max) = self.send(method, token, body).await?;
        match frame::read_frame(&mut stream, max).await? {
            Frame::Ok(body) => Ok(body.into()),
            Frame::Chunk(_) | Frame::End => Err(RpcError::BadFrame(format!(
                "{method} answered with a stream"
            ))),
        }
    }

    /// Starts a streaming call; once the callee accepted it, chunks arrive on the receiver.
    /// Dropping the receiver ends the call.
    pub async fn stream(
        &self,
        method: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<mpsc::Receiver<Bytes>, RpcError> {
        let ((mut stream, permit), max) = self.send(method, token, body).await?;
        // The callee sends an empty chunk as soon as it accepts the call.
        match frame::read_frame(&mut stream, max).await? {
            Frame::Chunk(_) => {}
            Frame::End => {
                let (_, rx) = mpsc::channel(1);
                return Ok(rx);
            }
            Frame::Ok(_) => return Err(RpcError::BadFrame(format!("{method} did not stream"))),
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = frame::read_frame(&mut stream, max) => match frame {
                        Ok(Frame::Chunk(data)) => {
                            if tx.send(Bytes::from(data)).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    },
                    _ = tx.closed() => break,
                }
            }
            // Dropping the stream resets it, which ends the callee's side.
            let _ = stream.shutdown().await;
            drop(permit);
        });
        Ok(rx)
    }
}

/// Calls to other agents, one pooled connection per address.
pub struct RpcClient {
    dial: Dial,
    opts: ClientOptions,
    pool: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Option<Conn>>>>>,
    handler: Option<Arc<dyn Handler>>,
    #[cfg(feature = "faults")]
    faults: crate::faults::Faults,
}

impl RpcClient {
    /// A client that proves what `dial` says.
    pub fn new(dial: Dial, opts: ClientOptions) -> RpcClient {
        RpcClient {
            dial,
            opts,
            pool: Mutex::new(HashMap::new()),
            handler: None,
            #[cfg(feature = "faults")]
            faults: crate::faults::Faults::from_env(),
        }
    }

    /// Also serves calls the peers we dial make back over our connections.
    pub fn serving(mut self, handler: Arc<dyn Handler>) -> RpcClient {
        self.handler = Some(handler);
        self
    }

    /// The pooled connection to `addr`, connecting when there is none (one connect even when
    /// many calls ask at once).
    pub async fn conn(&self, addr: SocketAddr) -> Result<Conn, RpcError> {
        #[cfg(feature = "faults")]
        if self.faults.blocked(addr) {
            return Err(RpcError::Io("connection refused (fault injection)".into()));
        }
        let slot = self.pool.lock().entry(addr).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref().filter(|c| self.reusable(c)) {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(self.opts.connect_timeout, self.connect(addr))
            .await
            .map_err(|_| RpcError::Timeout(self.opts.connect_timeout))??;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Whether a pooled connection may take another call: open, and made with a key still held.
    fn reusable(&self, conn: &Conn) -> bool {
        let key_held = match (&conn.key_id, &self.dial.keys) {
            (Some(id), Some(keys)) => keys.holds(id),
            _ => true,
        };
        !conn.is_closed() && key_held
    }

    /// Forgets the pooled connection to `addr` (after a failure).
    pub fn forget(&self, addr: SocketAddr) {
        self.pool.lock().remove(&addr);
    }

    /// Calls `method` at `addr` with `body` and the user's `token`; fails after `timeout`.
    pub async fn call_within(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        let attempt = async {
            let conn = self.conn(addr).await?;
            conn.call(method, token, &body).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Err(e @ (RpcError::Io(_) | RpcError::Closed))) => {
                self.forget(addr);
                Err(e)
            }
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout(timeout)),
        }
    }

    /// [`RpcClient::call_within`] with a 30 s bound.
    pub async fn call(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Bytes, RpcError> {
        self.call_within(addr, method, token, body, Duration::from_secs(30))
            .await
    }

    /// Starts a streaming call at `addr`; the callee must accept it within `timeout`.
    pub async fn stream(
        &self,
        addr: SocketAddr,
        method: &str,
        token: Option<&str>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<Bytes>, RpcError> {
        let attempt = async {
            let conn = self.conn(addr).await?;
            conn.stream(method, token, &body).await
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| RpcError::Timeout(timeout))?
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, RpcError> {
        let tcp = TcpStream::connect(addr).await.map_err(RpcError::io)?;
        let _ = tcp.set_nodelay(true);
        crate::keep_alive(&tcp);
        let (role, proof) = self.dial.dialed_role();
        let peer = Peer { addr, role, proof };
        let mut key = None;
        let (session, inbound) = match &self.dial.tls {
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| RpcError::Handshake(e.to_string()))?;
                mux::start(tls, true)
            }
            None => {
                key = self.dial.keys.as_ref().and_then(ServerKeys::primary);
                if self.dial.keys.is_some() && key.is_none() {
                    return Err(RpcError::Handshake("no server key to dial with".into()));
                }
                let stream = noise::initiate(tcp, key.as_ref())
                    .await
                    .map_err(|e| match e {
                        RpcError::Io(_) => RpcError::Handshake(
                            "the server ended the handshake (it does not hold our key?)".into(),
                        ),
                        other => other,
                    })?;
                mux::start(stream, true)
            }
        };
        let conn = Conn::new(session, peer, true, key.as_ref().map(key_id));
        if let (Some(id), Some(keys)) = (conn.key_id, &self.dial.keys) {
            tokio::spawn(close_when_revoked(conn.clone(), keys.clone(), id));
        }
        if let Some(handler) = self.handler.clone() {
            tokio::spawn(serve_calls_back(
                inbound,
                conn.clone(),
                handler,
                self.opts.request_timeout,
            ));
        }
        Ok(conn)
    }
}

/// Closes a connection this side made with server key `id` once that key is no longer held
/// (after [`crate::server::REVOKED_DRAIN`], so calls in flight on it may finish): the pool
/// stops reusing it at once, and the peer's calls back over it end with it.
async fn close_when_revoked(conn: Conn, keys: ServerKeys, id: [u8; 8]) {
    let mut changed = keys.watch();
    while keys.holds(&id) {
        tokio::select! {
            c = changed.changed() => if c.is_err() { return },
            _ = conn.session.closed() => return,
        }
    }
    tokio::select! {
        _ = tokio::time::sleep(crate::server::REVOKED_DRAIN) => conn.session.close(),
        _ = conn.session.closed() => {}
    }
}

/// Serves the calls a dialed peer makes over our connection, until it closes.
async fn serve_calls_back(
    mut inbound: mpsc::Receiver<MuxStream>,
    conn: Conn,
    handler: Arc<dyn Handler>,
    timeout: Duration,
) {
    while let Some(stream) = inbound.recv().await {
        tokio::spawn(serve_stream(stream, conn.clone(), handler.clone(), timeout));
    }
}
