//! `/v1/metrics`: go-metrics JSON, the Prometheus text when enabled, GET only, no token.

use super::{ACLS, Case, case, run};

const PROMETHEUS: &str = "telemetry {\n prometheus_metrics = true\n}\n";

async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

#[tokio::test]
async fn metrics_rules() {
    check(&[
        case("JSON", "GET /v1/metrics", "200 ^{\"Timestamp\":\"")
            .answers_header("content-type", Some("application/json")),
        case(
            "its sections",
            "GET /v1/metrics",
            "200 ~\"Gauges\":[],\"Points\":[],\"Counters\":[],\"Samples\":[]}",
        ),
        case("PUT", "PUT /v1/metrics", "405 Invalid method"),
        case("HEAD", "HEAD /v1/metrics", "405 Invalid method"),
        case(
            "Prometheus off",
            "GET /v1/metrics?format=prometheus",
            "415 Prometheus is not enabled",
        ),
        case("Prometheus on", "GET /v1/metrics?format=prometheus", "200")
            .config(PROMETHEUS)
            .answers_header(
                "content-type",
                Some("text/plain; version=0.0.4; charset=utf-8"),
            ),
        case(
            "another format is JSON",
            "GET /v1/metrics?format=xml",
            "200 ^{\"Timestamp\"",
        ),
        case(
            "no token needed with ACLs",
            "GET /v1/metrics",
            "200 ^{\"Timestamp\"",
        )
        .config(ACLS),
        case(
            "without the capability",
            "GET /v1/metrics",
            "501 this agent does not serve the metrics API",
        )
        .info_only(),
    ])
    .await;
}
