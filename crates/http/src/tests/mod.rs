//! Handler tests in tables, one area per file. Each area has ONE `check(cases)` helper over
//! [`Case`] rows: a request (method, URI, token, body, extra headers, the agent's configuration)
//! and what it must answer (status and body, some headers). Every row runs against a fresh
//! [`TestApp`] built from focused fakes, one per capability; a failure names the row.
//!
//! `expected` is `"<status> <body>"`: the body exactly (`"200"` alone: an empty body), or with a
//! leading `~` a text it contains, `!` a text it does not contain, `^` its beginning, `*` any
//! body (not read: a stream never ends).

mod acl;
mod agent;
mod app;
mod export;
mod jobs;
mod keyring;
mod metrics;
mod monitor;
mod operator;
mod pprof;
mod schedulers;
mod ui;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use caravan_agent_core::acl::{Acl, AclState, AclTable, AclWrite, Token, TokenType};
use caravan_agent_core::config::{
    AgentConfig, Format, HostFacts, dev_defaults, merge_trees, parse_config, tree_to_file,
};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};

use crate::App;
use crate::api::{AclWriteError, JoinResult, Stats};
use crate::dto::{HostData, MembersResponse, VersionDto};
use crate::monitor::MonitorHub;

const CLIENT_ONLY: &str = "server {\n enabled = false\n}\n";
const SERVER_ONLY: &str = "client {\n enabled = false\n}\n";
const ACLS: &str = "acl {\n enabled = true\n}\n";

/// The dev agent's configuration with `hcl` merged over it (host `h`: member `h.global`).
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

/// The agent itself: facts and health ([`crate::AgentInfo`]), its server list and gossip
/// pool. Client node `node-1`, server `server-1`, the leader; the client is healthy when it
/// knows a server: the configured ones (`client { servers = [...] }`), else its own when the
/// agent runs one, as a dev agent's client does.
struct Info {
    config: AgentConfig,
    servers: Mutex<Vec<String>>,
    /// Every force-leave asked of the agent: the node name and the `prune` flag.
    force_leaves: Mutex<Vec<(String, bool)>>,
}

impl Info {
    fn new(config: AgentConfig) -> Info {
        let mut servers = config.client.servers.clone();
        if servers.is_empty() && config.server.enabled {
            servers.push("127.0.0.1:4647".into());
        }
        Info {
            servers: Mutex::new(servers),
            config,
            force_leaves: Mutex::new(Vec::new()),
        }
    }
}

