//! Two sides of the RPC port in one process: a server that proves itself with a key derived from
//! a gossip key, and an anonymous caller. Run with `cargo run -p caravan-rpc --example roles`.

use std::sync::Arc;

use caravan_rpc::method::{PING, RAFT_VOTE};
use caravan_rpc::{
    BoxFuture, Call, ClientOptions, Dial, Handler, Refusal, Reply, RpcClient, RpcError, Server,
    Trust,
};

/// Answers every call with the caller's role.
struct WhoAmI;

impl Handler for WhoAmI {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        Box::pin(async move { Ok(Reply::whole(format!("{:?}", call.peer.role))) })
    }
}

#[tokio::main]
async fn main() -> Result<(), RpcError> {
    let key = caravan_rpc::identity::server_key(b"a gossip key of 32 bytes........");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(RpcError::io)?;
    let addr = listener.local_addr().map_err(RpcError::io)?;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let server = Server::new(
        Trust::with_server_key("global", key),
        Arc::new(WhoAmI),
        Default::default(),
    );
    tokio::spawn(server.serve(listener, stopped));

    let peer = RpcClient::new(Dial::with_server_key(key), ClientOptions::default());
    let stranger = RpcClient::new(Dial::anonymous(), ClientOptions::default());
    let vote = peer.call(addr, RAFT_VOTE, None, b"{}".to_vec()).await?;
    println!(
        "a server calling {RAFT_VOTE}: {}",
        String::from_utf8_lossy(&vote)
    );
    let ping = stranger.call(addr, PING, None, b"{}".to_vec()).await?;
    println!(
        "a stranger calling {PING}: {}",
        String::from_utf8_lossy(&ping)
    );
    match stranger.call(addr, RAFT_VOTE, None, b"{}".to_vec()).await {
        Err(e) => println!("a stranger calling {RAFT_VOTE}: {e}"),
        Ok(_) => return Err(RpcError::Io("a stranger was let in".into())),
    }
    Ok(())
}
