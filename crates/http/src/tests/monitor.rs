//! `/v1/agent/monitor`: its parameters in the spec's order, targeting and the token. A request
//! that passes every check starts a stream; its rows expect `200 *` (the body is not read).

use super::{ACLS, AGENT_READ, CLIENT_ONLY, Case, NODE_WRITE, case, run};

/// The monitor area's one helper: each row on a fresh agent with every capability.
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

#[tokio::test]
async fn monitor_rules() {
    check(&[
        // Each parameter error, with the later ones also wrong: the order is the spec's.
        case("log level first", "GET /v1/agent/monitor?log_level=warning&log_json=x", "400 Unknown log level: warning"),
        case(
            "log_json next",
            "GET /v1/agent/monitor?log_json=x&plain=y",
            "400 Unknown option for log json: strconv.ParseBool: parsing \"x\": invalid syntax",
        ),
        case(
            "plain next",
            "GET /v1/agent/monitor?plain=y&log_include_location=z",
            "400 Unknown option for plain: strconv.ParseBool: parsing \"y\": invalid syntax",
        ),
        case(
            "log_include_location next",
            "GET /v1/agent/monitor?log_include_location=z&node_id=a&server_id=b",
            "400 Unknown option for log_include_location: strconv.ParseBool: parsing \"z\": invalid syntax",
        ),
        case(
            "a node and a server",
            "GET /v1/agent/monitor?node_id=a&server_id=b",
            "400 Cannot target node and server simultaneously",
        ),
        case(
            "an unknown server",
            "GET /v1/agent/monitor?server_id=nobody.global",
            "400 unknown Nomad server nobody.global",
        ),
        case("an unknown node", "GET /v1/agent/monitor?node_id=zz", "404 Unknown node \"zz\""),
        case("every level name", "GET /v1/agent/monitor?log_level=TRACE", "200 *"),
        case("off", "GET /v1/agent/monitor?log_level=off&plain=true", "200 *")
            .answers_header("content-type", Some("text/plain")),
        case("a JSON stream", "GET /v1/agent/monitor?log_json=true", "200 *")
            .answers_header("content-type", Some("application/json")),
        case("this node", "GET /v1/agent/monitor?node_id=node-1", "200 *"),
        case("this server", "GET /v1/agent/monitor?server_id=leader", "200 *"),
        // A client-only agent ignores server_id and streams its own logs (spec §8).
        case("client-only: server_id ignored", "GET /v1/agent/monitor?server_id=nobody.global", "200 *")
            .config(CLIENT_ONLY),
        case("client-only: node_id still checked", "GET /v1/agent/monitor?node_id=zz", "404 Unknown node \"zz\"")
            .config(CLIENT_ONLY),
        // With ACLs: agent:read, checked after the parameters.
        case("ACLs: no token", "GET /v1/agent/monitor", "403 Permission denied").config(ACLS),
        case("ACLs: node:write is not enough", "GET /v1/agent/monitor", "403 Permission denied")
            .config(ACLS)
            .token(NODE_WRITE),
        case("ACLs: agent:read", "GET /v1/agent/monitor", "200 *").config(ACLS).token(AGENT_READ),
        case("ACLs: parameters before the token", "GET /v1/agent/monitor?log_level=loud", "400 Unknown log level: loud")
            .config(ACLS),
    ])
    .await;
}
