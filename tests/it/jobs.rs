//! The job API and real scheduler workers on `agent -dev`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{Agent, call};

fn job(id: &str, ty: &str, count: u32, cpu: u64) -> Value {
    json!({"Job": {"ID": id, "Type": ty, "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": count, "Tasks": [
            {"Name": "t", "Driver": "docker", "Resources": {"CPU": cpu, "MemoryMB": 64}}]}]}})
}

async fn post(agent: &Agent, path: &str, body: Value) -> crate::support::Resp {
    call(agent.http, "POST", path, &[], Bytes::from(body.to_string()))
        .await
        .unwrap()
}

async fn wait_eval(agent: &Agent, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let e = agent.get(&format!("/v1/evaluation/{id}")).await.json();
        if e["Status"] != "pending" {
            return e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "evaluation stayed pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn register_place_block_deregister() {
    let agent = Agent::dev("").await;
    let nodes = agent.get("/v1/nodes").await.json();
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    let node_cpu = nodes[0]["NodeResources"]["Cpu"]["CpuShares"]
        .as_u64()
        .unwrap();

    let r = post(&agent, "/v1/jobs", job("web", "service", 3, 100)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let w = r.json();
    assert!(w["EvalCreateIndex"].as_u64().unwrap() > 0);
    let e = wait_eval(&agent, w["EvalID"].as_str().unwrap()).await;
    assert_eq!(e["Status"], "complete");
    let allocs = agent.get("/v1/job/web/allocations").await.json();
    assert_eq!(allocs.as_array().unwrap().len(), 3);
    assert!(
        allocs
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["DesiredStatus"] == "run")
    );
    let j = agent.get("/v1/job/web").await.json();
    assert_eq!(j["Status"], "running");
    assert_eq!(j["TaskGroups"][0]["Count"], 3);
    assert_eq!(
        agent.get("/v1/jobs").await.json().as_array().unwrap().len(),
        1
    );

    // A job larger than the node blocks, naming why.
    let r = post(
        &agent,
        "/v1/job/huge",
        job("huge", "batch", 1, node_cpu + 1),
    )
    .await;
    let e = wait_eval(&agent, r.json()["EvalID"].as_str().unwrap()).await;
    assert_eq!(e["QueuedAllocations"]["g"], 1);
    assert!(
        e["StatusDescription"]
            .as_str()
            .unwrap()
            .contains("resources exhausted")
    );
    let blocked = agent
        .get(&format!(
            "/v1/evaluation/{}",
            e["BlockedEval"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(blocked["Status"], "blocked");

    // System job: one per node.
    let r = post(&agent, "/v1/jobs", job("sys", "system", 0, 10)).await;
    wait_eval(&agent, r.json()["EvalID"].as_str().unwrap()).await;
    assert_eq!(
        agent
            .get("/v1/job/sys/allocations")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Deregister stops the allocations.
    let r = agent.call("DELETE", "/v1/job/web", &[]).await;
    assert_eq!(r.status, 200);
    wait_eval(&agent, r.json()["EvalID"].as_str().unwrap()).await;
    let allocs = agent.get("/v1/job/web/allocations").await.json();
    assert!(
        allocs
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["DesiredStatus"] == "stop")
    );

    // Workers did the work: every evaluation left pending was picked up.
    let workers = agent.get("/v1/agent/schedulers").await.json();
    assert!(
        workers["schedulers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["status"] == "Started")
    );
}

#[tokio::test]
async fn the_dev_node_carries_class_and_meta() {
    let agent =
        Agent::dev("client {\n  node_class = \"gpu\"\n  meta { \"rack\" = \"r1\" }\n}\n").await;
    let nodes = agent.get("/v1/nodes").await.json();
    let node = &nodes[0];
    assert_eq!(node["NodeClass"], "gpu");
    assert_eq!(node["Meta"]["rack"], "r1");
    assert_eq!(node["Datacenter"], "dc1");
    assert!(node["NodeResources"]["Cpu"]["CpuShares"].as_u64().unwrap() > 0);
    assert!(
        node["NodeResources"]["Memory"]["MemoryMB"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(agent.call("POST", "/v1/nodes", &[]).await.status, 405);
}

#[tokio::test]
async fn operator_snapshot_saves_and_restores_the_state() {
    let agent = Agent::dev("acl {\n  enabled = true\n}\n").await;
    let empty = Bytes::new;
    let boot = call(agent.http, "POST", "/v1/acl/bootstrap", &[], empty())
        .await
        .unwrap();
    assert_eq!(boot.status, 200, "{}", boot.text());
    let mgmt = boot.json()["SecretID"].as_str().unwrap().to_string();
    let auth = [("X-Nomad-Token", mgmt.as_str())];
    let send = |method: &'static str, path: &'static str, body: Bytes| async move {
        call(agent.http, method, path, &auth, body).await.unwrap()
    };
    let register = |id: &str| Bytes::from(job(id, "batch", 0, 1).to_string());

    let r = send("POST", "/v1/jobs", register("before")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let saved = send("GET", "/v1/operator/snapshot", empty()).await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    assert_eq!(
        saved.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(saved.header("x-nomad-index").is_some());
    let r = send("POST", "/v1/jobs", register("after")).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Only a management token may save or restore (the snapshot holds every secret).
    for (method, body) in [("GET", empty()), ("PUT", Bytes::from(saved.body.clone()))] {
        let r = call(agent.http, method, "/v1/operator/snapshot", &[], body)
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{method} without a token: {}", r.text());
    }
    // A snapshot that does not decode is refused and changes nothing.
    for bad in [&b"\x01garbage"[..], &saved.body[..saved.body.len() / 2]] {
        let r = send("PUT", "/v1/operator/snapshot", Bytes::copy_from_slice(bad)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("bad snapshot"), "{}", r.text());
    }
    let r = send("DELETE", "/v1/operator/snapshot", empty()).await;
    assert_eq!(r.status, 405, "{}", r.text());

    let r = send("PUT", "/v1/operator/snapshot", Bytes::from(saved.body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The state is the saved one: the job written after the save is gone, the management
    // token (in the snapshot) still works, and new writes follow the restored state.
    let jobs = send("GET", "/v1/jobs", empty()).await;
    assert_eq!(jobs.status, 200, "{}", jobs.text());
    let ids: Vec<String> = jobs
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["ID"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["before"]);
    let r = send("POST", "/v1/jobs", register("again")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A snapshot saved on one cluster and restored on a fresh one gives the same jobs, ACL
/// policies and tokens (the restoring agent's own bootstrap token is replaced by the saved ones).
#[tokio::test]
async fn a_snapshot_restores_into_a_fresh_cluster() {
    let acl = "acl {\n  enabled = true\n}\n";
    let (a, b) = (Agent::dev(acl).await, Agent::dev(acl).await);
    let boot = |agent: &Agent| {
        let http = agent.http;
        async move {
            let r = call(http, "POST", "/v1/acl/bootstrap", &[], Bytes::new())
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["SecretID"].as_str().unwrap().to_string()
        }
    };
    let (ta, tb) = (boot(&a).await, boot(&b).await);
    let send = |agent: &Agent, token: &str, method: &'static str, path: String, body: Bytes| {
        let http = agent.http;
        let token = token.to_string();
        async move {
            call(
                http,
                method,
                &path,
                &[("X-Nomad-Token", token.as_str())],
                body,
            )
            .await
            .unwrap()
        }
    };
    let policy = Bytes::from(r#"{"Name": "readers", "Rules": "agent { policy = \"read\" }"}"#);
    let r = send(&a, &ta, "POST", "/v1/acl/policy/readers".into(), policy).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = Bytes::from(r#"{"Name": "r", "Type": "client", "Policies": ["readers"]}"#);
    let r = send(&a, &ta, "POST", "/v1/acl/token".into(), token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reader = r.json()["SecretID"].as_str().unwrap().to_string();
    let job_body = Bytes::from(job("web", "batch", 0, 1).to_string());
    let r = send(&a, &ta, "POST", "/v1/jobs".into(), job_body).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let saved = send(&a, &ta, "GET", "/v1/operator/snapshot".into(), Bytes::new()).await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    let r = send(
        &b,
        &tb,
        "PUT",
        "/v1/operator/snapshot".into(),
        Bytes::from(saved.body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The same policies, tokens and jobs, read with the saved management token.
    let listing = |agent: &Agent, path: &'static str, key: &'static str| {
        let ta = ta.clone();
        let http = agent.http;
        async move {
            let r = call(
                http,
                "GET",
                path,
                &[("X-Nomad-Token", ta.as_str())],
                Bytes::new(),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let mut v: Vec<String> = r
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x[key].as_str().unwrap_or_default().to_string())
                .collect();
            v.sort();
            v
        }
    };
    for (path, key) in [
        ("/v1/acl/policies", "Name"),
        ("/v1/acl/tokens", "AccessorID"),
        ("/v1/jobs", "ID"),
    ] {
        assert_eq!(
            listing(&a, path, key).await,
            listing(&b, path, key).await,
            "{path}"
        );
    }
    // The saved tokens work on the fresh cluster; its own bootstrap token is gone.
    let r = send(&b, &reader, "GET", "/v1/agent/self".into(), Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(&b, &tb, "GET", "/v1/jobs".into(), Bytes::new()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // And it keeps taking writes after the restore.
    let more = Bytes::from(job("after", "batch", 0, 1).to_string());
    let r = send(&b, &ta, "POST", "/v1/jobs".into(), more).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
