//! Real sockets on 127.0.0.1: identities, access, limits and calls in both directions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::frame::{self, RequestHeader};
use crate::identity::server_key;
use crate::method::{PING, PROFILE, RAFT_VOTE, RESOLVE_TOKEN};
use crate::*;

/// Answers every call with `who:<role>` and, for `Status.Ping`, a reply of `ping_reply` bytes.
struct Echo {
    ping_reply: usize,
    calls: AtomicUsize,
}

impl Handler for Echo {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let size = self.ping_reply;
        Box::pin(async move {
            if call.method.name == PING && size > 0 {
                return Ok(Reply::whole(vec![b'x'; size]));
            }
            if call.method.streaming {
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    for i in 0..3u8 {
                        let _ = tx.send(bytes::Bytes::from(vec![i])).await;
                    }
                });
                return Ok(Reply::Stream(rx));
            }
            let token = call.token.unwrap_or_default();
            Ok(Reply::whole(format!("{:?}:{token}", call.peer.role)))
        })
    }
}

fn echo() -> Arc<Echo> {
    Arc::new(Echo {
        ping_reply: 0,
        calls: AtomicUsize::new(0),
    })
}

struct Running {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<Conn>,
    _stop: watch::Sender<bool>,
}

async fn serve(trust: Trust, handler: Arc<dyn Handler>, opts: ServerOptions) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let (tx, accepted) = mpsc::unbounded_channel();
    let server = Server::new(trust, handler, opts).on_accept(tx);
    tokio::spawn(server.serve(listener, stopped));
    Running {
        addr,
        accepted,
        _stop: stop,
    }
}

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn client(dial: Dial) -> RpcClient {
    RpcClient::new(dial, ClientOptions::default())
}

