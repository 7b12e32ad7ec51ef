//! `/v1/agent/schedulers` and `/v1/agent/schedulers/config` over a fake worker pool
//! (`Schedulers`): the check order (agent kind, method, token, body, validation) and the
//! configuration table.

use std::sync::Mutex;

use caravan_agent_core::sched::{SchedulerConfig, WorkerInfo};

use super::{ACLS, AGENT_READ, CLIENT_ONLY, Case, MGMT, case, run};

/// Two CPUs, no workers, a configuration of 2 × `service, _core` that a valid write replaces.
pub(super) struct SchedFake {
    config: Mutex<SchedulerConfig>,
}

impl SchedFake {
    pub(super) fn new() -> SchedFake {
        SchedFake {
            config: Mutex::new(SchedulerConfig {
                num_schedulers: 2,
                enabled_schedulers: vec!["service".into(), "_core".into()],
            }),
        }
    }
}

impl crate::Schedulers for SchedFake {
    fn schedulers(&self) -> Option<Vec<WorkerInfo>> {
        Some(Vec::new())
    }
    fn scheduler_config(&self) -> Option<SchedulerConfig> {
        Some(self.config.lock().unwrap().clone())
    }
    fn set_scheduler_config(&self, config: SchedulerConfig) -> SchedulerConfig {
        *self.config.lock().unwrap() = config.clone();
        config
    }
    fn num_cpus(&self) -> u32 {
        2
    }
}

/// The schedulers area's one helper: each row on a fresh agent with every capability.
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

#[tokio::test]
async fn scheduler_rules() {
    let put =
        |name, body, expected| case(name, "PUT /v1/agent/schedulers/config", expected).body(body);
    check(&[
        // The configuration table (the process test `config_errors`).
        put("empty body", "", "400 Invalid request: Request body is empty"),
        put("null changes nothing and is invalid", "null", "400 Invalid request"),
        put(
            "PascalCase keys are not the fields",
            r#"{"NumSchedulers": 1, "EnabledSchedulers": ["_core"]}"#,
            "400 Invalid request",
        ),
        put(
            "without _core",
            r#"{"num_schedulers": 1, "enabled_schedulers": ["service"]}"#,
            "400 Invalid request",
        ),
        put(
            "more workers than CPUs",
            r#"{"num_schedulers": 4096, "enabled_schedulers": ["_core"]}"#,
            "400 Invalid request",
        ),
        put(
            "negative workers",
            r#"{"num_schedulers": -1, "enabled_schedulers": ["_core"]}"#,
            "400 Invalid request",
        ),
        put(
            "an unknown scheduler",
            r#"{"num_schedulers": 1, "enabled_schedulers": ["_core", "gpu"]}"#,
            "400 Invalid request",
        ),
        put("no JSON", "{nope", "400 ^Invalid request: "),
        put(
            "a string count",
            r#"{"num_schedulers": "one"}"#,
            "400 ~cannot unmarshal string",
        ),
        put(
            "a valid change",
            r#"{"num_schedulers": 1, "enabled_schedulers": ["batch", "_core"], "server_id": "ignored"}"#,
            r#"200 {"server_id":"h.global","num_schedulers":1,"enabled_schedulers":["batch","_core"]}"#,
        ),
        put("zero workers", r#"{"num_schedulers": 0, "enabled_schedulers": ["_core"]}"#, "200 ~\"num_schedulers\":0"),
        case("POST writes too", "POST /v1/agent/schedulers/config", "200 ~\"num_schedulers\":2")
            .body(r#"{"num_schedulers": 2, "enabled_schedulers": ["_core"]}"#),
        case("the configuration", "GET /v1/agent/schedulers/config", r#"200 {"server_id":"h.global","num_schedulers":2,"enabled_schedulers":["service","_core"]}"#),
        case("the workers", "GET /v1/agent/schedulers", r#"200 {"server_id":"h.global","schedulers":[]}"#),
        case("config by DELETE", "DELETE /v1/agent/schedulers/config", "405 Invalid method"),
        case("config by HEAD", "HEAD /v1/agent/schedulers/config", "405 Invalid method"),
        case("workers by PUT", "PUT /v1/agent/schedulers", "405 Invalid method"),
        // Client-only agents: 400 Server only endpoint, for every method, before anything else.
        case("client-only: workers", "GET /v1/agent/schedulers", "400 Server only endpoint").config(CLIENT_ONLY),
        case("client-only: workers by DELETE", "DELETE /v1/agent/schedulers", "400 Server only endpoint")
            .config(CLIENT_ONLY),
        case("client-only: config by PUT", "PUT /v1/agent/schedulers/config", "400 Server only endpoint")
            .config(CLIENT_ONLY)
            .body("{nope"),
        case("client-only: config by PATCH", "PATCH /v1/agent/schedulers/config", "400 Server only endpoint")
            .config(CLIENT_ONLY),
        // The token is checked before the body (the process test `token_is_checked_before_the_body`).
        put("ACLs: no token, bad body", "{nope", "403 Permission denied").config(ACLS),
        put("ACLs: agent:read may not write", "{nope", "403 Permission denied").config(ACLS).token(AGENT_READ),
        put("ACLs: management, bad body", "{nope", "400 ^Invalid request: ").config(ACLS).token(MGMT),
        case("ACLs: workers without a token", "GET /v1/agent/schedulers", "403 Permission denied").config(ACLS),
        case("ACLs: workers with management", "GET /v1/agent/schedulers", "200 *").config(ACLS).token(MGMT),
        case("ACLs: config with agent:read", "GET /v1/agent/schedulers/config", "200 *").config(ACLS).token(AGENT_READ),
        case("ACLs: method before token", "DELETE /v1/agent/schedulers/config", "405 Invalid method").config(ACLS),
    ])
    .await;
}
