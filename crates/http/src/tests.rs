//! Handler tests against a fake agent: every rule that depends on the kind of agent.

use std::sync::Mutex;

use bytes::Bytes;
use caravan_agent_core::config::{
    AgentConfig, Format, HostFacts, dev_defaults, merge_trees, parse_config, tree_to_file,
};
use caravan_agent_core::member::Member;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};

use crate::App;
use crate::api::{AclWriteError, AgentApi, JoinResult, Stats};
use crate::dto::{HostData, MembersResponse, VersionDto};
use crate::monitor::MonitorHub;
use caravan_agent_core::CoreError;
use caravan_agent_core::acl::{Acl, AclState};

struct Fake {
    config: AgentConfig,
    servers: Mutex<Vec<String>>,
    hub: MonitorHub,
}

fn config(hcl: &str) -> AgentConfig {
    let mut tree = dev_defaults().tree;
    merge_trees(&mut tree, parse_config("t", hcl, Format::Hcl).unwrap().tree);
    let host = HostFacts {
        hostname: "h".into(),
        num_cpus: 2,
        private_ip: "127.0.0.1".parse().unwrap(),
    };
    AgentConfig::resolve(tree_to_file(&tree).unwrap(), true, &host, vec![]).unwrap()
}

impl AgentApi for Fake {
    fn config(&self) -> &AgentConfig {
        &self.config
    }
    fn version(&self) -> VersionDto {
        VersionDto::release("0.1.0", "")
    }
    fn member(&self) -> Member {
        Member::none()
    }
    fn stats(&self) -> Stats {
        Stats::new()
    }
    fn server_health(&self) -> Result<(), String> {
        Ok(())
    }
    fn client_health(&self) -> Result<(), String> {
        if self.servers.lock().unwrap().is_empty() {
            Err("no known servers".into())
        } else {
            Ok(())
        }
    }
    fn node_id(&self) -> Option<String> {
        Some("node-1".into())
    }
    fn server_id(&self) -> Option<String> {
        Some("server-1".into())
    }
    fn is_leader(&self) -> bool {
        true
    }
    async fn host_data(&self) -> Result<HostData, String> {
        Ok(HostData {
            os: "x".into(),
            network: vec![],
            resolv_conf: String::new(),
            hosts: String::new(),
            environment: Default::default(),
            disk: Default::default(),
        })
    }
    fn servers(&self) -> Vec<String> {
        self.servers.lock().unwrap().clone()
    }
    async fn set_servers(&self, addresses: Vec<String>) -> Result<(), String> {
        *self.servers.lock().unwrap() = addresses;
        Ok(())
    }

    async fn members(&self, _token: Option<&str>) -> Result<MembersResponse, String> {
        Ok(MembersResponse {
            server_name: "h".into(),
            server_region: "global".into(),
            server_dc: "dc1".into(),
            members: vec![],
        })
    }
    async fn join(&self, addresses: Vec<String>) -> JoinResult {
        JoinResult {
            joined: 0,
            errors: addresses
                .iter()
                .map(|a| format!("Failed to join {a}"))
                .collect(),
        }
    }
    async fn force_leave(&self, _name: String, _prune: bool) -> Result<(), String> {
        Ok(())
    }

    fn schedulers(&self) -> Option<Vec<caravan_agent_core::sched::WorkerInfo>> {
        None
    }
    fn scheduler_config(&self) -> Option<caravan_agent_core::sched::SchedulerConfig> {
        None
    }
    fn set_scheduler_config(
        &self,
        config: caravan_agent_core::sched::SchedulerConfig,
    ) -> caravan_agent_core::sched::SchedulerConfig {
        config
    }
    async fn register_job(
        &self,
        _job: caravan_agent_core::jobs::Job,
    ) -> Result<crate::api::JobWriteResult, crate::api::JobWriteError> {
        Err(crate::api::JobWriteError::NoServer)
    }
    async fn deregister_job(
        &self,
        _id: &str,
    ) -> Result<Option<crate::api::JobWriteResult>, crate::api::JobWriteError> {
        Ok(None)
    }
    async fn status_leader(&self) -> Result<String, String> {
        Ok(String::new())
    }
    async fn status_peers(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    fn jobs(&self) -> Vec<caravan_agent_core::jobs::Job> {
        Vec::new()
    }
    fn job(&self, _id: &str) -> Option<caravan_agent_core::jobs::Job> {
        None
    }
    fn job_allocations(&self, _id: &str) -> Option<Vec<caravan_agent_core::jobs::Allocation>> {
        None
    }
    fn evaluation(&self, _id: &str) -> Option<caravan_agent_core::jobs::Evaluation> {
        None
    }
    fn nodes(&self) -> Vec<caravan_agent_core::jobs::Node> {
        Vec::new()
    }
    fn num_cpus(&self) -> u32 {
        2
    }
    fn monitor_hub(&self) -> &MonitorHub {
        &self.hub
    }
    async fn profile(
        &self,
        request: crate::api::ProfileRequest,
    ) -> Result<Vec<u8>, crate::ApiError> {
        Ok(request.name.into_bytes())
    }
    fn resolve_token(&self, _token: Option<&str>) -> Result<Acl, String> {
        Err("Permission denied".into())
    }
    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        read(&AclState::default())
    }
    async fn acl_write<R: Send>(
        &self,
        change: impl Fn(&mut AclState) -> Result<R, CoreError> + Send + Sync,
    ) -> Result<R, AclWriteError> {
        change(&mut AclState::default()).map_err(|e| AclWriteError::Invalid(e.to_string()))
    }
}

