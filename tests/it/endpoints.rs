//! Every foundation endpoint of a real agent, with the bad inputs the spec names.

use std::io::Read;

use crate::support::{Agent, Resp};

fn assert_error(r: &Resp, status: u16, body: &str) {
    assert_eq!((r.status, r.text().as_str()), (status, body));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test]
async fn agent_self() {
    let agent = Agent::dev("name = \"n1\"\nregion = \"r1\"\n").await;
    let r = agent.get("/v1/agent/self").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    assert!(!r.body.ends_with(b"\n"), "compact form has no newline");
    let v = r.json();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec!["config", "member", "stats"]);
    let c = &v["config"];
    assert_eq!(c["Region"], "r1");
    assert_eq!(c["NodeName"], "n1");
    assert_eq!(c["DevMode"], true);
    assert_eq!(c["Ports"]["HTTP"], agent.http.port());
    assert_eq!(c["ACL"]["Enabled"], false);
    assert!(c["Server"].get("EncryptKey").is_none());
    let m = &v["member"];
    assert_eq!(m["Name"], "n1.r1");
    assert_eq!(m["Status"], "alive");
    assert_eq!(m["Addr"], "127.0.0.1");
    assert_eq!(m["Tags"]["role"], "nomad");
    assert_eq!(m["Tags"]["region"], "r1");
    assert_eq!(m["Tags"]["rpc_addr"], "127.0.0.1");
    assert_eq!(m["Tags"]["port"], agent.rpc.port().to_string());
    assert_eq!(m["ProtocolMax"], 5);
    let stats = &v["stats"];
    for key in [
        "arch",
        "cpu_count",
        "goroutines",
        "kernel.name",
        "max_procs",
        "version",
    ] {
        assert!(stats["runtime"][key].is_string(), "runtime.{key}");
    }
    assert_eq!(stats["client"]["known_servers"], agent.rpc.to_string());
    assert_eq!(stats["nomad"]["leader"], "true");
    // Nomad counts the regions it knows (`len(s.peers)`), it does not name them.
    assert_eq!(stats["nomad"]["known_regions"], "1");

    for q in ["pretty", "pretty=1", "pretty=false", "pretty=true"] {
        let r = agent.get(&format!("/v1/agent/self?{q}")).await;
        let text = r.text();
        assert!(
            text.starts_with("{\n    \"config\": {\n        \"Region\""),
            "{q}"
        );
        assert!(text.ends_with("}\n"), "{q}");
    }
    let r = agent.get("/v1/agent/self?pretty=0").await;
    assert!(r.text().starts_with("{\"config\":"));
    for method in ["PUT", "POST", "DELETE", "HEAD", "OPTIONS"] {
        let r = agent.call(method, "/v1/agent/self", &[]).await;
        assert_eq!(r.status, 405, "{method}");
        if method != "HEAD" {
            assert_error(&r, 405, "Invalid method");
        }
    }
}

#[tokio::test]
async fn routing_and_compression() {
    let agent =
        Agent::dev("http_api_response_headers {\n  \"X-Caravan-Test\" = \"yes\"\n}\n").await;
    // `/` is Nomad's redirect to the operator page (307 to /ui/); other unknown paths 404.
    let r = agent.call("GET", "/", &[]).await;
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location").as_deref(), Some("/ui/"));
    for path in ["/v1/agent/self/", "/v1/agent/foo", "/rpc/Status.Ping"] {
        let r = agent.call("GET", path, &[]).await;
        assert_eq!((r.status, r.body.len()), (404, 0), "{path}");
        assert_eq!(r.header("content-type"), None, "{path}");
        assert_eq!(r.header("x-caravan-test").as_deref(), Some("yes"));
    }
    let r = agent.call("POST", "/rpc/Status.Ping", &[]).await;
    assert_eq!(r.status, 404, "RPC is never served on the HTTP port");
    let r = agent.get("/v1/agent/pprof?seconds=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/v1/agent/pprof/?seconds=1")
    );

    let plain = agent.get("/v1/agent/health").await.body;
    for (accept, encoding) in [("gzip", "gzip"), ("br, deflate", "deflate")] {
        let r = agent
            .call("GET", "/v1/agent/health", &[("Accept-Encoding", accept)])
            .await;
        assert_eq!(r.header("content-encoding").as_deref(), Some(encoding));
        let mut out = Vec::new();
        let read = if encoding == "gzip" {
            flate2::read::GzDecoder::new(&r.body[..]).read_to_end(&mut out)
        } else {
            flate2::read::DeflateDecoder::new(&r.body[..]).read_to_end(&mut out)
        };
        read.unwrap();
        assert_eq!(out, plain, "{accept}");
    }
    let r = agent
        .call(
            "GET",
            "/v1/agent/health",
            &[("Accept-Encoding", "gzip;q=1")],
        )
        .await;
    assert_eq!((r.header("content-encoding"), r.body), (None, plain));
    let r = agent
        .call("GET", "/v1/agent/nope", &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-caravan-test").as_deref(), Some("yes"));
}

