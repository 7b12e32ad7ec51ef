//! RPC calls through the real `caravan_rpc::Server`: a Noise handshake, yamux, the request
//! framing, the method table and the role and size checks, on a loopback connection.
//!
//! Here the handler is a probe that checks what the router let through; the agent's own handler
//! and the method bodies' decoders are fuzzed by [`crate::rpc_methods`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use caravan_rpc::identity::{ServerKey, server_key};
use caravan_rpc::method::{self, METHODS};
use caravan_rpc::{
    Access, BoxFuture, Call, ClientOptions, Dial, Handler, Refusal, Reply, Role, RpcClient,
    RpcError, Server, Trust,
};

/// The most an input's call may take (loopback; the server answers at once).
const CALL_WITHIN: Duration = Duration::from_secs(30);

/// Answers every call it is given with the method's name and the body's length, after checking
/// the router's promise: the method is known, the caller's role allows it and the body fits.
struct Probe;

impl Handler for Probe {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        assert!(
            allowed(call.method.access, call.peer.role),
            "{} reached the handler from a {:?} caller",
            call.method.name,
            call.peer.role
        );
        assert!(
            call.body.len() <= call.method.max_request,
            "{} reached the handler with {} bytes (limit {})",
            call.method.name,
            call.body.len(),
            call.method.max_request
        );
        let answer = format!("{} {}", call.method.name, call.body.len()).into_bytes();
        if call.method.streaming {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let _ = tx.try_send(answer.into());
            Box::pin(async move { Ok(Reply::Stream(rx)) })
        } else {
            Box::pin(async move { Ok(Reply::whole(answer)) })
        }
    }
}

/// Who may call a method, as `docs/rpc.md` states it: the oracle the router is checked against.
fn allowed(access: Access, role: Role) -> bool {
    match access {
        Access::Public | Access::User => true,
        Access::Client => matches!(role, Role::Client | Role::Server),
        Access::Server => role == Role::Server,
    }
}

struct Fixture {
    addr: SocketAddr,
    server: RpcClient,
    anonymous: RpcClient,
}

fn key() -> ServerKey {
    server_key(b"caravan fuzz gossip key 32 bytes")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        crate::runtime().block_on(async {
            let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => panic!("no loopback listener: {e}"),
            };
            let addr = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => panic!("no listener address: {e}"),
            };
            let (stop, stopped) = tokio::sync::watch::channel(false);
            // The server runs as long as the process.
            std::mem::forget(stop);
            let server = Server::new(
                Trust::with_server_key("global", key()),
                Arc::new(Probe),
                Default::default(),
            );
            tokio::spawn(server.serve(listener, stopped));
            Fixture {
                addr,
                server: RpcClient::new(Dial::with_server_key(key()), ClientOptions::default()),
                anonymous: RpcClient::new(Dial::anonymous(), ClientOptions::default()),
            }
        })
    })
}

/// One RPC call of any method, as a server or as an anonymous caller.
///
/// The input is `[flags][method][token length][token][body]`: `flags & 1` calls as a server
/// (the Noise key), else anonymously; `method` indexes the method table, and past its end the
/// name is the body's first line instead (an unknown or malformed name); `flags & 2` sends a
/// token.
///
/// Invariant: no panic on either side, and the router's promise holds: a call reaches the
/// handler only if its method is known, the caller's proved role allows it and the body fits
/// the method's limit (checked in the handler); otherwise the caller gets 404, 403 or 413.
pub fn rpc(data: &[u8]) {
    let [flags, method, token_len, rest @ ..] = data else {
        return;
    };
    let token_len = usize::from(*token_len).min(rest.len());
    let (token, mut body) = rest.split_at(token_len);
    let token = String::from_utf8_lossy(token).into_owned();
    let name: String = match METHODS.get(usize::from(*method)) {
        Some(spec) => spec.name.to_string(),
        None => {
            let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            let name = String::from_utf8_lossy(&body[..end]).into_owned();
            body = body.get(end + 1..).unwrap_or_default();
            name
        }
    };
    let as_server = flags & 1 != 0;
    let role = if as_server {
        Role::Server
    } else {
        Role::Anonymous
    };
    let token = (flags & 2 != 0).then_some(token.as_str());
    let fixture = fixture();
    let client = if as_server {
        &fixture.server
    } else {
        &fixture.anonymous
    };
    let spec = method::lookup(&name);
    let result = crate::runtime().block_on(async {
        match spec {
            Some(spec) if spec.streaming => {
                let stream = client.stream(fixture.addr, &name, token, body.to_vec(), CALL_WITHIN);
                match stream.await {
                    Ok(mut rx) => {
                        let first = tokio::time::timeout(CALL_WITHIN, rx.recv()).await;
                        Ok(first.ok().flatten().map(|b| b.to_vec()).unwrap_or_default())
                    }
                    Err(e) => Err(e),
                }
            }
            _ => client
                .call_within(fixture.addr, &name, token, body.to_vec(), CALL_WITHIN)
                .await
                .map(|b| b.to_vec()),
        }
    });
    let expected = match spec {
        None => Err(404),
        Some(spec) if !allowed(spec.access, role) => Err(403),
        Some(spec) if body.len() > spec.max_request => Err(413),
        Some(spec) => Ok(format!("{} {}", spec.name, body.len()).into_bytes()),
    };
    match (&result, &expected) {
        (Ok(got), Ok(want)) if got == want => {}
        (Err(RpcError::Remote { code, .. }), Err(want)) if code == want => {}
        // The client refuses a header it may not send (a name or token too long) before the
        // server sees it; the connection is fine.
        (Err(RpcError::TooLarge { .. }), _) => {}
        // An unknown name the server cannot decode as a header at all (it is not UTF-8
        // postcard) is a 400, before the method lookup.
        (Err(RpcError::Remote { code: 400, .. }), Err(404)) => {}
        _ => panic!(
            "{name:?} as {role:?} with {} bytes: got {result:?}, expected {expected:?}",
            body.len()
        ),
    }
}

/// Seed inputs: every method with an empty body, as a server and anonymously, and an unknown
/// name.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, _) in METHODS.iter().enumerate() {
        for flags in [0u8, 1, 3] {
            let i = u8::try_from(i).unwrap_or(0);
            out.push(vec![flags, i, 4, b'a', b'b', b'c', b'd', b'{', b'}']);
        }
    }
    out.push(b"\x01\xff\x00No.Such\n{}".to_vec());
    out
}
