//! The job, evaluation, allocation and node routes over a fake state (`Jobs`).

use std::sync::Mutex;
use std::time::Duration;

use caravan_agent_core::jobs::{Allocation, EvalStatus, Evaluation, Job, JobSubmission, Node};
use http::HeaderMap;

use super::{ACLS, AGENT_WRITE, Case, MGMT, NODE_READ, TestApp, UNKNOWN, case, run};
use crate::api::{
    Indexed, JobWriteError, JobWriteResult, ReadError, ReadOptions, StateAnswer, StateQuery,
};

/// Jobs over one seeded [`FakeState`]: registration answers evaluation `e2`, deregistration
/// of an unknown job nothing; every read is recorded with its options.
pub(super) struct JobsFake {
    state: FakeState,
    /// Every state read, with its options.
    reads: Mutex<Vec<(StateQuery, ReadOptions)>>,
    /// The index, leader and contact facts of every answer.
    read_meta: Mutex<(u64, bool, Duration)>,
    /// When set, every read fails this way.
    read_fault: Mutex<Option<Fault>>,
}

impl JobsFake {
    pub(super) fn seeded() -> JobsFake {
        JobsFake {
            state: FakeState::seeded(),
            reads: Mutex::new(Vec::new()),
            read_meta: Mutex::new((42, false, Duration::from_millis(1500))),
            read_fault: Mutex::new(None),
        }
    }

    fn fail(&self, fault: Fault) {
        *self.read_fault.lock().unwrap() = Some(fault);
    }
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
                secret_id: String::new(),
                attributes: Default::default(),
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
            StateQuery::JobEvaluations(id) => StateAnswer::Evaluations(
                self.evals
                    .iter()
                    .filter(|e| &e.job_id == id)
                    .cloned()
                    .collect(),
            ),
            StateQuery::Evaluation(id) => {
                StateAnswer::Evaluation(find(&self.evals, |e| &e.id == id))
            }
            StateQuery::Allocations => StateAnswer::Allocations(self.allocs.clone()),
            StateQuery::Allocation(id) => {
                StateAnswer::Allocation(find(&self.allocs, |a| &a.id == id))
            }
            StateQuery::Nodes => StateAnswer::Nodes(self.nodes.clone()),
            StateQuery::Node(id) => StateAnswer::Node(find(&self.nodes, |n| &n.id == id)),
            StateQuery::NodeAllocations(id) => StateAnswer::Allocations(
                self.allocs
                    .iter()
                    .filter(|a| &a.node_id == id)
                    .cloned()
                    .collect(),
            ),
        }
    }
}

