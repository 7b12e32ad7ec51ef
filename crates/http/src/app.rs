//! The application: the capabilities a host has, built into one [`App`] that serves requests
//! (through [`App::handle`], as a `tower::Service`, or by [`crate::serve`]).
//!
//! Invariants: every request is routed, handled, logged (DEBUG; failures with their error, 5xx at
//! ERROR) and answered, never dropped; the routes of a capability the host lacks answer `501` with
//! a text naming it; ACL checks go through [`App::authorize`], the same door the agent's RPC uses.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use caravan_agent_core::acl::Acl;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::api::{Acls, AgentInfo, Debugging, Forwarding, Jobs, Membership, Operator};
use crate::api::{Reload, Schedulers, ServerList};
use crate::erased::{
    BoxFuture, DynAcls, DynDebugging, DynForwarding, DynJobs, DynMembership, DynOperator,
    DynReload, DynServerList,
};
use crate::request::{self, Query};
use crate::response::{self, Body, Encoding};
use crate::router::Route;
use crate::{ApiError, Ctx, DEFAULT_BODY_READ_TIMEOUT, MAX_BODY, Reply};
use crate::{acl, handlers, jobs, monitor, pprof, schedulers};

/// The capabilities of one host, as the handlers see them.
pub(crate) struct Caps {
    pub(crate) info: Arc<dyn AgentInfo>,
    membership: Option<Arc<dyn DynMembership>>,
    server_list: Option<Arc<dyn DynServerList>>,
    acls: Option<Arc<dyn DynAcls>>,
    jobs: Option<Arc<dyn DynJobs>>,
    schedulers: Option<Arc<dyn Schedulers>>,
    debugging: Option<Arc<dyn DynDebugging>>,
    forwarding: Option<Arc<dyn DynForwarding>>,
    operator: Option<Arc<dyn DynOperator>>,
    reload: Option<Arc<dyn DynReload>>,
    keyring: Option<Arc<dyn crate::erased::DynKeyring>>,
    /// What a reload changed while running (set at build).
    live: Option<LiveConfig>,
    /// `/v1/metrics`: the recorder's series, and when the application started.
    metrics: Option<(crate::metrics::MetricsSink, Instant)>,
}

/// The settings of a running [`App`] its host may change without rebuilding it: the
/// operator's response headers (`http_api_response_headers`), `enable_debug`, and the
/// configuration `/v1/agent/self` shows. Cheap to clone; [`App::live`] hands it out.
#[derive(Clone)]
pub struct LiveConfig(Arc<parking_lot::RwLock<Live>>);

struct Live {
    config: Arc<caravan_agent_core::config::AgentConfig>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

/// The operator's response headers, checked.
fn response_headers(
    config: &caravan_agent_core::config::AgentConfig,
) -> Result<Vec<(HeaderName, HeaderValue)>, BuildError> {
    let mut headers = Vec::new();
    for (name, value) in &config.http_api_response_headers {
        let bad = || BuildError::InvalidHeader {
            name: name.clone(),
            value: value.clone(),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value).map_err(|_| bad())?;
        headers.push((name, value));
    }
    Ok(headers)
}

impl LiveConfig {
    fn new(config: &caravan_agent_core::config::AgentConfig) -> Result<LiveConfig, BuildError> {
        Ok(LiveConfig(Arc::new(parking_lot::RwLock::new(Live {
            headers: Arc::new(response_headers(config)?),
            config: Arc::new(config.clone()),
        }))))
    }

    /// Checks that `config` can be applied (its response headers are valid) without applying
    /// it.
    pub fn check(
        &self,
        config: &caravan_agent_core::config::AgentConfig,
    ) -> Result<(), BuildError> {
        response_headers(config).map(|_| ())
    }

    /// Applies `config`'s response headers and `enable_debug` to every request from now on,
    /// and shows `config` in `/v1/agent/self`. An invalid header changes nothing.
    pub fn set(&self, config: caravan_agent_core::config::AgentConfig) -> Result<(), BuildError> {
        let headers = Arc::new(response_headers(&config)?);
        let mut live = self.0.write();
        live.headers = headers;
        live.config = Arc::new(config);
        Ok(())
    }