impl crate::AgentInfo for Info {
    fn config(&self) -> &AgentConfig {
        &self.config
    }
    fn version(&self) -> VersionDto {
        VersionDto::release("0.1.0", "")
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

impl crate::Membership for Info {
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

impl crate::ServerList for Info {
    fn servers(&self) -> Vec<String> {
        self.servers.lock().unwrap().clone()
    }
    async fn set_servers(&self, addresses: Vec<String>) -> Result<(), String> {
        *self.servers.lock().unwrap() = addresses;
        Ok(())
    }
}

/// The bootstrap (management) token's secret in the seeded ACL state.
const MGMT: &str = "aaaaaaaa-0000-4000-8000-000000000000";
/// A token with policy `agent-read`.
const AGENT_READ: &str = "aaaaaaaa-0000-4000-8000-000000000001";
/// A token with policy `agent-write`.
const AGENT_WRITE: &str = "aaaaaaaa-0000-4000-8000-000000000002";
/// A token with policy `node-read`.
const NODE_READ: &str = "aaaaaaaa-0000-4000-8000-000000000003";
/// A token with policy `node-write`.
const NODE_WRITE: &str = "aaaaaaaa-0000-4000-8000-000000000004";
/// A token with policies `node-deny`, `node-write` and `agent-read`.
const NODE_DENY: &str = "aaaaaaaa-0000-4000-8000-000000000005";
/// A token with policy `ns-only` (a namespace rule, nothing for the agent).
const NS_ONLY: &str = "aaaaaaaa-0000-4000-8000-000000000006";
/// A token with policy `operator-read`.
const OPERATOR_READ: &str = "aaaaaaaa-0000-4000-8000-000000000007";
/// A well-formed secret no token has.
const UNKNOWN: &str = "8d5a6c3e-0000-4000-8000-000000000000";
/// A secret that is no UUID.
const MALFORMED: &str = "not-a-token";

/// The seeded policies, by name.
const POLICIES: [(&str, &str); 7] = [
    ("agent-read", "agent {\n  policy = \"read\"\n}"),
    ("agent-write", "agent {\n  policy = \"write\"\n}"),
    ("node-read", "node {\n  policy = \"read\"\n}"),
    ("node-write", "node {\n  policy = \"write\"\n}"),
    ("node-deny", "node {\n  policy = \"deny\"\n}"),
    (
        "ns-only",
        "namespace \"default\" {\n  policy = \"write\"\n}",
    ),
    ("operator-read", "operator {\n  policy = \"read\"\n}"),
];

/// The seeded client tokens: secret and policies.
const TOKENS: [(&str, &[&str]); 7] = [
    (AGENT_READ, &["agent-read"]),
    (AGENT_WRITE, &["agent-write"]),
    (NODE_READ, &["node-read"]),
    (NODE_WRITE, &["node-write"]),
    (NODE_DENY, &["node-deny", "node-write", "agent-read"]),
    (NS_ONLY, &["ns-only"]),
    (OPERATOR_READ, &["operator-read"]),
];

/// ACLs as the agent has them: an [`AclTable`] (the domain's state and token index) written at
/// index 1, 2, … Seeded: bootstrapped ([`MGMT`]), the [`POLICIES`] and a token per
/// [`TOKENS`] row.
struct AclFake {
    table: Mutex<AclTable>,
    /// Every write proposed, refused ones too.
    writes: Mutex<Vec<AclWrite>>,
}

impl AclFake {
    fn seeded() -> AclFake {
        let fake = AclFake {
            table: Mutex::new(AclTable::new([7; 32])),
            writes: Mutex::new(Vec::new()),
        };
        let time = "2026-01-01T00:00:00Z".to_string();
        fake.apply(AclWrite::Bootstrap {
            accessor_id: MGMT.replace("aaaaaaaa", "bbbbbbbb"),
            secret_id: MGMT.into(),
            create_time: time.clone(),
        });
        for (name, rules) in POLICIES {
            fake.apply(AclWrite::PolicyUpsert {
                name: name.into(),
                description: String::new(),
                rules: rules.into(),
            });
        }
        for (secret, policies) in TOKENS {
            fake.apply(AclWrite::TokenCreate {
                token: Token {
                    accessor_id: secret.replace("aaaaaaaa", "bbbbbbbb"),
                    secret_id: secret.into(),
                    name: "t".into(),
                    token_type: TokenType::Client,
                    policies: policies.iter().map(|p| p.to_string()).collect(),
                    global: false,
                    create_time: time.clone(),
                    create_index: 0,
                    modify_index: 0,
                },
            });
        }
        fake
    }

    /// Applies a write directly (a row's setup), as a committed one.
    fn apply(&self, write: AclWrite) {
        let mut table = self.table.lock().unwrap();
        let index = table.state().index + 1;
        table.apply(index, &write).unwrap();
    }

    /// Back to an empty, not bootstrapped state.
    fn reset(&self) {
        *self.table.lock().unwrap() = AclTable::new([7; 32]);
        self.writes.lock().unwrap().clear();
    }
}

impl crate::Acls for AclFake {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        self.table.lock().unwrap().resolve(token)
    }
    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        read(self.table.lock().unwrap().state())
    }
    async fn acl_write(&self, write: AclWrite) -> Result<Option<Token>, AclWriteError> {
        self.writes.lock().unwrap().push(write.clone());
        let mut table = self.table.lock().unwrap();
        let index = table.state().index + 1;
        table
            .apply(index, &write)
            .map_err(|e| AclWriteError::Invalid(e.to_string()))
    }
}

/// Looking inside: host data with OS `x`, a profile whose body is the profile's name, a
/// monitor hub.
struct DebugFake {
    hub: MonitorHub,
}

impl crate::Debugging for DebugFake {
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
    /// The request it was given, as one line of text.
    async fn export_logs(
        &self,
        r: crate::api::ExportRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Bytes>, crate::ApiError> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let line = format!(
            "on_disk={} follow={} since={} service={}",
            r.on_disk,
            r.follow,
            caravan_agent_core::duration::format_go_duration(r.logs_since),
            r.service_name
        );
        tx.send(Bytes::from(line)).await.ok();
        Ok(rx)
    }
}

/// An application over the focused fakes, and the fakes to look into.
struct TestApp {
    app: App,
    info: Arc<Info>,
    acl: Arc<AclFake>,
    jobs: Arc<jobs::JobsFake>,
    keyring: Arc<keyring::KeyringFake>,
}

impl TestApp {
    /// Every capability but forwarding, over the configuration `hcl`.
    fn new(hcl: &str) -> TestApp {
        TestApp::build(hcl, true)
    }

    /// With `all` false: [`crate::AgentInfo`] only (and [`crate::Acls`] when `hcl` enables
    /// ACLs, as the builder requires).
    fn build(hcl: &str, all: bool) -> TestApp {
        let info = Arc::new(Info::new(config(hcl)));
        let acl = Arc::new(AclFake::seeded());
        let jobs = Arc::new(jobs::JobsFake::seeded());
        let keyring = Arc::new(keyring::KeyringFake::new());
        let mut builder = App::builder(info.clone());
        if all || info.config.acl_enabled {
            builder = builder.acls(acl.clone());
        }
        if all {
            builder = builder
                .membership(info.clone())
                .server_list(info.clone())
                .jobs(jobs.clone())
                .schedulers(Arc::new(schedulers::SchedFake::new()))
                .debugging(Arc::new(DebugFake {
                    hub: MonitorHub::new(),
                }))
                .operator(Arc::new(operator::OperatorFake))
                .metrics(crate::metrics::MetricsSink::new())
                .keyring(keyring.clone())
                .reload(Arc::new(operator::ReloadFake(
                    info.config.node_name.clone(),
                )));
        }
        TestApp {
            app: builder.build().unwrap(),
            info,
            acl,
            jobs,
            keyring,
        }
    }

