//! Caravan's HTTP API: a thin hyper layer that speaks Nomad's `/v1/agent/*` wire format (and the
//! job, status, operator and ACL routes beside it).
//!
//! A host describes itself with small capability traits ([`api`]): [`AgentInfo`] (who it is and
//! how it is doing) is required; [`Membership`], [`ServerList`], [`Acls`], [`Jobs`],
//! [`Schedulers`], [`Debugging`], [`Forwarding`] and [`Operator`] are added when the host has
//! them, and the routes of a missing one answer `501`. [`App::builder`] collects them; the
//! [`App`] it builds answers requests through [`App::handle`], as a `tower::Service` (mount it in
//! any hyper-util or tower stack), or through [`serve`] (the agent's listener: per-client and
//! total connection limits, header and body timeouts, graceful shutdown). The crate owns routing,
//! Nomad's request conventions (query parameters, `?pretty`, tokens, check order), its response
//! conventions (JSON, plain-text errors, gzip/deflate, `Vary` and operator headers) and the wire
//! types ([`dto`]); it checks, translates and calls, and holds no domain rule (job defaults, ACL
//! state changes and their checks are agent-core's).
//!
//! ```no_run
//! use std::sync::Arc;
//! use caravan_http::{AgentInfo, App, dto::VersionDto};
//! use caravan_agent_core::config::AgentConfig;
//!
//! struct Info(AgentConfig);
//! impl AgentInfo for Info {
//!     fn config(&self) -> &AgentConfig { &self.0 }
//!     fn version(&self) -> VersionDto { VersionDto::release("1.0.0", "") }
//!     fn server_health(&self) -> Result<(), String> { Ok(()) }
//!     fn client_health(&self) -> Result<(), String> { Ok(()) }
//! }
//!
//! # async fn run(config: AgentConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::builder(Arc::new(Info(config))).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4646").await?;
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! caravan_http::serve::serve_http1(listener, app, Default::default(), stopped).await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod acl;
pub mod api;
mod app;
mod config_view;
pub mod dto;
mod erased;
mod error;
pub mod export;
mod forward;
mod handlers;
mod jobs;
mod keyring;
pub mod logs;
pub mod metrics;
pub mod monitor;
mod origin;
mod pprof;
mod request;
mod response;
mod router;
mod schedulers;
pub mod serve;
mod ui;

use std::time::Duration;

use http::Method;

pub use api::{
    AclWriteError, Acls, AgentInfo, Debugging, Forwarding, GossipKeyring, JobWriteError,
    JobWriteResult, Jobs, JoinResult, Membership, Operator, ReadError, Reload, Remote,
    RestoreError, Schedulers, ServerList, Stats,
};
pub use app::{App, AppBuilder, BuildError, LiveConfig};
pub use error::{ApiError, multi_error};
use request::Query;
pub use response::Body;

/// The pattern of the route a request path (without its query) reaches: `/v1/job/:id`,
/// `/ui/:asset`, `redirect` (a prefix route without its slash), `not_found`. It is the `route`
/// label of the HTTP metrics.
pub fn route_pattern(path: &str) -> &'static str {
    ui::label(path).unwrap_or_else(|| router::Route::of(path).label())
}

/// Every pattern [`route_pattern`] can answer, one per route the application knows (the API's,
/// then the page's), for tools that must cover every endpoint.
pub fn route_patterns() -> Vec<&'static str> {
    router::Route::EVERY
        .iter()
        .map(router::Route::label)
        .chain(ui::LABELS)
        .collect()
}

/// What a handler knows about the request it serves.
#[derive(Debug)]
pub(crate) struct Ctx {
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
    /// How many agents passed this request on before this one.
    pub hops: u8,
}

/// Largest request body read.
pub const MAX_BODY: usize = 1 << 20;

/// Default time a request may take to send its whole body (at most [`MAX_BODY`]) once its
/// headers are in. A client still sending after it gets `408 Request Timeout` and its connection
/// is closed, so a slow body cannot hold a connection for ever.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A handler's answer.
pub(crate) type Reply = Result<http::Response<Body>, ApiError>;

/// The method check every endpoint starts with: anything else is `405 Invalid method`.
pub(crate) fn only(ctx: &Ctx, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(&ctx.method) {
        Ok(())
    } else {
        Err(ApiError::invalid_method())
    }
}

pub(crate) fn request_uri(ctx: &Ctx) -> String {
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