    /// The configuration in effect.
    pub fn config(&self) -> Arc<caravan_agent_core::config::AgentConfig> {
        self.0.read().config.clone()
    }

    pub(crate) fn headers(&self) -> Arc<Vec<(HeaderName, HeaderValue)>> {
        self.0.read().headers.clone()
    }
}

/// `501` for a route whose capability the host did not give the [`App`].
fn missing(capability: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("this agent does not serve the {capability} API"),
    )
}

impl Caps {
    pub(crate) fn membership(&self) -> Result<&dyn DynMembership, ApiError> {
        self.membership
            .as_deref()
            .ok_or_else(|| missing("membership"))
    }
    pub(crate) fn server_list(&self) -> Result<&dyn DynServerList, ApiError> {
        self.server_list
            .as_deref()
            .ok_or_else(|| missing("server list"))
    }
    pub(crate) fn acls(&self) -> Result<&dyn DynAcls, ApiError> {
        self.acls.as_deref().ok_or_else(|| missing("ACL"))
    }
    pub(crate) fn jobs(&self) -> Result<&dyn DynJobs, ApiError> {
        self.jobs.as_deref().ok_or_else(|| missing("jobs"))
    }
    pub(crate) fn schedulers(&self) -> Result<&dyn Schedulers, ApiError> {
        self.schedulers
            .as_deref()
            .ok_or_else(|| missing("schedulers"))
    }
    pub(crate) fn debugging(&self) -> Result<&dyn DynDebugging, ApiError> {
        self.debugging
            .as_deref()
            .ok_or_else(|| missing("debugging"))
    }
    /// Forwarding is optional even where it is used: without it no other server is known.
    pub(crate) fn forwarding(&self) -> Option<&dyn DynForwarding> {
        self.forwarding.as_deref()
    }
    /// Forwarding for a target already resolved as remote (only forwarding resolves one).
    pub(crate) fn forwarder(&self) -> Result<&dyn DynForwarding, ApiError> {
        self.forwarding
            .as_deref()
            .ok_or_else(|| missing("forwarding"))
    }
    pub(crate) fn operator(&self) -> Result<&dyn DynOperator, ApiError> {
        self.operator.as_deref().ok_or_else(|| missing("operator"))
    }
    pub(crate) fn metrics(&self) -> Result<&(crate::metrics::MetricsSink, Instant), ApiError> {
        self.metrics.as_ref().ok_or_else(|| missing("metrics"))
    }
    pub(crate) fn keyring(&self) -> Result<&dyn crate::erased::DynKeyring, ApiError> {
        self.keyring.as_deref().ok_or_else(|| missing("keyring"))
    }
    pub(crate) fn reloader(&self) -> Result<&dyn DynReload, ApiError> {
        self.reload.as_deref().ok_or_else(|| missing("reload"))
    }
    pub(crate) fn config(&self) -> &caravan_agent_core::config::AgentConfig {
        self.info.config()
    }

    /// The configuration in effect: the host's, with what a reload changed live
    /// ([`LiveConfig::set`]).
    pub(crate) fn running(&self) -> Arc<caravan_agent_core::config::AgentConfig> {
        match &self.live {
            Some(live) => live.config(),
            None => Arc::new(self.config().clone()),
        }
    }

    /// The caller's permissions: everything when ACLs are off; else its token's (anonymous
    /// policy without a token). Authentication failures are `403` with their reason.
    pub(crate) fn authorize(&self, token: Option<&str>) -> Result<Acl, ApiError> {
        if !self.config().acl_enabled {
            return Ok(Acl::management());
        }
        // `AppBuilder::build` refuses ACLs without the capability; deny if it is missing anyway.
        let acls = self
            .acls
            .as_deref()
            .ok_or_else(ApiError::permission_denied)?;
        acls.resolve_token(token)
            .map_err(|reason| ApiError::new(StatusCode::FORBIDDEN, reason))
    }

    /// Requires a capability: `403 Permission denied` when `allowed` says no.
    pub(crate) fn require(
        &self,
        token: Option<&str>,
        allowed: impl Fn(&Acl) -> bool,
    ) -> Result<(), ApiError> {
        if allowed(&self.authorize(token)?) {
            Ok(())
        } else {
            Err(ApiError::permission_denied())
        }
    }

