//! `/v1/agent/monitor/export` (spec §12): its parameters in the spec's order, targeting, the
//! token and the log-file check. The fake exports one line naming the request it was given, so
//! a plain row shows what reached the host.

use super::{ACLS, AGENT_READ, CLIENT_ONLY, Case, NODE_WRITE, case, run};

const LOG_FILE: &str = "log_file = \"/var/log/caravan/\"\n";
const E: &str = "/v1/agent/monitor/export";

/// The export area's one helper: each row on a fresh agent with a `log_file`.
async fn check(cases: &[Case<'_>]) {
    run(LOG_FILE, cases).await
}

#[tokio::test]
async fn export_rules() {
    let u = |q: &str| format!("GET {E}?{q}");
    let rows = [
        (
            "on_disk first",
            u("on_disk=x&follow=y"),
            "400 Unknown value for on-disk: Failed to parse value of \"on_disk\" (x) as a bool: strconv.ParseBool: parsing \"x\": invalid syntax",
        ),
        (
            "follow next",
            u("on_disk=1&follow=y&plain=z"),
            "400 Unknown value for follow: Failed to parse value of \"follow\" (y) as a bool: strconv.ParseBool: parsing \"y\": invalid syntax",
        ),
        (
            "plain next",
            u("plain=z&logs_since=98seconds"),
            "400 Unknown value for plain: Failed to parse value of \"plain\" (z) as a bool: strconv.ParseBool: parsing \"z\": invalid syntax",
        ),
        (
            "logs_since next",
            u("logs_since=98seconds&node_id=a&server_id=b"),
            "400 Unknown value for logs-since: time: unknown unit \"seconds\" in duration \"98seconds\"",
        ),
        (
            "a node and a server",
            u("node_id=a&server_id=b&on_disk=true&service_name=nomad"),
            "400 Cannot target node and server simultaneously",
        ),
        (
            "the file and the journal",
            u("on_disk=true&service_name=x&follow=true"),
            "400 Cannot target journald and nomad log file simultaneously",
        ),
        (
            "neither",
            u("follow=true"),
            "400 Either -service-name or -on-disk must be set",
        ),
        (
            "neither, empty values",
            u("on_disk=&service_name="),
            "400 Either -service-name or -on-disk must be set",
        ),
        (
            "following the file",
            u("on_disk=true&follow=true"),
            "400 Cannot follow log file",
        ),
        (
            "a long service name",
            format!("GET {E}?service_name={}", "nomad".repeat(52)),
            "422 service name too long",
        ),
        (
            "a service that is not nomad",
            u("service_name=consul"),
            "422 service name must include 'nomad",
        ),
        (
            "a bad suffix",
            u("service_name=nomad.client"),
            "422 invalid suffix",
        ),
        (
            "an unsafe name",
            u("service_name=nomad%3Bx.service"),
            "422 nomad;x does not meet systemd conventions",
        ),
        (
            "an unknown server",
            u("on_disk=true&server_id=nobody.global"),
            "400 unknown Nomad server nobody.global",
        ),
        (
            "an unknown node",
            u("on_disk=true&node_id=zz"),
            "404 Unknown node \"zz\"",
        ),
        // What reached the host, in plain mode.
        (
            "the file",
            u("on_disk=true&plain=true"),
            "200 on_disk=true follow=false since=72h0m0s service=",
        ),
        (
            "the journal, followed",
            u("service_name=nomad.service&follow=1&logs_since=90m&plain=true"),
            "200 on_disk=false follow=true since=1h30m0s service=nomad.service",
        ),
        (
            "this node",
            u("on_disk=true&node_id=node-1&plain=true"),
            "200 on_disk=true follow=false since=72h0m0s service=",
        ),
        (
            "this server",
            u("on_disk=true&server_id=leader&plain=true"),
            "200 on_disk=true follow=false since=72h0m0s service=",
        ),
        (
            "any method",
            format!("DELETE {E}?on_disk=true&plain=true"),
            "200 on_disk=true follow=false since=72h0m0s service=",
        ),
        // Framed: one frame with the cumulative offset and no FileEvent.
        (
            "framed",
            u("on_disk=true"),
            "200 {\"Offset\":48,\"Data\":\"b25fZGlzaz10cnVlIGZvbGxvdz1mYWxzZSBzaW5jZT03MmgwbTBzIHNlcnZpY2U9\"}",
        ),
    ];
    let mut cases: Vec<Case<'_>> = rows.iter().map(|(n, r, e)| case(n, r, e)).collect();
    cases.extend([
        case(
            "plain content type",
            "GET /v1/agent/monitor/export?on_disk=true&plain=true",
            "200 *",
        )
        .answers_header("content-type", Some("text/plain")),
        case(
            "JSON content type",
            "GET /v1/agent/monitor/export?on_disk=true",
            "200 *",
        )
        .answers_header("content-type", Some("application/json")),
        // A client-only agent serves its own logs whatever server_id says (as monitor).
        case(
            "client-only: server_id ignored",
            "GET /v1/agent/monitor/export?on_disk=true&server_id=nobody.global",
            "200 *",
        )
        .config(CLIENT_ONLY),
        // With ACLs: agent:read, after the parameters.
        case(
            "ACLs: no token",
            "GET /v1/agent/monitor/export?on_disk=true",
            "403 Permission denied",
        )
        .config(ACLS),
        case(
            "ACLs: node:write is not enough",
            "GET /v1/agent/monitor/export?on_disk=true",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(NODE_WRITE),
        case(
            "ACLs: agent:read",
            "GET /v1/agent/monitor/export?on_disk=true&plain=1",
            "200 ~on_disk=true",
        )
        .config(ACLS)
        .token(AGENT_READ),
        case(
            "ACLs: parameters before the token",
            "GET /v1/agent/monitor/export",
            "400 Either -service-name or -on-disk must be set",
        )
        .config(ACLS),
        // Without the host's export, the route says so.
        case(
            "no export capability",
            "GET /v1/agent/monitor/export?on_disk=true",
            "501 this agent does not serve the debugging API",
        )
        .info_only(),
    ]);
    check(&cases).await;
    // The serving agent's own check, after everything else: an agent without `log_file`.
    run(
        "",
        &[
            case(
                "no log file",
                "GET /v1/agent/monitor/export?on_disk=true",
                "400 No nomad log file defined",
            ),
            case(
                "no log file, ACLs first",
                "GET /v1/agent/monitor/export?on_disk=true",
                "403 Permission denied",
            )
            .config(ACLS),
            case(
                "no log file, journald is fine",
                "GET /v1/agent/monitor/export?service_name=nomad&plain=true",
                "200 ~service=nomad",
            ),
        ],
    )
    .await;
}
