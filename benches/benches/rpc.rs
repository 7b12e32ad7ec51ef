//! The cost of the authenticated RPC transport, against plain TCP in the same run:
//! - connection setup: TCP connect alone, against TCP + the Noise handshake with the server key +
//!   yamux;
//! - one call of 256 bytes each way over an open connection: a length-prefixed echo on a bare
//!   TCP stream, against `caravan-rpc` (Noise-encrypted, one yamux stream per call, the method
//!   table's checks) through its pooled client.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use caravan_rpc::{BoxFuture, Call, Dial, Handler, Refusal, Reply, RpcClient, Server, Trust};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: usize = 256;

struct Echo;

impl Handler for Echo {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        Box::pin(async move { Ok(Reply::Whole(call.body.to_vec())) })
    }
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; BODY];
                while tcp.read_exact(&mut buf).await.is_ok() {
                    if tcp.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn rpc_server(key: [u8; 32]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::new(
        Trust::with_server_key("global", key),
        Arc::new(Echo),
        Default::default(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::mem::forget(stop); // serve for the whole run
    tokio::spawn(server.serve(listener, stopped));
    addr
}

fn bench_rpc(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let key = caravan_rpc::identity::server_key(b"a gossip key of 32 bytes........");
    let (echo, rpc) = rt.block_on(async { (echo_server().await, rpc_server(key).await) });

    c.bench_function("rpc connect: TCP only (baseline)", |b| {
        b.iter(|| rt.block_on(async { TcpStream::connect(echo).await.expect("connect") }))
    });
    c.bench_function("rpc connect: TCP + Noise NNpsk0 + yamux", |b| {
        b.iter(|| {
            rt.block_on(async {
                let client = RpcClient::new(Dial::with_server_key(key), Default::default());
                client.conn(rpc).await.expect("connect")
            })
        })
    });

    let body = vec![7u8; BODY];
    let mut tcp = rt.block_on(async {
        let tcp = TcpStream::connect(echo).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        tcp
    });
    c.bench_function("rpc call 256 B: bare TCP echo (baseline)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut back = vec![0u8; BODY];
                tcp.write_all(black_box(&body)).await.expect("write");
                tcp.read_exact(&mut back).await.expect("read");
                back
            })
        })
    });
    let client = RpcClient::new(Dial::with_server_key(key), Default::default());
    c.bench_function(
        "rpc call 256 B: caravan-rpc over a pooled connection",
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    client
                        .call(rpc, "Status.Ping", None, black_box(body.clone()))
                        .await
                        .expect("call")
                })
            })
        },
    );
}

criterion_group!(benches, bench_rpc);
criterion_main!(benches);
