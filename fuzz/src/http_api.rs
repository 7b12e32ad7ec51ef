//! Every HTTP endpoint through the real [`App`]: the route table, query and header decoding,
//! the handlers' body decoders, ACL checks and the response writer, over an in-memory backend
//! whose jobs, ACLs and snapshots are a real [`ClusterState`] (the replicated state machine,
//! applied directly instead of through Raft).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
use caravan_agent_core::config::{
    AgentConfig, Format, HostFacts, dev_defaults, merge_trees, parse_config, tree_to_file,
};
use caravan_agent_core::jobs::Job;
use caravan_agent_core::query::{Indexed, ReadOptions, StateAnswer, StateQuery};
use caravan_agent_core::sched::{SchedulerConfig, WorkerInfo};
use caravan_cluster::store::JobWrite;
use caravan_cluster::{ClusterState, Command, Outcome, StateSnapshot};
use caravan_http::api::ProfileRequest;
use caravan_http::dto::{
    HostData, MembersResponse, RaftConfigurationDto, RaftServerDto, VersionDto,
};
use caravan_http::monitor::MonitorHub;
use caravan_http::{
    AclWriteError, Acls, AgentInfo, App, Debugging, JobWriteError, JobWriteResult, Jobs,
    JoinResult, Membership, Operator, ReadError, Reload, RestoreError, Schedulers, ServerList,
};
use caravan_sched::broker::EvalBroker;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;

/// The management token's secret in every fresh state.
pub const MGMT: &str = "aaaaaaaa-0000-4000-8000-000000000000";
/// A client token with the `agent-read` policy.
pub const AGENT_READ: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// The request methods an input picks from (byte 0).
const METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE",
];

/// Route prefixes an input picks from (byte 2); its path text follows the prefix, so every
/// endpoint is one byte away and the rest of the path is the input's. Every pattern the
/// application routes ([`caravan_http::route_patterns`]) has an entry (a test checks it); new
/// entries go at the end, so the committed corpus keeps reaching the routes it reached.
pub const ROUTES: [&str; 44] = [
    "/v1/agent/self",
    "/v1/agent/join",
    "/v1/agent/members",
    "/v1/agent/force-leave",
    "/v1/agent/servers",
    "/v1/agent/schedulers",
    "/v1/agent/schedulers/config",
    "/v1/agent/health",
    "/v1/agent/host",
    "/v1/agent/reload",
    "/v1/agent/monitor",
    "/v1/agent/monitor/export",
    "/v1/agent/pprof",
    "/v1/agent/pprof/",
    "/v1/agent/keyring",
    "/v1/agent/keyring/",
    "/v1/jobs",
    "/v1/job/",
    "/v1/evaluations",
    "/v1/evaluation/",
    "/v1/allocations",
    "/v1/allocation/",
    "/v1/nodes",
    "/v1/node/",
    "/v1/operator/snapshot",
    "/v1/operator/raft/configuration",
    "/v1/status/leader",
    "/v1/status/peers",
    "/v1/metrics",
    "/v1/regions",
    "/v1/acl/bootstrap",
    "/v1/acl/policies",
    "/v1/acl/policy/",
    "/v1/acl/tokens",
    "/v1/acl/token",
    "/v1/acl/token/",
    "/v1/acl/token/self",
    "/v1/",
    "/",
    "",
    "/v1/nodes/heartbeats",
    "/v1/operator/autopilot/health",
    "/ui/",
    "/ui",
];

/// How long a response's body is read (a monitor stream never ends by itself).
const READ_BODY_FOR: Duration = Duration::from_millis(5);
/// The most of a response's body read.
const READ_BODY_MAX: usize = 1 << 20;
/// A response must begin within this (the backend answers at once; nothing here waits).
const HEAD_WITHIN: Duration = Duration::from_secs(10);