async fn call(c: &RpcClient, addr: SocketAddr, method: &str) -> Result<String, RpcError> {
    let reply = c
        .call_within(
            addr,
            method,
            Some("tok"),
            b"{}".to_vec(),
            Duration::from_secs(5),
        )
        .await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// One row of the access matrix: (method, expected reply or error code).
fn check(got: Result<String, RpcError>, expected: Result<&str, u16>) {
    match (got, expected) {
        (Ok(text), Ok(want)) => assert_eq!(text, want),
        (Err(RpcError::Remote { code, .. }), Err(want)) => assert_eq!(code, want),
        (got, want) => panic!("got {got:?}, expected {want:?}"),
    }
}

#[tokio::test]
async fn server_key_proves_a_server_and_anonymous_callers_get_public_and_user_methods_only() {
    let key = server_key(KEY);
    let s = serve(
        Trust::with_server_key("global", key),
        echo(),
        Default::default(),
    )
    .await;
    let server = client(Dial::with_server_key(key));
    let anon = client(Dial::anonymous());
    check(call(&server, s.addr, RAFT_VOTE).await, Ok("Server:tok"));
    check(call(&server, s.addr, PING).await, Ok("Server:tok"));
    check(call(&anon, s.addr, PING).await, Ok("Anonymous:tok"));
    check(
        call(&anon, s.addr, RESOLVE_TOKEN).await,
        Ok("Anonymous:tok"),
    );
    check(call(&anon, s.addr, PROFILE).await, Ok("Anonymous:tok"));
    check(call(&anon, s.addr, RAFT_VOTE).await, Err(403));
    check(call(&anon, s.addr, method::EVAL_DEQUEUE).await, Err(403));
    check(call(&anon, s.addr, "ACL.State").await, Err(404));
}

/// Holds each call until `release` is notified, then answers `done`.
struct Held {
    release: Arc<tokio::sync::Notify>,
    started: Arc<tokio::sync::Notify>,
}

impl Handler for Held {
    fn call(&self, _call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        let release = self.release.clone();
        let started = self.started.clone();
        Box::pin(async move {
            started.notify_one();
            release.notified().await;
            Ok(Reply::whole("done"))
        })
    }
}

#[tokio::test]
async fn a_rotated_key_authenticates_nothing_new_and_ends_its_connections_after_their_calls() {
    let (k1, k2) = (
        server_key(KEY),
        server_key(b"another key of 32 bytes........"),
    );
    let listener_keys = ServerKeys::new(vec![k1]);
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let slow = Arc::new(Held {
        release: release.clone(),
        started: started.clone(),
    });
    let mut s = serve(
        Trust::with_server_keys("global", listener_keys.clone()),
        slow,
        Default::default(),
    )
    .await;
    let dialer_keys = ServerKeys::new(vec![k1]);
    let c = Arc::new(client(Dial::with_server_keys(dialer_keys.clone())));
    // A call in flight on a connection made with k1.
    let in_flight = {
        let c = c.clone();
        let addr = s.addr;
        tokio::spawn(async move { call(&c, addr, RAFT_VOTE).await })
    };
    started.notified().await;
    let first = s.accepted.recv().await.unwrap();
    // Rotation: both sides install k2 and use it, then the listener drops k1.
    listener_keys.set(vec![k2, k1]);
    dialer_keys.set(vec![k2, k1]);
    listener_keys.set(vec![k2]);
    dialer_keys.set(vec![k2]);
    // The call in flight still completes on its connection, which then ends.
    release.notify_one();
    check(in_flight.await.unwrap(), Ok("done"));
    for _ in 0..100 {
        if first.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        first.is_closed(),
        "a connection made with a removed key stays open"
    );
    // The dialer no longer reuses it: the next call dials again, with k2.
    let next = {
        let c = c.clone();
        let addr = s.addr;
        tokio::spawn(async move { call(&c, addr, RAFT_VOTE).await })
    };
    started.notified().await;
    release.notify_one();
    check(next.await.unwrap(), Ok("done"));
    let second = s.accepted.recv().await.unwrap();
    assert_eq!(second.peer().role, Role::Server);
    // A caller still holding only k1 is refused at the handshake.
    let stale = client(Dial::with_server_key(k1));
    let err = call(&stale, s.addr, PING).await.unwrap_err();
    assert!(matches!(err, RpcError::Handshake(_)), "{err:?}");
}

#[tokio::test]
async fn a_dialer_that_drops_a_key_stops_reusing_the_connections_it_made_with_it() {
    let (k1, k2) = (
        server_key(KEY),
        server_key(b"another key of 32 bytes........"),
    );
    let mut s = serve(
        Trust::with_server_keys("global", ServerKeys::new(vec![k1, k2])),
        echo(),
        Default::default(),
    )
    .await;
    let dialer_keys = ServerKeys::new(vec![k1]);
    let c = client(Dial::with_server_keys(dialer_keys.clone()));
    check(call(&c, s.addr, RAFT_VOTE).await, Ok("Server:tok"));
    let first = s.accepted.recv().await.unwrap();
    check(call(&c, s.addr, RAFT_VOTE).await, Ok("Server:tok"));
    assert!(
        s.accepted.try_recv().is_err(),
        "the pool reuses its connection"
    );
    // Only this side drops k1 (the listener still holds it): the next call dials again.
    dialer_keys.set(vec![k2]);
    check(call(&c, s.addr, RAFT_VOTE).await, Ok("Server:tok"));
    let second = tokio::time::timeout(Duration::from_secs(5), s.accepted.recv())
        .await
        .expect("no second connection: the pool reused one made with a dropped key")
        .unwrap();
    assert_ne!(first.peer().addr, second.peer().addr, "a new connection");
}

#[tokio::test]
async fn a_wrong_key_fails_the_handshake() {
    let s = serve(
        Trust::with_server_key("global", server_key(KEY)),
        echo(),
        Default::default(),
    )
    .await;
    let wrong = client(Dial::with_server_key(server_key(
        b"another key of 32 bytes........",
    )));
    let err = call(&wrong, s.addr, PING).await.unwrap_err();
    assert!(matches!(err, RpcError::Handshake(_)), "{err:?}");
}

#[tokio::test]
async fn open_trust_makes_every_caller_a_server() {
    let s = serve(Trust::open("global"), echo(), Default::default()).await;
    let anon = client(Dial::anonymous());
    check(call(&anon, s.addr, RAFT_VOTE).await, Ok("Server:tok"));
    let closed = serve(Trust::anonymous("global"), echo(), Default::default()).await;
    check(call(&anon, closed.addr, RAFT_VOTE).await, Err(403));
}

/// Writes a request whose header claims `len` body bytes and sends none of them.
async fn claim_body(addr: SocketAddr, dial: Dial, method: &str, len: u32) -> Result<(), RpcError> {
    let c = client(dial);
    let conn = c.conn(addr).await?;
    let (mut stream, _permit) = conn.session_for_tests().open().await?;
    let header = RequestHeader {
        method: method.into(),
        token: None,
    };
    let head = postcard::to_stdvec(&header).unwrap();
    stream
        .write_all(&(head.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&head).await.unwrap();
    stream.write_all(&len.to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    frame::read_frame(&mut stream, 1024).await.map(|_| ())
}

#[tokio::test]
async fn a_body_over_the_method_limit_is_refused_before_it_is_read() {
    let key = server_key(KEY);
    let handler = echo();
    let s = serve(
        Trust::with_server_key("global", key),
        handler.clone(),
        Default::default(),
    )
    .await;
    // 1 GiB announced, nothing sent: the answer comes at once, not after a read or a timeout.
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        claim_body(s.addr, Dial::with_server_key(key), RAFT_VOTE, 1 << 30),
    )
    .await
    .expect("refused without waiting for the body");
    assert!(
        matches!(refused, Err(RpcError::Remote { code: 413, .. })),
        "{refused:?}"
    );
    // The role is checked before the size: an anonymous caller learns only that it may not.
    let refused = claim_body(s.addr, Dial::anonymous(), RAFT_VOTE, 1 << 30).await;
    assert!(
        matches!(refused, Err(RpcError::Remote { code: 403, .. })),
        "{refused:?}"
    );
    assert_eq!(handler.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_reply_over_the_method_limit_is_not_read() {
    let handler = Arc::new(Echo {
        ping_reply: 4096,
        calls: AtomicUsize::new(0),
    });
    let s = serve(Trust::anonymous("global"), handler, Default::default()).await;
    let err = call(&client(Dial::anonymous()), s.addr, PING)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::TooLarge { what: "reply", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrent_first_calls_share_one_connection() {
    let mut s = serve(Trust::anonymous("global"), echo(), Default::default()).await;
    let c = Arc::new(client(Dial::anonymous()));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = c.clone();
        let addr = s.addr;
        calls.spawn(async move { call(&c, addr, PING).await });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert!(s.accepted.try_recv().is_ok());
    assert!(
        s.accepted.try_recv().is_err(),
        "a second connection was made"
    );
}

#[tokio::test]
async fn the_accepting_side_can_call_the_dialing_side_back() {
    let key = server_key(KEY);
    let mut s = serve(
        Trust::with_server_key("global", key),
        echo(),
        Default::default(),
    )
    .await;
    // The dialing side serves calls too; it knows the other side proved the server key.
    let c = client(Dial::with_server_key(key)).serving(echo());
    check(call(&c, s.addr, PING).await, Ok("Server:tok"));
    let back = tokio::time::timeout(Duration::from_secs(3), s.accepted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.peer().role, Role::Server);
    let reply = back.call(RAFT_VOTE, None, b"{}").await.unwrap();
    assert_eq!(&reply[..], b"Server:");
    // A client agent dialing anonymously grants the server nothing beyond public calls.
    let anon = client(Dial::anonymous()).serving(echo());
    check(call(&anon, s.addr, PING).await, Ok("Anonymous:tok"));
    let back = s.accepted.recv().await.unwrap();
    let refused = back.call(RAFT_VOTE, None, b"{}").await.unwrap_err();
    assert!(
        matches!(refused, RpcError::Remote { code: 403, .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn streams_deliver_chunks_after_an_accept() {
    let s = serve(Trust::anonymous("global"), echo(), Default::default()).await;
    let c = client(Dial::anonymous());
    let mut rx = c
        .stream(
            s.addr,
            method::MONITOR,
            None,
            b"{}".to_vec(),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .unwrap()
    {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, vec![0, 1, 2]);
}

#[tokio::test]
async fn idle_connections_and_silent_handshakes_are_closed() {
    let opts = ServerOptions {
        idle_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let s = serve(Trust::anonymous("global"), echo(), opts).await;
    let c = client(Dial::anonymous());
    check(call(&c, s.addr, PING).await, Ok("Anonymous:tok"));
    let conn = c.conn(s.addr).await.unwrap();
    let mut closed = false;
    for _ in 0..50 {
        if conn.is_closed() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "idle connection still open after 2.5 s");
    // The pool notices and connects again.
    check(call(&c, s.addr, PING).await, Ok("Anonymous:tok"));

    // A caller that never completes the handshake is cut off.
    let mut silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("closed within the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Answers after a pause.
struct Slow(Duration);

impl Handler for Slow {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        let pause = self.0;
        Box::pin(async move {
            tokio::time::sleep(pause).await;
            Ok(Reply::Whole(call.body.to_vec()))
        })
    }
}

#[tokio::test]
async fn more_calls_than_streams_wait_instead_of_failing_the_connection() {
    let s = serve(
        Trust::anonymous("global"),
        Arc::new(Slow(Duration::from_millis(200))),
        Default::default(),
    )
    .await;
    let c = Arc::new(client(Dial::anonymous()));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..(3 * crate::mux::MAX_STREAMS) {
        let c = c.clone();
        let addr = s.addr;
        calls.spawn(async move {
            c.call_within(addr, PING, None, vec![i as u8], Duration::from_secs(20))
                .await
        });
    }
    let mut ok = 0;
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, 3 * crate::mux::MAX_STREAMS);
}

#[tokio::test]
async fn bytes_after_the_request_end_the_call() {
    let s = serve(
        Trust::anonymous("global"),
        Arc::new(Slow(Duration::from_secs(3))),
        Default::default(),
    )
    .await;
    let c = client(Dial::anonymous());
    let conn = c.conn(s.addr).await.unwrap();
    let (mut stream, _permit) = conn.session_for_tests().open().await.unwrap();
    let header = RequestHeader {
        method: PING.into(),
        token: None,
    };
    frame::write_request(&mut stream, &header, b"{}")
        .await
        .unwrap();
    // A well-formed request, then data the protocol has no place for.
    stream.write_all(&[0u8; 1024]).await.unwrap();
    stream.flush().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), frame::read_frame(&mut stream, 1024))
        .await
        .expect("the call ended before the handler answered");
    assert!(answer.is_err(), "{answer:?}");
}

#[tokio::test]
async fn connections_probe_a_silent_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    crate::keep_alive(&tcp);
    let sock = socket2::SockRef::from(&tcp);
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), crate::KEEP_ALIVE_IDLE);
}

#[tokio::test]
async fn plain_text_callers_are_not_served() {
    let s = serve(Trust::open("global"), echo(), Default::default()).await;
    // The h2c request the security review used: no answer, the connection is closed.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf))
        .await
        .expect("closed");
    assert!(read.is_err() || buf.is_empty(), "answered: {buf:?}");
}

mod tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls::crypto::ring::default_provider;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

    struct Pki {
        roots: RootCertStore,
        issuer: Issuer<'static, KeyPair>,
    }

    type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

    impl Pki {
        fn new() -> Pki {
            let ca_key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = params.self_signed(&ca_key).unwrap();
            let mut roots = RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            Pki {
                roots,
                issuer: Issuer::new(params, ca_key),
            }
        }

        fn cert(&self, name: &str) -> Pair {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &self.issuer)
                .unwrap();
            let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            (vec![cert.der().clone()], der)
        }

        fn server(&self, (certs, key): Pair) -> Arc<ServerConfig> {
            let provider = Arc::new(default_provider());
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(self.roots.clone()),
                provider.clone(),
            )
            .build()
            .unwrap();
            Arc::new(
                ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(certs, key)
                    .unwrap(),
            )
        }

        fn dial(&self, (certs, key): Pair) -> Dial {
            let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(self.roots.clone())
                .with_client_auth_cert(certs, key)
                .unwrap();
            let name = ServerName::try_from("server.global.nomad").unwrap();
            Dial::with_tls(Arc::new(config), name)
        }
    }

    #[tokio::test]
    async fn certificate_names_give_roles_and_a_client_certificate_cannot_make_server_calls() {
        let pki = Pki::new();
        let config = pki.server(pki.cert("server.global.nomad"));
        let s = serve(
            Trust::with_tls("global", config),
            echo(),
            Default::default(),
        )
        .await;
        let server = client(pki.dial(pki.cert("server.global.nomad")));
        let node = client(pki.dial(pki.cert("client.global.nomad")));
        let other = client(pki.dial(pki.cert("operator.example.com")));
        let elsewhere = client(pki.dial(pki.cert("server.other-region.nomad")));
        check(call(&server, s.addr, RAFT_VOTE).await, Ok("Server:tok"));
        check(call(&node, s.addr, RAFT_VOTE).await, Err(403));
        check(call(&node, s.addr, RESOLVE_TOKEN).await, Ok("Client:tok"));
        check(call(&other, s.addr, RAFT_VOTE).await, Err(403));
        check(call(&other, s.addr, PING).await, Ok("Anonymous:tok"));
        check(call(&elsewhere, s.addr, RAFT_VOTE).await, Err(403));
        // A wildcard does not make a server: roles come from exact names.
        let wildcard = client(pki.dial(pki.cert("*.global.nomad")));
        check(call(&wildcard, s.addr, RAFT_VOTE).await, Err(403));
        // Without TLS the server does not answer at all.
        let plain = client(Dial::anonymous());
        assert!(call(&plain, s.addr, PING).await.is_err());
    }
}