#[tokio::test]
async fn health() {
    let agent = Agent::dev("").await;
    let r = agent.get("/v1/agent/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        r#"{"client":{"ok":true,"message":"ok"},"server":{"ok":true,"message":"ok"}}"#
    );
    assert_eq!(
        agent.get("/v1/agent/health?type=server").await.text(),
        r#"{"server":{"ok":true,"message":"ok"}}"#
    );
    assert_eq!(agent.get("/v1/agent/health?type=").await.text(), "{}");
    let cases = [
        (
            "stale=nope",
            "Expect `true` or `false` for `stale` query string parameter",
        ),
        (
            "per_page=x",
            "Expect a number for `per_page` query string parameter",
        ),
        ("wait=10", "Invalid wait time"),
        ("index=abc", "Invalid index"),
    ];
    for (q, want) in cases {
        assert_error(
            &agent.get(&format!("/v1/agent/health?{q}")).await,
            400,
            want,
        );
    }
    assert_error(
        &agent.call("POST", "/v1/agent/health", &[]).await,
        405,
        "Invalid method",
    );
    // Tokens are ignored by health.
    let r = agent
        .call(
            "GET",
            "/v1/agent/health",
            &[("X-Nomad-Token", "not-a-token")],
        )
        .await;
    assert_eq!(r.status, 200);

    let server_only = Agent::start(&["-dev"], "client {\n  enabled = false\n}\n").await;
    let r = server_only.get("/v1/agent/health?type=client").await;
    assert_error(
        &r,
        500,
        r#"{"client":{"ok":false,"message":"client not enabled"}}"#,
    );
}

