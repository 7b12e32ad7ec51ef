//! Handler tests against a fake agent: every rule that depends on the kind of agent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use caravan_agent_core::config::{
    AgentConfig, Format, HostFacts, dev_defaults, merge_trees, parse_config, tree_to_file,
};
use caravan_agent_core::member::Member;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};

use crate::App;
use crate::api::{
    AclWriteError, Indexed, JoinResult, ReadError, ReadOptions, StateAnswer, StateQuery, Stats,
};
use crate::dto::{HostData, MembersResponse, VersionDto};
use crate::monitor::MonitorHub;
use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
use caravan_agent_core::jobs::{Allocation, EvalStatus, Evaluation, Job, JobSubmission, Node};

struct Fake {
    config: AgentConfig,
    servers: Mutex<Vec<String>>,
    hub: MonitorHub,
    /// The ACL state, applied to as a server would, at index 1, 2, …
    acl: Mutex<AclState>,
    /// Every ACL write proposed, refused ones too.
    acl_writes: Mutex<Vec<AclWrite>>,
    /// What `read_state` answers from.
    state: FakeState,
    /// Every state read, with its options.
    reads: Mutex<Vec<(StateQuery, ReadOptions)>>,
    /// The index, leader and contact facts of every answer.
    read_meta: Mutex<(u64, bool, Duration)>,
    /// When set, every read fails this way.
    read_fault: Mutex<Option<Fault>>,
    /// Every force-leave asked of the agent: the node name and the `prune` flag.
    force_leaves: Mutex<Vec<(String, bool)>>,
}

/// How a read fails on purpose.
#[derive(Clone)]
enum Fault {
    Error(ReadError),
    /// Answers every query with `Nodes`.
    WrongAnswer,
}

/// One job `web` with one evaluation `e1` and one allocation `a1` on node `n1`.
struct FakeState {
    jobs: Vec<Job>,
    evals: Vec<Evaluation>,
    allocs: Vec<Allocation>,
    nodes: Vec<Node>,
}

