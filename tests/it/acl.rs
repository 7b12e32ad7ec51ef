//! ACLs against the real binary: state that survives a restart, tokens resolved by a client-only
//! agent from its server, token changes taking effect on a running cluster. The rules (the ACL
//! API's errors, which token each endpoint lets through) are tables in caravan-http's tests.

use serde_json::{Value, json};

use crate::support::{Agent, Resp, Scratch, cli, stdout_ok};

async fn api(agent: &Agent, method: &str, path: &str, token: Option<&str>, body: Value) -> Resp {
    crate::support::send(agent, method, path, token, body).await
}

pub(crate) async fn bootstrap(agent: &Agent) -> String {
    let r = api(agent, "POST", "/v1/acl/bootstrap", None, Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["Name"], "Bootstrap Token");
    assert_eq!(v["Type"], "management");
    assert!(v["Policies"].is_null());
    assert_eq!(v["Global"], true);
    v["SecretID"].as_str().unwrap().to_string()
}

pub(crate) async fn policy(agent: &Agent, mgmt: &str, name: &str, rules: &str) {
    let body = json!({"Name": name, "Description": "", "Rules": rules});
    let r = api(
        agent,
        "POST",
        &format!("/v1/acl/policy/{name}"),
        Some(mgmt),
        body,
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, 0), "{}", r.text());
}