#[tokio::test]
async fn client_without_servers_is_unhealthy() {
    let scratch = crate::support::Scratch::new();
    let dir = scratch.0.to_string_lossy().into_owned();
    let agent = Agent::start(
        &["-client", "-bind=127.0.0.1", &format!("-data-dir={dir}")],
        "",
    )
    .await;
    let r = agent.get("/v1/agent/health").await;
    assert_error(
        &r,
        500,
        r#"{"client":{"ok":false,"message":"no known servers"}}"#,
    );
    let v = agent.get("/v1/agent/self").await.json();
    assert_eq!(v["member"]["Status"], "none");
    assert_eq!(v["member"]["Name"], "");
    assert!(v["stats"].get("nomad").is_none());
    // Node IDs persist in data_dir.
    let id = v["stats"]["client"]["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let saved = std::fs::read_to_string(format!("{dir}/client/client-id")).unwrap();
    assert_eq!(saved, id);
}

#[tokio::test]
async fn host() {
    let agent = Agent::dev("").await;
    let r = agent.get("/v1/agent/host").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    for key in [
        "OS",
        "Network",
        "ResolvConf",
        "Hosts",
        "Environment",
        "Disk",
    ] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert!(v["OS"].as_str().unwrap().contains(std::env::consts::ARCH));
    let lo = v["Network"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == "127.0.0.1")
        .expect("loopback listed");
    assert_eq!(lo["mask_bits"], "8");
    assert_eq!(lo["type"], "IPv4");
    for (_, usage) in v["Disk"].as_object().unwrap() {
        assert!(usage["DiskMB"].as_i64().unwrap() >= usage["UsedMB"].as_i64().unwrap());
    }
    let self_v = agent.get("/v1/agent/self").await.json();
    let node_id = self_v["stats"]["client"]["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let name = self_v["member"]["Name"].as_str().unwrap().to_string();
    let server_id = self_v["member"]["Tags"]["id"].as_str().unwrap().to_string();
    for (q, want) in [
        (format!("node_id={node_id}"), node_id.clone()),
        (format!("server_id={name}"), name.clone()),
        (format!("server_id={server_id}"), name.clone()),
        ("server_id=leader".to_string(), name.clone()),
    ] {
        let r = agent.get(&format!("/v1/agent/host?{q}")).await;
        assert_eq!(r.status, 200, "{q}");
        let v = r.json();
        assert_eq!(v["AgentID"], want, "{q}");
        assert!(v["HostData"]["OS"].is_string(), "{q}");
    }
    assert_error(
        &agent.get("/v1/agent/host?node_id=a&server_id=b").await,
        400,
        "Can only forward to either client node or server",
    );
    assert_error(
        &agent.get("/v1/agent/host?node_id=zz").await,
        404,
        "Unknown node \"zz\"",
    );
    assert_error(
        &agent.get("/v1/agent/host?server_id=zz.global").await,
        500,
        "unknown Nomad server zz.global",
    );
    assert_error(
        &agent.call("PUT", "/v1/agent/host", &[]).await,
        405,
        "Invalid method",
    );

    let locked = Agent::dev("enable_debug = false\n").await;
    assert_error(
        &locked.get("/v1/agent/host").await,
        403,
        "Permission denied",
    );
}

#[tokio::test]
async fn host_redacts_secrets() {
    // The agent inherits this test's environment plus the variables set here.
    let scratch = crate::support::Scratch::new();
    let (ports, http, _) = crate::support::ports_hcl();
    let config = scratch.write("a.hcl", &ports);
    let mut child = std::process::Command::new(crate::support::caravan_bin())
        .args(["agent", "-dev", &format!("-config={config}")])
        .env("MY_API_TOKEN", "s3cret")
        .env("NOMAD_TOKEN", "s3cret")
        .env("PASSWORD", "hunter2")
        .env("SHELL_NAME", "visible")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = None;
    for _ in 0..500 {
        if let Ok(r) = crate::support::get(http, "/v1/agent/host").await {
            body = Some(r.json());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = body.expect("agent answered");
    let env = &v["Environment"];
    assert_eq!(env["MY_API_TOKEN"], "<redacted>");
    assert_eq!(env["NOMAD_TOKEN"], "<redacted>");
    // Passwords are redacted too (the security review's L5); other names are shown.
    assert_eq!(env["PASSWORD"], "<redacted>");
    assert_eq!(env["SHELL_NAME"], "visible");
}

#[tokio::test]
async fn servers() {
    let agent = Agent::dev("").await;
    let r = agent.get("/v1/agent/servers").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!([agent.rpc.to_string()]));

    // A second agent's RPC port answers the ping; a dead port does not.
    let other = Agent::dev("").await;
    let dead = format!("127.0.0.1:{}", crate::support::free_port());
    let path = format!("/v1/agent/servers?address={}&address={dead}", other.rpc);
    let r = agent.call("PUT", &path, &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-type"), None);
    assert_eq!(
        agent.get("/v1/agent/servers").await.json(),
        serde_json::json!([other.rpc.to_string()])
    );

    // None reachable: 400 with every reason, the old list kept.
    let r = agent
        .call(
            "POST",
            &format!(
                "/v1/agent/servers?address={dead}&address=not-a-host.invalid&address=127.0.0.1"
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let text = r.text();
    assert!(
        text.starts_with("3 errors occurred:\n\t* Server at address "),
        "{text}"
    );
    assert!(text.contains(&format!("{dead} failed ping")), "{text}");
    // Addresses without a port are named with the default one, as Nomad does.
    assert!(
        text.contains("not-a-host.invalid:4647 failed ping"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1:4647 failed ping"), "{text}");
    assert_eq!(
        agent.get("/v1/agent/servers").await.json(),
        serde_json::json!([other.rpc.to_string()])
    );
    assert_error(
        &agent.call("PUT", "/v1/agent/servers", &[]).await,
        400,
        "missing server address",
    );
    assert_error(
        &agent.call("DELETE", "/v1/agent/servers", &[]).await,
        405,
        "Invalid method",
    );

    let server_only = Agent::start(&["-dev"], "client {\n  enabled = false\n}\n").await;
    assert_error(
        &server_only.get("/v1/agent/servers").await,
        501,
        "Invalid method",
    );
    assert_error(
        &server_only
            .call("PUT", "/v1/agent/servers?address=x", &[])
            .await,
        501,
        "Invalid method",
    );
}