impl FakeState {
    fn seeded() -> FakeState {
        let job = Job::from_submission(JobSubmission {
            id: Some("web".into()),
            datacenters: Some(vec!["dc1".into()]),
            groups: Some(vec![caravan_agent_core::jobs::GroupSubmission {
                name: Some("g".into()),
                tasks: Some(vec![caravan_agent_core::jobs::TaskSubmission {
                    name: Some("t".into()),
                    driver: Some("docker".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .unwrap();
        FakeState {
            jobs: vec![job],
            evals: vec![Evaluation {
                id: "e1".into(),
                job_id: "web".into(),
                priority: 50,
                scheduler: "service".into(),
                triggered_by: "job-register".into(),
                status: EvalStatus::Complete,
                status_description: String::new(),
                blocked_eval: String::new(),
                queued: Default::default(),
                create_index: 5,
                modify_index: 6,
            }],
            allocs: vec![Allocation {
                id: "a1".into(),
                name: "web.g[0]".into(),
                job_id: "web".into(),
                task_group: "g".into(),
                node_id: "n1".into(),
                eval_id: "e1".into(),
                cpu: 100,
                memory_mb: 300,
                desired_status: "run".into(),
                client_status: "pending".into(),
                create_index: 6,
                modify_index: 6,
            }],
            nodes: vec![Node {
                id: "n1".into(),
                name: "client-1".into(),
                datacenter: "dc1".into(),
                node_class: String::new(),
                meta: Default::default(),
                cpu: 4000,
                memory_mb: 8192,
                status: "ready".into(),
                down_since: None,
                create_index: 2,
                modify_index: 2,
            }],
        }
    }

    fn answer(&self, query: &StateQuery) -> StateAnswer {
        fn find<T: Clone>(items: &[T], id: impl Fn(&T) -> bool) -> Option<T> {
            items.iter().find(|t| id(t)).cloned()
        }
        match query {
            StateQuery::Jobs => StateAnswer::Jobs(self.jobs.clone()),
            StateQuery::Job(id) => StateAnswer::Job(find(&self.jobs, |j| &j.id == id)),
            StateQuery::JobAllocations(id) => {
                StateAnswer::JobAllocations(self.jobs.iter().any(|j| &j.id == id).then(|| {
                    let of_job = self.allocs.iter().filter(|a| &a.job_id == id);
                    of_job.cloned().collect()
                }))
            }
            StateQuery::Evaluations => StateAnswer::Evaluations(self.evals.clone()),
            StateQuery::Evaluation(id) => {
                StateAnswer::Evaluation(find(&self.evals, |e| &e.id == id))
            }
            StateQuery::Allocations => StateAnswer::Allocations(self.allocs.clone()),
            StateQuery::Allocation(id) => {
                StateAnswer::Allocation(find(&self.allocs, |a| &a.id == id))
            }
            StateQuery::Nodes => StateAnswer::Nodes(self.nodes.clone()),
            StateQuery::Node(id) => StateAnswer::Node(find(&self.nodes, |n| &n.id == id)),
        }
    }
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

impl crate::AgentInfo for Fake {
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
}

impl crate::Membership for Fake {
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
    async fn force_leave(&self, name: String, prune: bool) -> Result<(), String> {
        self.force_leaves.lock().unwrap().push((name, prune));
        Ok(())
    }
}

impl crate::ServerList for Fake {
    fn servers(&self) -> Vec<String> {
        self.servers.lock().unwrap().clone()
    }
    async fn set_servers(&self, addresses: Vec<String>) -> Result<(), String> {
        *self.servers.lock().unwrap() = addresses;
        Ok(())
    }
}

impl crate::Acls for Fake {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        let state = self.acl.lock().unwrap();
        match token {
            None => Ok(state.anonymous_acl()),
            Some(secret) => state
                .tokens
                .values()
                .find(|t| t.secret_id == secret)
                .map(|t| state.acl_for(t))
                .ok_or_else(|| "ACL token not found".into()),
        }
    }
    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        read(&self.acl.lock().unwrap())
    }
    async fn acl_write(&self, write: AclWrite) -> Result<Option<Token>, AclWriteError> {
        self.acl_writes.lock().unwrap().push(write.clone());
        let mut state = self.acl.lock().unwrap();
        let index = state.index + 1;
        state
            .apply(index, &write)
            .map_err(|e| AclWriteError::Invalid(e.to_string()))
    }
}

impl crate::Jobs for Fake {
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
    async fn read_state(
        &self,
        query: StateQuery,
        options: ReadOptions,
    ) -> Result<Indexed<StateAnswer>, ReadError> {
        self.reads.lock().unwrap().push((query.clone(), options));
        let value = match self.read_fault.lock().unwrap().clone() {
            Some(Fault::Error(e)) => return Err(e),
            Some(Fault::WrongAnswer) => StateAnswer::Nodes(Vec::new()),
            None => self.state.answer(&query),
        };
        let (index, known_leader, last_contact) = *self.read_meta.lock().unwrap();
        Ok(Indexed {
            value,
            index,
            known_leader,
            last_contact,
        })
    }
}

impl crate::Schedulers for Fake {
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
    fn num_cpus(&self) -> u32 {
        2
    }
}

impl crate::Debugging for Fake {
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
    fn monitor_hub(&self) -> &MonitorHub {
        &self.hub
    }
    async fn profile(
        &self,
        request: crate::api::ProfileRequest,
    ) -> Result<Vec<u8>, crate::ApiError> {
        Ok(request.name.into_bytes())
    }
}

impl crate::Operator for Fake {
    async fn status_leader(&self) -> Result<String, String> {
        Ok(String::new())
    }
    async fn status_peers(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    fn raft_configuration(&self) -> Result<crate::dto::RaftConfigurationDto, ReadError> {
        Err(ReadError::NoServer)
    }
    async fn snapshot_save(&self) -> Result<Indexed<Vec<u8>>, ReadError> {
        Err(ReadError::NoServer)
    }
    async fn snapshot_restore(&self, _snapshot: Vec<u8>) -> Result<(), crate::RestoreError> {
        Err(crate::RestoreError::NoServer)
    }
}

/// An application over a fake with every capability, and the fake to look into.
struct TestApp {
    app: App,
    fake: Arc<Fake>,
}

impl TestApp {
    fn agent(&self) -> &Fake {
        &self.fake
    }
}

fn app(hcl: &str, servers: &[&str]) -> TestApp {
    let fake = Arc::new(Fake {
        config: config(hcl),
        servers: Mutex::new(servers.iter().map(|s| s.to_string()).collect()),
        hub: MonitorHub::new(),
        acl: Mutex::new(AclState::default()),
        acl_writes: Mutex::new(Vec::new()),
        state: FakeState::seeded(),
        reads: Mutex::new(Vec::new()),
        read_meta: Mutex::new((42, false, Duration::from_millis(1500))),
        read_fault: Mutex::new(None),
        force_leaves: Mutex::new(Vec::new()),
    });
    let app = App::builder(fake.clone())
        .membership(fake.clone())
        .server_list(fake.clone())
        .acls(fake.clone())
        .jobs(fake.clone())
        .schedulers(fake.clone())
        .debugging(fake.clone())
        .operator(fake.clone())
        .build()
        .unwrap();
    TestApp { app, fake }
}

async fn call(app: &TestApp, method: &str, uri: &str) -> (u16, HeaderMap, String) {
    call_with(app, method, uri, None, "").await
}

/// A request with an ACL token and a body.
async fn call_with(
    app: &TestApp,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header("X-Nomad-Token", token);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = app.app.handle(req).await;
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
    let forced = |a: &TestApp| a.agent().force_leaves.lock().unwrap().clone();
    let (s, _, b) = call(&server_only, "PUT", "/v1/agent/force-leave").await;
    assert_eq!((s, b.as_str()), (400, "missing node to force leave"));
    let (s, _, b) = call(&server_only, "PUT", "/v1/agent/force-leave?node=").await;
    assert_eq!((s, b.as_str()), (400, "missing node to force leave"));
    for bad in ["maybe", "yes", "2", "%20true"] {
        let (s, _, b) = call(
            &server_only,
            "PUT",
            &format!("/v1/agent/force-leave?node=a&prune={bad}"),
        )
        .await;
        assert_eq!((s, b.as_str()), (400, "invalid prune value"), "{bad}");
    }
    assert_eq!(
        forced(&server_only),
        vec![],
        "a refused request reaches the agent"
    );
    for (q, prune) in [
        ("node=a", false),
        ("node=a&prune=1", true),
        ("node=a&prune=true", true),
        ("node=a&prune=T", true),
        ("node=a&prune=false", false),
        ("node=a&prune=0", false),
        ("node=a&prune", false),
        ("node=server2.global&prune=1", true),
    ] {
        let (s, h, b) = call(&server_only, "POST", &format!("/v1/agent/force-leave?{q}")).await;
        assert_eq!((s, b.as_str()), (200, ""), "{q}");
        assert!(!h.contains_key("content-type"));
        let node = q.split('&').next().and_then(|n| n.strip_prefix("node="));
        let last = forced(&server_only).last().cloned();
        assert_eq!(
            last,
            node.map(|n| (n.to_string(), prune)),
            "{q}: the agent was asked this"
        );
    }
    assert_eq!(forced(&server_only).len(), 8);

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
        app("", &[]).app,
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

/// Every state read endpoint, with an ID the fake knows.
const READS: [&str; 9] = [
    "/v1/jobs",
    "/v1/job/web",
    "/v1/job/web/allocations",
    "/v1/evaluations",
    "/v1/evaluation/e1",
    "/v1/allocations",
    "/v1/allocation/a1",
    "/v1/nodes",
    "/v1/node/n1",
];

fn last_read(a: &TestApp) -> Option<(StateQuery, ReadOptions)> {
    a.agent().reads.lock().unwrap().last().cloned()
}

#[tokio::test]
async fn state_reads_pass_stale_index_and_wait() {
    let a = app("", &[]);
    let opts = |stale, min_index, wait_secs| ReadOptions {
        stale,
        min_index,
        wait: Duration::from_secs(wait_secs),
    };
    let check = async |uri: &str, query: StateQuery, want: ReadOptions| {
        let (s, _, b) = call(&a, "GET", uri).await;
        assert_eq!(s, 200, "{uri}: {b}");
        assert_eq!(last_read(&a), Some((query, want)), "{uri}");
    };
    check("/v1/jobs", StateQuery::Jobs, opts(false, 0, 0)).await;
    check("/v1/jobs?stale", StateQuery::Jobs, opts(true, 0, 0)).await;
    check("/v1/jobs?stale=", StateQuery::Jobs, opts(true, 0, 0)).await;
    check("/v1/jobs?stale=true", StateQuery::Jobs, opts(true, 0, 0)).await;
    check("/v1/jobs?stale=false", StateQuery::Jobs, opts(false, 0, 0)).await;
    check("/v1/jobs?stale=0", StateQuery::Jobs, opts(false, 0, 0)).await;
    check(
        "/v1/jobs?index=7&wait=5s",
        StateQuery::Jobs,
        opts(false, 7, 5),
    )
    .await;
    check("/v1/jobs?index=&wait=", StateQuery::Jobs, opts(false, 0, 0)).await;
    check(
        "/v1/job/web?stale=1&index=3&wait=1m",
        StateQuery::Job("web".into()),
        opts(true, 3, 60),
    )
    .await;
    check(
        "/v1/job/web/allocations?index=9",
        StateQuery::JobAllocations("web".into()),
        opts(false, 9, 0),
    )
    .await;
    check(
        "/v1/evaluations?stale",
        StateQuery::Evaluations,
        opts(true, 0, 0),
    )
    .await;
    check(
        "/v1/evaluation/e1?wait=2s",
        StateQuery::Evaluation("e1".into()),
        opts(false, 0, 2),
    )
    .await;
    check(
        "/v1/allocations?index=18446744073709551615",
        StateQuery::Allocations,
        opts(false, u64::MAX, 0),
    )
    .await;
    check(
        "/v1/allocation/a1?stale=T",
        StateQuery::Allocation("a1".into()),
        opts(true, 0, 0),
    )
    .await;
    check(
        "/v1/nodes?index=4&wait=10s",
        StateQuery::Nodes,
        opts(false, 4, 10),
    )
    .await;
    check(
        "/v1/node/n1",
        StateQuery::Node("n1".into()),
        opts(false, 0, 0),
    )
    .await;
}

#[tokio::test]
async fn state_reads_refuse_bad_generic_params() {
    let a = app("", &[]);
    let bad = [
        (
            "stale=maybe",
            "Expect `true` or `false` for `stale` query string parameter",
        ),
        ("index=-1", "Invalid index"),
        ("index=x", "Invalid index"),
        ("index=18446744073709551616", "Invalid index"),
        ("wait=5", "Invalid wait time"),
        ("wait=soon", "Invalid wait time"),
        (
            "per_page=x",
            "Expect a number for `per_page` query string parameter",
        ),
    ];
    for uri in READS {
        for (q, want) in bad {
            let (s, _, b) = call(&a, "GET", &format!("{uri}?{q}")).await;
            assert_eq!((s, b.as_str()), (400, want), "{uri}?{q}");
        }
    }
    assert_eq!(last_read(&a), None, "no read is made for a bad request");
}

#[tokio::test]
async fn state_reads_carry_index_leader_and_contact_headers() {
    let a = app("", &[]);
    let headers = |h: &HeaderMap| {
        [
            "x-nomad-index",
            "x-nomad-knownleader",
            "x-nomad-lastcontact",
        ]
        .map(|k| h.get(k).map(|v| v.to_str().unwrap().to_string()))
    };
    let some = |i: &str, l: &str, c: &str| [Some(i.into()), Some(l.into()), Some(c.into())];
    for uri in READS {
        let (s, h, b) = call(&a, "GET", uri).await;
        assert_eq!(s, 200, "{uri}: {b}");
        assert_eq!(headers(&h), some("42", "false", "1500"), "{uri}");
        assert_eq!(h["content-type"], "application/json", "{uri}");
    }
    // Nomad's meta: index at least 1, whole milliseconds, true on a known leader.
    *a.agent().read_meta.lock().unwrap() = (0, true, Duration::from_micros(2999));
    for uri in READS {
        let (_, h, _) = call(&a, "GET", uri).await;
        assert_eq!(headers(&h), some("1", "true", "2"), "{uri}");
    }
    // A 404 is a read that found nothing: Nomad sets the headers before it looks.
    let (s, h, _) = call(&a, "GET", "/v1/node/nope").await;
    assert_eq!((s, headers(&h)), (404, some("1", "true", "2")));
    // Agent endpoints never carry them (spec §0.4), nor do failures.
    for (method, uri) in [
        ("GET", "/v1/agent/self"),
        ("GET", "/v1/agent/members"),
        ("GET", "/v1/agent/health"),
        ("GET", "/v1/jobs?index=x"),
        ("POST", "/v1/nodes"),
    ] {
        let (_, h, _) = call(&a, method, uri).await;
        assert_eq!(headers(&h), [None, None, None], "{method} {uri}");
    }
}

#[tokio::test]
async fn state_reads_answer_404_405_and_read_errors() {
    let a = app("", &[]);
    for (uri, want) in [
        ("/v1/job/nope", "job not found"),
        ("/v1/job/nope/allocations", "job not found"),
        ("/v1/evaluation/nope", "eval not found"),
        ("/v1/allocation/nope", "alloc not found"),
        ("/v1/node/nope", "node not found"),
    ] {
        let (s, h, b) = call(&a, "GET", uri).await;
        assert_eq!((s, b.as_str()), (404, want), "{uri}");
        assert_eq!(h["content-type"], "text/plain; charset=utf-8", "{uri}");
    }
    for (method, uri) in [
        ("POST", "/v1/evaluations"),
        ("PUT", "/v1/evaluation/e1"),
        ("DELETE", "/v1/allocations"),
        ("PUT", "/v1/allocation/a1"),
        ("POST", "/v1/nodes"),
        ("DELETE", "/v1/node/n1"),
        ("PUT", "/v1/job/web/allocations"),
        ("PATCH", "/v1/jobs"),
    ] {
        let (s, _, b) = call(&a, method, uri).await;
        assert_eq!((s, b.as_str()), (405, "Invalid method"), "{method} {uri}");
    }
    // The JSON shapes are the existing ones.
    let json = async |uri: &str| -> serde_json::Value {
        serde_json::from_str(&call(&a, "GET", uri).await.2).unwrap()
    };
    assert_eq!(json("/v1/allocation/a1").await["EvalID"], "e1");
    assert_eq!(json("/v1/allocations").await[0]["ID"], "a1");
    assert_eq!(json("/v1/evaluations").await[0]["Status"], "complete");
    assert_eq!(json("/v1/node/n1").await["Datacenter"], "dc1");
    assert_eq!(json("/v1/job/web").await["TaskGroups"][0]["Name"], "g");
    assert!(json("/v1/jobs").await[0].get("TaskGroups").is_none());

    for (fault, status, want) in [
        (
            Fault::Error(ReadError::NoServer),
            501,
            "this agent runs no server",
        ),
        (Fault::Error(ReadError::NoLeader), 500, "No cluster leader"),
        (
            Fault::Error(ReadError::Unavailable("raft is shutting down".into())),
            500,
            "raft is shutting down",
        ),
    ] {
        *a.agent().read_fault.lock().unwrap() = Some(fault);
        for uri in READS {
            let (s, _, b) = call(&a, "GET", uri).await;
            assert_eq!((s, b.as_str()), (status, want), "{uri}");
        }
    }
    *a.agent().read_fault.lock().unwrap() = Some(Fault::WrongAnswer);
    for uri in READS.iter().filter(|u| !u.starts_with("/v1/nodes")) {
        let (s, h, b) = call(&a, "GET", uri).await;
        assert_eq!(s, 500, "{uri}");
        assert!(b.starts_with("internal error: "), "{uri}: {b}");
        assert!(!h.contains_key("x-nomad-index"), "{uri}");
    }
}

#[tokio::test]
async fn state_reads_check_their_capability() {
    let a = app("acl {\n enabled = true\n}\n", &[]);
    let (s, _, b) = call(&a, "POST", "/v1/acl/bootstrap").await;
    assert_eq!(s, 200, "{b}");
    let root: serde_json::Value = serde_json::from_str(&b).unwrap();
    let root = root["SecretID"].as_str().unwrap().to_string();
    let policy = r#"{"Rules": "node { policy = \"read\" }"}"#;
    let (s, _, b) = call_with(&a, "POST", "/v1/acl/policy/nr", Some(&root), policy).await;
    assert_eq!((s, b.as_str()), (200, ""));
    let body = r#"{"Policies": ["nr"]}"#;
    let (s, _, b) = call_with(&a, "POST", "/v1/acl/token", Some(&root), body).await;
    assert_eq!(s, 200, "{b}");
    let token: serde_json::Value = serde_json::from_str(&b).unwrap();
    let node_reader = token["SecretID"].as_str().unwrap().to_string();
    for uri in READS {
        let node_read = uri.starts_with("/v1/node");
        let (s, _, b) = call_with(&a, "GET", uri, Some(&root), "").await;
        assert_eq!(s, 200, "management on {uri}: {b}");
        let (s, _, _) = call_with(&a, "GET", uri, Some(&node_reader), "").await;
        assert_eq!(s, if node_read { 200 } else { 403 }, "node:read on {uri}");
        let (s, _, b) = call(&a, "GET", uri).await;
        assert_eq!(
            (s, b.as_str()),
            (403, "Permission denied"),
            "anonymous {uri}"
        );
    }
}

/// A method, a URI, a body, the status and text answered (`""`: any text unless 200), and
/// what the one proposed write must look like (`None`: no write).
type AclCase = (
    &'static str,
    String,
    &'static str,
    u16,
    &'static str,
    Option<fn(&AclWrite) -> bool>,
);

/// The ACL writes the handlers proposed, from `from` on.
fn acl_writes(a: &TestApp, from: usize) -> Vec<AclWrite> {
    a.agent().acl_writes.lock().unwrap()[from..].to_vec()
}

fn is_rfc3339(text: &str) -> bool {
    humantime::parse_rfc3339(text).is_ok()
}

#[tokio::test]
async fn acl_handlers_propose_typed_writes_with_fresh_ids_and_time() {
    use caravan_agent_core::acl::is_uuid;
    let a = app("acl {\n enabled = true\n}\n", &[]);
    let (s, _, b) = call(&a, "POST", "/v1/acl/bootstrap").await;
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let root = v["SecretID"].as_str().unwrap().to_string();
    let [
        AclWrite::Bootstrap {
            accessor_id,
            secret_id,
            create_time,
        },
    ] = &acl_writes(&a, 0)[..]
    else {
        panic!("{:?}", acl_writes(&a, 0));
    };
    assert!(is_uuid(accessor_id) && is_uuid(secret_id) && accessor_id != secret_id);
    assert!(is_rfc3339(create_time), "{create_time}");
    assert_eq!(
        (v["AccessorID"].as_str(), v["CreateTime"].as_str()),
        (Some(accessor_id.as_str()), Some(create_time.as_str()))
    );

    // Each case: a request, what it answers, and the write it proposed (None: no write).
    let unknown = uuid::Uuid::new_v4().to_string();
    let cases: Vec<AclCase> = vec![
        (
            "POST",
            "/v1/acl/bootstrap".into(),
            "",
            400,
            "ACL bootstrap already done",
            Some(|w| matches!(w, AclWrite::Bootstrap { .. })),
        ),
        (
            "PUT",
            "/v1/acl/policy/r".into(),
            r#"{"Description": "d", "Rules": "node { policy = \"read\" }"}"#,
            200,
            "",
            Some(|w| {
                *w == AclWrite::PolicyUpsert {
                    name: "r".into(),
                    description: "d".into(),
                    rules: "node { policy = \"read\" }".into(),
                }
            }),
        ),
        (
            "PUT",
            "/v1/acl/policy/bad".into(),
            r#"{"Rules": "node { policy = \"sideways\" }"}"#,
            400,
            "",
            Some(|w| matches!(w, AclWrite::PolicyUpsert { name, .. } if name == "bad")),
        ),
        (
            "PUT",
            "/v1/acl/policy/r".into(),
            r#"{"Name": "other"}"#,
            400,
            "Policy name does not match request path",
            None,
        ),
        (
            "POST",
            "/v1/acl/token".into(),
            r#"{"Policies": ["x"]}"#,
            400,
            r#"token references non-existent policy "x""#,
            Some(|w| matches!(w, AclWrite::TokenCreate { .. })),
        ),
        (
            "POST",
            "/v1/acl/token".into(),
            r#"{"Type": "management", "Policies": ["r"]}"#,
            400,
            "management token cannot be associated with policies",
            Some(|w| matches!(w, AclWrite::TokenCreate { .. })),
        ),
        (
            "POST",
            "/v1/acl/token".into(),
            r#"{"Type": "root"}"#,
            400,
            r#"token type must be client or management, got "root""#,
            None,
        ),
        (
            "POST",
            format!("/v1/acl/token/{unknown}"),
            r#"{"Policies": ["r"]}"#,
            400,
            "ACL token not found",
            Some(|w| matches!(w, AclWrite::TokenUpdate { .. })),
        ),
        (
            "DELETE",
            "/v1/acl/policy/gone".into(),
            "",
            200,
            "",
            Some(|w| {
                *w == AclWrite::PolicyDelete {
                    name: "gone".into(),
                }
            }),
        ),
        (
            "DELETE",
            format!("/v1/acl/token/{unknown}"),
            "",
            200,
            "",
            Some(|w| matches!(w, AclWrite::TokenDelete { .. })),
        ),
    ];
    for (method, uri, body, status, text, write) in cases {
        let before = acl_writes(&a, 0).len();
        let (s, _, b) = call_with(&a, method, &uri, Some(&root), body).await;
        assert_eq!(s, status, "{method} {uri}: {b}");
        if !text.is_empty() || status == 200 {
            assert_eq!(b, text, "{method} {uri}");
        }
        let proposed = acl_writes(&a, before);
        match write {
            Some(expected) => {
                assert!(
                    proposed.len() == 1 && expected(&proposed[0]),
                    "{method} {uri}: {proposed:?}"
                )
            }
            None => assert!(proposed.is_empty(), "{method} {uri}: {proposed:?}"),
        }
    }

    // Two creations: fresh, distinct UUIDs and an RFC 3339 time in each write and token; an
    // update keeps the token's IDs.
    let mut seen = vec![accessor_id.clone(), secret_id.clone()];
    for name in ["one", "two"] {
        let before = acl_writes(&a, 0).len();
        let body = format!(r#"{{"Name": "{name}", "Policies": ["r"]}}"#);
        let (s, _, b) = call_with(&a, "POST", "/v1/acl/token", Some(&root), &body).await;
        assert_eq!(s, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let [AclWrite::TokenCreate { token }] = &acl_writes(&a, before)[..] else {
            panic!("{:?}", acl_writes(&a, before));
        };
        for id in [&token.accessor_id, &token.secret_id] {
            assert!(is_uuid(id) && !seen.contains(id), "{id} in {seen:?}");
            seen.push(id.clone());
        }
        assert!(is_rfc3339(&token.create_time), "{}", token.create_time);
        assert_eq!(v["SecretID"].as_str(), Some(token.secret_id.as_str()));
        assert_eq!(v["CreateTime"].as_str(), Some(token.create_time.as_str()));

        let uri = format!("/v1/acl/token/{}", token.accessor_id);
        let (s, _, b) = call_with(
            &a,
            "PUT",
            &uri,
            Some(&root),
            r#"{"Policies": ["r"], "Name": "renamed"}"#,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let u: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            (
                u["AccessorID"].as_str(),
                u["SecretID"].as_str(),
                u["Name"].as_str()
            ),
            (
                Some(token.accessor_id.as_str()),
                Some(token.secret_id.as_str()),
                Some("renamed")
            )
        );
    }
}
