//! Accepting connections: a per-client-IP connection limit, a header-read timeout, and graceful
//! shutdown bounded in time. Used for the HTTP API (HTTP/1.1) and the agent RPC port (HTTP/2).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::response::Body;
use crate::{AgentApi, App};

/// Connection handling settings.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Concurrent connections allowed per client IP; 0 means unlimited.
    pub max_conns_per_ip: u32,
    /// Time a connection may take to send a request's headers (also bounds idle keep-alive).
    pub header_read_timeout: Duration,
    /// How long shutdown waits for open connections before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_conns_per_ip: 100,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
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
    accept_loop(listener, opts, shutdown, true, move |io, graceful| {
        let app = app.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req).await) }
        });
        let conn = builder.serve_connection(io, svc);
        Box::pin(graceful.watch(conn))
    })
    .await;
}

/// Serves an HTTP/2 (prior knowledge, no TLS) service until `shutdown` turns true: the agent RPC
/// listener. A client over its connection limit is closed at once.
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
    accept_loop(listener, opts, shutdown, false, move |io, graceful| {
        let service = service.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let fut = service(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder.serve_connection(io, svc);
        Box::pin(graceful.watch(conn))
    })
    .await;
}

type ConnFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

async fn accept_loop<M>(
    listener: TcpListener,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
    answer_429: bool,
    mut make_conn: M,
) where
    M: FnMut(TokioIo<TcpStream>, &GracefulShutdown) -> ConnFuture,
{
    let limiter = ConnLimiter::new(opts.max_conns_per_ip);
    let graceful = GracefulShutdown::new();
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
                let conn = make_conn(TokioIo::new(stream), &graceful);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::trace!(target: "http", error = %e, %peer, "connection ended with error");
                    }
                    drop(guard);
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(target: "http", "shutdown grace period over; dropping open connections");
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