/// Every HTTP endpoint, through [`App::handle`].
///
/// The input is `[method][flags][route][path suffix \0 query \0 headers \0 body]`: the method
/// and route prefix are picked by one byte each, flags pick the token (none, management,
/// `agent-read`, unknown, malformed), an application with ACLs on or off, and gzip;
/// headers are `Name: value` lines.
///
/// Invariant: every request gets a response head within [`HEAD_WITHIN`] and no panic; a
/// request the `http` crate cannot represent (an invalid URI or header) is skipped, as hyper
/// would refuse it before the application; a 4xx answer to anything but `HEAD` names the
/// problem (a non-empty body), but for 404s (an unknown path is a bare 404). The backend's state starts afresh for every input.
pub fn http_api(data: &[u8]) {
    let [method, flags, route, rest @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*method) % METHODS.len()];
    let route = ROUTES[usize::from(*route) % ROUTES.len()];
    let mut parts = rest.splitn(4, |&b| b == 0);
    let suffix = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let headers = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let mut uri = format!("{route}{suffix}");
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(&query);
    }
    let mut req = http::Request::builder().method(method).uri(uri.as_str());
    match flags & 0b111 {
        1 => req = req.header("X-Nomad-Token", MGMT),
        2 => req = req.header("Authorization", format!("Bearer {AGENT_READ}")),
        3 => req = req.header("X-Nomad-Token", "8d5a6c3e-0000-4000-8000-000000000000"),
        4 => req = req.header("X-Nomad-Token", "not-a-token"),
        _ => {}
    }
    if flags & 0b1_0000 != 0 {
        req = req.header("Accept-Encoding", "gzip, deflate");
    }
    for line in headers.lines() {
        if let Some((name, value)) = line.split_once(':') {
            req = req.header(name.trim(), value.trim());
        }
    }
    let Ok(req) = req.body(Full::new(body)) else {
        return;
    };
    let fixture = fixture(flags & 0b1000 != 0);
    fixture.backend.reset();
    let head = method == "HEAD";
    crate::runtime().block_on(async move {
        let Ok(resp) = tokio::time::timeout(HEAD_WITHIN, fixture.app.handle(req)).await else {
            panic!("{method} {uri}: no response within {HEAD_WITHIN:?}");
        };
        let status = resp.status();
        let mut body = resp.into_body();
        let mut read = Vec::new();
        let reading = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
                if read.len() > READ_BODY_MAX {
                    break;
                }
            }
        };
        let ended = tokio::time::timeout(READ_BODY_FOR, reading).await.is_ok();
        // An unknown path is a bare 404, as Nomad's mux answers it; every other refusal says why.
        if status.is_client_error() && status != http::StatusCode::NOT_FOUND && !head && ended {
            assert!(
                !read.is_empty(),
                "{method} {uri}: {status} without a message"
            );
        }
    });
}

/// One application and its backend, built once per process.
struct Fixture {
    app: App,
    backend: Arc<Backend>,
}

fn fixture(acls: bool) -> &'static Fixture {
    static OPEN: OnceLock<Fixture> = OnceLock::new();
    static ACLS: OnceLock<Fixture> = OnceLock::new();
    let cell = if acls { &ACLS } else { &OPEN };
    cell.get_or_init(|| {
        let hcl = if acls {
            "acl {\n enabled = true\n}\n"
        } else {
            ""
        };
        let backend = Arc::new(Backend::new(config(hcl)));
        let app = App::builder(backend.clone())
            .membership(backend.clone())
            .server_list(backend.clone())
            .acls(backend.clone())
            .jobs(backend.clone())
            .schedulers(backend.clone())
            .debugging(backend.clone())
            .operator(backend.clone())
            .reload(backend.clone())
            .keyring(backend.clone())
            .metrics(caravan_http::metrics::MetricsSink::new())
            .body_read_timeout(Duration::from_secs(1))
            .build();
        match app {
            Ok(app) => Fixture { app, backend },
            Err(e) => panic!("the fuzz application does not build: {e}"),
        }
    })
}

