//! `/v1/status/leader`, `/v1/status/peers`, `/v1/operator/raft/configuration` and
//! `/v1/operator/snapshot` over a fake cluster (`Operator`).

use super::{ACLS, AGENT_READ, AGENT_WRITE, Case, MGMT, NODE_READ, OPERATOR_READ, case, run};
use crate::api::{Indexed, ReadError, RestoreError};

/// Leader `10.0.0.1:4647`, the only voter; no Raft configuration (a client's answer); a
/// snapshot `SNAP` at index 9; a restore of anything but `SNAP` is refused.
pub(super) struct OperatorFake;

impl crate::Operator for OperatorFake {
    async fn status_leader(&self) -> Result<String, String> {
        Ok("10.0.0.1:4647".into())
    }
    async fn status_peers(&self) -> Result<Vec<String>, String> {
        Ok(vec!["10.0.0.1:4647".into()])
    }
    fn raft_configuration(&self) -> Result<crate::dto::RaftConfigurationDto, ReadError> {
        Err(ReadError::NoServer)
    }
    async fn autopilot_health(&self) -> Result<crate::dto::AutopilotHealthDto, ReadError> {
        Ok(crate::dto::AutopilotHealthDto {
            healthy: false,
            failure_tolerance: 0,
            servers: vec![crate::dto::ServerHealthDto {
                id: "a".into(),
                name: "s1.global".into(),
                address: "10.0.0.1:4647".into(),
                serf_status: "alive".into(),
                version: "1.10.0".into(),
                leader: true,
                last_contact: "0s".into(),
                last_term: 2,
                last_index: 9,
                healthy: false,
                voter: true,
                stable_since: "2026-01-02T03:04:05Z".into(),
            }],
        })
    }
    async fn node_heartbeats(
        &self,
    ) -> Result<Vec<caravan_agent_core::heartbeat::LastHeartbeat>, ReadError> {
        Ok(vec![caravan_agent_core::heartbeat::LastHeartbeat {
            node_id: "n1".into(),
            since_ms: 1_500,
            ttl_ms: 10_000,
        }])
    }
    async fn snapshot_save(&self) -> Result<Indexed<Vec<u8>>, ReadError> {
        Ok(Indexed {
            value: b"SNAP".to_vec(),
            index: 9,
            known_leader: true,
            last_contact: std::time::Duration::ZERO,
        })
    }
    async fn snapshot_restore(&self, snapshot: Vec<u8>) -> Result<(), RestoreError> {
        if snapshot == b"SNAP" {
            Ok(())
        } else {
            Err(RestoreError::Invalid("snapshot does not decode".into()))
        }
    }
}

/// A reload that succeeds, unless the agent is named `reload-fails` (then the text of a file
/// that does not load).
pub(super) struct ReloadFake(pub(super) String);

impl crate::Reload for ReloadFake {
    async fn reload(&self) -> Result<(), String> {
        if self.0 == "reload-fails" {
            Err("a.hcl:3: log_level: invalid log level \"LOUD\"".into())
        } else {
            Ok(())
        }
    }
}

/// The operator area's one helper: each row on a fresh agent with every capability.
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

