//! Nomad's job API, the minimum that gives scheduler workers real work: `/v1/jobs`,
//! `/v1/job/:id` (and `/allocations`), `/v1/evaluations`, `/v1/evaluation/:id`,
//! `/v1/allocations`, `/v1/allocation/:id`, `/v1/nodes`, `/v1/node/:id`.
//!
//! A submitted job is decoded from Nomad's wire casing into a
//! [`JobSubmission`]; its defaults and checks are
//! the domain's ([`Job::from_submission`]). Every read goes through [`Jobs::read_state`](crate::Jobs::read_state)
//! with the request's `stale`, `index` and `wait`, and its answer carries `X-Nomad-Index`,
//! `X-Nomad-KnownLeader` and `X-Nomad-LastContact` (a `404` of an unknown object too, as
//! Nomad sets them before it looks at the answer).

use caravan_agent_core::acl::Acl;
use caravan_agent_core::jobs::Job;
use caravan_agent_core::query::{Indexed, StateAnswer, StateQuery};
use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;

use crate::api::{JobWriteError, ReadError, RestoreError};
use crate::app::Caps;
use crate::dto::{
    AllocationDto, EvaluationDto, JobDto, JobWriteDto, NodeDto, NodeHeartbeatDto, RegisterRequest,
};
use crate::response;
use crate::{ApiError, Ctx, Reply, only};

/// Decodes a registration body; the domain fills the defaults and checks the job.
fn parse_job(body: &[u8]) -> Result<Job, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("Request body is empty"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: RegisterRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("{path}: {}", e.into_inner()))
    })?;
    Job::from_submission(req.job.into()).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Job writes need [`Acl::allow_job_submit`].
fn authorize_jobs(caps: &Caps, ctx: &Ctx) -> Result<(), ApiError> {
    caps.require(ctx.token.as_deref(), Acl::allow_job_submit)
}

/// What a read shows: the encoded JSON of what was found, or the `404` text of what was not.
enum Shown {
    Found(Vec<u8>),
    Missing(&'static str),
}

impl Shown {
    /// One object (or one list that may be missing), as its DTO.
    fn one<T: Serialize>(found: Option<T>, pretty: bool, missing: &'static str) -> Shown {
        match found {
            Some(v) => Shown::Found(response::encode_json(&v, pretty)),
            None => Shown::Missing(missing),
        }
    }

    /// A list, as its DTOs.
    fn all<T: Serialize>(items: impl Iterator<Item = T>, pretty: bool) -> Shown {
        Shown::Found(response::encode_json(&items.collect::<Vec<T>>(), pretty))
    }
}

/// One state read, in Nomad's order: the method (`GET` only), the generic parameters (their
/// `400`s), the capability, then [`Jobs::read_state`](crate::Jobs::read_state). `show` turns the answer into what
/// the endpoint sends; `None` means the agent answered another kind of query (a `500`).
async fn state_read(
    caps: &Caps,
    ctx: &Ctx,
    allowed: fn(&Acl) -> bool,
    query: StateQuery,
    show: impl FnOnce(StateAnswer, bool) -> Option<Shown>,
) -> Reply {
    only(ctx, &[Method::GET])?;
    let options = ctx.query.read_options()?;
    caps.require(ctx.token.as_deref(), allowed)?;
    let Indexed {
        value,
        index,
        known_leader,
        last_contact,
    } = caps
        .jobs()?
        .read_state(query.clone(), options)
        .await
        .map_err(read_error)?;
    let kind = answer_kind(&value);
    let mut resp = match show(value, ctx.query.pretty()) {
        Some(Shown::Found(json)) => response::with_type(StatusCode::OK, response::JSON, json),
        Some(Shown::Missing(text)) => {
            let e = ApiError::new(StatusCode::NOT_FOUND, text);
            crate::log_failure(ctx, &e);
            response::error(&e)
        }
        None => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: the agent answered the state query {query:?} with {kind}"),
            ));
        }
    };
    set_read_headers(resp.headers_mut(), index, known_leader, last_contact);
    Ok(resp)
}

