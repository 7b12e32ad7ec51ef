//! Nomad's job API, the minimum that gives scheduler workers real work: `/v1/jobs`,
//! `/v1/job/:id` (and `/allocations`), `/v1/evaluation/:id`, `/v1/nodes`.

use caravan_agent_core::acl::Acl;
use caravan_agent_core::jobs::{Allocation, Evaluation, Job, JobType, Node, Task, TaskGroup};
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::acl::require;
use crate::api::{AgentApi, JobWriteError, JobWriteResult};
use crate::response::{self, Body};
use crate::{ApiError, Ctx};

type Reply = Result<Response<Body>, ApiError>;

#[derive(Deserialize)]
struct RegisterRequest {
    #[serde(rename = "Job")]
    job: JobIn,
}

#[derive(Deserialize)]
struct JobIn {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Type", default)]
    job_type: Option<String>,
    #[serde(rename = "Priority", default)]
    priority: Option<u32>,
    #[serde(rename = "Datacenters", default)]
    datacenters: Vec<String>,
    #[serde(rename = "TaskGroups", default)]
    task_groups: Vec<GroupIn>,
}

#[derive(Deserialize)]
struct GroupIn {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Count", default)]
    count: Option<u32>,
    #[serde(rename = "Tasks", default)]
    tasks: Vec<TaskIn>,
}

#[derive(Deserialize)]
struct TaskIn {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Driver", default)]
    driver: String,
    #[serde(rename = "Resources", default)]
    resources: Option<ResourcesIn>,
}

#[derive(Deserialize, Default)]
struct ResourcesIn {
    #[serde(rename = "CPU", default)]
    cpu: Option<u64>,
    #[serde(rename = "MemoryMB", default)]
    memory_mb: Option<u64>,
}

fn parse_job(body: &[u8]) -> Result<Job, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("Request body is empty"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: RegisterRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("{path}: {}", e.into_inner()))
    })?;
    let j = req.job;
    let job_type = match j.job_type.as_deref() {
        None | Some("") => JobType::Service,
        Some(t) => JobType::parse(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Job.Type: invalid job type {t:?} (want service, batch, system or sysbatch)"
            ))
        })?,
    };
    let job = Job {
        name: if j.name.is_empty() {
            j.id.clone()
        } else {
            j.name
        },
        id: j.id,
        job_type,
        priority: j.priority.unwrap_or(50),
        datacenters: j.datacenters,
        groups: j
            .task_groups
            .into_iter()
            .map(|g| TaskGroup {
                name: g.name,
                count: g.count.unwrap_or(1),
                tasks: g
                    .tasks
                    .into_iter()
                    .map(|t| {
                        let r = t.resources.unwrap_or_default();
                        Task {
                            name: t.name,
                            driver: t.driver,
                            cpu: r.cpu.unwrap_or(100),
                            memory_mb: r.memory_mb.unwrap_or(300),
                        }
                    })
                    .collect(),
            })
            .collect(),
        stop: false,
        status: "pending".into(),
        create_index: 0,
        modify_index: 0,
        version: 0,
    };
    job.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(job)
}

#[derive(Serialize)]
struct WriteOut {
    #[serde(rename = "EvalID")]
    eval_id: String,
    #[serde(rename = "EvalCreateIndex")]
    eval_create_index: u64,
    #[serde(rename = "JobModifyIndex")]
    job_modify_index: u64,
}

impl From<JobWriteResult> for WriteOut {
    fn from(w: JobWriteResult) -> WriteOut {
        WriteOut {
            eval_id: w.eval_id,
            eval_create_index: w.eval_create_index,
            job_modify_index: w.job_modify_index,
        }
    }
}

