//! Caravan's HTTP API: a thin hyper server that speaks Nomad's `/v1/agent/*` wire format.
//!
//! The crate owns routing ([`router`]), request conventions ([`request`]: query parameters,
//! `?pretty`, tokens), response conventions ([`response`]: JSON, plain-text errors, gzip/deflate,
//! `Vary` and operator headers), the wire types ([`dto`]) and connection handling ([`serve`]:
//! per-client and total connection limits, header and body timeouts, graceful shutdown).
//! Everything an endpoint needs from the agent comes through the [`AgentApi`] trait, so the crate
//! can be embedded and tested with a fake. The job API ([`jobs`]) reads jobs, evaluations,
//! allocations and nodes through one call, [`AgentApi::read_state`], with Nomad's `stale`,
//! `index` and `wait`, and answers with `X-Nomad-Index`, `X-Nomad-KnownLeader` and
//! `X-Nomad-LastContact` (never on `/v1/agent/*`). ACL changes are typed
//! [`AclWrite`](caravan_agent_core::acl::AclWrite)s the handler proposes with fresh IDs and the
//! time inside ([`AgentApi::acl_write`]); job defaults and checks are the domain's
//! ([`Job::from_submission`](caravan_agent_core::jobs::Job::from_submission)).
//!
//! ```no_run
//! # async fn run<A: caravan_http::AgentApi>(agent: A) -> std::io::Result<()> {
//! let app = caravan_http::App::new(agent).expect("valid response headers");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4646").await?;
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! caravan_http::serve::serve_http1(listener, app, Default::default(), stopped).await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod acl;
pub mod api;
pub mod dto;
mod error;
pub mod handlers;
pub mod jobs;
pub mod logs;
pub mod monitor;
pub mod pprof;
pub mod request;
pub mod response;
pub mod router;
pub mod schedulers;
pub mod serve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response};

pub use api::AgentApi;
pub use error::{ApiError, multi_error};
use request::Query;
use response::{Body, Encoding};
use router::Route;

/// What a handler knows about the request it serves.
#[derive(Debug)]
pub struct Ctx {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The raw query string.
    pub raw_query: Option<String>,
    /// The decoded query.
    pub query: Query,
    /// The ACL token, if one was sent.
    pub token: Option<String>,
    /// The request body (at most [`MAX_BODY`] bytes).
    pub body: bytes::Bytes,
}

/// Largest request body read.
pub const MAX_BODY: usize = 1 << 20;

/// Default time a request may take to send its whole body (at most [`MAX_BODY`]) once its
/// headers are in. A client still sending after it gets `408 Request Timeout` and its connection
/// is closed, so a slow body cannot hold a connection for ever.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP application: an agent plus the response headers the operator configured.
pub struct App<A> {
    agent: Arc<A>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    body_read_timeout: Duration,
}

impl<A> Clone for App<A> {
    fn clone(&self) -> Self {
        App {
            agent: self.agent.clone(),
            extra_headers: self.extra_headers.clone(),
            body_read_timeout: self.body_read_timeout,
        }
    }
}

impl<A: AgentApi> App<A> {
    /// Wraps an agent. Fails when an `http_api_response_headers` entry is not a valid header.
    pub fn new(agent: A) -> Result<App<A>, ApiError> {
        App::from_arc(Arc::new(agent))
    }