/// `PUT|POST /v1/agent/reload` (spec §12): method, then `agent:write`, then the host's reload.
#[tokio::test]
async fn reload_rules() {
    check(&[
        case("reload", "PUT /v1/agent/reload", "200 "),
        case("reload by POST", "POST /v1/agent/reload", "200 "),
        case(
            "reload by GET",
            "GET /v1/agent/reload",
            "405 Invalid method",
        ),
        case(
            "a failed reload",
            "PUT /v1/agent/reload",
            "500 a.hcl:3: log_level: invalid log level \"LOUD\"",
        )
        .config("name = \"reload-fails\"\n"),
        case(
            "ACLs: no token",
            "PUT /v1/agent/reload",
            "403 Permission denied",
        )
        .config(ACLS),
        case(
            "ACLs: agent:read may not",
            "PUT /v1/agent/reload",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(AGENT_READ),
        case("ACLs: agent:write may", "PUT /v1/agent/reload", "200 ")
            .config(ACLS)
            .token(AGENT_WRITE),
        case(
            "ACLs: method before token",
            "GET /v1/agent/reload",
            "405 Invalid method",
        )
        .config(ACLS),
    ])
    .await;
}

#[tokio::test]
async fn status_and_operator_rules() {
    check(&[
        case("leader", "GET /v1/status/leader", "200 \"10.0.0.1:4647\"")
            .answers_header("content-type", Some("application/json")),
        case("peers", "GET /v1/status/peers", "200 [\"10.0.0.1:4647\"]"),
        case(
            "leader with a bad stale",
            "GET /v1/status/leader?stale=x",
            "400 Expect `true` or `false` for `stale` query string parameter",
        ),
        case(
            "peers with a bad index",
            "GET /v1/status/peers?index=x",
            "400 Invalid index",
        ),
        case(
            "leader by PUT",
            "PUT /v1/status/leader",
            "405 Invalid method",
        ),
        case(
            "peers by POST",
            "POST /v1/status/peers",
            "405 Invalid method",
        ),
        case(
            "raft configuration without a server",
            "GET /v1/operator/raft/configuration",
            "501 this agent runs no server",
        ),
        case(
            "raft configuration by PUT",
            "PUT /v1/operator/raft/configuration",
            "405 Invalid method",
        ),
        case(
            "raft configuration needs operator:read",
            "GET /v1/operator/raft/configuration",
            "403 Permission denied",
        )
        .config(ACLS),
        case(
            "raft configuration with operator:read",
            "GET /v1/operator/raft/configuration",
            "501 this agent runs no server",
        )
        .config(ACLS)
        .token(OPERATOR_READ),
        case(
            "an unhealthy cluster answers 429 with the health",
            "GET /v1/operator/autopilot/health",
            r#"429 {"Healthy":false,"FailureTolerance":0,"Servers":[{"ID":"a","Name":"s1.global","Address":"10.0.0.1:4647","SerfStatus":"alive","Version":"1.10.0","Leader":true,"LastContact":"0s","LastTerm":2,"LastIndex":9,"Healthy":false,"Voter":true,"StableSince":"2026-01-02T03:04:05Z"}]}"#,
        )
        .answers_header("content-type", Some("application/json")),
        case(
            "autopilot health by PUT",
            "PUT /v1/operator/autopilot/health",
            "405 Invalid method",
        ),
        case(
            "autopilot health needs operator:read",
            "GET /v1/operator/autopilot/health",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(AGENT_READ),
        case(
            "autopilot health with operator:read",
            "GET /v1/operator/autopilot/health",
            "429 *",
        )
        .config(ACLS)
        .token(OPERATOR_READ),
        case(
            "node heartbeats: ages in nanoseconds",
            "GET /v1/nodes/heartbeats",
            r#"200 ~"SinceLastHeartbeat":1500000000,"HeartbeatTTL":10000000000}]"#,
        )
        .answers_header("content-type", Some("application/json")),
        case(
            "node heartbeats: the node and a wall time",
            "GET /v1/nodes/heartbeats",
            r#"200 ~[{"NodeID":"n1","LastHeartbeat":"20"#,
        ),
        case(
            "node heartbeats by PUT",
            "PUT /v1/nodes/heartbeats",
            "405 Invalid method",
        ),
        case(
            "node heartbeats need node:read",
            "GET /v1/nodes/heartbeats",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(OPERATOR_READ),
        case(
            "node heartbeats with node:read",
            "GET /v1/nodes/heartbeats",
            "200 ~\"NodeID\":\"n1\"",
        )
        .config(ACLS)
        .token(NODE_READ),
        case("snapshot", "GET /v1/operator/snapshot", "200 SNAP")
            .answers_header("content-type", Some("application/octet-stream"))
            .answers_header("x-nomad-index", Some("9"))
            .answers_header("x-nomad-knownleader", Some("true")),
        case(
            "snapshot needs management",
            "GET /v1/operator/snapshot",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(OPERATOR_READ),
        case(
            "snapshot with management",
            "GET /v1/operator/snapshot",
            "200 SNAP",
        )
        .config(ACLS)
        .token(MGMT),
        case(
            "restore needs management, before the body",
            "PUT /v1/operator/snapshot",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(OPERATOR_READ),
        case(
            "restore without a body",
            "PUT /v1/operator/snapshot",
            "400 Request body is empty",
        ),
        case(
            "restore of a bad snapshot",
            "PUT /v1/operator/snapshot",
            "400 snapshot does not decode",
        )
        .body("junk"),
        case("restore", "POST /v1/operator/snapshot", "200").body("SNAP"),
        case(
            "snapshot by DELETE",
            "DELETE /v1/operator/snapshot",
            "405 Invalid method",
        ),
    ])
    .await;
}
