//! `/v1/agent/schedulers` and `/v1/agent/schedulers/config` against a real agent.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{Agent, Scratch, call, cli, stdout_ok};

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
async fn config_errors() {
    let agent = Agent::dev("").await;
    let cases: [(&str, &str); 7] = [
        ("", "Invalid request: Request body is empty"),
        ("null", "Invalid request"),
        (
            r#"{"NumSchedulers": 1, "EnabledSchedulers": ["_core"]}"#,
            "Invalid request",
        ),
        (
            r#"{"num_schedulers": 1, "enabled_schedulers": ["service"]}"#,
            "Invalid request",
        ),
        (
            r#"{"num_schedulers": 4096, "enabled_schedulers": ["_core"]}"#,
            "Invalid request",
        ),
        (
            r#"{"num_schedulers": -1, "enabled_schedulers": ["_core"]}"#,
            "Invalid request",
        ),
        (
            r#"{"num_schedulers": 1, "enabled_schedulers": ["_core", "gpu"]}"#,
            "Invalid request",
        ),
    ];
    for (body, want) in cases {
        let r = put(&agent, body, None).await;
        assert_eq!((r.status, r.text().as_str()), (400, want), "{body}");
    }
    let r = put(&agent, "{nope", None).await;
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("Invalid request: "), "{}", r.text());
    let r = put(&agent, r#"{"num_schedulers": "one"}"#, None).await;
    assert!(r.text().contains("cannot unmarshal string"), "{}", r.text());
    for method in ["DELETE", "HEAD"] {
        assert_eq!(
            agent
                .call(method, "/v1/agent/schedulers/config", &[])
                .await
                .status,
            405
        );
    }
    assert_eq!(
        agent.call("PUT", "/v1/agent/schedulers", &[]).await.status,
        405
    );

    // Client-only agents: 400 Server only endpoint, for every method, before anything else.
    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let client = Agent::start(&["-client", &data], "bind_addr = \"127.0.0.1\"\n").await;
    for (method, path) in [
        ("GET", "/v1/agent/schedulers"),
        ("DELETE", "/v1/agent/schedulers"),
        ("PUT", "/v1/agent/schedulers/config"),
        ("PATCH", "/v1/agent/schedulers/config"),
    ] {
        let r = client.call(method, path, &[]).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, "Server only endpoint"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn token_is_checked_before_the_body() {
    let agent = Agent::start(&["-dev", "-acl-enabled"], "").await;
    let r = put(&agent, "{nope", None).await;
    assert_eq!((r.status, r.text().as_str()), (403, "Permission denied"));
    let boot: Value = agent.call("POST", "/v1/acl/bootstrap", &[]).await.json();
    let mgmt = boot["SecretID"].as_str().unwrap();
    let r = put(&agent, "{nope", Some(mgmt)).await;
    assert_eq!(r.status, 400);
    assert_eq!(agent.get("/v1/agent/schedulers").await.status, 403);
    let r = call(
        agent.http,
        "GET",
        "/v1/agent/schedulers",
        &[("X-Nomad-Token", mgmt)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
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
