//! `/v1/agent/pprof/<name>`: parameter rules, targeting, availability and the headers per
//! profile. The fake's profile body is the profile's name; collecting real profiles stays a
//! process test.

use super::{ACLS, AGENT_READ, AGENT_WRITE, Case, MGMT, case, run};

/// The pprof area's one helper: each row on a fresh agent with every capability.
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

#[tokio::test]
async fn pprof_rules() {
    check(&[
        case("no name", "GET /v1/agent/pprof/", "404 Invalid method"),
        case(
            "symbol",
            "GET /v1/agent/pprof/symbol",
            "404 Pprof profile not found profile: symbol",
        ),
        case(
            "latency",
            "GET /v1/agent/pprof/latency",
            "404 Pprof profile not found profile: latency",
        ),
        case(
            "a sub-path",
            "GET /v1/agent/pprof/heap/x",
            "404 Pprof profile not found profile: heap/x",
        ),
        case(
            "a node and a server",
            "GET /v1/agent/pprof/heap?node_id=a&server_id=b",
            "400 Cannot target node and server simultaneously",
        ),
        case(
            "an unknown server",
            "GET /v1/agent/pprof/heap?server_id=zz",
            "500 unknown Nomad server zz",
        ),
        case(
            "an unknown node",
            "GET /v1/agent/pprof/heap?node_id=zz",
            "404 Unknown node \"zz\"",
        ),
        case(
            "this node",
            "GET /v1/agent/pprof/heap?node_id=node-1",
            "200 heap",
        ),
        case(
            "this server",
            "GET /v1/agent/pprof/heap?server_id=h.global",
            "200 heap",
        ),
        case(
            "targeting before the profile name",
            "GET /v1/agent/pprof/nope?node_id=zz",
            "404 Unknown node \"zz\"",
        ),
        // Headers per profile.
        case(
            "cmdline is text",
            "GET /v1/agent/pprof/cmdline",
            "200 cmdline",
        )
        .answers_header("content-type", Some(TEXT))
        .answers_header("x-content-type-options", Some("nosniff"))
        .answers_header("content-disposition", None),
        case(
            "a named profile is an attachment",
            "GET /v1/agent/pprof/goroutine",
            "200 goroutine",
        )
        .answers_header("content-type", Some(BINARY))
        .answers_header(
            "content-disposition",
            Some("attachment; filename=\"goroutine\""),
        ),
        case(
            "debug=1 is text",
            "GET /v1/agent/pprof/goroutine?debug=1",
            "200 goroutine",
        )
        .answers_header("content-type", Some(TEXT))
        .answers_header("content-disposition", None),
        case(
            "debug=2 is text",
            "GET /v1/agent/pprof/goroutine?debug=2",
            "200 goroutine",
        )
        .answers_header("content-type", Some(TEXT)),
        case(
            "a CPU profile is an attachment",
            "GET /v1/agent/pprof/profile?seconds=1",
            "200 profile",
        )
        .answers_header("content-type", Some(BINARY))
        .answers_header(
            "content-disposition",
            Some("attachment; filename=\"profile\""),
        ),
        case(
            "a trace stays binary with debug",
            "GET /v1/agent/pprof/trace?debug=1",
            "200 trace",
        )
        .answers_header("content-type", Some(BINARY))
        .answers_header(
            "content-disposition",
            Some("attachment; filename=\"trace\""),
        ),
        // A caller-supplied ?profile= wins over the path (Nomad's quirk), not over cmdline.
        case(
            "?profile= wins",
            "GET /v1/agent/pprof/heap?profile=threadcreate&debug=1",
            "200 threadcreate",
        ),
        case(
            "?profile= names an unknown one",
            "GET /v1/agent/pprof/heap?profile=nope",
            "404 Pprof profile not found profile: nope",
        ),
        case(
            "?profile= does not change cmdline",
            "GET /v1/agent/pprof/cmdline?profile=heap",
            "200 cmdline",
        ),
        // The seconds bound: its text, and checked before the profile name is looked up.
        case(
            "seconds above the bound",
            "GET /v1/agent/pprof/profile?seconds=100000",
            "400 seconds must be at most 3600",
        ),
        case(
            "seconds one above",
            "GET /v1/agent/pprof/profile?seconds=3601",
            "400 seconds must be at most 3600",
        ),
        case(
            "seconds at i64::MAX",
            "GET /v1/agent/pprof/trace?seconds=9223372036854775807",
            "400 seconds must be at most 3600",
        ),
        case(
            "the bound before the name",
            "GET /v1/agent/pprof/nope?seconds=3601",
            "400 seconds must be at most 3600",
        ),
        case(
            "seconds at the bound",
            "GET /v1/agent/pprof/profile?seconds=3600",
            "200 profile",
        ),
        case(
            "negative seconds are 1",
            "GET /v1/agent/pprof/profile?seconds=-5",
            "200 profile",
        ),
        case(
            "unparsable seconds are 1",
            "GET /v1/agent/pprof/profile?seconds=18446744073709551615",
            "200 profile",
        ),
        // Availability (the process test `availability_table`).
        case(
            "enable_debug off, ACLs off",
            "GET /v1/agent/pprof/cmdline",
            "403 Permission denied",
        )
        .config("enable_debug = false\n"),
        case(
            "enable_debug on, ACLs off",
            "GET /v1/agent/pprof/cmdline",
            "200 cmdline",
        ),
        case(
            "ACLs: management",
            "GET /v1/agent/pprof/cmdline",
            "200 cmdline",
        )
        .config("enable_debug = false\nacl {\n enabled = true\n}\n")
        .token(MGMT),
        case(
            "ACLs: agent:write",
            "GET /v1/agent/pprof/cmdline",
            "200 cmdline",
        )
        .config("enable_debug = false\nacl {\n enabled = true\n}\n")
        .token(AGENT_WRITE),
        case(
            "ACLs: agent:read",
            "GET /v1/agent/pprof/cmdline",
            "403 Permission denied",
        )
        .config("enable_debug = false\nacl {\n enabled = true\n}\n")
        .token(AGENT_READ),
        case(
            "ACLs: no token",
            "GET /v1/agent/pprof/cmdline",
            "403 Permission denied",
        )
        .config("enable_debug = false\nacl {\n enabled = true\n}\n"),
        case(
            "ACLs: the token before the parameters",
            "GET /v1/agent/pprof/profile?seconds=3601",
            "403 Permission denied",
        )
        .config(ACLS),
        case(
            "ACLs: targeting before the token",
            "GET /v1/agent/pprof/heap?node_id=zz",
            "404 Unknown node \"zz\"",
        )
        .config(ACLS),
    ])
    .await;
}
