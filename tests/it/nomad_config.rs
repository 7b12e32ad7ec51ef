//! A real Nomad agent configuration, blocks for subsystems Caravan lacks included, loads in a
//! real agent: each such key is named once at WARN (in the log file, without its value) and
//! `/v1/agent/self` shows them as Nomad does, every secret redacted.

use std::time::{Duration, Instant};

use crate::support::{Agent, Scratch};

const NOMAD_CONFIG: &str = r#"
datacenter = "dc1"
leave_on_terminate = true
server {
  heartbeat_grace = "10s"
  default_scheduler_config {
    scheduler_algorithm = "spread"
  }
}
client {
  node_pool = "prod"
  options {
    "driver.raw_exec.enable" = "1"
  }
}
acl {
  replication_token = "replication-secret-1"
}
consul {
  address = "127.0.0.1:8500"
  token   = "consul-secret-2"
}
vault {
  enabled = false
  token   = "vault-secret-3"
}
telemetry {
  prometheus_metrics = true
  disable_hostname   = true
  circonus_api_token = "circonus-secret-4"
}
plugin "docker" {
  config {
    allow_privileged = true
  }
}
ui {
  enabled = true
}
audit {
  enabled = false
}
"#;

const SECRETS: [&str; 4] = [
    "replication-secret-1",
    "consul-secret-2",
    "vault-secret-3",
    "circonus-secret-4",
];

#[tokio::test]
async fn a_nomad_config_loads_warns_once_per_key_and_shows_redacted() {
    let scratch = Scratch::new();
    let log = scratch.0.join("agent.log");
    let agent = Agent::dev(&format!("log_file = \"{}\"\n{NOMAD_CONFIG}", log.display())).await;

    let self_ = agent.get("/v1/agent/self").await;
    assert_eq!(self_.status, 200, "{}", self_.text());
    for secret in SECRETS {
        assert!(!self_.text().contains(secret), "{secret} shown");
    }
    let c = &self_.json()["config"];
    assert_eq!(c["Consuls"][0]["Token"], "<redacted>");
    assert_eq!(c["Consuls"][0]["Addr"], "127.0.0.1:8500");
    assert_eq!(c["Vaults"][0]["Token"], "<redacted>");
    assert_eq!(c["ACL"]["ReplicationToken"], "<redacted>");
    assert_eq!(c["Telemetry"]["CirconusAPIToken"], "<redacted>");
    assert_eq!(c["Telemetry"]["PrometheusMetrics"], true);
    assert_eq!(c["Telemetry"]["CollectionInterval"], "1s");
    assert_eq!(c["Server"]["HeartbeatGrace"], 10_000_000_000u64);
    assert_eq!(c["Client"]["Options"]["driver.raw_exec.enable"], "1");
    assert_eq!(c["Plugins"][0]["Name"], "docker");
    assert_eq!(c["UI"]["Enabled"], true);
    assert_eq!(c["LeaveOnTerm"], true);

    let keys = [
        "leave_on_terminate",
        "consul",
        "vault",
        "ui",
        "plugin",
        "audit",
        "server.default_scheduler_config",
        "client.options",
        "client.node_pool",
        "acl.replication_token",
        "telemetry",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("agent started") {
            break text;
        }
        assert!(Instant::now() < deadline, "no start in the log: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for key in keys {
        let line = format!(
            "[WARN]  agent: configuration key has no effect in Caravan; it is accepted for Nomad compatibility: key={key}\n"
        );
        assert_eq!(text.matches(&line).count(), 1, "{key}: {text}");
    }
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
async fn a_typo_is_still_refused_naming_file_and_line() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "a.hcl",
        "data_dir = \"/tmp/x\"\nserver {\n  enabled = true\n  hartbeat_grace = \"10s\"\n}\n",
    );
    let out = crate::support::run_caravan(&["agent", &format!("-config={file}")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!("caravan: {file}:4: unknown key server.hartbeat_grace")
    );
    let out = crate::support::run_caravan(&["config", "validate", &file], &[]);
    assert!(!out.status.success());
}
