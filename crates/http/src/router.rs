//! Path matching (spec §0.1): exact routes, the `pprof/` and `keyring/` prefixes with Go's
//! redirect for the slash-less form, and a 404 fall-through for everything else.

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/agent/self`.
    AgentSelf,
    /// `/v1/regions`.
    Regions,
    /// `/v1/agent/join`.
    Join,
    /// `/v1/agent/members`.
    Members,
    /// `/v1/agent/force-leave`.
    ForceLeave,
    /// `/v1/agent/servers`.
    Servers,
    /// `/v1/agent/schedulers`.
    Schedulers,
    /// `/v1/agent/schedulers/config`.
    SchedulersConfig,
    /// `/v1/agent/health`.
    Health,
    /// `/v1/agent/host`.
    Host,
    /// `/v1/agent/reload`.
    Reload,
    /// `/v1/agent/monitor`.
    Monitor,
    /// `/v1/agent/monitor/export`.
    MonitorExport,
    /// `/v1/agent/pprof/<name>`; the name may be empty.
    Pprof(String),
    /// `/v1/agent/keyring/<op>`.
    Keyring(String),
    /// `/v1/jobs`.
    Jobs,
    /// `/v1/job/<rest>`.
    Job(String),
    /// `/v1/evaluations`.
    Evaluations,
    /// `/v1/evaluation/<id>`.
    Evaluation(String),
    /// `/v1/allocations`.
    Allocations,
    /// `/v1/allocation/<id>`.
    Allocation(String),
    /// `/v1/nodes`.
    Nodes,
    /// `/v1/nodes/heartbeats` (Caravan's: each node's last heartbeat).
    NodeHeartbeats,
    /// `/v1/node/<id>`.
    Node(String),
    /// `/v1/operator/snapshot`: save (`GET`) or restore (`PUT`) the replicated state.
    OperatorSnapshot,
    /// `/v1/operator/raft/configuration`.
    OperatorRaftConfiguration,
    /// `/v1/operator/autopilot/health`.
    OperatorAutopilotHealth,
    /// `/v1/status/leader`.
    StatusLeader,
    /// `/v1/status/peers`.
    StatusPeers,
    /// `/v1/metrics`.
    Metrics,
    /// `/v1/acl/<rest>`: the ACL API.
    Acl(String),
    /// A prefix route asked for without its trailing slash: Go's `301` to this location.
    Redirect(&'static str),
    /// No route: `404` with an empty body.
    NotFound,
}

impl Route {
    /// One route of every kind, in declaration order (payloads empty): what
    /// [`crate::route_patterns`] lists, so a tool that must cover every endpoint (the HTTP fuzz
    /// target's table) learns of a new one. A test checks it against the enum's declaration.
    pub(crate) const EVERY: [Route; 33] = [
        Route::AgentSelf,
        Route::Regions,
        Route::Join,
        Route::Members,
        Route::ForceLeave,
        Route::Servers,
        Route::Schedulers,
        Route::SchedulersConfig,
        Route::Health,
        Route::Host,
        Route::Reload,
        Route::Monitor,
        Route::MonitorExport,
        Route::Pprof(String::new()),
        Route::Keyring(String::new()),
        Route::Jobs,
        Route::Job(String::new()),
        Route::Evaluations,
        Route::Evaluation(String::new()),
        Route::Allocations,
        Route::Allocation(String::new()),
        Route::Nodes,
        Route::NodeHeartbeats,
        Route::Node(String::new()),
        Route::OperatorSnapshot,
        Route::OperatorRaftConfiguration,
        Route::OperatorAutopilotHealth,
        Route::StatusLeader,
        Route::StatusPeers,
        Route::Metrics,
        Route::Acl(String::new()),
        Route::Redirect("/v1/agent/pprof/"),
        Route::NotFound,
    ];

    /// Matches a request path (without the query).
    pub fn of(path: &str) -> Route {
        match path {
            "/v1/agent/self" => Route::AgentSelf,
            "/v1/agent/join" => Route::Join,
            "/v1/agent/members" => Route::Members,
            "/v1/agent/force-leave" => Route::ForceLeave,
            "/v1/agent/servers" => Route::Servers,
            "/v1/agent/schedulers" => Route::Schedulers,
            "/v1/agent/schedulers/config" => Route::SchedulersConfig,
            "/v1/agent/health" => Route::Health,
            "/v1/agent/host" => Route::Host,
            "/v1/agent/reload" => Route::Reload,
            "/v1/agent/monitor" => Route::Monitor,
            "/v1/agent/monitor/export" => Route::MonitorExport,
            "/v1/agent/pprof" => Route::Redirect("/v1/agent/pprof/"),
            "/v1/jobs" => Route::Jobs,
            "/v1/regions" => Route::Regions,
            "/v1/evaluations" => Route::Evaluations,
            "/v1/allocations" => Route::Allocations,
            "/v1/nodes" => Route::Nodes,
            "/v1/nodes/heartbeats" => Route::NodeHeartbeats,
            "/v1/operator/snapshot" => Route::OperatorSnapshot,
            "/v1/operator/raft/configuration" => Route::OperatorRaftConfiguration,
            "/v1/operator/autopilot/health" => Route::OperatorAutopilotHealth,
            "/v1/status/leader" => Route::StatusLeader,
            "/v1/status/peers" => Route::StatusPeers,
            "/v1/metrics" => Route::Metrics,
            "/v1/agent/keyring" => Route::Redirect("/v1/agent/keyring/"),
            _ => {
                if let Some(name) = path.strip_prefix("/v1/agent/pprof/") {
                    Route::Pprof(name.to_string())
                } else if let Some(op) = path.strip_prefix("/v1/agent/keyring/") {
                    Route::Keyring(op.to_string())
                } else if let Some(rest) = path.strip_prefix("/v1/job/") {
                    Route::Job(rest.to_string())
                } else if let Some(id) = path.strip_prefix("/v1/evaluation/") {
                    Route::Evaluation(id.to_string())
                } else if let Some(id) = path.strip_prefix("/v1/allocation/") {
                    Route::Allocation(id.to_string())
                } else if let Some(id) = path.strip_prefix("/v1/node/") {
                    Route::Node(id.to_string())
                } else if let Some(rest) = path.strip_prefix("/v1/acl/") {
                    Route::Acl(rest.to_string())
                } else {
                    Route::NotFound
                }
            }
        }
    }
}

impl Route {
    /// The route's pattern, the `route` label of the HTTP metrics (ids are not labels: a label
    /// per job or token would grow without bound).
    pub fn label(&self) -> &'static str {
        match self {
            Route::AgentSelf => "/v1/agent/self",
            Route::Join => "/v1/agent/join",
            Route::Members => "/v1/agent/members",
            Route::ForceLeave => "/v1/agent/force-leave",
            Route::Servers => "/v1/agent/servers",
            Route::Schedulers => "/v1/agent/schedulers",
            Route::SchedulersConfig => "/v1/agent/schedulers/config",
            Route::Health => "/v1/agent/health",
            Route::Host => "/v1/agent/host",
            Route::Reload => "/v1/agent/reload",
            Route::Monitor => "/v1/agent/monitor",
            Route::MonitorExport => "/v1/agent/monitor/export",
            Route::Pprof(_) => "/v1/agent/pprof/:name",
            Route::Keyring(_) => "/v1/agent/keyring/:op",
            Route::Jobs => "/v1/jobs",
            Route::Job(_) => "/v1/job/:id",
            Route::Evaluations => "/v1/evaluations",
            Route::Evaluation(_) => "/v1/evaluation/:id",
            Route::Allocations => "/v1/allocations",
            Route::Allocation(_) => "/v1/allocation/:id",
            Route::Nodes => "/v1/nodes",
            Route::NodeHeartbeats => "/v1/nodes/heartbeats",
            Route::Node(_) => "/v1/node/:id",
            Route::OperatorSnapshot => "/v1/operator/snapshot",
            Route::OperatorRaftConfiguration => "/v1/operator/raft/configuration",
            Route::OperatorAutopilotHealth => "/v1/operator/autopilot/health",
            Route::StatusLeader => "/v1/status/leader",
            Route::StatusPeers => "/v1/status/peers",
            Route::Metrics => "/v1/metrics",
            Route::Regions => "/v1/regions",
            Route::Acl(_) => "/v1/acl/:rest",
            Route::Redirect(_) => "redirect",
            Route::NotFound => "not_found",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_fallthrough() {
        assert_eq!(Route::of("/v1/agent/self"), Route::AgentSelf);
        assert_eq!(Route::of("/v1/agent/self/"), Route::NotFound);
        assert_eq!(Route::of("/v1/agent/foo"), Route::NotFound);
        assert_eq!(
            Route::of("/v1/agent/pprof/heap"),
            Route::Pprof("heap".into())
        );
        assert_eq!(Route::of("/v1/agent/pprof/"), Route::Pprof(String::new()));
        assert_eq!(
            Route::of("/v1/agent/pprof"),
            Route::Redirect("/v1/agent/pprof/")
        );
        assert_eq!(
            Route::of("/v1/agent/keyring/list"),
            Route::Keyring("list".into())
        );
        assert_eq!(Route::of("/"), Route::NotFound);
        for (path, want) in [
            ("/v1/evaluations", Route::Evaluations),
            ("/v1/evaluation/e1", Route::Evaluation("e1".into())),
            ("/v1/allocations", Route::Allocations),
            ("/v1/allocation/a1", Route::Allocation("a1".into())),
            ("/v1/nodes", Route::Nodes),
            ("/v1/nodes/heartbeats", Route::NodeHeartbeats),
            ("/v1/node/n1", Route::Node("n1".into())),
            ("/v1/node", Route::NotFound),
            ("/v1/allocations/", Route::NotFound),
        ] {
            assert_eq!(Route::of(path), want, "{path}");
        }
    }

    #[test]
    fn every_lists_each_declared_route_and_its_pattern_routes_back() {
        // The variants as declared in this file's `enum Route`, in order.
        let source = include_str!("router.rs");
        let body = source
            .split("pub enum Route {")
            .nth(1)
            .and_then(|rest| rest.split("\n}").next())
            .unwrap();
        let declared: Vec<&str> = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(|l| l.split(['(', ',']).next().unwrap())
            .collect();
        let listed: Vec<String> = Route::EVERY
            .iter()
            .map(|r| format!("{r:?}").split('(').next().unwrap().to_string())
            .collect();
        assert_eq!(listed, declared, "Route::EVERY must list every variant");
        let mut patterns: Vec<&str> = Route::EVERY.iter().map(Route::label).collect();
        patterns.sort();
        patterns.dedup();
        assert_eq!(patterns.len(), Route::EVERY.len(), "patterns are distinct");
        // Each API pattern, its parameter filled in, routes to itself.
        for route in &Route::EVERY {
            let pattern = route.label();
            if !pattern.starts_with('/') {
                continue; // redirect, not_found
            }
            let path = match pattern.split_once(':') {
                Some((prefix, _)) => format!("{prefix}x"),
                None => pattern.to_string(),
            };
            assert_eq!(Route::of(&path).label(), pattern, "{path}");
        }
    }
}
