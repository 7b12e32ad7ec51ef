//! `/v1/operator/autopilot/health` on three real servers: healthy with a failure tolerance of
//! one, then `429` naming the killed server unhealthy.

use std::time::Duration;

use serde_json::Value;

use crate::keyring::{Server, three_servers};
use crate::support::{Agent, eventually};

async fn health(agent: &Agent) -> (u16, Value) {
    let r = agent.get("/v1/operator/autopilot/health").await;
    (r.status, r.json())
}

#[tokio::test]
async fn autopilot_health_judges_every_voter() {
    let (mut servers, _) = three_servers().await;
    let agents: Vec<&Agent> = servers.iter().map(Server::agent).collect();
    // Asked of a follower too: every voter healthy, one of them leading. The answer judged is
    // the one the wait accepted: asked again, a heartbeat late by 50 ms on a loaded machine
    // could make a voter unhealthy for that one answer (healthy: last contact ≤ 200 ms).
    let body = eventually(Duration::from_secs(30), "a healthy cluster", async || {
        let (status, body) = health(agents[2]).await;
        let servers = body["Servers"].as_array().cloned().unwrap_or_default();
        if status == 200
            && body["Healthy"] == true
            && servers.len() == 3
            && body["FailureTolerance"] == 1
        {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    let servers_seen = body["Servers"].as_array().unwrap();
    assert_eq!(
        servers_seen.iter().filter(|s| s["Leader"] == true).count(),
        1
    );
    for s in servers_seen {
        assert_eq!(s["SerfStatus"], "alive", "{s}");
        assert_eq!(s["Voter"], true);
        assert!(
            s["LastContact"].as_str().is_some_and(|c| c.ends_with('s')),
            "{s}"
        );
        assert!(s["LastIndex"].as_u64().unwrap() > 0, "{s}");
        assert!(s["StableSince"].as_str().unwrap().ends_with('Z'), "{s}");
    }

    // Kill a follower: the cluster is unhealthy (429) and says which server.
    let leader = servers_seen.iter().find(|s| s["Leader"] == true).unwrap()["Address"].clone();
    let victim = servers
        .iter()
        .position(|s| Value::String(format!("127.0.0.1:{}", s.ports.rpc)) != leader)
        .unwrap();
    let victim_addr = format!("127.0.0.1:{}", servers[victim].ports.rpc);
    drop(servers[victim].agent.take());
    let asked = servers.iter().find(|s| s.agent.is_some()).unwrap().agent();
    eventually(
        Duration::from_secs(30),
        "the dead server judged unhealthy",
        async || {
            let (status, body) = health(asked).await;
            let dead = body["Servers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["Address"] == victim_addr.as_str())
                .cloned()
                .unwrap_or_default();
            if status == 429 && body["Healthy"] == false && dead["Healthy"] == false {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    let (_, body) = health(asked).await;
    assert_eq!(body["FailureTolerance"], 0, "{body}");
}
