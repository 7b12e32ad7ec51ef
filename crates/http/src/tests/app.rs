//! The application around the handlers: `501` for a capability the host lacks, the headers on
//! every response, compression, body limits and timeouts, redirects, `tower::Service`.

use bytes::Bytes;
use http_body_util::BodyExt;

use super::{ACLS, Case, TestApp, case, run};

/// The app area's one helper: each row on a fresh agent, with every capability unless the row
/// says `info_only`.
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

/// An [`crate::App`] built from [`crate::AgentInfo`] alone: its own routes answer, every other
/// one `501` naming the capability it lacks.
#[tokio::test]
async fn missing_capabilities_answer_501() {
    let missing = |what| format!("501 this agent does not serve the {what} API");
    let (membership, servers, jobs) = (
        missing("membership"),
        missing("server list"),
        missing("jobs"),
    );
    let reload = missing("reload");
    let (schedulers, debugging, operator) = (
        missing("schedulers"),
        missing("debugging"),
        missing("operator"),
    );
    check(&[
        case("self still answers", "GET /v1/agent/self", "200 *").info_only(),
        case("health still answers", "GET /v1/agent/health?type=server", r#"200 {"server":{"ok":true,"message":"ok"}}"#)
            .info_only(),
        case("members", "GET /v1/agent/members", &membership).info_only(),
        case("join", "PUT /v1/agent/join?address=a", &membership).info_only(),
        case("force-leave", "PUT /v1/agent/force-leave?node=a", &membership).info_only(),
        case("servers", "GET /v1/agent/servers", &servers).info_only(),
        case("setting servers", "PUT /v1/agent/servers?address=a", &servers).info_only(),
        case("jobs", "GET /v1/jobs", &jobs).info_only(),
        case("job registration", "POST /v1/jobs", &jobs)
            .body(r#"{"Job": {"ID": "x", "Datacenters": ["dc1"], "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "d"}]}]}}"#)
            .info_only(),
        case("a node", "GET /v1/node/n1", &jobs).info_only(),
        case("schedulers", "GET /v1/agent/schedulers", &schedulers).info_only(),
        case("scheduler config", "GET /v1/agent/schedulers/config", &schedulers).info_only(),
        case("host", "GET /v1/agent/host", &debugging).info_only(),
        case("a profile", "GET /v1/agent/pprof/cmdline", &debugging).info_only(),
        case("monitor", "GET /v1/agent/monitor", &debugging).info_only(),
        case("status leader", "GET /v1/status/leader", &operator).info_only(),
        case("status peers", "GET /v1/status/peers", &operator).info_only(),
        case("snapshot", "GET /v1/operator/snapshot", &operator).info_only(),
        case("restoring an empty snapshot", "PUT /v1/operator/snapshot", &operator).info_only(),
        case("a bad scheduler config", "PUT /v1/agent/schedulers/config", &schedulers)
            .body("{nope")
            .info_only(),
        case("raft configuration", "GET /v1/operator/raft/configuration", &operator).info_only(),
        case("reload", "PUT /v1/agent/reload", &reload).info_only(),
        // The routes' own checks still come first.
        case("method before capability", "DELETE /v1/agent/members", "405 Invalid method").info_only(),
        case("kind before capability", "GET /v1/agent/servers", "501 Invalid method")
            .config("client {\n enabled = false\n}\n")
            .info_only(),
        case("ACLs off: the ACL API says so", "GET /v1/acl/policies", "400 ACL support disabled").info_only(),
        case("another server without forwarding", "GET /v1/agent/host?server_id=other", "500 unknown Nomad server other")
            .info_only(),
        // ACLs need the capability (the builder refuses without it): tokens are checked first.
        case("ACLs on: a token is checked first", "GET /v1/jobs", "403 Permission denied")
            .config(ACLS)
            .info_only(),
    ])
    .await;
}

#[tokio::test]
async fn every_response_rules() {
    const EXTRA: &str = "http_api_response_headers {\n \"X-Extra\" = \"v\"\n}\n";
    let big = "x".repeat(crate::MAX_BODY + 1);
    check(&[
        case("operator header on a 200", "GET /v1/agent/self", "200 *")
            .config(EXTRA)
            .answers_header("x-extra", Some("v"))
            .answers_header("vary", Some("Accept-Encoding")),
        case("operator header on a 404", "GET /nope", "404")
            .config(EXTRA)
            .answers_header("x-extra", Some("v"))
            .answers_header("vary", Some("Accept-Encoding"))
            .answers_header("content-type", None),
        case(
            "operator header on a 405",
            "PUT /v1/agent/self",
            "405 Invalid method",
        )
        .config(EXTRA)
        .answers_header("x-extra", Some("v")),
        case("nosniff on a 200", "GET /v1/agent/self", "200 *")
            .answers_header("x-content-type-options", Some("nosniff")),
        case("nosniff on a 404", "GET /nope", "404")
            .answers_header("x-content-type-options", Some("nosniff")),
        case(
            "nosniff on a 405",
            "PUT /v1/agent/self",
            "405 Invalid method",
        )
        .answers_header("x-content-type-options", Some("nosniff")),
        case("nosniff on a redirect", "GET /v1/agent/pprof", "301 *")
            .answers_header("x-content-type-options", Some("nosniff")),
        case(
            "nosniff on a profile",
            "GET /v1/agent/pprof/cmdline",
            "200 cmdline",
        )
        .answers_header("x-content-type-options", Some("nosniff")),
        case("nosniff on a 400", "GET /v1/agent/members?stale=x", "400 *")
            .answers_header("x-content-type-options", Some("nosniff")),
        case(
            "redirect: & is &amp; in the body only",
            "GET /v1/agent/pprof?a=1&b=2",
            "301 <a href=\"/v1/agent/pprof/?a=1&amp;b=2\">Moved Permanently</a>.\n\n",
        )
        .answers_header("location", Some("/v1/agent/pprof/?a=1&b=2")),
        case("keyring redirect", "GET /v1/agent/keyring", "301 *")
            .answers_header("location", Some("/v1/agent/keyring/")),
        case("gzip when asked", "GET /v1/agent/self", "200 *")
            .header("Accept-Encoding", "br, gzip")
            .answers_header("content-encoding", Some("gzip")),
        case("deflate when asked", "GET /v1/agent/self", "200 *")
            .header("Accept-Encoding", "deflate")
            .answers_header("content-encoding", Some("deflate")),
        case("nothing unasked", "GET /v1/agent/self", "200 *")
            .answers_header("content-encoding", None),
        case(
            "no compression on an upgrade",
            "GET /v1/agent/self",
            "200 *",
        )
        .header("Accept-Encoding", "gzip")
        .header("Upgrade", "websocket")
        .answers_header("content-encoding", None),
        case(
            "a stream is never compressed",
            "GET /v1/agent/monitor",
            "200 *",
        )
        .header("Accept-Encoding", "gzip")
        .answers_header("content-encoding", None),
        case(
            "a body over the limit",
            "PUT /v1/agent/schedulers/config",
            "413 ^failed to read request body: ",
        )
        .body(&big),
        case("an unknown path", "GET /v1/agent/nope", "404"),
        case(
            "pretty JSON",
            "GET /v1/status/peers?pretty",
            "200 [\n    \"10.0.0.1:4647\"\n]\n",
        ),
    ])
    .await;
}

/// The app mounted as a `tower::Service`: the same answers as [`crate::App::handle`].
#[tokio::test]
async fn the_app_is_a_tower_service() {
    use tower_service::Service;
    let mut app = TestApp::new("").app;
    type Req = http::Request<http_body_util::Full<Bytes>>;
    std::future::poll_fn(|cx| Service::<Req>::poll_ready(&mut app, cx))
        .await
        .unwrap();
    let req = http::Request::get("/v1/agent/health?type=server")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = app.call(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"server":{"ok":true,"message":"ok"}}"#);
}

#[tokio::test]
async fn redirect_body_is_html_escaped() {
    // The http crate refuses `"`, `<` and `>` in a request URI, so the handler is called with a
    // context built by hand: the escaping must not depend on that.
    let raw = r#"a="><script>alert(1)</script>&b='x'"#;
    let ctx = crate::Ctx {
        method: http::Method::GET,
        path: "/v1/agent/pprof".into(),
        raw_query: Some(raw.into()),
        query: crate::request::Query::parse(Some(raw)),
        token: None,
        body: Bytes::new(),
        hops: 0,
    };
    let resp = crate::handlers::redirect(&ctx, "/v1/agent/pprof/").unwrap();
    assert_eq!(resp.status(), 301);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "<a href=\"/v1/agent/pprof/?a=&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;b=&#39;x&#39;\">Moved Permanently</a>.\n\n"
    );
}

/// A slow body over a real connection: answered `408` within the configured timeout and the
/// connection closed. Bounded: the read gives up after 20 s (the timeout is 200 ms).
#[tokio::test]
async fn slow_request_body_gets_408_and_the_connection_is_closed() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let opts = crate::serve::ServeOptions {
        body_read_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let server = tokio::spawn(crate::serve::serve_http1(
        listener,
        TestApp::new("").app,
        opts,
        stopped,
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    // 3 bytes of a promised 100,000, then nothing more.
    conn.write_all(
        b"PUT /v1/agent/servers HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer and no close within 20 s; got {text:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\nfailed to read request body: timed out after 200ms"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{text}"
    );
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap();
}
