//! `/v1/agent/self`, `health`, `servers`, `members`, `join`, `force-leave` and `host` with its
//! `node_id`/`server_id` targeting, on each kind of agent (ACLs off).

use super::{CLIENT_ONLY, Case, SERVER_ONLY, TestApp, case, run};

/// The agent area's one helper: each row on a fresh agent with every capability.
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

/// A client that knows a server (healthy).
const CONNECTED: &str = "client {\n servers = [\"1.2.3.4:4647\"]\n}\n";
const LONELY_CLIENT: &str = "server {\n enabled = false\n}\nclient {\n servers = []\n}\n";
const STALE: &str = "400 Expect `true` or `false` for `stale` query string parameter";

#[tokio::test]
async fn agent_rules() {
    check(&[
        // self
        case("self", "GET /v1/agent/self", "200 ~\"member\":{")
            .answers_header("content-type", Some("application/json")),
        case("self on a client-only agent: member none", "GET /v1/agent/self", "200 ~\"Status\":\"none\"")
            .config(CLIENT_ONLY),
        case("self by PUT", "PUT /v1/agent/self", "405 Invalid method"),
        // health
        case(
            "health of both",
            "GET /v1/agent/health",
            r#"200 {"client":{"ok":true,"message":"ok"},"server":{"ok":true,"message":"ok"}}"#,
        )
        .config(CONNECTED)
        .answers_header("content-type", Some("application/json")),
        case("health of an empty type", "GET /v1/agent/health?type=", "200 {}").config(CONNECTED),
        case("health of an unknown type", "GET /v1/agent/health?type=foo", "200 {}").config(CONNECTED),
        case(
            "client health on a server-only agent",
            "GET /v1/agent/health?type=client",
            r#"500 {"client":{"ok":false,"message":"client not enabled"}}"#,
        )
        .config(SERVER_ONLY)
        .answers_header("content-type", Some("text/plain; charset=utf-8")),
        case(
            "health of a server-only agent",
            "GET /v1/agent/health",
            r#"200 {"server":{"ok":true,"message":"ok"}}"#,
        )
        .config(SERVER_ONLY),
        case(
            "health of a client without servers",
            "GET /v1/agent/health",
            r#"500 {"client":{"ok":false,"message":"no known servers"}}"#,
        )
        .config(LONELY_CLIENT),
        case(
            "both types on a lonely client",
            "GET /v1/agent/health?type=server&type=client",
            r#"500 {"client":{"ok":false,"message":"no known servers"},"server":{"ok":false,"message":"server not enabled"}}"#,
        )
        .config(LONELY_CLIENT),
        case("health with a bad stale", "GET /v1/agent/health?stale=x", STALE).config(LONELY_CLIENT),
        case("health by HEAD", "HEAD /v1/agent/health", "405 Invalid method"),
        // servers
        case("servers on a server-only agent", "GET /v1/agent/servers", "501 Invalid method")
            .config(SERVER_ONLY),
        case("servers: method before kind", "DELETE /v1/agent/servers", "405 Invalid method")
            .config(SERVER_ONLY),
        case("servers of a lonely client", "GET /v1/agent/servers", "200 []").config(LONELY_CLIENT),
        case("servers of a client", "GET /v1/agent/servers", "200 [\"1.2.3.4:4647\"]").config(CONNECTED),
        case("setting no server", "POST /v1/agent/servers", "400 missing server address").config(CLIENT_ONLY),
        case("setting servers", "POST /v1/agent/servers?address=a&address=b", "200")
            .config(CLIENT_ONLY)
            .answers_header("content-type", None),
        case("servers are set", "GET /v1/agent/servers", "200 [\"a\",\"b\"]")
            .config(CLIENT_ONLY)
            .setup(|t| *t.info.servers.lock().unwrap() = vec!["a".into(), "b".into()]),
        // members
        case("members with a bad stale", "GET /v1/agent/members?stale=x", STALE).config(CLIENT_ONLY),
        case(
            "members",
            "GET /v1/agent/members",
            r#"200 {"ServerName":"h","ServerRegion":"global","ServerDC":"dc1","Members":[]}"#,
        )
        .config(CLIENT_ONLY),
        case("members by DELETE", "DELETE /v1/agent/members", "405 Invalid method"),
        // join
        case("join by GET", "GET /v1/agent/join?address=a", "405 Invalid method").config(SERVER_ONLY),
        case("join on a client", "PUT /v1/agent/join?address=a", "501 Invalid method").config(CLIENT_ONLY),
        case("join on a client: method before kind", "GET /v1/agent/join", "405 Invalid method")
            .config(CLIENT_ONLY),
        case("join without an address", "PUT /v1/agent/join", "400 missing address to join").config(SERVER_ONLY),
        case(
            "a failed join is a 200 naming each failure",
            "POST /v1/agent/join?address=x&address=x",
            "200 {\"num_joined\":0,\"error\":\"2 errors occurred:\\n\\t* Failed to join x\\n\\t* Failed to join x\\n\\n\",\"warning\":\"\"}",
        )
        .config(SERVER_ONLY)
        .answers_header("content-type", Some("application/json")),
        // force-leave
        case("force-leave on a client", "PUT /v1/agent/force-leave?node=a", "501 Invalid method").config(CLIENT_ONLY),
        case("force-leave by GET", "GET /v1/agent/force-leave?node=a", "405 Invalid method").config(SERVER_ONLY),
        case("force-leave without a node", "PUT /v1/agent/force-leave", "400 missing node to force leave")
            .config(SERVER_ONLY),
        case("force-leave of an empty node", "PUT /v1/agent/force-leave?node=", "400 missing node to force leave")
            .config(SERVER_ONLY),
        case("prune=maybe", "PUT /v1/agent/force-leave?node=a&prune=maybe", "400 invalid prune value").config(SERVER_ONLY),
        case("prune=yes", "PUT /v1/agent/force-leave?node=a&prune=yes", "400 invalid prune value").config(SERVER_ONLY),
        case("prune=2", "PUT /v1/agent/force-leave?node=a&prune=2", "400 invalid prune value").config(SERVER_ONLY),
        case("prune= true", "PUT /v1/agent/force-leave?node=a&prune=%20true", "400 invalid prune value").config(SERVER_ONLY),
        case("force-leave", "POST /v1/agent/force-leave?node=a", "200")
            .config(SERVER_ONLY)
            .answers_header("content-type", None),
        // host and its targets
        case("host", "GET /v1/agent/host", "200 ^{\"OS\":\"x\""),
        case("host by POST", "POST /v1/agent/host", "405 Invalid method"),
        case("host without enable_debug", "GET /v1/agent/host", "403 Permission denied").config("enable_debug = false\n"),
        case("host of this server by name", "GET /v1/agent/host?server_id=h.global", "200 ^{\"AgentID\":\"h.global\",\"HostData\":{\"OS\":\"x\""),
        case("host of this server by ID", "GET /v1/agent/host?server_id=server-1", "200 ^{\"AgentID\":\"h.global\""),
        case("host of the leader, this server", "GET /v1/agent/host?server_id=leader", "200 ^{\"AgentID\":\"h.global\""),
        case("host of this node", "GET /v1/agent/host?node_id=node-1", "200 ^{\"AgentID\":\"node-1\""),
        case("host of an unknown node", "GET /v1/agent/host?node_id=zzz", "404 Unknown node \"zzz\""),
        case("host of an unknown server", "GET /v1/agent/host?server_id=zzz", "500 unknown Nomad server zzz"),
        case(
            "host of a node and a server",
            "GET /v1/agent/host?node_id=a&server_id=b",
            "400 Can only forward to either client node or server",
        ),
    ])
    .await;
}