pub(crate) async fn token(agent: &Agent, mgmt: &str, policies: &[&str]) -> String {
    let body = json!({"Name": "t", "Type": "client", "Policies": policies});
    let r = api(agent, "POST", "/v1/acl/token", Some(mgmt), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["SecretID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn state_survives_kill_9() {
    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let args = ["-server", "-client", "-acl-enabled", &data];
    let hcl = "bind_addr = \"127.0.0.1\"\nserver {\n  bootstrap_expect = 1\n}\n";
    let ports = crate::support::Ports::free();
    let mut agent = Agent::start_at(ports, &args, hcl).await;
    let mgmt = bootstrap(&agent).await;
    policy(&agent, &mgmt, "keep", "agent {\n  policy = \"read\"\n}").await;
    let reader = token(&agent, &mgmt, &["keep"]).await;
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    drop(agent);
    let agent = Agent::start_at(ports, &args, hcl).await;
    // A default read first: it waits until the restarted server has applied everything
    // committed, the reader token's entry included (its commit mark may not have reached the
    // disk before the kill; the entry itself had).
    let r = api(
        &agent,
        "GET",
        "/v1/acl/policy/keep",
        Some(&mgmt),
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["Rules"], "agent {\n  policy = \"read\"\n}");
    let r = api(&agent, "GET", "/v1/agent/self", Some(&reader), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api(&agent, "POST", "/v1/acl/bootstrap", None, Value::Null).await;
    assert_eq!(r.status, 400, "bootstrap stays done after restart");
}

#[tokio::test]
async fn client_only_agent_resolves_tokens_from_a_server_and_cli_works() {
    let server = Agent::start(
        &["-dev", "-acl-enabled"],
        "client {\n  enabled = false\n}\n",
    )
    .await;
    let text = stdout_ok(&cli(server.http, &["acl", "bootstrap"], &[]).await);
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("Secret ID    = "))
        .expect("secret printed")
        .to_string();
    let scratch = Scratch::new();
    let rules = scratch.write("r.hcl", "agent {\n  policy = \"read\"\n}\n");
    let token_env = [("NOMAD_TOKEN", secret.as_str())];
    let out = cli(
        server.http,
        &["acl", "policy", "apply", "readers", &rules],
        &token_env,
    )
    .await;
    assert_eq!(
        stdout_ok(&out),
        "Successfully wrote \"readers\" ACL policy!\n"
    );
    let create = ["acl", "token", "create", "-name=r", "-policy=readers"];
    let text = stdout_ok(&cli(server.http, &create, &token_env).await);
    assert!(text.contains("Policies     = [readers]"), "{text}");
    let reader = text
        .lines()
        .find_map(|l| l.strip_prefix("Secret ID    = "))
        .unwrap()
        .to_string();

    let dir = Scratch::new();
    let data = format!("-data-dir={}", dir.0.display());
    let servers = format!("-servers={}", server.rpc);
    let client = Agent::start(
        &["-client", "-acl-enabled", &data, &servers],
        "bind_addr = \"127.0.0.1\"\n",
    )
    .await;
    let mut status = 0;
    for _ in 0..100 {
        status = api(&client, "GET", "/v1/agent/self", Some(&reader), Value::Null)
            .await
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "client-only agent did not resolve the token");
    let r = api(&client, "GET", "/v1/agent/self", None, Value::Null).await;
    assert_eq!(r.status, 403);
    let r = api(
        &client,
        "PUT",
        &format!("/v1/agent/servers?address={}", server.rpc),
        Some(&reader),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 403, "agent:read cannot change servers");
}

/// A one-allocation service job.
fn job_body(id: &str) -> Value {
    json!({"Job": {"ID": id, "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 1, "Tasks": [
            {"Name": "t", "Driver": "docker", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]}})
}

/// One request with `token`, which must get `want`: 200, or 403 "Permission denied".
async fn check_status(
    agent: &Agent,
    who: &str,
    token: Option<&str>,
    req: &(&str, String),
    want: u16,
) {
    let (method, path) = req;
    let body = if *method == "POST" {
        job_body("denied-write")
    } else {
        Value::Null
    };
    let r = api(agent, method, path, token, body).await;
    if want == 200 {
        assert_eq!(r.status, 200, "{who} {method} {path}: {}", r.text());
    } else {
        assert_eq!(
            (r.status, r.text().as_str()),
            (want, "Permission denied"),
            "{who} {method} {path}"
        );
    }
}

/// The job, evaluation, allocation and node endpoints with ACLs on: jobs, evaluations and
/// allocations need a management token; nodes need `node:read`. A token's update changes what
/// it may do on the next request; a deleted token may do nothing.
#[tokio::test]
async fn job_eval_alloc_and_node_endpoints_with_non_management_tokens() {
    let agent = Agent::start(&["-dev", "-acl-enabled"], "").await;
    agent.wait_raft_leader().await;
    let mgmt = bootstrap(&agent).await;
    agent.wait_node_as(Some(&mgmt)).await;
    policy(&agent, &mgmt, "node-read", "node {\n  policy = \"read\"\n}").await;
    policy(
        &agent,
        &mgmt,
        "agent-write",
        "agent {\n  policy = \"write\"\n}",
    )
    .await;
    let node_read = token(&agent, &mgmt, &["node-read"]).await;
    let agent_write = token(&agent, &mgmt, &["agent-write"]).await;

    // Something to read: a placed job, its evaluation and allocation, the dev node.
    let r = api(&agent, "POST", "/v1/jobs", Some(&mgmt), job_body("web")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let eval = r.json()["EvalID"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let alloc = loop {
        let allocs = api(
            &agent,
            "GET",
            "/v1/job/web/allocations",
            Some(&mgmt),
            Value::Null,
        )
        .await
        .json();
        if let Some(id) = allocs[0]["ID"].as_str() {
            break id.to_string();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "web was not placed: {allocs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let nodes = api(&agent, "GET", "/v1/nodes", Some(&mgmt), Value::Null)
        .await
        .json();
    let node = nodes[0]["ID"].as_str().unwrap().to_string();

    let jobs_api: Vec<(&str, String)> = vec![
        ("GET", "/v1/jobs".into()),
        ("POST", "/v1/jobs".into()),
        ("GET", "/v1/job/web".into()),
        ("GET", "/v1/job/web/allocations".into()),
        ("DELETE", "/v1/job/web".into()),
        ("GET", "/v1/evaluations".into()),
        ("GET", format!("/v1/evaluation/{eval}")),
        ("GET", "/v1/allocations".into()),
        ("GET", format!("/v1/allocation/{alloc}")),
    ];
    let nodes_api: Vec<(&str, String)> = vec![
        ("GET", "/v1/nodes".into()),
        ("GET", format!("/v1/node/{node}")),
    ];
    //  who            token                 jobs/evals/allocs  nodes
    let table: [(&str, Option<&str>, u16, u16); 5] = [
        ("no token", None, 403, 403),
        (
            "unknown",
            Some("8d5a6c3e-0000-4000-8000-000000000000"),
            403,
            403,
        ),
        ("node:read", Some(&node_read), 403, 200),
        ("agent:write", Some(&agent_write), 403, 403),
        ("management", Some(&mgmt), 200, 200),
    ];
    for (who, token, jobs_want, nodes_want) in table {
        for req in &jobs_api {
            // The management token's writes would change what the others see: reads only.
            if who == "management" && req.0 != "GET" {
                continue;
            }
            check_status(&agent, who, token, req, jobs_want).await;
        }
        for req in &nodes_api {
            check_status(&agent, who, token, req, nodes_want).await;
        }
    }
    // The refused writes changed nothing: web still runs, the refused job does not exist.
    let web = api(&agent, "GET", "/v1/job/web", Some(&mgmt), Value::Null).await;
    assert_eq!(web.json()["Stop"], false, "{}", web.text());
    let r = api(
        &agent,
        "GET",
        "/v1/job/denied-write",
        Some(&mgmt),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Updating a token changes its policies, effective on the next request.
    let body = json!({"Name": "changing", "Type": "client", "Policies": ["agent-write"]});
    let r = api(&agent, "POST", "/v1/acl/token", Some(&mgmt), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let accessor = r.json()["AccessorID"].as_str().unwrap().to_string();
    let secret = r.json()["SecretID"].as_str().unwrap().to_string();
    let nodes_req = ("GET", "/v1/nodes".to_string());
    let self_req = ("GET", "/v1/agent/self".to_string());
    check_status(&agent, "before update", Some(&secret), &nodes_req, 403).await;
    check_status(&agent, "before update", Some(&secret), &self_req, 200).await;
    let path = format!("/v1/acl/token/{accessor}");
    let body = json!({"AccessorID": accessor, "Name": "changing", "Type": "client", "Policies": ["node-read"]});
    let r = api(&agent, "POST", &path, Some(&mgmt), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Policies"], json!(["node-read"]), "{}", r.text());
    assert_eq!(r.json()["AccessorID"], accessor.as_str());
    check_status(&agent, "after update", Some(&secret), &nodes_req, 200).await;
    check_status(&agent, "after update", Some(&secret), &self_req, 403).await;
    let r = api(&agent, "GET", &path, Some(&mgmt), Value::Null).await;
    assert_eq!(r.json()["Policies"], json!(["node-read"]), "{}", r.text());

    // Deleting it refuses it everywhere, on the next request.
    let r = api(&agent, "DELETE", &path, Some(&mgmt), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    check_status(&agent, "deleted", Some(&secret), &nodes_req, 403).await;
    check_status(
        &agent,
        "deleted",
        Some(&secret),
        &("GET", format!("/v1/node/{node}")),
        403,
    )
    .await;
    let r = api(
        &agent,
        "GET",
        "/v1/acl/token/self",
        Some(&secret),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL token not found"));
    let r = api(&agent, "GET", &path, Some(&mgmt), Value::Null).await;
    assert_eq!(r.status, 404, "{}", r.text());
}
