//! A client node against a stand-in server in one process: the server answers registration and
//! heartbeats with a 200 ms TTL and places one allocation; the client registers, heartbeats,
//! takes the allocation and reports it running. Run with
//! `cargo run -p caravan-client --example one_node`.

use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::client_rpc::{AllocUpdateRequest, ClientAllocsReply, HeartbeatReply};
use caravan_agent_core::jobs::Allocation;
use caravan_client::NodeClient;
use caravan_rpc::method as m;
use caravan_rpc::{BoxFuture, Call, Dial, Handler, Refusal, Reply, RpcClient, Server, Trust};
use parking_lot::Mutex;

/// A server that knows one allocation and records what the client reports.
#[derive(Default)]
struct StandIn {
    reported: Mutex<Vec<AllocUpdateRequest>>,
}

fn json(v: &impl serde::Serialize) -> Result<Reply, Refusal> {
    serde_json::to_vec(v)
        .map(Reply::Whole)
        .map_err(|e| Refusal::internal(e.to_string()))
}

impl Handler for StandIn {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Refusal>> {
        let answer = match call.method.name {
            m::NODE_REGISTER | m::NODE_UPDATE_STATUS => json(&HeartbeatReply {
                heartbeat_ttl_ms: 200,
                servers: vec![],
                leader: String::new(),
            }),
            m::NODE_GET_CLIENT_ALLOCS => json(&ClientAllocsReply {
                allocs: vec![allocation()],
                index: 7,
            }),
            m::NODE_UPDATE_ALLOC => match serde_json::from_slice(&call.body) {
                Ok(update) => {
                    self.reported.lock().push(update);
                    json(&serde_json::json!({}))
                }
                Err(e) => Err(Refusal::bad_request(e.to_string())),
            },
            other => Err(Refusal::new(404, format!("no {other} here"))),
        };
        Box::pin(async move { answer })
    }
}

fn allocation() -> Allocation {
    Allocation {
        id: "a1".into(),
        name: "web.g[0]".into(),
        job_id: "web".into(),
        task_group: "g".into(),
        node_id: "node-1".into(),
        eval_id: "e1".into(),
        cpu: 100,
        memory_mb: 64,
        desired_status: "run".into(),
        client_status: "pending".into(),
        create_index: 7,
        modify_index: 7,
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = Arc::new(StandIn::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let rpc_server = Server::new(Trust::open("global"), server.clone(), Default::default());
    tokio::spawn(rpc_server.serve(listener, stopped.clone()));

    let node = caravan_client::fingerprint::node("node-1", "dc1");
    let rpc = Arc::new(RpcClient::new(Dial::anonymous(), Default::default()));
    let client = NodeClient::new(node, rpc, [addr]);
    tokio::spawn(client.clone().run(stopped));
    for _ in 0..50 {
        if !server.reported.lock().is_empty() && client.status().num_allocations == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = client.status();
    println!(
        "registered: {}, heartbeat TTL: {:?}, allocations: {}",
        status.registered, status.heartbeat_ttl, status.num_allocations
    );
    let reported = server.reported.lock().clone();
    println!(
        "reported to the server: {:?}",
        reported.first().map(|r| &r.updates)
    );
    let _ = stop.send(true);
    match reported.first() {
        Some(r)
            if status.registered && r.updates.get("a1").map(String::as_str) == Some("running") =>
        {
            Ok(())
        }
        _ => Err("the client did not register and report its allocation".into()),
    }
}