/// What force-leave asks of the agent: the node and `prune` (empty and absent are false).
#[tokio::test]
async fn force_leave_passes_node_and_prune() {
    for (q, prune) in [
        ("node=a", false),
        ("node=a&prune=1", true),
        ("node=a&prune=true", true),
        ("node=a&prune=T", true),
        ("node=a&prune=false", false),
        ("node=a&prune=0", false),
        ("node=a&prune", false),
        ("node=server2.global&prune=1", true),
    ] {
        let a = TestApp::new(SERVER_ONLY);
        let r = a
            .call("POST", &format!("/v1/agent/force-leave?{q}"), None, "")
            .await;
        assert_eq!((r.status, r.body.as_str()), (200, ""), "{q}");
        let node = q.split('&').next().and_then(|n| n.strip_prefix("node="));
        let asked = a.info.force_leaves.lock().unwrap().clone();
        assert_eq!(asked, vec![(node.unwrap().to_string(), prune)], "{q}");
    }
    let a = TestApp::new(SERVER_ONLY);
    a.call("PUT", "/v1/agent/force-leave?node=a&prune=maybe", None, "")
        .await;
    assert_eq!(
        a.info.force_leaves.lock().unwrap().len(),
        0,
        "a refused request reaches the agent"
    );
}

/// Nomad's blocks for what Caravan lacks appear in `/v1/agent/self` under Nomad's names, every
/// secret `<redacted>` when set and `""` when not; the telemetry block with Nomad's defaults.
#[tokio::test]
async fn self_shows_nomad_blocks_with_secrets_redacted() {
    let hcl = r#"
leave_on_terminate = true
consul {
  address = "127.0.0.1:8500"
  token   = "consul-secret"
  ssl     = true
  auth    = "user:consul-password"
}
vault {
  enabled = true
  address = "https://vault:8200"
  token   = "vault-secret"
}
acl {
  token_ttl         = "30s"
  replication_token = "replication-secret"
}
server {
  heartbeat_grace = "10s"
}
client {
  node_pool = "prod"
}
tls {
  verify_server_hostname = true
}
telemetry {
  prometheus_metrics = true
  collection_interval = "5s"
  circonus_api_token = "circonus-secret"
}
plugin "docker" {
  config {
    auth {
      password = "registry-secret"
    }
  }
}
ui {
  enabled = false
}
keyring "awskms" {
  active = true
  name   = "primary"
  config {
    kms_key_id = "kms-secret"
  }
}
"#;
    let t = TestApp::new(hcl);
    let got = t.call("GET", "/v1/agent/self", None, "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    for secret in [
        "consul-secret",
        "consul-password",
        "vault-secret",
        "replication-secret",
        "circonus-secret",
        "registry-secret",
        "kms-secret",
    ] {
        assert!(!got.body.contains(secret), "{secret} shown: {}", got.body);
    }
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    let c = &v["config"];
    assert_eq!(c["LeaveOnTerm"], true);
    assert_eq!(c["LeaveOnInt"], false);
    assert_eq!(c["Consuls"][0]["Token"], "<redacted>");
    assert_eq!(c["Consuls"][0]["Auth"], "<redacted>");
    assert_eq!(c["Consuls"][0]["Addr"], "127.0.0.1:8500");
    assert_eq!(c["Consuls"][0]["EnableSSL"], true);
    assert_eq!(c["Consuls"][0]["Name"], "default");
    assert_eq!(c["Vaults"][0]["Token"], "<redacted>");
    assert_eq!(c["Vaults"][0]["Addr"], "https://vault:8200");
    assert_eq!(c["ACL"]["ReplicationToken"], "<redacted>");
    assert_eq!(c["ACL"]["TokenTTL"], 30_000_000_000u64);
    assert_eq!(c["Server"]["HeartbeatGrace"], 10_000_000_000u64);
    assert_eq!(c["Client"]["NodePool"], "prod");
    assert_eq!(c["TLSConfig"]["VerifyServerHostname"], true);
    let tel = &c["Telemetry"];
    assert_eq!(tel["PrometheusMetrics"], true);
    assert_eq!(tel["CollectionInterval"], "5s");
    assert_eq!(tel["InMemoryCollectionInterval"], "10s");
    assert_eq!(tel["InMemoryRetentionPeriod"], "1m");
    assert_eq!(tel["CirconusAPIToken"], "<redacted>");
    assert_eq!(tel["CirconusAPIApp"], "");
    assert_eq!(tel["DisableAllocationHookMetrics"], false);
    assert_eq!(tel["FilterDefault"], serde_json::Value::Null);
    assert_eq!(c["Plugins"][0]["Name"], "docker");
    assert_eq!(c["Plugins"][0]["Config"]["auth"], "<redacted>");
    assert_eq!(c["UI"]["Enabled"], false);
    assert_eq!(
        c["KEKProviders"][0],
        serde_json::json!({"Provider": "awskms", "Name": "primary", "Active": true})
    );
    assert_eq!(c["Audit"], serde_json::Value::Null);

    // Unset secrets are "", not absent; the integrations are empty lists.
    let t = TestApp::new("consul {\n address = \"x\"\n}\n");
    let v: serde_json::Value =
        serde_json::from_str(&t.call("GET", "/v1/agent/self", None, "").await.body).unwrap();
    let c = &v["config"];
    assert_eq!(c["Consuls"][0]["Token"], "");
    assert_eq!(c["Vaults"], serde_json::json!([]));
    assert_eq!(c["ACL"]["ReplicationToken"], "");
    assert_eq!(c["Telemetry"]["CirconusAPIToken"], "");
    assert_eq!(c["Telemetry"]["PrometheusMetrics"], false);
}