impl crate::Jobs for JobsFake {
    async fn register_job(&self, _job: Job) -> Result<JobWriteResult, JobWriteError> {
        Ok(JobWriteResult {
            eval_id: "e2".into(),
            eval_create_index: 7,
            job_modify_index: 7,
        })
    }
    async fn deregister_job(&self, _id: &str) -> Result<Option<JobWriteResult>, JobWriteError> {
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

/// The jobs area's one helper: each row on a fresh agent with every capability.
async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

/// Every state read endpoint, with an ID the fake knows.
const READS: [&str; 10] = [
    "/v1/jobs",
    "/v1/job/web",
    "/v1/job/web/allocations",
    "/v1/job/web/evaluations",
    "/v1/evaluations",
    "/v1/evaluation/e1",
    "/v1/allocations",
    "/v1/allocation/a1",
    "/v1/nodes",
    "/v1/node/n1",
];

const WEB: &str = r#"{"Job": {"ID": "web", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Driver": "docker", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]}}"#;

#[tokio::test]
async fn registration_and_lookup_rules() {
    check(&[
        case("empty ID names Job.ID", "POST /v1/jobs", "400 ~Job.ID")
            .body(r#"{"Job": {"ID": "", "Datacenters": ["dc1"]}}"#),
        case("unknown type names Job.Type", "POST /v1/jobs", "400 ~Job.Type")
            .body(r#"{"Job": {"ID": "x", "Type": "cron", "Datacenters": ["dc1"]}}"#),
        case("mistyped count names its path", "POST /v1/jobs", "400 ~Job.TaskGroups[0].Count")
            .body(r#"{"Job": {"ID": "x", "TaskGroups": [{"Count": "two"}]}}"#),
        case(
            "zero CPU names its path",
            "POST /v1/jobs",
            "400 ~Job.TaskGroups[0].Tasks[0].Resources.CPU",
        )
        .body(r#"{"Job": {"ID": "x", "Datacenters": ["dc1"], "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "d", "Resources": {"CPU": 0}}]}]}}"#),
        case("no Job key", "POST /v1/jobs", "400 ~missing field `Job`").body(r#"{"NotAJob": {}}"#),
        case("empty body", "PUT /v1/jobs", "400 Request body is empty"),
        case("ID differs from the path", "POST /v1/job/other", "400 Job ID does not match name")
            .body(WEB),
        case(
            "a valid job registers",
            "POST /v1/jobs",
            r#"200 {"EvalID":"e2","EvalCreateIndex":7,"JobModifyIndex":7}"#,
        )
        .body(WEB),
        case("the same through its path", "PUT /v1/job/web", "200 ~\"EvalID\":\"e2\"").body(WEB),
        case("unknown job", "GET /v1/job/missing", "404 job not found"),
        case("unknown job's allocations", "GET /v1/job/nope/allocations", "404 job not found"),
        case("a job's evaluations", "GET /v1/job/web/evaluations", "200 ~\"ID\":\"e1\",\"JobID\":\"web\""),
        case("unknown job's evaluations: none, as Nomad", "GET /v1/job/nope/evaluations", "200 []"),
        case("deregistering an unknown job", "DELETE /v1/job/missing", "404 job not found"),
        case("unknown evaluation", "GET /v1/evaluation/missing", "404 eval not found"),
        case("unknown allocation", "GET /v1/allocation/nope", "404 alloc not found"),
        case("unknown node", "GET /v1/node/nope", "404 node not found")
            .answers_header("content-type", Some("text/plain; charset=utf-8"))
            .answers_header("x-nomad-index", Some("42")),
        case("DELETE jobs", "DELETE /v1/jobs", "405 Invalid method"),
        case("PATCH jobs", "PATCH /v1/jobs", "405 Invalid method"),
        case("POST evaluations", "POST /v1/evaluations", "405 Invalid method"),
        case("PUT an evaluation", "PUT /v1/evaluation/e1", "405 Invalid method"),
        case("DELETE allocations", "DELETE /v1/allocations", "405 Invalid method"),
        case("PUT an allocation", "PUT /v1/allocation/a1", "405 Invalid method"),
        case("POST nodes", "POST /v1/nodes", "405 Invalid method")
            .answers_header("x-nomad-index", None),
        case("DELETE a node", "DELETE /v1/node/n1", "405 Invalid method"),
        case("PUT a job's allocations", "PUT /v1/job/web/allocations", "405 Invalid method"),
        case("PUT a job's evaluations", "PUT /v1/job/web/evaluations", "405 Invalid method"),
        case("bad index: no read headers", "GET /v1/jobs?index=x", "400 Invalid index")
            .answers_header("x-nomad-index", None),
        // The JSON shapes are the existing ones.
        case("allocation JSON", "GET /v1/allocation/a1", "200 ~\"EvalID\":\"e1\""),
        case("allocation list JSON", "GET /v1/allocations", "200 ~\"ID\":\"a1\""),
        case("evaluation list JSON", "GET /v1/evaluations", "200 ~\"Status\":\"complete\""),
        case("node JSON", "GET /v1/node/n1", "200 ~\"Datacenter\":\"dc1\""),
        case("job JSON", "GET /v1/job/web", "200 ~\"TaskGroups\":[{\"Count\":1,\"Name\":\"g\""),
        case("job list stubs", "GET /v1/jobs", "200 !TaskGroups"),
    ])
    .await;
}

/// A fault of the agent: its name, how the fake is made to fail, the answer.
type FaultRow = (&'static str, fn(&TestApp), &'static str);

/// A row built in a loop, owning its name and request.
struct Generated {
    name: String,
    request: String,
    expected: String,
    config: &'static str,
    token: Option<&'static str>,
    setup: Option<fn(&TestApp)>,
}

impl Generated {
    fn new(name: String, request: String, expected: String) -> Generated {
        Generated {
            name,
            request,
            expected,
            config: "",
            token: None,
            setup: None,
        }
    }

    fn case(&self) -> Case<'_> {
        let mut c = case(&self.name, &self.request, &self.expected).config(self.config);
        if let Some(setup) = self.setup {
            c = c.setup(setup);
        }
        if let Some(token) = self.token {
            c = c.token(token);
        }
        c
    }
}

/// Every read endpoint × each generic parameter error, each fault of the agent, and each kind
/// of caller with ACLs on.
#[tokio::test]
async fn state_read_rules() {
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
    let faults: [FaultRow; 4] = [
        (
            "no server",
            |t| t.jobs.fail(Fault::Error(ReadError::NoServer)),
            "501 this agent runs no server",
        ),
        (
            "no leader",
            |t| t.jobs.fail(Fault::Error(ReadError::NoLeader)),
            "500 No cluster leader",
        ),
        (
            "unavailable",
            |t| {
                t.jobs.fail(Fault::Error(ReadError::Unavailable(
                    "raft is shutting down".into(),
                )))
            },
            "500 raft is shutting down",
        ),
        (
            "wrong answer",
            |t| t.jobs.fail(Fault::WrongAnswer),
            "500 ^internal error: ",
        ),
    ];
    let callers = [
        ("management", Some(MGMT)),
        ("node:read", Some(NODE_READ)),
        ("agent:write", Some(AGENT_WRITE)),
        ("unknown token", Some(UNKNOWN)),
        ("anonymous", None),
    ];
    let mut rows = Vec::new();
    for uri in READS {
        for (q, text) in bad {
            let request = format!("GET {uri}?{q}");
            rows.push(Generated::new(
                format!("{uri} ?{q}"),
                request,
                format!("400 {text}"),
            ));
        }
        for (fault, setup, want) in faults {
            // A wrong answer to a node list is a node list.
            if fault == "wrong answer" && uri == "/v1/nodes" {
                continue;
            }
            let mut row =
                Generated::new(format!("{uri} {fault}"), format!("GET {uri}"), want.into());
            row.setup = Some(setup);
            rows.push(row);
        }
        for (who, token) in callers {
            let allowed =
                who == "management" || (who == "node:read" && uri.starts_with("/v1/node"));
            let want = if allowed {
                "200 *"
            } else {
                "403 Permission denied"
            };
            let mut row =
                Generated::new(format!("{uri} as {who}"), format!("GET {uri}"), want.into());
            row.config = ACLS;
            row.token = token;
            rows.push(row);
        }
    }
    let mut cases: Vec<Case<'_>> = rows.iter().map(Generated::case).collect();
    // Writes need a management token, checked before the body is read.
    cases.extend([
        case(
            "node:read cannot register",
            "POST /v1/jobs",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(NODE_READ)
        .body("{nope"),
        case(
            "agent:write cannot deregister",
            "DELETE /v1/job/web",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(AGENT_WRITE),
        case("management registers", "POST /v1/jobs", "200 ~\"EvalID\"")
            .config(ACLS)
            .token(MGMT)
            .body(WEB),
    ]);
    check(&cases).await;
}

fn last_read(a: &TestApp) -> Option<(StateQuery, ReadOptions)> {
    a.jobs.reads.lock().unwrap().last().cloned()
}

/// What the agent is asked: the query and Nomad's `stale`, `index` and `wait`.
#[tokio::test]
async fn state_reads_pass_stale_index_and_wait() {
    let opts = |stale, min_index, wait_secs| ReadOptions {
        stale,
        min_index,
        wait: Duration::from_secs(wait_secs),
    };
    let rows = [
        ("/v1/jobs", StateQuery::Jobs, opts(false, 0, 0)),
        ("/v1/jobs?stale", StateQuery::Jobs, opts(true, 0, 0)),
        ("/v1/jobs?stale=", StateQuery::Jobs, opts(true, 0, 0)),
        ("/v1/jobs?stale=true", StateQuery::Jobs, opts(true, 0, 0)),
        ("/v1/jobs?stale=false", StateQuery::Jobs, opts(false, 0, 0)),
        ("/v1/jobs?stale=0", StateQuery::Jobs, opts(false, 0, 0)),
        (
            "/v1/jobs?index=7&wait=5s",
            StateQuery::Jobs,
            opts(false, 7, 5),
        ),
        ("/v1/jobs?index=&wait=", StateQuery::Jobs, opts(false, 0, 0)),
        (
            "/v1/job/web?stale=1&index=3&wait=1m",
            StateQuery::Job("web".into()),
            opts(true, 3, 60),
        ),
        (
            "/v1/job/web/allocations?index=9",
            StateQuery::JobAllocations("web".into()),
            opts(false, 9, 0),
        ),
        (
            "/v1/job/web/evaluations?stale&index=4",
            StateQuery::JobEvaluations("web".into()),
            opts(true, 4, 0),
        ),
        (
            "/v1/evaluations?stale",
            StateQuery::Evaluations,
            opts(true, 0, 0),
        ),
        (
            "/v1/evaluation/e1?wait=2s",
            StateQuery::Evaluation("e1".into()),
            opts(false, 0, 2),
        ),
        (
            "/v1/allocations?index=18446744073709551615",
            StateQuery::Allocations,
            opts(false, u64::MAX, 0),
        ),
        (
            "/v1/allocation/a1?stale=T",
            StateQuery::Allocation("a1".into()),
            opts(true, 0, 0),
        ),
        (
            "/v1/nodes?index=4&wait=10s",
            StateQuery::Nodes,
            opts(false, 4, 10),
        ),
        (
            "/v1/node/n1",
            StateQuery::Node("n1".into()),
            opts(false, 0, 0),
        ),
    ];
    for (uri, query, want) in rows {
        let a = TestApp::new("");
        let r = a.call("GET", uri, None, "").await;
        assert_eq!(r.status, 200, "{uri}: {}", r.body);
        assert_eq!(last_read(&a), Some((query, want)), "{uri}");
    }
    let a = TestApp::new("");
    for uri in READS {
        a.call("GET", &format!("{uri}?index=x"), None, "").await;
    }
    assert_eq!(last_read(&a), None, "no read is made for a bad request");
}

#[tokio::test]
async fn state_reads_carry_index_leader_and_contact_headers() {
    let a = TestApp::new("");
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
        let r = a.call("GET", uri, None, "").await;
        assert_eq!(r.status, 200, "{uri}: {}", r.body);
        assert_eq!(headers(&r.headers), some("42", "false", "1500"), "{uri}");
        assert_eq!(r.headers["content-type"], "application/json", "{uri}");
    }
    // Nomad's meta: index at least 1, whole milliseconds, true on a known leader.
    *a.jobs.read_meta.lock().unwrap() = (0, true, Duration::from_micros(2999));
    for uri in READS {
        let r = a.call("GET", uri, None, "").await;
        assert_eq!(headers(&r.headers), some("1", "true", "2"), "{uri}");
    }
    // A 404 is a read that found nothing: Nomad sets the headers before it looks.
    let r = a.call("GET", "/v1/node/nope", None, "").await;
    assert_eq!(
        (r.status, headers(&r.headers)),
        (404, some("1", "true", "2"))
    );
    // Agent endpoints never carry them (spec §0.4), nor do failures.
    for (method, uri) in [
        ("GET", "/v1/agent/self"),
        ("GET", "/v1/agent/members"),
        ("GET", "/v1/agent/health"),
        ("GET", "/v1/jobs?index=x"),
        ("POST", "/v1/nodes"),
    ] {
        let r = a.call(method, uri, None, "").await;
        assert_eq!(headers(&r.headers), [None, None, None], "{method} {uri}");
    }
}

/// The object DTOs send their keys in sorted order, as the `json!` maps they replaced did, and
/// exactly the wire's keys: re-encoding through a sorted map changes no byte. The write answer
/// keeps Nomad's own order.
#[test]
fn dtos_keep_the_wire_bytes() {
    use crate::dto::{AllocationDto, EvaluationDto, JobDto, JobWriteDto, NodeDto};
    let state = FakeState::seeded();
    let check = |direct: String, keys: usize| {
        let sorted: serde_json::Value = serde_json::from_str(&direct).unwrap();
        assert_eq!(serde_json::to_string(&sorted).unwrap(), direct);
        assert_eq!(sorted.as_object().map(|o| o.len()), Some(keys), "{direct}");
    };
    check(
        serde_json::to_string(&JobDto::new(&state.jobs[0], false)).unwrap(),
        12,
    );
    check(
        serde_json::to_string(&JobDto::new(&state.jobs[0], true)).unwrap(),
        13,
    );
    check(
        serde_json::to_string(&EvaluationDto::from(&state.evals[0])).unwrap(),
        12,
    );
    check(
        serde_json::to_string(&AllocationDto::from(&state.allocs[0])).unwrap(),
        12,
    );
    check(
        serde_json::to_string(&NodeDto::from(&state.nodes[0])).unwrap(),
        10,
    );
    let w = JobWriteResult {
        eval_id: "e1".into(),
        eval_create_index: 5,
        job_modify_index: 4,
    };
    assert_eq!(
        serde_json::to_string(&JobWriteDto::from(w)).unwrap(),
        r#"{"EvalID":"e1","EvalCreateIndex":5,"JobModifyIndex":4}"#
    );
}