    /// Nomad's "debug" check (host, pprof), as agent-core states it ([`Acl::allow_debug`]).
    pub(crate) fn require_debug(&self, token: Option<&str>) -> Result<(), ApiError> {
        let acl_enabled = self.config().acl_enabled;
        // `enable_debug` changes with a reload.
        let enable_debug = match &self.live {
            Some(live) => live.0.read().config.enable_debug,
            None => self.config().enable_debug,
        };
        if self
            .authorize(token)?
            .allow_debug(acl_enabled, enable_debug)
        {
            Ok(())
        } else {
            Err(ApiError::permission_denied())
        }
    }
}

/// Why an [`App`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// An `http_api_response_headers` entry is not a valid header.
    InvalidHeader {
        /// The configured name.
        name: String,
        /// The configured value.
        value: String,
    },
    /// The configuration enables ACLs but the host gave no [`Acls`] capability to check
    /// tokens with.
    AclsWithoutCapability,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::InvalidHeader { name, value } => {
                write!(
                    f,
                    "http_api_response_headers: invalid header {name:?} = {value:?}"
                )
            }
            BuildError::AclsWithoutCapability => {
                f.write_str("acl.enabled is set but the host gives no ACL capability")
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// Collects the capabilities of a host; [`AppBuilder::build`] makes the [`App`].
pub struct AppBuilder {
    caps: Caps,
    body_read_timeout: Duration,
}

impl AppBuilder {
    /// Serves the membership routes (`/v1/agent/members`, `join`, `force-leave`).
    pub fn membership(mut self, capability: Arc<impl Membership>) -> AppBuilder {
        self.caps.membership = Some(capability);
        self
    }

    /// Serves `/v1/agent/servers`.
    pub fn server_list(mut self, capability: Arc<impl ServerList>) -> AppBuilder {
        self.caps.server_list = Some(capability);
        self
    }

    /// Resolves tokens for every check and serves `/v1/acl/*`.
    pub fn acls(mut self, capability: Arc<impl Acls>) -> AppBuilder {
        self.caps.acls = Some(capability);
        self
    }

    /// Serves the job, evaluation, allocation and node routes.
    pub fn jobs(mut self, capability: Arc<impl Jobs>) -> AppBuilder {
        self.caps.jobs = Some(capability);
        self
    }

    /// Serves `/v1/agent/schedulers` and its `config`.
    pub fn schedulers(mut self, capability: Arc<impl Schedulers>) -> AppBuilder {
        self.caps.schedulers = Some(capability);
        self
    }

    /// Serves `/v1/agent/host`, `/v1/agent/pprof/*` and `/v1/agent/monitor`.
    pub fn debugging(mut self, capability: Arc<impl Debugging>) -> AppBuilder {
        self.caps.debugging = Some(capability);
        self
    }

    /// Reaches other servers for `server_id` targeting.
    pub fn forwarding(mut self, capability: Arc<impl Forwarding>) -> AppBuilder {
        self.caps.forwarding = Some(capability);
        self
    }

    /// Serves `/v1/status/*` and `/v1/operator/*`.
    pub fn operator(mut self, capability: Arc<impl Operator>) -> AppBuilder {
        self.caps.operator = Some(capability);
        self
    }

    /// Serves `/v1/metrics` from `sink` (the recorder the host installed for the `metrics`
    /// facade).
    pub fn metrics(mut self, sink: crate::metrics::MetricsSink) -> AppBuilder {
        self.caps.metrics = Some((sink, Instant::now()));
        self
    }

    /// Serves `/v1/agent/keyring/*` (a server's capability: without it a server answers `501`).
    pub fn keyring(mut self, capability: Arc<impl crate::api::GossipKeyring>) -> AppBuilder {
        self.caps.keyring = Some(capability);
        self
    }

    /// Serves `/v1/agent/reload`.
    pub fn reload(mut self, capability: Arc<impl Reload>) -> AppBuilder {
        self.caps.reload = Some(capability);
        self
    }

    /// The time a request may take to send its body once its headers are in (default
    /// [`DEFAULT_BODY_READ_TIMEOUT`]).
    pub fn body_read_timeout(mut self, timeout: Duration) -> AppBuilder {
        self.body_read_timeout = timeout;
        self
    }

    /// Checks the configuration against the capabilities and builds the application.
    pub fn build(self) -> Result<App, BuildError> {
        let config = self.caps.config();
        if config.acl_enabled && self.caps.acls.is_none() {
            return Err(BuildError::AclsWithoutCapability);
        }
        let live = LiveConfig::new(config)?;
        let mut caps = self.caps;
        caps.live = Some(live.clone());
        Ok(App {
            inner: Arc::new(Inner { caps, live }),
            body_read_timeout: self.body_read_timeout,
        })
    }
}

struct Inner {
    caps: Caps,
    live: LiveConfig,
}

/// The HTTP application: a host's capabilities plus the response headers its configuration
/// names. Cheap to clone (one `Arc`). It is a `tower::Service` for any request body, so it mounts
/// in a hyper-util or tower stack; [`crate::serve`] runs it as the agent does.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
    body_read_timeout: Duration,
}

