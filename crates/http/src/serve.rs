//! Accepting connections: optional TLS (the handshake bounded in time and done off the accept
//! loop), a per-client connection limit and a global one, a header-read timeout, a request-body
//! read timeout (HTTP/1.1, applied by [`App`]), and graceful shutdown bounded in time. Used for
//! the HTTP API (HTTP/1.1) and the agent RPC port (HTTP/2).
//!
//! A "client" for the per-client limit is an IPv4 address, or an IPv6 /64 (one host usually
//! has a whole /64, so counting IPv6 addresses one by one would not limit anyone); an
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) counts as its IPv4 address ([`client_key`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::App;
use crate::response::Body;

/// Default cap on open connections per listener, all clients together (beside the per-client
/// cap), so a crowd of addresses cannot take every file descriptor of the process. It assumes a
/// raised descriptor limit (65,536 is common for services; Go programs such as Nomad raise the
/// soft limit to the hard one at start): under a 1,024 soft limit, `accept` fails first.
pub const DEFAULT_MAX_CONNS_TOTAL: u32 = 4096;

/// Connection handling settings.
#[derive(Clone)]
pub struct ServeOptions {
    /// Concurrent connections allowed per client (an IPv4 address or an IPv6 /64); 0 means
    /// unlimited.
    pub max_conns_per_ip: u32,
    /// Concurrent connections allowed in total; 0 means unlimited. Over it, HTTP answers `429`
    /// and closes, as for the per-client limit; RPC closes at once.
    pub max_conns_total: u32,
    /// Time a connection may take to send a request's headers (also bounds idle keep-alive),
    /// and to complete a TLS handshake.
    pub header_read_timeout: Duration,
    /// Time an HTTP/1.1 request may take to send its whole body once its headers are in; over
    /// it the request is answered `408` and the connection closed
    /// ([`App::with_body_read_timeout`]).
    pub body_read_timeout: Duration,
    /// How long shutdown waits for open connections before dropping them.
    pub shutdown_grace: Duration,
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_conns_per_ip: 100,
            max_conns_total: DEFAULT_MAX_CONNS_TOTAL,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: crate::DEFAULT_BODY_READ_TIMEOUT,
            shutdown_grace: Duration::from_secs(2),
            tls: None,
        }
    }
}

pub use caravan_agent_core::conn_limit::{ConnGuard, ConnLimiter, Refused, client_key};

/// A plain or TLS stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connection's I/O, whatever the transport.
pub type Io = TokioIo<Box<dyn Stream>>;

type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves the HTTP API over HTTP/1.1 until `shutdown` turns true. A client over its connection
/// limit, or any client while the listener is at its total limit, gets `429 Too Many Requests`
/// and is closed, as Nomad does. Request bodies are read within `opts.body_read_timeout`.
pub async fn serve_http1(
    listener: TcpListener,
    app: App,
    opts: ServeOptions,
    shutdown: watch::Receiver<bool>,
) {
    let app = app.with_body_read_timeout(opts.body_read_timeout);
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
/// true: the agent RPC listener. A client over its connection limit, or any client while the
/// listener is at its total limit, is closed at once. (`body_read_timeout` is not applied here:
/// the service reads its own bodies.)
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
    let limiter = ConnLimiter::new(opts.max_conns_per_ip, opts.max_conns_total);
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    let make_conn = Arc::new(make_conn);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors, most likely: back off (at most 10 lines a second).
                        tracing::warn!(target: "http", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let guard = match limiter.admit(peer.ip()) {
                    Ok(guard) => guard,
                    Err(why) => {
                        reject(stream, peer, why, answer_429);
                        continue;
                    }
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

fn reject(mut stream: TcpStream, peer: SocketAddr, why: Refused, answer_429: bool) {
    match why {
        Refused::PerClient => {
            tracing::warn!(target: "http", %peer, "too many connections from this client; rejecting");
        }
        Refused::Total => {
            tracing::warn!(target: "http", %peer, "too many open connections in total; rejecting");
        }
    }
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
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limiter_counts_per_ip() {
        let l = ConnLimiter::new(2, 0);
        let ip4 = ip("127.0.0.1");
        let other = ip("127.0.0.2");
        let a = l.admit(ip4).unwrap();
        let _b = l.admit(ip4).unwrap();
        assert_eq!(l.admit(ip4).unwrap_err(), Refused::PerClient);
        assert!(l.admit(other).is_ok());
        drop(a);
        assert_eq!(l.open(ip4), 1);
        assert!(l.admit(ip4).is_ok());
        let unlimited = ConnLimiter::new(0, 0);
        let guards: Vec<_> = (0..500).map(|_| unlimited.admit(ip4).unwrap()).collect();
        assert_eq!(unlimited.open(ip4), 500);
        drop(guards);
        assert_eq!(unlimited.open(ip4), 0);
    }

    #[test]
    fn limiter_caps_the_total_across_clients() {
        let l = ConnLimiter::new(100, 3);
        let mut guards: Vec<_> = (1..=3)
            .map(|i| l.admit(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(l.total(), 3);
        // A fourth address, and a fresh IPv6 network, are both refused: the cap is global.
        assert_eq!(l.admit(ip("10.0.0.4")).unwrap_err(), Refused::Total);
        assert_eq!(l.admit(ip("2001:db8::1")).unwrap_err(), Refused::Total);
        // Refusals are not counted.
        assert_eq!((l.total(), l.open(ip("10.0.0.4"))), (3, 0));
        guards.pop();
        assert_eq!(l.total(), 2);
        let g = l.admit(ip("10.0.0.4")).unwrap();
        assert_eq!(l.total(), 3);
        drop(g);
        drop(guards);
        assert_eq!(l.total(), 0);
    }

    #[test]
    fn ipv6_clients_are_counted_by_slash_64() {
        let l = ConnLimiter::new(2, 0);
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).unwrap();
        // Another address in the same /64 is the same client.
        assert_eq!(
            l.admit(ip("2001:db8:1:2:abcd::7")).unwrap_err(),
            Refused::PerClient
        );
        assert_eq!(l.open(ip("2001:db8:1:2::99")), 2);
        // The neighbouring /64 is another client.
        assert!(l.admit(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(client_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn ipv4_is_per_address_and_mapped_ipv6_counts_as_ipv4() {
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let l = ConnLimiter::new(1, 0);
        let _a = l.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            l.admit(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refused::PerClient
        );
        // IPv4 neighbours are not grouped.
        assert!(l.admit(ip("192.0.2.8")).is_ok());
        assert_eq!(l.open(ip("::ffff:192.0.2.7")), 1);
    }
}