/// Nomad's `setMeta`: the index (at least 1), whether a leader is known, and the time since
/// the leader was last heard from in whole milliseconds.
fn set_read_headers(
    headers: &mut HeaderMap,
    index: u64,
    known_leader: bool,
    last_contact: std::time::Duration,
) {
    headers.insert("x-nomad-index", HeaderValue::from(index.max(1)));
    headers.insert(
        "x-nomad-knownleader",
        HeaderValue::from_static(if known_leader { "true" } else { "false" }),
    );
    let millis = u64::try_from(last_contact.as_millis()).unwrap_or(u64::MAX);
    headers.insert("x-nomad-lastcontact", HeaderValue::from(millis));
}

/// `/v1/operator/snapshot`: `GET` saves the replicated state (a consistent read, with the
/// read headers), `PUT` restores it; both need a management token.
pub(crate) async fn snapshot(caps: &Caps, ctx: &Ctx) -> Reply {
    match ctx.method {
        Method::GET => {
            caps.require(ctx.token.as_deref(), Acl::allow_snapshot)?;
            let saved = caps.operator()?.snapshot_save().await.map_err(read_error)?;
            let mut resp =
                response::with_type(StatusCode::OK, "application/octet-stream", saved.value);
            set_read_headers(
                resp.headers_mut(),
                saved.index,
                saved.known_leader,
                saved.last_contact,
            );
            Ok(resp)
        }
        Method::PUT | Method::POST => {
            caps.require(ctx.token.as_deref(), Acl::allow_snapshot)?;
            let operator = caps.operator()?;
            if ctx.body.is_empty() {
                return Err(ApiError::bad_request("Request body is empty"));
            }
            operator
                .snapshot_restore(ctx.body.to_vec())
                .await
                .map_err(|e| match e {
                    RestoreError::NoServer => {
                        ApiError::new(StatusCode::NOT_IMPLEMENTED, "this agent runs no server")
                    }
                    RestoreError::Invalid(m) => ApiError::bad_request(m),
                    RestoreError::Unavailable(m) => {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
                    }
                })?;
            Ok(response::empty())
        }
        _ => Err(ApiError::invalid_method()),
    }
}

/// `GET /v1/operator/raft/configuration` (`operator:read`).
pub(crate) fn raft_configuration(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    caps.require(ctx.token.as_deref(), Acl::allow_operator_read)?;
    let config = caps.operator()?.raft_configuration().map_err(read_error)?;
    Ok(response::json(&config, ctx.query.pretty()))
}

/// `GET /v1/operator/autopilot/health` (`operator:read`): `200`, or `429` with the same body
/// when some voter is unhealthy (Nomad's answer, so load balancers can probe it).
pub(crate) async fn autopilot_health(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    caps.require(ctx.token.as_deref(), Acl::allow_operator_read)?;
    let health = caps
        .operator()?
        .autopilot_health()
        .await
        .map_err(read_error)?;
    let mut resp = response::json(&health, ctx.query.pretty());
    if !health.healthy {
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    }
    Ok(resp)
}

pub(crate) fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::NoServer => {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "this agent runs no server")
        }
        ReadError::NoLeader => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader")
        }
        ReadError::Unavailable(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

fn answer_kind(answer: &StateAnswer) -> &'static str {
    match answer {
        StateAnswer::Jobs(_) => "Jobs",
        StateAnswer::Job(_) => "Job",
        StateAnswer::JobAllocations(_) => "JobAllocations",
        StateAnswer::Evaluations(_) => "Evaluations",
        StateAnswer::Evaluation(_) => "Evaluation",
        StateAnswer::Allocations(_) => "Allocations",
        StateAnswer::Allocation(_) => "Allocation",
        StateAnswer::Nodes(_) => "Nodes",
        StateAnswer::Node(_) => "Node",
    }
}

async fn register(caps: &Caps, ctx: &Ctx, path_id: Option<&str>) -> Reply {
    authorize_jobs(caps, ctx)?;
    let job = parse_job(&ctx.body)?;
    if let Some(id) = path_id
        && id != job.id
    {
        return Err(ApiError::bad_request("Job ID does not match name"));
    }
    let w = caps
        .jobs()?
        .register_job(job)
        .await
        .map_err(job_write_error)?;
    Ok(response::json(&JobWriteDto::from(w), ctx.query.pretty()))
}