    /// Wraps a shared agent.
    pub fn from_arc(agent: Arc<A>) -> Result<App<A>, ApiError> {
        let mut extra_headers = Vec::new();
        for (name, value) in &agent.config().http_api_response_headers {
            let bad = || {
                ApiError::bad_request(format!(
                    "http_api_response_headers: invalid header {name:?} = {value:?}"
                ))
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(value).map_err(|_| bad())?;
            extra_headers.push((name, value));
        }
        Ok(App {
            agent,
            extra_headers,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
        })
    }

    /// The same application with another request-body read timeout (default
    /// [`DEFAULT_BODY_READ_TIMEOUT`]; [`serve::serve_http1`] sets
    /// [`serve::ServeOptions::body_read_timeout`]).
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> App<A> {
        self.body_read_timeout = timeout;
        self
    }

    /// The agent behind the API.
    pub fn agent(&self) -> &A {
        &self.agent
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
        let body = tokio::time::timeout(
            self.body_read_timeout,
            http_body_util::Limited::new(body, MAX_BODY).collect(),
        )
        .await;
        let mut ctx = Ctx {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            raw_query: parts.uri.query().map(str::to_string),
            query: Query::parse(parts.uri.query()),
            token: request::extract_token(&parts.headers),
            body: bytes::Bytes::new(),
        };
        let timed_out = body.is_err();
        let result = match body {
            Ok(Ok(collected)) => {
                ctx.body = collected.to_bytes();
                self.dispatch(&ctx).await
            }
            Ok(Err(e)) => Err(ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("failed to read request body: {e}"),
            )),
            Err(_) => {
                let timeout = humantime::format_duration(self.body_read_timeout);
                tracing::warn!(
                    target: "http",
                    method = %ctx.method,
                    path = %request_uri(&ctx),
                    %timeout,
                    "request body not received in time; closing the connection"
                );
                Err(ApiError::new(
                    http::StatusCode::REQUEST_TIMEOUT,
                    format!("failed to read request body: timed out after {timeout}"),
                ))
            }
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                log_failure(&ctx, &e);
                response::error(&e)
            }
        };
        if timed_out {
            // The rest of the body is still on its way: the connection cannot be reused.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response::add_common_headers(resp.headers_mut(), &self.extra_headers);
        let streaming = resp
            .extensions()
            .get::<monitor::endpoint::Streaming>()
            .is_some();
        if let Some(encoding) = encoding.filter(|_| !streaming) {
            resp = response::compress_response(resp, encoding).await;
        }
        tracing::debug!(
            target: "http",
            method = %ctx.method,
            path = %request_uri(&ctx),
            duration = ?started.elapsed(),
            "request complete"
        );
        resp
    }

    async fn dispatch(&self, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
        let agent = &*self.agent;
        match Route::of(&ctx.path) {
            Route::AgentSelf => handlers::agent_self(agent, ctx),
            Route::Health => handlers::health(agent, ctx),
            Route::Host => handlers::host(agent, ctx).await,
            Route::Servers => handlers::servers(agent, ctx).await,
            Route::Pprof(name) => pprof::pprof(agent, ctx, &name).await,
            Route::Monitor => monitor::endpoint::monitor(agent, ctx).await,
            Route::Acl(rest) => acl::route(agent, ctx, &rest).await,
            Route::Redirect(location) => handlers::redirect(ctx, location),
            Route::NotFound => handlers::not_found(),
            Route::Members => handlers::members(agent, ctx).await,
            Route::Join => handlers::join(agent, ctx).await,
            Route::ForceLeave => handlers::force_leave(agent, ctx).await,
            Route::Jobs => jobs::jobs(agent, ctx).await,
            Route::Job(rest) => jobs::job(agent, ctx, &rest).await,
            Route::Evaluations => jobs::evaluations(agent, ctx).await,
            Route::Evaluation(id) => jobs::evaluation(agent, ctx, &id).await,
            Route::Allocations => jobs::allocations(agent, ctx).await,
            Route::Allocation(id) => jobs::allocation(agent, ctx, &id).await,
            Route::Nodes => jobs::nodes(agent, ctx).await,
            Route::OperatorSnapshot => jobs::snapshot(agent, ctx).await,
            Route::OperatorRaftConfiguration => jobs::raft_configuration(agent, ctx),
            Route::Node(id) => jobs::node(agent, ctx, &id).await,
            Route::StatusLeader => handlers::status_leader(agent, ctx).await,
            Route::StatusPeers => handlers::status_peers(agent, ctx).await,
            Route::Schedulers => schedulers::workers(agent, ctx),
            Route::SchedulersConfig => schedulers::config(agent, ctx),
            Route::Reload | Route::MonitorExport | Route::Keyring(_) => {
                handlers::not_implemented(ctx)
            }
        }
    }
}

fn request_uri(ctx: &Ctx) -> String {
    match &ctx.raw_query {
        Some(q) => format!("{}?{q}", ctx.path),
        None => ctx.path.clone(),
    }
}

/// Nomad's trail: every failed request with its error text, 5xx at ERROR and the rest at DEBUG.
pub(crate) fn log_failure(ctx: &Ctx, e: &ApiError) {
    let path = request_uri(ctx);
    let code = e.status.as_u16();
    if e.status.is_server_error() {
        tracing::error!(target: "http", method = %ctx.method, path = %path, error = %e.message, code, "request failed");
    } else {
        tracing::debug!(target: "http", method = %ctx.method, path = %path, error = %e.message, code, "request failed");
    }
}

#[cfg(test)]
mod tests;