impl App {
    /// The settings a reload may change while this application runs ([`LiveConfig`]).
    pub fn live(&self) -> LiveConfig {
        self.inner.live.clone()
    }

    /// Starts an application for a host whose facts `info` gives; add capabilities on the
    /// builder, then [`AppBuilder::build`].
    pub fn builder(info: Arc<impl AgentInfo>) -> AppBuilder {
        AppBuilder {
            caps: Caps {
                info,
                membership: None,
                server_list: None,
                acls: None,
                jobs: None,
                schedulers: None,
                debugging: None,
                forwarding: None,
                operator: None,
                reload: None,
                keyring: None,
                live: None,
                metrics: None,
            },
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
        }
    }

    /// The same application with another request-body read timeout.
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> App {
        self.body_read_timeout = timeout;
        self
    }

    /// The caller's permissions under the HTTP API's rules (everything when ACLs are off): the
    /// check a request that arrives another way (the agent RPC) goes through, so both doors
    /// decide alike. Authentication failures are `403` with their reason.
    pub fn authorize(&self, token: Option<&str>) -> Result<Acl, ApiError> {
        self.inner.caps.authorize(token)
    }

    /// Nomad's debug check (host data, profiles) for `token`, as the HTTP endpoints run it.
    pub fn require_debug(&self, token: Option<&str>) -> Result<(), ApiError> {
        self.inner.caps.require_debug(token)
    }

    /// Serves one request: route, handle, map errors, add headers, compress, log.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        let started = Instant::now();
        let encoding = Encoding::negotiate(req.headers());
        let (parts, body) = req.into_parts();
        let body = if hyper::body::Body::is_end_stream(&body) {
            // No body (a GET, most of the traffic): no timer to arm, nothing to collect.
            Ok(Ok(http_body_util::Collected::default()))
        } else {
            tokio::time::timeout(
                self.body_read_timeout,
                http_body_util::Limited::new(body, MAX_BODY).collect(),
            )
            .await
        };
        let mut ctx = Ctx {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            raw_query: parts.uri.query().map(str::to_string),
            query: Query::parse(parts.uri.query()),
            token: request::extract_token(&parts.headers),
            body: bytes::Bytes::new(),
            hops: parts
                .extensions
                .get::<crate::forward::ForwardHops>()
                .map_or(0, |h| h.0),
        };
        let timed_out = body.is_err();
        let result = match body {
            Ok(Ok(collected)) => {
                ctx.body = collected.to_bytes();
                // Cross-site and rebinding guards (origin.rs), then the page (ui.rs), then the API.
                match crate::origin::check(&parts.headers, &parts.uri, &ctx, &self.inner.live) {
                    Err(e) => Err(e),
                    Ok(()) => match crate::ui::serve(&ctx, self.inner.caps.config()) {
                        Some(reply) => reply,
                        None => dispatch(&self.inner.caps, &ctx).await,
                    },
                }
            }
            Ok(Err(e)) => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("failed to read request body: {e}"),
            )),
            Err(_) => {
                let timeout = humantime::format_duration(self.body_read_timeout);
                tracing::warn!(
                    target: "http",
                    method = %ctx.method,
                    path = %crate::request_uri(&ctx),
                    %timeout,
                    "request body not received in time; closing the connection"
                );
                Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("failed to read request body: timed out after {timeout}"),
                ))
            }
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                crate::log_failure(&ctx, &e);
                response::error(&e)
            }
        };
        if timed_out {
            // The rest of the body is still on its way: the connection cannot be reused.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response::add_common_headers(resp.headers_mut(), &self.inner.live.headers());
        let streaming = resp
            .extensions()
            .get::<monitor::endpoint::Streaming>()
            .is_some();
        if let Some(encoding) = encoding.filter(|_| !streaming) {
            resp = response::compress_response(resp, encoding).await;
        }
        let elapsed = started.elapsed();
        let route = crate::route_pattern(&ctx.path);
        metrics::counter!(
            "nomad.http.requests",
            "route" => route,
            "method" => ctx.method.as_str().to_string(),
            "code" => resp.status().as_u16().to_string()
        )
        .increment(1);
        metrics::histogram!("nomad.http.request_duration", "route" => route)
            .record(elapsed.as_secs_f64() * 1000.0);
        tracing::debug!(
            target: "http",
            method = %ctx.method,
            path = %crate::request_uri(&ctx),
            duration = ?elapsed,
            "request complete"
        );
        resp
    }
}

