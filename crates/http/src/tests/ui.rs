//! The operator page (`/ui/`, the `/` redirect) and the guards in front of every route: the
//! DNS-rebinding `Host` check of a loopback-bound agent and the cross-site `Origin` check of
//! state-changing requests.

use super::{Case, case, run};

/// The ui area's one helper: each row on a fresh dev agent (bound to 127.0.0.1, node `h`).
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

const CSP: &str = caravan_ui::CONTENT_SECURITY_POLICY;

#[tokio::test]
async fn page_and_redirects() {
    check(&[
        case("root redirects to the page", "GET /", "307").answers_header("location", Some("/ui/")),
        case("any method at root", "PUT /", "307").answers_header("location", Some("/ui/")),
        case("slash-less prefix", "GET /ui", "301").answers_header("location", Some("/ui/")),
        case("index", "GET /ui/", "200 ^<!doctype html>")
            .answers_header("content-type", Some("text/html; charset=utf-8"))
            .answers_header("content-security-policy", Some(CSP))
            .answers_header("x-content-type-options", Some("nosniff"))
            .answers_header("x-frame-options", Some("DENY")),
        case(
            "index by name",
            "GET /ui/index.html",
            "200 ^<!doctype html>",
        ),
        case(
            "a disabled page is Nomad's stub",
            "GET /ui/",
            "200 <html><p>Nomad UI is disabled</p></html>",
        )
        .config("ui {\n enabled = false\n}\n")
        .answers_header("content-type", Some("text/html; charset=utf-8")),
        case(
            "every asset of a disabled page too",
            "GET /ui/app.js",
            "200 <html><p>Nomad UI is disabled</p></html>",
        )
        .config("ui {\n enabled = false\n}\n"),
        case("root still redirects", "GET /", "307")
            .config("ui {\n enabled = false\n}\n")
            .answers_header("location", Some("/ui/")),
        case("an enabled page", "GET /ui/", "200 ^<!doctype html>")
            .config("ui {\n enabled = true\n}\n"),
        case("script", "GET /ui/app.js", "200 ~textContent")
            .answers_header("content-type", Some("text/javascript; charset=utf-8"))
            .answers_header("content-security-policy", Some(CSP)),
        case("style", "GET /ui/app.css", "200 ~:root")
            .answers_header("content-type", Some("text/css; charset=utf-8")),
        case(
            "no such asset",
            "GET /ui/nope.js",
            "404 no such page: /ui/nope.js",
        )
        .answers_header("content-security-policy", Some(CSP))
        .answers_header("x-content-type-options", Some("nosniff")),
        case("no traversal", "GET /ui/../Cargo.toml", "404 ~no such page"),
        case("the page is read-only", "PUT /ui/", "405 Invalid method"),
        case(
            "needs no token with ACLs on",
            "GET /ui/",
            "200 ^<!doctype html>",
        )
        .config(super::ACLS),
        case("operator headers too", "GET /ui/", "200 *")
            .config("http_api_response_headers {\n \"X-Op\" = \"1\"\n}\n")
            .answers_header("x-op", Some("1")),
        case(
            "the API is unchanged",
            "GET /v1/agent/health?type=server",
            "200 ~\"ok\":true",
        )
        .answers_header("content-security-policy", None),
    ])
    .await;
}

#[tokio::test]
async fn rebinding_guard() {
    let refused = "403 ~DNS rebinding guard";
    check(&[
        case("no Host at all", "GET /v1/agent/self", "200 *"),
        case("loopback address", "GET /v1/agent/self", "200 *").header("host", "127.0.0.1:4646"),
        case("other loopback address", "GET /v1/agent/self", "200 *").header("host", "127.0.0.2"),
        case("IPv6 loopback", "GET /v1/agent/self", "200 *").header("host", "[::1]:4646"),
        case("localhost", "GET /v1/agent/self", "200 *").header("host", "localhost:4646"),
        case("its node name", "GET /v1/agent/self", "200 *").header("host", "h:4646"),
        case("a rebound name", "GET /v1/agent/self", refused).header("host", "evil.example:4646"),
        case("the page too", "GET /ui/", refused).header("host", "evil.example:4646"),
        case(
            "a name ending like localhost",
            "GET /v1/agent/self",
            refused,
        )
        .header("host", "localhost.evil.example"),
        case("another address", "GET /v1/agent/self", refused).header("host", "10.1.2.3:4646"),
        case(
            "from the URI's authority",
            "GET http://evil.example:4646/v1/agent/self",
            refused,
        ),
        case(
            "not bound to loopback: any Host",
            "GET /v1/agent/self",
            "200 *",
        )
        .config("addresses {\n http = \"0.0.0.0\"\n}\n")
        .header("host", "evil.example:4646"),
    ])
    .await;
}

#[tokio::test]
async fn cross_site_writes() {
    // POST /v1/agent/self passes the guard only to be refused by the route (405): a 405 shows
    // the guard let it through, a 403 that it stopped it.
    let passed = "405 Invalid method";
    let refused = "403 ~cross-site request refused: POST with Origin \"http://evil.example\"";
    let acao = |v: &'static str| -> String {
        format!("http_api_response_headers {{\n \"Access-Control-Allow-Origin\" = \"{v}\"\n}}\n")
    };
    let (star, exact, other) = (
        acao("*"),
        acao("http://evil.example"),
        acao("http://ok.example"),
    );
    check(&[
        case("no Origin (CLI, SDKs)", "POST /v1/agent/self", passed)
            .header("host", "127.0.0.1:4646"),
        case("same origin", "POST /v1/agent/self", passed)
            .header("host", "127.0.0.1:4646")
            .header("origin", "http://127.0.0.1:4646"),
        case("another site", "POST /v1/agent/self", refused)
            .header("host", "127.0.0.1:4646")
            .header("origin", "http://evil.example"),
        case(
            "same host, other port",
            "POST /v1/agent/self",
            "403 ~cross-site",
        )
        .header("host", "127.0.0.1:4646")
        .header("origin", "http://127.0.0.1:8080"),
        case("opaque origin", "POST /v1/agent/self", "403 ~cross-site")
            .header("host", "127.0.0.1:4646")
            .header("origin", "null"),
        case(
            "DELETE too",
            "DELETE /v1/agent/self",
            "403 ~cross-site request refused: DELETE",
        )
        .header("host", "127.0.0.1:4646")
        .header("origin", "http://evil.example"),
        case("reads are not writes", "GET /v1/agent/self", "200 *")
            .header("host", "127.0.0.1:4646")
            .header("origin", "http://evil.example"),
        case("CORS allows every origin", "POST /v1/agent/self", passed)
            .config(&star)
            .header("host", "127.0.0.1:4646")
            .header("origin", "http://evil.example"),
        case("CORS allows that origin", "POST /v1/agent/self", passed)
            .config(&exact)
            .header("host", "127.0.0.1:4646")
            .header("origin", "http://evil.example"),
        case("CORS allows another origin", "POST /v1/agent/self", refused)
            .config(&other)
            .header("host", "127.0.0.1:4646")
            .header("origin", "http://evil.example"),
        case(
            "a real write refused",
            "PUT /v1/agent/schedulers/config",
            refused.replace("POST", "PUT").leak(),
        )
        .body(r#"{"num_schedulers":0,"enabled_schedulers":["service"]}"#)
        .header("host", "127.0.0.1:4646")
        .header("origin", "http://evil.example"),
    ])
    .await;
}