    /// One request with an optional token and a body.
    async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: &str) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            req = req.header("X-Nomad-Token", token);
        }
        self.send(
            req.body(Full::new(Bytes::from(body.to_string()))).unwrap(),
            true,
        )
        .await
    }

    /// Sends `req`; reads the body unless `read` is false.
    async fn send(&self, req: Request<Full<Bytes>>, read: bool) -> Answer {
        let resp = self.app.handle(req).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if read {
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            "(not read)".into()
        };
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// What a request answered.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// One row of an area's table; see the module documentation for `expected`.
struct Case<'a> {
    name: &'a str,
    method: &'a str,
    uri: &'a str,
    token: Option<&'a str>,
    body: &'a str,
    config: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    info_only: bool,
    setup: Option<fn(&TestApp)>,
    expected: &'a str,
    expected_headers: Vec<(&'a str, Option<&'a str>)>,
}

/// A row named `name`: `request` is `"<METHOD> <uri>"`.
fn case<'a>(name: &'a str, request: &'a str, expected: &'a str) -> Case<'a> {
    let (method, uri) = request.split_once(' ').expect("\"METHOD /uri\"");
    Case {
        name,
        method,
        uri,
        token: None,
        body: "",
        config: "",
        headers: Vec::new(),
        info_only: false,
        setup: None,
        expected,
        expected_headers: Vec::new(),
    }
}

impl<'a> Case<'a> {
    /// Sends `X-Nomad-Token: token`.
    fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }
    /// Sends `body`.
    fn body(mut self, body: &'a str) -> Self {
        self.body = body;
        self
    }
    /// Merges `hcl` over the area's configuration.
    fn config(mut self, hcl: &'a str) -> Self {
        self.config = hcl;
        self
    }
    /// Sends one more header.
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }
    /// An [`App`] built from [`crate::AgentInfo`] alone.
    fn info_only(mut self) -> Self {
        self.info_only = true;
        self
    }
    /// Runs `setup` on the fresh application before the request.
    fn setup(mut self, setup: fn(&TestApp)) -> Self {
        self.setup = Some(setup);
        self
    }
    /// Expects header `name` with `value` (`None`: absent).
    fn answers_header(mut self, name: &'a str, value: Option<&'a str>) -> Self {
        self.expected_headers.push((name, value));
        self
    }

    fn verify(&self, got: &Answer) -> Result<(), String> {
        let (status, body) = self.expected.split_once(' ').unwrap_or((self.expected, ""));
        let status: u16 = status.parse().expect("expected starts with a status");
        if got.status != status {
            return Err(format!(
                "status {} (expected {status}), body {:?}",
                got.status, got.body
            ));
        }
        let ok = match body.chars().next() {
            Some('*') => true,
            Some('~') => got.body.contains(&body[1..]),
            Some('!') => !got.body.contains(&body[1..]),
            Some('^') => got.body.starts_with(&body[1..]),
            _ => got.body == body,
        };
        if !ok {
            return Err(format!("body {:?} (expected {body:?})", got.body));
        }
        for (name, want) in &self.expected_headers {
            let value = got.headers.get(*name).map(|v| v.to_str().unwrap_or("?"));
            if value != *want {
                return Err(format!("header {name}: {value:?} (expected {want:?})"));
            }
        }
        Ok(())
    }
}

/// Runs every row on a fresh application whose configuration is `base` and the row's own;
/// fails naming every row that answered otherwise.
async fn run(base: &str, cases: &[Case<'_>]) {
    let mut failures = Vec::new();
    for c in cases {
        let t = TestApp::build(&format!("{base}{}", c.config), !c.info_only);
        if let Some(setup) = c.setup {
            setup(&t);
        }
        let mut req = Request::builder().method(c.method).uri(c.uri);
        if let Some(token) = c.token {
            req = req.header("X-Nomad-Token", token);
        }
        for (name, value) in &c.headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(Bytes::from(c.body.to_string())))
            .unwrap();
        let read = !c
            .expected
            .split_once(' ')
            .is_some_and(|(_, b)| b.starts_with('*'));
        let got = t.send(req, read).await;
        if let Err(why) = c.verify(&got) {
            failures.push(format!("row `{}` ({} {}): {why}", c.name, c.method, c.uri));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}
