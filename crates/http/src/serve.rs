//! Accepting connections: optional TLS (the handshake bounded in time and done off the accept
//! loop), a per-client-IP connection limit, a header-read timeout, and graceful shutdown bounded
//! in time. Used for the HTTP API (HTTP/1.1) and the agent RPC port (HTTP/2).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::response::Body;
use crate::{AgentApi, App};

/// Connection handling settings.
#[derive(Clone)]
pub struct ServeOptions {
    /// Concurrent connections allowed per client IP; 0 means unlimited.
    pub max_conns_per_ip: u32,
    /// Time a connection may take to send a request's headers (also bounds idle keep-alive),
    /// and to complete a TLS handshake.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for open connections before dropping them.
    pub shutdown_grace: Duration,
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_conns_per_ip: 100,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// Counts open connections per client IP.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// A limiter admitting `max` connections per IP (0 = unlimited).
    pub fn new(max: u32) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `ip`, or `None` when it already has `max` open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if self.max != 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// Open connections from `ip`.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A plain or TLS stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connection's I/O, whatever the transport.
pub type Io = TokioIo<Box<dyn Stream>>;

type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves the HTTP API over HTTP/1.1 until `shutdown` turns true. A client over its connection
/// limit gets `429 Too Many Requests` and is closed, as Nomad does.
pub async fn serve_http1<A: AgentApi>(
    listener: TcpListener,
    app: App<A>,
    opts: ServeOptions,
    shutdown: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    let builder = Arc::new(builder);
    accept_loop(listener, opts, shutdown, true, move |io, stop| {
        let app = app.clone();
        let builder = builder.clone();
        Box::pin(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            drive(builder.serve_connection(io, svc), stop).await;
        })
    })
    .await;
}

/// Serves an HTTP/2 service (prior knowledge, or ALPN `h2` under TLS) until `shutdown` turns
/// true: the agent RPC listener. A client over its connection limit is closed at once.
pub async fn serve_http2<S, F>(
    listener: TcpListener,
    service: S,
    opts: ServeOptions,
    shutdown: watch::Receiver<bool>,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let builder = Arc::new(builder);
    accept_loop(listener, opts, shutdown, false, move |io, stop| {
        let service = service.clone();
        let builder = builder.clone();
        Box::pin(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let fut = service(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            drive(builder.serve_connection(io, svc), stop).await;
        })
    })
    .await;
}

/// Resolves once the shutdown flag is true (or its sender is gone). Its own function so the
/// watch guard is dropped before anything else is awaited (the guard is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Drives a connection until it ends, or shuts it down gracefully (in-flight requests finish)
/// once `stop` turns true.
// Written as `impl Future + Send` rather than `async fn`: with `async fn` the compiler cannot
// prove the callers' boxed connection futures `Send` ("implementation of `Send` is not general
// enough").
#[allow(clippy::manual_async_fn)]
fn drive<C>(conn: C, mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send
where
    C: GracefulConnection + Send,
    C::Error: Send,
{
    async move {
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

async fn accept_loop<M>(
    listener: TcpListener,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
    answer_429: bool,
    make_conn: M,
) where
    M: Fn(Io, watch::Receiver<bool>) -> ConnFuture + Send + Sync + 'static,
{
    let limiter = ConnLimiter::new(opts.max_conns_per_ip);
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    let make_conn = Arc::new(make_conn);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(target: "http", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Some(guard) = limiter.admit(peer.ip()) else {
                    reject(stream, peer, answer_429);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let make_conn = make_conn.clone();
                let acceptor = acceptor.clone();
                let stop = shutdown.clone();
                let handshake = opts.header_read_timeout;
                conns.spawn(async move {
                    let io: Box<dyn Stream> = match acceptor {
                        None => Box::new(stream),
                        Some(acceptor) => {
                            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Box::new(tls),
                                Ok(Err(e)) => {
                                    tracing::debug!(target: "http", %peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(target: "http", %peer, "TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    make_conn(TokioIo::new(io), stop).await;
                    drop(guard);
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
    drop(listener);
    let drained = tokio::time::timeout(opts.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(target: "http", "shutdown grace period over; dropping open connections");
        conns.abort_all();
    }
}

fn reject(mut stream: TcpStream, peer: SocketAddr, answer_429: bool) {
    tracing::warn!(target: "http", %peer, "too many connections from this client; rejecting");
    tokio::spawn(async move {
        if answer_429 {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                stream.write_all(
                    b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            )
            .await;
        }
        let _ = stream.shutdown().await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_ip() {
        let l = ConnLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = l.admit(ip).unwrap();
        let _b = l.admit(ip).unwrap();
        assert!(l.admit(ip).is_none());
        assert!(l.admit(other).is_some());
        drop(a);
        assert_eq!(l.open(ip), 1);
        assert!(l.admit(ip).is_some());
        let unlimited = ConnLimiter::new(0);
        let guards: Vec<_> = (0..500).map(|_| unlimited.admit(ip).unwrap()).collect();
        assert_eq!(unlimited.open(ip), 500);
        drop(guards);
        assert_eq!(unlimited.open(ip), 0);
    }
}