fn app(hcl: &str, servers: &[&str]) -> App<Fake> {
    App::new(Fake {
        config: config(hcl),
        servers: Mutex::new(servers.iter().map(|s| s.to_string()).collect()),
        hub: MonitorHub::new(),
    })
    .unwrap()
}

async fn call(app: &App<Fake>, method: &str, uri: &str) -> (u16, HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = app.handle(req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

const CLIENT_ONLY: &str = "server {\n enabled = false\n}\n";
const SERVER_ONLY: &str = "client {\n enabled = false\n}\n";

#[tokio::test]
async fn health_rules() {
    let both = app("", &["1.2.3.4:4647"]);
    let (s, h, b) = call(&both, "GET", "/v1/agent/health").await;
    assert_eq!(
        (s, b.as_str()),
        (
            200,
            r#"{"client":{"ok":true,"message":"ok"},"server":{"ok":true,"message":"ok"}}"#
        )
    );
    assert_eq!(h["content-type"], "application/json");
    let (s, _, b) = call(&both, "GET", "/v1/agent/health?type=").await;
    assert_eq!((s, b.as_str()), (200, "{}"));
    let (s, _, b) = call(&both, "GET", "/v1/agent/health?type=foo").await;
    assert_eq!((s, b.as_str()), (200, "{}"));

    let server_only = app(SERVER_ONLY, &[]);
    let (s, h, b) = call(&server_only, "GET", "/v1/agent/health?type=client").await;
    assert_eq!(
        (s, b.as_str()),
        (
            500,
            r#"{"client":{"ok":false,"message":"client not enabled"}}"#
        )
    );
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    let (s, _, b) = call(&server_only, "GET", "/v1/agent/health").await;
    assert_eq!(
        (s, b.as_str()),
        (200, r#"{"server":{"ok":true,"message":"ok"}}"#)
    );

    let lonely_client = app(CLIENT_ONLY, &[]);
    let (s, _, b) = call(&lonely_client, "GET", "/v1/agent/health").await;
    assert_eq!(
        (s, b.as_str()),
        (
            500,
            r#"{"client":{"ok":false,"message":"no known servers"}}"#
        )
    );
    let (s, _, b) = call(
        &lonely_client,
        "GET",
        "/v1/agent/health?type=server&type=client",
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (
            500,
            r#"{"client":{"ok":false,"message":"no known servers"},"server":{"ok":false,"message":"server not enabled"}}"#
        )
    );
    let (s, _, b) = call(&lonely_client, "GET", "/v1/agent/health?stale=x").await;
    assert_eq!(
        (s, b.as_str()),
        (
            400,
            "Expect `true` or `false` for `stale` query string parameter"
        )
    );
    let (s, _, b) = call(&lonely_client, "HEAD", "/v1/agent/health").await;
    assert_eq!((s, b.as_str()), (405, "Invalid method"));
}

#[tokio::test]
async fn servers_rules() {
    let server_only = app(SERVER_ONLY, &[]);
    assert_eq!(call(&server_only, "GET", "/v1/agent/servers").await.0, 501);
    assert_eq!(
        call(&server_only, "PUT", "/v1/agent/servers?address=x")
            .await
            .2,
        "Invalid method"
    );
    assert_eq!(
        call(&server_only, "DELETE", "/v1/agent/servers").await.0,
        405
    );
    let client = app(CLIENT_ONLY, &[]);
    assert_eq!(call(&client, "GET", "/v1/agent/servers").await.2, "[]");
    let (s, _, b) = call(&client, "POST", "/v1/agent/servers").await;
    assert_eq!((s, b.as_str()), (400, "missing server address"));
    let (s, h, b) = call(&client, "POST", "/v1/agent/servers?address=a&address=b").await;
    assert_eq!((s, b.as_str()), (200, ""));
    assert!(!h.contains_key("content-type"));
    assert_eq!(
        call(&client, "GET", "/v1/agent/servers").await.2,
        r#"["a","b"]"#
    );
}

#[tokio::test]
async fn host_targets() {
    let both = app("", &[]);
    let (s, _, b) = call(&both, "GET", "/v1/agent/host?server_id=h.global").await;
    assert_eq!(s, 200);
    assert!(
        b.starts_with(r#"{"AgentID":"h.global","HostData":{"OS":"x""#),
        "{b}"
    );
    let (s, _, b) = call(&both, "GET", "/v1/agent/host?server_id=server-1").await;
    assert_eq!((s, b.starts_with(r#"{"AgentID":"h.global""#)), (200, true));
    let (s, _, b) = call(&both, "GET", "/v1/agent/host?server_id=leader").await;
    assert_eq!((s, b.starts_with(r#"{"AgentID":"h.global""#)), (200, true));
    let (s, _, b) = call(&both, "GET", "/v1/agent/host?node_id=node-1").await;
    assert_eq!((s, b.starts_with(r#"{"AgentID":"node-1""#)), (200, true));
    let (s, _, b) = call(&both, "GET", "/v1/agent/host?node_id=zzz").await;
    assert_eq!((s, b.as_str()), (404, "Unknown node \"zzz\""));
    let (s, _, b) = call(&both, "GET", "/v1/agent/host?server_id=zzz").await;
    assert_eq!((s, b.as_str()), (500, "unknown Nomad server zzz"));
    let (s, _, b) = call(&both, "GET", "/v1/agent/host").await;
    assert_eq!((s, b.starts_with(r#"{"OS":"x""#)), (200, true));
    let no_debug = app("enable_debug = false\n", &[]);
    let (s, _, b) = call(&no_debug, "GET", "/v1/agent/host").await;
    assert_eq!((s, b.as_str()), (403, "Permission denied"));
    assert_eq!(call(&no_debug, "POST", "/v1/agent/host").await.0, 405);
}

#[tokio::test]
async fn self_on_client_only_has_zero_member() {
    let client = app(CLIENT_ONLY, &[]);
    let (s, _, b) = call(&client, "GET", "/v1/agent/self").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["member"]["Status"], "none");
    assert!(v["member"]["Addr"].is_null() && v["member"]["Tags"].is_null());
    assert_eq!(call(&client, "PUT", "/v1/agent/self").await.0, 405);
}

#[tokio::test]
async fn operator_headers_on_every_response() {
    let a = app(
        "http_api_response_headers {\n \"X-Extra\" = \"v\"\n}\n",
        &[],
    );
    for (method, uri) in [
        ("GET", "/v1/agent/self"),
        ("GET", "/nope"),
        ("PUT", "/v1/agent/self"),
    ] {
        let (_, h, _) = call(&a, method, uri).await;
        assert_eq!(h["x-extra"], "v", "{method} {uri}");
        assert_eq!(h["vary"], "Accept-Encoding");
    }
}

#[tokio::test]
async fn join_and_force_leave_rules() {
    let server_only = app(SERVER_ONLY, &[]);
    let client = app(CLIENT_ONLY, &[]);
    assert_eq!(
        call(&server_only, "GET", "/v1/agent/join?address=a")
            .await
            .0,
        405
    );
    assert_eq!(
        call(&client, "PUT", "/v1/agent/join?address=a").await.0,
        501
    );
    assert_eq!(
        call(&client, "GET", "/v1/agent/join").await.0,
        405,
        "method before kind"
    );
    let (s, _, b) = call(&server_only, "PUT", "/v1/agent/join").await;
    assert_eq!((s, b.as_str()), (400, "missing address to join"));
    let (s, h, b) = call(&server_only, "POST", "/v1/agent/join?address=x&address=x").await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        b,
        r#"{"num_joined":0,"error":"2 errors occurred:\n\t* Failed to join x\n\t* Failed to join x\n\n","warning":""}"#
    );

    assert_eq!(
        call(&client, "PUT", "/v1/agent/force-leave?node=a").await.0,
        501
    );
    assert_eq!(
        call(&server_only, "GET", "/v1/agent/force-leave?node=a")
            .await
            .0,
        405
    );
    let (s, _, b) = call(&server_only, "PUT", "/v1/agent/force-leave").await;
    assert_eq!((s, b.as_str()), (400, "missing node to force leave"));
    let (s, _, b) = call(&server_only, "PUT", "/v1/agent/force-leave?node=").await;
    assert_eq!((s, b.as_str()), (400, "missing node to force leave"));
    let (s, _, b) = call(
        &server_only,
        "PUT",
        "/v1/agent/force-leave?node=a&prune=maybe",
    )
    .await;
    assert_eq!((s, b.as_str()), (400, "invalid prune value"));
    for q in [
        "node=a",
        "node=a&prune=1",
        "node=a&prune=false",
        "node=a&prune",
    ] {
        let (s, h, b) = call(&server_only, "PUT", &format!("/v1/agent/force-leave?{q}")).await;
        assert_eq!((s, b.as_str()), (200, ""), "{q}");
        assert!(!h.contains_key("content-type"));
    }

    let (s, _, b) = call(&client, "GET", "/v1/agent/members?stale=x").await;
    assert_eq!(
        (s, b.as_str()),
        (
            400,
            "Expect `true` or `false` for `stale` query string parameter"
        )
    );
    let (s, _, b) = call(&client, "GET", "/v1/agent/members").await;
    assert_eq!(
        (s, b.as_str()),
        (
            200,
            r#"{"ServerName":"h","ServerRegion":"global","ServerDC":"dc1","Members":[]}"#
        )
    );
    assert_eq!(call(&client, "DELETE", "/v1/agent/members").await.0, 405);
}

#[tokio::test]
async fn pprof_seconds_bound_keeps_its_text_and_order() {
    let a = app("", &[]);
    for uri in [
        "/v1/agent/pprof/profile?seconds=3601",
        "/v1/agent/pprof/trace?seconds=9223372036854775807",
        // Checked before the profile name is looked up, as before the rule moved.
        "/v1/agent/pprof/nope?seconds=3601",
    ] {
        let (s, _, b) = call(&a, "GET", uri).await;
        assert_eq!(
            (s, b.as_str()),
            (400, "seconds must be at most 3600"),
            "{uri}"
        );
    }
    for uri in [
        "/v1/agent/pprof/profile?seconds=3600",
        "/v1/agent/pprof/profile?seconds=-5",
        "/v1/agent/pprof/profile?seconds=18446744073709551615",
    ] {
        let (s, _, b) = call(&a, "GET", uri).await;
        assert_eq!((s, b.as_str()), (200, "profile"), "{uri}");
    }
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
    };
    let resp = crate::handlers::redirect(&ctx, "/v1/agent/pprof/").unwrap();
    assert_eq!(resp.status(), 301);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "<a href=\"/v1/agent/pprof/?a=&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;b=&#39;x&#39;\">Moved Permanently</a>.\n\n"
    );
    // Through the app, as Go's http.Redirect writes it: `&` is `&amp;` in the body only.
    let (s, h, b) = call(&app("", &[]), "GET", "/v1/agent/pprof?a=1&b=2").await;
    assert_eq!(s, 301);
    assert_eq!(h["location"], "/v1/agent/pprof/?a=1&b=2");
    assert_eq!(
        b,
        "<a href=\"/v1/agent/pprof/?a=1&amp;b=2\">Moved Permanently</a>.\n\n"
    );
}

#[tokio::test]
async fn every_response_says_nosniff() {
    let a = app("", &[]);
    for (method, uri) in [
        ("GET", "/v1/agent/self"),
        ("GET", "/nope"),
        ("PUT", "/v1/agent/self"),
        ("GET", "/v1/agent/pprof"),
        ("GET", "/v1/agent/pprof/cmdline"),
        ("GET", "/v1/agent/members?stale=x"),
    ] {
        let (_, h, _) = call(&a, method, uri).await;
        assert_eq!(
            h.get_all("x-content-type-options")
                .iter()
                .collect::<Vec<_>>(),
            ["nosniff"],
            "{method} {uri}"
        );
    }
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
        app("", &[]),
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