/// The dev agent's configuration with `hcl` merged over it.
fn config(hcl: &str) -> AgentConfig {
    let mut tree = dev_defaults().tree;
    if let Ok(over) = parse_config("fuzz", hcl, Format::Hcl) {
        merge_trees(&mut tree, over.tree);
    }
    let host = HostFacts::loopback("fuzz", 2);
    let resolved =
        tree_to_file(&tree).and_then(|file| AgentConfig::resolve(file, true, &host, Vec::new()));
    match resolved {
        Ok(config) => config,
        Err(e) => panic!("the fuzz configuration does not resolve: {e}"),
    }
}

/// The agent behind the application: facts and fakes for what needs other processes
/// (membership, profiles), and a real [`ClusterState`] for jobs, ACLs and snapshots.
struct Backend {
    config: AgentConfig,
    state: Mutex<Arc<ClusterState>>,
    index: AtomicU64,
    servers: Mutex<Vec<String>>,
    sched: Mutex<SchedulerConfig>,
    hub: MonitorHub,
    /// One member's gossip keyring, kept by the domain's rules.
    keys: Mutex<caravan_agent_core::keyring::KeyList>,
}

impl Backend {
    fn new(config: AgentConfig) -> Backend {
        let backend = Backend {
            config,
            state: Mutex::new(Arc::new(fresh_state())),
            index: AtomicU64::new(0),
            servers: Mutex::new(vec!["127.0.0.1:4647".into()]),
            sched: Mutex::new(SchedulerConfig {
                num_schedulers: 2,
                enabled_schedulers: vec!["service".into(), "batch".into(), "_core".into()],
            }),
            hub: MonitorHub::new(),
            keys: Mutex::new(caravan_agent_core::keyring::KeyList::new(
                caravan_agent_core::keyring::GossipKey::from_bytes(&[7; 32])
                    .unwrap_or_else(|_| unreachable!("32 bytes is a key size")),
            )),
        };
        backend.reset();
        backend
    }

    /// A fresh state: bootstrapped ([`MGMT`]), one policy and a token with it ([`AGENT_READ`]).
    fn reset(&self) {
        let state = Arc::new(fresh_state());
        let time = "2026-01-01T00:00:00Z".to_string();
        let seed = [
            Command::Acl(AclWrite::Bootstrap {
                accessor_id: MGMT.replace("aaaaaaaa", "bbbbbbbb"),
                secret_id: MGMT.into(),
                create_time: time.clone(),
            }),
            Command::Acl(AclWrite::PolicyUpsert {
                name: "agent-read".into(),
                description: String::new(),
                rules: "agent {\n  policy = \"read\"\n}".into(),
            }),
            Command::Acl(AclWrite::TokenCreate {
                token: Token {
                    accessor_id: AGENT_READ.replace("aaaaaaaa", "bbbbbbbb"),
                    secret_id: AGENT_READ.into(),
                    name: "t".into(),
                    token_type: caravan_agent_core::acl::TokenType::Client,
                    policies: vec!["agent-read".into()],
                    global: false,
                    create_time: time,
                    create_index: 0,
                    modify_index: 0,
                },
            }),
        ];
        for (i, command) in seed.into_iter().enumerate() {
            state.apply_command(i as u64 + 1, command);
        }
        self.index.store(3, Ordering::Relaxed);
        *self.state.lock() = state;
    }

    fn state(&self) -> Arc<ClusterState> {
        self.state.lock().clone()
    }

    fn apply(&self, command: Command) -> Outcome {
        let index = self.index.fetch_add(1, Ordering::Relaxed) + 1;
        self.state().apply_command(index, command)
    }
}

fn fresh_state() -> ClusterState {
    ClusterState::new(Arc::new(EvalBroker::new(Default::default())), [7; 32])
}