/// `/v1/jobs`.
pub(crate) async fn jobs(caps: &Caps, ctx: &Ctx) -> Reply {
    match ctx.method {
        Method::GET => {
            state_read(
                caps,
                ctx,
                Acl::allow_job_read,
                StateQuery::Jobs,
                |a, pretty| match a {
                    StateAnswer::Jobs(jobs) => Some(Shown::all(
                        jobs.iter().map(|j| JobDto::new(j, false)),
                        pretty,
                    )),
                    _ => None,
                },
            )
            .await
        }
        Method::PUT | Method::POST => register(caps, ctx, None).await,
        _ => Err(ApiError::invalid_method()),
    }
}

/// `/v1/job/<rest>`.
pub(crate) async fn job(caps: &Caps, ctx: &Ctx, rest: &str) -> Reply {
    let (id, sub) = match rest.split_once('/') {
        Some((id, sub)) => (id, Some(sub)),
        None => (rest, None),
    };
    if id.is_empty() {
        return crate::handlers::not_found();
    }
    match (sub, &ctx.method) {
        (Some("allocations"), &Method::GET) => {
            let query = StateQuery::JobAllocations(id.to_string());
            state_read(caps, ctx, Acl::allow_job_read, query, |a, pretty| match a {
                StateAnswer::JobAllocations(allocs) => {
                    let shown = allocs
                        .as_ref()
                        .map(|allocs| allocs.iter().map(AllocationDto::from).collect::<Vec<_>>());
                    Some(Shown::one(shown, pretty, JOB_NOT_FOUND))
                }
                _ => None,
            })
            .await
        }
        (Some("evaluations"), &Method::GET) => {
            evaluation_list(caps, ctx, StateQuery::JobEvaluations(id.to_string())).await
        }
        (Some(_), _) => Err(ApiError::invalid_method()),
        (None, &Method::GET) => {
            let query = StateQuery::Job(id.to_string());
            state_read(caps, ctx, Acl::allow_job_read, query, |a, pretty| match a {
                StateAnswer::Job(job) => {
                    let shown = job.as_ref().map(|j| JobDto::new(j, true));
                    Some(Shown::one(shown, pretty, JOB_NOT_FOUND))
                }
                _ => None,
            })
            .await
        }
        (None, &Method::PUT) | (None, &Method::POST) => register(caps, ctx, Some(id)).await,
        (None, &Method::DELETE) => {
            authorize_jobs(caps, ctx)?;
            let w = caps
                .jobs()?
                .deregister_job(id)
                .await
                .map_err(job_write_error)?
                .ok_or_else(job_not_found)?;
            Ok(response::json(&JobWriteDto::from(w), ctx.query.pretty()))
        }
        _ => Err(ApiError::invalid_method()),
    }
}

fn job_write_error(e: JobWriteError) -> ApiError {
    match e {
        JobWriteError::NoServer => {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "this agent runs no server")
        }
        JobWriteError::Unavailable(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

const JOB_NOT_FOUND: &str = "job not found";

fn job_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, JOB_NOT_FOUND)
}

/// `GET /v1/evaluations`.
pub(crate) async fn evaluations(caps: &Caps, ctx: &Ctx) -> Reply {
    evaluation_list(caps, ctx, StateQuery::Evaluations).await
}

/// A list of evaluations: every one, or a job's.
async fn evaluation_list(caps: &Caps, ctx: &Ctx, query: StateQuery) -> Reply {
    state_read(caps, ctx, Acl::allow_job_read, query, |a, pretty| match a {
        StateAnswer::Evaluations(evals) => {
            Some(Shown::all(evals.iter().map(EvaluationDto::from), pretty))
        }
        _ => None,
    })
    .await
}

/// `GET /v1/evaluation/<id>`.
pub(crate) async fn evaluation(caps: &Caps, ctx: &Ctx, id: &str) -> Reply {
    let query = StateQuery::Evaluation(id.to_string());
    state_read(caps, ctx, Acl::allow_job_read, query, |a, pretty| match a {
        StateAnswer::Evaluation(eval) => Some(Shown::one(
            eval.as_ref().map(EvaluationDto::from),
            pretty,
            "eval not found",
        )),
        _ => None,
    })
    .await
}

/// `GET /v1/allocations`.
pub(crate) async fn allocations(caps: &Caps, ctx: &Ctx) -> Reply {
    state_read(
        caps,
        ctx,
        Acl::allow_job_read,
        StateQuery::Allocations,
        |a, pretty| match a {
            StateAnswer::Allocations(allocs) => {
                Some(Shown::all(allocs.iter().map(AllocationDto::from), pretty))
            }
            _ => None,
        },
    )
    .await
}