fn job_json(j: &Job, full: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ID": j.id, "Name": j.name, "Type": j.job_type.as_str(), "Priority": j.priority,
        "Datacenters": j.datacenters, "Status": j.status, "Stop": j.stop, "Version": j.version,
        "CreateIndex": j.create_index, "ModifyIndex": j.modify_index, "JobModifyIndex": j.modify_index,
        "Namespace": "default",
    });
    if full {
        v["TaskGroups"] = j
            .groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "Name": g.name, "Count": g.count,
                    "Tasks": g.tasks.iter().map(|t| serde_json::json!({
                        "Name": t.name, "Driver": t.driver,
                        "Resources": {"CPU": t.cpu, "MemoryMB": t.memory_mb},
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    v
}

fn alloc_json(a: &Allocation) -> serde_json::Value {
    serde_json::json!({
        "ID": a.id, "Name": a.name, "JobID": a.job_id, "TaskGroup": a.task_group, "NodeID": a.node_id,
        "EvalID": a.eval_id, "DesiredStatus": a.desired_status, "ClientStatus": a.client_status,
        "Namespace": "default",
        "AllocatedResources": {"Shared": {}, "Tasks": {}, "CPU": a.cpu, "MemoryMB": a.memory_mb},
        "CreateIndex": a.create_index, "ModifyIndex": a.modify_index,
    })
}

fn eval_json(e: &Evaluation) -> serde_json::Value {
    serde_json::json!({
        "ID": e.id, "JobID": e.job_id, "Priority": e.priority, "Type": e.scheduler,
        "TriggeredBy": e.triggered_by, "Status": e.status.as_str(),
        "StatusDescription": e.status_description, "BlockedEval": e.blocked_eval,
        "QueuedAllocations": e.queued, "Namespace": "default",
        "CreateIndex": e.create_index, "ModifyIndex": e.modify_index,
    })
}

fn node_json(n: &Node) -> serde_json::Value {
    serde_json::json!({
        "ID": n.id, "Name": n.name, "Datacenter": n.datacenter, "NodeClass": n.node_class,
        "Status": n.status, "Meta": n.meta, "SchedulingEligibility": "eligible",
        "NodeResources": {"Cpu": {"CpuShares": n.cpu}, "Memory": {"MemoryMB": n.memory_mb}},
        "CreateIndex": n.create_index, "ModifyIndex": n.modify_index,
    })
}

/// With ACLs on, the job API needs a management token (namespace capabilities come later).
fn authorize_jobs<A: AgentApi>(agent: &A, ctx: &Ctx) -> Result<(), ApiError> {
    require(agent, ctx, Acl::is_management)
}

async fn register<A: AgentApi>(agent: &A, ctx: &Ctx, path_id: Option<&str>) -> Reply {
    authorize_jobs(agent, ctx)?;
    let job = parse_job(&ctx.body)?;
    if let Some(id) = path_id
        && id != job.id
    {
        return Err(ApiError::bad_request("Job ID does not match name"));
    }
    let w = agent.register_job(job).await.map_err(job_write_error)?;
    Ok(response::json(&WriteOut::from(w), ctx.query.pretty()))
}

/// `/v1/jobs`.
pub async fn jobs<A: AgentApi>(agent: &A, ctx: &Ctx) -> Reply {
    match ctx.method {
        Method::GET => {
            authorize_jobs(agent, ctx)?;
            let list: Vec<_> = agent.jobs().iter().map(|j| job_json(j, false)).collect();
            Ok(response::json(&list, ctx.query.pretty()))
        }
        Method::PUT | Method::POST => register(agent, ctx, None).await,
        _ => Err(ApiError::invalid_method()),
    }
}

/// `/v1/job/<rest>`.
pub async fn job<A: AgentApi>(agent: &A, ctx: &Ctx, rest: &str) -> Reply {
    let (id, sub) = match rest.split_once('/') {
        Some((id, sub)) => (id, Some(sub)),
        None => (rest, None),
    };
    if id.is_empty() {
        return crate::handlers::not_found();
    }
    match (sub, &ctx.method) {
        (Some("allocations"), &Method::GET) => {
            authorize_jobs(agent, ctx)?;
            let allocs = agent.job_allocations(id).ok_or_else(job_not_found)?;
            let list: Vec<_> = allocs.iter().map(alloc_json).collect();
            Ok(response::json(&list, ctx.query.pretty()))
        }
        (Some(_), _) => Err(ApiError::invalid_method()),
        (None, &Method::GET) => {
            authorize_jobs(agent, ctx)?;
            let job = agent.job(id).ok_or_else(job_not_found)?;
            Ok(response::json(&job_json(&job, true), ctx.query.pretty()))
        }
        (None, &Method::PUT) | (None, &Method::POST) => register(agent, ctx, Some(id)).await,
        (None, &Method::DELETE) => {
            authorize_jobs(agent, ctx)?;
            let w = agent
                .deregister_job(id)
                .await
                .map_err(job_write_error)?
                .ok_or_else(job_not_found)?;
            Ok(response::json(&WriteOut::from(w), ctx.query.pretty()))
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

fn job_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "job not found")
}

/// `GET /v1/evaluation/<id>`.
pub fn evaluation<A: AgentApi>(agent: &A, ctx: &Ctx, id: &str) -> Reply {
    if ctx.method != Method::GET {
        return Err(ApiError::invalid_method());
    }
    authorize_jobs(agent, ctx)?;
    let e = agent
        .evaluation(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "eval not found"))?;
    Ok(response::json(&eval_json(&e), ctx.query.pretty()))
}

/// `GET /v1/nodes`.
pub fn nodes<A: AgentApi>(agent: &A, ctx: &Ctx) -> Reply {
    if ctx.method != Method::GET {
        return Err(ApiError::invalid_method());
    }
    require(agent, ctx, Acl::allow_node_read)?;
    let list: Vec<_> = agent.nodes().iter().map(node_json).collect();
    Ok(response::json(&list, ctx.query.pretty()))
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
