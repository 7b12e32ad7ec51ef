//! `/v1/agent/schedulers` and `/v1/agent/schedulers/config` against a real agent: the real worker
//! pool and the CLI. The check order and the configuration table are caravan-http's schedulers
//! table.

use bytes::Bytes;
use serde_json::json;

use crate::support::{Agent, call, cli, stdout_ok};

async fn put(agent: &Agent, body: &str, token: Option<&str>) -> crate::support::Resp {
    let headers: Vec<(&str, &str)> = token
        .map(|t| vec![("X-Nomad-Token", t)])
        .unwrap_or_default();
    call(
        agent.http,
        "PUT",
        "/v1/agent/schedulers/config",
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

fn cpus() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i64)
}

#[tokio::test]
async fn workers_and_config() {
    let agent = Agent::dev("").await;
    let v = agent.get("/v1/agent/schedulers").await.json();
    assert!(v["server_id"].as_str().unwrap().ends_with(".global"));
    let workers = v["schedulers"].as_array().unwrap().clone();
    assert_eq!(workers.len() as i64, cpus(), "default: one worker per CPU");
    let paused = workers.iter().filter(|w| w["status"] == "Paused").count() as i64;
    let n = cpus();
    assert_eq!(
        paused,
        if n > 1 { 3 * n / 4 } else { 0 },
        "a leader pauses ⌊3n/4⌋"
    );
    for w in &workers {
        assert!(w["started"].as_str().unwrap().ends_with('Z'));
        assert!(["Started", "Paused"].contains(&w["status"].as_str().unwrap()));
    }
    let c = agent.get("/v1/agent/schedulers/config").await.json();
    assert_eq!(c["num_schedulers"], n);
    assert_eq!(
        c["enabled_schedulers"].as_array().unwrap().last().unwrap(),
        "_core"
    );

    // A change applies at once, with new worker IDs.
    let r = put(
        &agent,
        r#"{"num_schedulers": 1, "enabled_schedulers": ["service", "_core"]}"#,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["num_schedulers"], 1);
    let after = agent.get("/v1/agent/schedulers").await.json()["schedulers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["enabled_schedulers"], json!(["service", "_core"]));
    assert!(workers.iter().all(|w| w["id"] != after[0]["id"]));
    // Same count, a longer list: Nomad would crash; Caravan applies it.
    let r = put(
        &agent,
        r#"{"num_schedulers": 1, "enabled_schedulers": ["service", "batch", "_core"]}"#,
        None,
    )
    .await;
    assert_eq!(
        r.json()["enabled_schedulers"],
        json!(["service", "batch", "_core"])
    );
    // No change: same IDs.
    let id = agent.get("/v1/agent/schedulers").await.json()["schedulers"][0]["id"].clone();
    let r = put(&agent, r#"{"num_schedulers": 1, "enabled_schedulers": ["_core", "batch", "service"], "server_id": "ignored"}"#, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        agent.get("/v1/agent/schedulers").await.json()["schedulers"][0]["id"],
        id
    );
    // Zero workers is allowed.
    let r = put(
        &agent,
        r#"{"num_schedulers": 0, "enabled_schedulers": ["_core"]}"#,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        agent.get("/v1/agent/schedulers").await.json()["schedulers"],
        json!([])
    );
}

#[tokio::test]
async fn operator_scheduler_cli() {
    let agent = Agent::dev("").await;
    let set = ["operator", "scheduler", "set-config"];
    let out = cli(
        agent.http,
        &[
            &set[..],
            &["-num-schedulers=1", "-enabled-schedulers=service,_core"],
        ]
        .concat(),
        &[],
    )
    .await;
    stdout_ok(&out);
    let text = stdout_ok(&cli(agent.http, &["operator", "scheduler", "get-config"], &[]).await);
    assert!(text.contains("Number of Schedulers = 1"), "{text}");
    assert!(
        text.contains("Enabled Schedulers   = service, _core"),
        "{text}"
    );
    let out = cli(
        agent.http,
        &[&set[..], &["-enabled-schedulers=service"]].concat(),
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400 (Invalid request)"));
}