/// `GET /v1/allocation/<id>`.
pub(crate) async fn allocation(caps: &Caps, ctx: &Ctx, id: &str) -> Reply {
    let query = StateQuery::Allocation(id.to_string());
    state_read(caps, ctx, Acl::allow_job_read, query, |a, pretty| match a {
        StateAnswer::Allocation(alloc) => Some(Shown::one(
            alloc.as_ref().map(AllocationDto::from),
            pretty,
            "alloc not found",
        )),
        _ => None,
    })
    .await
}

/// `GET /v1/nodes` (`node:read`).
pub(crate) async fn nodes(caps: &Caps, ctx: &Ctx) -> Reply {
    state_read(
        caps,
        ctx,
        Acl::allow_node_read,
        StateQuery::Nodes,
        |a, pretty| match a {
            StateAnswer::Nodes(nodes) => Some(Shown::all(nodes.iter().map(NodeDto::from), pretty)),
            _ => None,
        },
    )
    .await
}

/// `GET /v1/nodes/heartbeats` (`node:read`): each client node's last heartbeat as the leader
/// saw it, by node ID (a Caravan addition for the operator page).
pub(crate) async fn node_heartbeats(caps: &Caps, ctx: &Ctx) -> Reply {
    only(ctx, &[Method::GET])?;
    caps.require(ctx.token.as_deref(), Acl::allow_node_read)?;
    let beats = caps
        .operator()?
        .node_heartbeats()
        .await
        .map_err(read_error)?;
    let now = std::time::SystemTime::now();
    let shown: Vec<NodeHeartbeatDto> = beats
        .iter()
        .map(|b| NodeHeartbeatDto::new(b, now))
        .collect();
    Ok(response::json(&shown, ctx.query.pretty()))
}

/// `GET /v1/node/<id>` (`node:read`).
pub(crate) async fn node(caps: &Caps, ctx: &Ctx, id: &str) -> Reply {
    if let Some(id) = id.strip_suffix("/allocations") {
        return node_allocations(caps, ctx, id).await;
    }
    let query = StateQuery::Node(id.to_string());
    state_read(
        caps,
        ctx,
        Acl::allow_node_read,
        query,
        |a, pretty| match a {
            StateAnswer::Node(node) => Some(Shown::one(
                node.as_ref().map(NodeDto::from),
                pretty,
                "node not found",
            )),
            _ => None,
        },
    )
    .await
}

/// `GET /v1/node/<id>/allocations`: what is placed on a node (node:read and job read, as
/// Nomad asks for both).
async fn node_allocations(caps: &Caps, ctx: &Ctx, id: &str) -> Reply {
    caps.require(ctx.token.as_deref(), Acl::allow_node_read)?;
    let query = StateQuery::NodeAllocations(id.to_string());
    state_read(caps, ctx, Acl::allow_job_read, query, |a, pretty| match a {
        StateAnswer::Allocations(allocs) => {
            Some(Shown::all(allocs.iter().map(AllocationDto::from), pretty))
        }
        _ => None,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_fields() {
        let ok = br#"{"Job": {"ID": "web", "Datacenters": ["dc1"], "TaskGroups": [{"Name": "g", "Count": 2, "Tasks": [{"Name": "t", "Driver": "docker", "Resources": {"CPU": 100, "MemoryMB": 64}}]}]}}"#;
        let job = parse_job(ok).unwrap();
        assert_eq!(
            (job.name.as_str(), job.priority, job.groups[0].count),
            ("web", 50, 2)
        );
        let e = |b: &[u8]| parse_job(b).unwrap_err().message;
        assert_eq!(e(b""), "Request body is empty");
        assert!(
            e(br#"{"Job": {"ID": "x", "TaskGroups": [{"Count": "two"}]}}"#)
                .starts_with("Job.TaskGroups[0].Count: invalid type")
        );
        assert!(
            e(br#"{"Job": {"ID": "x", "Type": "cron", "Datacenters": ["dc1"]}}"#)
                .starts_with("Job.Type")
        );
        assert!(e(br#"{"Job": {"ID": "", "Datacenters": ["dc1"]}}"#).starts_with("Job.ID"));
        assert!(e(br#"{"nope": 1}"#).contains("missing field `Job`"));
    }
}