async fn dispatch(caps: &Caps, ctx: &Ctx) -> Reply {
    let route = Route::of(&ctx.path);
    if let Some(region) = crate::forward::destination(caps, ctx, &route) {
        return crate::forward::forward(caps, ctx, region).await;
    }
    match route {
        Route::Regions => handlers::regions(caps, ctx),
        Route::AgentSelf => handlers::agent_self(caps, ctx),
        Route::Health => handlers::health(caps, ctx),
        Route::Host => handlers::host(caps, ctx).await,
        Route::Servers => handlers::servers(caps, ctx).await,
        Route::Pprof(name) => pprof::pprof(caps, ctx, &name).await,
        Route::Monitor => monitor::endpoint::monitor(caps, ctx).await,
        Route::Acl(rest) => acl::route(caps, ctx, &rest).await,
        Route::Redirect(location) => handlers::redirect(ctx, location),
        Route::NotFound => handlers::not_found(),
        Route::Members => handlers::members(caps, ctx).await,
        Route::Join => handlers::join(caps, ctx).await,
        Route::ForceLeave => handlers::force_leave(caps, ctx).await,
        Route::Jobs => jobs::jobs(caps, ctx).await,
        Route::Job(rest) => jobs::job(caps, ctx, &rest).await,
        Route::Evaluations => jobs::evaluations(caps, ctx).await,
        Route::Evaluation(id) => jobs::evaluation(caps, ctx, &id).await,
        Route::Allocations => jobs::allocations(caps, ctx).await,
        Route::Allocation(id) => jobs::allocation(caps, ctx, &id).await,
        Route::Nodes => jobs::nodes(caps, ctx).await,
        Route::NodeHeartbeats => jobs::node_heartbeats(caps, ctx).await,
        Route::OperatorSnapshot => jobs::snapshot(caps, ctx).await,
        Route::OperatorRaftConfiguration => jobs::raft_configuration(caps, ctx),
        Route::OperatorAutopilotHealth => jobs::autopilot_health(caps, ctx).await,
        Route::Node(id) => jobs::node(caps, ctx, &id).await,
        Route::StatusLeader => handlers::status_leader(caps, ctx).await,
        Route::StatusPeers => handlers::status_peers(caps, ctx).await,
        Route::Schedulers => schedulers::workers(caps, ctx),
        Route::SchedulersConfig => schedulers::config(caps, ctx),
        Route::Reload => handlers::reload(caps, ctx).await,
        Route::MonitorExport => crate::export::export(caps, ctx).await,
        Route::Keyring(op) => crate::keyring::handle(caps, ctx, &op).await,
        Route::Metrics => crate::metrics::endpoint(caps, ctx),
    }
}

impl<B> tower_service::Service<Request<B>> for App
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let app = self.clone();
        Box::pin(async move { Ok(app.handle(req).await) })
    }
}