fn write_result(w: JobWrite) -> JobWriteResult {
    JobWriteResult {
        eval_create_index: w.eval.create_index,
        eval_id: w.eval.id,
        job_modify_index: w.job_modify_index,
    }
}

impl AgentInfo for Backend {
    fn config(&self) -> &AgentConfig {
        &self.config
    }
    fn version(&self) -> VersionDto {
        VersionDto::release("0.1.0", "")
    }
    fn server_health(&self) -> Result<(), String> {
        Ok(())
    }
    fn client_health(&self) -> Result<(), String> {
        Ok(())
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

impl Membership for Backend {
    async fn members(&self, _token: Option<&str>) -> Result<MembersResponse, String> {
        Ok(MembersResponse {
            server_name: "fuzz".into(),
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
}

impl ServerList for Backend {
    fn servers(&self) -> Vec<String> {
        self.servers.lock().clone()
    }
    async fn set_servers(&self, addresses: Vec<String>) -> Result<(), String> {
        *self.servers.lock() = addresses;
        Ok(())
    }
}

impl Acls for Backend {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        self.state().resolve_token(token)
    }
    fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> R {
        self.state().acl_read(read)
    }
    async fn acl_write(&self, write: AclWrite) -> Result<Option<Token>, AclWriteError> {
        match self.apply(Command::Acl(write)) {
            Outcome::Acl(token) => Ok(token),
            Outcome::Refused(why) => Err(AclWriteError::Invalid(why)),
            other => Err(AclWriteError::Storage(format!("unexpected {other:?}"))),
        }
    }
}

impl Jobs for Backend {
    async fn register_job(&self, job: Job) -> Result<JobWriteResult, JobWriteError> {
        match self.apply(Command::JobRegister { job, seed: 1 }) {
            Outcome::Job(Some(w)) => Ok(write_result(w)),
            other => Err(JobWriteError::Unavailable(format!("{other:?}"))),
        }
    }
    async fn deregister_job(&self, id: &str) -> Result<Option<JobWriteResult>, JobWriteError> {
        let command = Command::JobDeregister {
            id: id.to_string(),
            seed: 2,
        };
        match self.apply(command) {
            Outcome::Job(w) => Ok(w.map(write_result)),
            other => Err(JobWriteError::Unavailable(format!("{other:?}"))),
        }
    }
    async fn read_state(
        &self,
        query: StateQuery,
        _options: ReadOptions,
    ) -> Result<Indexed<StateAnswer>, ReadError> {
        let (value, index) = self.state().store().query(&query);
        Ok(Indexed {
            value,
            index,
            known_leader: true,
            last_contact: Duration::ZERO,
        })
    }
}

impl Schedulers for Backend {
    fn schedulers(&self) -> Option<Vec<WorkerInfo>> {
        Some(Vec::new())
    }
    fn scheduler_config(&self) -> Option<SchedulerConfig> {
        Some(self.sched.lock().clone())
    }
    fn set_scheduler_config(&self, config: SchedulerConfig) -> SchedulerConfig {
        *self.sched.lock() = config.clone();
        config
    }
    fn num_cpus(&self) -> u32 {
        2
    }
}

impl Debugging for Backend {
    async fn host_data(&self) -> Result<HostData, String> {
        Ok(HostData {
            os: "fuzz".into(),
            network: vec![],
            resolv_conf: String::new(),
            hosts: String::new(),
            environment: Default::default(),
            disk: Default::default(),
        })
    }
    async fn profile(&self, request: ProfileRequest) -> Result<Vec<u8>, caravan_http::ApiError> {
        Ok(request.name.into_bytes())
    }
    fn monitor_hub(&self) -> &MonitorHub {
        &self.hub
    }
}

impl caravan_http::GossipKeyring for Backend {
    async fn keyring(
        &self,
        op: caravan_agent_core::keyring::KeyringOp,
    ) -> Result<caravan_agent_core::keyring::KeyringAnswer, String> {
        use caravan_agent_core::keyring::{KeyringAnswer, MemberKeyReply};
        let mut keys = self.keys.lock();
        let outcome = keys.apply(&op).map(|_| &*keys);
        let mut answer = KeyringAnswer::asking(1);
        answer.add("fuzz.global", Ok(MemberKeyReply::of(&op, outcome)));
        answer.finish()
    }
}

impl Operator for Backend {
    async fn status_leader(&self) -> Result<String, String> {
        Ok("127.0.0.1:4647".into())
    }
    async fn status_peers(&self) -> Result<Vec<String>, String> {
        Ok(vec!["127.0.0.1:4647".into()])
    }
    fn raft_configuration(&self) -> Result<RaftConfigurationDto, ReadError> {
        Ok(RaftConfigurationDto {
            servers: vec![RaftServerDto {
                id: "server-1".into(),
                node: "fuzz.global".into(),
                address: "127.0.0.1:4647".into(),
                leader: true,
                voter: true,
                raft_protocol: "3".into(),
            }],
            index: 1,
        })
    }
    async fn node_heartbeats(
        &self,
    ) -> Result<Vec<caravan_agent_core::heartbeat::LastHeartbeat>, ReadError> {
        // As the leader's timers answer, with the extremes a clock can give.
        let beat = |node_id: &str, since_ms, ttl_ms| caravan_agent_core::heartbeat::LastHeartbeat {
            node_id: node_id.into(),
            since_ms,
            ttl_ms,
        };
        Ok(vec![
            beat("node-1", 0, 10_000),
            beat("node-2", 25_000, 10_000),
            beat("node-3", u64::MAX, u64::MAX),
        ])
    }
    async fn autopilot_health(&self) -> Result<caravan_http::dto::AutopilotHealthDto, ReadError> {
        Ok(caravan_http::dto::AutopilotHealthDto {
            healthy: true,
            failure_tolerance: 0,
            servers: Vec::new(),
        })
    }
    async fn snapshot_save(&self) -> Result<Indexed<Vec<u8>>, ReadError> {
        let state = self.state();
        let bytes = caravan_cluster::command::encode(&state.export())
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        Ok(Indexed {
            value: bytes,
            index: state.applied_index().max(1),
            known_leader: true,
            last_contact: Duration::ZERO,
        })
    }
    async fn snapshot_restore(&self, snapshot: Vec<u8>) -> Result<(), RestoreError> {
        let snapshot: StateSnapshot = caravan_cluster::command::decode(&snapshot)
            .map_err(|e| RestoreError::Invalid(format!("bad snapshot: {e}")))?;
        match self.apply(Command::StateRestore(Box::new(snapshot))) {
            Outcome::Refused(why) => Err(RestoreError::Invalid(why)),
            _ => Ok(()),
        }
    }
}

impl Reload for Backend {
    async fn reload(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ROUTES;

    /// The patterns the table's entries reach, each as it is and with a path parameter after it.
    fn reached() -> Vec<&'static str> {
        ROUTES
            .iter()
            .flat_map(|entry| [entry.to_string(), format!("{entry}x")])
            .map(|path| caravan_http::route_pattern(&path))
            .collect()
    }

    #[test]
    fn every_route_the_application_knows_is_in_the_table() {
        let reached = reached();
        let missing: Vec<&str> = caravan_http::route_patterns()
            .into_iter()
            .filter(|p| !reached.contains(p))
            .collect();
        assert!(
            missing.is_empty(),
            "routes without an entry in http_api::ROUTES (add them at its end): {missing:?}"
        );
    }

    #[test]
    fn every_entry_is_one_route_apart() {
        let mut entries = ROUTES.to_vec();
        entries.sort();
        entries.dedup();
        assert_eq!(entries.len(), ROUTES.len(), "duplicate entries");
        assert!(ROUTES.len() <= 256, "a route is picked by one byte");
    }
}
